//! `spec.networking`: the ingress rules that admit the load balancer to the targets, which
//! security groups carry them, and the changes that take a group from its rules to the desired ones.
//!
//! Differences from the reference controller, on purpose: an empty `ports` list means every TCP
//! port (the reference computes nothing); distinct ports are never merged into a min–max range
//! (that opens ports nobody asked for); ownership is a per-cluster tag on each rule, not a shared
//! description, so two clusters (or this agent and the reference controller) sharing a group never
//! revoke each other's rules; and a binding that is broken right now protects its rules instead of
//! freezing every revocation.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{NetworkingPeer, NetworkingPort, NetworkingProtocol, TargetGroupBindingNetworking};
pub use crate::model::sg_rule::{CLUSTER_TAG, MANAGED_TAG};
use crate::model::sg_rule::{EniGroups, ExistingRule, IngressRule, Peer, RuleProtocol};

/// Tag key prefix that marks, among several groups on an ENI, the one for this cluster's rules.
pub const CLUSTER_GROUP_TAG_PREFIX: &str = "kubernetes.io/cluster/";

/// Why a binding's networking cannot be planned. Each maps to a condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkingError {
    #[error("spec.networking.{at}: {message}")]
    InvalidNetworking { at: String, message: String },
    #[error("spec.networking.{at}: no endpoint pod has a container port named {name:?}")]
    NamedPortNotFound { at: String, name: String },
    #[error("network interface {eni} has no security group")]
    NoSecurityGroup { eni: String },
    #[error(
        "network interface {eni} has security groups {groups}, and not exactly one of them is tagged \
         {CLUSTER_GROUP_TAG_PREFIX}{cluster}: tag the one that should admit the load balancer"
    )]
    AmbiguousSecurityGroup { eni: String, groups: String, cluster: String },
    #[error("no network interface found for {0}")]
    EniNotFound(String),
}

impl NetworkingError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidNetworking { .. } => "InvalidNetworking",
            Self::NamedPortNotFound { .. } => "NamedPortNotFound",
            Self::NoSecurityGroup { .. } => "SecurityGroupNotFound",
            Self::AmbiguousSecurityGroup { .. } => "AmbiguousSecurityGroup",
            Self::EniNotFound(_) => "NetworkInterfaceNotFound",
        }
    }
}

/// Every rule one binding asks for: each ingress rule × peer × port.
///
/// `named_ports`: container port name → the numbers it has on the binding's endpoint pods (a name
/// may mean different numbers on different pods; each becomes its own rule). Named ports need pods,
/// so they are an error with instance targets.
pub fn rules_for_binding(
    networking: &TargetGroupBindingNetworking,
    target_is_ip: bool,
    named_ports: &BTreeMap<String, BTreeSet<u16>>,
) -> Result<BTreeSet<IngressRule>, NetworkingError> {
    let mut rules = BTreeSet::new();
    for (i, ingress) in networking.ingress.iter().enumerate() {
        if ingress.from.is_empty() {
            // Rejected rather than read as "nobody": a NetworkPolicy reader would expect "everybody".
            return Err(invalid(format!("ingress[{i}].from"), "is empty: name at least one peer"));
        }
        let mut ranges = BTreeSet::new();
        if ingress.ports.is_empty() {
            ranges.insert((RuleProtocol::Tcp, 0, u16::MAX));
        }
        for (j, port) in ingress.ports.iter().enumerate() {
            ranges.extend(port_ranges(&format!("ingress[{i}].ports[{j}]"), port, target_is_ip, named_ports)?);
        }
        for (j, peer) in ingress.from.iter().enumerate() {
            let peer = peer_of(&format!("ingress[{i}].from[{j}]"), peer)?;
            rules.extend(ranges.iter().map(|&(proto, from, to)| IngressRule::new(proto, from, to, peer.clone())));
        }
    }
    Ok(rules)
}

/// Whether some rule names its port (`port: web`): those are looked up on the binding's pods.
pub fn names_a_port(networking: &TargetGroupBindingNetworking) -> bool {
    networking
        .ingress
        .iter()
        .flat_map(|i| &i.ports)
        .any(|p| matches!(&p.port, Some(IntOrString::String(s)) if s.trim().parse::<u16>().is_err()))
}

