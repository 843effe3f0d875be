//! The ownership record of a shared (multi-cluster) binding: which targets this cluster
//! registered, so it never removes anyone else's.

use std::collections::BTreeSet;

use crate::model::{Target, TargetId};

/// The record to persist *before* registering: everything already owned plus everything desired.
/// Written first so that a crash between the write and RegisterTargets can never leave a target
/// this cluster registered outside the record.
pub fn before_apply(owned: &BTreeSet<TargetId>, desired: &BTreeSet<Target>) -> BTreeSet<TargetId> {
    owned.iter().cloned().chain(desired.iter().map(|t| t.id.clone())).collect()
}

/// The record once `deregistered` are confirmed gone.
pub fn after_deregister(owned: &BTreeSet<TargetId>, deregistered: &[Target]) -> BTreeSet<TargetId> {
    let gone: BTreeSet<&TargetId> = deregistered.iter().map(|t| &t.id).collect();
    owned.iter().filter(|id| !gone.contains(id)).cloned().collect()
}

/// Serialized form: sorted `id:port` entries, one per line.
pub fn encode(owned: &BTreeSet<TargetId>) -> String {
    owned.iter().map(|id| format!("{id}\n")).collect()
}

/// Parses [`encode`]'s output; malformed lines are returned separately so the caller can report
/// them instead of silently forgetting a target it owns.
pub fn decode(text: &str) -> (BTreeSet<TargetId>, Vec<String>) {
    let mut owned = BTreeSet::new();
    let mut bad = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.parse() {
            Ok(id) => {
                owned.insert(id);
            }
            Err(_) => bad.push(line.to_owned()),
        }
    }
    (owned, bad)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn record_grows_before_and_shrinks_after() {
        let owned: BTreeSet<TargetId> = [TargetId::new("10.0.0.1", 80)].into();
        let desired: BTreeSet<Target> = [Target::new(TargetId::new("10.0.0.2", 80))].into();
        let grown = before_apply(&owned, &desired);
        assert_eq!(grown.len(), 2);
        let shrunk = after_deregister(&grown, &[Target::new(TargetId::new("10.0.0.1", 80))]);
        assert_eq!(shrunk, [TargetId::new("10.0.0.2", 80)].into());
    }

    #[test]
    fn decode_reports_bad_lines() {
        let (owned, bad) = decode("10.0.0.1:80\n\nfd00::1:8080\ngarbage\n10.0.0.2:99999\n");
        assert_eq!(owned, [TargetId::new("10.0.0.1", 80), TargetId::new("fd00::1", 8080)].into());
        assert_eq!(bad, vec!["garbage".to_string(), "10.0.0.2:99999".to_string()]);
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(ids in prop::collection::btree_set(("[a-z0-9.:-]{1,20}", 1u16..), 0..20)) {
            let owned: BTreeSet<TargetId> = ids.into_iter().map(|(i, p)| TargetId::new(i, p)).collect();
            let (decoded, bad) = decode(&encode(&owned));
            prop_assert!(bad.is_empty());
            prop_assert_eq!(decoded, owned);
        }
    }
}
