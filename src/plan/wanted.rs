//! The targets a binding wants, from its backend's plain views, whether those came from the watches
//! or from a live read. A configuration mistake (no such Service, port or Service type) is not an
//! empty backend: it is reported, and the group is left as it is (fail static).

use std::collections::BTreeSet;

use super::desired::{
    AddressFamily, PortRef, ServicePortView, ServiceView, SliceView, ip_targets_gated, registered_pods,
    with_availability_zones,
};
use super::instance::{NodeView, Selector, SkippedNode, instance_targets};
use crate::model::{Cidr, Target};

/// What the endpoints ask for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub targets: BTreeSet<Target>,
    /// Instance targets: nodes left out because no instance could be found for them.
    pub skipped: Vec<SkippedNode>,
    /// ip targets: the pods behind them, whose container ports name `spec.networking`'s ports.
    pub pods: BTreeSet<String>,
}

/// Why a backend cannot say what it wants. Targets stay registered until the mistake is fixed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendProblem {
    #[error("Service {service} not found")]
    ServiceNotFound { service: String },
    #[error("Service {service} has no port {port}")]
    ServicePortNotFound { service: String, port: String },
    #[error(
        "Service {service} is of type {type_}; instance targets need a NodePort or LoadBalancer Service with a nodePort"
    )]
    InvalidServiceType { service: String, type_: String },
    /// A Service with a selector and no slice of the family at all: just created or re-created
    /// (`kubectl replace --force`, `helm --force`), its slices garbage-collected and not yet
    /// re-published. Its pods may well be serving; treating this as empty would drop them all.
    #[error("Service {service} selects pods but has no {family} EndpointSlice yet")]
    EndpointsNotPublished { service: String, family: AddressFamily },
    /// A `nodeSelector` no node of the cluster matches, Ready or not: a typo or a relabelling, not
    /// a cluster without nodes for this binding.
    #[error("spec.nodeSelector matches no node of the cluster")]
    NoNodeMatchesSelector,
}

impl BackendProblem {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ServiceNotFound { .. } => "ServiceNotFound",
            Self::ServicePortNotFound { .. } => "ServicePortNotFound",
            Self::InvalidServiceType { .. } => "InvalidServiceType",
            Self::EndpointsNotPublished { .. } => "EndpointsNotPublished",
            Self::NoNodeMatchesSelector => "NoNodeMatchesSelector",
        }
    }
}

fn service_port<'a>(
    service: Option<&'a ServiceView>,
    name: &str,
    port: &PortRef,
) -> Result<(&'a ServiceView, &'a ServicePortView), BackendProblem> {
    let service = service.ok_or_else(|| BackendProblem::ServiceNotFound { service: name.to_owned() })?;
    let found = service.port(port).ok_or_else(|| BackendProblem::ServicePortNotFound {
        service: name.to_owned(),
        port: match port {
            PortRef::Number(n) => n.to_string(),
            PortRef::Name(s) => format!("{s:?}"),
        },
    })?;
    Ok((service, found))
}

/// ip targets: the serving endpoints' addresses on the Service port's target port; AZ `all` for
/// addresses outside the VPC (`vpc_cidrs`; unknown VPC: none).
pub fn wanted_ip<'a>(
    service: Option<&ServiceView>,
    service_name: &str,
    port: &PortRef,
    slices: impl IntoIterator<Item = &'a SliceView>,
    family: AddressFamily,
    vpc_cidrs: Option<&[Cidr]>,
    gated: &BTreeSet<String>,
) -> Result<Wanted, BackendProblem> {
    let (service, port) = service_port(service, service_name, port)?;
    let slices: Vec<&SliceView> = slices.into_iter().filter(|s| s.family == family).collect();
    if slices.is_empty() && service.selects_pods {
        return Err(BackendProblem::EndpointsNotPublished { service: service_name.to_owned(), family });
    }
    let pods = registered_pods(slices.iter().copied(), family, gated);
    let ids = ip_targets_gated(port, slices, family, gated);
    Ok(Wanted { targets: with_availability_zones(ids, vpc_cidrs), skipped: Vec::new(), pods })
}

