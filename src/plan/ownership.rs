//! The ownership record of a shared (multi-cluster) binding: which targets this cluster claims in
//! which target groups, and how sure it is of each claim.
//!
//! A claim is *certain* when this cluster registered the target (a successful answer) or saw it
//! registered while its own endpoint was serving at that address. It becomes *uncertain* the moment
//! a write about it is sent: before RegisterTargets (the answer may be lost after it took effect)
//! and before DeregisterTargets (likewise). An uncertain claim on a target that is still registered
//! cannot tell "our write failed" from "our write worked and another cluster registered the same
//! address since", so it never removes a serving target; see `plan::decide`.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::TargetId;

/// How sure this cluster is that a target in the group is its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Claim {
    /// Registered by this cluster and not written about since.
    Registered,
    /// Found registered while this cluster's endpoint holds the address, without a write of ours
    /// taking effect (Unix seconds since). As certain as `Registered`; but the address may have been
    /// another cluster's a moment ago, and that cluster may still deregister it when it catches up
    /// (nothing in ELBv2 tells the two apart), so the group is looked at often until that can no
    /// longer happen: see `plan::decide::ADOPTION_WATCH_SECS`.
    Adopted { since: u64 },
    /// RegisterTargets was (or is about to be) sent; whether it took effect is unknown.
    Registering { seen: Option<Seen> },
    /// DeregisterTargets was (or is about to be) sent; whether it took effect is unknown.
    Leaving { seen: Option<Seen> },
}

/// What an uncertain claim's target has been seen doing, and since when (Unix seconds): the
/// evidence that, given time, tells this cluster's target from another's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Seen {
    /// Registered and failing its health checks.
    Unhealthy(u64),
    /// Still serving while the binding is deleted (or has left the group): ELBv2 reports health
    /// late, so a target whose pod just went keeps looking healthy for a while.
    ServingAfterRelease(u64),
}

impl Seen {
    pub fn since(self) -> u64 {
        match self {
            Self::Unhealthy(since) | Self::ServingAfterRelease(since) => since,
        }
    }
}

impl Claim {
    pub fn is_certain(self) -> bool {
        matches!(self, Self::Registered | Self::Adopted { .. })
    }

    pub fn seen(self) -> Option<Seen> {
        match self {
            Self::Registered | Self::Adopted { .. } => None,
            Self::Registering { seen } | Self::Leaving { seen } => seen,
        }
    }

    /// When the target was first seen registered but not serving while this claim was uncertain.
    pub fn unhealthy_since(self) -> Option<u64> {
        match self.seen() {
            Some(Seen::Unhealthy(since)) => Some(since),
            _ => None,
        }
    }

    /// When the target was first seen serving after the binding let go of the group.
    pub fn serving_after_release_since(self) -> Option<u64> {
        match self.seen() {
            Some(Seen::ServingAfterRelease(since)) => Some(since),
            _ => None,
        }
    }

    pub fn with_seen(self, seen: Option<Seen>) -> Self {
        match self {
            Self::Registered | Self::Adopted { .. } => self,
            Self::Registering { .. } => Self::Registering { seen },
            Self::Leaving { .. } => Self::Leaving { seen },
        }
    }
}

/// Claims per target group ARN. A binding normally has one group; a changed `targetGroupARN`
/// keeps the old group's claims here until the old group is cleaned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub groups: BTreeMap<String, BTreeMap<TargetId, Claim>>,
}

impl Record {
    pub fn claims(&self, arn: &str) -> Option<&BTreeMap<TargetId, Claim>> {
        self.groups.get(arn)
    }

    pub fn is_empty(&self) -> bool {
        self.groups.values().all(BTreeMap::is_empty)
    }

    /// The record with `arn`'s claims replaced; an empty group disappears from the record.
    pub fn with_group(&self, arn: &str, claims: BTreeMap<TargetId, Claim>) -> Self {
        let mut next = self.clone();
        if claims.is_empty() {
            next.groups.remove(arn);
        } else {
            next.groups.insert(arn.to_owned(), claims);
        }
        next
    }

