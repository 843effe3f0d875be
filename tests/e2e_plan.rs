//! End to end: `tgb-agent plan` on a cluster seeded with drift shows exactly the changes `run` then
//! makes (a pod only its readiness gate holds back included), writes nothing, and exits 2 while
//! there are changes, 0 once there are none.

mod common;

use common::*;
use serde_json::json;
use tgb_sandbox::{Agent, register_directly};

/// The `+ register` / `- deregister` lines of a plan as "+id:port" / "-id:port", sorted.
fn target_changes(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (sign, rest) = if let Some(r) = l.strip_prefix("+ register") {
                ("+", r)
            } else if let Some(r) = l.strip_prefix("- deregister") {
                ("-", r)
            } else {
                return None;
            };
            rest.split_whitespace().next().map(|id| format!("{sign}{id}"))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_exactly_what_run_then_does() {
    let endpoints = [Ep::Ready("10.0.0.10"), Ep::Ready("10.0.0.11"), Ep::NotReady("10.0.0.12")];
    let (sandbox, aws, kube) = world("plan", &endpoints).await;
    // 10.0.0.12: containers ready, held back only by `web`'s readiness gate: `run` registers it.
    // Written by hand, like this world's EndpointSlice: the plan must be read at a moment the test
    // chooses (gated, not yet registered); the kubelet's own part is e2e_webhook's and e2e_workloads'.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(kube.clone(), "demo");
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "pod-10-0-0-12", "labels": {"app": "web"}},
        "spec": {"nodeName": "hand-written-status", "containers": [{"name": "app", "image": "app"}],
                 "readinessGates": [{"conditionType": "target-health.elbv2.k8s.aws/web"}]}
    }))
    .expect("pod");
    pods.create(&Default::default(), &pod).await.expect("gated pod");
    let status = json!({"status": {"podIP": "10.0.0.12", "conditions": [
        {"type": "ContainersReady", "status": "True"}, {"type": "Ready", "status": "False"}]}});
    pods.patch_status("pod-10-0-0-12", &Default::default(), &kube::api::Patch::Merge(&status)).await.expect("status");
    let arn = aws.ip_target_group_arn.clone();
    let shared_arn = tgb_sandbox::create_ip_target_group(&sandbox, &aws, "plan-shared").await.expect("tg");
    // Drift: a stranger in the exclusive group, one target already there; another cluster's target
    // in the shared group.
    register_directly(&sandbox, &arn, &[("10.0.9.9", 8080), ("10.0.0.10", 8080)]).await.expect("seed");
    register_directly(&sandbox, &shared_arn, &[("10.0.8.8", 8080)]).await.expect("seed");
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let mut shared = ip_binding(&shared_arn);
    shared["multiClusterTargetGroup"] = json!(true);
    binding(&kube, "demo", "shared", shared).await;

    let before = (sandbox.aws_call_count("RegisterTargets").await, sandbox.aws_call_count("DeregisterTargets").await);
    let (code, text) = plan_as_agent(&sandbox, "e2e");
    assert_eq!(code, 2, "changes pending:\n{text}");
    // 10.0.0.11 into the exclusive group, the stranger out; both into the shared group; the other
    // cluster's target there untouched (counted as left alone).
    let web = text.split("binding demo/web").nth(1).unwrap_or_default();
    let shared_part =
        text.split("binding demo/shared").nth(1).and_then(|t| t.split("binding ").next()).unwrap_or_default();
    assert_eq!(target_changes(web), vec!["+10.0.0.11:8080", "+10.0.0.12:8080", "-10.0.9.9:8080"], "{text}");
    assert_eq!(target_changes(shared_part), vec!["+10.0.0.10:8080", "+10.0.0.11:8080"], "{text}");
    assert!(text.contains("Plan: 5 change(s)."), "{text}");
    assert!(text.contains("1 registered by others, left alone"), "{text}");
    let after = (sandbox.aws_call_count("RegisterTargets").await, sandbox.aws_call_count("DeregisterTargets").await);
    assert_eq!(before.0.ok(), after.0.ok(), "plan wrote nothing");
    assert_eq!(before.1.ok(), after.1.ok(), "plan wrote nothing");

    // run makes exactly those changes.
    let _agent =
        Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s", "--cluster-name", "e2e"]).expect("agent");
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080", "10.0.0.11:8080", "10.0.0.12:8080"]).await;
    wait_for_targets(&sandbox, &shared_arn, &["10.0.0.10:8080", "10.0.0.11:8080", "10.0.8.8:8080"]).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
    wait_for_condition(&kube, "demo", "shared", "True", "Reconciled").await;
    let (code, text) = plan_as_agent(&sandbox, "e2e");
    assert_eq!(code, 0, "nothing left to change:\n{text}");
    assert!(text.contains("Plan: 0 change(s)."), "{text}");
}

/// A binding deleted while no agent runs (its finalizer holds it): `plan` shows the deregistration
/// of everything it registered, and `run` then does exactly that and lets the binding go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_what_a_deletion_will_remove_and_run_removes_it() {
    let (sandbox, aws, kube) = world("plandel", &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.0.11")]).await;
    let arn = aws.ip_target_group_arn.clone();
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let mut agent =
        Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s", "--cluster-name", "e2e"]).expect("agent");
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080", "10.0.0.11:8080"]).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
    agent.terminate().expect("stop the agent");
    delete_binding(&kube, "demo", "web").await;
    assert!(get_binding(&kube, "demo", "web").await.is_some(), "the finalizer holds the binding");

    let (code, text) = plan_as_agent(&sandbox, "e2e");
    assert_eq!(code, 2, "changes pending:\n{text}");
    assert!(text.contains("being deleted"), "{text}");
    assert_eq!(target_changes(&text), vec!["-10.0.0.10:8080", "-10.0.0.11:8080"], "{text}");
    assert_eq!(active_targets(&sandbox, &arn).await.len(), 2, "plan wrote nothing");

    let _agent =
        Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s", "--cluster-name", "e2e"]).expect("agent");
    wait_for_targets(&sandbox, &arn, &[]).await;
    eventually("the binding gone", std::time::Duration::from_secs(30), || async {
        get_binding(&kube, "demo", "web").await.is_none().then_some(())
    })
    .await;
    let (code, text) = plan_as_agent(&sandbox, "e2e");
    assert_eq!(code, 0, "nothing left to change:\n{text}");
}
