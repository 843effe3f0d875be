//! The agent binary as a child process of a test, pointed at a sandbox.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

use crate::Sandbox;

pub struct Agent {
    child: Child,
    pub metrics_addr: String,
    pub health_addr: String,
    /// The pod webhook's HTTPS listener (loopback, a free port, unless `extra` names one).
    pub webhook_addr: String,
    log: std::path::PathBuf,
}

/// Loopback ports free at the time of the call, held until the returned listeners drop: ports
/// taken one at a time and released at once can come back equal (the kernel may hand the port
/// just freed to the next `bind(:0)`), which once gave metrics and webhook the same address.
/// None of them is in `avoid` (ports the caller already promised to someone else).
fn free_ports<const N: usize>(avoid: &[u16]) -> anyhow::Result<([u16; N], Vec<TcpListener>)> {
    let mut held = Vec::with_capacity(N);
    let mut ports = [0; N];
    for port in &mut ports {
        *port = loop {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let candidate = listener.local_addr()?.port();
            held.push(listener);
            if !avoid.contains(&candidate) {
                break candidate;
            }
        };
    }
    Ok((ports, held))
}

impl Agent {
    /// Starts `binary run` with the sandbox's environment and `extra` flags, as the agent's
    /// ServiceAccount (so only the RBAC rules shipped in deploy/ apply, enforced by the real RBAC
    /// authorizer). Its own namespace is the default, `tgb-system` (what deploy/ installs), unless
    /// `extra` names one; `--cluster-name e2e` unless `extra` names a cluster. Logs go to a file in
    /// the sandbox directory (printed when a test fails).
    pub fn start(binary: &Path, sandbox: &Sandbox, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_env(binary, sandbox, extra, &[])
    }

    /// [`Agent::start`], with `env` set over the sandbox's environment (e.g. `AWS_ENDPOINT_URL` of
    /// an [`crate::AwsTap`], or `POD_NAME`).
    pub fn start_with_env(
        binary: &Path,
        sandbox: &Sandbox,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let webhook_flag = extra.iter().position(|a| *a == "--webhook-addr");
        let named_webhook = webhook_flag.and_then(|i| extra.get(i + 1));
        let avoid: Vec<u16> = named_webhook.and_then(|a| a.rsplit(':').next()?.parse().ok()).into_iter().collect();
        let ([metrics, health, webhook], held) = free_ports::<3>(&avoid)?;
        let metrics_addr = format!("127.0.0.1:{metrics}");
        let health_addr = format!("127.0.0.1:{health}");
        let webhook_addr = match named_webhook {
            Some(addr) => (*addr).to_owned(),
            None => format!("127.0.0.1:{webhook}"),
        };
        // Numbered, never reused: a restarted agent's log must not overwrite its predecessor's.
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = sandbox.dir().join(format!("agent-{n}.log"));
        let file = std::fs::File::create(&log).context("agent log")?;
        let named = extra.iter().any(|a| *a == "--cluster-name" || a.starts_with("--cluster-name="));
        // A lone agent per sandbox unless the test elects: a restarted one must not wait for the
        // lease its killed predecessor held.
        let elects = extra.iter().any(|a| a.starts_with("--leader-elect"));
        drop(held);
        let child = Command::new(binary)
            .arg("run")
            .args(["--metrics-addr", &metrics_addr, "--health-addr", &health_addr])
            .args(
                if webhook_flag.is_some() { None } else { Some(["--webhook-addr", &webhook_addr]) }
                    .into_iter()
                    .flatten(),
            )
            .args(if named { &[][..] } else { &["--cluster-name", "e2e"][..] })
            .args(if elects { &[][..] } else { &["--leader-elect=false"][..] })
            .args(extra)
            .envs(sandbox.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KUBECONFIG", sandbox.dir().join("agent-kubeconfig"))
            .env("RUST_LOG", "info,tgb_agent=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { child, metrics_addr, health_addr, webhook_addr, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP: the process freezes (a stalled VM or node, a stuck runtime) until [`Agent::resume`].
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONT.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill").arg(signal).arg(self.child.id().to_string()).status()?;
        anyhow::ensure!(status.success(), "kill {signal} {} failed", self.child.id());
        Ok(())
    }

    /// The exit status, once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `GET path` on the health address (`/healthz`, `/readyz`): (status code, body).
    pub fn health(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(&self.health_addr, path)
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's `/metrics` text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        Ok(http_get(&self.metrics_addr, "/metrics")?.1)
    }

    /// Peak resident memory (VmHWM) in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// SIGKILL: a crash, with no chance to finish anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: a graceful shutdown.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status()?;
        Ok(self.child.wait()?)
    }
}

fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no HTTP status")?;
    Ok((status, response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()))
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.log());
        }
    }
}
