//! End to end on the sandbox, through the real binary: IPv6. A dual-stack Service has one
//! EndpointSlice per family; a binding with `ipAddressType: ipv6` registers the IPv6 one in an ipv6
//! target group (AZ `all` outside the VPC's IPv6 CIDR), an ipv4 binding of the same Service the
//! IPv4 one; readiness and named ports work as for IPv4, and an IPv6 peer in `spec.networking`
//! lands on the security group of the pod's ENI, found by its IPv6 address.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_ec2::types::{InstanceIpv6Address, Tag};
use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, TargetGroupIpAddressTypeEnum, TargetTypeEnum};
use common::*;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tgb_sandbox::{Agent, Sandbox};

/// An EndpointSlice of family `family` for Service `web`: (address, ready, terminating).
/// Written by hand, beside the empty ones the EndpointSlice controller keeps for the Service: the test
/// needs shapes that controller never publishes (addresses outside the VPC, pods in the VPC's random IPv6
/// range, which the simulated kubelet's pod CIDRs cannot know).
async fn slice(kube: &Client, name: &str, family: &str, endpoints: &[(&str, bool, bool)]) {
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|(ip, ready, terminating)| {
            json!({"addresses": [ip], "conditions": {"ready": ready, "serving": !terminating || *ready, "terminating": terminating},
                   "targetRef": {"kind": "Pod", "namespace": "demo", "name": format!("pod-{}", ip.to_lowercase().replace([':', '.'], "-"))}})
        })
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "demo", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": family,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    });
    Api::<EndpointSlice>::namespaced(kube.clone(), "demo")
        .patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&slice))
        .await
        .expect("apply endpoint slice");
}

