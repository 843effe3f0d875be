//! End to end: readiness-gate injection, called by the real kube-apiserver at pod creation. A
//! Deployment that declares no gate, in a namespace labelled for injection, gets the gate of its
//! binding; its pods register and turn Ready only once AWS reports them healthy. Unlabelled
//! namespaces and the agent's own pods are left alone, a second replica serves the same
//! certificate without rewriting it, and with no replica up pods are still created (Ignore).
//! Prints pod-create latency through the webhook against the same without it.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde::Deserialize as _;
use serde_json::json;
use tgb_sandbox::{Agent, Sandbox, repo_root, targets};

const GATE: &str = "target-health.elbv2.k8s.aws/web";
const INJECT: &str = "elbv2.k8s.aws/pod-readiness-gate-inject";

async fn labelled_namespace(kube: &Client, name: &str, labels: serde_json::Value) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).expect("ns");
    Api::<Namespace>::all(kube.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
}

/// Deployment `web` (pods labelled `app: web`, no readiness gate) in `ns`.
async fn deployment(kube: &Client, ns: &str, replicas: i32) {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}]}]}
            }
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(kube.clone(), ns).create(&PostParams::default(), &deployment).await.expect("create");
}

fn bare_pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": "hand-written-status", "containers": [{"name": "app", "image": "app"}]}
    }))
    .expect("pod")
}

fn gates(pod: &Pod) -> Vec<String> {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.readiness_gates.as_ref()).into_iter().flatten().map(|g| g.condition_type.clone()).collect()
}

async fn pods(kube: &Client, ns: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(kube.clone(), ns);
    api.list(&ListParams::default().labels("app=web")).await.expect("list pods").items
}

/// deploy/'s webhook configuration, reaching the agent by URL: the agent runs outside the cluster
/// here, so no Service can route to it.
async fn install_webhook_configuration(kube: &Client, webhook_addr: &str) {
    let text = std::fs::read_to_string(repo_root().join("deploy/webhook.yaml")).expect("deploy/webhook.yaml");
    let mut configuration = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("YAML"))
        .map(|doc| serde_json::to_value(doc).expect("JSON"))
        .find(|doc| doc["kind"] == "MutatingWebhookConfiguration")
        .expect("a MutatingWebhookConfiguration in deploy/webhook.yaml");
    for webhook in configuration["webhooks"].as_array_mut().expect("webhooks") {
        webhook["clientConfig"] = json!({"url": format!("https://{webhook_addr}/mutate-v1-pod")});
    }
    let configuration: MutatingWebhookConfiguration = serde_json::from_value(configuration).expect("configuration");
    Api::<MutatingWebhookConfiguration>::all(kube.clone())
        .create(&PostParams::default(), &configuration)
        .await
        .expect("create webhook configuration");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// `n` dry-run pod creates in `ns` (admission runs, nothing is stored): the latencies, sorted.
async fn dry_run_creates(kube: &Client, ns: &str, n: usize) -> Vec<Duration> {
    let api: Api<Pod> = Api::namespaced(kube.clone(), ns);
    let params = PostParams { dry_run: true, ..PostParams::default() };
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let pod = bare_pod(&format!("dry-{i}"), json!({"app": "web"}));
        let started = Instant::now();
        api.create(&params, &pod).await.expect("dry-run create");
        took.push(started.elapsed());
    }
    took.sort();
    took
}

