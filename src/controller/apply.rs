//! The apply path: index → plan → AWS → status, for a binding that is not being deleted.

use std::collections::BTreeSet;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::context::{Context, fingerprint};
use super::error::ReconcileError;
use super::networking;
use super::targets::{apply_plan, siblings_of};
use crate::api::{TargetGroupBinding, TargetType};
use crate::aws::security_groups::SecurityGroups;
use crate::aws::{Network, TargetGroups};
use crate::index::{Backend, BackendKey, Nodes, selector};
use crate::k8s::live::{LiveBackend, LiveTargets, read_backend};
use crate::k8s::status::Observed;
use crate::k8s::{finalizer, status};
use crate::model::Target;
use crate::model::TargetGroupInfo;
use crate::plan::desired::PortRef;
use crate::plan::desired::{ip_targets, serving_pods, with_availability_zones};
use crate::plan::diff::{Ownership, plan_targets};
use crate::plan::guard::{self, Verdict};
use crate::plan::instance::{Selector, SkippedNode, instance_targets};
use crate::plan::ownership;
use crate::plan::validate::{Resolved, check_against, check_spec};

/// How soon to look again when the inputs are not known yet or a live read disagreed.
const RECHECK_SOON: Duration = Duration::from_secs(2);

pub async fn apply<T: TargetGroups, N: Network, S: SecurityGroups>(
    tgb: &TargetGroupBinding,
    ctx: &Context<T, N, S>,
) -> Result<Action, ReconcileError> {
    let namespace = tgb.namespace().unwrap_or_default();
    let api: Api<TargetGroupBinding> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = tgb.uid().unwrap_or_default();
    finalizer::ensure(&api, tgb).await.map_err(ReconcileError::kube("add the finalizer"))?;

    let (tg_ref, port_ref) = check_spec(&tgb.spec)?;
    let binding = ObjectRef::from_obj(tgb);
    let key = BackendKey { namespace: namespace.clone(), service: tgb.spec.service_ref.name.clone() };
    let backend = ctx.index.track(&binding, &key);
    let mut nodes = (tgb.spec.target_type == Some(TargetType::Instance) || ctx.was_instance_mode(&uid))
        .then(|| ctx.nodes.track(&binding));
    if !backend.synced() || nodes.as_ref().is_some_and(|n| !n.synced()) {
        // The watches wake this binding once their first list is in.
        return Ok(Action::requeue(RECHECK_SOON));
    }
    if let Some(until_drift_check) = ctx.unchanged_until_drift_check(&uid, fingerprint(tgb, &backend, nodes.as_ref())) {
        return Ok(Action::requeue(until_drift_check));
    }

    let tg = ctx.target_group(&tg_ref).await?;
    let resolved = check_against(&tgb.spec, &tg)?;
    let instance_mode = resolved.target_type == TargetType::Instance;
    ctx.set_instance_mode(&uid, instance_mode);
    if !instance_mode {
        ctx.nodes.untrack(&binding);
        nodes = None;
    } else if nodes.is_none() {
        let tracked = ctx.nodes.track(&binding);
        if !tracked.synced() {
            return Ok(Action::requeue(RECHECK_SOON));
        }
        nodes = Some(tracked);
    }
    let inputs = fingerprint(tgb, &backend, nodes.as_ref());
    let node_selector = match &tgb.spec.node_selector {
        Some(s) => Some(selector(s).map_err(ReconcileError::InvalidNodeSelector)?),
        None => None,
    };
    let multi_cluster = tgb.spec.multi_cluster_target_group == Some(true);
    let siblings = siblings_of(tgb, &tg.arn, &ctx.bindings.state())?;
    let protected = ctx.wanted_by_others(&uid, &tg.arn, &siblings);

    let _serialized = ctx.locks.lock(&tg.arn).await;
    let Desired { targets: desired, problem: backend_problem, skipped } =
        desired_targets(ctx, &backend, &key, &port_ref, &tg, &resolved, nodes.as_ref(), node_selector.as_ref()).await?;
    let current = ctx.target_groups.targets(&tg.arn).await?;
    let owned = if multi_cluster { ctx.records.read(tgb).await? } else { None };
    let no_record = BTreeSet::new();
    let ownership = if multi_cluster {
        Ownership::Shared { owned: owned.as_ref().unwrap_or(&no_record) }
    } else {
        Ownership::Exclusive
    };
    let plan = plan_targets(&desired, &current, ownership, &protected);

    if guard::check(desired.len(), &plan, false) == Verdict::ConfirmEmpty {
        let how = if instance_mode {
            LiveTargets::Instance(node_selector.as_ref())
        } else {
            LiveTargets::Ip(resolved.family)
        };
        let live = read_backend(&ctx.client, &key, &port_ref, how)
            .await
            .map_err(ReconcileError::kube("confirm the backend with a live read"))?;
        if let LiveBackend::Targets(n) = live
            && n > 0
        {
            tracing::warn!(backend = %key, live_targets = n, "watch cache shows no endpoints but the API server has some; not deregistering");
            return Ok(Action::requeue(RECHECK_SOON));
        }
    }

    // The record grows before RegisterTargets, so a crash can never leave a target this
    // cluster registered outside it.
    let record = multi_cluster.then(|| ownership::before_apply(owned.as_ref().unwrap_or(&no_record), &desired));
    if let Some(record) = &record
        && owned.as_ref() != Some(record)
    {
        ctx.records.write(tgb, &tg.arn, record).await?;
    }
    let applied = apply_plan(ctx, tgb, &tg.arn, &plan).await;
    if let Some(record) = &record
        && !applied.deregistered.is_empty()
    {
        ctx.records.write(tgb, &tg.arn, &ownership::after_deregister(record, &applied.deregistered)).await?;
    }
    applied.result?;
    let pods =
        if instance_mode { BTreeSet::new() } else { serving_pods(backend.slices.by_name.values(), resolved.family) };
    let endpoints = networking::Endpoints {
        target_is_ip: !instance_mode,
        vpc_id: tg.vpc_id.as_deref(),
        targets: &desired,
        pods: &pods,
    };
    networking::reconcile(ctx, tgb, endpoints).await?;

    let desired_ids: BTreeSet<_> = desired.iter().map(|t| t.id.clone()).collect();
    let observed = Observed {
        ready: match backend_problem {
            None if skipped.is_empty() => {
                Ok(format!("{} targets registered in target group {}", desired.len(), tg.name))
            }
            None => {
                let nodes: Vec<String> = skipped.iter().map(|s| format!("{} {}", s.node, s.reason)).collect();
                let message = format!("skipped nodes: {}", nodes.join("; "));
                ctx.events.warning(tgb, "NodeSkipped", message.clone()).await;
                Ok(format!("{} targets registered in target group {}; {message}", desired.len(), tg.name))
            }
            Some((reason, message)) => {
                ctx.events.warning(tgb, reason, format!("{message}; its targets were deregistered")).await;
                Err((reason.to_owned(), message))
            }
        },
        desired: Some(desired.len()),
        registered: Some(desired.len()),
        target_group_arn: Some(tg.arn.clone()),
    };
    ctx.metrics.registered_targets(&namespace, &tgb.name_any(), Some(desired.len()));
    status::update(&api, tgb, &observed).await.map_err(ReconcileError::kube("update the status"))?;
    let next_check = ctx.converged(&uid, inputs, &tg.arn, desired_ids);
    Ok(Action::requeue(next_check))
}

