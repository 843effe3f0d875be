//! End to end: the Helm chart (charts/tgb-agent) on the sandbox's real control plane. `helm install`
//! creates the CRD from the chart's crds/ and the release's objects, whose pods pass the
//! `restricted` Pod Security admission and run on the simulated nodes (no containers); the agent
//! binary, started with the installed Deployment's own arguments and a token of the chart's
//! ServiceAccount, registers a binding's targets, so the chart's RBAC is enough (the real RBAC
//! authorizer decides), and its pod webhook (reached by URL: the agent runs outside the cluster
//! here) injects the readiness gate into a pod of a labelled namespace; `helm upgrade` changes the
//! Deployment; `helm uninstall` removes the release and keeps the CRD, and with it the bindings.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tgb_sandbox::{Agent, Sandbox, repo_root};

const CRD_NAME: &str = "targetgroupbindings.elbv2.k8s.aws";
/// Not deploy/'s `tgb-system`: the sandbox installs deploy/'s ServiceAccount and RBAC there (and
/// the cluster-scoped `tgb-agent` roles), and Helm refuses to take over objects it did not create.
const NS: &str = "tgb-helm";
const RELEASE: &str = "edge";
/// `<release>-<chart>`: every object of the release is named so.
const NAME: &str = "edge-tgb-agent";
const CLUSTER: &str = "helm-e2e";

/// helm from scripts/install-helm (pinned in tests/helm; a no-op once built, minutes when cold).
fn helm_binary() -> PathBuf {
    let out = Command::new(repo_root().join("scripts/install-helm")).output().expect("scripts/install-helm");
    assert!(out.status.success(), "scripts/install-helm failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let dir = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_owned();
    Path::new(&dir).join("helm")
}

/// Runs `command`, bounded in time; panics naming `what` if it does not finish.
async fn run(command: Command, what: &str) -> Output {
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true).stdin(std::process::Stdio::null());
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 120 s"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

async fn ok(command: Command, what: &str) -> String {
    let out = run(command, what).await;
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Helm<'a> {
    binary: PathBuf,
    sandbox: &'a Sandbox,
}

impl Helm<'_> {
    /// `helm ARGS` against the sandbox as its admin, with helm's own files in the sandbox directory.
    fn command(&self, args: &[&str]) -> Command {
        let home = self.sandbox.dir().join("helm-home");
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .envs(self.sandbox.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KUBECONFIG", self.sandbox.dir().join("kubeconfig"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        command
    }

    async fn ok(&self, args: &[&str]) -> String {
        ok(self.command(args), &format!("helm {}", args.join(" "))).await
    }
}

fn kubectl(sandbox: &Sandbox, args: &[&str]) -> Command {
    let mut command = sandbox.kubectl();
    command.env("KUBECACHEDIR", sandbox.dir().join("kubectl-cache")).args(args);
    command
}

/// `kubectl get` of the release's namespaced objects, by the label Helm's release sets on them.
fn release_objects(sandbox: &Sandbox) -> Command {
    let kinds = "deployment,serviceaccount,role,rolebinding,poddisruptionbudget";
    kubectl(sandbox, &["get", "-n", NS, kinds, "-l", &format!("app.kubernetes.io/instance={RELEASE}"), "-o", "name"])
}

/// A kubeconfig straight to the sandbox's API server (its URL and CA from DIR/kubeconfig) that
/// authenticates with `token`.
fn kubeconfig_with_token(sandbox: &Sandbox, token: &str) -> PathBuf {
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(sandbox.dir().join("kubeconfig")).expect("DIR/kubeconfig"))
            .expect("kubeconfig YAML");
    let cluster = &admin["clusters"][0]["cluster"];
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {
            "server": cluster["server"].as_str().expect("server"),
            "certificate-authority-data": cluster["certificate-authority-data"].as_str().expect("CA"),
        }}],
        "users": [{"name": NAME, "user": {"token": token}}],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": NAME, "namespace": NS}}],
        "current-context": "sandbox",
    });
    let path = sandbox.dir().join("helm-agent-kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).expect("kubeconfig")).expect("write kubeconfig");
    path
}

