//! The decision for one target group: which targets to deregister and register, and the ownership
//! claims to persist before and after those writes. Pure: every input is plain data, `now` included.
//!
//! Rules (shared groups; an exclusive binding owns its whole group and needs no claims):
//! - a desired target that is registered is this cluster's (its endpoint serves at that address);
//!   one that is not is registered, its claim persisted as *registering* first. One found
//!   registered without a write of ours having taken effect is *adopted*: the address may have been
//!   another cluster's a moment ago, and that cluster, lagging, may still deregister it; nothing in
//!   ELBv2 prevents that, so the group is looked at every [`ADOPTION_RECHECK_SECS`] for
//!   [`ADOPTION_WATCH_SECS`] and the target registered again at once if it went;
//! - a target that is no longer desired and is draining or gone has its claim retired;
//! - a registered, undesired target under a *certain* claim is deregistered, its claim persisted as
//!   *leaving* first;
//! - an *uncertain* claim (a write about it whose answer was lost, or a crash) is as good as a
//!   certain one while one of this binding's endpoints (ready or not) still has the address: no other
//!   pod can have it then. Otherwise a serving target under an uncertain claim is never removed: it
//!   may be another cluster's that took the address since. Only a target that stays unhealthy for
//!   [`UNCERTAIN_GRACE_SECS`] is removed on such a claim. When the binding lets go of the group
//!   (deletion, or a group it left), a serving one is released (reported, left in place) only once
//!   it kept serving for the group's health lag: ELBv2 reports a target whose pod just went as
//!   healthy until enough health checks failed, so a release at first look would strand ours;
//! - nothing another binding of this cluster claims (`protected`) is ever deregistered;
//! - targets without a claim in a shared group are never touched.

use std::collections::{BTreeMap, BTreeSet};

use super::ownership::{Claim, Seen};
use crate::model::{RegisteredTarget, Target, TargetId, TargetState};

/// How long a target under an uncertain claim must be seen unhealthy before it is removed.
pub const UNCERTAIN_GRACE_SECS: u64 = 120;

/// How long after an adoption the cluster the address came from may still deregister it: its
/// endpoint stays Ready for up to ~50 s after its node dies, its agent may be failing over (a
/// 15 s lease) and its write may wait in the write budget (p99 21 s measured); five minutes covers
/// all three with room.
pub const ADOPTION_WATCH_SECS: u64 = 300;

/// How often an adopted target is checked during the watch: the longest it can stay out of the
/// group before it is registered again.
pub const ADOPTION_RECHECK_SECS: u64 = 10;

/// What the binding wants in this group.
#[derive(Clone, Copy, Debug)]
pub enum Want<'a> {
    /// Exactly these targets. `confirmed`: read live from the API server, not only from the watches.
    Targets { targets: &'a BTreeSet<Target>, confirmed: bool },
    /// Nothing: the binding is being deleted, or has moved to another group.
    Nothing,
}

/// Who may remove what in the group.
#[derive(Clone, Copy, Debug)]
pub enum Ownership<'a> {
    /// The binding owns the group: anything it does not want goes.
    Exclusive,
    /// Shared with other clusters or registrars: only what this binding claims may go.
    Shared { claims: &'a BTreeMap<TargetId, Claim> },
}

/// Everything one decision is made from.
#[derive(Clone, Copy, Debug)]
pub struct GroupInputs<'a> {
    pub want: Want<'a>,
    pub ownership: Ownership<'a>,
    /// Every target in the group, draining ones included, as DescribeTargetHealth reported them.
    pub current: &'a [RegisteredTarget],
    /// Targets other bindings of this cluster claim in the same group.
    pub protected: &'a BTreeSet<TargetId>,
    /// Addresses (IPs, instance ids) this binding's endpoints hold right now, serving or not.
    pub ours_now: &'a BTreeSet<String>,
    /// Seconds since the Unix epoch.
    pub now: u64,
    /// How long (seconds) ELBv2 may go on reporting a target whose pod is gone as healthy: see
    /// [`super::health::health_lag`].
    pub health_lag: u64,
}

