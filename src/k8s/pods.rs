//! Narrow pod reads: only the endpoint pods of a binding whose `spec.networking` names a port, and
//! only when its rules are computed. No pod cache, no pod watch.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

use crate::plan::desired::{AddressFamily, SliceView, not_ready_pods};
pub use crate::plan::gates::GateCondition;

/// Container port name → the numbers it has across `pods`; sidecars (restartable init
/// containers) count, other init containers do not. Pods already gone are skipped.
pub async fn named_container_ports(
    client: &Client,
    namespace: &str,
    pods: &BTreeSet<String>,
) -> Result<BTreeMap<String, BTreeSet<u16>>, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut named: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for name in pods {
        let Some(pod) = api.get_opt(name).await? else { continue };
        let Some(spec) = pod.spec else { continue };
        let sidecars =
            spec.init_containers.into_iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
        for container in spec.containers.into_iter().chain(sidecars) {
            for port in container.ports.into_iter().flatten() {
                if let (Some(port_name), Ok(number)) = (port.name, u16::try_from(port.container_port)) {
                    named.entry(port_name).or_default().insert(number);
                }
            }
        }
    }
    Ok(named)
}

/// A pod that declares a readiness gate, as much of it as the gate needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatedPod {
    pub name: String,
    pub uid: String,
    /// Its containers are ready: only the gate holds the pod back.
    pub containers_ready: bool,
    /// The gate condition's status on the pod now.
    pub gate: Option<String>,
}

/// The pods of the not-Ready endpoints of `slices` (of `family`) that declare the readiness gate
/// `gate`, read one by one by name. `run` and `plan` both find a binding's gated pods here.
pub async fn gated_endpoint_pods<'a>(
    client: &impl PodGates,
    namespace: &str,
    slices: impl IntoIterator<Item = &'a SliceView>,
    family: AddressFamily,
    gate: &str,
) -> Result<BTreeMap<String, GatedPod>, kube::Error> {
    let candidates = not_ready_pods(slices, family);
    if candidates.is_empty() {
        return Ok(BTreeMap::new());
    }
    client.gated_pods(namespace, &candidates, gate).await
}

/// What the readiness gates need of the pods: read the ones that declare a gate, set a gate's
/// condition. The API server in production ([`Client`]); a fake in the controller's tests.
pub trait PodGates: Send + Sync {
    /// Reads `pods` by name and keeps those whose spec declares the readiness gate `gate`. Pods
    /// already gone are skipped.
    fn gated_pods(
        &self,
        namespace: &str,
        pods: &BTreeSet<String>,
        gate: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, GatedPod>, kube::Error>> + Send;
    /// Sets the gate condition on `pod`, guarded by its UID (a re-created pod of the same name
    /// refuses it: 409).
    fn set_gate(
        &self,
        namespace: &str,
        pod: &GatedPod,
        gate: &GateCondition<'_>,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
}

impl PodGates for Client {
    async fn gated_pods(
        &self,
        namespace: &str,
        pods: &BTreeSet<String>,
        gate: &str,
    ) -> Result<BTreeMap<String, GatedPod>, kube::Error> {
        gated_pods(self, namespace, pods, gate).await
    }

    async fn set_gate(&self, namespace: &str, pod: &GatedPod, gate: &GateCondition<'_>) -> Result<(), kube::Error> {
        set_gate(self, namespace, pod, gate).await
    }
}

/// Of `found`, the pods only their gate holds back (containers ready): they are registered, so the
/// load balancer can find them healthy and the gate can open.
pub fn held_back_by_gate(found: &BTreeMap<String, GatedPod>) -> BTreeSet<String> {
    found.iter().filter(|(_, p)| p.containers_ready).map(|(name, _)| name.clone()).collect()
}

/// Reads `pods` by name and keeps those whose spec declares the readiness gate `gate`.
/// Pods already gone are skipped.
async fn gated_pods(
    client: &Client,
    namespace: &str,
    pods: &BTreeSet<String>,
    gate: &str,
) -> Result<BTreeMap<String, GatedPod>, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut found = BTreeMap::new();
    for name in pods {
        let Some(pod) = api.get_opt(name).await? else { continue };
        if let Some(gated) = gated_pod(&pod, gate) {
            found.insert(name.clone(), gated);
        }
    }
    Ok(found)
}

fn gated_pod(pod: &Pod, gate: &str) -> Option<GatedPod> {
    let declares = pod.spec.as_ref()?.readiness_gates.iter().flatten().any(|g| g.condition_type == gate);
    if !declares {
        return None;
    }
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let status_of = |type_: &str| conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.clone());
    Some(GatedPod {
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone()?,
        containers_ready: status_of("ContainersReady").as_deref() == Some("True"),
        gate: status_of(gate),
    })
}

/// Sets the gate condition on `pod`. A strategic merge patch (conditions merge by type, so no other
/// condition is touched) carrying the pod's UID, which the API server checks: a re-created pod of
/// the same name refuses it.
async fn set_gate(
    client: &Client,
    namespace: &str,
    pod: &GatedPod,
    gate: &GateCondition<'_>,
) -> Result<(), kube::Error> {
    use kube::api::{Patch, PatchParams};
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({
        "metadata": {"uid": pod.uid},
        "status": {"conditions": [{
            "type": gate.type_, "status": gate.status, "reason": gate.reason, "message": gate.message,
            "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
        }]},
    });
    api.patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(patch)).await.map(drop)
}
