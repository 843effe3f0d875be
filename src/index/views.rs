//! Conversion of Kubernetes objects into the planner's plain views, keeping only what matters.

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::plan::desired::{AddressFamily, EndpointView, ServicePortView, ServiceView, SlicePort, SliceView};
use crate::plan::instance::{NodeView, Requirement, Selector};

pub fn service_view(service: &Service) -> ServiceView {
    let spec = service.spec.as_ref();
    ServiceView {
        type_: spec.and_then(|s| s.type_.clone()),
        ports: spec
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .map(|p| ServicePortView { name: p.name.clone(), port: p.port, node_port: p.node_port })
            .collect(),
        selects_pods: spec.and_then(|s| s.selector.as_ref()).is_some_and(|s| !s.is_empty()),
    }
}

/// `None` for address types this agent does not know (it ignores them, as it does FQDN slices).
pub fn slice_view(slice: &EndpointSlice) -> Option<SliceView> {
    let family = match slice.address_type.as_str() {
        "IPv4" => AddressFamily::Ipv4,
        "IPv6" => AddressFamily::Ipv6,
        "FQDN" => AddressFamily::Fqdn,
        _ => return None,
    };
    Some(SliceView {
        family,
        ports: slice
            .ports
            .iter()
            .flatten()
            .map(|p| SlicePort { name: p.name.clone().filter(|n| !n.is_empty()), port: p.port })
            .collect(),
        endpoints: slice
            .endpoints
            .iter()
            .flatten()
            .map(|e| EndpointView {
                addresses: e.addresses.clone(),
                ready: e.conditions.as_ref().and_then(|c| c.ready),
                terminating: e.conditions.as_ref().and_then(|c| c.terminating),
                pod: e.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).and_then(|r| r.name.clone()),
            })
            .collect(),
    })
}

/// Only what decides load-balancer membership: no heartbeat timestamps, addresses or images.
pub fn node_view(node: &Node) -> NodeView {
    let spec = node.spec.as_ref();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| match c.status.as_str() {
            "True" => Some(true),
            "False" => Some(false),
            _ => None,
        });
    NodeView {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        taints: spec
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect(),
        ready,
        provider_id: spec.and_then(|s| s.provider_id.clone()),
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
    }
}

/// `spec.nodeSelector` as plain data; an operator Kubernetes does not define is an error.
pub fn selector(selector: &LabelSelector) -> Result<Selector, String> {
    let expressions = selector
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            let values = e.values.clone().unwrap_or_default();
            match e.operator.as_str() {
                "In" => Ok(Requirement::In(e.key.clone(), values)),
                "NotIn" => Ok(Requirement::NotIn(e.key.clone(), values)),
                "Exists" => Ok(Requirement::Exists(e.key.clone())),
                "DoesNotExist" => Ok(Requirement::DoesNotExist(e.key.clone())),
                other => Err(format!("spec.nodeSelector: unknown operator {other:?} for key {:?}", e.key)),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Selector { match_labels: selector.match_labels.clone().unwrap_or_default(), expressions })
}
