//! Pod readiness gates (`target-health.elbv2.k8s.aws/<binding name>`): which endpoint pods are held
//! back only by this binding's gate (so they are registered although not Ready), and setting each
//! gated pod's condition from its target's health. Only pods that declare the gate are read or
//! patched, and only pods of endpoints that are not Ready are read to find them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use kube::{Client, ResourceExt};

use super::error::ReconcileError;
use super::siblings::uid_of;
use crate::api::TargetGroupBinding;
use crate::k8s::pods::{GatedPod, gated_endpoint_pods, gated_pods, held_back_by_gate, set_gate};
use crate::model::{TargetId, TargetState};
use crate::plan::desired::{AddressFamily, SliceView, not_ready_pods, pod_addresses};
use crate::plan::gates::{GateStatus, gate_statuses, gate_type};

/// Per binding UID: the pods known to declare its gate, and the status last set on each.
#[derive(Default)]
pub struct GateMemory {
    bindings: Mutex<HashMap<String, HashMap<String, Option<String>>>>,
}

impl GateMemory {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Option<String>>>> {
        self.bindings.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// The bindings it remembers pods of.
    pub fn uids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

/// The pods of `tgb`'s not-Ready endpoints that declare its gate, read by name.
pub async fn gated_endpoint_pods_of(
    client: &Client,
    tgb: &TargetGroupBinding,
    slices: &[&SliceView],
    family: AddressFamily,
) -> Result<BTreeMap<String, GatedPod>, ReconcileError> {
    let gate = gate_type(&tgb.name_any());
    let namespace = tgb.namespace().unwrap_or_default();
    gated_endpoint_pods(client, &namespace, slices.iter().copied(), family, &gate)
        .await
        .map_err(ReconcileError::kube("read the endpoint pods' readiness gates"))
}

/// The pods of `tgb`'s not-Ready endpoints that declare its gate and whose containers are ready:
/// they are registered, so the load balancer can find them healthy and the gate can open. The
/// pods found are remembered for their gates.
pub async fn held_back(
    client: &Client,
    memory: &GateMemory,
    tgb: &TargetGroupBinding,
    slices: &[&SliceView],
    family: AddressFamily,
) -> Result<BTreeSet<String>, ReconcileError> {
    let found = gated_endpoint_pods_of(client, tgb, slices, family).await?;
    let uid = uid_of(tgb)?;
    let mut memory = memory.lock();
    let known = memory.entry(uid).or_default();
    for (name, pod) in &found {
        known.entry(name.clone()).or_insert_with(|| pod.gate.clone());
    }
    Ok(held_back_by_gate(&found))
}

/// Sets each known gated pod's condition from its targets' states; returns whether some gate is
/// still closed (the binding then reads health again soon).
pub async fn update(
    client: &Client,
    memory: &GateMemory,
    tgb: &TargetGroupBinding,
    slices: &[&SliceView],
    family: AddressFamily,
    states: &BTreeMap<TargetId, (TargetState, Option<String>)>,
) -> Result<bool, ReconcileError> {
    let uid = uid_of(tgb)?;
    let known: BTreeSet<String> = match memory.lock().get(&uid) {
        Some(pods) => pods.keys().cloned().collect(),
        None => return Ok(false),
    };
    let addresses = pod_addresses(slices.iter().copied(), family, &known);
    let statuses = gate_statuses(&addresses, states);
    {
        // Pods no longer behind an endpoint are forgotten.
        let mut memory = memory.lock();
        if let Some(pods) = memory.get_mut(&uid) {
            pods.retain(|name, _| addresses.contains_key(name));
        }
    }
    let mut closed = false;
    for (name, status) in &statuses {
        closed |= !status.healthy;
        let last = memory.lock().get(&uid).and_then(|p| p.get(name).cloned()).flatten();
        if last.as_deref() != Some(status.status()) {
            set(client, memory, tgb, name, status).await?;
        }
    }
    Ok(closed)
}

/// Opens every gate of `tgb`'s pods: a deleted binding must never leave pods unready.
pub async fn open_all(
    client: &Client,
    memory: &GateMemory,
    tgb: &TargetGroupBinding,
    slices: &[SliceView],
    family: AddressFamily,
) -> Result<(), ReconcileError> {
    let candidates = not_ready_pods(slices, family);
    let gate = gate_type(&tgb.name_any());
    let namespace = tgb.namespace().unwrap_or_default();
    let found = gated_pods(client, &namespace, &candidates, &gate)
        .await
        .map_err(ReconcileError::kube("read the endpoint pods' readiness gates"))?;
    let open = GateStatus {
        healthy: true,
        reason: "TargetGroupBindingDeleted".into(),
        message: format!("TargetGroupBinding {} was deleted; the gate no longer applies", tgb.name_any()),
    };
    for pod in found.values().filter(|p| p.gate.as_deref() != Some("True")) {
        patch(client, tgb, pod, &open).await?;
    }
    memory.forget(&uid_of(tgb)?);
    Ok(())
}

/// Reads the pod fresh (its UID guards the patch) and sets the condition unless it already has it.
async fn set(
    client: &Client,
    memory: &GateMemory,
    tgb: &TargetGroupBinding,
    name: &str,
    status: &GateStatus,
) -> Result<(), ReconcileError> {
    let gate = gate_type(&tgb.name_any());
    let namespace = tgb.namespace().unwrap_or_default();
    let pods = gated_pods(client, &namespace, &BTreeSet::from([name.to_owned()]), &gate)
        .await
        .map_err(ReconcileError::kube("read a gated pod"))?;
    let Some(pod) = pods.get(name) else { return Ok(()) };
    if pod.gate.as_deref() != Some(status.status()) {
        patch(client, tgb, pod, status).await?;
    }
    if let Some(pods) = memory.lock().get_mut(&uid_of(tgb)?) {
        pods.insert(name.to_owned(), Some(status.status().to_owned()));
    }
    Ok(())
}

async fn patch(
    client: &Client,
    tgb: &TargetGroupBinding,
    pod: &GatedPod,
    status: &GateStatus,
) -> Result<(), ReconcileError> {
    let gate = gate_type(&tgb.name_any());
    let namespace = tgb.namespace().unwrap_or_default();
    match set_gate(client, &namespace, pod, &gate, status.status(), &status.reason, &status.message).await {
        Ok(()) => {
            tracing::info!(pod = %pod.name, gate = %gate, status = status.status(), reason = %status.reason, "set the readiness gate");
            Ok(())
        }
        // Gone, or re-created under the same name since it was read: nothing of ours to set.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(ReconcileError::kube("set a pod's readiness gate")(e)),
    }
}
