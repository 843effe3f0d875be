//! End to end on the sandbox: two replicas with leader election.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tgb_sandbox::Agent;

const ELECT: [&str; 5] = ["--drift-interval", "60s", "--leader-elect", "--lease-duration", "3s"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_a_standby_takes_over() {
    let (sandbox, aws, kube) = world("leader", &[Ep::Ready("10.0.0.10")]).await;
    let arn = aws.ip_target_group_arn.clone();
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let mut first = Agent::start(AGENT.as_ref(), &sandbox, &ELECT).expect("first replica");
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080"]).await;
    let mut second = Agent::start(AGENT.as_ref(), &sandbox, &ELECT).expect("second replica");
    eventually("the second replica stands by", Duration::from_secs(10), || async {
        second.log().contains("standing by").then_some(())
    })
    .await;

    // The leader crashes: the standby takes over once the lease runs out, and follows changes.
    first.kill();
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.11")]).await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.11:8080"]).await;
    assert!(second.log().contains("leading"), "{}", second.log());
    assert!(!first.log().contains("10.0.0.11"), "the crashed leader never saw the change");

    // A graceful stop hands the lease over at once, well before it would run out.
    let third = Agent::start(AGENT.as_ref(), &sandbox, &ELECT).expect("third replica");
    eventually("the third replica stands by", Duration::from_secs(10), || async {
        third.log().contains("standing by").then_some(())
    })
    .await;
    let stopped = Instant::now();
    assert!(second.terminate().expect("terminate").success());
    eventually("the third replica leads", Duration::from_secs(10), || async {
        third.log().contains("leading").then_some(())
    })
    .await;
    println!("takeover after a graceful stop: {:?}", stopped.elapsed());
    assert!(stopped.elapsed() < Duration::from_secs(3), "took {:?}", stopped.elapsed());
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.12")]).await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.12:8080"]).await;
}
