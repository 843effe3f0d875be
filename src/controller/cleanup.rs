//! The delete path: take this cluster's targets out of every group the binding fed, then let the
//! binding go. A group that is gone counts as clean; any other failure keeps the finalizer and says
//! why, so a deletion is never silently stuck and nothing it registered is left behind.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::context::Context;
use super::error::ReconcileError;
use super::group::forget_group;
use super::group::{GroupResult, GroupTask, Why, reconcile_target_group};
use super::identity::id_of;
use super::lost_record::{announce_restored, held_for_lost_record, remember_lost_record};
use super::observe::Reads;
use super::ports::Ports;
use super::report::report_group;
use crate::api::{TargetGroupBinding, TargetType};
use crate::aws::TargetGroups;
use crate::clock::unix_now;
use crate::index::BackendKey;
use crate::k8s::live::ClusterReads;
use crate::k8s::ownership::OwnershipStore;
use crate::model::{Account, BindingId};
use crate::plan::binding::{GroupWork, bound_arn, deletion_groups};
use crate::plan::decide::Want;
use crate::plan::desired::{AddressFamily, held_addresses};
use crate::plan::instance::instance_ids;
use crate::plan::lost_record::{accounted_for, lost_record, reclaimed};
use crate::plan::outcome::GroupReport;
use crate::plan::ownership::Record;
use crate::plan::validate::{InvalidBinding, account_of, check_spec};

pub async fn cleanup<P: Ports>(tgb: &TargetGroupBinding, ctx: &Context<P>) -> Result<Action, ReconcileError> {
    if tgb.finalizers().iter().any(|f| f == crate::api::FINALIZER) {
        if let Some(wait) = deregister_everything(tgb, ctx).await? {
            return Ok(Action::requeue(wait));
        }
        open_readiness_gates(tgb, ctx).await?;
        // The security-group loop releases its rules on its own; the binding never waits for EC2.
        if let Some(uid) = tgb.uid() {
            ctx.networking.withdraw(&uid);
        }
        ctx.kube.writes.remove_finalizer(tgb).await.map_err(ReconcileError::kube("remove the finalizer"))?;
    }
    ctx.forget_binding(tgb);
    Ok(Action::await_change())
}

/// What a deletion acts on, read once: the same for `cleanup` and for `plan`.
pub(super) struct Deletion {
    pub id: BindingId,
    pub record: Record,
    /// The record was found deleted and is what this process last read or wrote of it.
    pub restored: bool,
    /// A shared binding's record lost (see [`lost_record`]): the group, how many were registered.
    pub lost: Option<(String, usize)>,
    /// The groups to clean: by this binding's claims, or (the exclusive group) whole.
    pub groups: Vec<GroupWork>,
    /// What the binding's endpoints (or this cluster's nodes) hold now, read live.
    pub ours_now: BTreeSet<String>,
    /// The account the groups are cleaned through: the binding's role, when it names a valid one.
    pub account: Result<Account, InvalidBinding>,
}

