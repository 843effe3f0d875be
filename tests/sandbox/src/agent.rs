//! The agent binary as a child process of a test, pointed at a sandbox.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

use crate::Sandbox;

pub struct Agent {
    child: Child,
    pub metrics_addr: String,
    log: std::path::PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Agent {
    /// Starts `binary run` with the sandbox's environment and `extra` flags, as the agent's
    /// ServiceAccount (so only the RBAC rules shipped in deploy/ apply, enforced by the API server
    /// double) in its own namespace `tgb-system`. Logs go to a file in the sandbox directory
    /// (printed when a test fails).
    pub fn start(binary: &Path, sandbox: &Sandbox, extra: &[&str]) -> anyhow::Result<Self> {
        let metrics_addr = format!("127.0.0.1:{}", free_port()?);
        let health_addr = format!("127.0.0.1:{}", free_port()?);
        let log = sandbox.dir().join(format!("agent-{}.log", free_port()?));
        let file = std::fs::File::create(&log).context("agent log")?;
        let child = Command::new(binary)
            .arg("run")
            .args(["--metrics-addr", &metrics_addr, "--health-addr", &health_addr])
            .args(if extra.contains(&"--namespace") { &[][..] } else { &["--namespace", "tgb-system"][..] })
            .args(extra)
            .envs(sandbox.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KUBECONFIG", sandbox.dir().join("agent-kubeconfig"))
            .env("RUST_LOG", "info,tgb_agent=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { child, metrics_addr, log })
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's `/metrics` text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.metrics_addr)?;
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.metrics_addr)?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default())
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

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.log());
        }
    }
}
