//! `tgb-agent plan`: reads the cluster and AWS as `run` does, decides with the same functions, and
//! prints what `run` would change, and why, without writing anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::cleanup::{observe_deletion, reclaim_for_deletion};
use super::error::ReconcileError;
use super::group::{GroupTask, Observed, Why, observe};
use super::lost_record::held_for_lost_record;
use super::networking;
use super::observe::{self as inputs, BackendViews, LiveReads};
use super::ports::Ports;
use crate::api::{TargetGroupBinding, TargetType};
use crate::aws::TargetGroups as _;
use crate::aws::security_groups::SecurityGroups as _;
use crate::clock::unix_now;
use crate::index::BackendKey;
use crate::k8s::live::ClusterReads as _;
use crate::model::sg_rule::IngressRule;
use crate::model::{RegisteredTarget, TargetState};
use crate::plan::binding::{
    AskProblem, BindingInputs, Endpoints, Feed, GroupWork, SecurityAsk, binding_id, decide, siblings_of,
};
use crate::plan::decide::{GroupDecision, Want};
use crate::plan::ownership::Record;
use crate::plan::sg_rules::{GroupInputs, plan_group, unclaimed_grace};
use crate::plan::validate::account_of;

/// Where `plan` reads from.
pub struct PlanSettings {
    pub cluster_name: String,
    pub watch_namespace: Option<String>,
    pub drift_interval_secs: u64,
}

/// What the plan found: the text to print and how many changes it holds.
pub struct Plan {
    pub text: String,
    pub changes: usize,
}

/// One binding's ask of the security groups, for the rules part of the plan.
pub(super) struct RulesAsk {
    binding: String,
    pub(super) rules: BTreeSet<IngressRule>,
    groups: Result<BTreeSet<String>, String>,
}

pub async fn plan<P: Ports>(client: Client, ports: &P, settings: &PlanSettings) -> Result<Plan, ReconcileError> {
    let api: Api<TargetGroupBinding> = match &settings.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let all: Vec<std::sync::Arc<TargetGroupBinding>> = api
        .list(&ListParams::default())
        .await
        .map_err(ReconcileError::kube("list the TargetGroupBindings"))?
        .items
        .into_iter()
        .map(std::sync::Arc::new)
        .collect();
    // `plan` writes nothing: its records' fence never opens.
    let records = ports.records();
    let mut out = Plan { text: String::new(), changes: 0 };
    let mut asks = Vec::new();
    for tgb in &all {
        let name = format!("{}/{}", tgb.namespace().unwrap_or_default(), tgb.name_any());
        let _ = writeln!(out.text, "binding {name}");
        match binding_plan(ports, records, tgb, &all, &settings.cluster_name, &mut out).await {
            Ok(Some(ask)) => asks.push(ask),
            Ok(None) => {}
            Err(e) => {
                let _ = writeln!(out.text, "  ! {} ({}): nothing would change until it is fixed", e, e.reason());
            }
        }
    }
    rules_plan(ports, settings, &asks, &mut out).await?;
    let _ = writeln!(out.text, "\nPlan: {} change(s).", out.changes);
    Ok(out)
}

