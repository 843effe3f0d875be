//! Desired targets of an instance-mode binding: the eligible nodes' instance ids on the Service's
//! node port. A node that cannot be registered is skipped and reported, never fatal.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::TargetId;

/// Node labels that take a node out of load balancers.
const EXCLUDING_LABELS: [&str; 3] = [
    "node.kubernetes.io/exclude-from-external-load-balancers",
    "alpha.service-controller.kubernetes.io/exclude-balancer",
    "node-role.kubernetes.io/master",
];
const COMPUTE_TYPE_LABEL: &str = "eks.amazonaws.com/compute-type";

/// The part of a Node the planner needs. Heartbeat fields are left out on purpose, so a status
/// update that only refreshes them does not change the view.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// (key, effect) of each taint.
    pub taints: Vec<(String, String)>,
    /// The Ready condition: `Some(true)` True, `Some(false)` False, `None` Unknown or absent.
    pub ready: Option<bool>,
    pub provider_id: Option<String>,
    pub unschedulable: bool,
}

/// A label selector as plain data (`spec.nodeSelector`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
    pub expressions: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|r| match r {
                Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                Requirement::Exists(k) => labels.contains_key(k),
                Requirement::DoesNotExist(k) => !labels.contains_key(k),
            })
    }
}

/// A node left out although it passed the selection, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SkippedNode {
    pub node: String,
    pub reason: String,
}

/// Instance targets plus the nodes that had to be skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceTargets {
    pub targets: BTreeSet<TargetId>,
    pub skipped: Vec<SkippedNode>,
}

/// Whether a node may carry load-balancer traffic at all, before its readiness is considered.
fn eligible(node: &NodeView, selector: Option<&Selector>) -> bool {
    !EXCLUDING_LABELS.iter().any(|l| node.labels.contains_key(*l))
        && node.labels.get(COMPUTE_TYPE_LABEL).map(String::as_str) != Some("fargate")
        && !node.taints.iter().any(|(key, effect)| {
            key == "ToBeDeletedByClusterAutoscaler" || (key == "karpenter.sh/disrupted" && effect == "NoSchedule")
        })
        // A cordoned node is being drained: stop sending it new connections.
        && !node.unschedulable
        && selector.is_none_or(|s| s.matches(&node.labels))
}

/// The EC2 instance id in a node's `spec.providerID` (`aws:///<zone>/i-…`); EKS hybrid nodes
/// (`eks-hybrid://…/mi-…`) map to `hybrid-mi-…` as the reference controller does.
pub fn instance_id(provider_id: &str) -> Result<String, String> {
    let last = provider_id.rsplit('/').next().unwrap_or_default();
    if provider_id.starts_with("aws://") && last.starts_with("i-") && last.len() > 2 {
        Ok(last.to_owned())
    } else if provider_id.starts_with("eks-hybrid://") && last.starts_with("mi-") && last.len() > 3 {
        Ok(format!("hybrid-{last}"))
    } else if provider_id.is_empty() {
        Err("has no spec.providerID".to_owned())
    } else {
        Err(format!("has providerID {provider_id:?}, which names no EC2 instance"))
    }
}

/// The instance ids of every node of this cluster, eligible or not.
pub fn instance_ids<'a>(nodes: impl IntoIterator<Item = &'a NodeView>) -> BTreeSet<String> {
    nodes.into_iter().filter_map(|n| instance_id(n.provider_id.as_deref().unwrap_or_default()).ok()).collect()
}

