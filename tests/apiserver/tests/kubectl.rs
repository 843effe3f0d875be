//! The double as kubectl sees it (with default client-side settings: no `--validate=false`).

mod common;

use std::time::Duration;

use common::Kubectl;
use tokio::io::{AsyncBufReadExt, BufReader};

fn fixture(name: &str) -> String {
    common::fixture(name).display().to_string()
}

async fn install_widgets(kubectl: &Kubectl) {
    let out = kubectl.ok(&["apply", "-f", &fixture("widgets-crd.yaml")]).await;
    assert!(out.contains("customresourcedefinition.apiextensions.k8s.io/widgets.example.test created"), "{out}");
}

#[tokio::test]
async fn apply_get_patch_delete_custom_resources() {
    let server = common::start().await;
    let kubectl = Kubectl::new(&server);
    install_widgets(&kubectl).await;

    let out = kubectl.ok(&["apply", "-f", &fixture("widget.yaml")]).await;
    assert!(out.contains("widget.example.test/w1 created"), "{out}");
    let out = kubectl.ok(&["apply", "-f", &fixture("widget.yaml")]).await;
    assert!(out.contains("widget.example.test/w1 unchanged"), "{out}");

    let yaml = kubectl.ok(&["get", "widget", "w1", "-o", "yaml"]).await;
    assert!(yaml.contains("mode: ip") && yaml.contains("generation: 1") && yaml.contains("uid: "), "{yaml}");

    let out = kubectl.ok(&["patch", "wg", "w1", "--type", "merge", "-p", r#"{"spec":{"mode":"instance"}}"#]).await;
    assert!(out.contains("widget.example.test/w1 patched"), "{out}");
    let out = kubectl
        .ok(&[
            "patch",
            "wg",
            "w1",
            "--subresource",
            "status",
            "--type",
            "merge",
            "-p",
            r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
        ])
        .await;
    assert!(out.contains("patched"), "{out}");

    // Printer columns, evaluated server-side.
    let table = kubectl.ok(&["get", "widgets"]).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, vec!["NAME", "MODE", "PORT", "READY", "AGE"], "{table}");
    let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(&row[..4], &["w1", "instance", "80", "True"], "{table}");

    let out = kubectl.ok(&["delete", "widget", "w1"]).await;
    assert!(out.contains("widget.example.test \"w1\" deleted"), "{out}");
    let out = kubectl.run(&["get", "widget", "w1"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"), "{out:?}");
}

#[tokio::test]
async fn apply_rejects_invalid_custom_resources() {
    let server = common::start().await;
    let kubectl = Kubectl::new(&server);
    install_widgets(&kubectl).await;
    let manifest = std::fs::read_to_string(common::fixture("widget.yaml")).unwrap().replace("mode: ip", "mode: foo");
    let out = kubectl.run_with_stdin(&["apply", "-f", "-"], Some(&manifest)).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(r#"spec.mode: Unsupported value: "foo": supported values: "instance", "ip""#), "{stderr}");
    // Unknown fields fail like a real server with kubectl's default (strict) field validation.
    let manifest =
        std::fs::read_to_string(common::fixture("widget.yaml")).unwrap().replace("mode: ip", "mode: ip\n  bogus: 1");
    let out = kubectl.run_with_stdin(&["apply", "-f", "-"], Some(&manifest)).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(r#"unknown field "spec.bogus""#), "{stderr}");
}

#[tokio::test]
async fn server_side_apply_and_builtin_apply() {
    let server = common::start().await;
    let kubectl = Kubectl::new(&server);
    install_widgets(&kubectl).await;
    let out = kubectl.ok(&["apply", "--server-side", "-f", &fixture("widget.yaml")]).await;
    assert!(out.contains("widget.example.test/w1 serverside-applied"), "{out}");

    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels: {tier: web}\ndata:\n  a: \"1\"\n  b: \"2\"\n";
    let out = kubectl.ok_with_stdin(&["apply", "-f", "-"], Some(cm)).await;
    assert!(out.contains("configmap/settings created"), "{out}");
    // Client-side apply of a built-in type sends a strategic merge patch.
    let cm2 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels: {tier: db}\ndata:\n  a: \"3\"\n";
    let out = kubectl.ok_with_stdin(&["apply", "-f", "-"], Some(cm2)).await;
    assert!(out.contains("configmap/settings configured"), "{out}");
    let data = kubectl.ok(&["get", "configmap", "settings", "-o", "jsonpath={.data}"]).await;
    assert_eq!(data, r#"{"a":"3"}"#);
    let names = kubectl.ok(&["get", "cm", "-l", "tier=db", "-o", "name"]).await;
    assert_eq!(names.trim(), "configmap/settings");
    let ns = kubectl.ok(&["get", "ns"]).await;
    assert!(ns.contains("kube-system") && ns.contains("Active"), "{ns}");
}

#[tokio::test]
async fn get_watch_prints_changes() {
    let server = common::start().await;
    let kubectl = Kubectl::new(&server);
    install_widgets(&kubectl).await;
    kubectl.ok(&["apply", "-f", &fixture("widget.yaml")]).await;

    let mut watch = kubectl
        .command(&["get", "widgets", "-w"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn kubectl get -w");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let next = async |lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>| {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("line in time")
            .unwrap()
            .unwrap_or_default()
    };
    let header = next(&mut lines).await;
    assert!(header.starts_with("NAME"), "{header}");
    let initial = next(&mut lines).await;
    assert!(initial.starts_with("w1") && initial.contains(" ip "), "{initial}");

    kubectl.ok(&["patch", "widget", "w1", "--type", "merge", "-p", r#"{"spec":{"mode":"instance"}}"#]).await;
    let changed = next(&mut lines).await;
    assert!(changed.starts_with("w1") && changed.contains("instance"), "{changed}");
    watch.kill().await.expect("kill kubectl");
}

#[tokio::test]
async fn real_targetgroupbinding_crd_with_kubectl() {
    let crd = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds/targetgroupbindings.elbv2.k8s.aws.yaml");
    if !std::path::Path::new(crd).exists() {
        eprintln!("skipping: {crd} not generated yet");
        return;
    }
    let server = common::start().await;
    let kubectl = Kubectl::new(&server);
    kubectl.ok(&["apply", "-f", crd]).await;
    kubectl.ok(&["create", "namespace", "app-namespace"]).await;
    let manifest = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/mission-targetgroupbinding.yaml"));
    let out = kubectl.ok_with_stdin(&["apply", "-f", "-"], Some(manifest)).await;
    assert!(out.contains("targetgroupbinding.elbv2.k8s.aws/app-tgb created"), "{out}");
    let table = kubectl.ok(&["get", "targetgroupbindings", "-n", "app-namespace"]).await;
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("SERVICE-NAME") && header.contains("SERVICE-PORT") && header.contains("TARGET-TYPE"),
        "{table}"
    );
    assert!(table.contains("service-name") && table.contains("80"), "{table}");
}
