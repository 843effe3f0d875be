//! End to end: two clusters (two API servers, two agents) feed one target group in one AWS account,
//! as in a blue/green migration. Blue churns its endpoints while half of the target calls fail (throttling, 500s
//! before and after the call took effect, slow answers) and is killed with SIGKILL every few rounds.
//! Then green's pods take over the addresses blue used, and blue's drift checks and the deletion of
//! blue's binding must never remove one of green's targets.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tgb_sandbox::{Agent, Sandbox};

fn addresses(prefix: &str, ns: impl IntoIterator<Item = u8>) -> Vec<String> {
    ns.into_iter().map(|n| format!("{prefix}.{n}")).collect()
}

async fn set_endpoints(kube: &kube::Client, ips: &[String]) {
    let eps: Vec<Ep<'_>> = ips.iter().map(|ip| Ep::Ready(ip.as_str())).collect();
    endpoint_slice(kube, "demo", "web", "web-a", "http", 8080, &eps).await;
}

fn with_port(ips: &[String]) -> BTreeSet<String> {
    ips.iter().map(|ip| format!("{ip}:8080")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_share_a_group_under_faults_crashes_and_address_reuse() {
    const ROUNDS: usize = 24;
    const KILL_EVERY: usize = 4;
    let blue_pool = addresses("10.0.1", 1..=8);
    let green_own = addresses("10.0.2", 1..=2);

    let (blue, aws, blue_kube) = world("share", &[]).await;
    let arn = aws.ip_target_group_arn.clone();
    let mut green = Sandbox::start().expect("green sandbox");
    green.share_aws_of(&blue);
    let green_kube = green.kube().await.expect("green kube");
    namespace(&green_kube, "demo").await;
    service(&green_kube, "demo", "web", 80, "http", 8080).await;
    set_endpoints(&green_kube, &green_own).await;
    let mut spec = ip_binding(&arn);
    spec["multiClusterTargetGroup"] = json!(true);
    binding(&blue_kube, "demo", "web", spec.clone()).await;
    binding(&green_kube, "demo", "web", spec).await;

    let blue_args = ["--drift-interval", "3s", "--cluster-name", "blue"];
    let _green_agent =
        Agent::start(AGENT.as_ref(), &green, &["--drift-interval", "3s", "--cluster-name", "green"]).expect("green");
    let mut blue_agent = Agent::start(AGENT.as_ref(), &blue, &blue_args).expect("blue");
    wait_for_targets(&blue, &arn, &["10.0.2.1:8080", "10.0.2.2:8080"]).await;

    // Blue churns under faults and crashes.
    blue.aws_faults(json!({"rate": 0.5, "seed": 11, "operations": ["RegisterTargets", "DeregisterTargets", "DescribeTargetHealth"]}))
        .await
        .expect("faults on");
    let mut rng = fastrand::Rng::with_seed(5);
    let mut kills = 0;
    for round in 1..=ROUNDS {
        let mut now: Vec<String> = blue_pool.iter().filter(|_| rng.bool()).cloned().collect();
        if now.is_empty() {
            now.push(blue_pool[round % blue_pool.len()].clone());
        }
        set_endpoints(&blue_kube, &now).await;
        tokio::time::sleep(Duration::from_millis(rng.u64(300..900))).await;
        if round % KILL_EVERY == 0 {
            blue_agent.kill();
            kills += 1;
            blue_agent = Agent::start(AGENT.as_ref(), &blue, &blue_args).expect("blue restarted");
        }
    }
    let injected = blue.aws_faults_injected().await.expect("fault counts")["injected"].clone();
    blue.aws_faults(json!({"rate": 0})).await.expect("faults off");

    // Blue settles on two addresses; green's targets were never touched. A target whose claim a lost
    // answer left uncertain stays while AWS reports it healthy (the emulator reports every target
    // healthy, pod or not, so here it stays: the model test covers its removal once unhealthy).
    let blue_final = addresses("10.0.1", 1..=2);
    set_endpoints(&blue_kube, &blue_final).await;
    let must: BTreeSet<String> = with_port(&blue_final).into_iter().chain(with_port(&green_own)).collect();
    // Settled: what blue needs is there and nothing changed through two drift checks (the VPC CNI
    // reuses an address only after a cooldown, by when blue has done what it can).
    let mut settled = BTreeSet::new();
    let mut stable_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let active = active_targets(&blue, &arn).await;
        if active != settled || !must.is_subset(&active) {
            settled = active;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_secs(7) {
            break;
        }
        assert!(Instant::now() < deadline, "blue never settled: {settled:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let uncertain_left: Vec<&String> = settled.difference(&must).collect();

    // Green's pods get the addresses blue used before: the VPC CNI recycles addresses.
    let recycled = addresses("10.0.1", 3..=8);
    let green_all: Vec<String> = green_own.iter().chain(&recycled).cloned().collect();
    set_endpoints(&green_kube, &green_all).await;
    let greens = with_port(&green_all);
    let mut expected: Vec<String> = greens.iter().cloned().chain(with_port(&blue_final)).collect();
    expected.sort();
    let expected_refs: Vec<&str> = expected.iter().map(String::as_str).collect();
    wait_for_targets(&blue, &arn, &expected_refs).await;

    // Several of blue's drift checks, then the deletion of blue's binding: green's targets stay,
    // watched all along.
    let mut wrong = 0;
    let watch = |wrong: &mut usize, active: &BTreeSet<String>| {
        let missing: Vec<&String> = greens.difference(active).collect();
        if !missing.is_empty() {
            *wrong += missing.len();
            eprintln!("green targets missing: {missing:?}");
        }
    };
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        watch(&mut wrong, &active_targets(&blue, &arn).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    delete_binding(&blue_kube, "demo", "web").await;
    // Targets under blue's uncertain claims that still serve (green's, on recycled addresses) are
    // let go of only after the group's health lag (30 s interval x 2 + 5 s timeout + 30 s for a
    // pod to exit, with moto's defaults): the deletion waits that out.
    let until = Instant::now() + Duration::from_secs(180);
    loop {
        let active = active_targets(&blue, &arn).await;
        watch(&mut wrong, &active);
        let gone = get_binding(&blue_kube, "demo", "web").await.is_none();
        if gone && active == greens {
            break;
        }
        assert!(Instant::now() < until, "blue's deletion did not converge: {active:?}\n{}", blue_agent.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{ROUNDS} rounds, {kills} kills, faults injected {injected}, blue targets left in place on uncertain claims: \
         {uncertain_left:?}, green targets wrongly missing: {wrong}"
    );
    assert_eq!(wrong, 0, "the other cluster's targets were deregistered");
    assert!(injected.as_object().is_some_and(|kinds| !kinds.is_empty()), "faults were injected: {injected}");
}
