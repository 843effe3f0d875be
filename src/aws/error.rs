use aws_sdk_elasticloadbalancingv2::error::{ProvideErrorMetadata, SdkError};

/// An AWS call that failed, classified by what the agent does about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsError {
    #[error("target group {0} not found")]
    TargetGroupNotFound(String),
    #[error("{op}: invalid target: {message}")]
    InvalidTarget { op: &'static str, message: String },
    #[error("{op}: validation error: {message}")]
    Validation { op: &'static str, message: String },
    #[error("{op}: access denied: {message}")]
    AccessDenied { op: &'static str, message: String },
    #[error("{op}: throttled by AWS: {message}")]
    Throttled { op: &'static str, message: String },
    #[error("{op}: target group {arn} is at its targets quota: {message}")]
    TooManyTargets { op: &'static str, arn: String, message: String },
    #[error("VPC {0} not found")]
    VpcNotFound(String),
    #[error("{op}: {code}: {message}")]
    Api { op: &'static str, code: String, message: String },
    #[error("{op}: could not reach AWS: {message}")]
    Transport { op: &'static str, message: String },
    /// Not sent: a client acting in one account was asked about another account's target group.
    #[error("{op}: target group {arn} is not in account {account}, which this binding's role acts in")]
    OtherAccount { op: &'static str, arn: String, account: String },
    /// Not sent: no way to act through roles here.
    #[error("cannot assume role {role} here")]
    NoRoleAccess { role: String },
    /// Not sent: this replica is not (or no longer surely) the leader.
    #[error("{op}: not sent: this replica does not hold the leader lease")]
    Fenced { op: &'static str },
    /// Not sent: the binding's inputs changed while the write waited for its turn.
    #[error("{op}: not sent: the inputs it was decided from changed while it waited")]
    Superseded { op: &'static str },
}

impl AwsError {
    /// Low-cardinality reason for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TargetGroupNotFound(_) => "TargetGroupNotFound",
            Self::InvalidTarget { .. } => "InvalidTarget",
            Self::Validation { .. } => "AWSValidationError",
            Self::AccessDenied { .. } => "AWSAccessDenied",
            Self::Throttled { .. } => "Throttled",
            Self::TooManyTargets { .. } => "TooManyTargets",
            Self::VpcNotFound(_) => "VpcNotFound",
            Self::Api { .. } => "AWSError",
            Self::Transport { .. } => "AWSUnreachable",
            Self::Fenced { .. } => "NotLeader",
            Self::Superseded { .. } => "Superseded",
            Self::OtherAccount { .. } => "TargetGroupInOtherAccount",
            Self::NoRoleAccess { .. } => "Unsupported",
        }
    }

    /// Whether a failed write may still have taken effect: a server error or a lost answer says
    /// nothing about it. Client-side refusals (throttling, validation, permissions) did not.
    pub fn may_have_taken_effect(&self) -> bool {
        !matches!(
            self,
            Self::TargetGroupNotFound(_)
                | Self::InvalidTarget { .. }
                | Self::Validation { .. }
                | Self::AccessDenied { .. }
                | Self::Throttled { .. }
                | Self::TooManyTargets { .. }
                | Self::VpcNotFound(_)
                | Self::Fenced { .. }
                | Self::Superseded { .. }
                | Self::OtherAccount { .. }
                | Self::NoRoleAccess { .. }
        )
    }

    /// Classifies an SDK error of operation `op` on `resource` (a target group ARN, VPC id, …).
    pub(crate) fn from_sdk<E, R>(op: &'static str, resource: &str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let (code, message) = match &err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                (e.code().unwrap_or("Unknown").to_owned(), e.message().unwrap_or_default().to_owned())
            }
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
                return Self::Transport { op, message: error_chain(&err) };
            }
            _ => ("Unknown".to_owned(), error_chain(&err)),
        };
        match code.as_str() {
            "TargetGroupNotFound" => Self::TargetGroupNotFound(resource.to_owned()),
            "InvalidTarget" => Self::InvalidTarget { op, message },
            "ValidationError" => Self::Validation { op, message },
            "TooManyTargets" => Self::TooManyTargets { op, arn: resource.to_owned(), message },
            "InvalidVpcID.NotFound" => Self::VpcNotFound(resource.to_owned()),
            "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "InvalidClientTokenId"
            | "AuthFailure"
            | "ExpiredToken"
            | "SignatureDoesNotMatch" => Self::AccessDenied { op, message },
            "Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "TooManyRequestsException" => {
                Self::Throttled { op, message }
            }
            _ => Self::Api { op, code, message },
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
