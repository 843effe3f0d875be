//! End to end: the agent run by hand (the README's usage line, no flags) against a cluster where
//! deploy/ is installed takes its own namespace and its cluster name from the install.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tgb_sandbox::repo_root;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_by_hand_against_an_installed_cluster_needs_no_flags() {
    let (sandbox, aws, kube) = world("byhand", &[Ep::Ready("10.0.0.10")]).await;
    let arn = aws.ip_target_group_arn.clone();
    let mut spec = ip_binding(&arn);
    spec["multiClusterTargetGroup"] = serde_json::json!(true);
    binding(&kube, "demo", "web", spec).await;

    // Install deploy/ as an operator would, through an overlay that names the cluster.
    let overlay = sandbox.dir().join("overlay");
    std::fs::create_dir_all(&overlay).expect("overlay dir");
    // kustomize takes a base only by a relative path.
    let up = "../".repeat(overlay.components().count().saturating_sub(1));
    let deploy = repo_root().join("deploy");
    let base = format!("{up}{}", deploy.strip_prefix("/").unwrap_or(&deploy).display());
    let kustomization = format!(
        "resources:\n  - {base}\nconfigMapGenerator:\n  - name: tgb-agent-settings\n    behavior: merge\n    literals:\n      - CLUSTER_NAME=prod-by-hand\n"
    );
    std::fs::write(overlay.join("kustomization.yaml"), kustomization).expect("overlay");
    let kubeconfig = sandbox.dir().join("kubeconfig");
    let rendered = sandbox.kubectl().args(["kustomize"]).arg(&overlay).output().expect("kubectl kustomize");
    assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
    let mut apply = sandbox
        .kubectl()
        .args(["apply", "-f", "-"])
        .env("KUBECONFIG", &kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl apply");
    use std::io::Write;
    apply.stdin.take().expect("stdin").write_all(&rendered.stdout).expect("manifests");
    let applied = apply.wait_with_output().expect("kubectl apply");
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));

    // The README's usage, with nothing but the cluster's kubeconfig and AWS settings.
    let log = sandbox.dir().join("by-hand.log");
    let mut agent = Command::new(AGENT)
        .args(["run", "--metrics-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0", "--webhook-addr", "127.0.0.1:0"])
        .envs(sandbox.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("TGB_CLUSTER_NAME")
        .env_remove("POD_NAMESPACE")
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("tgb-agent run");
    let outcome =
        tokio::time::timeout(Duration::from_secs(30), wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080"])).await;
    let _ = agent.kill();
    let _ = agent.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(outcome.is_ok(), "the agent run by hand did not register:\n{text}");
    assert!(text.contains("cluster=prod-by-hand") && text.contains("namespace=tgb-system"), "{text}");
    // Its ownership record is in the install's namespace, where the installed agent keeps it.
    let records: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(kube.clone(), "tgb-system");
    let names: Vec<String> = records
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert!(names.iter().any(|n| n.starts_with("tgb-owned-")), "{names:?}");
}
