//! End to end on the sandbox, through the real binary: instance-mode bindings (node ports).

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tgb_sandbox::{Agent, Instance};

/// A node backed by a fixture instance.
async fn node_of(client: &Client, name: &str, instance: &Instance, labels: serde_json::Value) {
    node(client, name, &instance.provider_id(), labels).await;
}

async fn patch_node(client: &Client, name: &str, patch: serde_json::Value) {
    Api::<Node>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch node");
}

fn instance_binding(arn: &str, service: &str) -> serde_json::Value {
    json!({"serviceRef": {"name": service, "port": 80}, "targetGroupARN": arn, "targetType": "instance"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_come_and_go() {
    let (sandbox, aws, kube) = world("nodes", &[]).await;
    let arn = aws.instance_target_group_arn.clone();
    let (a, b) = (&aws.instances[0], &aws.instances[1]);
    let (ta, tb) = (format!("{}:30080", a.id), format!("{}:30080", b.id));
    node_of(&kube, "node-a", a, json!({"pool": "web"})).await;
    node_port_service(&kube, "web-np", "NodePort", 30080).await;
    binding(&kube, "demo", "np", instance_binding(&arn, "web-np")).await;
    let agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");
    wait_for_targets(&sandbox, &arn, &[&ta]).await;
    wait_for_condition(&kube, "demo", "np", "True", "Reconciled").await;

    // Added.
    node_of(&kube, "node-b", b, json!({"pool": "batch"})).await;
    wait_for_targets(&sandbox, &arn, &[&ta, &tb]).await;
    // Heartbeats alone cost nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = sandbox.aws_calls().await.expect("calls");
    for _ in 0..5 {
        node_ready(&kube, "node-a", "True").await;
        node_ready(&kube, "node-b", "True").await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(before, sandbox.aws_calls().await.expect("calls"), "heartbeats must not cause AWS calls");
    // NotReady, then Ready again.
    node_ready(&kube, "node-b", "False").await;
    wait_for_targets(&sandbox, &arn, &[&ta]).await;
    node_ready(&kube, "node-b", "True").await;
    wait_for_targets(&sandbox, &arn, &[&ta, &tb]).await;
    // Cordoned, then uncordoned.
    patch_node(&kube, "node-b", json!({"spec": {"unschedulable": true}})).await;
    wait_for_targets(&sandbox, &arn, &[&ta]).await;
    patch_node(&kube, "node-b", json!({"spec": {"unschedulable": false}})).await;
    wait_for_targets(&sandbox, &arn, &[&ta, &tb]).await;
    // Excluded by label.
    patch_node(
        &kube,
        "node-a",
        json!({"metadata": {"labels": {"node.kubernetes.io/exclude-from-external-load-balancers": "true"}}}),
    )
    .await;
    wait_for_targets(&sandbox, &arn, &[&tb]).await;
    patch_node(
        &kube,
        "node-a",
        json!({"metadata": {"labels": {"node.kubernetes.io/exclude-from-external-load-balancers": null}}}),
    )
    .await;
    wait_for_targets(&sandbox, &arn, &[&ta, &tb]).await;
    // nodeSelector.
    let mut spec = instance_binding(&arn, "web-np");
    spec["nodeSelector"] = json!({"matchLabels": {"pool": "web"}});
    binding(&kube, "demo", "np", spec).await;
    wait_for_targets(&sandbox, &arn, &[&ta]).await;
    binding(&kube, "demo", "np", instance_binding(&arn, "web-np")).await;
    wait_for_targets(&sandbox, &arn, &[&ta, &tb]).await;
    // The nodePort changes.
    node_port_service(&kube, "web-np", "NodePort", 31000).await;
    wait_for_targets(&sandbox, &arn, &[&format!("{}:31000", a.id), &format!("{}:31000", b.id)]).await;
    // A node is removed.
    Api::<Node>::all(kube.clone()).delete("node-b", &Default::default()).await.expect("delete node");
    wait_for_targets(&sandbox, &arn, &[&format!("{}:31000", a.id)]).await;
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_instance_is_skipped_and_reported() {
    let (sandbox, aws, kube) = world("skip", &[]).await;
    let arn = aws.instance_target_group_arn.clone();
    let a = &aws.instances[0];
    node_of(&kube, "node-a", a, json!({})).await;
    let mut bad = a.clone();
    bad.id = "not-an-instance".into();
    node_of(&kube, "node-bad", &bad, json!({})).await;
    node_port_service(&kube, "web-np", "LoadBalancer", 30080).await;
    binding(&kube, "demo", "np", instance_binding(&arn, "web-np")).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");
    wait_for_targets(&sandbox, &arn, &[&format!("{}:30080", a.id)]).await;
    wait_for_condition(&kube, "demo", "np", "True", "Reconciled").await;
    let message = get_binding(&kube, "demo", "np")
        .await
        .and_then(|b| b.status)
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message)
        .unwrap_or_default();
    assert!(message.contains("node-bad"), "condition names the skipped node: {message}");
    eventually("NodeSkipped event", Duration::from_secs(10), || async {
        warning_reasons(&kube, "demo", "np").await.contains(&"NodeSkipped".to_string()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ip_service_is_rejected_without_aws_writes() {
    let (sandbox, aws, kube) = world("cip", &[]).await;
    let arn = aws.instance_target_group_arn.clone();
    node_of(&kube, "node-a", &aws.instances[0], json!({})).await;
    node_port_service(&kube, "web-cip", "ClusterIP", 0).await;
    binding(&kube, "demo", "np", instance_binding(&arn, "web-cip")).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");
    wait_for_condition(&kube, "demo", "np", "False", "InvalidServiceType").await;
    assert_eq!(sandbox.aws_call_count("RegisterTargets").await.expect("calls"), 0);
    assert_eq!(sandbox.aws_call_count("DeregisterTargets").await.expect("calls"), 0);
}