/// Ready nodes that pass the built-in exclusions and `selector`, on `node_port`. Only when no
/// eligible node is Ready are the Unknown ones used (a control-plane hiccup must not empty the
/// group); NotReady nodes never are.
pub fn instance_targets<'a>(
    nodes: impl IntoIterator<Item = &'a NodeView>,
    selector: Option<&Selector>,
    node_port: u16,
) -> InstanceTargets {
    let candidates: Vec<&NodeView> = nodes.into_iter().filter(|n| eligible(n, selector)).collect();
    let ready: Vec<&NodeView> = candidates.iter().copied().filter(|n| n.ready == Some(true)).collect();
    let chosen = if ready.is_empty() { candidates.into_iter().filter(|n| n.ready.is_none()).collect() } else { ready };
    let mut out = InstanceTargets::default();
    for node in chosen {
        match instance_id(node.provider_id.as_deref().unwrap_or_default()) {
            Ok(id) => {
                out.targets.insert(TargetId::new(id, node_port));
            }
            Err(reason) => out.skipped.push(SkippedNode { node: node.name.clone(), reason }),
        }
    }
    out.skipped.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: Option<bool>) -> NodeView {
        NodeView {
            name: name.into(),
            ready,
            provider_id: Some(format!("aws:///us-east-1a/i-{name}")),
            ..Default::default()
        }
    }

    fn ids(t: &InstanceTargets) -> Vec<String> {
        t.targets.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn ready_nodes_on_the_node_port() {
        let nodes = [node("a", Some(true)), node("b", Some(true)), node("c", Some(false)), node("d", None)];
        assert_eq!(ids(&instance_targets(&nodes, None, 30080)), vec!["i-a:30080", "i-b:30080"]);
    }

    #[test]
    fn unknown_nodes_only_when_none_is_ready() {
        let nodes = [node("c", Some(false)), node("d", None), node("e", None)];
        assert_eq!(ids(&instance_targets(&nodes, None, 80)), vec!["i-d:80", "i-e:80"]);
        assert!(instance_targets(&[node("c", Some(false))], None, 80).targets.is_empty());
    }

    #[test]
    fn exclusions() {
        let mut excluded = Vec::new();
        for label in EXCLUDING_LABELS {
            let mut n = node(&format!("l{}", excluded.len()), Some(true));
            n.labels.insert(label.into(), String::new());
            excluded.push(n);
        }
        let mut fargate = node("fargate", Some(true));
        fargate.labels.insert(COMPUTE_TYPE_LABEL.into(), "fargate".into());
        let mut ec2 = node("ec2", Some(true));
        ec2.labels.insert(COMPUTE_TYPE_LABEL.into(), "ec2".into());
        let mut autoscaled = node("ca", Some(true));
        autoscaled.taints.push(("ToBeDeletedByClusterAutoscaler".into(), "NoSchedule".into()));
        let mut disrupted = node("k", Some(true));
        disrupted.taints.push(("karpenter.sh/disrupted".into(), "NoSchedule".into()));
        let mut only_prefer = node("kp", Some(true));
        only_prefer.taints.push(("karpenter.sh/disrupted".into(), "PreferNoSchedule".into()));
        let mut cordoned = node("cordoned", Some(true));
        cordoned.unschedulable = true;
        let nodes: Vec<NodeView> =
            excluded.into_iter().chain([fargate, ec2, autoscaled, disrupted, only_prefer, cordoned]).collect();
        assert_eq!(ids(&instance_targets(&nodes, None, 80)), vec!["i-ec2:80", "i-kp:80"]);
    }

    #[test]
    fn selector_is_anded() {
        let mut a = node("a", Some(true));
        a.labels.insert("pool".into(), "web".into());
        let mut b = node("b", Some(true));
        b.labels.insert("pool".into(), "batch".into());
        let c = node("c", Some(true));
        let nodes = [a, b, c];
        let by_label = Selector { match_labels: [("pool".into(), "web".into())].into(), expressions: vec![] };
        assert_eq!(ids(&instance_targets(&nodes, Some(&by_label), 80)), vec!["i-a:80"]);
        let cases = [
            (Requirement::In("pool".into(), vec!["web".into(), "batch".into()]), vec!["i-a:80", "i-b:80"]),
            (Requirement::NotIn("pool".into(), vec!["web".into()]), vec!["i-b:80", "i-c:80"]),
            (Requirement::Exists("pool".into()), vec!["i-a:80", "i-b:80"]),
            (Requirement::DoesNotExist("pool".into()), vec!["i-c:80"]),
        ];
        for (requirement, expected) in cases {
            let s = Selector { match_labels: BTreeMap::new(), expressions: vec![requirement.clone()] };
            assert_eq!(ids(&instance_targets(&nodes, Some(&s), 80)), expected, "{requirement:?}");
        }
    }

    #[test]
    fn bad_provider_ids_are_skipped_not_fatal() {
        let mut none = node("none", Some(true));
        none.provider_id = None;
        let mut gce = node("gce", Some(true));
        gce.provider_id = Some("gce://project/zone/vm-1".into());
        let nodes = [node("good", Some(true)), none, gce];
        let out = instance_targets(&nodes, None, 80);
        assert_eq!(ids(&out), vec!["i-good:80"]);
        assert_eq!(out.skipped.iter().map(|s| s.node.as_str()).collect::<Vec<_>>(), vec!["gce", "none"]);
    }

    #[test]
    fn provider_id_forms() {
        assert_eq!(instance_id("aws:///us-east-1a/i-0abc"), Ok("i-0abc".into()));
        assert_eq!(instance_id("aws:///i-0abc"), Ok("i-0abc".into()));
        assert_eq!(instance_id("eks-hybrid:///us-west-2/my-cluster/mi-0123"), Ok("hybrid-mi-0123".into()));
        for bad in ["", "aws:///us-east-1a/", "aws:///us-east-1a/i-", "kind://docker/x/y", "i-0abc"] {
            assert!(instance_id(bad).is_err(), "{bad}");
        }
    }
}
