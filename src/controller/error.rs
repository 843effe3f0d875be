use crate::aws::AwsError;
use crate::aws::security_groups::SecurityGroupError;
use crate::k8s::ownership::RecordError;
use crate::plan::sg_rules::NetworkingError;
use crate::plan::validate::InvalidBinding;

/// Why a reconcile of a binding failed. Each variant has a reason for its condition and Event.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Invalid(#[from] InvalidBinding),
    #[error(transparent)]
    Aws(#[from] AwsError),
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
    #[error(
        "Service {service} is of type {type_}; instance targets need a NodePort or LoadBalancer Service with a nodePort"
    )]
    InvalidServiceType { service: String, type_: String },
    #[error("{0}")]
    InvalidNodeSelector(String),
    #[error("could not {action}: {source}")]
    Kube { action: &'static str, source: kube::Error },
}

impl ReconcileError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.reason(),
            Self::Aws(e) => e.reason(),
            Self::OwnershipRecord(_) => "OwnershipRecordFailed",
            Self::Networking(e) => e.reason(),
            Self::SecurityGroup(e) => e.reason(),
            Self::TargetGroupConflict { .. } => "TargetGroupConflict",
            Self::InvalidServiceType { .. } => "InvalidServiceType",
            Self::InvalidNodeSelector(_) => "InvalidSpec",
            Self::Kube { .. } => "KubernetesAPIError",
        }
    }

    /// Failures that only a change of the binding (or of AWS by hand) can fix: retried at the
    /// drift interval instead of with fast backoff, so a quota or a typo is reported, not hammered.
    pub fn needs_user_action(&self) -> bool {
        matches!(
            self,
            Self::Invalid(_)
                | Self::Networking(_)
                | Self::TargetGroupConflict { .. }
                | Self::InvalidServiceType { .. }
                | Self::InvalidNodeSelector(_)
                | Self::SecurityGroup(
                    SecurityGroupError::RulesLimitExceeded { .. } | SecurityGroupError::InvalidRule { .. }
                )
        )
    }

    pub fn kube(action: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Kube { action, source }
    }
}
