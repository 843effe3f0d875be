//! The apply path of a binding that is not being deleted: observe its inputs, clean any group a
//! changed spec left behind, reconcile its own group, then networking and status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::watch;

use super::cleanup::{Emptied, empty_group};
use super::context::{Context, fingerprint};
use super::error::ReconcileError;
use super::gates;
use super::group::{GroupResult, GroupTask, Why, reconcile_target_group};
use super::identity::uid_of;
use super::lost_record::settle_record;
use super::networking;
use super::observe::{self, BackendViews, Binding, Observation};
use super::ports::Ports;
use super::report::report_group;
use crate::api::{TargetGroupBinding, TargetType};
use crate::aws::AwsError;
use crate::aws::TargetGroups as _;
use crate::clock::unix_now;
use crate::index::{Backend, BackendKey, Nodes};
use crate::k8s::live::ClusterReads as _;
use crate::plan::binding::{BindingInputs, Feed, GroupWork, decide, siblings_of};
use crate::plan::decide::Want;
use crate::plan::outcome::GroupReport;
use crate::plan::ownership::Record;
use crate::plan::status::{StatusInputs, StatusPlan, status as status_of};
use crate::plan::wanted::{BackendProblem, Wanted};

/// How soon to look again when the inputs are not known yet.
const RECHECK_SOON: Duration = Duration::from_secs(2);
/// How often AWS is read while some desired target is not healthy yet: one DescribeTargetHealth
/// per binding per interval, well inside the describe budget (50/s).
const HEALTH_POLL: Duration = Duration::from_secs(5);
/// How often AWS is read while a pod's readiness gate is closed (pods must turn Ready within about
/// two seconds of their target turning healthy).
const GATE_POLL: Duration = Duration::from_secs(1);

pub async fn apply<P: Ports>(tgb: &TargetGroupBinding, ctx: &Context<P>) -> Result<Action, ReconcileError> {
    let uid = uid_of(tgb)?;
    let started = std::time::Instant::now(); // for tgb_time_to_register_seconds
    ctx.kube.writes.ensure_finalizer(tgb).await.map_err(ReconcileError::kube("add the finalizer"))?;
    let (watched, observation) = match watch_inputs(ctx, tgb, &uid).await? {
        Ok(inputs) => inputs,
        Err(wait) => return Ok(Action::requeue(wait)),
    };
    let all = ctx.kube.bindings.state();
    // A binding in conflict touches nothing, its record included.
    let siblings = siblings_of(tgb, &observation.binding.tg.arn, &all)?;
    let Observation { binding, observed, ports_unread } = observation;
    let plan = decide(&BindingInputs { tgb, all: &all, observed: &observed }, siblings);
    let ours_now = &observed.ours_now;
    let gated = gates::gated_addresses(&ctx.gates, &uid, &watched.views().slices, binding.resolved.family)
        .filter(|_| !binding.instance_mode());
    let mut record = settle_record(ctx, tgb, &binding.id, plan.record).await?;
    // Groups a changed targetGroupARN/Name left behind are cleaned before the new one is fed.
    let left_behind = clean_previous_groups(ctx, tgb, &binding, &plan.clean, ours_now, &mut record).await;
    let Feed { group: own, mut wanted } = plan.feed?;
    // The security-group loop works from this on its own; a failure here never holds targets back.
    let publish_error = plan.ask.and_then(|ask| networking::publish(ctx, tgb, &uid, ask, ports_unread));
    let group = Group { watched: &watched, binding: &binding, own: &own, ours_now, uid: &uid };
    let Some(report) = feed_group(ctx, tgb, &group, &mut record, &mut wanted).await? else {
        return Ok(Action::requeue(RECHECK_SOON));
    };
    ctx.metrics.time_to_register(report.registered.len(), started.elapsed());
    let fed = Fed { wanted: &wanted, report: &report, left_behind: left_behind.as_deref(), publish_error };
    let check_within = finish(ctx, tgb, &group, gated.as_ref(), fed).await?;
    Ok(Action::requeue(ctx.converged(&uid, watched.fingerprint, check_within)))
}

/// A binding's inputs from the watches.
struct Watched {
    backend: Backend,
    nodes: Option<Arc<Nodes>>,
    /// Subscribed before the inputs were read: any change after the read makes writes still
    /// waiting stale.
    input_changes: watch::Receiver<u64>,
    /// Nothing changed since the last apply: this is a check against AWS (drift, health, gates).
    drift_check: bool,
    fingerprint: u64,
}

