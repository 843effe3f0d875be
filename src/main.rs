use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Parser;
use tgb_agent::aws::security_groups::Ec2SecurityGroups;
use tgb_agent::aws::{Ec2Network, Elbv2TargetGroups, RateLimits};
use tgb_agent::cli::{Cli, Command, LogFormat, RunArgs};
use tgb_agent::controller::{self, AwsPorts, Settings};
use tgb_agent::k8s::leader::LeaderElection;
use tgb_agent::metrics::Metrics;
use tgb_agent::server;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", tgb_agent::api::crd_yaml().context("rendering the CRD")?);
            Ok(())
        }
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let client =
        kube::Client::try_default().await.context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")?;
    let sdk = tgb_agent::aws::sdk_config().await;
    let metrics = Arc::new(Metrics::default());
    let limits = Arc::new(RateLimits::default());
    let target_groups = Elbv2TargetGroups::new(&sdk, limits.clone(), metrics.clone());
    let network = Ec2Network::new(&sdk, limits.clone(), metrics.clone());
    let security_groups = Ec2SecurityGroups::new(&sdk, limits, metrics.clone());
    let ready = Arc::new(AtomicBool::new(false));

    let metrics_server = tokio::spawn(server::serve_metrics(args.metrics_addr, metrics.clone()));
    let health_server = tokio::spawn(server::serve_health(args.health_addr, ready.clone()));
    tracing::info!(cluster = %args.cluster_name, metrics = %args.metrics_addr, health = %args.health_addr, "tgb-agent starting");

    let leader = args.leader_elect.then(|| {
        let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("tgb-agent-{}", std::process::id()));
        LeaderElection::new(client.clone(), &args.namespace, "tgb-agent", identity, args.lease_duration)
    });
    if let Some(leader) = &leader {
        // A standby replica is healthy and ready: it must not hold up a rolling update.
        ready.store(true, Ordering::Relaxed);
        tracing::info!(identity = leader.identity(), "standing by until this replica holds the leader lease");
        tokio::select! {
            () = leader.acquire() => {}
            () = shutdown_signal() => return Ok(()),
        }
        ready.store(false, Ordering::Relaxed);
        tracing::info!(identity = leader.identity(), "leading");
    }
    let lost_leadership = async {
        match &leader {
            Some(leader) => leader.hold().await,
            None => std::future::pending().await,
        }
    };
    let settings = Settings {
        cluster_name: args.cluster_name.clone(),
        watch_namespace: args.watch_namespace,
        agent_namespace: args.namespace,
        drift_interval: args.drift_interval,
        concurrency: args.concurrency.max(1),
        instance: std::env::var("POD_NAME").ok(),
    };
    tokio::select! {
        () = controller::run(client, AwsPorts { target_groups, network, security_groups }, settings, metrics, ready, shutdown_signal()) => {}
        result = metrics_server => result.context("metrics server task")?.context("metrics server")?,
        result = health_server => result.context("health server task")?.context("health server")?,
        () = lost_leadership => anyhow::bail!("lost the leader lease: stopping so that only the new leader writes"),
    }
    if let Some(leader) = &leader {
        leader.release().await;
    }
    tracing::info!("tgb-agent stopped");
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down: finishing reconciles in flight");
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: logs in files and collectors stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
