//! End to end on the sandbox: with the write budget scarce (a write every 2 s), a terminating
//! endpoint's deregistration overtakes registrations already waiting, and a registration still
//! waiting when its Service's endpoints change is decided again instead of being sent stale.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tgb_sandbox::{Agent, AwsTap, TappedCall, create_ip_target_group};

/// New bindings whose registrations queue behind the budget of a write every 2 s.
const QUEUED: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deregistration_overtakes_waiting_registrations() {
    let (sandbox, aws, kube) = world("urgency", &[Ep::Ready("10.0.0.10")]).await;
    binding(&kube, "demo", "web", ip_binding(&aws.ip_target_group_arn)).await;
    let tap = AwsTap::start(sandbox.aws_endpoint()).await.expect("AWS tap");
    let env = [("AWS_ENDPOINT_URL", tap.endpoint())];
    let args = ["--drift-interval", "300s", "--aws-write-rate", "0.5:1"];
    let _agent = Agent::start_with_env(AGENT.as_ref(), &sandbox, &args, &env).expect("agent");
    wait_for_targets(&sandbox, &aws.ip_target_group_arn, &["10.0.0.10:8080"]).await;

    // QUEUED new Services, each bound to a group of its own: one registration each, 2 s apart.
    let mut groups = Vec::new();
    for i in 0..QUEUED {
        let (name, ip) = (format!("svc-{i}"), format!("10.0.2.{}", 10 + i));
        groups.push(create_ip_target_group(&sandbox, &aws, &format!("urgency-q{i}")).await.expect("target group"));
        service(&kube, "demo", &name, 80, "http", 8080).await;
        endpoint_slice(&kube, "demo", &name, &format!("{name}-a"), "http", 8080, &[Ep::Ready(&ip)]).await;
    }
    let created = Instant::now();
    for (i, arn) in groups.iter().enumerate() {
        let spec =
            json!({"serviceRef": {"name": format!("svc-{i}"), "port": 80}, "targetGroupARN": arn, "targetType": "ip"});
        binding(&kube, "demo", &format!("svc-{i}"), spec).await;
    }
    // Once the first of them is sent, the others wait for their turn.
    eventually("the first queued registration", Duration::from_secs(30), || async {
        (registrations(&tap.writes_since(created)) >= 1).then_some(())
    })
    .await;

    // A registration still waiting when its endpoints change is decided again: find a group not
    // fed yet (the last created: the least likely to be next in line) and give its Service a
    // second endpoint.
    let mut waiting = None;
    for (i, arn) in groups.iter().enumerate().rev() {
        if active_targets(&sandbox, arn).await.is_empty() {
            waiting = Some(i);
            break;
        }
    }
    let waiting = waiting.expect("a registration still waits at a write every 2 s");
    let (name, ip) = (format!("svc-{waiting}"), format!("10.0.2.{}", 10 + waiting));
    let endpoints = [Ep::Ready(&ip), Ep::Ready("10.0.3.99")];
    endpoint_slice(&kube, "demo", &name, &format!("{name}-a"), "http", 8080, &endpoints).await;

    // The first Service's pod starts terminating while registrations wait.
    let terminating = Instant::now();
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Terminating("10.0.0.10")]).await;
    wait_for_targets(&sandbox, &aws.ip_target_group_arn, &[]).await;

    for (i, arn) in groups.iter().enumerate() {
        let ip = format!("10.0.2.{}:8080", 10 + i);
        let expected: Vec<&str> = if i == waiting { vec![&ip, "10.0.3.99:8080"] } else { vec![&ip] };
        wait_for_targets(&sandbox, arn, &expected).await;
    }
    let after: Vec<String> = tap.writes_since(terminating).into_iter().map(|c| c.action).collect();
    let position = after.iter().position(|a| a == "DeregisterTargets").expect("the deregistration was sent");
    let later_registrations = after[position..].iter().filter(|a| *a == "RegisterTargets").count();
    println!("writes after the pod started terminating: {after:?}");
    // In arrival order it would go behind every registration already waiting.
    assert!(position <= 1, "the deregistration went out first (or right after a write already due): {after:?}");
    assert!(later_registrations >= 2, "registrations that waited went after it: {after:?}");
    // One registration per queued Service: the stale one was sent once, with both endpoints.
    let all: Vec<String> = tap.writes_since(created).into_iter().map(|c| c.action).collect();
    assert_eq!(registrations(&tap.writes_since(created)), QUEUED, "writes since the bindings were created: {all:?}");
}

fn registrations(calls: &[TappedCall]) -> usize {
    calls.iter().filter(|c| c.action == "RegisterTargets").count()
}