impl Watched {
    fn views(&self) -> BackendViews<'_> {
        BackendViews::watched(&self.backend, self.nodes.as_deref())
    }
}

/// The backend and the nodes from the watches, and the binding observed from them (`observe`
/// checks the spec before any AWS call). `Err(wait)`: nothing to decide yet (a watch's first list
/// is not in), or nothing changed until the next drift check.
async fn watch_inputs<P: Ports>(
    ctx: &Context<P>,
    tgb: &TargetGroupBinding,
    uid: &str,
) -> Result<Result<(Watched, Observation), Duration>, ReconcileError> {
    let binding_ref = ObjectRef::from_obj(tgb);
    let input_changes = ctx.watches.wake.subscribe(&binding_ref);
    let key = BackendKey { namespace: tgb.namespace().unwrap_or_default(), service: tgb.spec.service_ref.name.clone() };
    let backend = ctx.watches.backends.track(&binding_ref, &key);
    let mut nodes = (tgb.spec.target_type == Some(TargetType::Instance) || ctx.was_instance_mode(uid))
        .then(|| ctx.watches.nodes.track(&binding_ref));
    if !backend.synced() || nodes.as_deref().is_some_and(|n| !n.synced()) {
        // The watches wake this binding once their first list is in.
        return Ok(Err(RECHECK_SOON));
    }
    let fingerprint = fingerprint(tgb, &backend, nodes.as_deref(), ctx.networking.result(uid).0);
    if let Some(until_drift_check) = ctx.unchanged_until_drift_check(uid, fingerprint) {
        return Ok(Err(until_drift_check));
    }
    let drift_check = ctx.unchanged_since_converged(uid, fingerprint);
    let observed = loop {
        let views = BackendViews::watched(&backend, nodes.as_deref());
        match observe::binding(ctx, tgb, &views, drift_check).await? {
            Some(observed) => break observed,
            // It resolved to instance targets: the nodes are watched from now on.
            None => match ctx.watches.nodes.track(&binding_ref) {
                tracked if tracked.synced() => nodes = Some(tracked),
                _ => return Ok(Err(RECHECK_SOON)),
            },
        }
    };
    ctx.set_instance_mode(uid, observed.binding.instance_mode());
    if !observed.binding.instance_mode() {
        ctx.watches.nodes.untrack(&binding_ref);
        nodes = None;
    }
    // A binding that just turned to (or from) instance targets has its nodes in its next
    // fingerprint, not this one: its next reconcile reads AWS once more, and then converges.
    let watched = Watched { backend, nodes, input_changes, drift_check, fingerprint };
    Ok(Ok((watched, observed)))
}

/// What feeding the binding's own group works from.
struct Group<'a> {
    watched: &'a Watched,
    binding: &'a Binding,
    /// How the group is fed, as the binding's plan decided.
    own: &'a GroupWork,
    ours_now: &'a BTreeSet<String>,
    uid: &'a str,
}

