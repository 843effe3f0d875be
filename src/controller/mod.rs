//! Reconcile orchestration: the binding watch, the backend index's wake-ups, the drift timer,
//! and the reconcile of one binding (apply or cleanup) with its status, Events and retries.

mod apply;
mod asks;
mod cleanup;
mod context;
mod error;
mod execute;
#[cfg(test)]
mod fakes;
mod gates;
mod group;
mod identity;
mod locks;
mod lost_record;
#[cfg(test)]
mod model_tests;
mod networking;
mod observe;
#[cfg(test)]
mod parity_tests;
mod ports;
pub mod preview;
#[cfg(test)]
mod reason_tests;
mod report;
#[cfg(test)]
mod sg_model_tests;

use std::sync::Arc;
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::Instrument;

pub use context::{Context, Kube, Watches};
pub use error::ReconcileError;
pub use ports::{Adapters, Ports};

use crate::api::TargetGroupBinding;
use crate::index::{BackendIndex, NodeIndex, Wake};
use crate::k8s::status::Observed;
use crate::k8s::writes::ApiWrites;
use crate::metrics::Metrics;

/// How the controller runs.
pub struct Settings {
    pub cluster_name: String,
    pub watch_namespace: Option<String>,
    pub drift_interval: std::time::Duration,
    pub concurrency: u16,
    pub instance: Option<String>,
}

/// Runs until `shutdown` resolves; reconciles in flight finish first.
pub async fn run<P: Ports>(
    client: Client,
    ports: P,
    settings: Settings,
    metrics: Arc<Metrics>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    health: Arc<crate::health::Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let bindings: Api<TargetGroupBinding> = match &settings.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (wake, wake_rx) = Wake::new();
    let index = BackendIndex::new(client.clone(), settings.watch_namespace.clone(), wake.clone());
    let nodes = NodeIndex::new(client.clone(), wake.clone());
    let controller = Controller::new(bindings, watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(settings.concurrency));
    let store = controller.store();
    let kube = Kube {
        client: client.clone(),
        bindings: store.clone(),
        writes: Arc::new(ApiWrites::new(client, settings.instance)),
    };
    let watches = Watches { backends: index, nodes, wake: wake.clone() };
    let contributions = asks::Contributions::new(wake.clone());
    let ctx = Arc::new(Context::new(
        kube,
        ports,
        watches,
        settings.cluster_name,
        settings.drift_interval,
        metrics,
        contributions,
    ));
    let security_groups = tokio::spawn(networking::run_loop(ctx.clone()));
    let sweeper = tokio::spawn(forget_gone_bindings(ctx.clone()));
    tokio::spawn(async move {
        // kube-runtime wakes only the last task waiting for readiness (the controller): ask again.
        let listed = loop {
            let wait = tokio::time::timeout(std::time::Duration::from_millis(500), store.wait_until_ready());
            if let Ok(result) = wait.await {
                break result;
            }
        };
        if listed.is_ok() {
            ready.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let wake = futures::stream::unfold(wake_rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    controller
        .reconcile_on(wake)
        .graceful_shutdown_on(shutdown)
        .run(crate::health::tracking(health, reconcile), error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile round ended with an error");
            }
        })
        .await;
    security_groups.abort();
    sweeper.abort();
}

/// How often what is kept for bindings is checked against the bindings that exist.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// A binding deleted without a cleanup of ours (its finalizer removed by hand, or never added)
/// gets no reconcile: what is kept for it is dropped here instead.
async fn forget_gone_bindings<P: Ports>(ctx: Arc<Context<P>>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        // Until the bindings are listed, absence proves nothing.
        if ctx.kube.bindings.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok()) {
            let forgotten = ctx.forget_gone(&ctx.kube.bindings.state());
            if forgotten > 0 {
                tracing::debug!(forgotten, "forgot what was kept for bindings gone without a cleanup");
            }
        }
    }
}

async fn reconcile<P: Ports>(tgb: Arc<TargetGroupBinding>, ctx: Arc<Context<P>>) -> Result<Action, ReconcileError> {
    let span = tracing::info_span!("reconcile", binding = %format!("{}/{}", tgb.namespace().unwrap_or_default(), tgb.name_any()));
    async move {
        let started = Instant::now();
        let deleting = tgb.metadata.deletion_timestamp.is_some();
        let result = if deleting { cleanup::cleanup(&tgb, &ctx).await } else { apply::apply(&tgb, &ctx).await };
        match &result {
            Ok(_) => {
                ctx.succeeded(&ObjectRef::from_obj(tgb.as_ref()));
                ctx.metrics.reconcile("success", started.elapsed());
            }
            Err(error) => {
                // A cleanup failure says so, unless it is one an operator must act on.
                let reason = match error {
                    ReconcileError::RecordLost { .. } => error.reason(),
                    _ if deleting => "FailedCleanup",
                    _ => error.reason(),
                };
                tracing::warn!(%error, reason, "reconcile failed");
                ctx.metrics.reconcile("error", started.elapsed());
                ctx.metrics.reconcile_error(error.reason());
                if let Some(uid) = tgb.uid() {
                    ctx.invalidate(&uid);
                }
                if !deleting {
                    networking::mark_broken(&ctx, &tgb);
                }
                report_failure(&tgb, &ctx, reason, error).await;
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// Every failure shows as `Ready=False` with a reason, and as a Warning Event.
async fn report_failure<P: Ports>(tgb: &TargetGroupBinding, ctx: &Context<P>, reason: &str, error: &ReconcileError) {
    let observed = Observed {
        ready: Err((reason.to_owned(), error.to_string())),
        desired: None,
        registered: None,
        claimed: None,
        target_group_arn: None,
        health: None,
    };
    if let Err(e) = ctx.kube.writes.update_status(tgb, &observed).await {
        tracing::warn!(error = %e, "could not write the failure into the status");
    }
    ctx.kube.writes.warning(tgb, reason, error.to_string()).await;
    ctx.metrics.binding_ready(&tgb.namespace().unwrap_or_default(), &tgb.name_any(), false);
}

fn error_policy<P: Ports>(tgb: Arc<TargetGroupBinding>, error: &ReconcileError, ctx: Arc<Context<P>>) -> Action {
    if error.needs_user_action() {
        // A change of the binding wakes it at once; until then, look again at the drift interval.
        return Action::requeue(ctx.drift_interval);
    }
    Action::requeue(ctx.failed(&ObjectRef::from_obj(tgb.as_ref())))
}