/// What can be checked of `spec.networking` without pods or AWS: peers, CIDRs, port numbers and
/// protocols. Named ports are looked up later, on the pods.
pub fn check_networking(networking: &TargetGroupBindingNetworking, target_is_ip: bool) -> Result<(), NetworkingError> {
    // Any number stands in for a port name here: only the shape of the rest is checked.
    let named: BTreeMap<String, BTreeSet<u16>> = networking
        .ingress
        .iter()
        .flat_map(|i| &i.ports)
        .filter_map(|p| match &p.port {
            Some(IntOrString::String(s)) => Some((s.trim().to_owned(), BTreeSet::from([1]))),
            _ => None,
        })
        .collect();
    rules_for_binding(networking, target_is_ip, &named).map(drop)
}

fn invalid(at: String, message: impl Into<String>) -> NetworkingError {
    NetworkingError::InvalidNetworking { at, message: message.into() }
}

fn port_ranges(
    at: &str,
    port: &NetworkingPort,
    target_is_ip: bool,
    named_ports: &BTreeMap<String, BTreeSet<u16>>,
) -> Result<Vec<(RuleProtocol, u16, u16)>, NetworkingError> {
    let proto = match port.protocol {
        None | Some(NetworkingProtocol::TCP) => RuleProtocol::Tcp,
        Some(NetworkingProtocol::UDP) => RuleProtocol::Udp,
    };
    let single = |n: i64| match u16::try_from(n) {
        Ok(n) if n > 0 => Ok(vec![(proto, n, n)]),
        _ => Err(invalid(format!("{at}.port"), format!("{n} is not a port number (1-65535)"))),
    };
    match &port.port {
        None => Ok(vec![(proto, 0, u16::MAX)]),
        Some(IntOrString::Int(n)) => single(i64::from(*n)),
        Some(IntOrString::String(s)) => match s.trim().parse::<i64>() {
            Ok(n) => single(n),
            Err(_) if s.trim().is_empty() => Err(invalid(format!("{at}.port"), "is empty")),
            Err(_) if !target_is_ip => Err(invalid(
                format!("{at}.port"),
                format!("named port {s:?} needs targetType ip (instance targets have no pods to look it up on)"),
            )),
            Err(_) => match named_ports.get(s.trim()) {
                Some(numbers) if !numbers.is_empty() => Ok(numbers.iter().map(|&n| (proto, n, n)).collect()),
                _ => Err(NetworkingError::NamedPortNotFound { at: format!("{at}.port"), name: s.trim().to_owned() }),
            },
        },
    }
}

fn peer_of(at: &str, peer: &NetworkingPeer) -> Result<Peer, NetworkingError> {
    match (&peer.ip_block, &peer.security_group) {
        (Some(block), None) => Peer::cidr(&block.cidr).map_err(|e| invalid(format!("{at}.ipBlock.cidr"), e)),
        (None, Some(sg)) => {
            let id = sg.group_id.trim();
            let well_formed = id
                .strip_prefix("sg-")
                .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_hexdigit()));
            if well_formed {
                Ok(Peer::SecurityGroup(id.to_ascii_lowercase()))
            } else {
                let message = format!("{:?} is not a security group id", sg.group_id);
                Err(invalid(format!("{at}.securityGroup.groupID"), message))
            }
        }
        (Some(_), Some(_)) => Err(invalid(at.to_owned(), "sets both ipBlock and securityGroup; set exactly one")),
        (None, None) => Err(invalid(at.to_owned(), "sets neither ipBlock nor securityGroup; set exactly one")),
    }
}

/// What one healthy binding needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BindingRules {
    /// `namespace/name`, for logs and errors.
    pub binding: String,
    /// The security groups of its targets' ENIs (see [`select_group`]).
    pub groups: BTreeSet<String>,
    pub rules: BTreeSet<IngressRule>,
}

/// The rules each security group must hold: the union over bindings, so a rule several bindings
/// need appears once and stays while any of them needs it.
pub fn desired_rules(bindings: &[BindingRules]) -> BTreeMap<String, BTreeSet<IngressRule>> {
    let mut desired: BTreeMap<String, BTreeSet<IngressRule>> = BTreeMap::new();
    for binding in bindings {
        for group in &binding.groups {
            desired.entry(group.clone()).or_default().extend(binding.rules.iter().cloned());
        }
    }
    desired
}

/// How long a rule an agent created must be seen without any claim before it is revoked (a
/// cluster that is about to claim it gets that long; see README "Rules shared by clusters").
pub fn unclaimed_grace(drift_interval_secs: u64) -> u64 {
    drift_interval_secs.clamp(1, 10)
}

