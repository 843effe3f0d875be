//! `spec.networking`: bindings *publish* what they ask for; a loop of its own reconciles each
//! security group. Target reconciles never wait for it and share no lock with it, so EC2
//! throttling never delays a registration.
//!
//! Each pass: resolve every published ask to the security groups of its targets' network
//! interfaces (cached lookups), then per group read its rules once, plan (pure, with per-cluster
//! claims) and write: authorize one rule per call, claim, release, revoke. A failure is reported to
//! the bindings that need the failing rule or group only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::asks::{Ask, BindingRef, Outcome};
use super::context::Context;
use super::error::ReconcileError;
use super::ports::Ports;
use crate::api::TargetGroupBinding;
use crate::aws::security_groups::{SecurityGroupError, SecurityGroups};
use crate::clock::unix_now;
use crate::model::sg_rule::{EniGroups, IngressRule};
use crate::plan::binding::{AskProblem, Endpoints, SecurityAsk, derivable_rules};
use crate::plan::sg_rules::{GroupInputs, NetworkingError, plan_group, select_groups, unclaimed_grace};

/// Publishes what `tgb` asks of the security groups, as its plan decided; a broken ask keeps what
/// it asked before (and what it can still derive) protected. Returns why it is broken, if it is:
/// `ports_unread` is why its pods' container ports could not be read, if they could not.
pub fn publish<P: Ports>(
    ctx: &Context<P>,
    tgb: &TargetGroupBinding,
    uid: &str,
    ask: SecurityAsk,
    ports_unread: Option<ReconcileError>,
) -> Option<ReconcileError> {
    match ask {
        SecurityAsk::Withdraw => ctx.networking.withdraw(uid),
        SecurityAsk::Rules { rules, endpoints: Endpoints { target_is_ip, vpc_id, ids } } => {
            ctx.networking.publish(uid, ObjectRef::from_obj(tgb), Ask::Rules { rules, target_is_ip, vpc_id, ids })
        }
        SecurityAsk::Broken { derivable, why } => {
            ctx.networking.broken(uid, ObjectRef::from_obj(tgb), derivable);
            return match why {
                AskProblem::Rules(e) => Some(ReconcileError::Networking(e)),
                AskProblem::PortsUnread => ports_unread,
            };
        }
    }
    None
}

/// `tgb` failed before saying what it asks: what it asked before, and what its spec still says,
/// stay protected; a binding without networking protects nothing.
pub fn mark_broken<P: Ports>(ctx: &Context<P>, tgb: &TargetGroupBinding) {
    let (Some(_), Some(uid)) = (&tgb.spec.networking, tgb.uid()) else { return };
    ctx.networking.broken(&uid, ObjectRef::from_obj(tgb), derivable_rules(tgb));
}

/// Runs the security-group loop until the process stops: a pass whenever an ask changes, and at
/// least once per drift interval (to repair rules removed by hand), sooner while a grace runs.
pub async fn run_loop<P: Ports>(ctx: Arc<Context<P>>) {
    // Until the bindings are listed, a missing binding proves nothing. The store wakes only one of
    // several waiters, so ask again until it answers.
    loop {
        match tokio::time::timeout(Duration::from_millis(500), ctx.kube.bindings.wait_until_ready()).await {
            Ok(Ok(())) => break,
            Ok(Err(_)) => return,
            Err(_) => {}
        }
    }
    let mut next = ctx.drift_interval;
    loop {
        tokio::select! {
            () = ctx.networking.changed.notified() => {}
            () = tokio::time::sleep(next) => {}
        }
        next = pass(&ctx).await.unwrap_or(ctx.drift_interval).min(ctx.drift_interval);
    }
}

