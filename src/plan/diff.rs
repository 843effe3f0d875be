//! The changes that take a target group from its current targets to the desired ones.

use std::collections::BTreeSet;

use crate::model::{RegisteredTarget, Target, TargetId};

/// Which of the group's targets this binding may remove.
#[derive(Clone, Copy, Debug)]
pub enum Ownership<'a> {
    /// The binding owns the group: anything it does not want goes.
    Exclusive,
    /// The group is shared with other clusters or registrars: only targets in the ownership record
    /// (the ones this cluster registered) may go.
    Shared { owned: &'a BTreeSet<TargetId> },
}

impl Ownership<'_> {
    fn may_remove(&self, id: &TargetId) -> bool {
        match self {
            Self::Exclusive => true,
            Self::Shared { owned } => owned.contains(id),
        }
    }
}

/// Deregistrations and registrations, applied in that order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetPlan {
    pub deregister: Vec<Target>,
    pub register: Vec<Target>,
}

impl TargetPlan {
    pub fn is_empty(&self) -> bool {
        self.deregister.is_empty() && self.register.is_empty()
    }
}

/// Plans the change from `current` to `desired`.
///
/// Draining targets are left out entirely: never deregistered again, and registered anew when
/// desired. Targets in `protected` (wanted by another binding of this cluster on the same group)
/// are never deregistered. Deregistrations carry the target exactly as ELBv2 reported it.
pub fn plan_targets(
    desired: &BTreeSet<Target>,
    current: &[RegisteredTarget],
    ownership: Ownership<'_>,
    protected: &BTreeSet<TargetId>,
) -> TargetPlan {
    let active: Vec<&RegisteredTarget> = current.iter().filter(|t| !t.state.is_draining()).collect();
    let active_ids: BTreeSet<&TargetId> = active.iter().map(|t| &t.target.id).collect();
    let desired_ids: BTreeSet<&TargetId> = desired.iter().map(|t| &t.id).collect();

    let mut deregister: Vec<Target> = active
        .iter()
        .map(|t| &t.target)
        .filter(|t| !desired_ids.contains(&t.id) && !protected.contains(&t.id) && ownership.may_remove(&t.id))
        .cloned()
        .collect();
    deregister.sort();
    deregister.dedup_by(|a, b| a.id == b.id);
    let register = desired.iter().filter(|t| !active_ids.contains(&t.id)).cloned().collect();
    TargetPlan { deregister, register }
}