/// What one reconcile of one security group starts from.
#[derive(Clone, Copy, Debug)]
pub struct GroupInputs<'a> {
    pub cluster: &'a str,
    /// Rules this cluster's healthy bindings need in the group.
    pub desired: &'a BTreeSet<IngressRule>,
    /// Rules of this cluster's bindings that cannot be resolved right now: never released.
    pub protected: &'a BTreeSet<IngressRule>,
    pub existing: &'a [ExistingRule],
    /// Rule id → when it was first seen created by an agent and claimed by nobody.
    pub unclaimed_since: &'a BTreeMap<String, u64>,
    /// False until every binding with `spec.networking` has published its rules since start:
    /// nothing is released or revoked before that.
    pub may_release: bool,
    pub grace: u64,
    pub now: u64,
}

/// The changes for one security group, applied in this order: authorize (one rule per call, so a
/// bad rule fails alone), claim, release, revoke. A rule replaced by another (a port change) is
/// authorized before the old one is released, so there is never a moment with neither.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupPlan {
    pub authorize: Vec<IngressRule>,
    /// Rules an agent created that this cluster now relies on too: add its claim tag.
    pub claim: Vec<String>,
    /// Rules this cluster claims and no longer needs: remove its claim (others may still claim them).
    pub release: Vec<String>,
    /// Rules an agent created that nobody has claimed for the grace period.
    pub revoke: Vec<String>,
    /// The updated first-seen-unclaimed times.
    pub unclaimed_since: BTreeMap<String, u64>,
    /// Seconds until an unclaimed rule's grace ends.
    pub recheck_in: Option<u64>,
}

impl GroupPlan {
    pub fn writes(&self) -> bool {
        !(self.authorize.is_empty() && self.claim.is_empty() && self.release.is_empty() && self.revoke.is_empty())
    }
}

/// Plans one group.
///
/// - A desired rule is satisfied by any rule of the same identity. A hand-made (or Terraform's, or
///   the reference controller's) rule is relied on as it is and never claimed: only rules an agent
///   created are ever claimed, released or revoked.
/// - A rule an agent created is claimed by each cluster that relies on it, and revoked only once no
///   cluster claims it and that has stayed so for the grace period.
pub fn plan_group(inputs: GroupInputs<'_>) -> GroupPlan {
    let GroupInputs { cluster, desired, protected, existing, unclaimed_since, may_release, grace, now } = inputs;
    let mut plan = GroupPlan::default();
    let mut by_identity: BTreeMap<&IngressRule, Vec<&ExistingRule>> = BTreeMap::new();
    for e in existing {
        by_identity.entry(&e.rule).or_default().push(e);
    }
    // The claims each rule will have once this plan is applied.
    let mut claims_after: BTreeMap<&str, BTreeSet<&str>> =
        existing.iter().map(|e| (e.rule_id.as_str(), e.claims.iter().map(String::as_str).collect())).collect();

    for rule in desired {
        let Some(copies) = by_identity.get(rule) else {
            plan.authorize.push(rule.clone());
            continue;
        };
        if copies.iter().any(|e| !e.managed) {
            continue;
        }
        // Rely on one copy: ours if we claim one, else the first.
        let keep = copies.iter().find(|e| e.claims.contains(cluster)).unwrap_or(&copies[0]);
        if !keep.claims.contains(cluster) {
            plan.claim.push(keep.rule_id.clone());
            claims_after.entry(&keep.rule_id).or_default().insert(cluster);
        }
    }
    if may_release {
        for e in existing.iter().filter(|e| e.managed && e.claims.contains(cluster)) {
            let relied_on = desired.contains(&e.rule) || protected.contains(&e.rule);
            // A second copy of a rule we rely on (moto allows one, EC2 does not) is released too.
            let kept_copy = by_identity[&e.rule].iter().find(|c| c.claims.contains(cluster)).map(|c| &c.rule_id);
            if !relied_on || kept_copy != Some(&e.rule_id) {
                plan.release.push(e.rule_id.clone());
                if let Some(claims) = claims_after.get_mut(e.rule_id.as_str()) {
                    claims.remove(cluster);
                }
            }
        }
    }
    for e in existing.iter().filter(|e| e.managed) {
        let unclaimed = claims_after.get(e.rule_id.as_str()).is_none_or(BTreeSet::is_empty);
        if !unclaimed || protected.contains(&e.rule) {
            continue;
        }
        let since = unclaimed_since.get(&e.rule_id).copied().unwrap_or(now);
        let waited = now.saturating_sub(since);
        if may_release && waited >= grace {
            plan.revoke.push(e.rule_id.clone());
        } else {
            plan.unclaimed_since.insert(e.rule_id.clone(), since);
            let left = grace.saturating_sub(waited).max(1);
            plan.recheck_in = Some(plan.recheck_in.map_or(left, |r| r.min(left)));
        }
    }
    plan.claim.sort();
    plan.release.sort();
    plan.revoke.sort();
    plan
}