/// Ingress rules of `group` as "proto from-to peer".
async fn rules(sandbox: &Sandbox, group: &str) -> BTreeSet<String> {
    ingress_rules(sandbox, group).await.into_iter().map(|(key, _)| key).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_bindings_take_the_ipv6_slice_of_a_dual_stack_service() {
    let sandbox = Sandbox::start().expect("sandbox");
    let config = sandbox.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    // A dual-stack VPC as EKS IPv6 clusters use: 10.0.0.0/16 plus an Amazon-provided /56.
    let vpc =
        ec2.create_vpc().cidr_block("10.0.0.0/16").amazon_provided_ipv6_cidr_block(true).send().await.expect("vpc");
    let vpc = vpc.vpc().expect("vpc");
    let vpc_id = vpc.vpc_id().expect("vpc id").to_owned();
    let v6: String =
        vpc.ipv6_cidr_block_association_set().first().and_then(|a| a.ipv6_cidr_block()).expect("IPv6 CIDR").into();
    let v6_net: std::net::Ipv6Addr = v6.split('/').next().and_then(|a| a.parse().ok()).expect("IPv6 network");
    let in_vpc = |host: u128| std::net::Ipv6Addr::from(u128::from(v6_net) + host);
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.0.1.0/24")
        .ipv6_cidr_block(format!("{}/64", in_vpc(0)))
        .availability_zone("us-east-1a")
        .send()
        .await
        .expect("subnet");
    let subnet_id = subnet.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_owned();
    let sg =
        ec2.create_security_group().group_name("v6-pods").description("pods").vpc_id(&vpc_id).send().await.expect("sg");
    let pods_sg = sg.group_id().expect("sg id").to_owned();
    ec2.create_tags()
        .resources(&pods_sg)
        .tags(Tag::builder().key("kubernetes.io/cluster/e2e").value("owned").build())
        .send()
        .await
        .expect("tag");
    let (pod_a, pod_c) = (in_vpc(0xa), in_vpc(0xc));
    for (v4, v6) in [("10.0.1.10", pod_a), ("10.0.1.12", pod_c)] {
        ec2.create_network_interface()
            .subnet_id(&subnet_id)
            .private_ip_address(v4)
            .ipv6_addresses(InstanceIpv6Address::builder().ipv6_address(v6.to_string()).build())
            .groups(&pods_sg)
            .send()
            .await
            .expect("pod ENI");
    }
    let mut arns = Vec::new();
    for (name, family) in
        [("v6-web", TargetGroupIpAddressTypeEnum::Ipv6), ("v4-web", TargetGroupIpAddressTypeEnum::Ipv4)]
    {
        let tg = elbv2
            .create_target_group()
            .name(name)
            .protocol(ProtocolEnum::Http)
            .port(80)
            .vpc_id(&vpc_id)
            .target_type(TargetTypeEnum::Ip)
            .ip_address_type(family)
            .send()
            .await
            .expect("target group");
        arns.push(tg.target_groups().first().and_then(|t| t.target_group_arn()).expect("arn").to_owned());
    }
    let (v6_arn, v4_arn) = (arns[0].clone(), arns[1].clone());

    let kube = sandbox.kube().await.expect("kube");
    namespace(&kube, "demo").await;
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"], "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]}
    }))
    .expect("service");
    Api::namespaced(kube.clone(), "demo").create(&PostParams::default(), &svc).await.expect("create service");
    // B outside the VPC; C not ready. (The API server refuses IPv6 addresses not in canonical form;
    // the agent's own parsing of other spellings is unit-tested.)
    let pod_a_text = pod_a.to_string();
    slice(&kube, "web-v4", "IPv4", &[("10.0.1.10", true, false)]).await;
    slice(
        &kube,
        "web-v6",
        "IPv6",
        &[(&pod_a_text, true, false), ("2001:db8::b", true, false), (&pod_c.to_string(), false, false)],
    )
    .await;
    binding(
        &kube,
        "demo",
        "web6",
        json!({"serviceRef": {"name": "web", "port": "http"}, "targetGroupARN": v6_arn,
        "targetType": "ip", "ipAddressType": "ipv6"}),
    )
    .await;
    binding(
        &kube,
        "demo",
        "web4",
        json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": v4_arn, "targetType": "ip"}),
    )
    .await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "2s"]).expect("agent");

    let a = format!("{pod_a}:8080");
    wait_for_targets(&sandbox, &v6_arn, &[&a, "2001:db8::b:8080"]).await;
    wait_for_targets(&sandbox, &v4_arn, &["10.0.1.10:8080"]).await;
    wait_for_condition(&kube, "demo", "web6", "True", "Reconciled").await;
    wait_for_condition(&kube, "demo", "web4", "True", "Reconciled").await;
    // Registered in canonical form; AZ `all` only for the address outside the VPC's IPv6 /56.
    let zones = tgb_sandbox::target_zones(&sandbox, &v6_arn).await.expect("zones");
    assert_eq!(zones.get(&a), Some(&None), "{zones:?}");
    assert_eq!(zones.get("2001:db8::b:8080"), Some(&Some("all".to_owned())), "{zones:?}");

    // Drift checks every ~2 s find nothing to do: the long spelling is the same target.
    let registrations = sandbox.aws_call_count("RegisterTargets").await.expect("calls");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(sandbox.aws_call_count("RegisterTargets").await.expect("calls"), registrations, "no churn");

    // Readiness as for IPv4: terminating out at once, ready in, gone out.
    let c = format!("{pod_c}:8080");
    slice(&kube, "web-v6", "IPv6", &[(&pod_a_text, false, true), (&pod_c.to_string(), true, false)]).await;
    wait_for_targets(&sandbox, &v6_arn, &[&c]).await;
    assert_eq!(active_targets(&sandbox, &v4_arn).await, set(&["10.0.1.10:8080"]));

    // An IPv6 peer: the rule lands on the group of the ENI holding the pod's IPv6 address.
    binding(
        &kube,
        "demo",
        "web6",
        json!({"serviceRef": {"name": "web", "port": "http"}, "targetGroupARN": v6_arn,
        "targetType": "ip", "ipAddressType": "ipv6",
        "networking": {"ingress": [{"from": [{"ipBlock": {"cidr": "2001:db8:1::/48"}}], "ports": [{"port": 8080}]}]}}),
    )
    .await;
    let expected: BTreeSet<String> = ["tcp 8080-8080 2001:db8:1::/48".to_owned()].into();
    let mut last = BTreeSet::new();
    let ok = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            last = rules(&sandbox, &pods_sg).await;
            if last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "the pods' group never held {expected:?}; last seen {last:?}");
    wait_for_condition(&kube, "demo", "web6", "True", "Reconciled").await;
}