/// instance targets: the eligible nodes' instances on the Service port's node port.
pub fn wanted_instance<'a>(
    service: Option<&ServiceView>,
    service_name: &str,
    port: &PortRef,
    nodes: impl IntoIterator<Item = &'a NodeView>,
    selector: Option<&Selector>,
) -> Result<Wanted, BackendProblem> {
    let (service, port) = service_port(service, service_name, port)?;
    let type_ = service.type_.clone().unwrap_or_else(|| "ClusterIP".to_owned());
    let node_port = port.node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0);
    let node_port = match (type_.as_str(), node_port) {
        ("NodePort" | "LoadBalancer", Some(node_port)) => node_port,
        _ => return Err(BackendProblem::InvalidServiceType { service: service_name.to_owned(), type_ }),
    };
    let nodes: Vec<&NodeView> = nodes.into_iter().collect();
    if let Some(selector) = selector
        && !nodes.iter().any(|n| selector.matches(&n.labels))
    {
        return Err(BackendProblem::NoNodeMatchesSelector);
    }
    let found = instance_targets(nodes, selector, node_port);
    let targets = found.targets.into_iter().map(Target::new).collect();
    Ok(Wanted { targets, skipped: found.skipped, pods: BTreeSet::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::desired::{EndpointView, SlicePort};

    fn service(type_: &str, node_port: Option<i32>) -> ServiceView {
        ServiceView {
            type_: Some(type_.into()),
            selects_pods: true,
            ports: vec![ServicePortView { name: Some("http".into()), port: 80, node_port }],
        }
    }

    fn slice(ips: &[&str]) -> SliceView {
        SliceView {
            family: AddressFamily::Ipv4,
            ports: vec![SlicePort { name: Some("http".into()), port: Some(8080) }],
            endpoints: ips
                .iter()
                .map(|ip| EndpointView { addresses: vec![(*ip).into()], ..Default::default() })
                .collect(),
        }
    }

    #[test]
    fn mistakes_are_problems_not_empty_backends() {
        let slices = [slice(&["10.0.0.1"])];
        let missing =
            wanted_ip(None, "ns/web", &PortRef::Number(80), &slices, AddressFamily::Ipv4, None, &BTreeSet::new());
        assert_eq!(missing.map_err(|e| e.reason()), Err("ServiceNotFound"));
        let svc = service("ClusterIP", None);
        let wrong_port =
            wanted_ip(Some(&svc), "ns/web", &PortRef::Number(81), &slices, AddressFamily::Ipv4, None, &BTreeSet::new());
        assert_eq!(wrong_port.map_err(|e| e.to_string()), Err("Service ns/web has no port 81".into()));
        let http = PortRef::Name("http".into());
        let no_endpoints =
            wanted_ip(Some(&svc), "ns/web", &http, &[slice(&[])], AddressFamily::Ipv4, None, &BTreeSet::new());
        assert_eq!(no_endpoints, Ok(Wanted::default()), "a published slice without endpoints really wants nothing");
    }

    #[test]
    fn a_selector_without_any_slice_is_not_published_yet() {
        let svc = service("ClusterIP", None);
        let http = PortRef::Name("http".into());
        let v6_only = SliceView { family: AddressFamily::Ipv6, ..slice(&[]) };
        for slices in [vec![], vec![v6_only]] {
            let got = wanted_ip(Some(&svc), "ns/web", &http, &slices, AddressFamily::Ipv4, None, &BTreeSet::new());
            assert_eq!(got.map_err(|e| e.reason()), Err("EndpointsNotPublished"));
        }
        // Without a selector the slices are the user's own: none at all means no endpoints.
        let manual = ServiceView { selects_pods: false, ..svc };
        let got = wanted_ip(Some(&manual), "ns/web", &http, &[], AddressFamily::Ipv4, None, &BTreeSet::new());
        assert_eq!(got, Ok(Wanted::default()));
    }

    #[test]
    fn instance_targets_need_a_node_port() {
        let nodes = [NodeView {
            name: "a".into(),
            ready: Some(true),
            provider_id: Some("aws:///us-east-1a/i-0abc".into()),
            ..Default::default()
        }];
        let cluster_ip = service("ClusterIP", None);
        let err = wanted_instance(Some(&cluster_ip), "ns/web", &PortRef::Number(80), &nodes, None);
        assert_eq!(err.map_err(|e| e.reason()), Err("InvalidServiceType"));
        let node_port = service("NodePort", Some(30080));
        let ok = wanted_instance(Some(&node_port), "ns/web", &PortRef::Number(80), &nodes, None).expect("wanted");
        assert_eq!(ok.targets.iter().map(|t| t.id.to_string()).collect::<Vec<_>>(), vec!["i-0abc:30080"]);
    }

    #[test]
    fn a_node_selector_matching_no_node_is_a_mistake_not_an_empty_backend() {
        let labelled = |ready| NodeView {
            name: "a".into(),
            ready: Some(ready),
            provider_id: Some("aws:///us-east-1a/i-0abc".into()),
            labels: [("pool".to_string(), "web".to_string())].into(),
            ..Default::default()
        };
        let svc = service("NodePort", Some(30080));
        let port = PortRef::Number(80);
        let selector =
            |pool: &str| Selector { match_labels: [("pool".into(), pool.into())].into(), ..Default::default() };
        let typo = wanted_instance(Some(&svc), "ns/web", &port, &[labelled(true)], Some(&selector("wbe")));
        assert_eq!(typo.map_err(|e| e.reason()), Err("NoNodeMatchesSelector"));
        // Matching nodes that are all NotReady really serve nothing.
        let down = wanted_instance(Some(&svc), "ns/web", &port, &[labelled(false)], Some(&selector("web")));
        assert_eq!(down.map(|w| w.targets.len()), Ok(0));
    }
}
