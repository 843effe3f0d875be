//! Security-group ingress rules as plain data: what `spec.networking` asks for and what EC2 holds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::Cidr;

/// Tag key naming the cluster whose agent created a rule: that cluster's claim on it.
pub const CLUSTER_TAG: &str = "tgb-agent.elbv2.k8s.aws/cluster";
/// Tag marking a rule as created by tgb-agent: only such a rule is ever revoked, once unclaimed.
pub const MANAGED_TAG: &str = "tgb-agent.elbv2.k8s.aws/managed";
/// Prefix of the tag key by which another cluster claims a rule an agent created:
/// `tgb-agent.elbv2.k8s.aws/claim/<cluster>`.
pub const CLAIM_TAG_PREFIX: &str = "tgb-agent.elbv2.k8s.aws/claim/";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleProtocol {
    Tcp,
    Udp,
}

impl RuleProtocol {
    /// The `IpProtocol` EC2 takes and reports.
    pub fn as_ec2(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    /// Reads EC2's `IpProtocol`; `-1`, ICMP and the rest are not rules the agent manages.
    pub fn from_ec2(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Some(Self::Tcp),
            "udp" | "17" => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for RuleProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_ec2())
    }
}

/// Who a rule admits. CIDRs are held in canonical form (what EC2 echoes back), so that a rule
/// read from EC2 compares equal to the one planned from the spec.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    SecurityGroup(String),
    Ipv4Cidr(String),
    Ipv6Cidr(String),
}

impl Peer {
    /// Parses a CIDR from a spec. Host bits must be zero: EC2 would store something other than
    /// what was written, and the rule would never match its own plan again.
    pub fn cidr(text: &str) -> Result<Self, String> {
        let cidr: Cidr = text.trim().parse()?;
        let canonical = cidr.to_string();
        if !host_bits_zero(&canonical) {
            return Err(format!("{text:?} has host bits set (the network address is required)"));
        }
        Ok(if canonical.contains(':') { Self::Ipv6Cidr(canonical) } else { Self::Ipv4Cidr(canonical) })
    }

    /// A CIDR as EC2 reported it: canonicalized when it parses, kept verbatim otherwise (it then
    /// simply matches nothing the agent plans).
    pub fn reported_cidr(text: &str, v6: bool) -> Self {
        let canonical = text.parse::<Cidr>().map(|c| c.to_string()).unwrap_or_else(|_| text.to_owned());
        if v6 { Self::Ipv6Cidr(canonical) } else { Self::Ipv4Cidr(canonical) }
    }
}

/// `canonical` is `addr/len` as [`Cidr`] prints it.
fn host_bits_zero(canonical: &str) -> bool {
    let Some((addr, len)) = canonical.split_once('/') else { return false };
    let Ok(len) = len.parse::<u32>() else { return false };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => u32::from(a).checked_shl(len).unwrap_or(0) == 0,
        Ok(std::net::IpAddr::V6(a)) => u128::from(a).checked_shl(len).unwrap_or(0) == 0,
        Err(_) => false,
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SecurityGroup(id) => f.write_str(id),
            Self::Ipv4Cidr(c) | Self::Ipv6Cidr(c) => f.write_str(c),
        }
    }
}

/// One ingress rule's identity: protocol, inclusive port range and a single peer. Description and
/// tags are not part of it (EC2 rejects a second rule that differs only there).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IngressRule {
    pub protocol: RuleProtocol,
    pub from_port: u16,
    pub to_port: u16,
    pub peer: Peer,
}

impl IngressRule {
    pub fn new(protocol: RuleProtocol, from_port: u16, to_port: u16, peer: Peer) -> Self {
        Self { protocol, from_port, to_port, peer }
    }
}

impl fmt::Display for IngressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}-{} from {}", self.protocol, self.from_port, self.to_port, self.peer)
    }
}

/// Who relies on a rule, by its tags: whether an agent created it (a rule nobody claims any more
/// may be revoked only then) and which clusters claim it.
pub fn claims_of(tags: &BTreeMap<String, String>) -> (bool, BTreeSet<String>) {
    let mut claims: BTreeSet<String> = tags
        .keys()
        .filter_map(|k| k.strip_prefix(CLAIM_TAG_PREFIX))
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    claims.extend(tags.get(CLUSTER_TAG).filter(|c| !c.is_empty()).cloned());
    let managed = tags.contains_key(MANAGED_TAG) || tags.contains_key(CLUSTER_TAG);
    (managed, claims)
}

/// An ingress rule present in a security group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExistingRule {
    pub rule_id: String,
    pub rule: IngressRule,
    /// Created by an agent (tagged [`MANAGED_TAG`] or, by the first version, [`CLUSTER_TAG`]).
    pub managed: bool,
    /// The clusters that claim it.
    pub claims: BTreeSet<String>,
}

