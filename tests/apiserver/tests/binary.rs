//! The CLI contract: `--addr 127.0.0.1:0 --ready-file PATH`, serves, exits on SIGTERM.

mod common;

use std::time::{Duration, Instant};

#[tokio::test]
async fn binary_writes_ready_file_and_exits_on_sigterm() {
    let dir = common::TempDir::new("binary");
    let ready = dir.0.join("ready");
    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-apiserver-double"))
        .args(["--addr", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the binary");
    assert!(common::eventually(10, || async { ready.exists() }).await, "ready file written");
    let url = std::fs::read_to_string(&ready).unwrap();
    assert!(url.ends_with('\n'), "{url:?}");
    let url = url.trim_end();
    assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"), "{url}");
    eprintln!("ready after {:?}", started.elapsed());

    let kubeconfig = kube::config::Kubeconfig::from_yaml(&common::kubeconfig_yaml(url, "dummy")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let version = client.apiserver_version().await.expect("version from the binary");
    assert_eq!(version.major, "1");

    let pid = child.id().expect("pid") as i32;
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("exits on SIGTERM").unwrap();
    assert!(exit.success(), "{exit:?}");
}
