//! Shared steps of the end-to-end tests: Kubernetes objects as a user or kubelet would write them,
//! and waiting for the target group to reach a state.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tgb_agent::api::TargetGroupBinding;
use tgb_sandbox::Sandbox;

pub const AGENT: &str = env!("CARGO_BIN_EXE_tgb-agent");

pub async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    let _ = Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await;
}

/// A ClusterIP Service with one named port.
pub async fn service(client: &Client, ns: &str, name: &str, port: i32, port_name: &str, target_port: i32) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": name}, "ports": [{"name": port_name, "port": port, "targetPort": target_port, "protocol": "TCP"}]}
    }))
    .expect("service");
    Api::<Service>::namespaced(client.clone(), ns).create(&PostParams::default(), &svc).await.expect("create service");
}

/// An endpoint as the EndpointSlice controller writes it for a pod.
#[derive(Clone, Copy)]
pub enum Ep<'a> {
    Ready(&'a str),
    NotReady(&'a str),
    Terminating(&'a str),
}

/// Creates or replaces the EndpointSlice `name` of Service `service` (what a kubelet + the
/// EndpointSlice controller would do when pods come and go), beside the empty slice the real
/// controller keeps for the Service while no pod matches its selector. Written by hand where a test
/// needs exact addresses (inside and outside the VPC, shared between two clusters, foreign targets)
/// and states at moments it chooses; real Deployments drive the lifecycle tests of
/// `e2e_workloads.rs` and the demo.
pub async fn endpoint_slice(
    client: &Client,
    ns: &str,
    service: &str,
    name: &str,
    port_name: &str,
    port: i32,
    endpoints: &[Ep<'_>],
) {
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|e| {
            let (ip, ready, serving, terminating) = match e {
                Ep::Ready(ip) => (ip, true, true, false),
                Ep::NotReady(ip) => (ip, false, false, false),
                Ep::Terminating(ip) => (ip, false, true, true),
            };
            json!({"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                   "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("pod-{}", ip.replace(['.', ':'], "-"))}})
        })
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    });
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&slice))
        .await
        .expect("apply endpoint slice");
}

pub async fn binding(client: &Client, ns: &str, name: &str, spec: serde_json::Value) {
    let tgb = json!({
        "apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
        "metadata": {"name": name, "namespace": ns}, "spec": spec,
    });
    Api::<TargetGroupBinding>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&tgb))
        .await
        .expect("apply binding");
}

pub async fn delete_binding(client: &Client, ns: &str, name: &str) {
    Api::<TargetGroupBinding>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete binding");
}

pub async fn get_binding(client: &Client, ns: &str, name: &str) -> Option<TargetGroupBinding> {
    Api::<TargetGroupBinding>::namespaced(client.clone(), ns).get_opt(name).await.expect("get binding")
}

/// `id:port` of the group's targets that are not draining.
pub async fn active_targets(sandbox: &Sandbox, arn: &str) -> BTreeSet<String> {
    tgb_sandbox::targets(sandbox, arn)
        .await
        .expect("describe targets")
        .into_iter()
        .filter(|(_, state)| !state.contains("draining"))
        .map(|(id, _)| id)
        .collect()
}

pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the group's active targets are exactly `expected`.
pub async fn wait_for_targets(sandbox: &Sandbox, arn: &str, expected: &[&str]) {
    let expected = set(expected);
    let mut last = BTreeSet::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            last = active_targets(sandbox, arn).await;
            if last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "target group {arn} never held {expected:?}; last seen {last:?}");
}

/// The binding's Ready condition as (status, reason).
pub async fn ready_condition(client: &Client, ns: &str, name: &str) -> Option<(String, String)> {
    let tgb = get_binding(client, ns, name).await?;
    let c = tgb.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason))
}

