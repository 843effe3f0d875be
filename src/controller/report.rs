//! What a group's reconcile did, told as metrics, a log line and Events on the binding.

use super::Ports;
use super::context::Context;
use super::outcome::GroupReport;
use crate::api::TargetGroupBinding;
use crate::model::{Target, TargetId};

pub async fn report_group<P: Ports>(ctx: &Context<P>, tgb: &TargetGroupBinding, arn: &str, report: &GroupReport) {
    changed(ctx, tgb, "Deregistered", &report.deregistered, arn).await;
    changed(ctx, tgb, "Registered", &report.registered, arn).await;
    if !report.decision.released.is_empty() {
        let note = format!(
            "left in place in {arn}, not removed: {}; each was serving when a lost AWS answer made it uncertain \
             whether this cluster or another one registered it last",
            sample(report.decision.released.iter())
        );
        ctx.kube.events.warning(tgb, "OwnershipReleased", note).await;
    }
}

/// The condition-sized description of the uncertain claims a reconcile left alone, if any.
pub fn uncertain_note(report: &GroupReport) -> Option<String> {
    let kept = &report.decision.uncertain_kept;
    (!kept.is_empty()).then(|| {
        format!(
            "{} serving targets are left alone because a lost AWS answer made their ownership uncertain: {}",
            kept.len(),
            sample(kept.iter())
        )
    })
}

/// The condition-sized description of the targets AWS refused, if any.
pub fn refused_note(report: &GroupReport) -> Option<String> {
    let refused = &report.refused;
    let first = refused.first()?;
    Some(format!(
        "AWS refused {} targets ({}): {}; the others are registered, these are retried at the next drift check",
        refused.len(),
        first.1,
        sample(refused.iter().map(|(t, _)| &t.id))
    ))
}

fn sample<'a>(ids: impl ExactSizeIterator<Item = &'a TargetId>) -> String {
    let total = ids.len();
    let shown: Vec<String> = ids.take(5).map(ToString::to_string).collect();
    let more = if total > shown.len() { format!(" and {} more", total - shown.len()) } else { String::new() };
    format!("{}{more}", shown.join(", "))
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
    ctx.kube.events.normal(tgb, what, note).await;
}
