//! End to end on the sandbox: `spec.networking` security-group ingress rules.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_ec2::types::{IpPermission, IpRange};
use common::*;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tgb_sandbox::{Agent, Sandbox};

/// Ingress rules of `group` as "proto from-to peer owner", owner being the creator tag or "-".
async fn rules(sandbox: &Sandbox, group: &str) -> BTreeSet<String> {
    ingress_rules(sandbox, group)
        .await
        .into_iter()
        .map(|(key, tags)| {
            let owner = tags.get("tgb-agent.elbv2.k8s.aws/cluster").map_or("-", String::as_str).to_owned();
            format!("{key} {owner}")
        })
        .collect()
}

async fn wait_for_rules(sandbox: &Sandbox, group: &str, expected: &[&str]) {
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    let mut last = BTreeSet::new();
    let ok = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            last = rules(sandbox, group).await;
            if last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "group {group} never held {expected:?}; last seen {last:?}");
}

/// An ip binding whose rule lets 10.1.0.0/16 in on the pods' container port named `web`.
fn named_port_binding(arn: &str) -> serde_json::Value {
    json!({
        "serviceRef": {"name": "web", "port": 80}, "targetGroupARN": arn, "targetType": "ip",
        "networking": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "ports": [{"protocol": "TCP", "port": "web"}]}]}
    })
}

/// A pod's ENI in `group` (moto finds ENIs by primary IP only, so the pod IP is its primary IP).
async fn pod_eni(ec2: &aws_sdk_ec2::Client, aws: &tgb_sandbox::Fixture, ip: &str, group: &str) {
    ec2.create_network_interface()
        .subnet_id(&aws.subnet_ids[0])
        .private_ip_address(ip)
        .groups(group)
        .send()
        .await
        .expect("pod ENI");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_rules_are_shared_kept_and_cleaned_up() {
    let (sandbox, aws, kube) = world("sgi", &[]).await;
    let (lb_sg, node_sg) = (aws.lb_security_group.clone(), aws.node_security_group.clone());
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.aws().await);
    // A hand-made rule on the same port, from another peer: never the agent's to revoke.
    ec2.authorize_security_group_ingress()
        .group_id(&node_sg)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(30080)
                .to_port(30080)
                .ip_ranges(IpRange::builder().cidr_ip("192.168.0.0/16").build())
                .build(),
        )
        .send()
        .await
        .expect("hand-made rule");
    for (i, instance) in aws.instances.iter().enumerate() {
        node(&kube, &format!("node-{i}"), &instance.provider_id(), json!({})).await;
    }
    node_port_service(&kube, "web-np", "NodePort", 30080).await;
    let spec = |name: &str| {
        json!({
            "serviceRef": {"name": name, "port": 80}, "targetGroupARN": aws.instance_target_group_arn,
            "targetType": "instance", "multiClusterTargetGroup": true,
            "networking": {"ingress": [{"from": [{"securityGroup": {"groupID": lb_sg}}], "ports": [{"protocol": "TCP", "port": 30080}]}]}
        })
    };
    binding(&kube, "demo", "one", spec("web-np")).await;
    binding(&kube, "demo", "two", spec("web-np")).await;
    // plan shows the rule run will authorize on the nodes' group, wanted by both bindings.
    let (code, text) = plan_as_agent(&sandbox, "sgi");
    assert_eq!(code, 2, "{text}");
    let authorize = text.lines().find(|l| l.contains("+ authorize")).unwrap_or_default().to_owned();
    assert!(text.contains(&format!("security group {node_sg}")), "{text}");
    assert!(authorize.contains(&format!("tcp 30080-30080 from {lb_sg}")), "{text}");
    assert!(authorize.contains("demo/one") && authorize.contains("demo/two"), "{text}");
    let _agent =
        Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s", "--cluster-name", "sgi"]).expect("agent");

    let ours = format!("tcp 30080-30080 {lb_sg} sgi");
    let hand_made = "tcp 30080-30080 192.168.0.0/16 -".to_string();
    wait_for_rules(&sandbox, &node_sg, &[&ours, &hand_made]).await;
    wait_for_condition(&kube, "demo", "one", "True", "Reconciled").await;
    wait_for_condition(&kube, "demo", "two", "True", "Reconciled").await;
    // The LB's own group is never touched.
    assert!(rules(&sandbox, &lb_sg).await.iter().all(|r| !r.ends_with(" sgi")));
    let (code, text) = plan_as_agent(&sandbox, "sgi");
    assert_eq!(code, 0, "run did what plan said; nothing left:\n{text}");

    // One of two bindings goes: the shared rule stays.
    delete_binding(&kube, "demo", "one").await;
    eventually("one gone", Duration::from_secs(30), || async {
        get_binding(&kube, "demo", "one").await.is_none().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for_rules(&sandbox, &node_sg, &[&ours, &hand_made]).await;
    // The last one goes: its rule is revoked, the hand-made one survives.
    delete_binding(&kube, "demo", "two").await;
    eventually("two gone", Duration::from_secs(30), || async {
        get_binding(&kube, "demo", "two").await.is_none().then_some(())
    })
    .await;
    wait_for_rules(&sandbox, &node_sg, &[&hand_made]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_rules_land_on_the_pods_groups_and_a_broken_binding_blocks_nobody() {
    let (sandbox, aws, kube) = world("sgp", &[Ep::Ready("10.0.0.50")]).await;
    let node_sg = aws.node_security_group.clone();
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.aws().await);
    pod_eni(&ec2, &aws, "10.0.0.50", &node_sg).await;
    // A pod whose ENI has two groups, none tagged for the cluster.
    let other = ec2
        .create_security_group()
        .group_name("sgp-extra")
        .description("x")
        .vpc_id(&aws.vpc_id)
        .send()
        .await
        .expect("sg");
    let other_sg = other.group_id().expect("sg id").to_owned();
    ec2.create_network_interface()
        .subnet_id(&aws.subnet_ids[0])
        .private_ip_address("10.0.0.60")
        .groups(&aws.lb_security_group)
        .groups(&other_sg)
        .send()
        .await
        .expect("ambiguous ENI");
    // A hand-made rule identical to one the binding will want: it satisfies the binding, and it is
    // never the agent's to revoke.
    ec2.authorize_security_group_ingress()
        .group_id(&node_sg)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(0)
                .to_port(65535)
                .ip_ranges(IpRange::builder().cidr_ip("10.1.0.0/16").build())
                .build(),
        )
        .send()
        .await
        .expect("hand-made rule");
    service(&kube, "demo", "broken", 80, "http", 8080).await;
    endpoint_slice(&kube, "demo", "broken", "broken-a", "http", 8080, &[Ep::Ready("10.0.0.60")]).await;
    let second_tg = tgb_sandbox::create_ip_target_group(&sandbox, &aws, "sgp-second").await.expect("tg");

    binding(&kube, "demo", "web", json!({
        "serviceRef": {"name": "web", "port": 80}, "targetGroupARN": aws.ip_target_group_arn, "targetType": "ip",
        "networking": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}, {"ipBlock": {"cidr": "2600:1f18::/56"}}], "ports": []}]}
    }))
    .await;
    binding(
        &kube,
        "demo",
        "broken",
        json!({
            "serviceRef": {"name": "broken", "port": 80}, "targetGroupARN": second_tg, "targetType": "ip",
            "networking": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.2.0.0/16"}}], "ports": [{"port": 8080}]}]}
        }),
    )
    .await;
    let _agent =
        Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s", "--cluster-name", "sgp"]).expect("agent");

    // An empty ports list means every TCP port; IPv4 and IPv6 peers.
    wait_for_rules(&sandbox, &node_sg, &["tcp 0-65535 10.1.0.0/16 -", "tcp 0-65535 2600:1f18::/56 sgp"]).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
    wait_for_condition(&kube, "demo", "broken", "False", "AmbiguousSecurityGroup").await;
    let message = get_binding(&kube, "demo", "broken")
        .await
        .and_then(|b| b.status)
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message)
        .unwrap_or_default();
    assert!(message.contains(&other_sg), "the condition names the ENI's groups: {message}");
    // The broken binding does not stop changes for the good one: narrow its rule to the pod's
    // container port named `web` (read from the endpoint pod itself).
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "pod-10-0-0-50", "namespace": "demo"},
        "spec": {"containers": [{"name": "app", "image": "app", "ports": [{"name": "web", "containerPort": 8080}]}]}
    }))
    .expect("pod");
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(kube.clone(), "demo")
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    binding(&kube, "demo", "web", named_port_binding(&aws.ip_target_group_arn)).await;
    wait_for_rules(&sandbox, &node_sg, &["tcp 0-65535 10.1.0.0/16 -", "tcp 8080-8080 10.1.0.0/16 sgp"]).await;
    // Networking removed: the agent's rule goes, the hand-made one stays.
    binding(&kube, "demo", "web", ip_binding(&aws.ip_target_group_arn)).await;
    wait_for_rules(&sandbox, &node_sg, &["tcp 0-65535 10.1.0.0/16 -"]).await;
}

