//! What a group's reconcile did, told as metrics, a log line and Events on the binding.

use super::context::Context;
use super::ports::Ports;
use crate::api::TargetGroupBinding;
use crate::model::Target;
use crate::plan::outcome::GroupReport;
use crate::plan::status::sample;

pub async fn report_group<P: Ports>(ctx: &Context<P>, tgb: &TargetGroupBinding, arn: &str, report: &GroupReport) {
    changed(ctx, tgb, "Deregistered", &report.deregistered, arn).await;
    changed(ctx, tgb, "Registered", &report.registered, arn).await;
    if !report.decision.released.is_empty() {
        let note = format!(
            "left in place in {arn}, not removed: {}; each was serving when a lost AWS answer made it uncertain \
             whether this cluster or another one registered it last",
            sample(report.decision.released.iter())
        );
        ctx.kube.writes.warning(tgb, "OwnershipReleased", note).await;
    }
}

async fn changed<P: Ports>(
    ctx: &Context<P>,
    tgb: &TargetGroupBinding,
    what: &'static str,
    targets: &[Target],
    arn: &str,
) {
    if targets.is_empty() {
        return;
    }
    ctx.metrics.targets_changed(if what == "Registered" { "register" } else { "deregister" }, targets.len());
    tracing::info!(count = targets.len(), arn, "{what} targets");
    let note = format!("{what} {} targets in {arn}: {}", targets.len(), sample(targets.iter().map(|t| &t.id)));
    ctx.kube.writes.normal(tgb, what, note).await;
}
