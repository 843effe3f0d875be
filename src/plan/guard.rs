//! The mass-deregistration guard: an empty desired set must be proven before it may empty a
//! target group, because a cache that is unsynced, relisting or erroring also looks empty.

use super::diff::TargetPlan;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Safe to apply as planned.
    Apply,
    /// The inputs are not known yet: change nothing.
    Wait,
    /// The plan would remove every target this binding has because it wants none: confirm the
    /// emptiness with a live read of the Service and its EndpointSlices first.
    ConfirmEmpty,
}

/// `inputs_synced`: the watches feeding this binding have completed their initial list and are
/// not in a relist. `confirmed_empty`: a live read already showed the backend is gone or empty.
pub fn check(inputs_synced: bool, desired_len: usize, plan: &TargetPlan, confirmed_empty: bool) -> Verdict {
    if !inputs_synced {
        Verdict::Wait
    } else if desired_len == 0 && !plan.deregister.is_empty() && !confirmed_empty {
        Verdict::ConfirmEmpty
    } else {
        Verdict::Apply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Target, TargetId};

    fn plan(deregister: usize) -> TargetPlan {
        TargetPlan {
            deregister: (0..deregister).map(|i| Target::new(TargetId::new(format!("10.0.0.{i}"), 80))).collect(),
            register: vec![],
        }
    }

    #[test]
    fn every_combination() {
        for synced in [false, true] {
            for desired in [0, 3] {
                for deregister in [0, 2] {
                    for confirmed in [false, true] {
                        let verdict = check(synced, desired, &plan(deregister), confirmed);
                        let expected = if !synced {
                            Verdict::Wait
                        } else if desired == 0 && deregister > 0 && !confirmed {
                            Verdict::ConfirmEmpty
                        } else {
                            Verdict::Apply
                        };
                        assert_eq!(verdict, expected, "synced={synced} desired={desired} dereg={deregister} confirmed={confirmed}");
                    }
                }
            }
        }
    }
}
