//! A shared binding's ownership record lost (deleted by hand, or with a namespace moved): what can
//! still be told to be this binding's, and what a reconcile writes back before anything else.
//! Pure: `controller::lost_record` carries out what is decided here.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;

use crate::api::TargetGroupBinding;
use crate::model::{RegisteredTarget, TargetId};
use crate::plan::ownership::{Claim, Record};

/// Set on a shared binding found without its ownership record: how many targets it had registered.
pub const RECORD_LOST_ANNOTATION: &str = "tgb-agent.elbv2.k8s.aws/ownership-record-lost";

/// A binding's ownership record, as observe found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordFound {
    /// As stored; empty for an exclusive binding (it owns its whole group and keeps no claims) and
    /// for a shared one that never registered anything.
    Read(Record),
    /// Deleted (by hand) since this process last read or wrote it: the record as it was then.
    Remembered(Record),
    /// Deleted and not remembered, while the binding's status says it registered `registered`
    /// targets in `arn`: what that group holds now.
    Lost { arn: String, registered: usize, current: Vec<RegisteredTarget> },
}

/// The record a reconcile works from, and what it writes first to get a lost one back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordPlan {
    pub record: Record,
    /// `record` is written back before anything else: the stored one is gone.
    pub write_back: bool,
    /// The record came back from memory: the operator is told someone deleted it.
    pub restored: bool,
    /// Fewer targets are found than were registered (group, how many): the loss is remembered on
    /// the binding, so its deletion is held with a reason rather than leaving targets behind.
    pub stranded: Option<(String, usize)>,
}

/// What the record is now: a remembered one whole (every claim survives, a pending
/// deregistration's included); a lost one claims again what the binding's endpoints hold in the
/// group now (as a deletion does), ready or not, so those targets leave when their pods do.
pub fn recover(found: &RecordFound, ours_now: &BTreeSet<String>) -> RecordPlan {
    let kept = |record: &Record, restored| RecordPlan {
        record: record.clone(),
        write_back: restored,
        restored,
        stranded: None,
    };
    match found {
        RecordFound::Read(record) => kept(record, false),
        RecordFound::Remembered(record) => kept(record, true),
        RecordFound::Lost { arn, registered, current } => {
            let record = Record::default().with_group(arn, reclaimed(None, current, ours_now));
            RecordPlan {
                write_back: record.claims(arn).is_some_and(|c| !c.is_empty()),
                record,
                restored: false,
                stranded: registered_beyond(*registered, current, ours_now).then(|| (arn.clone(), *registered)),
            }
        }
    }
}

/// With the record lost: what this binding's own endpoints hold now in the group is ours, whoever
/// registered it; claims an earlier pass of this deletion persisted since stay as they are.
pub fn reclaimed(
    claimed: Option<&BTreeMap<TargetId, Claim>>,
    current: &[RegisteredTarget],
    ours_now: &BTreeSet<String>,
) -> BTreeMap<TargetId, Claim> {
    let mut claims = claimed.cloned().unwrap_or_default();
    for t in current.iter().filter(|t| !t.state.is_draining() && ours_now.contains(&t.target.id.id)) {
        claims.entry(t.target.id.clone()).or_insert(Claim::Registering { seen: None });
    }
    claims
}

/// How many targets the lost record's registrations are accounted for by: those in the group
/// (draining ones included: this deletion may have just removed them) or claimed, at an address
/// this binding's endpoints hold. Not the endpoints themselves: a pod that came since holds an
/// address never registered, while the one that left may still be.
pub fn accounted_for(
    current: &[RegisteredTarget],
    claims: &BTreeMap<TargetId, Claim>,
    ours_now: &BTreeSet<String>,
) -> usize {
    let ids: BTreeSet<&TargetId> = current.iter().map(|t| &t.target.id).chain(claims.keys()).collect();
    ids.into_iter().filter(|id| ours_now.contains(&id.id)).count()
}

/// Whether a binding that registered `registered` targets accounts now for fewer of them (in the
/// group at addresses its endpoints hold): the rest may be stranded.
pub fn registered_beyond(registered: usize, current: &[RegisteredTarget], ours_now: &BTreeSet<String>) -> bool {
    registered > accounted_for(current, &BTreeMap::new(), ours_now)
}

