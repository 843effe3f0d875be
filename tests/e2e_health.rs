//! End to end: the binding's status shows its targets' health as AWS reports it, and
//! `kubectl wait --for=condition=TargetsHealthy` gates on it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tgb_sandbox::Agent;

async fn health_status(kube: &kube::Client) -> Option<(String, i32, i32)> {
    let status = get_binding(kube, "demo", "web").await?.status?;
    let targets = status.targets?;
    Some((status.healthy_targets?, targets.initial, targets.healthy))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_aws_and_kubectl_wait_gates_on_it() {
    let (sandbox, aws, kube) = world("health", &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.0.11")]).await;
    let arn = aws.ip_target_group_arn.clone();
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let started = Instant::now();
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "3s"]).expect("agent");

    // First the new targets are initial (the emulator keeps them there for 2 s)...
    eventually("targets seen initial", Duration::from_secs(20), || async {
        health_status(&kube).await.filter(|(_, initial, _)| *initial > 0).map(drop)
    })
    .await;
    // ... and `kubectl wait` returns once AWS reports every one healthy.
    let kubeconfig = sandbox.dir().join("kubeconfig");
    let wait = sandbox
        .kubectl()
        .args(["wait", "--for=condition=TargetsHealthy", "targetgroupbinding/web", "-n", "demo", "--timeout=30s"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("kubectl wait");
    assert!(wait.status.success(), "kubectl wait: {}", String::from_utf8_lossy(&wait.stderr));
    eprintln!("TargetsHealthy {:?} after the agent started", started.elapsed());
    assert_eq!(health_status(&kube).await, Some(("2/2".to_string(), 0, 2)));
    let get = sandbox
        .kubectl()
        .args(["get", "targetgroupbindings", "-n", "demo"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("kubectl get");
    let table = String::from_utf8_lossy(&get.stdout);
    assert!(table.contains("HEALTHY") && table.contains("2/2"), "{table}");

    // A target turns unhealthy: the next drift check shows it, with ELBv2's reason.
    sandbox
        .set_target_health(&arn, "10.0.0.11", 8080, Some("unhealthy"), Some("Target.FailedHealthChecks"))
        .await
        .expect("set health");
    wait_for_condition_type(&kube, "TargetsHealthy", "False", "TargetsNotHealthy").await;
    let status = get_binding(&kube, "demo", "web").await.and_then(|b| b.status).expect("status");
    assert_eq!(status.healthy_targets.as_deref(), Some("1/2"));
    let reasons = status.targets.map(|t| t.reasons).unwrap_or_default();
    assert_eq!(
        reasons.first().map(|r| (r.target.as_str(), r.reason.as_str())),
        Some(("10.0.0.11:8080", "Target.FailedHealthChecks"))
    );
}

async fn wait_for_condition_type(kube: &kube::Client, type_: &str, status: &str, reason: &str) {
    eventually(&format!("{type_}={status}/{reason}"), Duration::from_secs(20), || async {
        let conditions = get_binding(kube, "demo", "web").await?.status?.conditions;
        conditions.iter().any(|c| c.type_ == type_ && c.status == status && c.reason == reason).then_some(())
    })
    .await;
}
