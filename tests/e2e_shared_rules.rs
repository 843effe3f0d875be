//! End to end: `spec.networking` rules that two clusters share, and failures that stay with the
//! binding that causes them.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{IpPermission, IpRange};
use common::*;
use serde_json::json;
use tgb_sandbox::{Agent, Sandbox, create_ip_target_group};

/// The node group's ingress rules: "proto from-to peer" → the claim and creator tags on it.
async fn rules(sandbox: &Sandbox, group: &str) -> BTreeMap<String, Vec<String>> {
    ingress_rules(sandbox, group)
        .await
        .into_iter()
        .map(|(key, tags)| {
            let mut marks: Vec<String> = tags
                .iter()
                .filter_map(|(k, v)| match k.as_str() {
                    "tgb-agent.elbv2.k8s.aws/cluster" => Some(format!("created-by:{v}")),
                    k => k.strip_prefix("tgb-agent.elbv2.k8s.aws/claim/").map(|c| format!("claim:{c}")),
                })
                .collect();
            marks.sort();
            (key, marks)
        })
        .collect()
}

async fn pod_eni(sandbox: &Sandbox, subnet: &str, ip: &str, group: &str) {
    aws_sdk_ec2::Client::new(&sandbox.aws().await)
        .create_network_interface()
        .subnet_id(subnet)
        .private_ip_address(ip)
        .groups(group)
        .send()
        .await
        .expect("pod ENI");
}

