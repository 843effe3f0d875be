//! Command-line interface. Every `run` flag has an environment fallback for Deployments.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::aws::Rate;

#[derive(Parser, Debug)]
#[command(
    name = "tgb-agent",
    version,
    about = "Keeps AWS target groups that Terraform owns fed with Kubernetes endpoints"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent.
    Run(Box<RunArgs>),
    /// Print the TargetGroupBinding CustomResourceDefinition as YAML.
    Crd,
    /// Read the cluster and AWS as `run` does, write nothing, and print per binding what `run` would
    /// register, deregister, authorize, claim and release, and why. Exit code 0: no changes; 2:
    /// changes; 1: the plan could not be made.
    Plan(PlanArgs),
}

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub scope: Scope,
}

/// Which cluster, bindings and records the agent works with: the same for `run` and `plan`.
#[derive(clap::Args, Debug)]
pub struct Scope {
    /// Name of this cluster (required, unique per cluster): marks what this cluster owns in shared
    /// AWS resources. `default` is refused: two clusters left at a default would own each other's.
    /// Unset: the name the agent installed from deploy/ runs with (its Deployment's CLUSTER_NAME, in
    /// the agent's namespace); with neither, the agent refuses to start.
    #[arg(long, env = "TGB_CLUSTER_NAME", value_parser = parse_cluster_name)]
    pub cluster_name: Option<String>,
    /// Only watch TargetGroupBindings in this namespace (default: all namespaces).
    #[arg(long, env = "TGB_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// The agent's own namespace, where it keeps ownership records and its Lease. Default: the
    /// in-cluster ServiceAccount's namespace, else the kubeconfig context's namespace, else
    /// `tgb-system` (where deploy/ installs the agent).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// How often each target group is re-checked against AWS to repair drift (e.g. 300s, 5m, 1h).
    #[arg(long, env = "TGB_DRIFT_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub drift_interval: Duration,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// Bindings reconciled in parallel (work on one target group is always serialized). A
    /// reconcile spends most of its time waiting for its turn at the AWS write budget, which goes
    /// to the most urgent write first: only reconciles under way can be put in that order, and
    /// only their describes batched. The AWS rate limits, not this, bound the load on AWS.
    #[arg(long, env = "TGB_CONCURRENCY", default_value_t = 128)]
    pub concurrency: u16,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "TGB_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Address of the `/healthz` and `/readyz` endpoints.
    #[arg(long, env = "TGB_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    pub health_addr: SocketAddr,
    /// Only the holder of the Lease `tgb-agent` in --namespace reconciles; other replicas (and an
    /// agent started by hand beside an installed one) stand by and take over when it stops renewing.
    /// On by default, so that no second writer ever runs unfenced; `--leader-elect=false` for a lone
    /// development run that must not wait for a lease.
    #[arg(long, env = "TGB_LEADER_ELECT", default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// How long a leader's lease lasts without renewal. The leader renews every sixth of it, starts
    /// no AWS write once two thirds have passed since its last confirmed renewal, and then exits.
    #[arg(long, env = "TGB_LEASE_DURATION", default_value = "15s", value_parser = parse_lease_duration)]
    pub lease_duration: Duration,
    /// `/healthz` fails while a reconcile has been running longer than this (the kubelet then
    /// restarts the agent).
    #[arg(long, env = "TGB_RECONCILE_STUCK_AFTER", default_value = "5m", value_parser = parse_duration)]
    pub reconcile_stuck_after: Duration,
    /// Client-side limit of AWS writes (RegisterTargets, DeregisterTargets, security-group rules and
    /// tags), RATE:BURST. Raise it only for an account whose ELB API limits AWS raised.
    #[arg(long, env = "TGB_AWS_WRITE_RATE", default_value_t = Rate::WRITES)]
    pub aws_write_rate: Rate,
    /// Client-side limit of AWS Describe* calls, RATE:BURST.
    #[arg(long, env = "TGB_AWS_DESCRIBE_RATE", default_value_t = Rate::DESCRIBES)]
    pub aws_describe_rate: Rate,
    /// Log format.
    #[arg(long, env = "TGB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub webhook: WebhookArgs,
}