/// A pod held back only by the binding's readiness gate is registered and health-checked, so the
/// rule on its named container port must be open before it can turn healthy: here it is the
/// backend's only pod (a scale from zero, or a rollout that renumbered the port), so no serving
/// pod names the port. Its status (and, as `world` does, its slice: not ready) is written by hand
/// on a node the simulated kubelet does not run, so the gate stays closed whatever the emulated AWS
/// reports: moto does not model a security group failing the health checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_on_a_named_port_opens_for_a_pod_only_its_gate_holds_back() {
    let (sandbox, aws, kube) = world("sgg", &[Ep::NotReady("10.0.0.70")]).await;
    let node_sg = aws.node_security_group.clone();
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.aws().await);
    pod_eni(&ec2, &aws, "10.0.0.70", &node_sg).await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(kube.clone(), "demo");
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "pod-10-0-0-70", "namespace": "demo", "labels": {"app": "web"}},
        "spec": {"nodeName": "hand-written-status",
                 "containers": [{"name": "app", "image": "app", "ports": [{"name": "web", "containerPort": 9090}]}],
                 "readinessGates": [{"conditionType": "target-health.elbv2.k8s.aws/web"}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("create pod");
    let status = json!({"status": {"podIP": "10.0.0.70", "conditions": [
        {"type": "ContainersReady", "status": "True"}, {"type": "Ready", "status": "False"}]}});
    pods.patch_status("pod-10-0-0-70", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&status))
        .await
        .expect("pod status");
    binding(&kube, "demo", "web", named_port_binding(&aws.ip_target_group_arn)).await;
    let _agent =
        Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s", "--cluster-name", "sgg"]).expect("agent");

    wait_for_rules(&sandbox, &node_sg, &["tcp 9090-9090 10.1.0.0/16 sgg"]).await;
}
