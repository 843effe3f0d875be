//! Pod readiness gates (`target-health.elbv2.k8s.aws/<binding name>`): which endpoint pods are held
//! back only by this binding's gate (so they are registered although not Ready), and setting each
//! gated pod's condition from its target's health. Only pods that declare the gate are read or
//! patched, and only pods of endpoints that are not Ready are read to find them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use kube::ResourceExt;

use super::error::ReconcileError;
use super::identity::uid_of;
use crate::api::TargetGroupBinding;
use crate::k8s::pods::{GateCondition, GatedPod, PodGates, gated_endpoint_pods, held_back_by_gate};
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
    pods: &impl PodGates,
    tgb: &TargetGroupBinding,
    slices: &[&SliceView],
    family: AddressFamily,
) -> Result<BTreeMap<String, GatedPod>, ReconcileError> {
    let gate = gate_type(&tgb.name_any());
    let namespace = tgb.namespace().unwrap_or_default();
    gated_endpoint_pods(pods, &namespace, slices.iter().copied(), family, &gate)
        .await
        .map_err(ReconcileError::kube("read the endpoint pods' readiness gates"))
}

/// The pods of `tgb`'s not-Ready endpoints that declare its gate and whose containers are ready:
/// they are registered, so the load balancer can find them healthy and the gate can open. The
/// pods found are remembered for their gates.
pub async fn held_back(
    pods: &impl PodGates,
    memory: &GateMemory,
    tgb: &TargetGroupBinding,
    slices: &[&SliceView],
    family: AddressFamily,
) -> Result<BTreeSet<String>, ReconcileError> {
    let found = gated_endpoint_pods_of(pods, tgb, slices, family).await?;
    let uid = uid_of(tgb)?;
    let mut memory = memory.lock();
    let known = memory.entry(uid).or_default();
    for (name, pod) in &found {
        known.entry(name.clone()).or_insert_with(|| pod.gate.clone());
    }
    Ok(held_back_by_gate(&found))
}

/// Where the pods known to declare the gate of binding `uid` are now: pod → its endpoint's
/// address. `None` when no such pod is known.
pub fn gated_addresses(
    memory: &GateMemory,
    uid: &str,
    slices: &[&SliceView],
    family: AddressFamily,
) -> Option<BTreeMap<String, String>> {
    let known: BTreeSet<String> = memory.lock().get(uid)?.keys().cloned().collect();
    Some(pod_addresses(slices.iter().copied(), family, &known))
}

/// Sets each known gated pod's condition (at `addresses`, as [`gated_addresses`] found them) from
/// its targets' states; returns whether some gate is still closed (the binding then reads health
/// again soon).
pub async fn update(
    pods: &impl PodGates,
    memory: &GateMemory,
    tgb: &TargetGroupBinding,
    addresses: &BTreeMap<String, String>,
    states: &BTreeMap<TargetId, (TargetState, Option<String>)>,
) -> Result<bool, ReconcileError> {
    let uid = uid_of(tgb)?;
    let (gate, namespace) = (gate_type(&tgb.name_any()), tgb.namespace().unwrap_or_default());
    let statuses = gate_statuses(addresses, states);
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
        if last.as_deref() == Some(status.status()) {
            continue;
        }
        // Read fresh: its UID guards the write, and a pod that has the condition already is left as it is.
        let found = pods
            .gated_pods(&namespace, &BTreeSet::from([name.clone()]), &gate)
            .await
            .map_err(ReconcileError::kube("read a gated pod"))?;
        let Some(pod) = found.get(name) else { continue };
        if pod.gate.as_deref() != Some(status.status()) {
            let condition = status.condition(&gate);
            written(pod, &condition, pods.set_gate(&namespace, pod, &condition).await)?;
        }
        if let Some(pods) = memory.lock().get_mut(&uid) {
            pods.insert(name.clone(), Some(status.status().to_owned()));
        }
    }
    Ok(closed)
}

