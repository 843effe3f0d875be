//! The one sequence every change to a target group goes through — a binding's own group, a group
//! a changed spec left behind, and deletion: observe the group (its targets, this binding's claims,
//! its siblings' claims), decide (pure), persist the claims, write, persist what took effect.

use std::collections::{BTreeMap, BTreeSet};

use super::error::ReconcileError;
use super::execute::{Sent, Write, send};
use crate::aws::{TargetGroups, Turn, Urgency};
use crate::k8s::ownership::OwnershipStore;
use crate::model::{BindingId, RegisteredTarget, TargetGroupRef, TargetId, TargetState};
use crate::plan::decide::{GroupDecision, GroupInputs, Ownership, Want, decide, settle};
use crate::plan::health::{health_lag, summarize};
use crate::plan::outcome::GroupReport;
use crate::plan::ownership::{Claim, Record, rearm_grace};

/// One binding's work on one group.
pub struct GroupTask<'a> {
    pub binding: &'a BindingId,
    pub arn: &'a str,
    pub want: Want<'a>,
    /// Shared (multi-cluster): only claimed targets may go, and claims are persisted.
    pub shared: bool,
    /// Other bindings of this cluster on the same group.
    pub siblings: &'a [BindingId],
    /// Addresses this binding's endpoints hold right now, serving or not.
    pub ours_now: &'a BTreeSet<String>,
    /// Seconds since the Unix epoch.
    pub now: u64,
    /// When this replica began to lead (Unix seconds): claims' unhealthy-since times from before
    /// were measured on another replica's clock and are re-armed.
    pub leading_since: u64,
    /// Why the group is reconciled, which sets how urgent its writes are.
    pub why: Why,
    /// The group's targets as this reconcile already read them (asked again after confirming an
    /// empty backend): one DescribeTargetHealth per group per reconcile.
    pub read: Option<&'a [RegisteredTarget]>,
}

/// What brought a group up for reconcile.
#[derive(Clone, Debug, Default)]
pub struct Why {
    /// Nothing changed in the cluster: a periodic check against AWS. Its writes repair drift and
    /// wait behind every write a change asked for.
    pub drift_check: bool,
    /// Changes to the binding's inputs: once they move, registrations and repairs still waiting
    /// for their turn are dropped so the binding decides again (removals are always kept).
    pub stale_when: Option<tokio::sync::watch::Receiver<u64>>,
    /// The binding's writes went stale too often in a row, so these are sent even if the inputs
    /// move while they wait: what they register is claimed as uncertain.
    pub sent_regardless: bool,
}

impl Why {
    /// A change in the cluster (or a deletion): removals first, then additions.
    pub fn change() -> Self {
        Self::default()
    }

    fn turn(&self, write: Write) -> Turn {
        let urgency = match (self.drift_check, write) {
            (true, _) => Urgency::Repair,
            (false, Write::Deregister) => Urgency::Remove,
            (false, Write::Register) => Urgency::Add,
        };
        let stale_when = if urgency == Urgency::Remove { None } else { self.stale_when.clone() };
        Turn { urgency, stale_when }
    }
}

pub enum GroupResult {
    /// The decision would empty the group on the watches' word: read the backend live, then call
    /// again with `Want::Targets { confirmed: true, .. }` and these targets (the group as read) in
    /// [`GroupTask::read`]. Nothing was written.
    NeedsConfirmation(Vec<RegisteredTarget>),
    Done(Box<GroupReport>),
}

