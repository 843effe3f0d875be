//! End to end on the sandbox, through the real binary: ip-mode bindings.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tgb_sandbox::{Agent, Sandbox, seed_aws};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_create_scale_terminate_delete() {
    let sandbox = Sandbox::start().expect("sandbox");
    let aws = seed_aws(&sandbox, "life", 1).await.expect("fixture");
    let kube = sandbox.kube().await.expect("kube");
    namespace(&kube, "demo").await;
    service(&kube, "demo", "web", 80, "http", 8080).await;
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.1.11")]).await;
    binding(&kube, "demo", "web", json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": aws.ip_target_group_arn, "targetType": "ip"})).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");

    wait_for_targets(&sandbox, &aws.ip_target_group_arn, &["10.0.0.10:8080", "10.0.1.11:8080"]).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
    let status = get_binding(&kube, "demo", "web").await.and_then(|b| b.status).expect("status");
    assert_eq!((status.desired_targets, status.registered_targets), (Some(2), Some(2)));
    assert!(get_binding(&kube, "demo", "web").await.expect("binding").metadata.finalizers.unwrap_or_default().contains(&"elbv2.k8s.aws/resources".to_string()));

    // Scale up, then down.
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.1.11"), Ep::Ready("10.0.0.12")]).await;
    wait_for_targets(&sandbox, &aws.ip_target_group_arn, &["10.0.0.10:8080", "10.0.1.11:8080", "10.0.0.12:8080"]).await;
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.1.11"), Ep::Ready("10.0.0.12")]).await;
    wait_for_targets(&sandbox, &aws.ip_target_group_arn, &["10.0.1.11:8080", "10.0.0.12:8080"]).await;

    // A terminating pod is deregistered at once; a not-ready one is never registered.
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Terminating("10.0.1.11"), Ep::Ready("10.0.0.12"), Ep::NotReady("10.0.0.13")]).await;
    wait_for_targets(&sandbox, &aws.ip_target_group_arn, &["10.0.0.12:8080"]).await;

    // Deleting the binding empties the group and lets the binding go.
    delete_binding(&kube, "demo", "web").await;
    wait_for_targets(&sandbox, &aws.ip_target_group_arn, &[]).await;
    eventually("binding gone", Duration::from_secs(30), || async { get_binding(&kube, "demo", "web").await.is_none().then_some(()) }).await;
}
