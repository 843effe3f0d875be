//! A shared binding's ownership record lost (deleted by hand, or with a namespace moved): what
//! `plan::lost_record` decided, carried out. A record written back, and the loss remembered on the
//! binding so that its deletion is held with a reason rather than ending with targets left behind.

use kube::ResourceExt;

use super::context::Context;
use super::error::ReconcileError;
use super::ports::Ports;
use crate::api::TargetGroupBinding;
use crate::k8s::ownership::OwnershipStore as _;
use crate::k8s::writes::BindingWrites;
use crate::model::BindingId;
use crate::plan::lost_record::{RECORD_LOST_ANNOTATION, RecordPlan};
use crate::plan::ownership::Record;

/// Writes back what the binding's plan recovered of a lost record, first the loss remembered
/// when some of its targets cannot be told from another cluster's any more; returns the record
/// the reconcile works from.
pub(super) async fn settle_record<P: Ports>(
    ctx: &Context<P>,
    tgb: &TargetGroupBinding,
    id: &BindingId,
    plan: RecordPlan,
) -> Result<Record, ReconcileError> {
    if let Some((arn, registered)) = &plan.stranded {
        tracing::warn!(%arn, registered, "ownership record lost while the binding lived; its deletion will be held");
        remember_lost_record(&*ctx.kube.writes, tgb, *registered).await?;
        let message = format!(
            "the ownership record was deleted and {registered} targets were registered in {arn}; not all are at this \
             binding's endpoints any more, and those cannot be told from another cluster's: check the group (the \
             binding's deletion will wait for that)"
        );
        ctx.kube.writes.warning(tgb, "OwnershipRecordLost", message).await;
    }
    if plan.write_back {
        ctx.ports.records().write(id, &plan.record).await?;
    }
    if plan.restored {
        announce_restored(ctx, tgb).await;
    }
    Ok(plan.record)
}

/// With the record lost (`lost`: the group, how many targets were registered), the deletion is held
/// while more were registered than `held` accounts for: the rest cannot be told from another
/// cluster's.
pub(super) fn held_for_lost_record(lost: Option<(String, usize)>, held: usize) -> Result<(), ReconcileError> {
    match lost {
        Some((arn, registered)) if registered > held => Err(ReconcileError::RecordLost { arn, registered, held }),
        _ => Ok(()),
    }
}

pub(super) async fn remember_lost_record(
    writes: &dyn BindingWrites,
    tgb: &TargetGroupBinding,
    registered: usize,
) -> Result<(), ReconcileError> {
    if tgb.annotations().contains_key(RECORD_LOST_ANNOTATION) {
        return Ok(());
    }
    writes
        .annotate(tgb, RECORD_LOST_ANNOTATION, registered.to_string())
        .await
        .map_err(ReconcileError::kube("mark the binding's ownership record lost"))
}

/// The record was found deleted and this process still knew it (see `OwnershipStore::last_known`):
/// it is used whole, and the operator told that someone deleted it.
pub(super) async fn announce_restored<P: Ports>(ctx: &Context<P>, tgb: &TargetGroupBinding) {
    tracing::warn!(binding = %tgb.name_any(), "ownership record deleted by hand; carrying on from memory");
    let message = "the ownership record was deleted by hand; this agent carries on (and writes it back) from the \
                   record as it last read or wrote it";
    ctx.kube.writes.warning(tgb, "OwnershipRecordRestored", message.to_owned()).await;
}