/// How many desired targets are registered and not draining.
pub fn registered_count(desired: &BTreeSet<Target>, current: &[RegisteredTarget]) -> usize {
    let active: BTreeSet<&TargetId> = current.iter().filter(|t| !t.state.is_draining()).map(|t| &t.target.id).collect();
    desired.iter().filter(|t| active.contains(&t.id)).count()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::TargetState;

    fn id(n: u8, port: u16) -> TargetId {
        TargetId::new(format!("10.0.0.{n}"), port)
    }

    fn reg(id: TargetId, state: TargetState) -> RegisteredTarget {
        RegisteredTarget { target: Target::new(id), state }
    }

    fn set(ids: &[TargetId]) -> BTreeSet<Target> {
        ids.iter().cloned().map(Target::new).collect()
    }

    fn ids_of(targets: &[Target]) -> Vec<TargetId> {
        targets.iter().map(|t| t.id.clone()).collect()
    }

    #[test]
    fn exclusive_removes_everything_not_desired() {
        let current = [reg(id(1, 80), TargetState::Healthy), reg(id(2, 80), TargetState::Initial)];
        let plan = plan_targets(&set(&[id(2, 80), id(3, 80)]), &current, Ownership::Exclusive, &BTreeSet::new());
        assert_eq!(ids_of(&plan.deregister), vec![id(1, 80)]);
        assert_eq!(ids_of(&plan.register), vec![id(3, 80)]);
    }

    #[test]
    fn same_ip_on_two_ports_are_two_targets() {
        let current = [reg(id(1, 80), TargetState::Healthy)];
        let plan = plan_targets(&set(&[id(1, 81)]), &current, Ownership::Exclusive, &BTreeSet::new());
        assert_eq!(ids_of(&plan.deregister), vec![id(1, 80)]);
        assert_eq!(ids_of(&plan.register), vec![id(1, 81)]);
    }

    #[test]
    fn draining_targets_are_not_removed_again_and_are_re_registered_when_desired() {
        let current = [reg(id(1, 80), TargetState::Draining), reg(id(2, 80), TargetState::UnhealthyDraining)];
        let plan = plan_targets(&set(&[id(1, 80)]), &current, Ownership::Exclusive, &BTreeSet::new());
        assert!(plan.deregister.is_empty());
        assert_eq!(ids_of(&plan.register), vec![id(1, 80)]);
    }

    #[test]
    fn shared_never_removes_foreign_targets() {
        let owned: BTreeSet<TargetId> = [id(1, 80)].into();
        let current = [reg(id(1, 80), TargetState::Healthy), reg(id(9, 80), TargetState::Healthy)];
        let plan = plan_targets(&BTreeSet::new(), &current, Ownership::Shared { owned: &owned }, &BTreeSet::new());
        assert_eq!(ids_of(&plan.deregister), vec![id(1, 80)]);
    }

    #[test]
    fn protected_targets_stay() {
        let protected: BTreeSet<TargetId> = [id(1, 80)].into();
        let current = [reg(id(1, 80), TargetState::Healthy)];
        let plan = plan_targets(&BTreeSet::new(), &current, Ownership::Exclusive, &protected);
        assert!(plan.is_empty());
    }

    #[test]
    fn deregistration_keeps_the_reported_availability_zone() {
        let mut t = Target::new(id(1, 80));
        t.availability_zone = Some("all".into());
        let current = [RegisteredTarget { target: t.clone(), state: TargetState::Healthy }];
        let plan = plan_targets(&BTreeSet::new(), &current, Ownership::Exclusive, &BTreeSet::new());
        assert_eq!(plan.deregister, vec![t]);
    }

    fn arb_id() -> impl Strategy<Value = TargetId> {
        (0u8..12, prop::sample::select(vec![80u16, 81])).prop_map(|(n, p)| id(n, p))
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

    /// Applies a plan the way ELBv2 would: deregistered targets drain, registered ones appear.
    fn apply(current: &[RegisteredTarget], plan: &TargetPlan) -> BTreeSet<TargetId> {
        let gone: BTreeSet<&TargetId> = plan.deregister.iter().map(|t| &t.id).collect();
        current
            .iter()
            .filter(|t| !t.state.is_draining() && !gone.contains(&t.target.id))
            .map(|t| t.target.id.clone())
            .chain(plan.register.iter().map(|t| t.id.clone()))
            .collect()
    }

    proptest! {
        #[test]
        fn shared_plans_only_remove_owned_targets(
            desired in prop::collection::btree_set(arb_id(), 0..8),
            current in prop::collection::vec((arb_id(), arb_state()), 0..16),
            owned in prop::collection::btree_set(arb_id(), 0..8),
        ) {
            let current: Vec<_> = current.into_iter().map(|(i, s)| reg(i, s)).collect();
            let desired: BTreeSet<Target> = desired.into_iter().map(Target::new).collect();
            let plan = plan_targets(&desired, &current, Ownership::Shared { owned: &owned }, &BTreeSet::new());
            for t in &plan.deregister {
                prop_assert!(owned.contains(&t.id));
            }
        }

        #[test]
        fn applying_a_plan_yields_desired_plus_foreign(
            desired in prop::collection::btree_set(arb_id(), 0..8),
            current in prop::collection::vec((arb_id(), arb_state()), 0..16),
            owned in prop::collection::btree_set(arb_id(), 0..8),
            exclusive in any::<bool>(),
        ) {
            // ELBv2 holds one entry per id:port.
            let mut seen = BTreeSet::new();
            let current: Vec<_> = current.into_iter().filter(|(i, _)| seen.insert(i.clone())).map(|(i, s)| reg(i, s)).collect();
            let desired_targets: BTreeSet<Target> = desired.iter().cloned().map(Target::new).collect();
            let ownership = if exclusive { Ownership::Exclusive } else { Ownership::Shared { owned: &owned } };
            let plan = plan_targets(&desired_targets, &current, ownership, &BTreeSet::new());
            let foreign: BTreeSet<TargetId> = current
                .iter()
                .filter(|t| !t.state.is_draining() && !exclusive && !owned.contains(&t.target.id))
                .map(|t| t.target.id.clone())
                .collect();
            let expected: BTreeSet<TargetId> = desired.union(&foreign).cloned().collect();
            prop_assert_eq!(apply(&current, &plan), expected);
            // A second plan against the result changes nothing.
            let after: Vec<_> = apply(&current, &plan).into_iter().map(|i| reg(i, TargetState::Healthy)).collect();
            prop_assert!(plan_targets(&desired_targets, &after, ownership, &BTreeSet::new()).is_empty());
        }
    }
}