/// Feeds the binding's own group, one writer per group at a time. A decision that would empty the
/// group on the watches' word is confirmed by a live read first. `None`: the inputs moved while
/// writes waited for their turn; the reconcile that change queued decides again, with what is
/// urgent now first.
async fn feed_group<P: Ports>(
    ctx: &Context<P>,
    tgb: &TargetGroupBinding,
    group: &Group<'_>,
    record: &mut Record,
    wanted: &mut Wanted,
) -> Result<Option<Box<GroupReport>>, ReconcileError> {
    let (watched, binding) = (group.watched, group.binding);
    let target_groups = ctx.ports.target_groups().in_account(&binding.account).await?;
    let arn = &group.own.arn;
    let _serialized = ctx.locks.lock(arn).await;
    let mut confirmed = false;
    let mut read = None;
    // Asked once: both halves of the answer must agree.
    let may_go_stale = ctx.may_go_stale(group.uid);
    let report = loop {
        let task = GroupTask {
            binding: &binding.id,
            arn,
            want: Want::Targets { targets: &wanted.targets, confirmed },
            shared: group.own.by_claims,
            siblings: &group.own.siblings,
            ours_now: group.ours_now,
            now: unix_now(),
            leading_since: ctx.leading_since,
            why: Why {
                drift_check: watched.drift_check,
                stale_when: may_go_stale.then(|| watched.input_changes.clone()),
                sent_regardless: !may_go_stale,
            },
            read: read.as_deref(),
        };
        match reconcile_target_group(&*target_groups, ctx.ports.records(), record, task).await {
            Ok(GroupResult::Done(report)) => break report,
            Ok(GroupResult::NeedsConfirmation(current)) => {
                read = Some(current);
                // The group changed target type since it was observed: decided again from the start.
                let Some(live) = live_wanted(ctx, tgb, binding).await? else { return Ok(None) };
                let live = live?;
                if !live.targets.is_empty() {
                    tracing::warn!(backend = %binding.key, live_targets = live.targets.len(), "the watch cache showed no endpoints but the API server has some; using the live read");
                }
                *wanted = live;
                confirmed = true;
            }
            Err(ReconcileError::GroupWrite { report, source: AwsError::Superseded { .. } }) => {
                report_group(ctx, tgb, arn, &report).await;
                ctx.went_stale(group.uid, true);
                return Ok(None);
            }
            Err(ReconcileError::GroupWrite { report, source }) => {
                report_group(ctx, tgb, arn, &report).await;
                ctx.invalidate_vpc_cidrs();
                return Err(ReconcileError::GroupWrite { report, source });
            }
            Err(e) => return Err(e),
        }
    };
    ctx.went_stale(group.uid, false);
    report_group(ctx, tgb, arn, &report).await;
    if !report.refused.is_empty() {
        // A stale CIDR cache sends AZ `all` for an address now inside the VPC: look again next time.
        ctx.invalidate_vpc_cidrs();
    }
    Ok(Some(report))
}

/// What the binding's own group got.
struct Fed<'a> {
    wanted: &'a Wanted,
    report: &'a GroupReport,
    left_behind: Option<&'a str>,
    publish_error: Option<ReconcileError>,
}

/// The status this reconcile earned with its Warnings and metrics, then the readiness gates.
/// Returns how soon AWS must be read again: soon while a target is not healthy yet (for
/// `TargetsHealthy`), every second while a readiness gate holds a rollout, else at the drift check.
async fn finish<P: Ports>(
    ctx: &Context<P>,
    tgb: &TargetGroupBinding,
    group: &Group<'_>,
    gated: Option<&BTreeMap<String, String>>,
    fed: Fed<'_>,
) -> Result<Option<Duration>, ReconcileError> {
    let (binding, report) = (group.binding, fed.report);
    let networking = match fed.publish_error {
        Some(e) => Some((e.reason(), e.to_string())),
        None => ctx.networking.result(group.uid).1,
    };
    let StatusPlan { observed, warnings } = status_of(StatusInputs {
        tg_arn: &binding.tg.arn,
        tg_name: &binding.tg.name,
        shared: binding.shared,
        wanted: fed.wanted,
        report,
        left_behind: fed.left_behind,
        networking,
    });
    for (reason, message) in warnings {
        ctx.kube.writes.warning(tgb, reason, message).await;
    }
    let (namespace, name) = (&binding.id.namespace, &binding.id.name);
    ctx.metrics.registered_targets(namespace, name, Some(report.wanted_registered));
    ctx.metrics.binding_observed(namespace, name, observed.ready.is_ok(), report.health.as_ref());
    ctx.kube.writes.update_status(tgb, &observed).await.map_err(ReconcileError::kube("update the status"))?;
    let health_poll = report.health.as_ref().filter(|h| !h.all_healthy() && h.desired > 0).map(|_| HEALTH_POLL);
    let gates_closed = match gated {
        Some(addresses) => gates::update(ctx.ports.cluster(), &ctx.gates, tgb, addresses, &report.states).await?,
        None => false,
    };
    let gate_poll = gates_closed.then_some(GATE_POLL);
    Ok(report.decision.recheck_in.map(Duration::from_secs).into_iter().chain(health_poll).chain(gate_poll).min())
}

/// What the backend wants as the API server has it right now (the watches showed it empty): the
/// binding observed again, whole, from a live read of its backend (only a decision that would
/// empty the group comes here). `None`: its group no longer resolves to the target type it was
/// fed as.
async fn live_wanted<P: Ports>(
    ctx: &Context<P>,
    tgb: &TargetGroupBinding,
    binding: &Binding,
) -> Result<Option<Result<Wanted, BackendProblem>>, ReconcileError> {
    let cluster = ctx.ports.cluster();
    let live = cluster.backend(&binding.key).await.map_err(ReconcileError::kube("read the backend live"))?;
    let nodes = match binding.instance_mode() {
        true => Some(cluster.nodes().await.map_err(ReconcileError::kube("read the nodes live"))?),
        false => None,
    };
    let again = observe::binding(ctx, tgb, &BackendViews::live(&live, nodes.as_deref()), false).await?;
    Ok(again.filter(|o| o.binding.instance_mode() == binding.instance_mode()).map(|o| o.observed.wanted))
}

