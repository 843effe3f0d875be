//! `spec.networking`: each binding's part of the security-group rules, and the reconcile of every
//! group those parts (or earlier ones) touch. Rules are aggregated across all bindings of this
//! cluster, so a rule several bindings need stays until the last of them is gone; a binding that
//! is broken right now protects its rules instead of blocking anyone else's cleanup.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::context::Context;
use super::error::ReconcileError;
use crate::api::TargetGroupBinding;
use crate::aws::security_groups::SecurityGroups;
use crate::aws::{Network, TargetGroups};
use crate::k8s::pods::named_container_ports;
use crate::model::Target;
use crate::model::sg_rule::{EniGroups, IngressRule};
use crate::plan::sg_rules::{
    BindingRules, NetworkingError, desired_rules, plan_group, rules_for_binding, select_groups,
};

/// What each binding (by UID) contributes. One async lock around all of it serializes the
/// security-group work of the whole agent, so two reconciles never plan a group against each
/// other's half-applied changes.
#[derive(Default)]
pub struct Contributions {
    by_binding: tokio::sync::Mutex<HashMap<String, Contribution>>,
    /// When the groups were last planned against AWS: re-planned when a contribution changes, and
    /// otherwise at most once per drift interval (to repair rules removed by hand).
    last_sync: std::sync::Mutex<Option<Instant>>,
    /// Instance id or IP → its ENI and groups, trusted for half a drift interval: a node's groups
    /// rarely change, and node flaps must not cost an EC2 lookup each.
    enis: std::sync::Mutex<HashMap<String, (EniGroups, Instant)>>,
}

impl Contributions {
    fn sync_due(&self, every: Duration) -> bool {
        self.last_sync.lock().unwrap_or_else(|p| p.into_inner()).is_none_or(|at| at.elapsed() >= every)
    }

    fn synced(&self) {
        *self.last_sync.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn cached_enis(&self, ids: &[String], ttl: Duration) -> (BTreeMap<String, EniGroups>, Vec<String>) {
        let cache = self.enis.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        for id in ids {
            match cache.get(id) {
                Some((groups, at)) if at.elapsed() < ttl => {
                    found.insert(id.clone(), groups.clone());
                }
                _ => missing.push(id.clone()),
            }
        }
        (found, missing)
    }

    fn remember_enis(&self, looked_up: &BTreeMap<String, EniGroups>) {
        let now = Instant::now();
        let mut cache = self.enis.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(3600));
        cache.extend(looked_up.iter().map(|(id, groups)| (id.clone(), (groups.clone(), now))));
    }
}

#[derive(Clone, Debug)]
enum Contribution {
    /// Its rules, on the groups of its targets.
    Known(BindingRules),
    /// Its groups cannot be resolved right now: these rules are never revoked, anywhere.
    Broken(BTreeSet<IngressRule>),
}

/// What a binding's rules are computed from.
pub struct Endpoints<'a> {
    pub target_is_ip: bool,
    pub vpc_id: Option<&'a str>,
    pub targets: &'a BTreeSet<Target>,
    /// ip targets: the pods behind them (for named ports).
    pub pods: &'a BTreeSet<String>,
}

/// Computes `tgb`'s rules for its endpoints and reconciles every affected group.
pub async fn reconcile<T: TargetGroups, N: Network, S: SecurityGroups>(
    ctx: &Context<T, N, S>,
    tgb: &TargetGroupBinding,
    endpoints: Endpoints<'_>,
) -> Result<(), ReconcileError> {
    let uid = tgb.uid().unwrap_or_default();
    let target_is_ip = endpoints.target_is_ip;
    let mut contributions = ctx.networking.by_binding.lock().await;
    let computed = contribution(ctx, tgb, &endpoints).await;
    match &computed {
        Ok(Some(rules)) => {
            let unchanged = matches!(contributions.get(&uid), Some(Contribution::Known(previous)) if previous == rules);
            if unchanged && !ctx.networking.sync_due(ctx.drift_interval) {
                return Ok(());
            }
            contributions.insert(uid, Contribution::Known(rules.clone()));
        }
        Ok(None) => {
            if contributions.remove(&uid).is_none() {
                // No networking now or before: nothing to reconcile, and no AWS call.
                return Ok(());
            }
        }
        Err(_) => {
            // Protect what it asked for before and what its spec asks for now.
            let mut protected = match contributions.get(&uid) {
                Some(Contribution::Known(previous)) => previous.rules.clone(),
                Some(Contribution::Broken(rules)) => rules.clone(),
                None => BTreeSet::new(),
            };
            if let Some(networking) = &tgb.spec.networking
                && let Ok(rules) = rules_for_binding(networking, target_is_ip, &BTreeMap::new())
            {
                protected.extend(rules);
            }
            contributions.insert(uid, Contribution::Broken(protected));
        }
    }
    // Even when this binding is broken, every other binding's groups are still reconciled.
    let synced = sync_groups(ctx, &contributions).await;
    computed.map(drop).and(synced)
}

/// Drops `tgb`'s rules (it is being deleted) and reconciles the groups.
pub async fn forget<T: TargetGroups, N: Network, S: SecurityGroups>(
    ctx: &Context<T, N, S>,
    tgb: &TargetGroupBinding,
) -> Result<(), ReconcileError> {
    let mut contributions = ctx.networking.by_binding.lock().await;
    let had_networking =
        contributions.remove(&tgb.uid().unwrap_or_default()).is_some() || tgb.spec.networking.is_some();
    if !had_networking {
        return Ok(());
    }
    sync_groups(ctx, &contributions).await
}