/// Runs `task`. `record` is the binding's persisted record (shared bindings) and is kept equal to
/// what was last persisted. An error after some writes still leaves `record` truthful.
pub async fn reconcile_target_group<T: TargetGroups, R: OwnershipStore>(
    aws: &T,
    store: &R,
    record: &mut Record,
    task: GroupTask<'_>,
) -> Result<GroupResult, ReconcileError> {
    let Observed { current, claims: observed, decision } = observe(aws, store, record, &task).await?;
    if decision.needs_confirmation {
        return Ok(GroupResult::NeedsConfirmation(current));
    }
    if let Some(before) = &decision.claims_before {
        // Written before any target write even when unchanged: the write's precondition is the
        // version this decision was made from, so a writer that decided on the same version (a
        // deposed leader) cannot settle over the claims these writes rely on, nor this one over
        // its claims.
        let always = decision.writes();
        persist(store, record, task.binding, task.arn, before.clone(), always).await?;
    }
    let deregister = task.why.turn(Write::Deregister);
    let deregistered = send(aws, Write::Deregister, task.arn, &decision.deregister, &deregister).await;
    let registered = if deregistered.error.is_none() {
        send(aws, Write::Register, task.arn, &decision.register, &task.why.turn(Write::Register)).await
    } else {
        Sent::default()
    };
    if decision.claims_before.is_some() {
        let after =
            settle(&observed, &decision, &deregistered.outcomes, &registered.outcomes, task.why.sent_regardless);
        persist(store, record, task.binding, task.arn, after, false).await?;
    }
    let registered_now = registered.applied(&decision.register);
    let (wanted_registered, health, states) = match task.want {
        Want::Targets { targets, .. } => {
            let active: BTreeSet<&TargetId> =
                current.iter().filter(|t| !t.state.is_draining()).map(|t| &t.target.id).collect();
            let registered = targets.iter().filter(|t| active.contains(&t.id)).count() + registered_now.len();
            let mut states: BTreeMap<TargetId, (TargetState, Option<String>)> = current
                .iter()
                .filter(|t| targets.iter().any(|w| w.id == t.target.id))
                .map(|t| (t.target.id.clone(), (t.state, t.reason.clone())))
                .collect();
            for t in &registered_now {
                states.insert(t.id.clone(), (TargetState::Initial, Some("Elb.RegistrationInProgress".to_owned())));
            }
            (registered, Some(summarize(targets, &current, &registered_now)), states)
        }
        Want::Nothing => (0, None, BTreeMap::new()),
    };
    let in_group: BTreeSet<&TargetId> =
        current.iter().map(|t| &t.target.id).chain(registered_now.iter().map(|t| &t.id)).collect();
    let claimed = decision
        .claims_before
        .is_some()
        .then(|| record.claims(task.arn).map_or(0, |c| c.keys().filter(|id| in_group.contains(id)).count()));
    let report = GroupReport {
        wanted_registered,
        claimed,
        health,
        states,
        deregistered: deregistered.applied(&decision.deregister),
        registered: registered_now,
        refused: registered.refused,
        decision,
    };
    match deregistered.error.or(registered.error) {
        Some(error) => Err(ReconcileError::GroupWrite { report: Box::new(report), source: error }),
        None => Ok(GroupResult::Done(Box::new(report))),
    }
}

/// What the group holds, this binding's claims on it, and what to do about it.
pub struct Observed {
    pub current: Vec<RegisteredTarget>,
    pub claims: BTreeMap<TargetId, Claim>,
    pub decision: GroupDecision,
}

/// Observe and decide, nothing written: the first half of [`reconcile_target_group`], and all of
/// `tgb-agent plan`, so the plan shows exactly what a reconcile would do.
pub async fn observe<T: TargetGroups, R: OwnershipStore>(
    aws: &T,
    store: &R,
    record: &Record,
    task: &GroupTask<'_>,
) -> Result<Observed, ReconcileError> {
    let current = match task.read {
        Some(read) => read.to_vec(),
        None => aws.targets(task.arn).await?,
    };
    let protected = if task.shared { sibling_claims(store, task.siblings, task.arn).await? } else { BTreeSet::new() };
    let claims = record.claims(task.arn).map(|c| rearm_grace(c, task.leading_since)).unwrap_or_default();
    let ownership = if task.shared { Ownership::Shared { claims: &claims } } else { Ownership::Exclusive };
    // Only a release weighs health against time, and only for claims a lost answer made uncertain.
    let releasing = matches!(task.want, Want::Nothing) && claims.values().any(|c| !c.is_certain());
    let health_lag = if releasing {
        health_lag(aws.describe(&TargetGroupRef::Arn(task.arn.to_owned())).await?.health_check)
    } else {
        0
    };
    let decision = decide(GroupInputs {
        want: task.want,
        ownership,
        current: &current,
        protected: &protected,
        ours_now: task.ours_now,
        now: task.now,
        health_lag,
    });
    Ok(Observed { current, claims, decision })
}

/// Writes `record` with `arn`'s claims replaced, unless that is what is persisted already (and
/// not `always`).
async fn persist<R: OwnershipStore>(
    store: &R,
    record: &mut Record,
    binding: &BindingId,
    arn: &str,
    claims: BTreeMap<TargetId, Claim>,
    always: bool,
) -> Result<(), ReconcileError> {
    let next = record.with_group(arn, claims);
    if always || next != *record {
        store.write(binding, &next).await?;
        *record = next;
    }
    Ok(())
}

/// Everything the other bindings of this cluster claim in `arn`, read from their persisted records:
/// right after a restart they protect each other as much as before it.
async fn sibling_claims<R: OwnershipStore>(
    store: &R,
    siblings: &[BindingId],
    arn: &str,
) -> Result<BTreeSet<TargetId>, ReconcileError> {
    let mut claimed = BTreeSet::new();
    for sibling in siblings {
        if let Some(record) = store.read(sibling).await? {
            claimed.extend(record.claims(arn).into_iter().flat_map(|c| c.keys().cloned()));
        }
    }
    Ok(claimed)
}

/// Drops the claims on a group that no longer exists.
pub async fn forget_group<R: OwnershipStore>(
    store: &R,
    id: &BindingId,
    arn: &str,
    record: &mut Record,
) -> Result<(), ReconcileError> {
    let next = record.with_group(arn, Default::default());
    if next != *record {
        store.write(id, &next).await?;
        *record = next;
    }
    Ok(())
}