/// Waits for the Ready condition to have `status` and `reason`.
pub async fn wait_for_condition(client: &Client, ns: &str, name: &str, status: &str, reason: &str) {
    eventually(&format!("{ns}/{name} Ready={status} reason {reason}"), Duration::from_secs(30), || async {
        let c = ready_condition(client, ns, name).await;
        (c.as_ref().map(|(s, r)| (s.as_str(), r.as_str())) == Some((status, reason))).then_some(())
    })
    .await;
}

/// Reasons of the Warning events about `name`.
pub async fn warning_reasons(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

/// A sandbox with the AWS fixture, namespace `demo`, Service `web` (port 80 `http` → 8080) and
/// the given endpoints: the starting point of most tests.
pub async fn world(prefix: &str, endpoints: &[Ep<'_>]) -> (Sandbox, tgb_sandbox::Fixture, Client) {
    let sandbox = Sandbox::start().expect("sandbox");
    let aws = tgb_sandbox::seed_aws(&sandbox, prefix, 1).await.expect("fixture");
    let kube = sandbox.kube().await.expect("kube");
    namespace(&kube, "demo").await;
    service(&kube, "demo", "web", 80, "http", 8080).await;
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, endpoints).await;
    (sandbox, aws, kube)
}

pub fn ip_binding(arn: &str) -> serde_json::Value {
    json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": arn, "targetType": "ip"})
}

/// A node as a kubelet registers it (Ready=True), with `spec.providerID`.
pub async fn node(client: &Client, name: &str, provider_id: &str, labels: serde_json::Value) {
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"providerID": provider_id}}),
    )
    .expect("node");
    Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    node_ready(client, name, "True").await;
}

/// Sets the Ready condition with a fresh heartbeat, as the kubelet does every few seconds.
pub async fn node_ready(client: &Client, name: &str, status: &str) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": status, "reason": "KubeletReady",
        "lastHeartbeatTime": now, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("node status");
}

/// A Service of `type_` in `demo` with port 80 (`http`) and, unless ClusterIP, `node_port`.
pub async fn node_port_service(client: &Client, name: &str, type_: &str, node_port: i32) {
    let mut port = json!({"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"});
    if type_ != "ClusterIP" {
        port["nodePort"] = json!(node_port);
    }
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "demo"},
        "spec": {"type": type_, "selector": {"app": name}, "ports": [port]}});
    Api::<Service>::namespaced(client.clone(), "demo")
        .patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&svc))
        .await
        .expect("service");
}

/// A security group's ingress rules, each as "proto from-to peer" and its tags.
pub async fn ingress_rules(
    sandbox: &Sandbox,
    group: &str,
) -> Vec<(String, std::collections::BTreeMap<String, String>)> {
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.aws().await);
    let out = ec2
        .describe_security_group_rules()
        .filters(aws_sdk_ec2::types::Filter::builder().name("group-id").values(group).build())
        .send()
        .await
        .expect("DescribeSecurityGroupRules");
    out.security_group_rules()
        .iter()
        .filter(|r| r.is_egress() == Some(false))
        .map(|r| {
            let peer =
                r.referenced_group_info().and_then(|g| g.group_id()).or(r.cidr_ipv4()).or(r.cidr_ipv6()).unwrap_or("?");
            let key = format!(
                "{} {}-{} {}",
                r.ip_protocol().unwrap_or("?"),
                r.from_port().unwrap_or(-1),
                r.to_port().unwrap_or(-1),
                peer
            );
            let tags = r
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
                .collect();
            (key, tags)
        })
        .collect()
}

/// `tgb-agent plan --cluster-name CLUSTER` as the agent's ServiceAccount: (exit code, output).
pub fn plan_as_agent(sandbox: &Sandbox, cluster: &str) -> (i32, String) {
    let out = std::process::Command::new(AGENT)
        .args(["plan", "--cluster-name", cluster, "--namespace", "tgb-system"])
        .envs(sandbox.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("KUBECONFIG", sandbox.dir().join("agent-kubeconfig"))
        .output()
        .expect("tgb-agent plan");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}
