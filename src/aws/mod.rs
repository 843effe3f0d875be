//! AWS access behind narrow, domain-shaped traits. The SDK adapters are thin; rate limiting,
//! retries and error classification live here so the rest of the agent never sees SDK types.

pub mod accounts;
mod describe_batch;
mod ec2;
mod elbv2;
mod error;
mod rate_limit;
pub mod security_groups;
mod write_queue;

use std::future::Future;

pub use ec2::Ec2Network;
pub use elbv2::Elbv2TargetGroups;
pub use error::AwsError;
pub use rate_limit::{Rate, RateLimits, TokenBucket};
pub use write_queue::{Turn, Urgency};

use crate::model::{Account, Cidr, RegisteredTarget, Target, TargetGroupInfo, TargetGroupRef};

/// Most targets ELBv2 accepts in one RegisterTargets/DeregisterTargets call.
pub const MAX_TARGETS_PER_CALL: usize = 200;

/// The target-group operations the agent needs.
pub trait TargetGroups: Send + Sync + 'static {
    /// Looks a target group up by ARN or name.
    fn describe(&self, tg: &TargetGroupRef) -> impl Future<Output = Result<TargetGroupInfo, AwsError>> + Send;
    /// Every target in the group, draining ones included.
    fn targets(&self, arn: &str) -> impl Future<Output = Result<Vec<RegisteredTarget>, AwsError>> + Send;
    /// Registers at most [`MAX_TARGETS_PER_CALL`] targets, once it is `turn`'s turn at the write budget.
    fn register(&self, arn: &str, targets: &[Target], turn: &Turn)
    -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Deregisters at most [`MAX_TARGETS_PER_CALL`] targets, once it is `turn`'s turn at the write budget.
    fn deregister(
        &self,
        arn: &str,
        targets: &[Target],
        turn: &Turn,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// These operations for target groups in `account`: this client for the agent's own account.
    /// Without an implementation, no other account is reachable.
    fn in_account(&self, account: &Account) -> impl Future<Output = Result<Scoped<'_, Self>, AwsError>> + Send
    where
        Self: Sized,
    {
        let result = match account {
            Account::Own => Ok(Scoped::Own(self)),
            Account::Role(role) => Err(AwsError::NoRoleAccess { role: role.role_arn.clone() }),
        };
        std::future::ready(result)
    }
}

/// A client for one account: the agent's own (borrowed), or one acting through an assumed role.
pub enum Scoped<'a, T> {
    Own(&'a T),
    Assumed(T),
}

impl<T> std::ops::Deref for Scoped<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Self::Own(own) => own,
            Self::Assumed(assumed) => assumed,
        }
    }
}

/// VPC facts needed to decide the AvailabilityZone of IP targets.
pub trait Network: Send + Sync + 'static {
    /// Every IPv4 and IPv6 CIDR associated with the VPC.
    fn vpc_cidrs(&self, vpc_id: &str) -> impl Future<Output = Result<Vec<Cidr>, AwsError>> + Send;
}

/// Loads the SDK configuration the standard way (env, profile, IRSA, Pod Identity, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`), with SDK retries kept short: the controller owns backoff.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}
