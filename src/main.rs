use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use aws_config::timeout::TimeoutConfig;
use clap::Parser;
use tgb_agent::aws::security_groups::Ec2SecurityGroups;
use tgb_agent::aws::{Ec2Network, Elbv2TargetGroups, RateLimits};
use tgb_agent::cli::{self, Cli, Command, LogFormat, PlanArgs, RunArgs};
use tgb_agent::controller::preview::PlanSettings;
use tgb_agent::controller::{self, Adapters, Settings};
use tgb_agent::fence::Fence;
use tgb_agent::health::Health;
use tgb_agent::k8s::leader::{self, LeaderElection};
use tgb_agent::k8s::ownership::OwnershipRecords;
use tgb_agent::metrics::Metrics;
use tgb_agent::server;
use tgb_agent::webhook::{self, WebhookSettings, tls};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", tgb_agent::api::crd_yaml().context("rendering the CRD")?);
            Ok(())
        }
        Command::Run(args) => run(*args).await,
        Command::Plan(args) => {
            let changes = plan(args).await?;
            std::process::exit(if changes > 0 { 2 } else { 0 });
        }
    }
}

/// `tgb-agent plan`: the AWS clients sit behind a fence that never opens, so nothing can be
/// written even by mistake; prints the plan and returns how many changes it holds.
async fn plan(args: PlanArgs) -> anyhow::Result<usize> {
    let (namespace, _) = own_namespace(&args.scope);
    let client = connect().await?;
    let cluster_name = cluster_name(&client, &namespace, args.scope.cluster_name).await?;
    let sdk = tgb_agent::aws::sdk_config().await;
    let metrics = Arc::new(Metrics::default());
    let limits = Arc::new(RateLimits::fenced(Arc::new(Fence::closed())));
    let ports = Adapters {
        target_groups: Elbv2TargetGroups::new(&sdk, limits.clone(), metrics.clone()),
        network: Ec2Network::new(&sdk, limits.clone(), metrics.clone()),
        security_groups: Ec2SecurityGroups::new(&sdk, limits, metrics),
        // `plan` writes nothing: a closed fence refuses any record write.
        records: OwnershipRecords::new(client.clone(), &namespace, Arc::new(Fence::closed())),
        cluster: client.clone(),
    };
    let settings = PlanSettings {
        cluster_name,
        watch_namespace: args.scope.watch_namespace,
        drift_interval_secs: args.scope.drift_interval.as_secs(),
    };
    let plan = controller::preview::plan(client, &ports, &settings).await.context("making the plan")?;
    print!("{}", plan.text);
    Ok(plan.changes)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let (namespace, namespace_source) = own_namespace(&args.scope);
    let client = connect().await?;
    let cluster_name = cluster_name(&client, &namespace, args.scope.cluster_name.clone()).await?;
    let leader = args.leader_elect.then(|| {
        let identity = leader::identity(std::env::var("POD_NAME").ok(), hostname());
        LeaderElection::new(client.clone(), &namespace, "tgb-agent", identity, args.lease_duration)
    });
    let timing = leader.as_ref().map(LeaderElection::timing);
    // Without leader election this is the only writer: the fence never closes.
    let fence = Arc::new(if leader.is_some() { Fence::closed() } else { Fence::open() });
    let mut sdk = tgb_agent::aws::sdk_config().await;
    if let Some(timing) = timing {
        // A write let through just before the fence closes ends (or is abandoned) before another
        // replica can take the lease: every AWS operation, SDK retries included, is bounded.
        let mut timeouts = sdk.timeout_config().map_or_else(TimeoutConfig::builder, TimeoutConfig::to_builder);
        timeouts.set_operation_timeout(Some(timing.write_margin()));
        sdk = sdk.into_builder().timeout_config(timeouts.build()).build();
    }
    let metrics = Arc::new(Metrics::default());
    metrics.leader(leader.is_none()); // a standby exports 0 until it holds the lease
    let limits = Arc::new(RateLimits::new(fence.clone(), args.aws_write_rate, args.aws_describe_rate));
    let target_groups = Elbv2TargetGroups::new(&sdk, limits.clone(), metrics.clone());
    let network = Ec2Network::new(&sdk, limits.clone(), metrics.clone());
    let security_groups = Ec2SecurityGroups::new(&sdk, limits, metrics.clone());
    let health = Arc::new(Health::new(args.reconcile_stuck_after, timing.map(|t| t.lease)));
    let heartbeat = health.lease.as_ref().map(|(beat, _)| beat);

    let metrics_server = tokio::spawn(server::serve_metrics(args.metrics_addr, metrics.clone()));
    // Every replica answers admission, leader or not: standbys keep the webhook available.
    let webhook = args.webhook.pod_readiness_gate_inject.then(|| {
        let settings = WebhookSettings {
            addr: args.webhook.webhook_addr,
            certificate: match &args.webhook.webhook_cert_dir {
                Some(dir) => tls::Source::Files(dir.clone()),
                None => tls::Source::SelfManaged {
                    namespace: namespace.clone(),
                    secret: args.webhook.webhook_secret.clone(),
                    configuration: args.webhook.webhook_configuration.clone(),
                    hosts: args.webhook.certificate_hosts(&namespace),
                },
            },
            watch_namespace: args.scope.watch_namespace.clone(),
        };
        tokio::spawn(webhook::run(client.clone(), settings, metrics.clone(), health.webhook_ready.clone()))
    });
    let mut webhook_server = std::pin::pin!(async {
        match webhook {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    });
    let health_server = tokio::spawn(server::serve_health(args.health_addr, health.clone()));
    tracing::info!(
        cluster = %cluster_name, %namespace, namespace_from = ?namespace_source,
        metrics = %args.metrics_addr, health = %args.health_addr,
        webhook = ?args.webhook.pod_readiness_gate_inject.then_some(args.webhook.webhook_addr), "tgb-agent starting"
    );

    let mut acquired_at = None;
    if let (Some(leader), Some(heartbeat)) = (&leader, heartbeat) {
        // A standby replica is healthy and ready: it must not hold up a rolling update.
        health.ready.store(true, Ordering::Relaxed);
        tracing::info!(identity = leader.identity(), "standing by until this replica holds the leader lease");
        tokio::select! {
            at = leader.acquire(heartbeat) => acquired_at = Some(at),
            () = shutdown_signal() => return Ok(()),
            result = &mut webhook_server => result.context("webhook task")?.context("webhook server")?,
        }
        health.ready.store(false, Ordering::Relaxed);
        tracing::info!(identity = leader.identity(), "leading");
        metrics.leader(true);
    }
    let lost_leadership = async {
        match (&leader, acquired_at, heartbeat) {
            (Some(leader), Some(at), Some(heartbeat)) => leader.hold(at, &fence, heartbeat).await,
            _ => std::future::pending().await,
        }
    };
    let settings = Settings {
        cluster_name,
        watch_namespace: args.scope.watch_namespace,
        drift_interval: args.scope.drift_interval,
        concurrency: args.concurrency.max(1),
        instance: std::env::var("POD_NAME").ok(),
    };
    let records = OwnershipRecords::new(client.clone(), &namespace, fence.clone());
    let ports = Adapters { target_groups, network, security_groups, records, cluster: client.clone() };
    tokio::select! {
        () = controller::run(client, ports, settings, metrics.clone(), health.ready.clone(), health.clone(), shutdown_signal()) => {}
        result = metrics_server => result.context("metrics server task")?.context("metrics server")?,
        result = health_server => result.context("health server task")?.context("health server")?,
        result = &mut webhook_server => result.context("webhook task")?.context("webhook server")?,
        // The fence is already closed; exiting drops the reconciles in flight, and the pod
        // restarts as a standby with nothing left over from its time as leader.
        deposed = lost_leadership => anyhow::bail!("stepping down as leader: {deposed}; exiting so that only the new leader writes"),
    }
    if let Some(leader) = &leader {
        fence.revoke();
        metrics.leader(false);
        leader.release().await;
    }
    tracing::info!("tgb-agent stopped");
    Ok(())
}

/// The agent's own namespace (flag, ServiceAccount, kubeconfig context, or the install's default).
fn own_namespace(scope: &cli::Scope) -> (String, cli::NamespaceSource) {
    let service_account_namespace = std::fs::read_to_string(cli::SERVICE_ACCOUNT_NAMESPACE).ok();
    cli::own_namespace(
        scope.namespace.as_deref(),
        service_account_namespace.as_deref(),
        kubeconfig_namespace().as_deref(),
    )
}

/// `--cluster-name`, else the name the installed agent runs with (its Deployment's CLUSTER_NAME,
/// as deploy/ sets it), so a run by hand against an installed cluster needs no flag and claims
/// exactly what the installed agent claims.
async fn cluster_name(client: &kube::Client, namespace: &str, flag: Option<String>) -> anyhow::Result<String> {
    if let Some(name) = flag {
        return Ok(name);
    }
    let installed = tgb_agent::k8s::install::cluster_name(client, namespace).await;
    match installed {
        Ok(Some(name)) => cli::parse_cluster_name(&name).map_err(anyhow::Error::msg),
        Ok(None) => Err(anyhow::anyhow!(
            "no --cluster-name (TGB_CLUSTER_NAME), and no agent installed in namespace {namespace} to take it from; {}",
            cli::parse_cluster_name("").err().unwrap_or_default()
        )),
        Err(e) => {
            Err(anyhow::anyhow!("no --cluster-name (TGB_CLUSTER_NAME), and reading the installed agent's failed: {e}"))
        }
    }
}

async fn connect() -> anyhow::Result<kube::Client> {
    kube::Client::try_default().await.context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")
}

/// The current kubeconfig context's namespace, if it names one.
fn kubeconfig_namespace() -> Option<String> {
    let config = kube::config::Kubeconfig::read().ok()?;
    let current = config.current_context.as_deref()?;
    config.contexts.iter().find(|c| c.name == current)?.context.as_ref()?.namespace.clone()
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().or_else(|| std::env::var("HOSTNAME").ok())
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
