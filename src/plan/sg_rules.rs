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
pub use crate::model::sg_rule::{CLUSTER_TAG, MANAGED_TAG, owner_of};
use crate::model::sg_rule::{EniGroups, ExistingRule, IngressRule, Peer, RuleOwner, RuleProtocol};

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

/// The changes for one security group.
///
/// Apply `authorize` first, then `revoke`: a rule replaced by another (say a port change) must
/// never leave a moment with neither in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupPlan {
    pub group: String,
    pub authorize: Vec<IngressRule>,
    /// Rule ids, each this cluster's own.
    pub revoke: Vec<String>,
}

impl GroupPlan {
    pub fn is_empty(&self) -> bool {
        self.authorize.is_empty() && self.revoke.is_empty()
    }
}

/// Plans `group` from `existing` to `desired`.
///
/// A desired rule is satisfied by any existing rule with the same identity, whoever owns it (EC2
/// refuses a duplicate anyway). Only this cluster's rules are ever revoked, and none in
/// `protected`: the rules of bindings that cannot be resolved right now, which keep what they had
/// until they can. A second copy of one identity (EC2 does not allow one, moto does) is revoked
/// when it is this cluster's.
pub fn plan_group(
    group: &str,
    desired: &BTreeSet<IngressRule>,
    existing: &[ExistingRule],
    protected: &BTreeSet<IngressRule>,
) -> GroupPlan {
    let present: BTreeSet<&IngressRule> = existing.iter().map(|e| &e.rule).collect();
    let authorize = desired.iter().filter(|r| !present.contains(r)).cloned().collect();

    // Others' rules first, so a copy of one of them is the one that goes.
    let mut ordered: Vec<&ExistingRule> = existing.iter().collect();
    ordered.sort_by(|a, b| (a.owner != RuleOwner::Other, &a.rule_id).cmp(&(b.owner != RuleOwner::Other, &b.rule_id)));
    let mut kept = BTreeSet::new();
    let mut revoke = Vec::new();
    for e in ordered {
        let wanted = desired.contains(&e.rule) || protected.contains(&e.rule);
        match e.owner {
            RuleOwner::Other => {
                kept.insert(&e.rule);
            }
            RuleOwner::ThisCluster if wanted && kept.insert(&e.rule) => {}
            RuleOwner::ThisCluster => revoke.push(e.rule_id.clone()),
        }
    }
    revoke.sort();
    revoke.dedup();
    GroupPlan { group: group.to_owned(), authorize, revoke }
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

    fn ours(id: &str, rule: IngressRule) -> ExistingRule {
        ExistingRule { rule_id: id.into(), rule, owner: RuleOwner::ThisCluster }
    }

    fn theirs(id: &str, rule: IngressRule) -> ExistingRule {
        ExistingRule { rule_id: id.into(), rule, owner: RuleOwner::Other }
    }

    fn none() -> BTreeSet<IngressRule> {
        BTreeSet::new()
    }

    #[test]
    fn plan_adds_missing_and_revokes_stale_own_rules() {
        let existing = [ours("sgr-1", r(80)), ours("sgr-2", r(81))];
        let plan = plan_group("sg-n1", &[r(80), r(82)].into(), &existing, &none());
        assert_eq!(plan, GroupPlan { group: "sg-n1".into(), authorize: vec![r(82)], revoke: vec!["sgr-2".into()] });
    }

    #[test]
    fn hand_made_identical_rule_satisfies_and_survives() {
        let existing = [theirs("sgr-h", r(80))];
        let plan = plan_group("sg-n1", &[r(80)].into(), &existing, &none());
        assert!(plan.is_empty(), "{plan:?}");
        let plan = plan_group("sg-n1", &none(), &existing, &none());
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn other_clusters_rules_survive() {
        let existing = [theirs("sgr-blue", r(80)), theirs("sgr-lbc", r(443)), ours("sgr-mine", r(8080))];
        let plan = plan_group("sg-n1", &none(), &existing, &none());
        assert_eq!(plan.revoke, vec!["sgr-mine".to_string()]);
        assert!(plan.authorize.is_empty());
    }

    #[test]
    fn protected_rules_stay_and_are_not_added() {
        let existing = [ours("sgr-1", r(80)), ours("sgr-2", r(81))];
        let plan = plan_group("sg-n1", &none(), &existing, &[r(80), r(99)].into());
        assert_eq!(plan.revoke, vec!["sgr-2".to_string()]);
        assert!(plan.authorize.is_empty());
    }

    #[test]
    fn a_duplicate_of_our_own_rule_goes() {
        let existing = [ours("sgr-2", r(80)), ours("sgr-1", r(80)), theirs("sgr-h", r(81)), ours("sgr-0", r(81))];
        let plan = plan_group("sg-n1", &[r(80), r(81)].into(), &existing, &none());
        assert_eq!(plan.revoke, vec!["sgr-0".to_string(), "sgr-2".to_string()]);
        assert!(plan.authorize.is_empty());
    }

    #[test]
    fn shared_rule_stays_while_any_binding_needs_it() {
        let a = binding("ns/a", &["sg-n1"], &[r(80), r(81)]);
        let b = binding("ns/b", &["sg-n1"], &[r(80)]);
        let existing = [ours("sgr-80", r(80)), ours("sgr-81", r(81))];
        let both = desired_rules(&[a.clone(), b.clone()]);
        assert!(plan_group("sg-n1", &both["sg-n1"], &existing, &none()).is_empty());
        // a leaves: its own port goes, the shared one stays.
        let only_b = desired_rules(&[b]);
        let plan = plan_group("sg-n1", &only_b["sg-n1"], &existing, &none());
        assert_eq!(plan.revoke, vec!["sgr-81".to_string()]);
        assert!(plan.authorize.is_empty());
        // Both gone: the group no longer appears in desired, planned against an empty set.
        let plan = plan_group("sg-n1", desired_rules(&[]).get("sg-n1").unwrap_or(&none()), &existing, &none());
        assert_eq!(plan.revoke, vec!["sgr-80".to_string(), "sgr-81".to_string()]);
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
        prop::collection::vec((arb_rule(), any::<bool>()), 0..16).prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(|(i, (rule, mine))| ExistingRule {
                    rule_id: format!("sgr-{i:03}"),
                    rule,
                    owner: if mine { RuleOwner::ThisCluster } else { RuleOwner::Other },
                })
                .collect()
        })
    }

    /// What EC2 holds after the plan: authorized rules appear (ours), revoked ids disappear.
    fn apply(existing: &[ExistingRule], plan: &GroupPlan) -> Vec<ExistingRule> {
        let gone: BTreeSet<&String> = plan.revoke.iter().collect();
        let mut after: Vec<ExistingRule> = existing.iter().filter(|e| !gone.contains(&e.rule_id)).cloned().collect();
        after.extend(plan.authorize.iter().enumerate().map(|(i, rule)| ours(&format!("sgr-new-{i:03}"), rule.clone())));
        after
    }

    fn identities(rules: &[ExistingRule]) -> BTreeSet<IngressRule> {
        rules.iter().map(|e| e.rule.clone()).collect()
    }

    proptest! {
        #[test]
        fn never_revokes_others_or_protected(
            desired in prop::collection::btree_set(arb_rule(), 0..8),
            existing in arb_existing(),
            protected in prop::collection::btree_set(arb_rule(), 0..4),
        ) {
            let plan = plan_group("sg-n", &desired, &existing, &protected);
            let revoked: BTreeSet<&String> = plan.revoke.iter().collect();
            for e in &existing {
                if revoked.contains(&e.rule_id) {
                    prop_assert_eq!(e.owner, RuleOwner::ThisCluster);
                    // A protected or desired identity loses only a redundant copy, never its last row.
                    if protected.contains(&e.rule) || desired.contains(&e.rule) {
                        prop_assert!(existing.iter().any(|o| o.rule == e.rule && !revoked.contains(&o.rule_id)));
                    }
                }
            }
            // Authorize never duplicates what is present.
            let present = identities(&existing);
            prop_assert!(plan.authorize.iter().all(|r| !present.contains(r)));
        }

        #[test]
        fn applying_yields_desired_others_and_protected_then_nothing(
            desired in prop::collection::btree_set(arb_rule(), 0..8),
            existing in arb_existing(),
            protected in prop::collection::btree_set(arb_rule(), 0..4),
        ) {
            let plan = plan_group("sg-n", &desired, &existing, &protected);
            let after = apply(&existing, &plan);
            let others: BTreeSet<IngressRule> =
                existing.iter().filter(|e| e.owner == RuleOwner::Other).map(|e| e.rule.clone()).collect();
            let kept_protected: BTreeSet<IngressRule> =
                identities(&existing).intersection(&protected).cloned().collect();
            let expected: BTreeSet<IngressRule> =
                desired.iter().chain(&others).chain(&kept_protected).cloned().collect();
            prop_assert_eq!(identities(&after), expected);
            let again = plan_group("sg-n", &desired, &after, &protected);
            prop_assert!(again.is_empty(), "{:?}", again);
        }
    }
}
