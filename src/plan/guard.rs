//! The mass-deregistration guard: an empty desired set must be proven before it may empty a
//! target group. A backend whose watches have not synced never reaches planning (see
//! `index::Backend::synced`), and a relist is swapped in whole; this guard covers the rest: a
//! cache that is wrong for any other reason also looks empty.

use super::diff::TargetPlan;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Safe to apply as planned.
    Apply,
    /// The plan would remove targets because the binding wants none: confirm the emptiness with
    /// a live read of the Service and its EndpointSlices first.
    ConfirmEmpty,
}

/// `confirmed_empty`: a live read already showed the backend is gone or has no ready endpoint.
pub fn check(desired_len: usize, plan: &TargetPlan, confirmed_empty: bool) -> Verdict {
    if desired_len == 0 && !plan.deregister.is_empty() && !confirmed_empty {
        Verdict::ConfirmEmpty
    } else {
        Verdict::Apply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Target, TargetId};

    fn plan(deregister: usize, register: usize) -> TargetPlan {
        let t = |i: usize| Target::new(TargetId::new(format!("10.0.0.{i}"), 80));
        TargetPlan { deregister: (0..deregister).map(t).collect(), register: (100..100 + register).map(t).collect() }
    }

    #[test]
    fn emptying_needs_confirmation() {
        assert_eq!(check(0, &plan(3, 0), false), Verdict::ConfirmEmpty);
        assert_eq!(check(0, &plan(1, 0), false), Verdict::ConfirmEmpty);
        assert_eq!(check(0, &plan(3, 0), true), Verdict::Apply);
    }

    #[test]
    fn ordinary_changes_apply() {
        // Scale-down to one pod, full replacement, nothing to do, and registration only.
        assert_eq!(check(1, &plan(5, 0), false), Verdict::Apply);
        assert_eq!(check(4, &plan(4, 4), false), Verdict::Apply);
        assert_eq!(check(0, &plan(0, 0), false), Verdict::Apply);
        assert_eq!(check(2, &plan(0, 2), false), Verdict::Apply);
    }
}
