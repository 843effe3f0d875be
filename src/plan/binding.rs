//! The binding level's decision, pure: from what was observed of one binding and of the other
//! bindings of its cluster, what its reconcile does. It cleans the groups a changed spec left
//! behind, feeds its own group (or, when the backend cannot say what it wants, leaves every target
//! where it is: fail static), and says what the binding asks of the security groups. `run` carries
//! the plan out (`controller::apply`); `tgb-agent plan` prints the same plan (`controller::preview`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::ResourceExt;

use crate::api::TargetGroupBinding;
use crate::model::BindingId;
use crate::model::sg_rule::IngressRule;
use crate::plan::desired::{AddressFamily, SliceView, endpoint_addresses};
use crate::plan::instance::{NodeView, instance_ids};
use crate::plan::lost_record::{RecordFound, RecordPlan, recover};
use crate::plan::ownership::Record;
use crate::plan::sg_rules::{NetworkingError, rules_for_binding};
use crate::plan::wanted::{BackendProblem, Wanted};

/// What a binding's decision reads: it, the cluster's bindings, and what `observe` read of it.
pub struct BindingInputs<'a> {
    pub tgb: &'a TargetGroupBinding,
    /// Every binding of the cluster (this one among them).
    pub all: &'a [Arc<TargetGroupBinding>],
    pub observed: &'a Observed,
}

/// What `observe` read of one binding, each read once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The group the spec resolves to now.
    pub arn: String,
    /// Only this binding's claims may go from its group (`multiClusterTargetGroup`).
    pub shared: bool,
    /// Its ownership record (empty for an exclusive binding), as found.
    pub record: RecordFound,
    /// What its endpoints (or nodes) hold right now, ready or not.
    pub ours_now: BTreeSet<String>,
    /// The targets its backend wants, or the mistake that keeps it from saying.
    pub wanted: Result<Wanted, BackendProblem>,
    /// What its security-group ask is made of, with the wanted targets and their pods: ip or
    /// instance targets, and the group's VPC.
    pub target_is_ip: bool,
    pub vpc_id: Option<String>,
    /// The container ports the wanted pods name, when the spec's rules name a port (empty
    /// otherwise); `None` when they could not be read.
    pub named_ports: Option<BTreeMap<String, BTreeSet<u16>>>,
}

/// One group the binding writes to, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupWork {
    pub arn: String,
    /// Only the binding's claimed targets may leave; otherwise the binding owns the whole group.
    pub by_claims: bool,
    /// The cluster's other bindings on the group: their claims are kept.
    pub siblings: Vec<BindingId>,
}

/// What a binding's targets are, for its ask of the security groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub target_is_ip: bool,
    pub vpc_id: Option<String>,
    /// The wanted targets' ids (addresses or instance ids).
    pub ids: BTreeSet<String>,
}

/// What a binding asks of the security groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecurityAsk {
    /// Its spec lists no rule: whatever it asked before is withdrawn.
    Withdraw,
    /// These rules, on the security groups of these targets' interfaces.
    Rules { rules: BTreeSet<IngressRule>, endpoints: Endpoints },
    /// Its rules cannot be made now: what it asked before, and what it can still derive, stay.
    Broken { derivable: BTreeSet<IngressRule>, why: AskProblem },
}

/// Why a binding cannot say what it asks of the security groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AskProblem {
    /// Its rules cannot be made from its spec and pods (a port name no pod declares).
    Rules(NetworkingError),
    /// Its pods' container ports could not be read.
    PortsUnread,
}

/// The binding's own group and what it is fed.
#[derive(Debug, PartialEq, Eq)]
pub struct Feed {
    pub group: GroupWork,
    pub wanted: Wanted,
}

/// What one reconcile of a binding does, in order.
#[derive(Debug, PartialEq, Eq)]
pub struct BindingPlan {
    /// The record it works from, and what is written first to get a lost one back.
    pub record: RecordPlan,
    /// Groups a changed `targetGroupARN`/`Name` left behind: emptied of this binding's targets
    /// first, so the old group is never forgotten with targets in it.
    pub clean: Vec<GroupWork>,
    /// Its own group and the targets it is fed; or the backend's mistake, and then nothing is
    /// written to the group and nothing published.
    pub feed: Result<Feed, BackendProblem>,
    /// What it asks of the security groups (when its backend says what it wants).
    pub ask: Option<SecurityAsk>,
}