/// A shared binding whose record is gone while its status says it registered targets (or that was
/// found so before): the group and how many targets were registered.
pub fn lost_record(tgb: &TargetGroupBinding, has_record: bool) -> Option<(String, usize)> {
    let status = tgb.status.as_ref()?;
    let arn = status.target_group_arn.clone()?;
    let remembered = tgb.annotations().get(RECORD_LOST_ANNOTATION).and_then(|v| v.parse::<usize>().ok());
    // Claims count pending deregistrations too, which the registered count leaves out.
    let count = |n: Option<i32>| usize::try_from(n.unwrap_or(0)).unwrap_or(0);
    let registered = count(status.registered_targets).max(count(status.claimed_targets));
    let shared = tgb.spec.multi_cluster_target_group == Some(true);
    match remembered {
        Some(n) => Some((arn, n)),
        None => (shared && !has_record && registered > 0).then_some((arn, registered)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{TargetGroupBindingSpec, TargetGroupBindingStatus};
    use crate::model::{Target, TargetState};

    fn shared(registered: i32, claimed: Option<i32>) -> TargetGroupBinding {
        let spec = TargetGroupBindingSpec { multi_cluster_target_group: Some(true), ..Default::default() };
        let mut tgb = TargetGroupBinding::new("web", spec);
        tgb.status = Some(TargetGroupBindingStatus {
            target_group_arn: Some("arn".into()),
            registered_targets: Some(registered),
            claimed_targets: claimed,
            ..Default::default()
        });
        tgb
    }

    /// A pending deregistration is claimed but not counted as registered: the claim count is what
    /// a lost record's binding must account for.
    #[test]
    fn a_lost_record_must_account_for_its_claims_not_only_its_registered_targets() {
        assert_eq!(lost_record(&shared(2, Some(3)), false), Some(("arn".into(), 3)));
        assert_eq!(lost_record(&shared(2, None), false), Some(("arn".into(), 2)), "a status from before the count");
        assert_eq!(lost_record(&shared(2, Some(3)), true), None, "the record is there");
        assert_eq!(lost_record(&shared(0, Some(0)), false), None, "nothing was ever ours");
    }

    fn in_group(ips: &[&str]) -> Vec<RegisteredTarget> {
        let registered = |ip: &&str| RegisteredTarget {
            target: Target::new(TargetId::new(*ip, 8080)),
            state: TargetState::Healthy,
            reason: None,
        };
        ips.iter().map(registered).collect()
    }

    fn addresses(ips: &[&str]) -> BTreeSet<String> {
        ips.iter().map(|ip| (*ip).to_owned()).collect()
    }

    #[test]
    fn a_lost_record_claims_again_what_the_endpoints_hold_and_says_when_some_are_missing() {
        let lost = |registered| RecordFound::Lost {
            arn: "arn".into(),
            registered,
            current: in_group(&["10.0.0.1", "10.0.0.9"]),
        };
        let all_found = recover(&lost(1), &addresses(&["10.0.0.1"]));
        let claimed: Vec<&TargetId> = all_found.record.claims("arn").into_iter().flat_map(|c| c.keys()).collect();
        assert_eq!(claimed, [&TargetId::new("10.0.0.1", 8080)], "another cluster's 10.0.0.9 is never claimed");
        assert!(all_found.write_back && !all_found.restored);
        assert_eq!(all_found.stranded, None);
        let one_missing = recover(&lost(2), &addresses(&["10.0.0.1"]));
        assert_eq!(one_missing.stranded, Some(("arn".into(), 2)), "a pod left while the record was gone");
        let none_ours = recover(&lost(1), &addresses(&[]));
        assert!(!none_ours.write_back, "nothing to claim: nothing written");
        assert_eq!(none_ours.stranded, Some(("arn".into(), 1)));
    }

    #[test]
    fn a_remembered_record_is_written_back_whole_and_a_read_one_is_left_alone() {
        let record =
            Record::default().with_group("arn", BTreeMap::from([(TargetId::new("10.0.0.1", 8080), Claim::Registered)]));
        let back = recover(&RecordFound::Remembered(record.clone()), &BTreeSet::new());
        assert_eq!((back.record, back.write_back, back.restored, back.stranded), (record.clone(), true, true, None));
        let read = recover(&RecordFound::Read(record.clone()), &BTreeSet::new());
        assert_eq!((read.record, read.write_back, read.restored, read.stranded), (record, false, false, None));
    }
}
