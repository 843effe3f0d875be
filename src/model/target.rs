use std::fmt;

/// What ELBv2 identifies a target by: an IP address or instance id, and a port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetId {
    pub id: String,
    pub port: u16,
}

impl TargetId {
    /// An IP address is kept in its canonical text form (RFC 5952 for IPv6: lower case, zeros
    /// compressed), so an address spelled differently by Kubernetes and by AWS is one target.
    pub fn new(id: impl Into<String>, port: u16) -> Self {
        Self { id: canonical_address(id.into()), port }
    }
}

/// `id` in canonical form when it is an IP address (`2600:1F18:0:0::0A` → `2600:1f18::a`); any
/// other id (an instance id) as it is.
pub fn canonical_address(id: String) -> String {
    match id.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            let canonical = ip.to_string();
            if canonical == id { id } else { canonical }
        }
        Err(_) => id,
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.id, self.port)
    }
}

impl std::str::FromStr for TargetId {
    type Err = String;

    /// Parses `id:port`; the id may itself contain colons (IPv6), so split at the last one.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} is not id:port"))?;
        let port = port.parse().map_err(|_| format!("{s:?} has an invalid port"))?;
        if id.is_empty() {
            return Err(format!("{s:?} has an empty id"));
        }
        Ok(Self::new(id, port))
    }
}

/// A target to register: its identity plus the AvailabilityZone to send (`all` for IPs outside
/// the target group's VPC; otherwise none, so ELBv2 derives it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub id: TargetId,
    pub availability_zone: Option<String>,
}

impl Target {
    pub fn new(id: TargetId) -> Self {
        Self { id, availability_zone: None }
    }
}

/// Target health as DescribeTargetHealth reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetState {
    Initial,
    Healthy,
    Unhealthy,
    UnhealthyDraining,
    Unused,
    Draining,
    Unavailable,
}

impl TargetState {
    /// Draining targets are on their way out: they are neither "registered" nor to be removed again.
    pub fn is_draining(self) -> bool {
        matches!(self, Self::Draining | Self::UnhealthyDraining)
    }
}

/// A target currently in a target group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredTarget {
    pub target: Target,
    pub state: TargetState,
    /// ELBv2's reason code for a state other than healthy (e.g. `Target.FailedHealthChecks`).
    pub reason: Option<String>,
}