/// Every group that may hold this binding's targets: those its ownership record names (a lost
/// record's group included), and for an exclusive binding the group its spec (or status) names.
/// `was_instance`: the binding last resolved to instance targets (its spec may not say so).
pub(super) async fn observe_deletion(
    reads: &impl Reads,
    cluster: &impl ClusterReads,
    tgb: &TargetGroupBinding,
    all: &[Arc<TargetGroupBinding>],
    was_instance: bool,
) -> Result<Deletion, ReconcileError> {
    let id = id_of(tgb)?;
    // Read whatever the sharing mode is now: the flag may have been flipped since claims were made.
    // A record deleted by hand since this process last saw it comes back from memory, whole.
    let stored = reads.record(&id).await?;
    let known = stored.is_none().then(|| reads.last_known(&id)).flatten();
    let exclusive = match tgb.spec.multi_cluster_target_group == Some(true) {
        true => None,
        false => exclusive_group(reads, tgb).await?,
    };
    let restored = known.is_some();
    let record = stored.or(known);
    let lost = lost_record(tgb, record.is_some());
    let record = record.unwrap_or_default();
    let groups = deletion_groups(tgb, &record, lost.as_ref(), exclusive, all);
    // What the endpoints (or this cluster's nodes) hold now, read live: it makes uncertain claims
    // on them certain. ipAddressType unset: the group (maybe ipv6) is not read, so both families.
    let instance = tgb.spec.target_type == Some(TargetType::Instance) || was_instance;
    let ours_now = match (groups.iter().any(|g| g.by_claims), instance) {
        (false, _) => BTreeSet::new(),
        (true, true) => instance_ids(&cluster.nodes().await.map_err(ReconcileError::kube("read the nodes live"))?),
        (true, false) => {
            let key = BackendKey { namespace: id.namespace.clone(), service: tgb.spec.service_ref.name.clone() };
            let live = cluster.backend(&key).await.map_err(ReconcileError::kube("read the backend live"))?;
            held_addresses(&live.slices, tgb.spec.ip_address_type.map(AddressFamily::from))
        }
    };
    Ok(Deletion { id, record, restored, lost, groups, ours_now, account: account_of(&tgb.spec) })
}

/// With the record lost: what the endpoints hold in its group is claimed again; returns how many
/// of the registered targets that accounts for.
pub(super) async fn reclaim_for_deletion(
    target_groups: &impl TargetGroups,
    deletion: &mut Deletion,
) -> Result<usize, ReconcileError> {
    let Some((arn, _)) = &deletion.lost else { return Ok(0) };
    let current = target_groups.targets(arn).await?;
    let claims = reclaimed(deletion.record.claims(arn), &current, &deletion.ours_now);
    let held = accounted_for(&current, &claims, &deletion.ours_now);
    deletion.record = std::mem::take(&mut deletion.record).with_group(arn, claims);
    Ok(held)
}

/// Cleans every group [`observe_deletion`] names. `Some(wait)`: claims remain whose targets must
/// be watched a while longer before they can be removed safely.
async fn deregister_everything<P: Ports>(
    tgb: &TargetGroupBinding,
    ctx: &Context<P>,
) -> Result<Option<Duration>, ReconcileError> {
    let all = ctx.kube.bindings.state();
    let was_instance = tgb.uid().is_some_and(|uid| ctx.was_instance_mode(&uid));
    let mut deletion = observe_deletion(ctx, ctx.ports.cluster(), tgb, &all, was_instance).await?;
    if deletion.restored {
        announce_restored(ctx, tgb).await;
    }
    if let Some((_, registered)) = &deletion.lost {
        // Remembered on the binding: the record this pass writes must not make the loss forgotten.
        remember_lost_record(&*ctx.kube.writes, tgb, *registered).await?;
    }
    // Through the binding's role when it has one; a group of another account is refused, never taken
    // for gone. With nothing to clean, neither a bad role nor STS can hold the deletion up.
    let target_groups = match (&deletion.account, deletion.groups.is_empty()) {
        (_, true) => None,
        (Ok(account), false) => Some(ctx.ports.target_groups().in_account(account).await?),
        (Err(e), false) => return Err(ReconcileError::CleanupFailed(e.to_string())),
    };
    let held = match target_groups.as_ref() {
        Some(target_groups) => reclaim_for_deletion(&**target_groups, &mut deletion).await?,
        None => 0,
    };
    let Deletion { id, mut record, lost, groups, ours_now, .. } = deletion;
    let mut failures = Vec::new();
    let mut wait: Option<u64> = None;
    for work in &groups {
        let Some(target_groups) = target_groups.as_ref() else { break };
        match empty_group(ctx, tgb, &**target_groups, &id, work, &ours_now, &mut record).await? {
            Emptied::Done(report) => {
                if let Some(r) = report.decision.recheck_in {
                    wait = Some(wait.map_or(r, |w| w.min(r)));
                }
            }
            Emptied::Gone => {}
            Emptied::Failed(e) => failures.push(format!("target group {}: {e}", work.arn)),
        }
    }
    if !failures.is_empty() {
        return Err(ReconcileError::CleanupFailed(failures.join("; ")));
    }
    held_for_lost_record(lost, held)?;
    if let Some(wait) = wait {
        let note = format!(
            "waiting up to {wait}s on targets whose ownership a lost AWS answer made uncertain: they are removed \
             once seen unhealthy for a while, and left to their owner once seen serving for longer than the \
             group's health checks take to notice a pod gone"
        );
        ctx.kube.writes.normal(tgb, "CleanupWaiting", note).await;
        return Ok(Some(Duration::from_secs(wait)));
    }
    ctx.ports.records().delete(&id).await?;
    Ok(None)
}

