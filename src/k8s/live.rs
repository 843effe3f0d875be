//! Live reads that bypass the watches, used to confirm what a cache claims before acting on it.
//! They return the same plain views the watches hold, so one function decides from either.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::index::{BackendKey, node_view, service_view, slice_view};
use crate::plan::desired::{ServiceView, SliceView};
use crate::plan::instance::NodeView;

/// A Service and its EndpointSlices as the API server has them right now.
#[derive(Clone, Debug, Default)]
pub struct LiveBackend {
    pub service: Option<ServiceView>,
    pub slices: Vec<SliceView>,
}

pub async fn read_backend(client: &Client, key: &BackendKey) -> Result<LiveBackend, kube::Error> {
    let services: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
    let service = services.get_opt(&key.service).await?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &key.namespace);
    let list =
        slices.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={}", key.service))).await?;
    Ok(LiveBackend {
        service: service.as_ref().map(service_view),
        slices: list.items.iter().filter_map(slice_view).collect(),
    })
}

pub async fn read_nodes(client: &Client) -> Result<Vec<NodeView>, kube::Error> {
    Ok(Api::<Node>::all(client.clone()).list(&ListParams::default()).await?.items.iter().map(node_view).collect())
}

/// The live reads the controller makes, as a port: the API server in production ([`Client`]).
pub trait ClusterReads: Send + Sync {
    /// A backend (Service and slices) as the API server has it now.
    fn backend(&self, key: &BackendKey) -> impl Future<Output = Result<LiveBackend, kube::Error>> + Send;
    /// Every node, as the API server has them now.
    fn nodes(&self) -> impl Future<Output = Result<Vec<NodeView>, kube::Error>> + Send;
    /// Container port name → its numbers across `pods` of `namespace`, for the named ports of
    /// `spec.networking`.
    fn named_container_ports(
        &self,
        namespace: &str,
        pods: &BTreeSet<String>,
    ) -> impl Future<Output = Result<BTreeMap<String, BTreeSet<u16>>, kube::Error>> + Send;
}

impl ClusterReads for Client {
    async fn backend(&self, key: &BackendKey) -> Result<LiveBackend, kube::Error> {
        read_backend(self, key).await
    }

    async fn nodes(&self) -> Result<Vec<NodeView>, kube::Error> {
        read_nodes(self).await
    }

    async fn named_container_ports(
        &self,
        namespace: &str,
        pods: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, BTreeSet<u16>>, kube::Error> {
        crate::k8s::pods::named_container_ports(self, namespace, pods).await
    }
}