async fn contribution<T: TargetGroups, N: Network, S: SecurityGroups>(
    ctx: &Context<T, N, S>,
    tgb: &TargetGroupBinding,
    endpoints: &Endpoints<'_>,
) -> Result<Option<BindingRules>, ReconcileError> {
    let Endpoints { target_is_ip, vpc_id, targets, pods } = *endpoints;
    let Some(networking) = tgb.spec.networking.as_ref().filter(|n| !n.ingress.is_empty()) else {
        return Ok(None);
    };
    let names_a_port = networking
        .ingress
        .iter()
        .flat_map(|i| &i.ports)
        .any(|p| matches!(&p.port, Some(IntOrString::String(s)) if s.trim().parse::<u16>().is_err()));
    let named_ports = if names_a_port && target_is_ip {
        named_container_ports(&ctx.kube.client, &tgb.namespace().unwrap_or_default(), pods)
            .await
            .map_err(ReconcileError::kube("read the endpoint pods' container ports"))?
    } else {
        BTreeMap::new()
    };
    let rules = rules_for_binding(networking, target_is_ip, &named_ports)?;
    let ids: Vec<String> = targets.iter().map(|t| t.id.id.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let (mut enis, uncached) = ctx.networking.cached_enis(&ids, ctx.drift_interval / 2);
    if !uncached.is_empty() {
        let looked_up = if target_is_ip {
            let vpc =
                vpc_id.ok_or_else(|| NetworkingError::EniNotFound("pod IPs: the target group has no VPC".into()))?;
            ctx.aws.security_groups.enis_for_ips(vpc, &uncached).await?
        } else {
            ctx.aws.security_groups.instance_enis(&uncached).await?
        };
        ctx.networking.remember_enis(&looked_up);
        enis.extend(looked_up);
    }
    let missing: Vec<&String> = ids.iter().filter(|id| !enis.contains_key(*id)).collect();
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        return Err(NetworkingError::EniNotFound(names.join(", ")).into());
    }
    let groups = select_groups(enis.values(), &ctx.cluster_name)?;
    let binding = format!("{}/{}", tgb.namespace().unwrap_or_default(), tgb.name_any());
    Ok(Some(BindingRules { binding, groups, rules }))
}

/// Plans and applies every group that is desired or holds this cluster's rules: authorize first,
/// then revoke. Revocation waits until every binding with networking has been computed since the
/// agent started, so a restart never revokes the rules of a binding not yet seen. A failing group
/// does not stop the others; the first failure is returned.
async fn sync_groups<T: TargetGroups, N: Network, S: SecurityGroups>(
    ctx: &Context<T, N, S>,
    contributions: &HashMap<String, Contribution>,
) -> Result<(), ReconcileError> {
    let known: Vec<BindingRules> = contributions
        .values()
        .filter_map(|c| match c {
            Contribution::Known(rules) => Some(rules.clone()),
            Contribution::Broken(_) => None,
        })
        .collect();
    let protected: BTreeSet<IngressRule> = contributions
        .values()
        .filter_map(|c| match c {
            Contribution::Broken(rules) => Some(rules.iter().cloned()),
            Contribution::Known(_) => None,
        })
        .flatten()
        .collect();
    let all_computed = ctx
        .kube
        .bindings
        .state()
        .iter()
        .filter(|b| b.spec.networking.is_some() && b.metadata.deletion_timestamp.is_none())
        .all(|b| contributions.contains_key(&b.uid().unwrap_or_default()));
    let desired = desired_rules(&known);
    let mut groups: BTreeSet<String> = desired.keys().cloned().collect();
    groups.extend(ctx.aws.security_groups.groups_with_rules_of(&ctx.cluster_name).await?);

    let none = BTreeSet::new();
    let mut first_error = None;
    for group in groups {
        let result = sync_group(ctx, &group, desired.get(&group).unwrap_or(&none), &protected, all_computed).await;
        if let Err(error) = result {
            tracing::warn!(%group, %error, "security group not reconciled");
            first_error.get_or_insert(error);
        }
    }
    match first_error {
        None => {
            ctx.networking.synced();
            Ok(())
        }
        Some(error) => Err(error),
    }
}

async fn sync_group<T: TargetGroups, N: Network, S: SecurityGroups>(
    ctx: &Context<T, N, S>,
    group: &str,
    desired: &BTreeSet<IngressRule>,
    protected: &BTreeSet<IngressRule>,
    may_revoke: bool,
) -> Result<(), ReconcileError> {
    let existing = ctx.aws.security_groups.ingress_rules(group, &ctx.cluster_name).await?;
    let plan = plan_group(group, desired, &existing, protected);
    if !plan.authorize.is_empty() {
        ctx.aws.security_groups.authorize(group, &plan.authorize, &ctx.cluster_name).await?;
        let rules: Vec<String> = plan.authorize.iter().map(ToString::to_string).collect();
        tracing::info!(group, rules = %rules.join("; "), "authorized ingress rules");
    }
    if may_revoke && !plan.revoke.is_empty() {
        ctx.aws.security_groups.revoke(group, &plan.revoke).await?;
        tracing::info!(group, count = plan.revoke.len(), "revoked ingress rules no binding needs");
    }
    Ok(())
}
