use crate::aws::AwsError;
use crate::aws::security_groups::SecurityGroupError;
use crate::k8s::ownership::RecordError;
use crate::plan::binding::GroupConflict;
use crate::plan::outcome::GroupReport;
use crate::plan::sg_rules::NetworkingError;
use crate::plan::validate::{InvalidBinding, is_target_group_arn};
use crate::plan::wanted::BackendProblem;

/// Why a reconcile of a binding failed. Each variant has a reason for its condition and Event.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Invalid(#[from] InvalidBinding),
    /// A configuration mistake in the backend: reported, and the group left as it is.
    #[error("{0}; its targets are kept until this is fixed")]
    Backend(#[from] BackendProblem),
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// A target write failed after others may have taken effect; `report` says which did.
    #[error("{source}")]
    GroupWrite { report: Box<GroupReport>, source: AwsError },
    #[error(transparent)]
    OwnershipRecord(#[from] RecordError),
    #[error(transparent)]
    Networking(#[from] NetworkingError),
    #[error(transparent)]
    SecurityGroup(#[from] SecurityGroupError),
    #[error(transparent)]
    TargetGroupConflict(#[from] GroupConflict),
    #[error("{0}")]
    InvalidNodeSelector(String),
    #[error("could not {action}: {source}")]
    Kube { action: &'static str, source: kube::Error },
    #[error("cleanup not finished, retrying: {0}")]
    CleanupFailed(String),
    /// A shared binding's ownership record is gone (deleted by hand, a namespace move) while its
    /// status says it registered targets: what its endpoints hold was removed, but which of the
    /// others were this cluster's cannot be known any more.
    #[error(
        "the ownership record of this binding is gone, and {registered} target(s) were registered in {arn} while its endpoints now hold {held}; the rest cannot be told from other clusters' targets. Check the target group, then remove the finalizer by hand: kubectl patch targetgroupbinding <name> --type=json -p '[{{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}}]'"
    )]
    RecordLost { arn: String, registered: usize, held: usize },
    /// Every object the API server returns has one; without it nothing kept for the binding (its
    /// ownership record above all) could be told from another's.
    #[error("TargetGroupBinding {binding} has no metadata.uid")]
    NoUid { binding: String },
}

impl ReconcileError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.reason(),
            Self::Backend(e) => e.reason(),
            Self::Aws(e) | Self::GroupWrite { source: e, .. } => e.reason(),
            Self::OwnershipRecord(e) => e.reason(),
            Self::Networking(e) => e.reason(),
            Self::SecurityGroup(e) => e.reason(),
            Self::TargetGroupConflict(_) => "TargetGroupConflict",
            Self::InvalidNodeSelector(_) => "InvalidSpec",
            Self::Kube { .. } => "KubernetesAPIError",
            Self::CleanupFailed(_) => "CleanupFailed",
            Self::RecordLost { .. } => "OwnershipRecordLost",
            Self::NoUid { .. } => "InvalidObject",
        }
    }

    /// Failures that only a change of the binding (or of AWS by hand) can fix: retried at the
    /// drift interval instead of with fast backoff, so a quota or a typo is reported, not hammered.
    pub fn needs_user_action(&self) -> bool {
        matches!(
            self,
            Self::Invalid(_)
                | Self::Backend(_)
                | Self::Networking(_)
                | Self::TargetGroupConflict(_)
                | Self::InvalidNodeSelector(_)
                | Self::NoUid { .. }
                | Self::SecurityGroup(
                    SecurityGroupError::RulesLimitExceeded { .. } | SecurityGroupError::InvalidRule { .. }
                )
        )
    }

    pub fn kube(action: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Kube { action, source }
    }

    /// The target group `arn` names is gone for good, so cleanup has nothing left to remove: AWS says
    /// it is not found, or refuses a reference that cannot name a group at all. A `ValidationError`
    /// on a well-formed ARN (a wrong region, a malformed request) is not proof: targets may still be
    /// in that group, so the claims and the finalizer stay.
    pub fn means_group_gone(&self, arn: &str) -> bool {
        match self {
            Self::Aws(AwsError::TargetGroupNotFound(_)) => true,
            Self::Aws(AwsError::Validation { .. }) => !is_target_group_arn(arn),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_group_that_cannot_hold_targets_counts_as_gone() {
        let arn = "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/web/0123456789abcdef";
        let not_found = ReconcileError::Aws(AwsError::TargetGroupNotFound(arn.into()));
        assert!(not_found.means_group_gone(arn));
        // A wrong region or a malformed request: the group may still hold our targets.
        let refused = || ReconcileError::Aws(AwsError::Validation { op: "DescribeTargetHealth", message: "x".into() });
        assert!(!refused().means_group_gone(arn));
        assert!(refused().means_group_gone("arn:aws:elasticloadbalancing:us-east-1:123:targetgroup/web"));
        let throttled = ReconcileError::Aws(AwsError::Throttled { op: "DescribeTargetHealth", message: "x".into() });
        assert!(!throttled.means_group_gone(arn));
    }
}