/// The binding's plan. `siblings`: the bindings sharing its own group, as [`siblings_of`] allowed.
pub fn decide(inputs: &BindingInputs<'_>, siblings: Vec<BindingId>) -> BindingPlan {
    let (tgb, all, observed) = (inputs.tgb, inputs.all, inputs.observed);
    let record = recover(&observed.record, &observed.ours_now);
    let clean = previous_groups(tgb, &observed.arn, &record.record, observed.shared, all)
        .into_iter()
        .map(|(arn, by_claims)| GroupWork { siblings: bound_to(tgb, &arn, all), arn, by_claims })
        .collect();
    let group = GroupWork { arn: observed.arn.clone(), by_claims: observed.shared, siblings };
    let ask = observed.wanted.as_ref().ok().map(|wanted| security_ask(tgb, observed, wanted));
    BindingPlan { record, clean, feed: observed.wanted.clone().map(|wanted| Feed { group, wanted }), ask }
}

/// The rules the spec's `networking` makes for the wanted targets, their ports named or numbered.
fn security_ask(tgb: &TargetGroupBinding, observed: &Observed, wanted: &Wanted) -> SecurityAsk {
    let Some(networking) = tgb.spec.networking.as_ref().filter(|n| !n.ingress.is_empty()) else {
        return SecurityAsk::Withdraw;
    };
    let rules = match &observed.named_ports {
        Some(named_ports) => {
            rules_for_binding(networking, observed.target_is_ip, named_ports).map_err(AskProblem::Rules)
        }
        None => Err(AskProblem::PortsUnread),
    };
    match rules {
        Ok(rules) => SecurityAsk::Rules {
            rules,
            endpoints: Endpoints {
                target_is_ip: observed.target_is_ip,
                vpc_id: observed.vpc_id.clone(),
                ids: wanted.targets.iter().map(|t| t.id.id.clone()).collect(),
            },
        },
        Err(why) => SecurityAsk::Broken { derivable: derivable_rules(tgb), why },
    }
}

/// The rules a binding's spec makes without its pods' port names: kept when it cannot say more.
pub fn derivable_rules(tgb: &TargetGroupBinding) -> BTreeSet<IngressRule> {
    let Some(networking) = &tgb.spec.networking else { return BTreeSet::new() };
    let target_is_ip = tgb.spec.target_type != Some(crate::api::TargetType::Instance);
    rules_for_binding(networking, target_is_ip, &BTreeMap::new()).unwrap_or_default()
}

/// What a binding's endpoints hold right now, ready or not (for instance targets, `nodes`: the
/// instances behind them): never taken for another cluster's.
pub fn ours_now(slices: &[&SliceView], nodes: Option<&[&NodeView]>, family: AddressFamily) -> BTreeSet<String> {
    match nodes {
        Some(nodes) => instance_ids(nodes.iter().copied()),
        None => endpoint_addresses(slices.iter().copied(), family),
    }
}

/// Another binding keeps the group: several bindings may share a target group only when all of
/// them are multi-cluster.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "target group {arn} is already bound by {other}; several bindings may share a target group only when all of them set multiClusterTargetGroup"
)]
pub struct GroupConflict {
    pub arn: String,
    pub other: String,
}

pub fn binding_id(tgb: &TargetGroupBinding) -> BindingId {
    BindingId {
        uid: tgb.uid().unwrap_or_else(|| tgb.name_any()),
        namespace: tgb.namespace().unwrap_or_default(),
        name: tgb.name_any(),
    }
}

/// The other bindings of this cluster bound to `arn`, whatever their sharing mode.
pub fn bound_to(tgb: &TargetGroupBinding, arn: &str, all: &[Arc<TargetGroupBinding>]) -> Vec<BindingId> {
    all.iter().filter(|o| o.uid() != tgb.uid() && bound_arn(o).as_deref() == Some(arn)).map(|o| binding_id(o)).collect()
}

