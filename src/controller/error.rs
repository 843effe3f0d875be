use super::group::GroupReport;
use crate::aws::AwsError;
use crate::aws::security_groups::SecurityGroupError;
use crate::k8s::ownership::RecordError;
use crate::plan::sg_rules::NetworkingError;
use crate::plan::validate::InvalidBinding;
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
    #[error(
        "target group {arn} is already bound by {other}; several bindings may share a target group only when all of them set multiClusterTargetGroup"
    )]
    TargetGroupConflict { arn: String, other: String },
    #[error("{0}")]
    InvalidNodeSelector(String),
    #[error("could not {action}: {source}")]
    Kube { action: &'static str, source: kube::Error },
    #[error("cleanup not finished, retrying: {0}")]
    CleanupFailed(String),
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
            Self::TargetGroupConflict { .. } => "TargetGroupConflict",
            Self::InvalidNodeSelector(_) => "InvalidSpec",
            Self::Kube { .. } => "KubernetesAPIError",
            Self::CleanupFailed(_) => "CleanupFailed",
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
                | Self::TargetGroupConflict { .. }
                | Self::InvalidNodeSelector(_)
                | Self::SecurityGroup(
                    SecurityGroupError::RulesLimitExceeded { .. } | SecurityGroupError::InvalidRule { .. }
                )
        )
    }

    pub fn kube(action: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Kube { action, source }
    }

    /// The target group named by this failure is gone for good (deleted, or an ARN AWS does not
    /// accept, e.g. from another region): for cleanup, nothing is left in it to remove.
    pub fn means_group_gone(&self) -> bool {
        matches!(self, Self::Aws(AwsError::TargetGroupNotFound(_) | AwsError::Validation { .. }))
    }
}