/// The security group of one ENI that gets the rules: its only group, or else the one group tagged
/// `kubernetes.io/cluster/<cluster>` (any value).
pub fn select_group(
    eni_id: &str,
    eni_groups: &[(String, BTreeMap<String, String>)],
    cluster: &str,
) -> Result<String, NetworkingError> {
    let key = format!("{CLUSTER_GROUP_TAG_PREFIX}{cluster}");
    match eni_groups {
        [] => Err(NetworkingError::NoSecurityGroup { eni: eni_id.to_owned() }),
        [(only, _)] => Ok(only.clone()),
        many => {
            let tagged: Vec<&String> =
                many.iter().filter(|(_, tags)| tags.contains_key(&key)).map(|(id, _)| id).collect();
            match tagged.as_slice() {
                [one] => Ok((*one).clone()),
                _ => {
                    let mut ids: Vec<&str> = many.iter().map(|(id, _)| id.as_str()).collect();
                    ids.sort_unstable();
                    Err(NetworkingError::AmbiguousSecurityGroup {
                        eni: eni_id.to_owned(),
                        groups: ids.join(", "),
                        cluster: cluster.to_owned(),
                    })
                }
            }
        }
    }
}

/// The groups of a binding's targets: [`select_group`] on each ENI; the first failure wins.
pub fn select_groups<'a>(
    enis: impl IntoIterator<Item = &'a EniGroups>,
    cluster: &str,
) -> Result<BTreeSet<String>, NetworkingError> {
    enis.into_iter().map(|e| select_group(&e.eni_id, &e.groups, cluster)).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::api::{IpBlock, NetworkingIngressRule, SecurityGroupPeer};

    const LB: &str = "sg-0a1b";

    fn sg_peer(id: &str) -> NetworkingPeer {
        NetworkingPeer { security_group: Some(SecurityGroupPeer { group_id: id.into() }), ip_block: None }
    }

    fn cidr_peer(cidr: &str) -> NetworkingPeer {
        NetworkingPeer { ip_block: Some(IpBlock { cidr: cidr.into() }), security_group: None }
    }

    fn port(protocol: Option<NetworkingProtocol>, port: Option<IntOrString>) -> NetworkingPort {
        NetworkingPort { protocol, port }
    }

    fn tcp(n: i32) -> NetworkingPort {
        port(None, Some(IntOrString::Int(n)))
    }

    fn named(name: &str) -> NetworkingPort {
        port(None, Some(IntOrString::String(name.into())))
    }

    fn net(rules: Vec<(Vec<NetworkingPeer>, Vec<NetworkingPort>)>) -> TargetGroupBindingNetworking {
        TargetGroupBindingNetworking {
            ingress: rules.into_iter().map(|(from, ports)| NetworkingIngressRule { from, ports }).collect(),
        }
    }

    fn rule(proto: RuleProtocol, from: u16, to: u16, peer: Peer) -> IngressRule {
        IngressRule::new(proto, from, to, peer)
    }

    fn sg(id: &str) -> Peer {
        Peer::SecurityGroup(id.into())
    }

    fn no_names() -> BTreeMap<String, BTreeSet<u16>> {
        BTreeMap::new()
    }

    fn rules_of(n: &TargetGroupBindingNetworking) -> BTreeSet<IngressRule> {
        rules_for_binding(n, true, &no_names()).expect("valid networking")
    }

    #[test]
    fn numeric_port_is_a_single_port() {
        let got = rules_of(&net(vec![(vec![sg_peer(LB)], vec![tcp(8080)])]));
        assert_eq!(got, [rule(RuleProtocol::Tcp, 8080, 8080, sg(LB))].into());
    }

    #[test]
    fn numeric_string_port_is_a_number() {
        let got = rules_of(&net(vec![(vec![sg_peer(LB)], vec![named("9090")])]));
        assert_eq!(got, [rule(RuleProtocol::Tcp, 9090, 9090, sg(LB))].into());
    }

    #[test]
    fn unset_port_is_every_port_of_its_protocol() {
        let got = rules_of(&net(vec![(vec![sg_peer(LB)], vec![port(Some(NetworkingProtocol::UDP), None)])]));
        assert_eq!(got, [rule(RuleProtocol::Udp, 0, 65535, sg(LB))].into());
    }

    #[test]
    fn empty_ports_list_is_every_tcp_port() {
        let got = rules_of(&net(vec![(vec![sg_peer(LB)], vec![])]));
        assert_eq!(got, [rule(RuleProtocol::Tcp, 0, 65535, sg(LB))].into());
    }

    #[test]
    fn every_peer_times_every_port_and_no_range_merging() {
        let got = rules_of(&net(vec![(
            vec![sg_peer(LB), cidr_peer("10.0.0.0/16")],
            vec![tcp(30001), tcp(32000), port(Some(NetworkingProtocol::UDP), Some(IntOrString::Int(53)))],
        )]));
        let v4 = Peer::Ipv4Cidr("10.0.0.0/16".into());
        let expected: BTreeSet<_> = [
            rule(RuleProtocol::Tcp, 30001, 30001, sg(LB)),
            rule(RuleProtocol::Tcp, 32000, 32000, sg(LB)),
            rule(RuleProtocol::Udp, 53, 53, sg(LB)),
            rule(RuleProtocol::Tcp, 30001, 30001, v4.clone()),
            rule(RuleProtocol::Tcp, 32000, 32000, v4.clone()),
            rule(RuleProtocol::Udp, 53, 53, v4),
        ]
        .into();
        assert_eq!(got, expected);
    }

    #[test]
    fn explicit_tcp_protocol_equals_default() {
        let explicit = port(Some(NetworkingProtocol::TCP), Some(IntOrString::Int(80)));
        let a = rules_of(&net(vec![(vec![sg_peer(LB)], vec![explicit])]));
        let b = rules_of(&net(vec![(vec![sg_peer(LB)], vec![tcp(80)])]));
        assert_eq!(a, b);
    }

    #[test]
    fn duplicate_rules_collapse() {
        let got = rules_of(&net(vec![
            (vec![sg_peer(LB)], vec![tcp(80), tcp(80)]),
            (vec![sg_peer(LB), sg_peer(LB)], vec![tcp(80)]),
        ]));
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn v6_cidr_peer() {
        let got = rules_of(&net(vec![(vec![cidr_peer("2600:1F18:AB::/48")], vec![tcp(443)])]));
        assert_eq!(got, [rule(RuleProtocol::Tcp, 443, 443, Peer::Ipv6Cidr("2600:1f18:ab::/48".into()))].into());
    }

    #[test]
    fn peer_group_id_is_normalized() {
        let got = rules_of(&net(vec![(vec![sg_peer(" sg-0A1B ")], vec![tcp(80)])]));
        assert_eq!(got, [rule(RuleProtocol::Tcp, 80, 80, sg("sg-0a1b"))].into());
    }

    #[test]
    fn named_port_becomes_each_number() {
        let names: BTreeMap<String, BTreeSet<u16>> = [("http".to_string(), [8080, 8081].into())].into();
        let got = rules_for_binding(&net(vec![(vec![sg_peer(LB)], vec![named("http")])]), true, &names).expect("ok");
        assert_eq!(
            got,
            [rule(RuleProtocol::Tcp, 8080, 8080, sg(LB)), rule(RuleProtocol::Tcp, 8081, 8081, sg(LB))].into()
        );
    }

    #[test]
    fn unknown_named_port_is_an_error_naming_it() {
        let names: BTreeMap<String, BTreeSet<u16>> =
            [("http".to_string(), [8080].into()), ("empty".to_string(), [].into())].into();
        for name in ["metrics", "empty"] {
            let err = rules_for_binding(&net(vec![(vec![sg_peer(LB)], vec![tcp(80), named(name)])]), true, &names)
                .expect_err("unknown name");
            let at = "ingress[0].ports[1].port".to_string();
            assert_eq!(err, NetworkingError::NamedPortNotFound { at, name: name.into() });
            assert_eq!(err.reason(), "NamedPortNotFound");
            assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
        }
    }

    #[test]
    fn named_port_with_instance_targets_is_invalid() {
        let names: BTreeMap<String, BTreeSet<u16>> = [("http".to_string(), [8080].into())].into();
        let err = rules_for_binding(&net(vec![(vec![sg_peer(LB)], vec![named("http")])]), false, &names)
            .expect_err("instance");
        assert_eq!(err.reason(), "InvalidNetworking");
        assert!(err.to_string().contains("targetType ip"), "{err}");
        // Numbers are fine with instance targets.
        assert!(rules_for_binding(&net(vec![(vec![sg_peer(LB)], vec![tcp(30080)])]), false, &names).is_ok());
    }

    #[test]
    fn invalid_inputs_name_the_field() {
        let cases: Vec<(TargetGroupBindingNetworking, &str)> = vec![
            (net(vec![(vec![cidr_peer("10.0.0.0/33")], vec![])]), "ingress[0].from[0].ipBlock.cidr"),
            (net(vec![(vec![cidr_peer("10.0.0.1/8")], vec![])]), "ingress[0].from[0].ipBlock.cidr"),
            (
                net(vec![(vec![sg_peer(LB)], vec![]), (vec![sg_peer("lb-sg")], vec![])]),
                "ingress[1].from[0].securityGroup.groupID",
            ),
            (net(vec![(vec![sg_peer("sg-")], vec![])]), "ingress[0].from[0].securityGroup.groupID"),
            (net(vec![(vec![NetworkingPeer::default()], vec![])]), "ingress[0].from[0]"),
            (
                net(vec![(
                    vec![NetworkingPeer {
                        ip_block: Some(IpBlock { cidr: "10.0.0.0/8".into() }),
                        security_group: Some(SecurityGroupPeer { group_id: LB.into() }),
                    }],
                    vec![],
                )]),
                "ingress[0].from[0]",
            ),
            (net(vec![(vec![], vec![tcp(80)])]), "ingress[0].from"),
            (net(vec![(vec![sg_peer(LB)], vec![tcp(0)])]), "ingress[0].ports[0].port"),
            (net(vec![(vec![sg_peer(LB)], vec![tcp(65536)])]), "ingress[0].ports[0].port"),
            (net(vec![(vec![sg_peer(LB)], vec![tcp(80), tcp(-1)])]), "ingress[0].ports[1].port"),
            (net(vec![(vec![sg_peer(LB)], vec![named("  ")])]), "ingress[0].ports[0].port"),
            (net(vec![(vec![sg_peer(LB)], vec![named("70000")])]), "ingress[0].ports[0].port"),
        ];
        for (n, at) in cases {
            let err = rules_for_binding(&n, true, &no_names()).expect_err(at);
            match &err {
                NetworkingError::InvalidNetworking { at: got, .. } => assert_eq!(got, at, "{err}"),
                other => panic!("{at}: {other:?}"),
            }
            assert_eq!(err.reason(), "InvalidNetworking");
            assert!(err.to_string().starts_with(&format!("spec.networking.{at}: ")), "{err}");
        }
    }

    #[test]
    fn no_ingress_means_no_rules() {
        assert!(rules_of(&TargetGroupBindingNetworking::default()).is_empty());
    }

    fn binding(name: &str, groups: &[&str], rules: &[IngressRule]) -> BindingRules {
        BindingRules {
            binding: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            rules: rules.iter().cloned().collect(),
        }
    }

    fn r(port: u16) -> IngressRule {
        rule(RuleProtocol::Tcp, port, port, sg(LB))
    }

    #[test]
    fn desired_is_the_union_per_group() {
        let got = desired_rules(&[
            binding("a/web", &["sg-n1", "sg-n2"], &[r(80), r(81)]),
            binding("b/api", &["sg-n2"], &[r(80), r(90)]),
            binding("c/idle", &[], &[r(99)]),
        ]);
        let expected: BTreeMap<String, BTreeSet<IngressRule>> =
            [("sg-n1".to_string(), [r(80), r(81)].into()), ("sg-n2".to_string(), [r(80), r(81), r(90)].into())].into();
        assert_eq!(got, expected);
    }

    fn created(id: &str, rule: IngressRule, claims: &[&str]) -> ExistingRule {
        ExistingRule { rule_id: id.into(), rule, managed: true, claims: claims.iter().map(|c| c.to_string()).collect() }
    }

    fn hand_made(id: &str, rule: IngressRule) -> ExistingRule {
        ExistingRule { rule_id: id.into(), rule, managed: false, claims: BTreeSet::new() }
    }

    fn none() -> BTreeSet<IngressRule> {
        BTreeSet::new()
    }

    fn plan(
        desired: &BTreeSet<IngressRule>,
        existing: &[ExistingRule],
        since: &BTreeMap<String, u64>,
        now: u64,
    ) -> GroupPlan {
        plan_group(GroupInputs {
            cluster: "blue",
            desired,
            protected: &none(),
            existing,
            unclaimed_since: since,
            may_release: true,
            grace: 30,
            now,
        })
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn adds_missing_releases_unneeded_and_revokes_once_unclaimed_for_the_grace() {
        let existing = [created("sgr-1", r(80), &["blue"]), created("sgr-2", r(81), &["blue"])];
        let first = plan(&[r(80), r(82)].into(), &existing, &BTreeMap::new(), 1_000);
        assert_eq!(first.authorize, vec![r(82)]);
        assert_eq!(first.release, ids(&["sgr-2"]));
        assert!(first.revoke.is_empty(), "not before the grace");
        assert_eq!(first.unclaimed_since, [("sgr-2".to_string(), 1_000)].into());
        assert_eq!(first.recheck_in, Some(30));
        let released = [created("sgr-1", r(80), &["blue"]), created("sgr-2", r(81), &[])];
        let later = plan(&[r(80)].into(), &released, &first.unclaimed_since, 1_030);
        assert_eq!(later.revoke, ids(&["sgr-2"]));
        assert!(!later.writes() || later.authorize.is_empty() && later.release.is_empty());
    }

    #[test]
    fn a_rule_another_cluster_claims_survives_our_release() {
        let existing = [created("sgr-1", r(80), &["blue", "green"])];
        let p = plan(&none(), &existing, &BTreeMap::new(), 0);
        assert_eq!(p.release, ids(&["sgr-1"]));
        assert!(p.revoke.is_empty() && p.unclaimed_since.is_empty(), "green still claims it");
    }

    #[test]
    fn a_rule_another_cluster_created_is_claimed_not_duplicated() {
        let existing = [created("sgr-1", r(80), &["green"])];
        let p = plan(&[r(80)].into(), &existing, &BTreeMap::new(), 0);
        assert_eq!((p.authorize.len(), p.claim.clone()), (0, ids(&["sgr-1"])));
        // A rule created by an agent but claimed by nobody is claimed again, not revoked.
        let orphan = [created("sgr-1", r(80), &[])];
        let p = plan(&[r(80)].into(), &orphan, &[("sgr-1".to_string(), 0)].into(), 1_000);
        assert_eq!((p.claim.clone(), p.revoke.len()), (ids(&["sgr-1"]), 0));
    }

    #[test]
    fn hand_made_rules_satisfy_and_are_never_claimed_or_revoked() {
        let existing = [hand_made("sgr-h", r(80))];
        for desired in [[r(80)].into(), none()] {
            let p = plan(&desired, &existing, &BTreeMap::new(), 0);
            assert!(!p.writes(), "{p:?}");
        }
    }

    #[test]
    fn protected_rules_stay_claimed_and_nothing_goes_before_every_binding_published() {
        let existing = [created("sgr-1", r(80), &["blue"]), created("sgr-2", r(81), &[])];
        let protected = [r(80)].into();
        let p = plan_group(GroupInputs {
            cluster: "blue",
            desired: &none(),
            protected: &protected,
            existing: &existing,
            unclaimed_since: &[("sgr-2".to_string(), 0)].into(),
            may_release: true,
            grace: 30,
            now: 100,
        });
        assert!(p.release.is_empty() && !p.authorize.contains(&r(80)), "protected: kept, not added");
        assert_eq!(p.revoke, ids(&["sgr-2"]));
        let gated = plan_group(GroupInputs {
            protected: &none(),
            may_release: false,
            ..GroupInputs {
                cluster: "blue",
                desired: &none(),
                protected: &protected,
                existing: &existing,
                unclaimed_since: &[("sgr-2".to_string(), 0)].into(),
                may_release: true,
                grace: 30,
                now: 100,
            }
        });
        assert!(gated.release.is_empty() && gated.revoke.is_empty(), "{gated:?}");
    }

    #[test]
    fn a_second_copy_of_our_rule_is_released() {
        let existing = [created("sgr-1", r(80), &["blue"]), created("sgr-2", r(80), &["blue"])];
        let p = plan(&[r(80)].into(), &existing, &BTreeMap::new(), 0);
        assert_eq!(p.release, ids(&["sgr-2"]));
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn single_group_is_chosen_whatever_its_tags() {
        assert_eq!(select_group("eni-1", &[("sg-a".into(), tags(&[]))], "prod"), Ok("sg-a".into()));
    }

    #[test]
    fn cluster_tagged_group_is_chosen_among_several() {
        let groups = [
            ("sg-a".to_string(), tags(&[("kubernetes.io/cluster/blue", "owned")])),
            ("sg-b".to_string(), tags(&[("kubernetes.io/cluster/prod", "")])),
            ("sg-c".to_string(), tags(&[])),
        ];
        assert_eq!(select_group("eni-1", &groups, "prod"), Ok("sg-b".into()));
    }

    #[test]
    fn zero_or_several_tagged_groups_is_an_error_naming_them() {
        let untagged = [("sg-b".to_string(), tags(&[])), ("sg-a".to_string(), tags(&[]))];
        let err = select_group("eni-1", &untagged, "prod").expect_err("none tagged");
        assert_eq!(err.reason(), "AmbiguousSecurityGroup");
        let text = err.to_string();
        for part in ["eni-1", "sg-a, sg-b", "kubernetes.io/cluster/prod"] {
            assert!(text.contains(part), "{text}");
        }
        let both = [
            ("sg-a".to_string(), tags(&[("kubernetes.io/cluster/prod", "owned")])),
            ("sg-b".to_string(), tags(&[("kubernetes.io/cluster/prod", "shared")])),
        ];
        assert_eq!(select_group("eni-1", &both, "prod").expect_err("two tagged").reason(), "AmbiguousSecurityGroup");
        let err = select_group("eni-9", &[], "prod").expect_err("no group");
        assert_eq!(err, NetworkingError::NoSecurityGroup { eni: "eni-9".into() });
        assert_eq!(err.reason(), "SecurityGroupNotFound");
    }

    #[test]
    fn select_groups_over_enis() {
        let enis = [
            EniGroups { eni_id: "eni-1".into(), groups: vec![("sg-a".into(), tags(&[]))] },
            EniGroups { eni_id: "eni-2".into(), groups: vec![("sg-a".into(), tags(&[]))] },
            EniGroups { eni_id: "eni-3".into(), groups: vec![("sg-b".into(), tags(&[]))] },
        ];
        assert_eq!(select_groups(&enis, "prod"), Ok(["sg-a".to_string(), "sg-b".to_string()].into()));
        let broken = [EniGroups { eni_id: "eni-4".into(), groups: vec![] }];
        assert!(select_groups(enis.iter().chain(&broken), "prod").is_err());
        assert_eq!(NetworkingError::EniNotFound("pod IPs 10.0.0.5".into()).reason(), "NetworkInterfaceNotFound");
    }

    // Properties over a small universe, so collisions between desired, existing and protected are common.

    fn arb_rule() -> impl Strategy<Value = IngressRule> {
        (
            prop::sample::select(vec![RuleProtocol::Tcp, RuleProtocol::Udp]),
            prop::sample::select(vec![(80u16, 80u16), (443, 443), (0, 65535)]),
            prop::sample::select(vec![
                sg("sg-1"),
                sg("sg-2"),
                Peer::Ipv4Cidr("10.0.0.0/8".into()),
                Peer::Ipv6Cidr("::/0".into()),
            ]),
        )
            .prop_map(|(p, (f, t), peer)| rule(p, f, t, peer))
    }

    fn arb_existing() -> impl Strategy<Value = Vec<ExistingRule>> {
        let claims = prop::collection::btree_set(prop::sample::select(vec!["blue", "green"]), 0..3);
        prop::collection::vec((arb_rule(), any::<bool>(), claims), 0..12).prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(|(i, (rule, managed, claims))| ExistingRule {
                    rule_id: format!("sgr-{i:03}"),
                    rule,
                    managed,
                    claims: if managed { claims.into_iter().map(str::to_owned).collect() } else { BTreeSet::new() },
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn never_touches_what_is_not_an_agents_nor_revokes_a_claimed_rule(
            desired in prop::collection::btree_set(arb_rule(), 0..6),
            existing in arb_existing(),
            protected in prop::collection::btree_set(arb_rule(), 0..3),
            may_release in any::<bool>(),
            now in 0u64..100,
        ) {
            let since: BTreeMap<String, u64> = existing.iter().map(|e| (e.rule_id.clone(), 0)).collect();
            let p = plan_group(GroupInputs {
                cluster: "blue", desired: &desired, protected: &protected, existing: &existing,
                unclaimed_since: &since, may_release, grace: 30, now,
            });
            let by_id: BTreeMap<&String, &ExistingRule> = existing.iter().map(|e| (&e.rule_id, e)).collect();
            for id in p.claim.iter().chain(&p.release).chain(&p.revoke) {
                prop_assert!(by_id[id].managed, "{} is not an agent's rule", id);
            }
            for id in &p.revoke {
                let e = by_id[id];
                prop_assert!(may_release && now >= 30);
                prop_assert!(e.claims.iter().all(|c| c == "blue"), "green still claims {}", id);
                prop_assert!(!desired.contains(&e.rule) || existing.iter().any(|o| o.rule == e.rule && !p.revoke.contains(&o.rule_id)));
            }
            for id in &p.release {
                let e = by_id[id];
                let kept = existing.iter().any(|o| o.rule == e.rule && o.rule_id != e.rule_id && o.claims.contains("blue") && !p.release.contains(&o.rule_id));
                prop_assert!(!(desired.contains(&e.rule) || protected.contains(&e.rule)) || kept, "released {} still needed", id);
            }
            // Every desired rule is present afterwards: authorized, claimed, or hand-made.
            for rule in &desired {
                let present = existing.iter().any(|e| &e.rule == rule && !p.revoke.contains(&e.rule_id));
                prop_assert!(present || p.authorize.contains(rule));
            }
        }
    }
}