/// The installed pod's command line, as the kubelet would expand it: `$(VAR)` from the container's
/// env values, and without `run`. The listen addresses are left to [`Agent`] (loopback ports of
/// its own, as every e2e agent has).
fn installed_args(deployment: &Deployment) -> Vec<String> {
    let pod = deployment.spec.template.spec.as_ref().expect("pod spec");
    let container = &pod.containers[0];
    let env: Vec<(String, String)> =
        container.env.iter().flatten().filter_map(|e| Some((e.name.clone(), e.value.clone()?))).collect();
    let args = container.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    args.into_iter()
        .skip(1)
        .filter(|a| !["--metrics-addr", "--health-addr", "--webhook-addr"].iter().any(|flag| a.starts_with(flag)))
        .map(|a| env.iter().fold(a, |a, (k, v)| a.replace(&format!("$({k})"), v)))
        .collect()
}

fn env_value(deployment: &Deployment, name: &str) -> Option<String> {
    let pod = deployment.spec.template.spec.as_ref()?;
    pod.containers[0].env.iter().flatten().find(|e| e.name == name)?.value.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_uninstall() {
    let binary = helm_binary();
    let started = Instant::now();
    let (sandbox, aws, kube) = world("helm", &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.1.11")]).await;
    let arn = aws.ip_target_group_arn.clone();
    let helm = Helm { binary, sandbox: &sandbox };
    let chart = repo_root().join("charts/tgb-agent");
    let chart = chart.to_str().expect("chart path");
    let crds: Api<CustomResourceDefinition> = Api::all(kube.clone());
    let deployments: Api<Deployment> = Api::namespaced(kube.clone(), NS);

    // scripts/sandbox applies crds/ itself. Helm creates the chart's crds/ only where the CRD is
    // missing (an existing one, the sandbox's or the reference controller's, is left as it is and
    // never upgraded), so to see the chart install it, start from a cluster without it. Deleted only
    // once its storage is serving: the API server's CRD finalizer otherwise backs off for long.
    eventually("the sandbox CRD's watch cache ready", Duration::from_secs(60), || async {
        let out = run(
            kubectl(&sandbox, &["get", "--raw", "/apis/elbv2.k8s.aws/v1beta1/targetgroupbindings?resourceVersion=0"]),
            "kubectl get --raw",
        )
        .await;
        out.status.success().then_some(())
    })
    .await;
    ok(kubectl(&sandbox, &["delete", "crd", CRD_NAME, "--wait=true"]), "kubectl delete crd").await;
    eventually("the sandbox's CRD gone", Duration::from_secs(30), || async {
        crds.get_opt(CRD_NAME).await.expect("get crd").is_none().then_some(())
    })
    .await;

    // The release namespace enforces the `restricted` Pod Security Standard, as deploy/'s does.
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}}}))
    .expect("namespace");
    Api::<Namespace>::all(kube.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");

    // Install. No --wait: the Deployment's rollout is checked below.
    let webhook_port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let webhook_url = format!("webhookConfig.url=https://127.0.0.1:{webhook_port}");
    helm.ok(&["install", RELEASE, chart, "-n", NS, "--set", &format!("clusterName={CLUSTER}"), "--set", &webhook_url])
        .await;
    let crd = crds.get(CRD_NAME).await.expect("the chart installed the CRD");
    // Created from crds/, outside the release: no release owns it, so no uninstall deletes it.
    let annotations = crd.metadata.annotations.unwrap_or_default();
    assert!(!annotations.contains_key("meta.helm.sh/release-name"), "{annotations:?}");
    ok(
        kubectl(&sandbox, &["wait", "--for=condition=Established", &format!("crd/{CRD_NAME}"), "--timeout=30s"]),
        "kubectl wait crd",
    )
    .await;
    for object in ["serviceaccount", "role", "rolebinding", "deployment", "poddisruptionbudget"] {
        ok(kubectl(&sandbox, &["get", "-n", NS, object, NAME]), &format!("kubectl get {object}")).await;
    }
    for object in ["clusterrole", "clusterrolebinding"] {
        ok(kubectl(&sandbox, &["get", object, NAME]), &format!("kubectl get {object}")).await;
    }
    let names = ok(release_objects(&sandbox), "kubectl get").await;
    assert_eq!(names.lines().count(), 5, "{names}");
    let listed = helm.ok(&["list", "-n", NS, "-o", "json"]).await;
    let releases: serde_json::Value = serde_json::from_str(&listed).expect("helm list JSON");
    assert_eq!(releases[0]["name"], RELEASE, "{releases}");
    assert_eq!(releases[0]["status"], "deployed", "{releases}");
    // Both replicas admitted under `restricted`, scheduled and Ready on the simulated nodes.
    eventually("the release's 2 replicas Ready", Duration::from_secs(30), || async {
        let d = deployments.get(NAME).await.ok()?;
        (d.status?.ready_replicas == Some(2)).then_some(())
    })
    .await;

    // The agent as the installed pod runs it: the Deployment's arguments and environment, and a
    // token of the chart's ServiceAccount, so only the chart's roles apply.
    let deployment = deployments.get(NAME).await.expect("deployment");
    let args = installed_args(&deployment);
    assert!(
        args.contains(&format!("--cluster-name={CLUSTER}")) && args.contains(&"--leader-elect".to_owned()),
        "{args:?}"
    );
    let token =
        ok(kubectl(&sandbox, &["create", "token", NAME, "-n", NS, "--duration=1h"]), "kubectl create token").await;
    let kubeconfig = kubeconfig_with_token(&sandbox, token.trim());
    // That token is the ServiceAccount, not the sandbox's admin: no Secrets for it.
    let mut secrets = kubectl(&sandbox, &["get", "secrets", "-n", NS]);
    secrets.env("KUBECONFIG", &kubeconfig);
    let refused = run(secrets, "kubectl get secrets as the ServiceAccount").await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("forbidden"), "{stderr}");

    let mut spec = ip_binding(&arn);
    spec["multiClusterTargetGroup"] = json!(true); // ownership records: ConfigMaps in the release namespace
    binding(&kube, "demo", "web", spec).await;
    let webhook_addr = format!("127.0.0.1:{webhook_port}");
    let args: Vec<&str> = args.iter().map(String::as_str).chain(["--webhook-addr", &webhook_addr]).collect();
    let kubeconfig = kubeconfig.to_str().expect("path");
    let pod_name = format!("{NAME}-by-hand");
    let mut agent = Agent::start_with_env(
        AGENT.as_ref(),
        &sandbox,
        &args,
        &[("KUBECONFIG", kubeconfig), ("POD_NAMESPACE", NS), ("POD_NAME", &pod_name)],
    )
    .expect("agent");
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080", "10.0.1.11:8080"]).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
    let lease = Api::<Lease>::namespaced(kube.clone(), NS).get("tgb-agent").await.expect("the agent's Lease");
    assert_eq!(lease.spec.and_then(|s| s.holder_identity), Some(pod_name.clone()));
    let records: Vec<String> = Api::<ConfigMap>::namespaced(kube.clone(), NS)
        .list(&Default::default())
        .await
        .expect("configmaps")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert!(records.iter().any(|n| n.starts_with("tgb-owned-")), "{records:?}");
    // The pod webhook's certificate: kept in the chart's Secret, its CA patched into the chart's
    // webhook configuration, by the agent under the chart's RBAC.
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(kube.clone());
    let webhook = format!("{NAME}-webhook");
    let ca_bundle = eventually("the webhook's CA bundle patched", Duration::from_secs(30), || async {
        let configuration = configurations.get(&webhook).await.ok()?;
        configuration.webhooks?.first()?.client_config.ca_bundle.clone().filter(|b| !b.0.is_empty())
    })
    .await;
    let secret =
        Api::<Secret>::namespaced(kube.clone(), NS).get(&format!("{webhook}-tls")).await.expect("webhook Secret");
    assert_eq!(secret.data.as_ref().and_then(|d| d.get("ca.crt")), Some(&ca_bundle));
    // A pod created in a namespace labelled for injection gets its binding's gate.
    let label = json!({"metadata": {"labels": {"elbv2.k8s.aws/pod-readiness-gate-inject": "enabled"}}});
    Api::<Namespace>::all(kube.clone())
        .patch("demo", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&label))
        .await
        .expect("label namespace");
    eventually("the agent ready (webhook serving)", Duration::from_secs(30), || async {
        (agent.health("/readyz").ok()?.0 == 200).then_some(())
    })
    .await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-injected", "labels": {"app": "web"}},
        "spec": {"nodeName": "hand-written-status", "containers": [{"name": "app", "image": "app"}]}
    }))
    .expect("pod");
    let created = Api::<Pod>::namespaced(kube.clone(), "demo").create(&PostParams::default(), &pod).await.expect("pod");
    let gates: Vec<String> =
        created.spec.and_then(|s| s.readiness_gates).into_iter().flatten().map(|g| g.condition_type).collect();
    assert_eq!(gates, ["target-health.elbv2.k8s.aws/web"], "the chart's webhook did not inject the gate");
    let log = agent.log();
    assert!(!log.to_lowercase().contains("forbidden"), "the chart's RBAC refused something:\n{log}");
    let status = agent.terminate().expect("terminate");
    assert!(status.success(), "graceful shutdown exits 0, got {status:?}");

    // Upgrade with changed values: the Deployment follows.
    let changed = ["--set", "replicaCount=1", "--set", "logFormat=text"];
    helm.ok(&[&["upgrade", RELEASE, chart, "-n", NS, "--reuse-values"][..], &changed].concat()).await;
    let deployment = deployments.get(NAME).await.expect("deployment");
    assert_eq!(deployment.spec.replicas, Some(1));
    assert_eq!(env_value(&deployment, "LOG_FORMAT").as_deref(), Some("text"));
    assert_eq!(env_value(&deployment, "CLUSTER_NAME").as_deref(), Some(CLUSTER), "--reuse-values keeps clusterName");
    eventually("the upgrade rolled out to 1 replica", Duration::from_secs(30), || async {
        let s = deployments.get(NAME).await.ok()?.status?;
        (s.replicas == Some(1) && s.updated_replicas == Some(1) && s.ready_replicas == Some(1)).then_some(())
    })
    .await;
    let kept = configurations.get(&webhook).await.expect("webhook configuration").webhooks.expect("webhooks");
    assert_eq!(kept[0].client_config.ca_bundle.as_ref(), Some(&ca_bundle), "helm upgrade dropped the CA bundle");
    let history = helm.ok(&["history", RELEASE, "-n", NS, "-o", "json"]).await;
    let history: serde_json::Value = serde_json::from_str(&history).expect("helm history JSON");
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");

    // Uninstall: the release's objects go, the CRD and the binding stay.
    helm.ok(&["uninstall", RELEASE, "-n", NS, "--wait"]).await;
    eventually("the release's objects gone", Duration::from_secs(30), || async {
        let out = run(release_objects(&sandbox), "kubectl get").await;
        (out.status.success() && out.stdout.is_empty()).then_some(())
    })
    .await;
    for object in ["clusterrole", "clusterrolebinding"] {
        let out = run(kubectl(&sandbox, &["get", object, NAME]), "kubectl get").await;
        assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"), "{object} {NAME} survived the uninstall");
    }
    assert!(crds.get_opt(CRD_NAME).await.expect("get crd").is_some(), "helm uninstall deleted the CRD");
    // The certificate Secret is owned by the webhook configuration: the garbage collector takes it.
    eventually("the webhook's Secret collected with its configuration", Duration::from_secs(30), || async {
        let secrets = Api::<Secret>::namespaced(kube.clone(), NS);
        secrets.get_opt(&format!("{webhook}-tls")).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(get_binding(&kube, "demo", "web").await.is_some(), "the binding went with the release");
    eprintln!("e2e_helm: {:.1} s from sandbox start to uninstall", started.elapsed().as_secs_f64());
}