/// Opens every gate of `tgb`'s pods: a deleted binding must never leave pods unready.
pub async fn open_all(
    pods: &impl PodGates,
    memory: &GateMemory,
    tgb: &TargetGroupBinding,
    slices: &[SliceView],
    family: AddressFamily,
) -> Result<(), ReconcileError> {
    let candidates = not_ready_pods(slices, family);
    let gate = gate_type(&tgb.name_any());
    let namespace = tgb.namespace().unwrap_or_default();
    let found = pods
        .gated_pods(&namespace, &candidates, &gate)
        .await
        .map_err(ReconcileError::kube("read the endpoint pods' readiness gates"))?;
    let open = GateStatus {
        healthy: true,
        reason: "TargetGroupBindingDeleted".into(),
        message: format!("TargetGroupBinding {} was deleted; the gate no longer applies", tgb.name_any()),
    };
    let condition = open.condition(&gate);
    for pod in found.values().filter(|p| p.gate.as_deref() != Some("True")) {
        written(pod, &condition, pods.set_gate(&namespace, pod, &condition).await)?;
    }
    memory.forget(&uid_of(tgb)?);
    Ok(())
}

/// A gate write's outcome: a pod gone, or re-created under the same name since it was read, has
/// nothing of ours to set.
fn written(pod: &GatedPod, gate: &GateCondition<'_>, result: Result<(), kube::Error>) -> Result<(), ReconcileError> {
    match result {
        Ok(()) => {
            tracing::info!(pod = %pod.name, gate = %gate.type_, status = gate.status, reason = %gate.reason, "set the readiness gate");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(ReconcileError::kube("set a pod's readiness gate")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TargetGroupBindingSpec;
    use crate::controller::fakes::FakeCluster as FakePods;
    use crate::plan::desired::EndpointView;

    /// As a reconcile does: where the known gated pods are, then their gates from `states`.
    async fn observe_and_update(
        pods: &FakePods,
        memory: &GateMemory,
        tgb: &TargetGroupBinding,
        slice: &SliceView,
        states: &BTreeMap<TargetId, (TargetState, Option<String>)>,
    ) -> Result<bool, ReconcileError> {
        let uid = uid_of(tgb)?;
        match gated_addresses(memory, &uid, &[slice], AddressFamily::Ipv4) {
            Some(addresses) => update(pods, memory, tgb, &addresses, states).await,
            None => Ok(false),
        }
    }

    fn binding() -> TargetGroupBinding {
        let mut tgb = TargetGroupBinding::new("web", TargetGroupBindingSpec::default());
        tgb.metadata.namespace = Some("demo".into());
        tgb.metadata.uid = Some("uid-web".into());
        tgb
    }

    /// Not-Ready endpoints (their gate holds them back) of the named pods at 10.0.0.<n>.
    fn slice(pods: &[(&str, u8)]) -> SliceView {
        let endpoints = pods
            .iter()
            .map(|(pod, n)| EndpointView {
                addresses: vec![format!("10.0.0.{n}")],
                ready: Some(false),
                terminating: None,
                pod: Some((*pod).to_owned()),
            })
            .collect();
        SliceView { family: AddressFamily::Ipv4, ports: Vec::new(), endpoints }
    }

    fn states(targets: &[(u8, TargetState)]) -> BTreeMap<TargetId, (TargetState, Option<String>)> {
        targets.iter().map(|(n, s)| (TargetId::new(format!("10.0.0.{n}"), 8080), (*s, None))).collect()
    }

    #[tokio::test]
    async fn only_pods_whose_containers_are_ready_are_held_back_and_all_gated_ones_are_remembered() {
        let pods = FakePods::with(&[("a", true, None), ("b", false, None)]);
        let memory = GateMemory::default();
        let slice = slice(&[("a", 1), ("b", 2)]);
        let held = held_back(&pods, &memory, &binding(), &[&slice], AddressFamily::Ipv4).await.expect("read");
        assert_eq!(held, BTreeSet::from(["a".to_owned()]));
        assert_eq!(memory.lock().get("uid-web").map(|p| p.len()), Some(2));
    }

    #[tokio::test]
    async fn a_gate_opens_once_its_target_is_healthy_and_is_written_once_per_change() {
        let pods = FakePods::with(&[("a", true, None), ("b", true, None)]);
        let memory = GateMemory::default();
        let (tgb, slice) = (binding(), slice(&[("a", 1), ("b", 2)]));
        held_back(&pods, &memory, &tgb, &[&slice], AddressFamily::Ipv4).await.expect("read");

        let now = states(&[(1, TargetState::Healthy), (2, TargetState::Initial)]);
        let closed = observe_and_update(&pods, &memory, &tgb, &slice, &now).await.expect("update");
        assert!(closed, "b's gate is still closed: health is read again soon");
        assert_eq!(
            pods.gates_set(),
            vec![
                ("a".into(), "True".into(), "Target.Healthy".into()),
                ("b".into(), "False".into(), "Target.Initial".into())
            ]
        );
        observe_and_update(&pods, &memory, &tgb, &slice, &now).await.expect("update");
        assert_eq!(pods.gates_set().len(), 2, "nothing changed: nothing written");

        let healthy = states(&[(1, TargetState::Healthy), (2, TargetState::Healthy)]);
        let closed = observe_and_update(&pods, &memory, &tgb, &slice, &healthy).await.expect("update");
        assert!(!closed);
        assert_eq!(pods.gates_set().last(), Some(&("b".into(), "True".into(), "Target.Healthy".into())));
    }

    #[tokio::test]
    async fn a_pod_that_left_the_endpoints_is_forgotten_and_not_written() {
        let pods = FakePods::with(&[("a", true, None), ("b", true, None)]);
        let memory = GateMemory::default();
        let tgb = binding();
        held_back(&pods, &memory, &tgb, &[&slice(&[("a", 1), ("b", 2)])], AddressFamily::Ipv4).await.expect("read");
        let only_a = slice(&[("a", 1)]);
        let now = states(&[(1, TargetState::Healthy)]);
        observe_and_update(&pods, &memory, &tgb, &only_a, &now).await.expect("update");
        assert_eq!(pods.gates_set(), vec![("a".into(), "True".into(), "Target.Healthy".into())]);
        assert_eq!(memory.lock().get("uid-web").map(|p| p.keys().cloned().collect()), Some(vec!["a".to_owned()]));
    }

    #[tokio::test]
    async fn a_deleted_binding_opens_every_closed_gate_and_is_forgotten() {
        let pods = FakePods::with(&[("a", true, Some("False")), ("b", true, Some("True"))]);
        let memory = GateMemory::default();
        let (tgb, slice) = (binding(), slice(&[("a", 1), ("b", 2)]));
        held_back(&pods, &memory, &tgb, &[&slice], AddressFamily::Ipv4).await.expect("read");
        open_all(&pods, &memory, &tgb, &[slice], AddressFamily::Ipv4).await.expect("open");
        assert_eq!(pods.gates_set(), vec![("a".into(), "True".into(), "TargetGroupBindingDeleted".into())]);
        assert!(memory.uids().is_empty());
    }

    #[tokio::test]
    async fn a_pod_gone_or_recreated_since_it_was_read_is_not_an_error() {
        for code in [404, 409] {
            let pods = FakePods::with(&[("a", true, None)]).refusing_gates_with(code);
            let memory = GateMemory::default();
            let (tgb, slice) = (binding(), slice(&[("a", 1)]));
            held_back(&pods, &memory, &tgb, &[&slice], AddressFamily::Ipv4).await.expect("read");
            let now = states(&[(1, TargetState::Healthy)]);
            let result = observe_and_update(&pods, &memory, &tgb, &slice, &now).await;
            assert!(result.is_ok(), "{code}: {result:?}");
        }
        let pods = FakePods::with(&[("a", true, None)]).refusing_gates_with(500);
        let memory = GateMemory::default();
        let (tgb, slice) = (binding(), slice(&[("a", 1)]));
        held_back(&pods, &memory, &tgb, &[&slice], AddressFamily::Ipv4).await.expect("read");
        let now = states(&[(1, TargetState::Healthy)]);
        assert!(observe_and_update(&pods, &memory, &tgb, &slice, &now).await.is_err(), "a 500 is");
    }
}
