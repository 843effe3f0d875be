//! End to end on the sandbox: two replicas with leader election.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tgb_sandbox::{Agent, AwsTap, TappedCall};

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

/// The lease of the fencing tests: renew deadline 4 s, renewals every 1 s, attempts cut at 1.33 s,
/// AWS operations bounded by 2 s.
const LEASE: Duration = Duration::from_secs(6);
const RENEW_DEADLINE: Duration = Duration::from_secs(4);
const FENCED: [&str; 5] = ["--drift-interval", "60s", "--leader-elect", "--lease-duration", "6s"];

/// A replica named `name` whose AWS calls pass through its own tap.
async fn replica(sandbox: &tgb_sandbox::Sandbox, name: &str) -> (Agent, AwsTap) {
    let tap = AwsTap::start(sandbox.aws_endpoint()).await.expect("AWS tap");
    let env = [("POD_NAME", name), ("AWS_ENDPOINT_URL", tap.endpoint())];
    let agent = Agent::start_with_env(AGENT.as_ref(), sandbox, &FENCED, &env).expect(name);
    (agent, tap)
}

/// Waits (at most 10 s) for the replica to exit.
async fn exit_of(agent: &mut Agent) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = agent.exited() {
            return status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still running:\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn offsets(calls: &[TappedCall], origin: Instant) -> Vec<String> {
    calls.iter().map(|c| format!("{} at +{:?}", c.action, c.at.saturating_duration_since(origin))).collect()
}

/// (a) The leader's lease renewals hang (its network to the API server stalls; the standby's
/// does not): it stops writing at its renew deadline and exits; the standby takes over and
/// converges. Endpoints change every 300 ms throughout, so the old leader always has work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_renewals_fence_the_leader_and_the_standby_takes_over() {
    let (sandbox, aws, kube) = world("hang", &[Ep::Ready("10.0.0.10")]).await;
    let arn = aws.ip_target_group_arn.clone();
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let (mut first, first_tap) = replica(&sandbox, "replica-a").await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080"]).await;
    let (second, second_tap) = replica(&sandbox, "replica-b").await;
    eventually("the second replica stands by", Duration::from_secs(10), || async {
        second.log().contains("standing by").then_some(())
    })
    .await;
    assert!(second_tap.calls().iter().all(|c| !c.is_write()), "a standby never writes");

    // From now on every lease update replica-a sends hangs for a minute.
    sandbox
        .kube_fault(
            serde_json::json!({"holdRequests": {"count": 1000, "seconds": 60, "pathContains": "/leases/tgb-agent",
            "verb": "update", "bodyContains": "\"holderIdentity\":\"replica-a\""}}),
        )
        .await
        .expect("hold replica-a's renewals");
    // Any renewal replica-a got confirmed reached the server before the fault was armed, so it
    // started before this instant: its renew deadline is at most RENEW_DEADLINE after it.
    let hung = Instant::now();
    let mut round = 0;
    let mut exited = None;
    let takeover = loop {
        round += 1;
        let ip = format!("10.0.1.{round}");
        endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready(&ip)]).await;
        if exited.is_none() && first.exited().is_some() {
            exited = Some(hung.elapsed());
        }
        if second.log().contains("leading") {
            break hung.elapsed();
        }
        assert!(hung.elapsed() < Duration::from_secs(30), "no takeover:\n{}", second.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.99")]).await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.99:8080"]).await;
    let converged = hung.elapsed();
    let status = exit_of(&mut first).await;

    let old = first_tap.writes_since(hung);
    println!(
        "old leader: {} writes after its renewals hung, the last {}; exit seen by +{:?} (polled every 300 ms)",
        old.len(),
        offsets(&old, hung).last().map_or("none", String::as_str),
        exited.unwrap_or_default()
    );
    println!("takeover {takeover:?} and convergence {converged:?} after the renewals hung (lease {LEASE:?})");
    assert!(!old.is_empty(), "the old leader kept working until its deadline");
    // The tap notes a write when its bytes pass, a little after the fence check (serializing and
    // signing in a debug build): 100 ms of that, no more, is allowed.
    let deadline = hung + RENEW_DEADLINE + Duration::from_millis(100);
    let late: Vec<_> = old.iter().filter(|c| c.at > deadline).cloned().collect();
    assert!(late.is_empty(), "writes after the renew deadline: {:?}", offsets(&late, hung));
    assert!(!status.success(), "a deposed leader exits with an error");
    assert!(first.log().contains("stepping down as leader"), "{}", first.log());
    assert!(!second_tap.writes_since(hung).is_empty(), "the new leader converged by writing");
}

