//! Benchmark (run explicitly; prints figures, asserts nothing about speed):
//!   cargo test --release --test bench_latency -- --ignored --nocapture
//! EndpointSlice change → target registered (observed through DescribeTargetHealth, polled every
//! 10 ms, so figures include up to 10 ms of polling and moto's own latency), AWS calls per
//! scenario, and the agent's peak RSS. `BENCH_PACE_MS` (default 600) spaces the changes: each
//! change costs one Register and one Deregister call and the agent allows 4 such calls per second
//! (burst 20), so changes closer than 500 ms apart measure the rate limit, not the agent.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tgb_sandbox::Agent;

const CHANGES: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn endpoint_change_to_registration_latency() {
    let (sandbox, aws, kube) = world("bench", &[Ep::Ready("10.0.0.10")]).await;
    let arn = aws.ip_target_group_arn.clone();
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "10m"]).expect("agent");
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080"]).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;

    let pace = Duration::from_millis(std::env::var("BENCH_PACE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(600));
    let mut latencies = Vec::with_capacity(CHANGES);
    let calls_before = sandbox.aws_calls().await.expect("calls");
    for i in 0..CHANGES {
        // Each change replaces the second pod: one registration and one deregistration.
        let ip = format!("10.0.{}.{}", 2 + i / 200, 10 + i % 200);
        endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.10"), Ep::Ready(&ip)]).await;
        let started = Instant::now();
        let wanted = format!("{ip}:8080");
        loop {
            if tgb_sandbox::targets(&sandbox, &arn).await.expect("targets").contains_key(&wanted) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "change {i} never registered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        latencies.push(started.elapsed());
        tokio::time::sleep(pace.saturating_sub(started.elapsed())).await;
    }
    let calls_after = sandbox.aws_calls().await.expect("calls");
    println!(
        "EndpointSlice change → target registered, {} changes {pace:?} apart: {}",
        latencies.len(),
        percentiles(&mut latencies)
    );
    // DescribeTargetHealth is left out: the benchmark polls it too.
    println!("AWS calls during the run: {}", calls_since(&calls_after, &calls_before, &["DescribeTargetHealth"]));
    println!("agent peak RSS: {} KiB", agent.peak_rss_kib().unwrap_or(0));
}

/// AWS calls the agent makes per scenario, from the emulator's counters (the test reads targets
/// only through the emulator's own counters here, so every counted call is the agent's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn aws_calls_per_scenario() {
    let (sandbox, aws, kube) = world("calls", &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.0.11")]).await;
    let arn = aws.ip_target_group_arn.clone();
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "3s"]).expect("agent");
    let mut last = sandbox.aws_calls().await.expect("calls");
    let mut report = |name: &str, now: serde_json::Value| {
        let calls = calls_since(&now, &last, &[]);
        println!("{name}: {}", if calls.is_empty() { "no AWS call".to_string() } else { calls });
        last = now;
    };
    let settle = || tokio::time::sleep(Duration::from_millis(700));

    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
    settle().await;
    report("create a binding with 2 endpoints", sandbox.aws_calls().await.expect("calls"));
    endpoint_slice(
        &kube,
        "demo",
        "web",
        "web-a",
        "http",
        8080,
        &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.0.11"), Ep::Ready("10.0.0.12")],
    )
    .await;
    settle().await;
    report("scale up by one", sandbox.aws_calls().await.expect("calls"));
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.0.11")])
        .await;
    settle().await;
    report("scale down by one", sandbox.aws_calls().await.expect("calls"));
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.0.11")])
        .await;
    settle().await;
    report("an EndpointSlice update that changes nothing", sandbox.aws_calls().await.expect("calls"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    report("one drift check with nothing to repair (3 s interval)", sandbox.aws_calls().await.expect("calls"));
    delete_binding(&kube, "demo", "web").await;
    eventually("binding gone", Duration::from_secs(30), || async {
        get_binding(&kube, "demo", "web").await.is_none().then_some(())
    })
    .await;
    settle().await;
    report("delete the binding", sandbox.aws_calls().await.expect("calls"));
}

/// Node Ready flips → the instance target leaves/rejoins the group (observed through
/// DescribeTargetHealth polled every 10 ms), and the AWS calls of instance + security-group
/// scenarios.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn node_change_to_target_change_latency() {
    let (sandbox, aws, kube) = world("nodebench", &[]).await;
    let arn = aws.instance_target_group_arn.clone();
    let (a, b) = (&aws.instances[0], &aws.instances[1]);
    node(&kube, "node-a", &a.provider_id(), serde_json::json!({})).await;
    node(&kube, "node-b", &b.provider_id(), serde_json::json!({})).await;
    node_port_service(&kube, "web-np", "NodePort", 30080).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "10m", "--cluster-name", "nodebench"])
        .expect("agent");
    let calls_before = sandbox.aws_calls().await.expect("calls");
    binding(
        &kube,
        "demo",
        "np",
        serde_json::json!({"serviceRef": {"name": "web-np", "port": 80}, "targetGroupARN": arn, "targetType": "instance",
            "networking": {"ingress": [{"from": [{"securityGroup": {"groupID": aws.lb_security_group}}], "ports": [{"port": 30080}]}]}}),
    )
    .await;
    let (ta, tb) = (format!("{}:30080", a.id), format!("{}:30080", b.id));
    wait_for_targets(&sandbox, &arn, &[&ta, &tb]).await;
    wait_for_condition(&kube, "demo", "np", "True", "Reconciled").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls_created = sandbox.aws_calls().await.expect("calls");

    let mut latencies = Vec::new();
    for i in 0..60 {
        let (status, present) = if i % 2 == 0 { ("False", false) } else { ("True", true) };
        node_ready(&kube, "node-b", status).await;
        let started = Instant::now();
        loop {
            let now = active_targets(&sandbox, &arn).await;
            if now.contains(&tb) == present {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "flip {i} never applied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(600).saturating_sub(started.elapsed())).await;
    }
    println!("Node Ready flip → instance target change, {} flips: {}", latencies.len(), percentiles(&mut latencies));
    println!(
        "AWS calls, instance binding with one SG rule created on 2 nodes (DescribeTargetHealth left out: the benchmark polls it too): {}",
        calls_since(&calls_created, &calls_before, &["DescribeTargetHealth"])
    );
    println!(
        "AWS calls for the 60 flips: {}",
        calls_since(&sandbox.aws_calls().await.expect("calls"), &calls_created, &["DescribeTargetHealth"])
    );
}

/// p50, p90, p99 and max of `latencies`.
fn percentiles(latencies: &mut [Duration]) -> String {
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    format!("p50 {:?}, p90 {:?}, p99 {:?}, max {:?}", at(0.5), at(0.9), at(0.99), at(1.0))
}

/// "Op n, …" for every operation the emulator counted between two snapshots, except `skip`.
fn calls_since(after: &serde_json::Value, before: &serde_json::Value, skip: &[&str]) -> String {
    let mut parts = Vec::new();
    for (service, ops) in after.as_object().into_iter().flatten() {
        for (op, entry) in ops.as_object().into_iter().flatten() {
            let n = entry["total"].as_u64().unwrap_or(0) - before[service][op]["total"].as_u64().unwrap_or(0);
            if n > 0 && !skip.contains(&op.as_str()) {
                parts.push(format!("{op} {n}"));
            }
        }
    }
    parts.join(", ")
}