/// Prints one binding's target changes; returns its ask of the security groups, if any.
pub(super) async fn binding_plan<P: Ports>(
    ports: &P,
    records: &P::Records,
    tgb: &TargetGroupBinding,
    all: &[std::sync::Arc<TargetGroupBinding>],
    cluster: &str,
    out: &mut Plan,
) -> Result<Option<RulesAsk>, ReconcileError> {
    let id = binding_id(tgb);
    let key = BackendKey { namespace: id.namespace.clone(), service: tgb.spec.service_ref.name.clone() };
    let reads = LiveReads { ports };
    let cluster_reads = ports.cluster();
    if tgb.metadata.deletion_timestamp.is_some() {
        // Observed as `cleanup` observes it; `plan` has no memory of a record deleted by hand.
        let _ = writeln!(out.text, "  being deleted: everything this cluster registered goes");
        let mut deletion = observe_deletion(&reads, cluster_reads, tgb, all, false).await?;
        if deletion.lost.is_some() {
            let target_groups = ports.target_groups().in_account(&deletion.account.clone()?).await?;
            let held = reclaim_for_deletion(&*target_groups, &mut deletion).await?;
            if let Err(e) = held_for_lost_record(deletion.lost.clone(), held) {
                let _ = writeln!(out.text, "  ! {e} ({}): the deletion would be held", e.reason());
            }
        }
        for work in &deletion.groups {
            group_plan(ports, records, &deletion.record, tgb, work, Want::Nothing, &deletion.ours_now, out).await?;
        }
        return Ok(None);
    }
    // Observed and decided by the code `run` uses, reading live.
    let live = cluster_reads.backend(&key).await.map_err(ReconcileError::kube("read the backend"))?;
    // A binding that does not say it has instance targets is observed again once it resolves to them.
    let read_nodes = || async { cluster_reads.nodes().await.map_err(ReconcileError::kube("read the nodes")) };
    let mut nodes = match tgb.spec.target_type == Some(TargetType::Instance) {
        true => Some(read_nodes().await?),
        false => None,
    };
    let observed = loop {
        match inputs::binding(&reads, tgb, &BackendViews::live(&live, nodes.as_deref()), true).await? {
            Some(observed) => break observed,
            None => nodes = Some(read_nodes().await?),
        }
    };
    let siblings = siblings_of(tgb, &observed.binding.tg.arn, all)?;
    let plan = decide(&BindingInputs { tgb, all, observed: &observed.observed }, siblings);
    let (record, ours_now) = (&plan.record.record, &observed.observed.ours_now);
    if let Some((arn, registered)) = &plan.record.stranded {
        let _ = writeln!(
            out.text,
            "  ! ownership record lost: {registered} target(s) were registered in {arn}, not all at its endpoints now; its deletion would be held"
        );
    }
    if plan.record.write_back {
        out.changes += 1;
        let _ = writeln!(out.text, "  ownership record lost: written back with what its endpoints hold in the group");
    }
    for work in &plan.clean {
        let _ = writeln!(out.text, "  previous target group {} (the spec names another now): cleaned first", work.arn);
        group_plan(ports, records, record, tgb, work, Want::Nothing, ours_now, out).await?;
    }
    let Feed { group, wanted } = match plan.feed {
        Ok(feed) => feed,
        Err(problem) => {
            let _ = writeln!(out.text, "  ! {problem} ({}): fail static, targets kept as they are", problem.reason());
            return Ok(None);
        }
    };
    let want = Want::Targets { targets: &wanted.targets, confirmed: true };
    group_plan(ports, records, record, tgb, &group, want, ours_now, out).await?;

    // What `run` would publish, and the groups its security-group loop would resolve it to.
    let (rules, Endpoints { target_is_ip, vpc_id, ids }) = match plan.ask {
        Some(SecurityAsk::Rules { rules, endpoints }) => (rules, endpoints),
        Some(SecurityAsk::Broken { why: AskProblem::Rules(e), .. }) => return Err(e.into()),
        Some(SecurityAsk::Broken { why: AskProblem::PortsUnread, .. }) => {
            return observed.ports_unread.map_or(Ok(None), Err);
        }
        _ => return Ok(None),
    };
    let listed: Vec<String> = ids.iter().cloned().collect();
    let groups = match networking::interfaces(ports.security_groups(), target_is_ip, vpc_id.as_deref(), &listed).await {
        Ok(enis) => networking::groups_from(&enis, &ids, cluster).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    Ok(Some(RulesAsk { binding: id.to_string(), rules, groups }))
}

/// Observes and decides one group exactly as a reconcile would, and prints the decision.
#[allow(clippy::too_many_arguments)]
async fn group_plan<P: Ports>(
    ports: &P,
    records: &P::Records,
    record: &Record,
    tgb: &TargetGroupBinding,
    work: &GroupWork,
    want: Want<'_>,
    ours_now: &BTreeSet<String>,
    out: &mut Plan,
) -> Result<(), ReconcileError> {
    let id = binding_id(tgb);
    let GroupWork { arn, by_claims: shared, siblings } = work;
    let shared = *shared;
    let task = GroupTask {
        binding: &id,
        arn,
        want,
        shared,
        siblings,
        ours_now,
        now: unix_now(),
        // A plan is a first look: what a new leader would do.
        leading_since: unix_now(),
        why: Why::change(),
        read: None,
    };
    let target_groups = ports.target_groups().in_account(&account_of(&tgb.spec)?).await?;
    let observed = match observe(&*target_groups, records, record, &task).await {
        Ok(observed) => observed,
        Err(e) if matches!(want, Want::Nothing) && e.means_group_gone(arn) => {
            let _ = writeln!(out.text, "  target group {arn}: gone; nothing left in it to remove");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let mode = if shared {
        "shared: only this cluster's claimed targets may go"
    } else {
        "exclusive: the binding owns the group"
    };
    let _ = writeln!(out.text, "  target group {arn} ({mode})");
    describe(&observed, shared, out);
    Ok(())
}

fn describe(observed: &Observed, shared: bool, out: &mut Plan) {
    let Observed { current, claims, decision } = observed;
    let state: BTreeMap<_, _> = current.iter().map(|t: &RegisteredTarget| (&t.target.id, t.state)).collect();
    let GroupDecision { deregister, register, uncertain_kept, released, recheck_in, .. } = decision;
    for t in register {
        let why = match state.get(&t.id) {
            Some(s) if s.is_draining() => "endpoint serving, target draining: registered again",
            _ => "endpoint serving, not in the group",
        };
        let _ = writeln!(out.text, "    + register   {:<24} {why}", t.id.to_string());
    }
    for t in deregister {
        let why = match (shared, claims.get(&t.id)) {
            (false, _) => "not wanted by the binding (exclusive group)".to_owned(),
            (true, Some(c)) if c.is_certain() => "registered by this cluster, endpoint gone".to_owned(),
            (true, Some(_)) => {
                "uncertain claim, but the address is this cluster's or unhealthy past the grace".to_owned()
            }
            (true, None) => "claimed".to_owned(),
        };
        let _ = writeln!(out.text, "    - deregister {:<24} {why}", t.id.to_string());
    }
    for id in uncertain_kept {
        let _ = writeln!(
            out.text,
            "    ~ keep       {:<24} uncertain claim (a lost AWS answer) on a serving target: left alone",
            id.to_string()
        );
    }
    for id in released {
        let _ = writeln!(
            out.text,
            "    ~ release    {:<24} uncertain claim on a serving target: left in place on deletion",
            id.to_string()
        );
    }
    if let Some(secs) = recheck_in {
        let _ = writeln!(out.text, "    (a target under an uncertain claim is unhealthy; looked at again in {secs}s)");
    }
    let foreign =
        current.iter().filter(|t| !t.state.is_draining() && shared && !claims.contains_key(&t.target.id)).count();
    let unchanged = current
        .iter()
        .filter(|t| t.state != TargetState::Draining && !deregister.iter().any(|d| d.id == t.target.id))
        .count()
        .saturating_sub(foreign);
    let _ = writeln!(out.text, "    = {unchanged} unchanged; {foreign} registered by others, left alone");
    out.changes += register.len() + deregister.len();
}

/// The security-group part: per group, what the loop would authorize, claim and release.
async fn rules_plan<P: Ports>(
    ports: &P,
    settings: &PlanSettings,
    asks: &[RulesAsk],
    out: &mut Plan,
) -> Result<(), ReconcileError> {
    let mut desired: BTreeMap<String, BTreeMap<IngressRule, Vec<&str>>> = BTreeMap::new();
    for ask in asks {
        match &ask.groups {
            Ok(groups) => {
                for group in groups {
                    for rule in &ask.rules {
                        desired.entry(group.clone()).or_default().entry(rule.clone()).or_default().push(&ask.binding);
                    }
                }
            }
            Err(e) => {
                let _ =
                    writeln!(out.text, "binding {}: security groups unknown ({e}): its rules are kept", ask.binding);
            }
        }
    }
    // Also with nothing asked: a restarted `run` releases the claims an earlier run left.
    let mut groups: BTreeSet<String> = desired.keys().cloned().collect();
    groups.extend(ports.security_groups().groups_with_rules_of(&settings.cluster_name).await?);
    let no_rules = BTreeMap::new();
    for group in groups {
        let wanted = desired.get(&group).unwrap_or(&no_rules);
        let existing = ports.security_groups().ingress_rules(&group).await?;
        let rules: BTreeSet<IngressRule> = wanted.keys().cloned().collect();
        let plan = plan_group(GroupInputs {
            cluster: &settings.cluster_name,
            desired: &rules,
            protected: &BTreeSet::new(),
            existing: &existing,
            unclaimed_since: &BTreeMap::new(),
            may_release: true,
            grace: unclaimed_grace(settings.drift_interval_secs),
            now: unix_now(),
        });
        let _ = writeln!(out.text, "security group {group}");
        let by_id: BTreeMap<&str, &IngressRule> = existing.iter().map(|e| (e.rule_id.as_str(), &e.rule)).collect();
        for rule in &plan.authorize {
            let who = wanted.get(rule).map(|b| b.join(", ")).unwrap_or_default();
            let _ = writeln!(out.text, "    + authorize  {rule}   (wanted by {who})");
        }
        for id in &plan.claim {
            let _ = writeln!(
                out.text,
                "    + claim      {id} {}   (another cluster's agent created it)",
                by_id.get(id.as_str()).map(|r| r.to_string()).unwrap_or_default()
            );
        }
        for id in &plan.release {
            let _ = writeln!(
                out.text,
                "    - release    {id} {}   (no binding of this cluster needs it)",
                by_id.get(id.as_str()).map(|r| r.to_string()).unwrap_or_default()
            );
        }
        for id in plan.unclaimed_since.keys() {
            let _ = writeln!(
                out.text,
                "    - revoke     {id} {}   (claimed by nobody; revoked once that lasts the grace)",
                by_id.get(id.as_str()).map(|r| r.to_string()).unwrap_or_default()
            );
        }
        out.changes += plan.authorize.len() + plan.claim.len() + plan.release.len() + plan.unclaimed_since.len();
    }
    Ok(())
}