/// The targets a binding wants, or why its backend cannot supply any.
struct Desired {
    targets: BTreeSet<Target>,
    /// The Service or its port is missing: the group is emptied and the condition says why.
    problem: Option<(&'static str, String)>,
    /// Instance mode: nodes left out because no instance could be found for them.
    skipped: Vec<SkippedNode>,
}

#[allow(clippy::too_many_arguments)]
async fn desired_targets<T: TargetGroups, N: Network, S: SecurityGroups>(
    ctx: &Context<T, N, S>,
    backend: &Backend,
    key: &BackendKey,
    port_ref: &PortRef,
    tg: &TargetGroupInfo,
    resolved: &Resolved,
    nodes: Option<&Nodes>,
    node_selector: Option<&Selector>,
) -> Result<Desired, ReconcileError> {
    let gone =
        |reason, message| Desired { targets: BTreeSet::new(), problem: Some((reason, message)), skipped: vec![] };
    let Some(service) = backend.service() else {
        return Ok(gone("ServiceNotFound", format!("Service {key} not found")));
    };
    let Some(port) = service.port(port_ref) else {
        return Ok(gone("ServicePortNotFound", format!("Service {key} has no port {port_ref:?}")));
    };
    let Some(nodes) = nodes else {
        let ids = ip_targets(port, backend.slices.by_name.values(), resolved.family);
        let cidrs = match tg.vpc_id.as_deref() {
            Some(vpc) => Some(ctx.vpc_cidrs(vpc).await?),
            None => None,
        };
        return Ok(Desired { targets: with_availability_zones(ids, cidrs.as_deref()), problem: None, skipped: vec![] });
    };
    let type_ = service.type_.clone().unwrap_or_else(|| "ClusterIP".to_owned());
    let node_port = port.node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0);
    let node_port = match (type_.as_str(), node_port) {
        ("NodePort" | "LoadBalancer", Some(node_port)) => node_port,
        _ => return Err(ReconcileError::InvalidServiceType { service: key.to_string(), type_ }),
    };
    let found = instance_targets(nodes.by_name.values(), node_selector, node_port);
    Ok(Desired { targets: found.targets.into_iter().map(Target::new).collect(), problem: None, skipped: found.skipped })
}
