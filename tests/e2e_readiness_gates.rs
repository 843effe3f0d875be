//! End to end: pods that declare the readiness gate `target-health.elbv2.k8s.aws/<binding>` are
//! registered while the gate holds them back, get the condition True once AWS reports their target
//! healthy (latency printed), and never stay unready after the binding is deleted.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tgb_sandbox::{Agent, targets};

const GATE: &str = "target-health.elbv2.k8s.aws/web";

/// A pod as a kubelet reports it while only the gate holds it back (`containers_ready`), or
/// while its containers are still starting. Its status is written here, at the moment the test
/// chooses, on a node the simulated kubelet does not run (so nothing else writes it); the real
/// kubelet's part is covered by `e2e_workloads::gated_rollout_keeps_healthy_targets_throughout`.
async fn gated_pod(kube: &kube::Client, ip: &str, containers_ready: bool) {
    let name = format!("pod-{}", ip.replace('.', "-"));
    let pods: Api<Pod> = Api::namespaced(kube.clone(), "demo");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "demo", "labels": {"app": "web"}},
        "spec": {"nodeName": "hand-written-status", "containers": [{"name": "app", "image": "app"}],
                 "readinessGates": [{"conditionType": GATE}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("create pod");
    let ready = if containers_ready { "True" } else { "False" };
    let status = json!({"status": {"podIP": ip, "conditions": [
        {"type": "ContainersReady", "status": ready}, {"type": "Ready", "status": "False"}]}});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("pod status");
}

async fn gate_status(kube: &kube::Client, ip: &str) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(kube.clone(), "demo");
    let pod = pods.get_opt(&format!("pod-{}", ip.replace('.', "-"))).await.ok()??;
    pod.status?.conditions?.into_iter().find(|c| c.type_ == GATE).map(|c| c.status)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_pods_turn_ready_once_their_targets_are_healthy() {
    let ips: Vec<String> = (1..=20).map(|i| format!("10.0.5.{i}")).collect();
    let (sandbox, aws, kube) = world("gates", &[]).await;
    let arn = aws.ip_target_group_arn.clone();
    for ip in &ips {
        gated_pod(&kube, ip, true).await;
    }
    // Not Ready (the gate holds them back): the EndpointSlice says ready=false.
    let endpoints: Vec<Ep<'_>> = ips.iter().map(|ip| Ep::NotReady(ip)).collect();
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &endpoints).await;
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");

    // Watch AWS and the pods side by side, every 100 ms.
    let mut healthy_at: BTreeMap<String, Instant> = BTreeMap::new();
    let mut open_at: BTreeMap<String, Instant> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while open_at.len() < ips.len() {
        assert!(Instant::now() < deadline, "gates opened for {} of {} pods", open_at.len(), ips.len());
        let now = Instant::now();
        for (target, state) in targets(&sandbox, &arn).await.expect("targets") {
            if state == "healthy" {
                healthy_at.entry(target.trim_end_matches(":8080").to_owned()).or_insert(now);
            }
        }
        for ip in &ips {
            if !open_at.contains_key(ip) && gate_status(&kube, ip).await.as_deref() == Some("True") {
                open_at.insert(ip.clone(), Instant::now());
                assert!(healthy_at.contains_key(ip), "the gate of {ip} opened before AWS reported it healthy");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lags: Vec<Duration> = ips.iter().map(|ip| open_at[ip].saturating_duration_since(healthy_at[ip])).collect();
    lags.sort();
    eprintln!(
        "readiness gate True after AWS reported the target healthy, {} pods (100 ms sampling): p50 {:?}, p99 {:?}, max {:?}",
        lags.len(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or_default()
    );

    // A pod whose containers are not ready is not registered and keeps its gate closed, until the
    // binding is deleted: then every gate opens.
    gated_pod(&kube, "10.0.5.99", false).await;
    let mut endpoints: Vec<Ep<'_>> = ips.iter().map(|ip| Ep::Ready(ip)).collect();
    endpoints.push(Ep::NotReady("10.0.5.99"));
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &endpoints).await;
    eventually("the starting pod's gate reported closed", Duration::from_secs(20), || async {
        (gate_status(&kube, "10.0.5.99").await.as_deref() == Some("False")).then_some(())
    })
    .await;
    assert!(!targets(&sandbox, &arn).await.expect("targets").contains_key("10.0.5.99:8080"));
    delete_binding(&kube, "demo", "web").await;
    eventually("binding gone", Duration::from_secs(30), || async {
        get_binding(&kube, "demo", "web").await.is_none().then_some(())
    })
    .await;
    assert_eq!(gate_status(&kube, "10.0.5.99").await.as_deref(), Some("True"), "no pod stays unready");
}