fn networking(peer_group: &str, port: u16) -> serde_json::Value {
    json!({"ingress": [{"from": [{"securityGroup": {"groupID": peer_group}}], "ports": [{"protocol": "TCP", "port": port}]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_two_clusters_need_outlives_either_of_them() {
    let (blue, aws, blue_kube) = world("share-sg", &[Ep::Ready("10.0.0.50")]).await;
    let (lb_sg, node_sg) = (aws.lb_security_group.clone(), aws.node_security_group.clone());
    pod_eni(&blue, &aws.subnet_ids[0], "10.0.0.50", &node_sg).await;
    pod_eni(&blue, &aws.subnet_ids[0], "10.0.0.51", &node_sg).await;
    // A rule made by hand in the same group, on the same port, from another peer.
    aws_sdk_ec2::Client::new(&blue.aws().await)
        .authorize_security_group_ingress()
        .group_id(&node_sg)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(8080)
                .to_port(8080)
                .ip_ranges(IpRange::builder().cidr_ip("192.168.0.0/16").build())
                .build(),
        )
        .send()
        .await
        .expect("hand-made rule");
    let mut green = Sandbox::start().expect("green sandbox");
    green.share_aws_of(&blue);
    let green_kube = green.kube().await.expect("green kube");
    namespace(&green_kube, "demo").await;
    service(&green_kube, "demo", "web", 80, "http", 8080).await;
    endpoint_slice(&green_kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.51")]).await;
    let green_tg = create_ip_target_group(&blue, &aws, "share-sg-green").await.expect("green tg");

    let mut blue_spec = ip_binding(&aws.ip_target_group_arn);
    blue_spec["networking"] = networking(&lb_sg, 8080);
    let mut green_spec = ip_binding(&green_tg);
    green_spec["networking"] = networking(&lb_sg, 8080);
    binding(&blue_kube, "demo", "web", blue_spec).await;
    binding(&green_kube, "demo", "web", green_spec).await;
    let args = |cluster: &'static str| ["--drift-interval", "2s", "--cluster-name", cluster];
    let _blue_agent = Agent::start(AGENT.as_ref(), &blue, &args("blue")).expect("blue");
    let _green_agent = Agent::start(AGENT.as_ref(), &green, &args("green")).expect("green");

    let shared = format!("tcp 8080-8080 {lb_sg}");
    let hand_made = "tcp 8080-8080 192.168.0.0/16".to_string();
    eventually("both clusters claim the rule", Duration::from_secs(30), || async {
        let now = rules(&blue, &node_sg).await;
        let claims = now.get(&shared)?;
        let both = claims.iter().any(|c| c.ends_with(":blue")) && claims.iter().any(|c| c.ends_with(":green"));
        (both && now.get(&hand_made) == Some(&vec![])).then_some(())
    })
    .await;

    // Blue leaves (step 9 of the blue/green runbook): the rule stays for green, watched throughout.
    delete_binding(&blue_kube, "demo", "web").await;
    let until = Instant::now() + Duration::from_secs(8);
    let mut blue_gone = false;
    while Instant::now() < until || !blue_gone {
        let now = rules(&blue, &node_sg).await;
        assert!(now.contains_key(&shared), "the rule green needs was revoked: {now:?}");
        blue_gone = get_binding(&blue_kube, "demo", "web").await.is_none();
        assert!(Instant::now() < until + Duration::from_secs(30), "blue's binding was never deleted");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let now = rules(&blue, &node_sg).await;
    assert!(now[&shared].iter().all(|c| c.ends_with(":green")), "only green's claim is left: {now:?}");
    wait_for_condition(&green_kube, "demo", "web", "True", "Reconciled").await;

    // Green leaves too: now the rule goes; the hand-made one never does.
    delete_binding(&green_kube, "demo", "web").await;
    eventually("the shared rule is revoked once nobody claims it", Duration::from_secs(30), || async {
        let now = rules(&blue, &node_sg).await;
        (!now.contains_key(&shared) && now.contains_key(&hand_made)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_binding_or_a_bad_peer_blocks_only_itself() {
    let (sandbox, aws, kube) = world("sg-iso", &[Ep::Ready("10.0.0.50")]).await;
    let (lb_sg, node_sg) = (aws.lb_security_group.clone(), aws.node_security_group.clone());
    pod_eni(&sandbox, &aws.subnet_ids[0], "10.0.0.50", &node_sg).await;
    let other_tg = create_ip_target_group(&sandbox, &aws, "sg-iso-b").await.expect("tg");
    let missing_tg = aws.ip_target_group_arn.replace("/sg-iso-ip/", "/nope/");

    // "broken": its target group does not exist; it asks for 7070.
    let mut broken = ip_binding(&missing_tg);
    broken["networking"] = networking(&lb_sg, 7070);
    binding(&kube, "demo", "broken", broken).await;
    // "web": asks for 9090.
    let mut web = ip_binding(&aws.ip_target_group_arn);
    web["networking"] = networking(&lb_sg, 9090);
    binding(&kube, "demo", "web", web).await;
    // "bad-peer": names a well-formed peer group that does not exist.
    let mut bad_peer = ip_binding(&other_tg);
    bad_peer["networking"] = networking("sg-0123456789abcdef0", 6060);
    binding(&kube, "demo", "bad-peer", bad_peer).await;
    let _agent =
        Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "2s", "--cluster-name", "iso"]).expect("agent");

    let rule = |port: u16| format!("tcp {port}-{port} {lb_sg}");
    eventually("web's rule", Duration::from_secs(30), || async {
        rules(&sandbox, &node_sg).await.contains_key(&rule(9090)).then_some(())
    })
    .await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
    wait_for_condition(&kube, "demo", "broken", "False", "TargetGroupNotFound").await;
    wait_for_condition(&kube, "demo", "bad-peer", "False", "SecurityGroupNotFound").await;

    // web moves to 9091: 9090 is revoked although "broken" never computed its rules.
    let api: kube::Api<tgb_agent::api::TargetGroupBinding> = kube::Api::namespaced(kube.clone(), "demo");
    let patch = json!({"spec": {"networking": networking(&lb_sg, 9091)}});
    api.patch("web", &Default::default(), &kube::api::Patch::Merge(patch)).await.expect("port change");
    eventually("9090 replaced by 9091", Duration::from_secs(30), || async {
        let now = rules(&sandbox, &node_sg).await;
        (now.contains_key(&rule(9091)) && !now.contains_key(&rule(9090))).then_some(())
    })
    .await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
    wait_for_targets(&sandbox, &aws.ip_target_group_arn, &["10.0.0.50:8080"]).await;
}

/// Prints how long a binding without `spec.networking` takes to register while every EC2
/// security-group call is throttled, next to the same without throttling. Figures only: timings are not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_without_networking_does_not_wait_for_ec2() {
    let (sandbox, aws, kube) = world("sg-lat", &[Ep::Ready("10.0.0.50")]).await;
    let (lb_sg, node_sg) = (aws.lb_security_group.clone(), aws.node_security_group.clone());
    pod_eni(&sandbox, &aws.subnet_ids[0], "10.0.0.50", &node_sg).await;
    let mut with_rules = ip_binding(&aws.ip_target_group_arn);
    with_rules["networking"] = networking(&lb_sg, 8080);
    binding(&kube, "demo", "with-rules", with_rules).await;
    let _agent =
        Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "2s", "--cluster-name", "lat"]).expect("agent");
    wait_for_condition(&kube, "demo", "with-rules", "True", "Reconciled").await;

    let mut figures = Vec::new();
    for (round, throttled) in [(1, false), (2, true)] {
        if throttled {
            let security_group_calls = [
                "DescribeSecurityGroupRules",
                "DescribeSecurityGroups",
                "DescribeNetworkInterfaces",
                "AuthorizeSecurityGroupIngress",
                "RevokeSecurityGroupIngress",
                "CreateTags",
                "DeleteTags",
            ];
            // Throttled, or answered only after 5 s: the loop is busy retrying and waiting.
            let faults = json!({"rate": 1.0, "kinds": ["throttle", "slow"], "slowSeconds": 5, "services": ["ec2"],
                                "operations": security_group_calls});
            sandbox.aws_faults(faults).await.expect("throttle EC2 security-group calls");
            // Give the security-group loop work that now fails and retries with backoff.
            let api: kube::Api<tgb_agent::api::TargetGroupBinding> = kube::Api::namespaced(kube.clone(), "demo");
            let patch = json!({"spec": {"networking": networking(&lb_sg, 8081)}});
            api.patch("with-rules", &Default::default(), &kube::api::Patch::Merge(patch)).await.expect("patch");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        service(&kube, "demo", &format!("plain-{round}"), 80, "http", 8080).await;
        let ip = format!("10.0.3.{round}");
        endpoint_slice(&kube, "demo", &format!("plain-{round}"), "a", "http", 8080, &[Ep::Ready(&ip)]).await;
        let tg = create_ip_target_group(&sandbox, &aws, &format!("sg-lat-{round}")).await.expect("tg");
        let mut spec = ip_binding(&tg);
        spec["serviceRef"]["name"] = json!(format!("plain-{round}"));
        let started = Instant::now();
        binding(&kube, "demo", &format!("plain-{round}"), spec).await;
        wait_for_targets(&sandbox, &tg, &[&format!("{ip}:8080")]).await;
        figures.push((throttled, started.elapsed()));
    }
    let injected = sandbox.aws_faults_injected().await.expect("faults")["injected"].clone();
    let hit = injected.as_object().map_or(0, |kinds| kinds.values().filter_map(|v| v.as_u64()).sum::<u64>());
    assert!(hit > 0, "the security-group loop was throttled or slowed meanwhile: {injected}");
    for (throttled, took) in &figures {
        eprintln!(
            "registration of a binding without networking, EC2 security-group calls faulty={throttled}: {took:?}"
        );
    }
    eprintln!("EC2 security-group calls throttled or slowed meanwhile: {injected}");
}

/// At the rules-per-group quota (60 in the emulator, as in EC2 by default), a port change still
/// converges: the rule no longer needed is released and revoked first, and the condition says why
/// the new one waits meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_change_at_the_rules_quota_converges() {
    let (sandbox, aws, kube) = world("sg-quota", &[Ep::Ready("10.0.0.50")]).await;
    let (lb_sg, node_sg) = (aws.lb_security_group.clone(), aws.node_security_group.clone());
    pod_eni(&sandbox, &aws.subnet_ids[0], "10.0.0.50", &node_sg).await;
    let mut web = ip_binding(&aws.ip_target_group_arn);
    web["networking"] = networking(&lb_sg, 9090);
    binding(&kube, "demo", "web", web).await;
    let _agent =
        Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "2s", "--cluster-name", "quota"]).expect("agent");
    let rule = |port: u16| format!("tcp {port}-{port} {lb_sg}");
    eventually("the first rule", Duration::from_secs(30), || async {
        rules(&sandbox, &node_sg).await.contains_key(&rule(9090)).then_some(())
    })
    .await;
    // Fill the group to its quota with rules made by hand.
    let ec2 = aws_sdk_ec2::Client::new(&sandbox.aws().await);
    for port in 1000u16.. {
        let added = ec2
            .authorize_security_group_ingress()
            .group_id(&node_sg)
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(i32::from(port))
                    .to_port(i32::from(port))
                    .ip_ranges(IpRange::builder().cidr_ip("192.168.0.0/16").build())
                    .build(),
            )
            .send()
            .await;
        if added.is_err() {
            break;
        }
        assert!(port < 1100, "the emulator enforces no quota");
    }
    let full = rules(&sandbox, &node_sg).await.len();

    let api: kube::Api<tgb_agent::api::TargetGroupBinding> = kube::Api::namespaced(kube.clone(), "demo");
    let patch = json!({"spec": {"networking": networking(&lb_sg, 9091)}});
    api.patch("web", &Default::default(), &kube::api::Patch::Merge(patch)).await.expect("port change");
    eventually("9090 replaced by 9091 at the quota", Duration::from_secs(40), || async {
        let now = rules(&sandbox, &node_sg).await;
        (now.contains_key(&rule(9091)) && !now.contains_key(&rule(9090))).then_some(())
    })
    .await;
    assert_eq!(rules(&sandbox, &node_sg).await.len(), full, "still at the quota, one rule replaced");
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
    let warnings = warning_reasons(&kube, "demo", "web").await;
    assert!(warnings.contains(&"SecurityGroupRulesLimitExceeded".to_string()), "the wait was reported: {warnings:?}");
}