/// What taking this binding's targets out of one group came to.
pub(super) enum Emptied {
    /// Its report: what left, and whether some claim must be looked at again (`recheck_in`).
    Done(Box<GroupReport>),
    /// The group is gone, and everything of ours in it: the record forgets it.
    Gone,
    /// Not emptied yet, and why; its claims are kept.
    Failed(String),
}

/// Takes this binding's targets out of one group: only its claims when `work.by_claims`, else all
/// but its siblings' claims; one writer per group at a time. `Err`: the group is gone but the
/// record could not forget it.
pub(super) async fn empty_group<P: Ports>(
    ctx: &Context<P>,
    tgb: &TargetGroupBinding,
    target_groups: &P::TargetGroups,
    id: &BindingId,
    work: &GroupWork,
    ours_now: &BTreeSet<String>,
    record: &mut Record,
) -> Result<Emptied, ReconcileError> {
    let GroupWork { arn, by_claims, siblings } = work;
    let _serialized = ctx.locks.lock(arn).await;
    let task = GroupTask {
        binding: id,
        arn,
        want: Want::Nothing,
        shared: *by_claims,
        siblings,
        ours_now,
        now: unix_now(),
        leading_since: ctx.leading_since,
        why: Why::change(),
        read: None,
    };
    match reconcile_target_group(target_groups, ctx.ports.records(), record, task).await {
        Ok(GroupResult::Done(report)) => {
            report_group(ctx, tgb, arn, &report).await;
            Ok(Emptied::Done(report))
        }
        // Wanting nothing needs no live read; were one asked for, nothing is taken for done.
        Ok(GroupResult::NeedsConfirmation(_)) => Ok(Emptied::Failed("a live read of the backend was asked for".into())),
        Err(e) if e.means_group_gone(arn) => {
            ctx.forget_target_group_arn(arn);
            forget_group(ctx.ports.records(), id, arn, record).await?;
            Ok(Emptied::Gone)
        }
        Err(e) => {
            if let ReconcileError::GroupWrite { report, .. } = &e {
                report_group(ctx, tgb, arn, report).await;
            }
            Ok(Emptied::Failed(e.to_string()))
        }
    }
}

/// Opens the binding's readiness gates on its endpoint pods, so that no pod stays unready for a
/// binding that is gone.
async fn open_readiness_gates<P: Ports>(tgb: &TargetGroupBinding, ctx: &Context<P>) -> Result<(), ReconcileError> {
    if tgb.spec.target_type == Some(TargetType::Instance) {
        return Ok(());
    }
    let key = BackendKey { namespace: tgb.namespace().unwrap_or_default(), service: tgb.spec.service_ref.name.clone() };
    let live = ctx.ports.cluster().backend(&key).await.map_err(ReconcileError::kube("read the backend live"))?;
    let family = tgb.spec.ip_address_type.map_or(AddressFamily::Ipv4, AddressFamily::from);
    super::gates::open_all(ctx.ports.cluster(), &ctx.gates, tgb, &live.slices, family).await
}

