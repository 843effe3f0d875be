//! A shared binding's ownership record lost (deleted by hand, or with a namespace moved): what can
//! still be told to be this binding's, and how the loss is remembered on the binding so that its
//! deletion is held with a reason rather than ending with targets left behind.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;

use super::context::Context;
use super::error::ReconcileError;
use super::ports::Ports;
use crate::api::TargetGroupBinding;
use crate::k8s::writes::BindingWrites;
use crate::model::{RegisteredTarget, TargetId};
use crate::plan::ownership::Claim;

/// Set on a shared binding found without its ownership record: how many targets it had registered.
pub(super) const RECORD_LOST_ANNOTATION: &str = "tgb-agent.elbv2.k8s.aws/ownership-record-lost";

/// With the record lost: what this binding's own endpoints hold now in the group is ours, whoever
/// registered it; claims an earlier pass of this deletion persisted since stay as they are.
pub(super) fn reclaimed(
    claimed: Option<&BTreeMap<TargetId, Claim>>,
    current: &[RegisteredTarget],
    ours_now: &BTreeSet<String>,
) -> BTreeMap<TargetId, Claim> {
    let mut claims = claimed.cloned().unwrap_or_default();
    for t in current.iter().filter(|t| !t.state.is_draining() && ours_now.contains(&t.target.id.id)) {
        claims.entry(t.target.id.clone()).or_insert(Claim::Registering { seen: None });
    }
    claims
}

/// How many targets the lost record's registrations are accounted for by: those in the group
/// (draining ones included: this deletion may have just removed them) or claimed, at an address
/// this binding's endpoints hold. Not the endpoints themselves: a pod that came since holds an
/// address never registered, while the one that left may still be.
pub(super) fn accounted_for(
    current: &[RegisteredTarget],
    claims: &BTreeMap<TargetId, Claim>,
    ours_now: &BTreeSet<String>,
) -> usize {
    let ids: BTreeSet<&TargetId> = current.iter().map(|t| &t.target.id).chain(claims.keys()).collect();
    ids.into_iter().filter(|id| ours_now.contains(&id.id)).count()
}

/// Whether a binding that registered `registered` targets accounts now for fewer of them (in the
/// group at addresses its endpoints hold): the rest may be stranded.
pub(super) fn registered_beyond(registered: usize, current: &[RegisteredTarget], ours_now: &BTreeSet<String>) -> bool {
    registered > accounted_for(current, &BTreeMap::new(), ours_now)
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

/// A shared binding whose record is gone while its status says it registered targets (or that was
/// found so before): the group and how many targets were registered.
pub(super) fn lost_record(tgb: &TargetGroupBinding, has_record: bool) -> Option<(String, usize)> {
    let status = tgb.status.as_ref()?;
    let arn = status.target_group_arn.clone()?;
    let remembered = tgb.annotations().get(RECORD_LOST_ANNOTATION).and_then(|v| v.parse::<usize>().ok());
    // Claims count pending deregistrations too, which the registered count leaves out.
    let count = |n: Option<i32>| usize::try_from(n.unwrap_or(0)).unwrap_or(0);
    let registered = count(status.registered_targets).max(count(status.claimed_targets));
    let shared = tgb.spec.multi_cluster_target_group == Some(true);
    match remembered {
        Some(n) => Some((arn, n)),
        None => (shared && !has_record && registered > 0).then_some((arn, registered)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{TargetGroupBindingSpec, TargetGroupBindingStatus};

    fn shared(registered: i32, claimed: Option<i32>) -> TargetGroupBinding {
        let spec = TargetGroupBindingSpec { multi_cluster_target_group: Some(true), ..Default::default() };
        let mut tgb = TargetGroupBinding::new("web", spec);
        tgb.status = Some(TargetGroupBindingStatus {
            target_group_arn: Some("arn".into()),
            registered_targets: Some(registered),
            claimed_targets: claimed,
            ..Default::default()
        });
        tgb
    }

    /// A pending deregistration is claimed but not counted as registered: the claim count is what
    /// a lost record's binding must account for.
    #[test]
    fn a_lost_record_must_account_for_its_claims_not_only_its_registered_targets() {
        assert_eq!(lost_record(&shared(2, Some(3)), false), Some(("arn".into(), 3)));
        assert_eq!(lost_record(&shared(2, None), false), Some(("arn".into(), 2)), "a status from before the count");
        assert_eq!(lost_record(&shared(2, Some(3)), true), None, "the record is there");
        assert_eq!(lost_record(&shared(0, Some(0)), false), None, "nothing was ever ours");
    }
}