    /// Groups other than `current` that still hold claims: left behind by a changed spec.
    pub fn previous_groups<'a>(&'a self, current: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.groups.iter().filter(move |(arn, claims)| *arn != current && !claims.is_empty()).map(|(a, _)| a.as_str())
    }
}

const HEADER: &str = "# tgb-agent ownership record v2";

impl fmt::Display for Record {
    /// One `group <arn>` line per group, then one `<id:port> <claim>` line per target.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{HEADER}")?;
        for (arn, claims) in self.groups.iter().filter(|(_, c)| !c.is_empty()) {
            writeln!(f, "group {arn}")?;
            for (id, claim) in claims {
                let seen = match claim.seen() {
                    None => String::new(),
                    Some(Seen::Unhealthy(s)) => format!(" unhealthy-since={s}"),
                    Some(Seen::ServingAfterRelease(s)) => format!(" serving-after-release-since={s}"),
                };
                match claim {
                    Claim::Registered => writeln!(f, "{id} registered")?,
                    Claim::Adopted { since } => writeln!(f, "{id} adopted since={since}")?,
                    Claim::Registering { .. } => writeln!(f, "{id} registering{seen}")?,
                    Claim::Leaving { .. } => writeln!(f, "{id} leaving{seen}")?,
                }
            }
        }
        Ok(())
    }
}

/// Parses a record. `legacy_arn` is the group of a first-version record (bare `id:port` lines, the
/// group in an annotation); its entries are read as uncertain, because that version kept entries of
/// targets it had already deregistered. Malformed lines are returned so the caller reports them
/// instead of silently forgetting a claim.
pub fn decode(text: &str, legacy_arn: Option<&str>) -> (Record, Vec<String>) {
    let mut record = Record::default();
    let mut bad = Vec::new();
    let mut group: Option<String> = None;
    let legacy = !text.trim_start().starts_with(HEADER);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(arn) = line.strip_prefix("group ") {
            group = Some(arn.trim().to_owned());
            record.groups.entry(arn.trim().to_owned()).or_default();
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(id), state) = (words.next().and_then(|w| w.parse::<TargetId>().ok()), words.next()) else {
            bad.push(line.to_owned());
            continue;
        };
        // An unknown or malformed timer only restarts that wait: never a reason to drop the claim.
        let timer = words.next().and_then(|w| w.split_once('='));
        let words_since = timer.filter(|(key, _)| *key == "since").and_then(|(_, since)| since.parse().ok());
        let seen = timer.and_then(|(key, since)| {
            let since = since.parse().ok()?;
            match key {
                "unhealthy-since" => Some(Seen::Unhealthy(since)),
                "serving-after-release-since" => Some(Seen::ServingAfterRelease(since)),
                _ => None,
            }
        });
        let claim = match (legacy, state) {
            (true, None) => Claim::Registering { seen: None },
            (false, Some("registered")) => Claim::Registered,
            // A lost timestamp ends the watch early; the claim itself stays certain.
            (false, Some("adopted")) => match words_since {
                Some(since) => Claim::Adopted { since },
                None => Claim::Registered,
            },
            (false, Some("registering")) => Claim::Registering { seen },
            (false, Some("leaving")) => Claim::Leaving { seen },
            _ => {
                bad.push(line.to_owned());
                continue;
            }
        };
        let arn = if legacy { legacy_arn.map(str::to_owned) } else { group.clone() };
        match arn {
            Some(arn) => {
                record.groups.entry(arn).or_default().insert(id, claim);
            }
            None => bad.push(line.to_owned()),
        }
    }
    record.groups.retain(|_, claims| !claims.is_empty());
    (record, bad)
}

