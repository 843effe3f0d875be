//! Command-line interface. Every `run` flag has an environment fallback for Deployments.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

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
    Run(RunArgs),
    /// Print the TargetGroupBinding CustomResourceDefinition as YAML.
    Crd,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Name of this cluster; marks what this cluster owns in shared AWS resources.
    #[arg(long, env = "TGB_CLUSTER_NAME", default_value = "default")]
    pub cluster_name: String,
    /// Only watch TargetGroupBindings in this namespace (default: all namespaces).
    #[arg(long, env = "TGB_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// The agent's own namespace, where it keeps ownership records.
    #[arg(long, env = "POD_NAMESPACE", default_value = "tgb-agent")]
    pub namespace: String,
    /// How often each target group is re-checked against AWS to repair drift (e.g. 300s, 5m, 1h).
    #[arg(long, env = "TGB_DRIFT_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub drift_interval: Duration,
    /// Bindings reconciled in parallel (work on one target group is always serialized).
    #[arg(long, env = "TGB_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "TGB_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Address of the `/healthz` and `/readyz` endpoints.
    #[arg(long, env = "TGB_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    pub health_addr: SocketAddr,
    /// Run as one of several replicas: only the holder of the Lease `tgb-agent` in --namespace
    /// reconciles; the others stand by and take over when it stops renewing.
    #[arg(long, env = "TGB_LEADER_ELECT", default_value_t = false)]
    pub leader_elect: bool,
    /// How long a leader's lease lasts without renewal (it renews every third of it).
    #[arg(long, env = "TGB_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// Log format.
    #[arg(long, env = "TGB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