/// One pass over every group; returns when to look again.
async fn pass<P: Ports>(ctx: &Context<P>) -> Option<Duration> {
    let bindings = ctx.kube.bindings.state();
    let (asks, ever_asked, swept) = {
        let mut state = ctx.networking.state();
        // A binding gone from the cluster (even with its finalizer removed by hand) asks nothing.
        let present: BTreeSet<String> = bindings.iter().filter_map(|b| b.uid()).collect();
        state.asks.retain(|uid, _| present.contains(uid));
        (state.asks.clone(), state.ever_asked, state.swept)
    };
    let may_release = may_release(bindings.iter().map(AsRef::as_ref), |uid| asks.contains_key(uid));
    // With nothing asked, claims an earlier run left (its bindings lost their rules while it was
    // down) are still released: once every ask is known to be empty, and until a pass finds
    // nothing left, so that bindings without rules cost no EC2 call after that.
    if !ever_asked && (swept || !may_release) {
        return None;
    }

    let mut outcomes: HashMap<String, Outcome> = asks.keys().map(|uid| (uid.clone(), None)).collect();
    let mut desired: BTreeMap<String, BTreeMap<IngressRule, BTreeSet<String>>> = BTreeMap::new();
    let mut protected: BTreeSet<IngressRule> = BTreeSet::new();
    for (uid, (_, ask)) in &asks {
        match ask {
            Ask::Broken { protect } => protected.extend(protect.iter().cloned()),
            Ask::Rules { rules, target_is_ip, vpc_id, ids } => {
                match groups_of(ctx, *target_is_ip, vpc_id.as_deref(), ids).await {
                    Ok(groups) => {
                        for group in groups {
                            for rule in rules {
                                desired
                                    .entry(group.clone())
                                    .or_default()
                                    .entry(rule.clone())
                                    .or_default()
                                    .insert(uid.clone());
                            }
                        }
                    }
                    Err(e) => {
                        protected.extend(rules.iter().cloned());
                        outcomes.insert(uid.clone(), Some((e.reason(), e.to_string())));
                    }
                }
            }
        }
    }
    let mut groups: BTreeSet<String> = desired.keys().cloned().collect();
    // Groups where a rule waits out its grace before it is revoked.
    groups.extend(
        ctx.networking.state().unclaimed_since.iter().filter(|(_, rules)| !rules.is_empty()).map(|(g, _)| g.clone()),
    );
    // Whether this pass left anything to do: a failure, a write, a grace still running.
    let mut left = false;
    match ctx.ports.security_groups().groups_with_rules_of(&ctx.cluster_name).await {
        Ok(claimed) => groups.extend(claimed),
        Err(error) => {
            left = true;
            tracing::warn!(%error, "could not list the security groups holding this cluster's rules")
        }
    }
    let grace = unclaimed_grace(ctx.drift_interval.as_secs());
    let mut recheck: Option<u64> = None;
    let no_rules = BTreeMap::new();
    for group in groups {
        let wanted = desired.get(&group).unwrap_or(&no_rules);
        match reconcile_security_group(ctx, &group, wanted, &protected, may_release, grace).await {
            Ok(done) => {
                left |= done.wrote || done.recheck.is_some();
                if let Some(r) = done.recheck {
                    recheck = Some(recheck.map_or(r, |x| x.min(r)));
                }
            }
            Err(failures) => {
                left = true;
                for (uid, outcome) in failures {
                    outcomes.insert(uid, Some(outcome));
                }
            }
        }
    }
    if !ever_asked && !left {
        ctx.networking.state().swept = true;
    }
    report(ctx, &asks, outcomes);
    recheck.map(Duration::from_secs)
}

/// Stores the outcomes and wakes each binding whose outcome changed, so its status shows it.
fn report<P: Ports>(ctx: &Context<P>, asks: &HashMap<String, (BindingRef, Ask)>, outcomes: HashMap<String, Outcome>) {
    let mut wake = Vec::new();
    {
        let mut state = ctx.networking.state();
        for (uid, outcome) in outcomes {
            let previous = state.results.get(&uid).map(|(_, o)| o.clone());
            if previous.as_ref() != Some(&outcome) {
                state.version += 1;
                let version = state.version;
                if let Some((binding, _)) = asks.get(&uid) {
                    wake.push(binding.clone());
                }
                state.results.insert(uid, (version, outcome));
            }
        }
    }
    for binding in wake {
        ctx.networking.wake.reconcile(&binding);
    }
}

/// Whether this cluster's claims may be released: every binding whose spec asks for rules has
/// said what it asks since start (`spoken`). A binding with no rules in its spec (no `networking`,
/// `networking: {}`, an empty `ingress`) asks nothing, and one being deleted asks nothing more:
/// neither holds releases back. Before that, a release could revoke a rule a binding still needs.
fn may_release<'a>(bindings: impl IntoIterator<Item = &'a TargetGroupBinding>, spoken: impl Fn(&str) -> bool) -> bool {
    bindings
        .into_iter()
        .filter(|b| b.metadata.deletion_timestamp.is_none())
        .filter(|b| b.spec.networking.as_ref().is_some_and(|n| !n.ingress.is_empty()))
        .all(|b| b.uid().is_some_and(|uid| spoken(&uid)))
}