/// Groups a changed spec left behind, each with whether this binding has claims there: the other
/// groups in its ownership record, and for an exclusive binding the group its status still names
/// (unless another binding is bound to it now, which then owns it).
fn previous_groups(
    tgb: &TargetGroupBinding,
    current: &str,
    record: &Record,
    shared: bool,
    all: &[Arc<TargetGroupBinding>],
) -> Vec<(String, bool)> {
    let mut previous: Vec<(String, bool)> = record.previous_groups(current).map(|a| (a.to_owned(), true)).collect();
    if !shared
        && let Some(old) = tgb.status.as_ref().and_then(|s| s.target_group_arn.clone())
        && old != current
        && bound_to(tgb, &old, all).is_empty()
        && !previous.iter().any(|(a, _)| *a == old)
    {
        previous.push((old, false));
    }
    previous
}

/// Every group a deletion cleans. By this binding's claims: those its record names, and a lost
/// record's group (`lost`). Whole, for an exclusive binding: the group it owns (`exclusive`, as its
/// spec names it) and one a changed spec left behind that its status still names, unless another
/// binding keeps that group now.
pub fn deletion_groups(
    tgb: &TargetGroupBinding,
    record: &Record,
    lost: Option<&(String, usize)>,
    exclusive: Option<String>,
    all: &[Arc<TargetGroupBinding>],
) -> Vec<GroupWork> {
    let mut claimed: Vec<String> = record.groups.keys().cloned().collect();
    claimed.extend(lost.map(|(arn, _)| arn.clone()).filter(|arn| !record.groups.contains_key(arn)));
    let mut groups: Vec<GroupWork> =
        claimed.into_iter().map(|arn| GroupWork { siblings: bound_to(tgb, &arn, all), arn, by_claims: true }).collect();
    let owned = match is_multi_cluster(tgb) {
        true => Vec::new(),
        false => exclusive.into_iter().chain(tgb.status.as_ref().and_then(|s| s.target_group_arn.clone())).collect(),
    };
    for arn in owned {
        if siblings_of(tgb, &arn, all).is_ok() && !groups.iter().any(|g| g.arn == arn) {
            groups.push(GroupWork { siblings: bound_to(tgb, &arn, all), arn, by_claims: false });
        }
    }
    groups
}

/// The target group ARN a binding is bound to: from its spec, or as resolved into its status.
pub fn bound_arn(tgb: &TargetGroupBinding) -> Option<String> {
    tgb.spec
        .target_group_arn
        .clone()
        .filter(|a| !a.trim().is_empty())
        .or_else(|| tgb.status.as_ref().and_then(|s| s.target_group_arn.clone()))
}

fn is_multi_cluster(tgb: &TargetGroupBinding) -> bool {
    tgb.spec.multi_cluster_target_group == Some(true)
}

