//! Sends a decision's target writes: batches of at most [`MAX_TARGETS_PER_CALL`], deregistrations
//! first. A batch AWS refuses because of some of its targets is split until the refused ones are
//! alone, so one bad target never blocks the others. Any other failure stops the writes; every
//! target gets the outcome that tells its claim what may have happened.

use std::collections::{BTreeMap, VecDeque};

use crate::aws::{AwsError, MAX_TARGETS_PER_CALL, TargetGroups, Turn};
use crate::model::{Target, TargetId};
use crate::plan::decide::Outcome;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Register,
    Deregister,
}

/// What became of a list of targets.
#[derive(Debug, Default)]
pub struct Sent {
    /// Targets not in the map were not sent.
    pub outcomes: BTreeMap<TargetId, Outcome>,
    /// Targets AWS refused one by one, with its message.
    pub refused: Vec<(Target, String)>,
    /// The failure that stopped the writes.
    pub error: Option<AwsError>,
}

impl Sent {
    pub fn applied(&self, targets: &[Target]) -> Vec<Target> {
        targets.iter().filter(|t| self.outcomes.get(&t.id) == Some(&Outcome::Applied)).cloned().collect()
    }
}

/// An error that names targets AWS will not take in this call (split the batch to find them).
fn refuses_some_targets(write: Write, error: &AwsError) -> bool {
    match write {
        Write::Register => matches!(error, AwsError::InvalidTarget { .. } | AwsError::Validation { .. }),
        // "Not registered": for a deregistration, that target is already gone.
        Write::Deregister => matches!(error, AwsError::InvalidTarget { .. }),
    }
}

/// Sends `targets`, each batch waiting for `turn` at the write budget.
pub async fn send<T: TargetGroups>(aws: &T, write: Write, arn: &str, targets: &[Target], turn: &Turn) -> Sent {
    let mut sent = Sent::default();
    let mut queue: VecDeque<&[Target]> = targets.chunks(MAX_TARGETS_PER_CALL).collect();
    while let Some(batch) = queue.pop_front() {
        let result = match write {
            Write::Register => aws.register(arn, batch, turn).await,
            Write::Deregister => aws.deregister(arn, batch, turn).await,
        };
        let outcome = match result {
            Ok(()) => Outcome::Applied,
            Err(e) if refuses_some_targets(write, &e) && batch.len() > 1 => {
                let (a, b) = batch.split_at(batch.len() / 2);
                queue.push_front(b);
                queue.push_front(a);
                continue;
            }
            Err(e) if refuses_some_targets(write, &e) => {
                sent.refused.extend(batch.iter().map(|t| (t.clone(), e.to_string())));
                Outcome::Refused
            }
            Err(e) => {
                let outcome = if e.may_have_taken_effect() { Outcome::Unknown } else { Outcome::NotApplied };
                sent.outcomes.extend(batch.iter().map(|t| (t.id.clone(), outcome)));
                sent.error = Some(e);
                return sent;
            }
        };
        sent.outcomes.extend(batch.iter().map(|t| (t.id.clone(), outcome)));
    }
    sent
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::model::{RegisteredTarget, TargetGroupInfo, TargetGroupRef};

    /// Records every write; refuses batches holding a target in `bad`; fails call `fail_at`.
    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<(&'static str, usize)>>,
        bad: Vec<TargetId>,
        fail_at: Option<(usize, bool)>,
    }

    impl Fake {
        fn write(&self, op: &'static str, targets: &[Target]) -> Result<(), AwsError> {
            let mut calls = self.calls.lock().expect("fake lock");
            let index = calls.len();
            calls.push((op, targets.len()));
            match self.fail_at {
                Some((at, true)) if at == index => Err(AwsError::Transport { op, message: "reset".into() }),
                Some((at, false)) if at == index => Err(AwsError::Throttled { op, message: "slow down".into() }),
                _ if targets.iter().any(|t| self.bad.contains(&t.id)) => {
                    Err(AwsError::InvalidTarget { op, message: "terminated instance".into() })
                }
                _ => Ok(()),
            }
        }
    }

    impl TargetGroups for Fake {
        async fn describe(&self, _: &TargetGroupRef) -> Result<TargetGroupInfo, AwsError> {
            Err(AwsError::TargetGroupNotFound("send only writes".into()))
        }
        async fn targets(&self, _: &str) -> Result<Vec<RegisteredTarget>, AwsError> {
            Err(AwsError::TargetGroupNotFound("send only writes".into()))
        }
        async fn register(&self, _: &str, targets: &[Target], _: &Turn) -> Result<(), AwsError> {
            self.write("register", targets)
        }
        async fn deregister(&self, _: &str, targets: &[Target], _: &Turn) -> Result<(), AwsError> {
            self.write("deregister", targets)
        }
    }

    fn targets(n: usize) -> Vec<Target> {
        (0..n).map(|i| Target::new(TargetId::new(format!("10.0.{}.{}", i / 250, i % 250), 80))).collect()
    }

    fn turn() -> Turn {
        Turn::new(crate::aws::Urgency::Add)
    }

    fn count(sent: &Sent, outcome: Outcome) -> usize {
        sent.outcomes.values().filter(|o| **o == outcome).count()
    }

    #[tokio::test]
    async fn batches_of_200() {
        let fake = Fake::default();
        let sent = send(&fake, Write::Deregister, "arn", &targets(450), &turn()).await;
        assert!(sent.error.is_none());
        assert_eq!(count(&sent, Outcome::Applied), 450);
        let calls = fake.calls.lock().expect("fake lock").clone();
        assert_eq!(calls, vec![("deregister", 200), ("deregister", 200), ("deregister", 50)]);
    }

    #[tokio::test]
    async fn one_refused_target_never_blocks_the_others() {
        let all = targets(450);
        let fake = Fake { bad: vec![all[7].id.clone(), all[420].id.clone()], ..Default::default() };
        let sent = send(&fake, Write::Register, "arn", &all, &turn()).await;
        assert!(sent.error.is_none());
        assert_eq!(count(&sent, Outcome::Applied), 448);
        let refused: Vec<_> = sent.refused.iter().map(|(t, _)| t.id.clone()).collect();
        assert_eq!(refused, vec![all[7].id.clone(), all[420].id.clone()]);
        let calls = fake.calls.lock().expect("fake lock").len();
        assert!(calls <= 3 + 2 * 2 * 8, "splitting costs a few calls per refused target, not one per target: {calls}");
    }

    #[tokio::test]
    async fn a_lost_answer_is_unknown_a_throttle_is_not_applied_and_both_stop() {
        for (lost, expected) in [(true, Outcome::Unknown), (false, Outcome::NotApplied)] {
            let fake = Fake { fail_at: Some((1, lost)), ..Default::default() };
            let sent = send(&fake, Write::Register, "arn", &targets(450), &turn()).await;
            assert!(sent.error.is_some());
            assert_eq!(count(&sent, Outcome::Applied), 200);
            assert_eq!(count(&sent, expected), 200);
            assert_eq!(sent.outcomes.len(), 400, "the third batch was not sent");
        }
    }
}
