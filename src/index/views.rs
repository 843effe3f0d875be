//! Conversion of Kubernetes objects into the planner's plain views, keeping only what matters.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::plan::desired::{AddressFamily, EndpointView, ServicePortView, ServiceView, SlicePort, SliceView};

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
            })
            .collect(),
    })
}