/// The group an exclusive binding owns: the ARN it names or resolved to; by name, looked up. `None`
/// when it names none or the group is gone (nothing left in it to remove).
async fn exclusive_group(reads: &impl Reads, tgb: &TargetGroupBinding) -> Result<Option<String>, ReconcileError> {
    if let Some(arn) = bound_arn(tgb) {
        return Ok(Some(arn));
    }
    let Ok((tg_ref, _)) = check_spec(&tgb.spec) else { return Ok(None) };
    let account = account_of(&tgb.spec)?;
    match reads.target_group(&tg_ref, &account, false).await {
        Ok(tg) => Ok(Some(tg.arn)),
        Err(e) => {
            let (crate::model::TargetGroupRef::Arn(reference) | crate::model::TargetGroupRef::Name(reference)) =
                &tg_ref;
            if e.means_group_gone(reference) { Ok(None) } else { Err(e) }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;
    use crate::controller::context::tests::{context_on, context_with};
    use crate::controller::fakes::Recorded;
    use crate::controller::fakes::{FakeCluster, FakeTargetGroups};

    fn deleted(finalizers: &[&str]) -> TargetGroupBinding {
        let mut tgb: TargetGroupBinding = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "demo", "uid": "u-1", "finalizers": finalizers},
            "spec": {"targetGroupARN": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef",
                     "serviceRef": {"name": "web", "port": 80}}
        }))
        .expect("binding");
        tgb.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        tgb
    }

    #[tokio::test]
    async fn a_deletion_that_cannot_read_what_it_registered_keeps_the_finalizer() {
        let writes = Arc::new(Recorded::default());
        let ctx = context_with(writes.clone()).await;
        ctx.ports.records.unreachable.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut tgb = deleted(&[crate::api::FINALIZER]);
        tgb.spec.multi_cluster_target_group = Some(true);
        let error = cleanup(&tgb, &ctx).await.expect_err("its record cannot be read");
        assert_eq!(error.reason(), "OwnershipRecordFailed", "{error}");
        assert!(!writes.log().iter().any(|w| w == "finalizer removed"), "{error}: {:?}", writes.log());
    }

    #[tokio::test]
    async fn a_deletion_without_our_finalizer_only_forgets() {
        let writes = Arc::new(Recorded::default());
        let ctx = context_with(writes.clone()).await;
        ctx.converged("u-1", 7, None);
        let action = cleanup(&deleted(&["someone.else/finalizer"]), &ctx).await.expect("cleanup");
        assert_eq!(action, Action::await_change());
        assert!(writes.log().is_empty(), "{:?}", writes.log());
        assert!(!ctx.unchanged_since_converged("u-1", 7), "what was kept for it is forgotten");
    }

    /// Exclusive and instance-mode: nothing to read of the endpoints or pods (no claims, no gates).
    fn deleted_exclusive_instance() -> TargetGroupBinding {
        let mut tgb = deleted(&[crate::api::FINALIZER]);
        tgb.spec.target_type = Some(TargetType::Instance);
        tgb
    }

    const ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";

    #[tokio::test]
    async fn an_exclusive_deletion_empties_its_group_then_removes_the_finalizer() {
        let writes = Arc::new(Recorded::default());
        let groups = FakeTargetGroups::default().with_group(ARN, &["i-1", "i-2"]);
        let ctx = context_on(writes.clone(), groups, FakeCluster::default()).await;
        let action = cleanup(&deleted_exclusive_instance(), &ctx).await.expect("cleanup");
        assert_eq!(action, Action::await_change());
        assert_eq!(ctx.ports.target_groups.active(ARN), Some(Vec::new()));
        assert_eq!(writes.log().last().map(String::as_str), Some("finalizer removed"), "{:?}", writes.log());
    }

    #[tokio::test]
    async fn a_deletion_whose_group_cannot_be_read_keeps_the_finalizer_and_says_why() {
        let writes = Arc::new(Recorded::default());
        let groups = FakeTargetGroups::default().with_group(ARN, &["i-1"]);
        groups.fail_with(crate::aws::AwsError::AccessDenied { op: "DescribeTargetHealth", message: "no".into() });
        let ctx = context_on(writes.clone(), groups, FakeCluster::default()).await;
        let error = cleanup(&deleted_exclusive_instance(), &ctx).await.expect_err("cannot clean");
        assert_eq!(error.reason(), "CleanupFailed", "{error}");
        assert!(!writes.log().iter().any(|w| w == "finalizer removed"), "{:?}", writes.log());
    }

    #[tokio::test]
    async fn a_deletion_whose_group_is_gone_lets_the_binding_go() {
        let writes = Arc::new(Recorded::default());
        let ctx = context_on(writes.clone(), FakeTargetGroups::default(), FakeCluster::default()).await;
        cleanup(&deleted_exclusive_instance(), &ctx).await.expect("a gone group is clean");
        assert_eq!(writes.log().last().map(String::as_str), Some("finalizer removed"), "{:?}", writes.log());
    }

    /// A shared binding's deletion: only what its record claims leaves the group (another
    /// cluster's target stays), the gate of its pod opens, its record goes, then its finalizer.
    #[tokio::test]
    async fn a_shared_deletion_removes_only_its_claims_opens_its_gates_and_drops_its_record() {
        use crate::plan::desired::{EndpointView, SliceView};
        let writes = Arc::new(Recorded::default());
        let groups = FakeTargetGroups::default().with_group(ARN, &["10.0.0.1", "10.0.0.9"]);
        let cluster = FakeCluster::with(&[("a", true, Some("False"))]);
        if let Ok(mut backend) = cluster.backend.lock() {
            let endpoint = EndpointView {
                addresses: vec!["10.0.0.1".into()],
                ready: Some(false),
                terminating: None,
                pod: Some("a".into()),
            };
            let slice = SliceView { family: AddressFamily::Ipv4, ports: Vec::new(), endpoints: vec![endpoint] };
            backend.slices = vec![slice];
        }
        let ctx = context_on(writes.clone(), groups, cluster).await;
        let mut tgb = deleted(&[crate::api::FINALIZER]);
        tgb.spec.multi_cluster_target_group = Some(true);
        let id = crate::plan::binding::binding_id(&tgb);
        let claims = [(crate::model::TargetId::new("10.0.0.1", 8080), crate::plan::ownership::Claim::Registered)];
        ctx.ports.records.put(&id, Record::default().with_group(ARN, claims.into()));

        cleanup(&tgb, &ctx).await.expect("cleanup");
        assert_eq!(ctx.ports.target_groups.active(ARN), Some(vec!["10.0.0.9".to_owned()]));
        let opened = ("a".to_owned(), "True".to_owned(), "TargetGroupBindingDeleted".to_owned());
        assert_eq!(ctx.ports.cluster.gates_set(), vec![opened]);
        assert_eq!(ctx.ports.records.get(&id), None, "the record is deleted");
        assert_eq!(writes.log().last().map(String::as_str), Some("finalizer removed"), "{:?}", writes.log());
    }

    /// A shared binding whose record was deleted (by hand, with no agent to remember it) and whose
    /// endpoints hold none of the 2 targets its status counted: they cannot be told from another
    /// cluster's, so nothing is removed and the deletion is held, the loss noted on the binding.
    #[tokio::test]
    async fn a_lost_records_deletion_that_cannot_account_for_its_targets_is_held() {
        let writes = Arc::new(Recorded::default());
        let groups = FakeTargetGroups::default().with_group(ARN, &["10.0.0.1", "10.0.0.2"]);
        let ctx = context_on(writes.clone(), groups, FakeCluster::default()).await;
        let mut tgb = deleted(&[crate::api::FINALIZER]);
        tgb.spec.multi_cluster_target_group = Some(true);
        tgb.status = Some(crate::api::TargetGroupBindingStatus {
            target_group_arn: Some(ARN.into()),
            registered_targets: Some(2),
            ..Default::default()
        });
        let error = cleanup(&tgb, &ctx).await.expect_err("held");
        assert_eq!(error.reason(), "OwnershipRecordLost", "{error}");
        assert_eq!(ctx.ports.target_groups.active(ARN).map(|a| a.len()), Some(2), "nothing removed");
        let log = writes.log();
        assert!(log.contains(&format!("annotated {}=2", crate::plan::lost_record::RECORD_LOST_ANNOTATION)), "{log:?}");
        assert!(!log.iter().any(|w| w == "finalizer removed"), "{log:?}");
    }
}