/// (b) The leader is frozen (SIGSTOP) past its lease while the endpoints change; the standby
/// takes over and converges; the old leader wakes (SIGCONT) to a stale cache and a timer that
/// fired long ago, and sends no AWS write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_lease_writes_nothing_when_it_wakes() {
    let (sandbox, aws, kube) = world("frozen", &[Ep::Ready("10.0.0.10")]).await;
    let arn = aws.ip_target_group_arn.clone();
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let (mut first, first_tap) = replica(&sandbox, "replica-a").await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080"]).await;
    let (second, second_tap) = replica(&sandbox, "replica-b").await;
    eventually("the second replica stands by", Duration::from_secs(10), || async {
        second.log().contains("standing by").then_some(())
    })
    .await;

    first.pause().expect("SIGSTOP");
    let frozen = Instant::now();
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.11")]).await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.11:8080"]).await;
    println!("takeover and convergence {:?} after the leader froze (lease {LEASE:?})", frozen.elapsed());
    assert!(second.log().contains("leading"));
    // More changes while it sleeps: on waking its watches replay them, each one a reason to write.
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.12")]).await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.12:8080"]).await;

    let woke = Instant::now();
    first.resume().expect("SIGCONT");
    let status = exit_of(&mut first).await;
    println!("old leader exited {:?} after waking", woke.elapsed());
    // Its watches and timers have had their turn: give stray writes time to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stray = first_tap.writes_since(woke);
    assert!(stray.is_empty(), "writes after waking: {:?}", offsets(&stray, woke));
    assert!(!status.success());
    assert!(first.log().contains("stepping down as leader"), "{}", first.log());
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.13")]).await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.13:8080"]).await;
    assert!(!second_tap.writes_since(frozen).is_empty());
}

/// (c) A reconcile that hangs (the API server does not answer its finalizer patch for 10 s) fails `/healthz` once it has
/// run longer than `--reconcile-stuck-after`, and `/healthz` recovers when it finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_reconcile_fails_the_liveness_probe() {
    let (sandbox, aws, kube) = world("stuck", &[Ep::Ready("10.0.0.10")]).await;
    let arn = aws.ip_target_group_arn.clone();
    let agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s", "--reconcile-stuck-after", "2s"])
        .expect("agent");
    eventually("ready", Duration::from_secs(20), || async { (agent.health("/readyz").ok()?.0 == 200).then_some(()) })
        .await;
    assert_eq!(agent.health("/healthz").expect("healthz").0, 200, "idle is healthy");

    sandbox
        .kube_fault(
            serde_json::json!({"holdRequests": {"count": 1, "seconds": 10, "pathContains": "/targetgroupbindings/web",
            "verb": "patch", "bodyContains": tgb_agent::api::FINALIZER}}),
        )
        .await
        .expect("hold the agent's finalizer patch");
    let created = Instant::now();
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let why = eventually("/healthz fails", Duration::from_secs(9), || async {
        let (status, body) = agent.health("/healthz").ok()?;
        (status == 503).then_some(body)
    })
    .await;
    println!("/healthz failed {:?} after the reconcile started: {why}", created.elapsed());
    assert!(why.contains("demo/web"), "{why}");
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080"]).await;
    eventually("/healthz recovers", Duration::from_secs(10), || async {
        (agent.health("/healthz").ok()?.0 == 200).then_some(())
    })
    .await;
}
