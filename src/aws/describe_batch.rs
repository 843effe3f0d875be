//! Lookups of target groups by ARN, gathered into shared DescribeTargetGroups calls.
//!
//! The API takes up to [`MAX_ARNS_PER_CALL`] ARNs per call, so at start-up (every binding looks
//! its group up at once) a thousand groups cost fifty calls instead of a thousand. A lookup waits
//! at most [`GATHER_WINDOW`] for company; a lone lookup is a call of one, as before.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use super::AwsError;
use crate::model::TargetGroupInfo;

/// "You cannot describe more than '20' target groups at a time" (the API's answer to 21).
pub const MAX_ARNS_PER_CALL: usize = 20;

/// How long the first lookup of a batch waits for others before the batch is sent.
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
    /// Adds a lookup of `arn` for the client `role`; true when it opens a new batch, whose sender
    /// must [`take`](Self::take) it after the gather window.
    pub fn join(&self, role: &Client, arn: &str) -> (bool, oneshot::Receiver<Answer>) {
        let (reply, answer) = oneshot::channel();
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let batch = waiting.entry(role.clone()).or_default();
        batch.push((arn.to_owned(), reply));
        (batch.len() == 1, answer)
    }

    /// The lookups gathered for `role`, by ARN (one ARN asked twice is sent once), in chunks the
    /// API accepts. Lookups that join from now on open a new batch.
    pub fn take(&self, role: &Client) -> Vec<Vec<(String, Vec<Reply>)>> {
        let gathered = self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(role).unwrap_or_default();
        let mut by_arn: Vec<(String, Vec<Reply>)> = Vec::new();
        let mut position: HashMap<String, usize> = HashMap::new();
        for (arn, reply) in gathered {
            match position.get(&arn) {
                Some(&i) => by_arn[i].1.push(reply),
                None => {
                    position.insert(arn.clone(), by_arn.len());
                    by_arn.push((arn, vec![reply]));
                }
            }
        }
        let mut chunks = Vec::new();
        let mut rest = by_arn.into_iter().peekable();
        while rest.peek().is_some() {
            chunks.push(rest.by_ref().take(MAX_ARNS_PER_CALL).collect());
        }
        chunks
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

        let chunks = batches.take(&own);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![20, 20, 5]);
        let arn7 = chunks.iter().flatten().find(|(arn, _)| arn == "arn-7").map(|(_, r)| r.len());
        assert_eq!(arn7, Some(2), "one ARN asked twice is sent once and answered twice");
        assert!(batches.take(&own).is_empty());
        let (opens, _) = batches.join(&own, "arn-1");
        assert!(opens, "after a take, the next lookup opens a new batch");
        assert_eq!(batches.take(&role).len(), 1);
    }
}
