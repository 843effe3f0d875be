//! Live reads that bypass the watches, used to confirm what a cache claims before acting on it.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::index::{BackendKey, service_view, slice_view};
use crate::plan::desired::{AddressFamily, PortRef, ip_targets};

/// What the API server says about a backend right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveBackend {
    ServiceMissing,
    PortMissing,
    /// The Service and port exist; this many targets are desired.
    Targets(usize),
}

pub async fn read_backend(
    client: &Client,
    key: &BackendKey,
    port: &PortRef,
    family: AddressFamily,
) -> Result<LiveBackend, kube::Error> {
    let services: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
    let Some(service) = services.get_opt(&key.service).await? else {
        return Ok(LiveBackend::ServiceMissing);
    };
    let service = service_view(&service);
    let Some(service_port) = service.port(port) else {
        return Ok(LiveBackend::PortMissing);
    };
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &key.namespace);
    let list = slices.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={}", key.service))).await?;
    let views: Vec<_> = list.items.iter().filter_map(slice_view).collect();
    Ok(LiveBackend::Targets(ip_targets(service_port, &views, family).len()))
}
