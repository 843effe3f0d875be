//! Lookups of target groups by ARN, gathered into shared DescribeTargetGroups calls.
//!
//! The API takes up to [`MAX_ARNS_PER_CALL`] ARNs per call, so at start-up (every binding looks
//! its group up at once) a thousand groups cost fifty calls instead of a thousand. One sender per
//! client waits [`GATHER_WINDOW`], then its turn at the describe rate limit, and takes up to
//! twenty ARNs per turn: lookups that arrive while it waits ride along, so the busier the
//! describe budget, the fuller the calls. A lone lookup on an idle budget is a call of one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use super::AwsError;
use crate::model::TargetGroupInfo;

/// "You cannot describe more than '20' target groups at a time" (the API's answer to 21).
pub const MAX_ARNS_PER_CALL: usize = 20;

/// How long the first lookup of a batch waits for others before the sender asks for its turn.
pub const GATHER_WINDOW: Duration = Duration::from_millis(5);

pub type Answer = Result<TargetGroupInfo, AwsError>;

/// Where a lookup's answer goes.
pub type Reply = oneshot::Sender<Answer>;

/// The client a lookup is for: the role it acts through, `None` for the agent's own credentials.
type Client = Option<String>;

/// Lookups waiting to be sent, per client (the agent's own, or one per assumed role).
#[derive(Default)]
pub struct DescribeBatches {
    waiting: Mutex<HashMap<Client, Vec<(String, Reply)>>>,
}

impl DescribeBatches {
    /// Adds a lookup of `arn` for the client `role`; true when no sender is under way for that
    /// client, and the caller must start one that calls [`take`](Self::take) until it says done.
    pub fn join(&self, role: &Client, arn: &str) -> (bool, oneshot::Receiver<Answer>) {
        let (reply, answer) = oneshot::channel();
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let batch = waiting.entry(role.clone()).or_default();
        batch.push((arn.to_owned(), reply));
        (batch.len() == 1, answer)
    }

    /// The next call's worth of lookups for `role`: up to [`MAX_ARNS_PER_CALL`] ARNs in arrival
    /// order, each with every lookup of it (one ARN asked twice is sent once). The flag says
    /// whether lookups remain; when none do, the sender is done and the next lookup starts another.
    pub fn take(&self, role: &Client) -> (Vec<(String, Vec<Reply>)>, bool) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let gathered = waiting.remove(role).unwrap_or_default();
        let mut chunk: Vec<(String, Vec<Reply>)> = Vec::new();
        let mut position: HashMap<String, usize> = HashMap::new();
        let mut rest = Vec::new();
        for (arn, reply) in gathered {
            match position.get(&arn) {
                Some(&i) => chunk[i].1.push(reply),
                None if chunk.len() < MAX_ARNS_PER_CALL => {
                    position.insert(arn.clone(), chunk.len());
                    chunk.push((arn, vec![reply]));
                }
                None => rest.push((arn, reply)),
            }
        }
        let more = !rest.is_empty();
        if more {
            waiting.insert(role.clone(), rest);
        }
        (chunk, more)
    }
}

/// Whether a failed call of several ARNs must be retried one ARN at a time: one unknown or
/// malformed ARN fails the whole call, and must not fail the others' lookups.
pub fn retry_one_by_one(error: &AwsError) -> bool {
    matches!(error, AwsError::TargetGroupNotFound(_) | AwsError::Validation { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_grouped_per_client_deduplicated_and_chunked() {
        let batches = DescribeBatches::default();
        let own = None;
        let role = Some("arn:aws:iam::222222222222:role/r".to_owned());
        let mut answers = Vec::new();
        let (first, a) = batches.join(&own, "arn-0");
        assert!(first, "the first lookup opens the batch");
        answers.push(a);
        for i in 1..45 {
            let (opens, a) = batches.join(&own, &format!("arn-{i}"));
            assert!(!opens);
            answers.push(a);
        }
        let (opens, _dup) = batches.join(&own, "arn-7");
        assert!(!opens);
        let (opens, _other) = batches.join(&role, "arn-0");
        assert!(opens, "another client's lookups are another batch");

        let mut sizes = Vec::new();
        let mut arn7 = None;
        loop {
            let (chunk, more) = batches.take(&own);
            sizes.push(chunk.len());
            arn7 = arn7.or(chunk.iter().find(|(arn, _)| arn == "arn-7").map(|(_, r)| r.len()));
            if !more {
                break;
            }
            let (opens, _) = batches.join(&own, &format!("arn-late-{}", sizes.len()));
            assert!(!opens, "while lookups remain, the sender under way takes them");
        }
        assert_eq!(sizes, vec![20, 20, 7], "45 ARNs and two that joined mid-way, twenty a call");
        assert_eq!(arn7, Some(2), "one ARN asked twice is sent once and answered twice");
        let (opens, _) = batches.join(&own, "arn-1");
        assert!(opens, "once the sender is done, the next lookup starts another");
        assert_eq!(batches.take(&role).0.len(), 1);
    }
}