/// The claims as a new leader may trust them: a timer started before `leading_since` was read off
/// another replica's wall clock, which may run ahead (a target removed at first look) or behind, so
/// its wait starts again from this leader's first look. An adoption's watch starts again from
/// `leading_since`: it may only last longer, never end early.
pub fn rearm_grace(claims: &BTreeMap<TargetId, Claim>, leading_since: u64) -> BTreeMap<TargetId, Claim> {
    claims
        .iter()
        .map(|(id, claim)| {
            let rearmed = match *claim {
                Claim::Adopted { since } => Claim::Adopted { since: since.max(leading_since) },
                _ => claim.with_seen(claim.seen().filter(|seen| seen.since() >= leading_since)),
            };
            (id.clone(), rearmed)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_new_leader_rearms_grace_measured_on_another_clock() {
        let id = |n: u8| TargetId::new(format!("10.0.0.{n}"), 80);
        let claims: BTreeMap<TargetId, Claim> = [
            (id(1), Claim::Registering { seen: Some(Seen::Unhealthy(900)) }),
            (id(2), Claim::Leaving { seen: Some(Seen::Unhealthy(1_100)) }),
            (id(4), Claim::Leaving { seen: Some(Seen::ServingAfterRelease(999)) }),
            (id(5), Claim::Adopted { since: 900 }),
            (id(6), Claim::Adopted { since: 1_200 }),
            (id(3), Claim::Registered),
        ]
        .into();
        let rearmed = rearm_grace(&claims, 1_000);
        assert_eq!(rearmed[&id(1)], Claim::Registering { seen: None }, "the old leader's clock");
        assert_eq!(rearmed[&id(2)], Claim::Leaving { seen: Some(Seen::Unhealthy(1_100)) }, "this leader's own");
        assert_eq!(rearmed[&id(4)], Claim::Leaving { seen: None });
        assert_eq!(rearmed[&id(5)], Claim::Adopted { since: 1_000 }, "the watch starts again, never ends early");
        assert_eq!(rearmed[&id(6)], Claim::Adopted { since: 1_200 });
        assert_eq!(rearmed[&id(3)], Claim::Registered);
    }

    #[test]
    fn legacy_records_are_read_as_uncertain() {
        let (record, bad) = decode("10.0.0.1:80\n\nfd00::1:8080\ngarbage\n10.0.0.2:99999\n", Some("arn:tg"));
        let claims = record.claims("arn:tg").expect("group");
        assert_eq!(claims.len(), 2);
        assert!(claims.values().all(|c| !c.is_certain()));
        assert_eq!(bad, vec!["garbage".to_string(), "10.0.0.2:99999".to_string()]);
        let (_, bad) = decode("10.0.0.1:80\n", None);
        assert_eq!(bad, vec!["10.0.0.1:80".to_string()], "a legacy entry without its group is reported");
    }

    #[test]
    fn groups_that_hold_nothing_are_dropped() {
        let record = Record::default().with_group("arn:a", [(TargetId::new("10.0.0.1", 80), Claim::Registered)].into());
        assert!(!record.is_empty());
        assert!(record.with_group("arn:a", BTreeMap::new()).is_empty());
        assert_eq!(record.previous_groups("arn:b").collect::<Vec<_>>(), vec!["arn:a"]);
        assert_eq!(record.previous_groups("arn:a").count(), 0);
    }

    fn arb_claim() -> impl Strategy<Value = Claim> {
        let seen = prop::option::of(prop_oneof![
            (0u64..2_000_000_000).prop_map(Seen::Unhealthy),
            (0u64..2_000_000_000).prop_map(Seen::ServingAfterRelease),
        ]);
        prop_oneof![
            Just(Claim::Registered),
            (0u64..2_000_000_000).prop_map(|since| Claim::Adopted { since }),
            seen.clone().prop_map(|seen| Claim::Registering { seen }),
            seen.prop_map(|seen| Claim::Leaving { seen }),
        ]
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            groups in prop::collection::btree_map(
                "arn:aws:elasticloadbalancing:[a-z0-9-]{1,12}:[0-9]{12}:targetgroup/[a-z0-9-]{1,8}/[0-9a-f]{16}",
                prop::collection::btree_map(("[a-z0-9.:-]{1,20}", 1u16..).prop_map(|(i, p)| TargetId::new(i, p)), arb_claim(), 1..8),
                0..3,
            )
        ) {
            let record = Record { groups };
            let (decoded, bad) = decode(&record.to_string(), None);
            prop_assert!(bad.is_empty(), "{:?}", bad);
            prop_assert_eq!(decoded, record);
        }
    }
}