/// The pod webhook that injects readiness gates (served by every replica).
#[derive(clap::Args, Debug)]
pub struct WebhookArgs {
    /// Serve the pod mutating webhook that adds `target-health.elbv2.k8s.aws/<binding>` readiness
    /// gates to pods created in namespaces labelled `elbv2.k8s.aws/pod-readiness-gate-inject:
    /// enabled` (the reference controller's contract). `=false` serves nothing and keeps no
    /// certificate.
    #[arg(long, env = "TGB_POD_READINESS_GATE_INJECT", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub pod_readiness_gate_inject: bool,
    /// Address of the webhook's HTTPS listener.
    #[arg(long, env = "TGB_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,
    /// A directory holding `tls.crt` and `tls.key` kept by another tool (e.g. cert-manager, which
    /// also injects its CA into the webhook configuration); re-read every minute. Unset: the agent
    /// keeps its own CA and certificate in --webhook-secret and patches the CA into
    /// --webhook-configuration.
    #[arg(long, env = "TGB_WEBHOOK_CERT_DIR")]
    pub webhook_cert_dir: Option<std::path::PathBuf>,
    /// Secret (in the agent's namespace) holding the self-managed CA and serving certificate,
    /// shared by all replicas.
    #[arg(long, env = "TGB_WEBHOOK_SECRET", default_value = "tgb-agent-webhook-tls")]
    pub webhook_secret: String,
    /// MutatingWebhookConfiguration whose `caBundle` the agent keeps (self-managed certificate).
    #[arg(long, env = "TGB_WEBHOOK_CONFIGURATION", default_value = "tgb-agent-webhook")]
    pub webhook_configuration: String,
    /// Service (in the agent's namespace) the API server reaches the webhook through: its DNS
    /// names go into the self-managed certificate.
    #[arg(long, env = "TGB_WEBHOOK_SERVICE", default_value = "tgb-agent-webhook")]
    pub webhook_service: String,
    /// More names or IP addresses for the self-managed certificate, comma-separated: for a webhook
    /// configuration that reaches the agent by URL (e.g. an agent run outside the cluster).
    #[arg(long, env = "TGB_WEBHOOK_HOSTS", value_delimiter = ',')]
    pub webhook_hosts: Vec<String>,
}

impl WebhookArgs {
    /// The names the self-managed certificate must hold: the Service's, then the extra ones.
    pub fn certificate_hosts(&self, namespace: &str) -> Vec<String> {
        let service = &self.webhook_service;
        let mut hosts = vec![format!("{service}.{namespace}.svc"), format!("{service}.{namespace}.svc.cluster.local")];
        for host in self.webhook_hosts.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
            if !hosts.iter().any(|h| h == host) {
                hosts.push(host.to_owned());
            }
        }
        hosts
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Refuses an empty name and `default`.
pub fn parse_cluster_name(s: &str) -> Result<String, String> {
    let name = s.trim();
    if name.is_empty() || name == "default" {
        return Err(format!(
            "{s:?} cannot name a cluster: set --cluster-name (TGB_CLUSTER_NAME; with deploy/, CLUSTER_NAME in the \
             tgb-agent-settings ConfigMap) to this cluster's own name, e.g. its EKS cluster name. It marks what \
             this cluster owns in shared AWS resources; clusters left at a default would own each other's"
        ));
    }
    Ok(name.to_owned())
}

/// Where the agent's own namespace came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceSource {
    Flag,
    ServiceAccount,
    Kubeconfig,
    Default,
}

/// Where `deploy/` installs the agent.
pub const INSTALL_NAMESPACE: &str = "tgb-system";

/// The in-cluster ServiceAccount's namespace file.
pub const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// `--namespace`/`POD_NAMESPACE`, else the ServiceAccount's namespace, else the kubeconfig
/// context's, else [`INSTALL_NAMESPACE`].
pub fn own_namespace(
    flag: Option<&str>,
    service_account: Option<&str>,
    kubeconfig: Option<&str>,
) -> (String, NamespaceSource) {
    let given = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    if let Some(ns) = given(flag) {
        (ns, NamespaceSource::Flag)
    } else if let Some(ns) = given(service_account) {
        (ns, NamespaceSource::ServiceAccount)
    } else if let Some(ns) = given(kubeconfig) {
        (ns, NamespaceSource::Kubeconfig)
    } else {
        (INSTALL_NAMESPACE.to_owned(), NamespaceSource::Default)
    }
}