/// What to do in one group, in order: persist `claims_before`, deregister, register, then persist
/// [`settle`]'s result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupDecision {
    /// The plan would empty the group on the watches' word alone: read the backend live and decide
    /// again with the live view before any write.
    pub needs_confirmation: bool,
    pub deregister: Vec<Target>,
    pub register: Vec<Target>,
    /// Shared only: the claims to persist before any write (None: exclusive).
    pub claims_before: Option<BTreeMap<TargetId, Claim>>,
    /// Serving targets under an uncertain claim, left alone.
    pub uncertain_kept: Vec<TargetId>,
    /// On deletion: serving targets under an uncertain claim, released rather than removed.
    pub released: Vec<TargetId>,
    /// Seconds until an uncertain claim's grace ends and the group should be looked at again.
    pub recheck_in: Option<u64>,
}

impl GroupDecision {
    pub fn writes(&self) -> bool {
        !self.deregister.is_empty() || !self.register.is_empty()
    }

    fn recheck_after(&mut self, secs: u64) {
        self.recheck_in = Some(self.recheck_in.map_or(secs, |r| r.min(secs)));
    }
}

pub fn decide(inputs: GroupInputs<'_>) -> GroupDecision {
    let GroupInputs { want, ownership, current, protected, ours_now, now, health_lag } = inputs;
    let (wanted, confirmed, deleting) = match want {
        Want::Targets { targets, confirmed } => (targets.iter().map(|t| (&t.id, t)).collect(), confirmed, false),
        Want::Nothing => (BTreeMap::new(), true, true),
    };
    // ELBv2 holds one entry per id:port; a draining entry is on its way out.
    let active: BTreeMap<&TargetId, &RegisteredTarget> =
        current.iter().filter(|t| !t.state.is_draining()).map(|t| (&t.target.id, t)).collect();
    let mut decision = GroupDecision::default();

    for (id, target) in &wanted {
        if !active.contains_key(id) {
            decision.register.push((*target).clone());
        }
    }
    let Ownership::Shared { claims } = ownership else {
        decision.deregister = active
            .values()
            .filter(|t| !wanted.contains_key(&t.target.id) && !protected.contains(&t.target.id))
            .map(|t| t.target.clone())
            .collect();
        decision.needs_confirmation = needs_confirmation(&wanted, &decision, confirmed);
        return decision;
    };

    let mut after: BTreeMap<TargetId, Claim> = BTreeMap::new();
    for id in wanted.keys() {
        let claim = match (active.contains_key(id), claims.get(*id).copied()) {
            (false, _) => Claim::Registering { seen: None },
            (true, Some(Claim::Registered)) => Claim::Registered,
            (true, Some(Claim::Adopted { since })) => {
                match ADOPTION_WATCH_SECS.checked_sub(now.saturating_sub(since)) {
                    Some(left) if left > 0 => {
                        decision.recheck_after(ADOPTION_RECHECK_SECS.min(left));
                        Claim::Adopted { since }
                    }
                    _ => Claim::Registered,
                }
            }
            (true, _) => {
                decision.recheck_after(ADOPTION_RECHECK_SECS);
                Claim::Adopted { since: now }
            }
        };
        after.insert((*id).clone(), claim);
    }
    for (id, claim) in claims.iter().filter(|(id, _)| !wanted.contains_key(id)) {
        // Draining or gone: whoever removed it, the claim has nothing left to protect.
        let Some(registered) = active.get(id) else { continue };
        if protected.contains(id) {
            continue;
        }
        if claim.is_certain() || ours_now.contains(&id.id) {
            decision.deregister.push(registered.target.clone());
            after.insert(id.clone(), Claim::Leaving { seen: None });
            continue;
        }
        match registered.state {
            TargetState::Unhealthy => {
                let since = claim.unhealthy_since().unwrap_or(now);
                let waited = now.saturating_sub(since);
                if waited >= UNCERTAIN_GRACE_SECS {
                    decision.deregister.push(registered.target.clone());
                    after.insert(id.clone(), Claim::Leaving { seen: None });
                } else {
                    decision.recheck_after(UNCERTAIN_GRACE_SECS - waited);
                    after.insert(id.clone(), claim.with_seen(Some(Seen::Unhealthy(since))));
                }
            }
            // Serving, or no health evidence either way: the safe side is to leave it.
            _ if deleting => {
                let since = claim.serving_after_release_since().unwrap_or(now);
                let waited = now.saturating_sub(since);
                if waited >= health_lag {
                    decision.released.push(id.clone());
                } else {
                    decision.recheck_after(health_lag - waited);
                    decision.uncertain_kept.push(id.clone());
                    after.insert(id.clone(), claim.with_seen(Some(Seen::ServingAfterRelease(since))));
                }
            }
            _ => {
                decision.uncertain_kept.push(id.clone());
                after.insert(id.clone(), claim.with_seen(None));
            }
        }
    }
    decision.deregister.sort();
    decision.needs_confirmation = needs_confirmation(&wanted, &decision, confirmed);
    decision.claims_before = Some(after);
    decision
}

