/// The facts about an existing target group that decide how it may be fed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetGroupInfo {
    pub arn: String,
    pub name: String,
    pub target_type: TargetGroupType,
    pub vpc_id: Option<String>,
    pub ip_address_type: TargetGroupIpType,
    pub protocol: Option<String>,
    /// Absent when ELBv2 reports none (health checks of lambda groups, or a fake).
    pub health_check: Option<HealthCheckTiming>,
}

/// How a target group checks its targets, which bounds how late ELBv2 reports one gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthCheckTiming {
    pub interval_secs: u64,
    pub timeout_secs: u64,
    /// Consecutive failed checks before a target is reported unhealthy.
    pub unhealthy_threshold: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetGroupType {
    Ip,
    Instance,
    /// `lambda`, `alb` or anything newer: not something this agent can feed.
    Unsupported(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetGroupIpType {
    Ipv4,
    Ipv6,
}

/// How a binding names its target group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetGroupRef {
    Arn(String),
    Name(String),
}

impl std::fmt::Display for TargetGroupRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Arn(arn) => f.write_str(arn),
            Self::Name(name) => write!(f, "name {name}"),
        }
    }
}
