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
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.1.11")])
        .await;
    binding(&kube, "demo", "web", json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": aws.ip_target_group_arn, "targetType": "ip"})).await;
    let mut agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");

    wait_for_targets(&sandbox, &aws.ip_target_group_arn, &["10.0.0.10:8080", "10.0.1.11:8080"]).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
    let metrics = agent.metrics().expect("metrics");
    assert!(metrics.contains("tgb_aws_calls_total{operation=\"RegisterTargets\",outcome=\"success\"} 1"), "{metrics}");
    assert!(metrics.contains("tgb_registered_targets{namespace=\"demo\",name=\"web\"} 2"), "{metrics}");
    assert!(metrics.contains("tgb_reconciles_total{outcome=\"success\"}"), "{metrics}");
    let status = get_binding(&kube, "demo", "web").await.and_then(|b| b.status).expect("status");
    assert_eq!((status.desired_targets, status.registered_targets), (Some(2), Some(2)));
    assert!(
        get_binding(&kube, "demo", "web")
            .await
            .expect("binding")
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"elbv2.k8s.aws/resources".to_string())
    );

    // Scale up, then down.
    endpoint_slice(
        &kube,
        "demo",
        "web",
        "web-a",
        "http",
        8080,
        &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.1.11"), Ep::Ready("10.0.0.12")],
    )
    .await;
    wait_for_targets(&sandbox, &aws.ip_target_group_arn, &["10.0.0.10:8080", "10.0.1.11:8080", "10.0.0.12:8080"]).await;
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.1.11"), Ep::Ready("10.0.0.12")])
        .await;
    wait_for_targets(&sandbox, &aws.ip_target_group_arn, &["10.0.1.11:8080", "10.0.0.12:8080"]).await;

    // A terminating pod is deregistered at once; a not-ready one is never registered.
    endpoint_slice(
        &kube,
        "demo",
        "web",
        "web-a",
        "http",
        8080,
        &[Ep::Terminating("10.0.1.11"), Ep::Ready("10.0.0.12"), Ep::NotReady("10.0.0.13")],
    )
    .await;
    wait_for_targets(&sandbox, &aws.ip_target_group_arn, &["10.0.0.12:8080"]).await;

    // Deleting the binding empties the group and lets the binding go.
    delete_binding(&kube, "demo", "web").await;
    wait_for_targets(&sandbox, &aws.ip_target_group_arn, &[]).await;
    eventually("binding gone", Duration::from_secs(30), || async {
        get_binding(&kube, "demo", "web").await.is_none().then_some(())
    })
    .await;

    // SIGTERM: a clean exit.
    let status = agent.terminate().expect("terminate");
    assert!(status.success(), "graceful shutdown exits 0, got {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_port_and_port_change() {
    let (sandbox, aws, kube) = world("ports", &[]).await;
    let arn = aws.ip_target_group_arn.clone();
    // A second Service with two named ports, and a slice carrying both.
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "multi", "namespace": "demo"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web"}, {"name": "admin", "port": 9000, "targetPort": 9090}]}
    }))
    .expect("service");
    kube::Api::namespaced(kube.clone(), "demo").create(&Default::default(), &svc).await.expect("create");
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "multi-a", "namespace": "demo", "labels": {"kubernetes.io/service-name": "multi"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}, {"name": "admin", "port": 9090}],
        "endpoints": [{"addresses": ["10.0.0.20"], "conditions": {"ready": true}}],
    });
    let slices: kube::Api<k8s_openapi::api::discovery::v1::EndpointSlice> = kube::Api::namespaced(kube.clone(), "demo");
    slices
        .patch("multi-a", &kube::api::PatchParams::apply("e2e"), &kube::api::Patch::Apply(&slice))
        .await
        .expect("slice");

    binding(&kube, "demo", "multi", json!({"serviceRef": {"name": "multi", "port": "http"}, "targetGroupARN": arn}))
        .await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");
    // The named Service port `http` (targetPort named `web`) resolves to the slice's 8080 only.
    wait_for_targets(&sandbox, &arn, &["10.0.0.20:8080"]).await;
    binding(&kube, "demo", "multi", json!({"serviceRef": {"name": "multi", "port": 9000}, "targetGroupARN": arn}))
        .await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.20:9090"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_disruption_never_empties_the_group() {
    let (sandbox, aws, kube) = world("watch", &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.0.11")]).await;
    let arn = aws.ip_target_group_arn.clone();
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "1s"]).expect("agent");
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080", "10.0.0.11:8080"]).await;

    sandbox
        .kube_fault(json!({
            "dropWatches": true,
            "expireNextWatch": 4,
            "failRequests": {"count": 3, "status": 500, "pathContains": "endpointslices"}
        }))
        .await
        .expect("fault");
    // Watches reconnect, relist after 410s and hit errors while drift checks run every second:
    // the group must never lose a target.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let now = active_targets(&sandbox, &arn).await;
        assert_eq!(now, set(&["10.0.0.10:8080", "10.0.0.11:8080"]), "targets changed during the disruption");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the agent still follows real changes afterwards (once any injected failure left over
    // for EndpointSlice requests is used up).
    let slices: kube::Api<k8s_openapi::api::discovery::v1::EndpointSlice> = kube::Api::namespaced(kube.clone(), "demo");
    eventually("injected failures used up", Duration::from_secs(10), || async {
        slices.list(&Default::default()).await.ok()
    })
    .await;
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.11")]).await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.11:8080"]).await;
}
