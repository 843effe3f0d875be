//! `kube-apiserver-double --addr 127.0.0.1:0 [--ready-file PATH] [--enforce-rbac]`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kube_apiserver_double::{Config, Server, serve_with_shutdown};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(version, about = "In-memory Kubernetes API server for tests")]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Once listening, write `http://127.0.0.1:<port>` to this file (atomically).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Authorize `system:serviceaccount:<ns>:<name>` bearer tokens with the stored RBAC objects.
    #[arg(long)]
    enforce_rbac: bool,
    /// Change events kept for watches that resume from an older resourceVersion.
    #[arg(long, default_value_t = 1000)]
    history_limit: usize,
    /// Seconds between BOOKMARK events on watches that allow them.
    #[arg(long, default_value_t = 30)]
    bookmark_interval_secs: u64,
}

fn write_ready_file(path: &Path, url: &str) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{url}\n")).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = Config {
        enforce_rbac: args.enforce_rbac,
        history_limit: args.history_limit,
        bookmark_interval: Duration::from_secs(args.bookmark_interval_secs.max(1)),
        ..Config::default()
    };
    let listener = TcpListener::bind(args.addr).await.with_context(|| format!("binding {}", args.addr))?;
    let local = listener.local_addr()?;
    let url = format!("http://{local}");
    let server = Server::new(config);
    if let Some(path) = &args.ready_file {
        write_ready_file(path, &url)?;
    }
    tracing::info!(%url, rbac = args.enforce_rbac, "kube-apiserver-double listening");
    serve_with_shutdown(listener, server, shutdown_signal()).await.context("serving")?;
    Ok(())
}