/// Parses `90`, `90s`, `5m`, `1h` or `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 300s, 5m or 1h"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?} has an unknown unit; use ms, s, m or h")),
    };
    if d.is_zero() {
        return Err("the duration must be positive".into());
    }
    Ok(d)
}

/// A lease duration: whole seconds, at least 3. The Lease stores whole seconds, and a standby
/// reads that figure: `1500ms` would be written as 1 s, letting a standby take over while the
/// leader still believes its writes are fenced safely.
pub fn parse_lease_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.subsec_nanos() != 0 || d < Duration::from_secs(3) {
        return Err(format!("{s:?}: the lease duration must be whole seconds, at least 3s (the Lease stores seconds)"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_durations_are_whole_seconds() {
        assert_eq!(parse_lease_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_lease_duration("3000ms"), Ok(Duration::from_secs(3)));
        assert!(parse_lease_duration("1500ms").is_err());
        assert!(parse_lease_duration("2s").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "m", "5d", "-1s", "0s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cluster_name_is_not_default() {
        for bad in ["default", " ", ""] {
            let error = Cli::try_parse_from(["tgb-agent", "run", "--cluster-name", bad]).expect_err(bad);
            assert!(error.to_string().contains("cannot name a cluster"), "{error}");
        }
        let Ok(Cli { command: Command::Run(args) }) =
            Cli::try_parse_from(["tgb-agent", "run", "--cluster-name", "blue"])
        else {
            panic!("a named cluster parses")
        };
        assert_eq!(args.scope.cluster_name.as_deref(), Some("blue"));
        assert_eq!(args.scope.namespace, None);
        assert_eq!((args.aws_write_rate, args.aws_describe_rate), (Rate::WRITES, Rate::DESCRIBES));
    }

    #[test]
    fn aws_rates_are_flags_checked_at_start() {
        let parse =
            |flags: &[&str]| Cli::try_parse_from([&["tgb-agent", "run", "--cluster-name", "blue"], flags].concat());
        let Ok(Cli { command: Command::Run(args) }) =
            parse(&["--aws-write-rate", "40:100", "--aws-describe-rate", "20:40"])
        else {
            panic!("valid rates parse")
        };
        assert_eq!(args.aws_write_rate, Rate { per_second: 40.0, burst: 100 });
        assert_eq!(args.aws_describe_rate, Rate { per_second: 20.0, burst: 40 });
        let error = parse(&["--aws-write-rate", "0:20"]).expect_err("a zero rate");
        assert!(error.to_string().contains("RATE:BURST"), "{error}");
    }

    #[test]
    fn leader_election_is_on_unless_turned_off() {
        let elects = |flags: &[&str]| match Cli::try_parse_from(
            [&["tgb-agent", "run", "--cluster-name", "blue"], flags].concat(),
        ) {
            Ok(Cli { command: Command::Run(args) }) => args.leader_elect,
            other => panic!("{flags:?} should parse: {other:?}"),
        };
        assert!(elects(&[]), "a second agent started by hand must not be an unfenced writer");
        assert!(elects(&["--leader-elect"]));
        assert!(elects(&["--leader-elect=true"]));
        assert!(!elects(&["--leader-elect=false"]));
    }

    #[test]
    fn own_namespace_follows_the_install() {
        use NamespaceSource::*;
        assert_eq!(own_namespace(Some("ops"), Some("sa"), Some("ctx")), ("ops".into(), Flag));
        assert_eq!(own_namespace(None, Some("sa\n"), Some("ctx")), ("sa".into(), ServiceAccount));
        assert_eq!(own_namespace(None, None, Some("ctx")), ("ctx".into(), Kubeconfig));
        assert_eq!(own_namespace(Some(""), None, None), ("tgb-system".into(), Default));
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