/// Of `rule_ids` planned for revocation, those a fresh read still shows as an agent's rule nobody
/// claims; gone ones drop out (nothing left to revoke).
pub fn still_unclaimed(rule_ids: &[String], fresh: &[ExistingRule]) -> Vec<String> {
    rule_ids
        .iter()
        .filter(|id| fresh.iter().any(|r| &r.rule_id == *id && r.managed && r.claims.is_empty()))
        .cloned()
        .collect()
}

/// A network interface and its security groups with their tags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EniGroups {
    pub eni_id: String,
    pub groups: Vec<(String, BTreeMap<String, String>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_made_while_a_revoke_waited_keeps_the_rule() {
        let rule = |id: &str, claims: &[&str]| ExistingRule {
            rule_id: id.into(),
            rule: IngressRule::new(RuleProtocol::Tcp, 80, 80, Peer::Ipv4Cidr("10.0.0.0/16".into())),
            managed: true,
            claims: claims.iter().map(|c| c.to_string()).collect(),
        };
        let planned = vec!["sgr-1".to_string(), "sgr-2".to_string(), "sgr-3".to_string()];
        // sgr-1 still unclaimed; sgr-2 claimed by green since; sgr-3 already gone.
        let fresh = [rule("sgr-1", &[]), rule("sgr-2", &["green"])];
        assert_eq!(still_unclaimed(&planned, &fresh), vec!["sgr-1".to_string()]);
    }

    #[test]
    fn display() {
        let rule = IngressRule::new(RuleProtocol::Tcp, 8080, 8080, Peer::SecurityGroup("sg-123".into()));
        assert_eq!(rule.to_string(), "tcp 8080-8080 from sg-123");
        let rule = IngressRule::new(RuleProtocol::Udp, 0, 65535, Peer::Ipv6Cidr("fd00::/8".into()));
        assert_eq!(rule.to_string(), "udp 0-65535 from fd00::/8");
    }

    #[test]
    fn cidrs_are_canonical_and_typed() {
        assert_eq!(Peer::cidr(" 10.0.0.0/8 "), Ok(Peer::Ipv4Cidr("10.0.0.0/8".into())));
        assert_eq!(Peer::cidr("2600:1F18:00AB::/48"), Ok(Peer::Ipv6Cidr("2600:1f18:ab::/48".into())));
        assert_eq!(Peer::cidr("0.0.0.0/0"), Ok(Peer::Ipv4Cidr("0.0.0.0/0".into())));
        assert_eq!(Peer::cidr("::/0"), Ok(Peer::Ipv6Cidr("::/0".into())));
        assert_eq!(Peer::cidr("10.0.0.7/32"), Ok(Peer::Ipv4Cidr("10.0.0.7/32".into())));
    }

    #[test]
    fn bad_cidrs_are_rejected() {
        for bad in ["10.0.0.1/8", "fd00::1/64", "10.0.0.0", "10.0.0.0/33", "sg-1", ""] {
            assert!(Peer::cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reported_cidrs_are_canonicalized_when_possible() {
        assert_eq!(Peer::reported_cidr("2600:1F18::/56", true), Peer::Ipv6Cidr("2600:1f18::/56".into()));
        assert_eq!(Peer::reported_cidr("junk", false), Peer::Ipv4Cidr("junk".into()));
    }

    #[test]
    fn protocols_from_ec2() {
        assert_eq!(RuleProtocol::from_ec2("tcp"), Some(RuleProtocol::Tcp));
        assert_eq!(RuleProtocol::from_ec2("6"), Some(RuleProtocol::Tcp));
        assert_eq!(RuleProtocol::from_ec2("UDP"), Some(RuleProtocol::Udp));
        assert_eq!(RuleProtocol::from_ec2("17"), Some(RuleProtocol::Udp));
        for other in ["-1", "icmp", "icmpv6", "58", ""] {
            assert_eq!(RuleProtocol::from_ec2(other), None, "{other}");
        }
    }

    #[test]
    fn claims_are_the_creator_and_every_claim_tag() {
        let tags = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        let blue_claim = format!("{CLAIM_TAG_PREFIX}blue");
        assert_eq!(
            claims_of(&tags(&[(MANAGED_TAG, "true"), (CLUSTER_TAG, "green"), (&blue_claim, "true")])),
            (true, set(&["blue", "green"]))
        );
        assert_eq!(claims_of(&tags(&[(CLUSTER_TAG, "prod")])), (true, set(&["prod"])), "the first version's rules");
        assert_eq!(claims_of(&tags(&[(MANAGED_TAG, "true")])), (true, set(&[])), "created, no longer claimed");
        assert_eq!(claims_of(&tags(&[("Name", "terraform")])), (false, set(&[])));
        assert_eq!(claims_of(&tags(&[(CLAIM_TAG_PREFIX, "true"), (CLUSTER_TAG, "")])), (true, set(&[])));
    }
}
