//! Test-support API: an isolated local sandbox per test (a real Kubernetes control plane with
//! simulated pods, from `scripts/sandbox`, and the patched moto AWS emulator on their own loopback
//! ports), AWS fixtures the way Terraform would
//! create them, and the agent binary as a child process. Everything started here is stopped on
//! drop, also when the test panics.

mod agent;
mod aws;
mod aws_tap;
mod control;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

pub use agent::Agent;
pub use aws::{
    Fixture, Instance, create_ip_target_group, delete_target_group, deregister_directly, register_directly, seed_aws,
    target_zones, targets,
};
pub use aws_tap::{AwsTap, TappedCall};

/// The repository root. Read at run time from the `CARGO_MANIFEST_DIR` that `cargo test` gives
/// the agent's tests (the root package), not baked in at compile time: a target directory shared
/// by two checkouts must never point one checkout's tests at the other's scripts.
pub fn repo_root() -> PathBuf {
    match std::env::var_os("CARGO_MANIFEST_DIR") {
        Some(dir) if Path::new(&dir).join("scripts/sandbox").exists() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

/// A running sandbox: `scripts/sandbox start DIR` on a fresh directory, `stop` on drop.
pub struct Sandbox {
    dir: PathBuf,
    env: Vec<(String, String)>,
    kube_url: String,
}

impl Sandbox {
    pub fn start() -> anyhow::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tgb-sandbox-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let script = repo_root().join("scripts/sandbox");
        let out =
            Command::new("bash").arg(&script).arg("start").arg(&dir).output().context("running scripts/sandbox")?;
        // From here on, Drop stops whatever did start.
        let mut sandbox = Self { dir, env: Vec::new(), kube_url: String::new() };
        if !out.status.success() {
            bail!(
                "scripts/sandbox start failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        sandbox.env = parse_env(&std::fs::read_to_string(sandbox.dir.join("env")).context("reading DIR/env")?);
        let kubeconfig = std::fs::read_to_string(sandbox.dir.join("kubeconfig")).context("reading DIR/kubeconfig")?;
        sandbox.kube_url = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("server:"))
            .map(|s| s.trim().trim_matches('"').to_owned())
            .context("kubeconfig has no server")?;
        Ok(sandbox)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `export` lines of `DIR/env` as pairs: what a process needs to use the sandbox.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    fn var(&self, key: &str) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Points this sandbox's AWS settings at `other`'s emulator: two clusters (two API servers)
    /// sharing one AWS account, as in a blue/green migration.
    pub fn share_aws_of(&mut self, other: &Sandbox) {
        for (key, value) in &mut self.env {
            if key.starts_with("AWS_")
                && let Some(theirs) = other.var(key)
            {
                *value = theirs.to_owned();
            }
        }
    }

    pub fn aws_endpoint(&self) -> &str {
        self.var("AWS_ENDPOINT_URL").unwrap_or_default()
    }

    pub fn kube_url(&self) -> &str {
        &self.kube_url
    }

    /// A kube client from the sandbox's kubeconfig.
    pub async fn kube(&self) -> anyhow::Result<kube::Client> {
        self.kube_from("kubeconfig").await
    }

    /// A kube client as the agent's ServiceAccount, through the fault proxy (`agent-kubeconfig`).
    pub async fn agent_kube(&self) -> anyhow::Result<kube::Client> {
        self.kube_from("agent-kubeconfig").await
    }

    async fn kube_from(&self, file: &str) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.dir.join(file))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// SDK configuration for the emulator, with SDK retries off so tests see every error.
    pub async fn aws(&self) -> aws_config::SdkConfig {
        let creds = aws_sdk_elasticloadbalancingv2::config::Credentials::new(
            self.var("AWS_ACCESS_KEY_ID").unwrap_or("testing"),
            self.var("AWS_SECRET_ACCESS_KEY").unwrap_or("testing"),
            None,
            None,
            "sandbox",
        );
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.var("AWS_REGION").unwrap_or("us-east-1").to_owned()))
            .endpoint_url(self.aws_endpoint())
            .credentials_provider(creds)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await
    }

    /// Calls the emulator received, per service and action.
    pub async fn aws_calls(&self) -> anyhow::Result<serde_json::Value> {
        control::request(self.aws_endpoint(), "GET", "/_launcher/calls", None).await
    }

    /// How many `action` calls (`RegisterTargets`, `DescribeVpcs`, …) the emulator received.
    pub async fn aws_call_count(&self, action: &str) -> anyhow::Result<u64> {
        let calls = self.aws_calls().await?;
        Ok(calls
            .as_object()
            .into_iter()
            .flat_map(|services| services.values())
            .filter_map(|actions| actions.get(action))
            .filter_map(|entry| entry.get("total").and_then(|t| t.as_u64()))
            .sum())
    }

    /// Makes the next `count` calls of `operation` fail as throttled.
    pub async fn throttle(&self, operation: &str, count: u32) -> anyhow::Result<()> {
        let body = serde_json::json!({ "operation": operation, "count": count });
        control::request(self.aws_endpoint(), "POST", "/_launcher/throttle", Some(body)).await.map(drop)
    }

    /// Changes the emulator's behaviour, e.g. `{"healthyAfterSeconds": 0.2}`.
    pub async fn aws_config(&self, config: serde_json::Value) -> anyhow::Result<()> {
        control::request(self.aws_endpoint(), "POST", "/_launcher/config", Some(config)).await.map(drop)
    }

    /// Random AWS faults, e.g. `{"rate": 0.3, "seed": 1}` (see tests/aws/README.md); returns what
    /// the emulator reports, including how many of each kind were injected so far.
    pub async fn aws_faults(&self, config: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        control::request(self.aws_endpoint(), "POST", "/_launcher/faults", Some(config)).await
    }

    pub async fn aws_faults_injected(&self) -> anyhow::Result<serde_json::Value> {
        control::request(self.aws_endpoint(), "GET", "/_launcher/faults", None).await
    }

    /// Sets the health AWS reports for a target once it is past `initial` (`None`: back to the
    /// emulator's own initial → healthy).
    pub async fn set_target_health(
        &self,
        arn: &str,
        id: &str,
        port: u16,
        state: Option<&str>,
        reason: Option<&str>,
    ) -> anyhow::Result<()> {
        let body = serde_json::json!({"targetGroupArn": arn, "id": id, "port": port, "state": state, "reason": reason});
        control::request(self.aws_endpoint(), "POST", "/_launcher/target-health", Some(body)).await.map(drop)
    }

    /// Arms a fault in the proxy between the agent and the API server (see tests/cluster/README.md);
    /// returns what the proxy holds armed.
    pub async fn kube_fault(&self, fault: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        self.fault("faults.url", fault).await
    }

    /// Arms a fault in the proxy between kube-controller-manager and the API server: the
    /// controllers lag or fail the way they do on a loaded control plane.
    pub async fn controllers_fault(&self, fault: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        self.fault("controllers-faults.url", fault).await
    }

    async fn fault(&self, file: &str, fault: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let url = std::fs::read_to_string(self.dir.join(file)).with_context(|| format!("reading DIR/{file}"))?;
        control::request(url.trim(), "POST", "/faults", Some(fault)).await
    }

    /// The kubectl built with the sandbox's Kubernetes (the first entry of `DIR/env`'s PATH).
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new("kubectl");
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let script = repo_root().join("scripts/sandbox");
        let _ = Command::new("bash").arg(script).arg("stop").arg(&self.dir).output();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The `export K=V` lines of `DIR/env`; a value ending in `:"$PATH"` is prepended to this process's PATH.
fn parse_env(text: &str) -> Vec<(String, String)> {
    let unquote = |v: &str| v.trim().trim_matches(|c| c == '"' || c == '\'').to_owned();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let value = match v.trim().strip_suffix(":\"$PATH\"") {
                Some(first) => format!("{}:{}", unquote(first), std::env::var("PATH").unwrap_or_default()),
                None => unquote(v),
            };
            (k.trim().to_owned(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn env_lines() {
        let env = super::parse_env("export A=1\n# x\nexport B=\"http://127.0.0.1:5\"\nexport C='x y'\n");
        assert_eq!(
            env,
            vec![("A".into(), "1".into()), ("B".into(), "http://127.0.0.1:5".into()), ("C".into(), "x y".into())]
        );
        let path = super::parse_env("export PATH='/opt/k8s':\"$PATH\"\n");
        assert_eq!(path[0].1, format!("/opt/k8s:{}", std::env::var("PATH").unwrap_or_default()));
    }
}