/// An empty desired set that would remove targets must come from a live read, not a cache.
fn needs_confirmation(wanted: &BTreeMap<&TargetId, &Target>, decision: &GroupDecision, confirmed: bool) -> bool {
    wanted.is_empty() && !decision.deregister.is_empty() && !confirmed
}

/// What became of one write about one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// AWS answered that it took effect.
    Applied,
    /// AWS refused this target (e.g. InvalidTarget): nothing changed for it.
    Refused,
    /// Not sent, or refused before taking effect (throttled, access denied, …).
    NotApplied,
    /// The answer was lost or was a server error: it may or may not have taken effect.
    Unknown,
}

/// The claims once the writes are done, from the claims observed before the decision, the
/// decision and what became of each write. Targets without an outcome were not written.
/// `inputs_may_have_moved`: the writes were sent even though the endpoints may have changed while
/// they waited, so a registration that took effect may have landed on an address that is no longer
/// this cluster's (and now is another's): its claim stays uncertain.
pub fn settle(
    observed: &BTreeMap<TargetId, Claim>,
    decision: &GroupDecision,
    deregistered: &BTreeMap<TargetId, Outcome>,
    registered: &BTreeMap<TargetId, Outcome>,
    inputs_may_have_moved: bool,
) -> BTreeMap<TargetId, Claim> {
    let Some(before) = &decision.claims_before else { return BTreeMap::new() };
    let mut after = before.clone();
    for t in &decision.deregister {
        match deregistered.get(&t.id).copied().unwrap_or(Outcome::NotApplied) {
            // Refused on deregistration means "not registered": gone either way.
            Outcome::Applied | Outcome::Refused => {
                after.remove(&t.id);
            }
            Outcome::NotApplied => restore(&mut after, observed, &t.id),
            Outcome::Unknown => {
                after.insert(t.id.clone(), Claim::Leaving { seen: None });
            }
        }
    }
    for t in &decision.register {
        match registered.get(&t.id).copied().unwrap_or(Outcome::NotApplied) {
            Outcome::Applied if inputs_may_have_moved => {
                after.insert(t.id.clone(), Claim::Registering { seen: None });
            }
            Outcome::Applied => {
                after.insert(t.id.clone(), Claim::Registered);
            }
            Outcome::Refused => {
                after.remove(&t.id);
            }
            Outcome::NotApplied => restore(&mut after, observed, &t.id),
            Outcome::Unknown => {
                after.insert(t.id.clone(), Claim::Registering { seen: None });
            }
        }
    }
    after
}