/// How one group's reconcile went, when nothing failed.
struct GroupDone {
    /// Seconds until a rule's grace runs out.
    recheck: Option<u64>,
    /// The plan wrote something.
    wrote: bool,
}

/// Plans and applies one group. `Err`: the bindings whose rules failed, with why.
async fn reconcile_security_group<P: Ports>(
    ctx: &Context<P>,
    group: &str,
    wanted: &BTreeMap<IngressRule, BTreeSet<String>>,
    protected: &BTreeSet<IngressRule>,
    may_release: bool,
    grace: u64,
) -> Result<GroupDone, Vec<(String, (&'static str, String))>> {
    let sg = &ctx.ports.security_groups();
    let cluster = ctx.cluster_name.as_str();
    let everyone = |e: &SecurityGroupError| -> Vec<(String, (&'static str, String))> {
        let uids: BTreeSet<&String> = wanted.values().flatten().collect();
        uids.into_iter().map(|u| (u.clone(), (e.reason(), e.to_string()))).collect()
    };
    let existing = sg.ingress_rules(group).await.map_err(|e| everyone(&e))?;
    let since = ctx.networking.state().unclaimed_since.get(group).cloned().unwrap_or_default();
    let desired: BTreeSet<IngressRule> = wanted.keys().cloned().collect();
    let plan = plan_group(GroupInputs {
        cluster,
        desired: &desired,
        protected,
        existing: &existing,
        unclaimed_since: &since,
        may_release,
        grace,
        now: unix_now(),
    });
    ctx.networking.state().unclaimed_since.insert(group.to_owned(), plan.unclaimed_since.clone());

    let mut failures = Vec::new();
    let fail = |failures: &mut Vec<_>, rule: &IngressRule, e: &SecurityGroupError| {
        for uid in wanted.get(rule).into_iter().flatten() {
            failures.push((uid.clone(), (e.reason(), format!("security group {group}, rule {rule}: {e}"))));
        }
    };
    let mut at_quota = Vec::new();
    for rule in &plan.authorize {
        match sg.authorize(group, rule, cluster).await {
            Ok(()) => tracing::info!(group, %rule, "authorized ingress rule"),
            // Another writer added it since the read: claimed at the next pass.
            Err(SecurityGroupError::Duplicate { .. }) => ctx.networking.changed.notify_one(),
            Err(e @ SecurityGroupError::RulesLimitExceeded { .. }) => at_quota.push((rule, e)),
            Err(e) => fail(&mut failures, rule, &e),
        }
    }
    if !plan.claim.is_empty() {
        match sg.claim(group, &plan.claim, cluster).await {
            // A rule revoked between our read and our claim is authorized again at the next
            // pass, which starts at once: the cluster must not lack it until the drift check.
            Ok(()) | Err(SecurityGroupError::RuleNotFound { .. }) => ctx.networking.changed.notify_one(),
            Err(e) => failures.extend(everyone(&e)),
        }
    }
    if let Err(error) = sg.release(group, &plan.release, cluster).await {
        tracing::warn!(group, %error, "could not release ingress rules");
    }
    match sg.revoke(group, &plan.revoke).await {
        Ok(()) if !plan.revoke.is_empty() => {
            tracing::info!(group, count = plan.revoke.len(), "revoked ingress rules nobody claims")
        }
        Ok(()) => {}
        Err(error) => tracing::warn!(group, %error, "could not revoke ingress rules"),
    }
    // At the quota, rules nobody claims went first; what still does not fit is reported.
    for (rule, first) in at_quota {
        match sg.authorize(group, rule, cluster).await {
            Ok(()) => tracing::info!(group, %rule, "authorized ingress rule after revoking unclaimed ones"),
            Err(SecurityGroupError::RulesLimitExceeded { .. }) if plan.recheck_in.is_some() => {
                let waiting = SecurityGroupError::RulesLimitExceeded {
                    op: "AuthorizeSecurityGroupIngress",
                    group: group.to_owned(),
                    message: format!(
                        "{first}; rules this cluster no longer needs are revoked within {}s, then this one is added",
                        plan.recheck_in.unwrap_or_default()
                    ),
                };
                fail(&mut failures, rule, &waiting);
            }
            Err(e) => fail(&mut failures, rule, &e),
        }
    }
    if failures.is_empty() { Ok(GroupDone { recheck: plan.recheck_in, wrote: plan.writes() }) } else { Err(failures) }
}

/// The security groups of the targets' interfaces: ENIs of the pod IPs (ip) or the nodes'
/// primary ENIs (instance), looked up once per half drift interval.
async fn groups_of<P: Ports>(
    ctx: &Context<P>,
    target_is_ip: bool,
    vpc_id: Option<&str>,
    ids: &BTreeSet<String>,
) -> Result<BTreeSet<String>, ReconcileError> {
    let ttl = ctx.drift_interval / 2;
    let (mut enis, missing) = {
        let state = ctx.networking.state();
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        for id in ids {
            match state.enis.get(id) {
                Some((groups, at)) if at.elapsed() < ttl => {
                    found.insert(id.clone(), groups.clone());
                }
                _ => missing.push(id.clone()),
            }
        }
        (found, missing)
    };
    if !missing.is_empty() {
        let looked_up = interfaces(ctx.ports.security_groups(), target_is_ip, vpc_id, &missing).await?;
        let now = Instant::now();
        let mut state = ctx.networking.state();
        state.enis.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(3600));
        state.enis.extend(looked_up.iter().map(|(id, groups)| (id.clone(), (groups.clone(), now))));
        enis.extend(looked_up);
    }
    groups_from(&enis, ids, &ctx.cluster_name)
}

/// The network interfaces (and their groups) of the targets: the pod IPs' ENIs in the group's VPC
/// (ip), or the nodes' primary ENIs (instance).
pub async fn interfaces<S: SecurityGroups>(
    security_groups: &S,
    target_is_ip: bool,
    vpc_id: Option<&str>,
    ids: &[String],
) -> Result<BTreeMap<String, EniGroups>, ReconcileError> {
    if target_is_ip {
        let vpc = vpc_id.ok_or_else(|| NetworkingError::EniNotFound("pod IPs: the target group has no VPC".into()))?;
        Ok(security_groups.enis_for_ips(vpc, ids).await?)
    } else {
        Ok(security_groups.instance_enis(ids).await?)
    }
}

/// The security groups the rules go to, once every target's interface is known.
pub fn groups_from(
    enis: &BTreeMap<String, EniGroups>,
    ids: &BTreeSet<String>,
    cluster: &str,
) -> Result<BTreeSet<String>, ReconcileError> {
    let unresolved: Vec<&str> = ids.iter().filter(|id| !enis.contains_key(*id)).map(String::as_str).collect();
    if !unresolved.is_empty() {
        return Err(NetworkingError::EniNotFound(unresolved.join(", ")).into());
    }
    Ok(select_groups(enis.values(), cluster)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{NetworkingIngressRule, TargetGroupBindingNetworking, TargetGroupBindingSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn binding(uid: &str, networking: Option<TargetGroupBindingNetworking>) -> TargetGroupBinding {
        let mut b = TargetGroupBinding::new(uid, TargetGroupBindingSpec { networking, ..Default::default() });
        b.metadata.namespace = Some("ns".into());
        b.metadata.uid = Some(uid.into());
        b
    }

    fn with_rules() -> Option<TargetGroupBindingNetworking> {
        Some(TargetGroupBindingNetworking { ingress: vec![NetworkingIngressRule::default()] })
    }

    /// A binding whose spec asks for no rule is known to ask nothing without its reconcile: with
    /// `networking: {}` left in a spec it used to hold every release of the cluster back for ever.
    #[test]
    fn only_bindings_whose_spec_asks_for_rules_hold_releases_back() {
        let none = binding("none", None);
        let empty = binding("empty", Some(TargetGroupBindingNetworking::default()));
        let asking = binding("asking", with_rules());
        let mut leaving = binding("leaving", with_rules());
        let t = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("valid time");
        leaving.metadata.deletion_timestamp = Some(Time(t));
        let nobody = |_: &str| false;

        assert!(may_release([&none, &empty, &leaving], nobody), "nothing to wait for");
        assert!(!may_release([&none, &empty, &asking], nobody), "a binding with rules has not spoken");
        assert!(may_release([&none, &empty, &asking], |uid| uid == "asking"));
        assert!(may_release(std::iter::empty(), nobody), "no binding at all asks nothing");
    }
}