/// Cleans the groups this binding fed before its spec named another (the plan's `clean`), through
/// the binding's current account (a group fed through another role is refused, never taken for
/// gone). Returns what is left behind, for the status; never fails the reconcile, so a broken old
/// group does not keep the new one from being fed.
async fn clean_previous_groups<P: Ports>(
    ctx: &Context<P>,
    tgb: &TargetGroupBinding,
    binding: &Binding,
    previous: &[GroupWork],
    ours_now: &BTreeSet<String>,
    record: &mut Record,
) -> Option<String> {
    if previous.is_empty() {
        return None;
    }
    let target_groups = match ctx.ports.target_groups().in_account(&binding.account).await {
        Ok(t) => t,
        Err(e) => return Some(format!("previous target groups not cleaned yet: {e}")),
    };
    let mut left = Vec::new();
    for work in previous {
        let arn = &work.arn;
        match empty_group(ctx, tgb, &*target_groups, &binding.id, work, ours_now, record).await {
            Ok(Emptied::Done(_)) if record.claims(arn).is_some_and(|c| !c.is_empty()) => {
                left.push(format!("previous target group {arn} still holds targets of this binding"));
            }
            Ok(Emptied::Done(_) | Emptied::Gone) => {}
            Ok(Emptied::Failed(e)) => left.push(format!("previous target group {arn} not cleaned yet: {e}")),
            Err(e) => left.push(format!("previous target group {arn}: {e}")),
        }
    }
    (!left.is_empty()).then(|| left.join("; "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controller::context::tests::{TestContext, context_on, context_with, test_client};
    use crate::controller::fakes::Recorded;
    use crate::controller::fakes::{FakeCluster, FakeTargetGroups};
    use crate::index::Backend;
    use crate::index::BackendIndex;
    use crate::k8s::live::LiveBackend;
    use crate::model::{Account, Target, TargetGroupInfo, TargetGroupIpType, TargetGroupType, TargetId};
    use crate::plan::binding::{Observed, binding_id};
    use crate::plan::desired::{AddressFamily, PortRef};
    use crate::plan::desired::{EndpointView, ServicePortView, ServiceView, SlicePort, SliceView};
    use crate::plan::lost_record::RecordFound;
    use crate::plan::ownership::Claim;
    use crate::plan::validate::Resolved;

    const ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";

    fn binding(spec: serde_json::Value) -> TargetGroupBinding {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "demo", "uid": "u-1"}, "spec": spec}))
            .expect("binding")
    }

    #[tokio::test]
    async fn the_finalizer_comes_first_and_nothing_is_decided_before_the_watches_have_listed() {
        let writes = Arc::new(Recorded::default());
        let ctx = context_with(writes.clone()).await;
        let tgb = binding(json!({"targetGroupARN": ARN, "serviceRef": {"name": "web", "port": 80}}));
        let action = apply(&tgb, &ctx).await.expect("apply");
        assert_eq!(action, Action::requeue(RECHECK_SOON));
        assert_eq!(writes.log(), ["finalizer added"], "no status from a backend not listed yet");
    }

    #[tokio::test]
    async fn a_spec_mistake_is_an_error_after_the_finalizer_and_before_any_aws_read() {
        let (ctx, writes, _) = watching(Some(web()), vec![slice_of(&["10.0.0.5"])], LiveBackend::default()).await;
        ctx.ports.target_groups.fail_with(AwsError::AccessDenied { op: "DescribeTargetGroups", message: "no".into() });
        let tgb = binding(json!({"serviceRef": {"name": "web", "port": 80}}));
        let error = apply(&tgb, &ctx).await.expect_err("no target group named");
        assert_eq!(error.reason(), "InvalidSpec", "{error}");
        assert_eq!(writes.log(), ["finalizer added"]);
    }

    #[tokio::test]
    async fn a_binding_without_a_uid_writes_nothing() {
        let writes = Arc::new(Recorded::default());
        let ctx = context_with(writes.clone()).await;
        let mut tgb = binding(json!({"targetGroupARN": ARN, "serviceRef": {"name": "web", "port": 80}}));
        tgb.metadata.uid = None;
        assert_eq!(apply(&tgb, &ctx).await.expect_err("no uid").reason(), "InvalidObject");
        assert!(writes.log().is_empty());
    }

    /// The binding as `observe::resolve` finds it against an ip group in its own account.
    fn resolved(tgb: &TargetGroupBinding) -> Binding {
        Binding {
            id: binding_id(tgb),
            key: BackendKey { namespace: "demo".into(), service: "web".into() },
            port: PortRef::Number(80),
            account: Account::Own,
            tg: TargetGroupInfo {
                arn: ARN.into(),
                name: "web".into(),
                target_type: TargetGroupType::Ip,
                vpc_id: None,
                ip_address_type: TargetGroupIpType::Ipv4,
                protocol: None,
                health_check: None,
            },
            resolved: Resolved { target_type: TargetType::Ip, family: AddressFamily::Ipv4 },
            node_selector: None,
            shared: tgb.spec.multi_cluster_target_group == Some(true),
        }
    }

    #[tokio::test]
    async fn finish_writes_the_decided_status_with_its_warnings_and_polls_health_until_healthy() {
        let writes = Arc::new(Recorded::default());
        let ctx = context_with(writes.clone()).await;
        let tgb = binding(json!({"targetGroupARN": ARN, "serviceRef": {"name": "web", "port": 80}}));
        let binding = resolved(&tgb);
        let watched = Watched {
            backend: Backend::default(),
            nodes: None,
            input_changes: watch::channel(0).1,
            drift_check: false,
            fingerprint: 0,
        };
        let target = |ip: &str| Target::new(TargetId::new(ip, 8080));
        let wanted = Wanted { targets: [target("10.0.0.1"), target("10.0.0.2")].into(), ..Wanted::default() };
        let report = GroupReport {
            wanted_registered: 1,
            refused: vec![(target("10.0.0.2"), "InvalidTarget".into())],
            health: Some(crate::plan::health::HealthSummary { desired: 2, initial: 1, ..Default::default() }),
            ..GroupReport::default()
        };
        let own = GroupWork { arn: ARN.into(), by_claims: false, siblings: Vec::new() };
        let group = Group { watched: &watched, binding: &binding, own: &own, ours_now: &BTreeSet::new(), uid: "u-1" };
        let fed = Fed { wanted: &wanted, report: &report, left_behind: None, publish_error: None };
        let check_within = finish(&ctx, &tgb, &group, None, fed).await.expect("finish");
        assert_eq!(writes.log(), ["Warning TargetRejected", "status"]);
        let statuses = writes.statuses.lock().map(|s| s.clone()).unwrap_or_default();
        assert!(matches!(&statuses[0].ready, Err((reason, _)) if reason == "TargetRejected"), "{statuses:?}");
        assert_eq!((statuses[0].desired, statuses[0].registered), (Some(2), Some(1)));
        assert_eq!(check_within, Some(HEALTH_POLL), "a target not healthy yet: AWS is read again soon");
    }

    const OLD: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/old/0123456789abcdef";

    /// A binding now fed into `ARN` that fed `OLD` before (its status still names `OLD`).
    fn moved(shared: bool) -> TargetGroupBinding {
        let mut tgb = binding(json!({"targetGroupARN": ARN, "serviceRef": {"name": "web", "port": 80},
                                     "multiClusterTargetGroup": shared}));
        tgb.status =
            Some(crate::api::TargetGroupBindingStatus { target_group_arn: Some(OLD.into()), ..Default::default() });
        tgb
    }

    fn claimed(ids: &[&str]) -> Record {
        let claims = ids.iter().map(|a| (TargetId::new(*a, 8080), crate::plan::ownership::Claim::Registered)).collect();
        Record::default().with_group(OLD, claims)
    }

    /// Cleans what the binding's plan says its move from `OLD` to `ARN` left behind.
    async fn clean(ctx: &TestContext, tgb: &TargetGroupBinding, record: &mut Record) -> Option<String> {
        let observed = Observed {
            arn: ARN.into(),
            shared: tgb.spec.multi_cluster_target_group == Some(true),
            record: RecordFound::Read(record.clone()),
            ours_now: BTreeSet::new(),
            wanted: Ok(Wanted::default()),
            target_is_ip: true,
            vpc_id: None,
            named_ports: Some(BTreeMap::new()),
        };
        let plan = decide(&BindingInputs { tgb, all: &[Arc::new(tgb.clone())], observed: &observed }, Vec::new());
        clean_previous_groups(ctx, tgb, &resolved(tgb), &plan.clean, &BTreeSet::new(), record).await
    }

    #[tokio::test]
    async fn a_shared_binding_takes_only_its_claimed_targets_out_of_its_previous_group() {
        let groups = FakeTargetGroups::default().with_group(OLD, &["10.0.0.1", "10.0.0.9"]);
        let ctx = context_on(Arc::new(Recorded::default()), groups, FakeCluster::default()).await;
        let mut record = claimed(&["10.0.0.1"]);
        let left = clean(&ctx, &moved(true), &mut record).await;
        assert_eq!(left, None);
        assert_eq!(ctx.ports.target_groups.active(OLD), Some(vec!["10.0.0.9".to_owned()]), "the other cluster's stays");
        assert!(record.claims(OLD).is_none_or(|c| c.is_empty()), "{record:?}");
    }

    #[tokio::test]
    async fn an_exclusive_binding_empties_the_group_its_status_still_names() {
        let groups = FakeTargetGroups::default().with_group(OLD, &["10.0.0.1", "10.0.0.9"]);
        let ctx = context_on(Arc::new(Recorded::default()), groups, FakeCluster::default()).await;
        let left = clean(&ctx, &moved(false), &mut Record::default()).await;
        assert_eq!(left, None);
        assert_eq!(ctx.ports.target_groups.active(OLD), Some(Vec::new()));
    }

    #[tokio::test]
    async fn a_previous_group_that_is_gone_is_forgotten() {
        let ctx = context_on(Arc::new(Recorded::default()), FakeTargetGroups::default(), FakeCluster::default()).await;
        let mut record = claimed(&["10.0.0.1"]);
        assert_eq!(clean(&ctx, &moved(true), &mut record).await, None);
        assert!(record.claims(OLD).is_none(), "{record:?}");
    }

    #[tokio::test]
    async fn a_previous_group_that_cannot_be_read_is_reported_and_its_claims_kept() {
        let groups = FakeTargetGroups::default().with_group(OLD, &["10.0.0.1"]);
        groups.fail_with(AwsError::AccessDenied { op: "DescribeTargetHealth", message: "no".into() });
        let ctx = context_on(Arc::new(Recorded::default()), groups, FakeCluster::default()).await;
        let mut record = claimed(&["10.0.0.1"]);
        let left = clean(&ctx, &moved(true), &mut record).await.expect("reported");
        assert!(left.contains("not cleaned yet") && left.contains(OLD), "{left}");
        assert_eq!(record, claimed(&["10.0.0.1"]), "nothing is forgotten");
        let status = crate::plan::status::status(crate::plan::status::StatusInputs {
            tg_arn: ARN,
            tg_name: "web",
            shared: true,
            wanted: &Wanted::default(),
            report: &GroupReport::default(),
            left_behind: Some(&left),
            networking: None,
        });
        assert!(matches!(status.observed.ready, Err((ref r, _)) if r == "PreviousTargetGroupNotCleaned"));
    }

    /// The Service `web` (port 80, `http`) whose pods are selected.
    fn web() -> ServiceView {
        ServiceView {
            type_: None,
            ports: vec![ServicePortView { name: Some("http".into()), port: 80, node_port: None }],
            selects_pods: true,
        }
    }

    /// An EndpointSlice of `web` with ready endpoints at `ips`, port 8080.
    fn slice_of(ips: &[&str]) -> SliceView {
        SliceView {
            family: AddressFamily::Ipv4,
            ports: vec![SlicePort { name: Some("http".into()), port: Some(8080) }],
            endpoints: ips
                .iter()
                .map(|ip| EndpointView { addresses: vec![(*ip).into()], ready: Some(true), ..Default::default() })
                .collect(),
        }
    }

    /// An exclusive ip binding of `web` on `ARN` (holding 10.0.0.1), whose watches show `service`
    /// and `slices`, and whose live read shows `live`.
    async fn watching(
        service: Option<ServiceView>,
        slices: Vec<SliceView>,
        live: LiveBackend,
    ) -> (TestContext, Arc<Recorded>, TargetGroupBinding) {
        let writes = Arc::new(Recorded::default());
        let cluster = FakeCluster::default();
        if let Ok(mut backend) = cluster.backend.lock() {
            *backend = live;
        }
        let groups = FakeTargetGroups::default().with_group(ARN, &["10.0.0.1"]);
        let mut ctx = context_on(writes.clone(), groups, cluster).await;
        let key = BackendKey { namespace: "demo".into(), service: "web".into() };
        let wake = ctx.watches.wake.clone();
        ctx.watches.backends = BackendIndex::seeded(test_client(), wake, &key, service, slices);
        let tgb = binding(json!({"targetGroupARN": ARN, "serviceRef": {"name": "web", "port": 80},
                                 "targetType": "ip"}));
        (ctx, writes, tgb)
    }

    /// Issue #19's outage: a Service re-created, its slices not re-published yet. The backend is
    /// a mistake or a moment, never "no endpoints": every target stays, the status says why.
    #[tokio::test]
    async fn a_service_whose_endpoints_are_not_published_keeps_every_target() {
        let (ctx, _, tgb) = watching(Some(web()), Vec::new(), LiveBackend::default()).await;
        let error = apply(&tgb, &ctx).await.expect_err("fail static");
        assert_eq!(error.reason(), "EndpointsNotPublished", "{error}");
        assert_eq!(ctx.ports.target_groups.active(ARN), Some(vec!["10.0.0.1".to_owned()]));
    }

    #[tokio::test]
    async fn a_missing_service_keeps_every_target() {
        let (ctx, _, tgb) = watching(None, Vec::new(), LiveBackend::default()).await;
        let error = apply(&tgb, &ctx).await.expect_err("fail static");
        assert_eq!(error.reason(), "ServiceNotFound", "{error}");
        assert_eq!(ctx.ports.target_groups.active(ARN), Some(vec!["10.0.0.1".to_owned()]));
    }

    /// The watches say the backend is empty: that is read live before the group is emptied, and
    /// the live read wins.
    #[tokio::test]
    async fn an_empty_backend_is_confirmed_live_before_the_group_is_emptied() {
        let live = LiveBackend { service: Some(web()), slices: vec![slice_of(&["10.0.0.5"])] };
        let (ctx, writes, tgb) = watching(Some(web()), vec![slice_of(&[])], live).await;
        apply(&tgb, &ctx).await.expect("apply");
        assert_eq!(ctx.ports.target_groups.active(ARN), Some(vec!["10.0.0.5".to_owned()]), "the live read wins");

        let confirmed = LiveBackend { service: Some(web()), slices: vec![slice_of(&[])] };
        let (ctx, writes_2, tgb) = watching(Some(web()), vec![slice_of(&[])], confirmed).await;
        apply(&tgb, &ctx).await.expect("apply");
        assert_eq!(ctx.ports.target_groups.active(ARN), Some(Vec::new()), "confirmed empty: emptied");
        for writes in [writes, writes_2] {
            let statuses = writes.statuses.lock().expect("statuses").clone();
            assert!(statuses.last().is_some_and(|s| s.ready.is_ok()), "{statuses:?}");
        }
    }

    /// A rule on a port its pods name, while their ports cannot be read: the targets are fed all
    /// the same, the ask is left broken (what it asked before stays, never narrowed), and the
    /// status says why.
    #[tokio::test]
    async fn pods_whose_ports_cannot_be_read_hold_back_no_target_and_narrow_no_rule() {
        let (ctx, writes, mut tgb) = watching(Some(web()), vec![slice_of(&["10.0.0.5"])], LiveBackend::default()).await;
        ctx.ports.cluster.ports_unreadable.store(true, std::sync::atomic::Ordering::Relaxed);
        let networking =
            json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "ports": [{"port": "web"}]}]});
        tgb.spec.networking = Some(serde_json::from_value(networking).expect("networking"));
        apply(&tgb, &ctx).await.expect("apply");
        assert_eq!(ctx.ports.target_groups.active(ARN), Some(vec!["10.0.0.5".to_owned()]));
        let asked = ctx.networking.state().asks.get("u-1").map(|(_, ask)| ask.clone());
        assert!(matches!(asked, Some(crate::controller::asks::Ask::Broken { .. })), "{asked:?}");
        let statuses = writes.statuses.lock().expect("statuses").clone();
        let ready = statuses.last().map(|s| s.ready.clone());
        assert!(matches!(&ready, Some(Err((reason, _))) if reason == "KubernetesAPIError"), "{ready:?}");
    }

    /// A shared binding whose record was deleted by hand while its status says it registered 2:
    /// what its endpoints hold in the group (10.0.0.2) is claimed again and written back before
    /// anything is fed; the other (10.0.0.1) can no longer be told from another cluster's, so it
    /// stays, and the loss is remembered on the binding with a Warning.
    #[tokio::test]
    async fn a_lost_record_is_claimed_again_from_the_endpoints_and_the_loss_remembered() {
        let (mut ctx, writes, mut tgb) =
            watching(Some(web()), vec![slice_of(&["10.0.0.2"])], LiveBackend::default()).await;
        ctx.ports.target_groups = FakeTargetGroups::default().with_group(ARN, &["10.0.0.1", "10.0.0.2"]);
        tgb.spec.multi_cluster_target_group = Some(true);
        tgb.status = Some(crate::api::TargetGroupBindingStatus {
            target_group_arn: Some(ARN.into()),
            registered_targets: Some(2),
            ..Default::default()
        });
        apply(&tgb, &ctx).await.expect("apply");
        let log = writes.log();
        let lost = format!("annotated {}=2", crate::plan::lost_record::RECORD_LOST_ANNOTATION);
        assert_eq!(log[..3], ["finalizer added".to_owned(), lost, "Warning OwnershipRecordLost".to_owned()], "{log:?}");
        assert_eq!(ctx.ports.target_groups.active(ARN), Some(vec!["10.0.0.1".to_owned(), "10.0.0.2".to_owned()]));
        let claimed = ctx.ports.records.get(&binding_id(&tgb)).and_then(|r| r.claims(ARN).map(|c| c.len()));
        assert_eq!(claimed, Some(1), "10.0.0.2 claimed again");
    }

    /// The record deleted by hand while this process remembers it: written back whole (its claim on
    /// 10.0.0.1 stays the registration it was, not an adoption made anew), and the operator told.
    #[tokio::test]
    async fn a_record_deleted_by_hand_comes_back_whole_from_memory() {
        let (ctx, writes, mut tgb) = watching(Some(web()), vec![slice_of(&["10.0.0.1"])], LiveBackend::default()).await;
        tgb.spec.multi_cluster_target_group = Some(true);
        let id = binding_id(&tgb);
        let registered = [(TargetId::new("10.0.0.1", 8080), Claim::Registered)];
        let known = Record::default().with_group(ARN, registered.clone().into());
        ctx.ports.records.remembered.lock().expect("memory").insert(id.clone(), known);
        apply(&tgb, &ctx).await.expect("apply");
        assert!(writes.log().contains(&"Warning OwnershipRecordRestored".to_owned()), "{:?}", writes.log());
        let claims = ctx.ports.records.get(&id).and_then(|r| r.claims(ARN).cloned());
        assert_eq!(claims, Some(registered.into()));
    }

    /// Shared: the other cluster's target (10.0.0.1, unclaimed) stays; this binding's claimed one
    /// whose endpoint left (10.0.0.2) goes; the new endpoint (10.0.0.5) is registered and claimed;
    /// the status counts the claims.
    #[tokio::test]
    async fn a_shared_binding_changes_only_what_it_claims_and_counts_its_claims() {
        let live = LiveBackend::default();
        let (mut ctx, writes, mut tgb) = watching(Some(web()), vec![slice_of(&["10.0.0.5"])], live).await;
        ctx.ports.target_groups = FakeTargetGroups::default().with_group(ARN, &["10.0.0.1", "10.0.0.2"]);
        tgb.spec.multi_cluster_target_group = Some(true);
        let id = binding_id(&tgb);
        let claims = [(TargetId::new("10.0.0.2", 8080), crate::plan::ownership::Claim::Registered)];
        ctx.ports.records.put(&id, Record::default().with_group(ARN, claims.into()));
        apply(&tgb, &ctx).await.expect("apply");
        let active = ctx.ports.target_groups.active(ARN).unwrap_or_default();
        assert_eq!(active, vec!["10.0.0.1".to_owned(), "10.0.0.5".to_owned()]);
        let claimed = ctx.ports.records.get(&id).and_then(|r| r.claims(ARN).map(|c| c.keys().cloned().collect()));
        assert_eq!(claimed, Some(vec![TargetId::new("10.0.0.5", 8080)]));
        let statuses = writes.statuses.lock().expect("statuses").clone();
        assert_eq!(statuses.last().and_then(|s| s.claimed), Some(1), "{statuses:?}");
    }
}
