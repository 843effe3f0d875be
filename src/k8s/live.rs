//! Live reads that bypass the watches, used to confirm what a cache claims before acting on it.

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::index::{BackendKey, node_view, service_view, slice_view};
use crate::plan::desired::{AddressFamily, PortRef, ip_targets};
use crate::plan::instance::{Selector, instance_targets};

/// What the API server says about a backend right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveBackend {
    ServiceMissing,
    PortMissing,
    /// The Service and port exist; this many targets are desired.
    Targets(usize),
}

/// How the desired targets are derived.
pub enum LiveTargets<'a> {
    Ip(AddressFamily),
    Instance(Option<&'a Selector>),
}

pub async fn read_backend(
    client: &Client,
    key: &BackendKey,
    port: &PortRef,
    targets: LiveTargets<'_>,
) -> Result<LiveBackend, kube::Error> {
    let services: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
    let Some(service) = services.get_opt(&key.service).await? else {
        return Ok(LiveBackend::ServiceMissing);
    };
    let service = service_view(&service);
    let Some(service_port) = service.port(port) else {
        return Ok(LiveBackend::PortMissing);
    };
    let count = match targets {
        LiveTargets::Ip(family) => {
            let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &key.namespace);
            let list = slices
                .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={}", key.service)))
                .await?;
            let views: Vec<_> = list.items.iter().filter_map(slice_view).collect();
            ip_targets(service_port, &views, family).len()
        }
        LiveTargets::Instance(selector) => {
            let node_port = service_port.node_port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
            let nodes: Vec<_> = Api::<Node>::all(client.clone())
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .map(node_view)
                .collect();
            instance_targets(&nodes, selector, node_port).targets.len()
        }
    };
    Ok(LiveBackend::Targets(count))
}