fn restore(after: &mut BTreeMap<TargetId, Claim>, observed: &BTreeMap<TargetId, Claim>, id: &TargetId) {
    match observed.get(id) {
        Some(claim) => after.insert(id.clone(), *claim),
        None => after.remove(id),
    };
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(n: u8) -> TargetId {
        TargetId::new(format!("10.0.0.{n}"), 80)
    }

    fn reg(n: u8, state: TargetState) -> RegisteredTarget {
        RegisteredTarget { target: Target::new(id(n)), state, reason: None }
    }

    fn want(ns: &[u8]) -> BTreeSet<Target> {
        ns.iter().map(|n| Target::new(id(*n))).collect()
    }

    fn ids(targets: &[Target]) -> Vec<TargetId> {
        targets.iter().map(|t| t.id.clone()).collect()
    }

    fn shared(
        wanted: &BTreeSet<Target>,
        claims: &BTreeMap<TargetId, Claim>,
        current: &[RegisteredTarget],
        now: u64,
    ) -> GroupDecision {
        decide(GroupInputs {
            want: Want::Targets { targets: wanted, confirmed: false },
            ownership: Ownership::Shared { claims },
            current,
            protected: &BTreeSet::new(),
            ours_now: &BTreeSet::new(),
            now,
            health_lag: LAG,
        })
    }

    const LAG: u64 = 70;
    const UNSURE: Claim = Claim::Leaving { seen: None };

    #[test]
    fn exclusive_removes_everything_not_wanted_and_registers_the_missing() {
        let current = [reg(1, TargetState::Healthy), reg(2, TargetState::Initial), reg(3, TargetState::Draining)];
        let d = decide(GroupInputs {
            want: Want::Targets { targets: &want(&[2, 3, 4]), confirmed: false },
            ownership: Ownership::Exclusive,
            current: &current,
            protected: &BTreeSet::new(),
            ours_now: &BTreeSet::new(),
            now: 0,
            health_lag: LAG,
        });
        assert_eq!(ids(&d.deregister), vec![id(1)]);
        assert_eq!(ids(&d.register), vec![id(3), id(4)], "a draining target that is wanted again is re-registered");
        assert_eq!(d.claims_before, None);
    }

    #[test]
    fn shared_never_touches_unclaimed_targets() {
        let claims = [(id(1), Claim::Registered)].into();
        let d = shared(&want(&[]), &claims, &[reg(1, TargetState::Healthy), reg(9, TargetState::Healthy)], 0);
        assert_eq!(ids(&d.deregister), vec![id(1)]);
        assert!(d.needs_confirmation, "emptying on the watches' word needs a live read");
    }

    #[test]
    fn claims_of_draining_or_gone_targets_are_retired() {
        let claims = [(id(1), Claim::Registered), (id(2), UNSURE), (id(3), Claim::Registered)].into();
        let d = shared(&want(&[3]), &claims, &[reg(1, TargetState::Draining), reg(3, TargetState::Healthy)], 0);
        assert!(d.deregister.is_empty());
        assert_eq!(d.claims_before, Some([(id(3), Claim::Registered)].into()));
    }

    #[test]
    fn a_serving_target_under_an_uncertain_claim_is_never_removed() {
        for state in [TargetState::Healthy, TargetState::Initial, TargetState::Unused, TargetState::Unavailable] {
            let claims = [(id(1), UNSURE)].into();
            let d = shared(&want(&[2]), &claims, &[reg(1, state)], 1_000);
            assert!(d.deregister.is_empty(), "{state:?}");
            assert_eq!(d.uncertain_kept, vec![id(1)]);
        }
    }

    #[test]
    fn an_uncertain_claim_removes_a_target_only_after_it_stayed_unhealthy() {
        let claims = [(id(1), UNSURE)].into();
        let current = [reg(1, TargetState::Unhealthy)];
        let first = shared(&want(&[2]), &claims, &current, 1_000);
        assert!(first.deregister.is_empty());
        assert_eq!(first.recheck_in, Some(UNCERTAIN_GRACE_SECS));
        let remembered = first.claims_before.expect("shared");
        assert_eq!(remembered.get(&id(1)), Some(&Claim::Leaving { seen: Some(Seen::Unhealthy(1_000)) }));
        let early = shared(&want(&[2]), &remembered, &current, 1_000 + UNCERTAIN_GRACE_SECS - 1);
        assert!(early.deregister.is_empty());
        let late = shared(&want(&[2]), &remembered, &current, 1_000 + UNCERTAIN_GRACE_SECS);
        assert_eq!(ids(&late.deregister), vec![id(1)]);
        // Healthy in between: the clock starts again.
        let healthy = shared(&want(&[2]), &remembered, &[reg(1, TargetState::Healthy)], 1_050);
        let reset = healthy.claims_before.expect("shared");
        assert_eq!(reset.get(&id(1)), Some(&UNSURE));
    }

    #[test]
    fn an_uncertain_claim_on_an_address_our_endpoints_hold_is_certain() {
        let claims = [(id(1), UNSURE)].into();
        let ours_now = ["10.0.0.1".to_string()].into();
        for want in [Want::Nothing, Want::Targets { targets: &want(&[2]), confirmed: true }] {
            let d = decide(GroupInputs {
                want,
                ownership: Ownership::Shared { claims: &claims },
                current: &[reg(1, TargetState::Healthy)],
                protected: &BTreeSet::new(),
                ours_now: &ours_now,
                now: 0,
                health_lag: LAG,
            });
            assert_eq!(ids(&d.deregister), vec![id(1)], "a terminating pod's target goes at once");
        }
    }

    #[test]
    fn a_wanted_target_found_registered_is_adopted_and_watched() {
        let current = [reg(1, TargetState::Healthy)];
        for before in [None, Some(UNSURE), Some(Claim::Registering { seen: None })] {
            let claims: BTreeMap<TargetId, Claim> = before.map(|c| (id(1), c)).into_iter().collect();
            let d = shared(&want(&[1]), &claims, &current, 1_000);
            assert!(!d.writes());
            assert_eq!(d.claims_before, Some([(id(1), Claim::Adopted { since: 1_000 })].into()), "{before:?}");
            assert_eq!(d.recheck_in, Some(ADOPTION_RECHECK_SECS), "looked at again soon: {before:?}");
        }
        let adopted: BTreeMap<TargetId, Claim> = [(id(1), Claim::Adopted { since: 1_000 })].into();
        let during = shared(&want(&[1]), &adopted, &current, 1_000 + ADOPTION_WATCH_SECS - 3);
        assert_eq!(during.recheck_in, Some(3));
        // Deregistered by the cluster it came from: registered again at once.
        let gone = shared(&want(&[1]), &adopted, &[reg(1, TargetState::Draining)], 1_050);
        assert_eq!(ids(&gone.register), vec![id(1)]);
        let after = shared(&want(&[1]), &adopted, &current, 1_000 + ADOPTION_WATCH_SECS);
        assert_eq!(after.claims_before, Some([(id(1), Claim::Registered)].into()));
        assert_eq!(after.recheck_in, None, "the watch is over");
        // Our own registration is not an adoption.
        let ours = shared(&want(&[1]), &[(id(1), Claim::Registered)].into(), &current, 1_000);
        assert_eq!(ours.recheck_in, None);
    }

    fn deleting(claims: &BTreeMap<TargetId, Claim>, current: &[RegisteredTarget], now: u64) -> GroupDecision {
        decide(GroupInputs {
            want: Want::Nothing,
            ownership: Ownership::Shared { claims },
            current,
            protected: &BTreeSet::new(),
            ours_now: &BTreeSet::new(),
            now,
            health_lag: LAG,
        })
    }

    #[test]
    fn deletion_releases_a_serving_target_under_an_uncertain_claim_only_after_the_health_lag() {
        let claims = [(id(1), UNSURE), (id(2), Claim::Registered)].into();
        let current = [reg(1, TargetState::Healthy), reg(2, TargetState::Healthy)];
        let first = deleting(&claims, &current, 1_000);
        assert_eq!(ids(&first.deregister), vec![id(2)]);
        assert!(first.released.is_empty(), "healthy at first look may be our pod that just went");
        assert_eq!(first.uncertain_kept, vec![id(1)]);
        assert_eq!(first.recheck_in, Some(LAG));
        assert!(!first.needs_confirmation, "deletion needs no live read");
        let kept = Claim::Leaving { seen: Some(Seen::ServingAfterRelease(1_000)) };
        assert_eq!(first.claims_before, Some([(id(1), kept), (id(2), UNSURE)].into()));

        let remembered: BTreeMap<TargetId, Claim> = [(id(1), kept)].into();
        let early = deleting(&remembered, &current[..1], 1_000 + LAG - 1);
        assert!(early.released.is_empty());
        assert_eq!(early.recheck_in, Some(1));
        let late = deleting(&remembered, &current[..1], 1_000 + LAG);
        assert_eq!(late.released, vec![id(1)], "still serving after the lag: another cluster's pod");
        assert!(late.deregister.is_empty());
        assert_eq!(late.claims_before, Some(BTreeMap::new()));
    }

    #[test]
    fn deletion_removes_an_uncertain_target_that_turns_unhealthy_within_the_lag() {
        let remembered: BTreeMap<TargetId, Claim> =
            [(id(1), Claim::Leaving { seen: Some(Seen::ServingAfterRelease(1_000)) })].into();
        let turned = deleting(&remembered, &[reg(1, TargetState::Unhealthy)], 1_030);
        assert!(turned.released.is_empty());
        let claims = turned.claims_before.expect("shared");
        assert_eq!(claims[&id(1)], Claim::Leaving { seen: Some(Seen::Unhealthy(1_030)) }, "the unhealthy wait starts");
        let gone = deleting(&claims, &[reg(1, TargetState::Unhealthy)], 1_030 + UNCERTAIN_GRACE_SECS);
        assert_eq!(ids(&gone.deregister), vec![id(1)]);
    }

    #[test]
    fn targets_siblings_claim_are_never_deregistered() {
        let claims = [(id(1), Claim::Registered)].into();
        let protected = [id(1)].into();
        for ownership in [Ownership::Exclusive, Ownership::Shared { claims: &claims }] {
            let d = decide(GroupInputs {
                want: Want::Nothing,
                ownership,
                current: &[reg(1, TargetState::Healthy)],
                protected: &protected,
                ours_now: &BTreeSet::new(),
                now: 0,
                health_lag: LAG,
            });
            assert!(d.deregister.is_empty());
        }
    }

    #[test]
    fn settle_follows_each_outcome() {
        let observed: BTreeMap<TargetId, Claim> = [(id(1), Claim::Registered), (id(2), Claim::Registered)].into();
        let d = shared(&want(&[3, 4, 5]), &observed, &[reg(1, TargetState::Healthy), reg(2, TargetState::Healthy)], 0);
        assert_eq!(ids(&d.deregister), vec![id(1), id(2)]);
        let dereg = [(id(1), Outcome::Unknown), (id(2), Outcome::NotApplied)].into();
        let regs = [(id(3), Outcome::Applied), (id(4), Outcome::Refused), (id(5), Outcome::Unknown)].into();
        let after = settle(&observed, &d, &dereg, &regs, false);
        let forced = settle(&observed, &d, &dereg, &regs, true);
        assert_eq!(forced[&id(3)], Claim::Registering { seen: None }, "sent on inputs that may have moved");
        assert_eq!(
            after,
            [
                (id(1), UNSURE),
                (id(2), Claim::Registered),
                (id(3), Claim::Registered),
                (id(5), Claim::Registering { seen: None }),
            ]
            .into()
        );
    }

    fn arb_state() -> impl Strategy<Value = TargetState> {
        prop::sample::select(vec![
            TargetState::Initial,
            TargetState::Healthy,
            TargetState::Unhealthy,
            TargetState::Draining,
            TargetState::UnhealthyDraining,
            TargetState::Unused,
            TargetState::Unavailable,
        ])
    }

    fn arb_seen() -> impl Strategy<Value = Option<Seen>> {
        prop::option::of(prop_oneof![
            (0u64..400).prop_map(Seen::Unhealthy),
            (0u64..400).prop_map(Seen::ServingAfterRelease)
        ])
    }

    fn arb_claim() -> impl Strategy<Value = Claim> {
        prop_oneof![
            Just(Claim::Registered),
            arb_seen().prop_map(|seen| Claim::Registering { seen }),
            arb_seen().prop_map(|seen| Claim::Leaving { seen }),
        ]
    }

    proptest! {
        /// Only certain claims, or uncertain ones on targets unhealthy for the grace, are removed;
        /// serving targets under uncertain claims never are; unclaimed ones never are.
        #[test]
        fn shared_removes_only_what_it_may(
            wanted in prop::collection::btree_set(0u8..10, 0..5),
            current in prop::collection::btree_map(0u8..10, arb_state(), 0..10),
            claims in prop::collection::btree_map(0u8..10, arb_claim(), 0..10),
            now in 0u64..400,
            deleting in any::<bool>(),
            ours in prop::collection::btree_set(0u8..10, 0..3),
        ) {
            let wanted: BTreeSet<Target> = wanted.iter().map(|n| Target::new(id(*n))).collect();
            let current: Vec<_> = current.iter().map(|(n, s)| reg(*n, *s)).collect();
            let claims: BTreeMap<TargetId, Claim> = claims.iter().map(|(n, c)| (id(*n), *c)).collect();
            let ours_now: BTreeSet<String> = ours.iter().map(|n| id(*n).id).collect();
            let want = if deleting { Want::Nothing } else { Want::Targets { targets: &wanted, confirmed: true } };
            let d = decide(GroupInputs {
                want, ownership: Ownership::Shared { claims: &claims }, current: &current, protected: &BTreeSet::new(),
                ours_now: &ours_now, now, health_lag: LAG,
            });
            for t in &d.deregister {
                let claim = claims.get(&t.id).copied();
                let state = current.iter().find(|c| c.target.id == t.id).map(|c| c.state);
                prop_assert!(claim.is_some(), "unclaimed {} removed", t.id);
                prop_assert!(state.is_some_and(|s| !s.is_draining()), "draining or absent {} removed", t.id);
                if !claim.is_some_and(Claim::is_certain) && !ours_now.contains(&t.id.id) {
                    prop_assert_eq!(state, Some(TargetState::Unhealthy));
                    let since = claim.and_then(Claim::unhealthy_since).unwrap_or(now);
                    prop_assert!(now.saturating_sub(since) >= UNCERTAIN_GRACE_SECS);
                }
                prop_assert!(deleting || !wanted.iter().any(|w| w.id == t.id));
            }
            // A serving target under an uncertain claim is let go of only after the health lag.
            for released in &d.released {
                let claim = claims.get(released).copied();
                prop_assert!(deleting && !claim.is_some_and(Claim::is_certain));
                let since = claim.and_then(Claim::serving_after_release_since).unwrap_or(now);
                prop_assert!(now.saturating_sub(since) >= LAG, "{} released before the health lag", released);
            }
            // Every target the decision writes about is claimed before the write.
            let before = d.claims_before.clone().unwrap_or_default();
            for t in d.deregister.iter().chain(&d.register) {
                prop_assert!(before.contains_key(&t.id));
            }
        }
    }
}