async fn ready(agent: &Agent) {
    eventually("the agent ready (webhook serving)", Duration::from_secs(30), || async {
        (agent.health("/readyz").ok()?.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_gates_hold_pods_until_aws_reports_them_healthy() {
    let sandbox = Sandbox::start().expect("sandbox");
    let aws = tgb_sandbox::seed_aws(&sandbox, "webhook", 1).await.expect("fixture");
    let arn = aws.ip_target_group_arn.clone();
    let kube = sandbox.kube().await.expect("kube");
    labelled_namespace(&kube, "demo", json!({INJECT: "enabled"})).await;
    namespace(&kube, "plain").await;
    for ns in ["demo", "plain"] {
        service(&kube, ns, "web", 80, "http", 8080).await;
        binding(&kube, ns, "web", ip_binding(&arn)).await;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let webhook_addr = format!("127.0.0.1:{port}");
    install_webhook_configuration(&kube, &webhook_addr).await;
    let mut agent = Agent::start(
        AGENT.as_ref(),
        &sandbox,
        &["--drift-interval", "60s", "--webhook-addr", &webhook_addr, "--webhook-hosts", "127.0.0.1"],
    )
    .expect("agent");
    ready(&agent).await;
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(kube.clone());
    eventually("the CA bundle patched into the webhook configuration", Duration::from_secs(30), || async {
        let webhooks = configurations.get("tgb-agent-webhook").await.ok()?.webhooks?;
        webhooks.iter().all(|w| w.client_config.ca_bundle.is_some()).then_some(())
    })
    .await;

    // A Deployment that declares no gate: the webhook adds its binding's.
    deployment(&kube, "demo", 2).await;
    let created = eventually("2 pods created", Duration::from_secs(30), || async {
        let list = pods(&kube, "demo").await;
        (list.len() == 2).then_some(list)
    })
    .await;
    for pod in &created {
        assert_eq!(gates(pod), [GATE], "{:?}", pod.metadata.name);
    }
    // Watch AWS and the pods: no pod turns Ready before AWS reports its target healthy.
    let mut healthy: BTreeMap<String, Instant> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        for (target, state) in targets(&sandbox, &arn).await.expect("targets") {
            if state == "healthy" {
                healthy.entry(target.trim_end_matches(":8080").to_owned()).or_insert_with(Instant::now);
            }
        }
        let mut ready_ips = Vec::new();
        for pod in pods(&kube, "demo").await {
            let status = pod.status.unwrap_or_default();
            let is_ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
            if let (true, Some(ip)) = (is_ready, status.pod_ip) {
                assert!(healthy.contains_key(&ip), "pod {ip} turned Ready before AWS reported it healthy");
                ready_ips.push(ip);
            }
        }
        if ready_ips.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "Ready pods: {ready_ips:?}; healthy targets: {healthy:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Unlabelled namespace, and the agent's own pods in a labelled one: untouched.
    deployment(&kube, "plain", 1).await;
    let plain = eventually("the unlabelled namespace's pod", Duration::from_secs(30), || async {
        pods(&kube, "plain").await.into_iter().next()
    })
    .await;
    assert!(gates(&plain).is_empty(), "{:?}", gates(&plain));
    let agent_pod = bare_pod("tgb-agent-x", json!({"app": "web", "app.kubernetes.io/name": "tgb-agent"}));
    let own = Api::<Pod>::namespaced(kube.clone(), "demo").create(&PostParams::default(), &agent_pod).await;
    assert!(gates(&own.expect("agent pod")).is_empty(), "the agent's own pods are never gated");

    // Admission latency: pod creates through the webhook against the same in the unlabelled namespace.
    let with = dry_run_creates(&kube, "demo", 300).await;
    let without = dry_run_creates(&kube, "plain", 300).await;
    println!(
        "pod create (dry run) through the webhook: p50 {:?}, p99 {:?}; without it: p50 {:?}, p99 {:?} (300 each)",
        percentile(&with, 0.5),
        percentile(&with, 0.99),
        percentile(&without, 0.5),
        percentile(&without, 0.99)
    );
    let metrics = agent.metrics().expect("metrics");
    for line in metrics.lines().filter(|l| l.starts_with("tgb_webhook_admission")) {
        println!("{line}");
    }

    // A second replica (a standby) reads the same Secret and serves without rewriting it.
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), "tgb-system");
    let version = secrets.get("tgb-agent-webhook-tls").await.expect("secret").metadata.resource_version;
    let second = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s", "--webhook-hosts", "127.0.0.1"])
        .expect("second agent");
    ready(&second).await;
    let again = secrets.get("tgb-agent-webhook-tls").await.expect("secret").metadata.resource_version;
    assert_eq!(again, version, "a second replica rewrote the shared certificate");

    // No replica at the configured address: pods are still created (failurePolicy Ignore).
    agent.kill();
    let started = Instant::now();
    let created = Api::<Pod>::namespaced(kube.clone(), "demo")
        .create(&PostParams::default(), &bare_pod("while-down", json!({"app": "web"})))
        .await
        .expect("a pod is created while the webhook is down");
    assert!(gates(&created).is_empty());
    println!("pod create with the webhook down: {:?}", started.elapsed());
}