/// The other bindings of this cluster on target group `arn`. Several bindings may share a group
/// only when all of them are multi-cluster; otherwise the oldest binding keeps the group and
/// every later one fails with a conflict (and touches nothing, its record included).
pub fn siblings_of(
    tgb: &TargetGroupBinding,
    arn: &str,
    all: &[Arc<TargetGroupBinding>],
) -> Result<Vec<BindingId>, GroupConflict> {
    let siblings: Vec<&TargetGroupBinding> = all
        .iter()
        .filter(|o| o.uid() != tgb.uid() && bound_arn(o).as_deref() == Some(arn))
        .map(AsRef::as_ref)
        .collect();
    if siblings.is_empty() || (is_multi_cluster(tgb) && siblings.iter().all(|s| is_multi_cluster(s))) {
        return Ok(siblings.into_iter().map(binding_id).collect());
    }
    let age = |b: &TargetGroupBinding| (b.creation_timestamp().map(|t| t.0), b.namespace(), b.name_any());
    let oldest = siblings.iter().copied().chain(std::iter::once(tgb)).min_by_key(|b| age(b));
    match oldest {
        Some(oldest) if oldest.uid() != tgb.uid() => Err(GroupConflict {
            arn: arn.to_owned(),
            other: format!("{}/{}", oldest.namespace().unwrap_or_default(), oldest.name_any()),
        }),
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TargetGroupBindingSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn binding(name: &str, uid: &str, age_secs: i64, multi: bool) -> Arc<TargetGroupBinding> {
        let mut b = TargetGroupBinding::new(
            name,
            TargetGroupBindingSpec {
                target_group_arn: Some("arn:tg".into()),
                multi_cluster_target_group: Some(multi),
                ..Default::default()
            },
        );
        b.metadata.namespace = Some("ns".into());
        b.metadata.uid = Some(uid.into());
        let t = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + age_secs).expect("valid time");
        b.metadata.creation_timestamp = Some(Time(t));
        Arc::new(b)
    }

    #[test]
    fn a_deletion_cleans_its_claimed_groups_by_claims_and_an_exclusive_bindings_own_groups_whole() {
        use crate::model::TargetId;
        use crate::plan::ownership::Claim;
        let work = |arn: &str, by_claims| GroupWork { arn: arn.into(), by_claims, siblings: Vec::new() };
        let record = Record::default().with_group("arn:a", [(TargetId::new("10.0.0.1", 80), Claim::Registered)].into());
        let shared = binding("s", "1", 0, true);
        let lost = ("arn:lost".to_owned(), 2);
        assert_eq!(
            deletion_groups(&shared, &record, Some(&lost), Some("arn:tg".into()), std::slice::from_ref(&shared)),
            vec![work("arn:a", true), work("arn:lost", true)],
            "a shared binding owns no group whole"
        );
        let mut moved = binding("e", "2", 0, false);
        Arc::make_mut(&mut moved).status = Some(crate::api::TargetGroupBindingStatus {
            target_group_arn: Some("arn:old".into()),
            ..Default::default()
        });
        let all = [moved.clone()];
        assert_eq!(
            deletion_groups(&moved, &Record::default(), None, Some("arn:tg".into()), &all),
            vec![work("arn:tg", false), work("arn:old", false)]
        );
        // An older exclusive binding keeps the group the status names: it is not this one's to empty.
        let mut keeper = binding("k", "3", -5, false);
        Arc::make_mut(&mut keeper).spec.target_group_arn = Some("arn:old".into());
        let all = [moved.clone(), keeper];
        assert_eq!(
            deletion_groups(&moved, &Record::default(), None, Some("arn:tg".into()), &all),
            vec![work("arn:tg", false)]
        );
    }

    #[test]
    fn groups_left_behind_are_the_records_others_and_an_exclusive_bindings_old_one() {
        use crate::model::TargetId;
        use crate::plan::ownership::Claim;
        let mut moved = binding("a", "1", 0, false);
        Arc::make_mut(&mut moved).status = Some(crate::api::TargetGroupBindingStatus {
            target_group_arn: Some("arn:old".into()),
            ..Default::default()
        });
        let record = Record::default()
            .with_group("arn:tg", [(TargetId::new("10.0.0.1", 80), Claim::Registered)].into())
            .with_group("arn:older", [(TargetId::new("10.0.0.2", 80), Claim::Registered)].into());
        let all = [moved.clone()];
        assert_eq!(
            previous_groups(&moved, "arn:tg", &record, false, &all),
            vec![("arn:older".to_string(), true), ("arn:old".to_string(), false)]
        );
        assert_eq!(previous_groups(&moved, "arn:tg", &record, true, &all), vec![("arn:older".to_string(), true)]);
        // Another binding is bound to the old group now: it is that binding's, not to be cleaned.
        let mut other = binding("b", "2", 5, false);
        Arc::make_mut(&mut other).spec.target_group_arn = Some("arn:old".into());
        let all = [moved.clone(), other];
        assert_eq!(previous_groups(&moved, "arn:tg", &Record::default(), false, &all), vec![]);
    }

    /// `tgb`'s plan on `arn:tg`, the cluster holding `all`, its backend wanting `wanted`.
    fn plan_of(
        tgb: &Arc<TargetGroupBinding>,
        all: &[Arc<TargetGroupBinding>],
        record: &Record,
        wanted: &Result<Wanted, BackendProblem>,
    ) -> BindingPlan {
        plan_with_ports(tgb, all, record, wanted, Some(&BTreeMap::new()))
    }

    fn plan_with_ports(
        tgb: &Arc<TargetGroupBinding>,
        all: &[Arc<TargetGroupBinding>],
        record: &Record,
        wanted: &Result<Wanted, BackendProblem>,
        named_ports: Option<&BTreeMap<String, BTreeSet<u16>>>,
    ) -> BindingPlan {
        let observed = Observed {
            arn: "arn:tg".into(),
            shared: is_multi_cluster(tgb),
            record: RecordFound::Read(record.clone()),
            ours_now: BTreeSet::new(),
            wanted: wanted.clone(),
            target_is_ip: true,
            vpc_id: Some("vpc-1".into()),
            named_ports: named_ports.cloned(),
        };
        let inputs = BindingInputs { tgb, all, observed: &observed };
        let siblings = siblings_of(tgb, "arn:tg", all).expect("no conflict");
        decide(&inputs, siblings)
    }

    fn wanting(ips: &[&str]) -> Result<Wanted, BackendProblem> {
        let targets = ips.iter().map(|ip| crate::model::Target::new(crate::model::TargetId::new(*ip, 8080))).collect();
        Ok(Wanted { targets, skipped: Vec::new(), pods: ["web-0".to_owned()].into() })
    }

    fn moved_from(old: &str, multi: bool) -> Arc<TargetGroupBinding> {
        let mut moved = binding("a", "1", 0, multi);
        Arc::make_mut(&mut moved).status =
            Some(crate::api::TargetGroupBindingStatus { target_group_arn: Some(old.into()), ..Default::default() });
        moved
    }

    #[test]
    fn an_exclusive_binding_empties_its_old_group_then_feeds_the_new_one_and_asks_for_its_targets() {
        let moved = moved_from("arn:old", false);
        let plan = plan_of(&moved, std::slice::from_ref(&moved), &Record::default(), &wanting(&["10.0.0.1"]));
        let old = GroupWork { arn: "arn:old".into(), by_claims: false, siblings: Vec::new() };
        assert_eq!(plan.clean, vec![old]);
        let feed = plan.feed.expect("fed");
        assert_eq!(feed.group, GroupWork { arn: "arn:tg".into(), by_claims: false, siblings: Vec::new() });
        assert_eq!(feed.wanted, wanting(&["10.0.0.1"]).expect("wanted"));
        assert_eq!(plan.ask, Some(SecurityAsk::Withdraw), "its spec lists no rule");
    }

    /// A binding whose rules open port 80 and the port its pods name `web`.
    fn with_rules() -> Arc<TargetGroupBinding> {
        let mut tgb = binding("a", "1", 0, false);
        let networking = serde_json::json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}],
                                                         "ports": [{"port": 80}, {"port": "web"}]}]});
        Arc::make_mut(&mut tgb).spec.networking = Some(serde_json::from_value(networking).expect("networking"));
        tgb
    }

    #[test]
    fn the_ask_is_the_specs_rules_with_the_pods_port_names_on_the_wanted_targets() {
        let tgb = with_rules();
        let named: BTreeMap<String, BTreeSet<u16>> = [("web".to_owned(), [9090].into())].into();
        let plan = plan_with_ports(
            &tgb,
            std::slice::from_ref(&tgb),
            &Record::default(),
            &wanting(&["10.0.0.1"]),
            Some(&named),
        );
        let Some(SecurityAsk::Rules { rules, endpoints }) = plan.ask else { panic!("{:?}", plan.ask) };
        let ports: Vec<(u16, u16)> = rules.iter().map(|r| (r.from_port, r.to_port)).collect();
        assert_eq!(ports, vec![(80, 80), (9090, 9090)]);
        assert_eq!(endpoints.ids, ["10.0.0.1".to_owned()].into());
        assert_eq!((endpoints.target_is_ip, endpoints.vpc_id.as_deref()), (true, Some("vpc-1")));
    }

    /// A port name no pod declares, or ports that could not be read: the ask is broken, never
    /// narrowed, so the security-group loop keeps what the binding asked before.
    #[test]
    fn rules_that_cannot_be_made_leave_the_ask_broken_not_narrowed() {
        let tgb = with_rules();
        let all = [tgb.clone()];
        let plan = plan_with_ports(&tgb, &all, &Record::default(), &wanting(&["10.0.0.1"]), Some(&BTreeMap::new()));
        assert!(matches!(plan.ask, Some(SecurityAsk::Broken { why: AskProblem::Rules(_), .. })), "{:?}", plan.ask);
        let plan = plan_with_ports(&tgb, &all, &Record::default(), &wanting(&["10.0.0.1"]), None);
        assert!(matches!(plan.ask, Some(SecurityAsk::Broken { why: AskProblem::PortsUnread, .. })), "{:?}", plan.ask);
    }

    #[test]
    fn a_shared_binding_cleans_only_its_claims_and_keeps_its_siblings_claims_there() {
        use crate::model::TargetId;
        use crate::plan::ownership::Claim;
        let moved = moved_from("arn:old", true);
        let mut other = binding("b", "2", 5, true);
        Arc::make_mut(&mut other).spec.target_group_arn = Some("arn:old".into());
        let record =
            Record::default().with_group("arn:old", [(TargetId::new("10.0.0.2", 8080), Claim::Registered)].into());
        let all = [moved.clone(), other.clone()];
        let plan = plan_of(&moved, &all, &record, &wanting(&[]));
        let old = GroupWork { arn: "arn:old".into(), by_claims: true, siblings: vec![binding_id(&other)] };
        assert_eq!(plan.clean, vec![old], "by claims, the other binding's kept");
        assert!(plan.feed.expect("fed").group.by_claims);
    }

    /// Fail static: the backend's mistake feeds nothing and publishes nothing; a group the spec
    /// left behind is still cleaned (it is not the backend's to keep).
    #[test]
    fn a_backend_mistake_feeds_and_asks_nothing_but_still_cleans_what_the_spec_left() {
        let moved = moved_from("arn:old", false);
        let problem = BackendProblem::ServiceNotFound { service: "ns/web".into() };
        let plan = plan_of(&moved, std::slice::from_ref(&moved), &Record::default(), &Err(problem.clone()));
        assert_eq!(plan.feed, Err(problem));
        assert_eq!(plan.ask, None);
        assert_eq!(plan.clean.len(), 1);
    }

    #[test]
    fn a_binding_that_did_not_move_cleans_nothing() {
        let a = moved_from("arn:tg", false);
        let plan = plan_of(&a, std::slice::from_ref(&a), &Record::default(), &wanting(&["10.0.0.1"]));
        assert!(plan.clean.is_empty());
    }

    #[test]
    fn alone_is_fine() {
        let a = binding("a", "1", 0, false);
        assert!(siblings_of(&a, "arn:tg", std::slice::from_ref(&a)).expect("alone").is_empty());
    }

    #[test]
    fn all_multi_cluster_share() {
        let a = binding("a", "1", 0, true);
        let b = binding("b", "2", 5, true);
        assert_eq!(siblings_of(&b, "arn:tg", &[a.clone(), b.clone()]).expect("shared").len(), 1);
    }

    #[test]
    fn the_later_exclusive_binding_conflicts_and_the_older_keeps_the_group() {
        for (a_multi, b_multi) in [(false, false), (true, false), (false, true)] {
            let a = binding("a", "1", 0, a_multi);
            let b = binding("b", "2", 5, b_multi);
            let all = [a.clone(), b.clone()];
            let err = siblings_of(&b, "arn:tg", &all).expect_err("later one conflicts");
            assert_eq!(err.other, "ns/a");
            assert!(siblings_of(&a, "arn:tg", &all).is_ok(), "older one proceeds ({a_multi},{b_multi})");
        }
    }
}
