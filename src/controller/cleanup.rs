//! The delete path: take this cluster's targets out of the group, then let the binding go.

use std::collections::BTreeSet;

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::context::Context;
use super::error::ReconcileError;
use super::networking;
use super::targets::{apply_plan, siblings_of};
use crate::api::TargetGroupBinding;
use crate::aws::security_groups::SecurityGroups;
use crate::aws::{AwsError, Network, TargetGroups};
use crate::k8s::finalizer;
use crate::plan::diff::{Ownership, plan_targets};
use crate::plan::validate::check_spec;

pub async fn cleanup<T: TargetGroups, N: Network, S: SecurityGroups>(
    tgb: &TargetGroupBinding,
    ctx: &Context<T, N, S>,
) -> Result<Action, ReconcileError> {
    let api: Api<TargetGroupBinding> = Api::namespaced(ctx.client.clone(), &tgb.namespace().unwrap_or_default());
    if tgb.finalizers().iter().any(|f| f == crate::api::FINALIZER) {
        // A binding that names no target group never registered anything.
        if let Ok((tg_ref, _)) = check_spec(&tgb.spec) {
            match deregister_own_targets(tgb, ctx, &tg_ref).await {
                Ok(()) => {}
                Err(ReconcileError::Aws(AwsError::TargetGroupNotFound(_))) => {
                    ctx.forget_target_group(&tg_ref);
                }
                Err(e) => return Err(e),
            }
            ctx.records.delete(tgb).await?;
        }
        // Rules are tagged with the cluster, so any later security-group reconcile revokes what
        // this one could not: a broken security group must not keep the binding from going away.
        if let Err(error) = networking::forget(ctx, tgb).await {
            let note = format!("security-group rules of this binding will be revoked later: {error}");
            ctx.events.warning(tgb, "SecurityGroupCleanupDeferred", note).await;
        }
        finalizer::remove(&api, tgb).await.map_err(ReconcileError::kube("remove the finalizer"))?;
    }
    ctx.index.untrack(&ObjectRef::from_obj(tgb));
    ctx.nodes.untrack(&ObjectRef::from_obj(tgb));
    ctx.metrics.registered_targets(&tgb.namespace().unwrap_or_default(), &tgb.name_any(), None);
    ctx.forget_binding(tgb);
    Ok(Action::await_change())
}

async fn deregister_own_targets<T: TargetGroups, N: Network, S: SecurityGroups>(
    tgb: &TargetGroupBinding,
    ctx: &Context<T, N, S>,
    tg_ref: &crate::model::TargetGroupRef,
) -> Result<(), ReconcileError> {
    let tg = ctx.target_group(tg_ref).await?;
    let uid = tgb.uid().unwrap_or_default();
    let siblings = match siblings_of(tgb, &tg.arn, &ctx.bindings.state()) {
        Ok(siblings) => siblings,
        // It lost a conflict for the group, so it never registered anything there.
        Err(ReconcileError::TargetGroupConflict { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let protected = ctx.wanted_by_others(&uid, &tg.arn, &siblings);
    let _serialized = ctx.locks.lock(&tg.arn).await;
    let current = ctx.target_groups.targets(&tg.arn).await?;
    let owned = if tgb.spec.multi_cluster_target_group == Some(true) {
        // No record means this binding never registered anything.
        Some(ctx.records.read(tgb).await?.unwrap_or_default())
    } else {
        None
    };
    let ownership = match &owned {
        Some(owned) => Ownership::Shared { owned },
        None => Ownership::Exclusive,
    };
    let plan = plan_targets(&BTreeSet::new(), &current, ownership, &protected);
    match apply_plan(ctx, tgb, &tg.arn, &plan).await.result {
        // Already gone: what cleanup wanted.
        Err(ReconcileError::Aws(AwsError::InvalidTarget { .. })) => Ok(()),
        other => other,
    }
}
