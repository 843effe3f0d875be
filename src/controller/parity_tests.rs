//! `tgb-agent plan` and `run` never disagree: for each scenario, the target changes `plan` prints
//! are exactly the changes `run` then makes, group by group, on the same in-memory AWS and cluster
//! (readiness-gated pods, a group a changed spec left behind, a shared group with another
//! cluster's and a sibling's targets, a lost ownership record, a deletion).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use serde_json::json;

use super::asks::Ask;
use super::context::tests::{TestContext, context_on, test_client};
use super::fakes::Recorded;
use super::fakes::{FakeCluster, FakeTargetGroups};
use super::ports::Ports as _;
use super::preview::{Plan, binding_plan};
use super::{apply::apply, cleanup::cleanup};
use crate::api::TargetGroupBinding;
use crate::index::{BackendIndex, BackendKey};
use crate::k8s::live::LiveBackend;
use crate::model::TargetId;
use crate::model::sg_rule::IngressRule;
use crate::plan::binding::binding_id;
use crate::plan::desired::{AddressFamily, EndpointView, ServicePortView, ServiceView, SlicePort, SliceView};
use crate::plan::ownership::Claim;

const NEW: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/new/0123456789abcdef";
const OLD: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/old/0123456789abcdef";

/// One scenario: AWS's groups, the binding (and its peers), its record, its backend.
struct Scenario {
    groups: &'static [(&'static str, &'static [&'static str])],
    binding: serde_json::Value,
    status_arn: Option<&'static str>,
    /// How many targets its status says it registered.
    registered: i32,
    deleted: bool,
    peers: Vec<TargetGroupBinding>,
    claims: &'static [(&'static str, &'static [&'static str])],
    /// Endpoints: (address, ready, pod).
    endpoints: &'static [(&'static str, bool, &'static str)],
    /// Pods whose containers are ready and that declare the binding's gate, still closed.
    gated: &'static [&'static str],
    /// Container ports the pods declare: (pod, name, number).
    container_ports: &'static [(&'static str, &'static str, u16)],
}

fn tgb(name: &str, uid: &str, spec: serde_json::Value) -> TargetGroupBinding {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "demo", "uid": uid}, "spec": spec}))
        .expect("binding")
}

fn web() -> ServiceView {
    ServiceView {
        type_: None,
        ports: vec![ServicePortView { name: Some("http".into()), port: 80, node_port: None }],
        selects_pods: true,
    }
}

fn slice(endpoints: &[(&str, bool, &str)]) -> SliceView {
    SliceView {
        family: AddressFamily::Ipv4,
        ports: vec![SlicePort { name: Some("http".into()), port: Some(8080) }],
        endpoints: endpoints
            .iter()
            .map(|(ip, ready, pod)| EndpointView {
                addresses: vec![(*ip).into()],
                ready: Some(*ready),
                pod: Some((*pod).into()),
                ..Default::default()
            })
            .collect(),
    }
}

impl Scenario {
    fn binding(&self) -> TargetGroupBinding {
        let mut tgb = tgb("web", "u-web", self.binding.clone());
        tgb.metadata.finalizers = Some(vec![crate::api::FINALIZER.to_owned()]);
        tgb.status = self.status_arn.map(|arn| crate::api::TargetGroupBindingStatus {
            target_group_arn: Some(arn.into()),
            registered_targets: Some(self.registered),
            ..Default::default()
        });
        if self.deleted {
            let now = k8s_openapi::jiff::Timestamp::now();
            tgb.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        }
        tgb
    }

    /// A controller context on this scenario's AWS and cluster, its watches listed.
    async fn context(&self, all: &[Arc<TargetGroupBinding>]) -> TestContext {
        let groups = self.groups.iter().fold(FakeTargetGroups::default(), |g, (arn, ips)| g.with_group(arn, ips));
        let pods: Vec<(&str, bool, Option<&str>)> = self.gated.iter().map(|p| (*p, true, Some("False"))).collect();
        let cluster = self.container_ports.iter().fold(FakeCluster::with(&pods), |c, (pod, name, number)| {
            c.with_container_port(pod, name, number.to_owned())
        });
        let live = LiveBackend { service: Some(web()), slices: vec![slice(self.endpoints)] };
        if let Ok(mut backend) = cluster.backend.lock() {
            *backend = live.clone();
        }
        let mut ctx = context_on(Arc::new(Recorded::default()), groups, cluster).await;
        let key = BackendKey { namespace: "demo".into(), service: "web".into() };
        let wake = ctx.watches.wake.clone();
        ctx.watches.backends = BackendIndex::seeded(test_client(), wake, &key, live.service, live.slices);
        let mut writer = Writer::<TargetGroupBinding>::default();
        for b in all {
            writer.apply_watcher_event(&Event::Apply(b.as_ref().clone()));
        }
        ctx.kube.bindings = writer.as_reader();
        for (arn, ips) in self.claims {
            let claims = ips.iter().map(|ip| (TargetId::new(*ip, 8080), Claim::Registered)).collect();
            let id = binding_id(&self.binding());
            let record = ctx.ports.records.get(&id).unwrap_or_default().with_group(arn, claims);
            ctx.ports.records.put(&id, record);
        }
        ctx
    }
}

/// Per group, its active targets.
fn snapshot(ctx: &TestContext, arns: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    arns.iter()
        .map(|arn| (arn.to_string(), ctx.ports.target_groups().active(arn).unwrap_or_default().into_iter().collect()))
        .collect()
}

/// Per group, "+ip" for each target that came and "-ip" for each that went.
fn changes(
    before: &BTreeMap<String, BTreeSet<String>>,
    after: &BTreeMap<String, BTreeSet<String>>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (arn, was) in before {
        let now = after.get(arn).cloned().unwrap_or_default();
        let diff =
            now.difference(was).map(|ip| format!("+{ip}")).chain(was.difference(&now).map(|ip| format!("-{ip}")));
        out.entry(arn.clone()).or_default().extend(diff);
    }
    out.retain(|_, c| !c.is_empty());
    out
}

/// Per group, the target changes a plan prints ("+ register" / "- deregister" under "target group").
fn planned(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut group = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("target group ") {
            group = rest.split_whitespace().next().unwrap_or_default().to_owned();
        }
        let (sign, rest) = match (line.strip_prefix("+ register"), line.strip_prefix("- deregister")) {
            (Some(rest), _) => ("+", rest),
            (_, Some(rest)) => ("-", rest),
            _ => continue,
        };
        let address = rest.split_whitespace().next().and_then(|t| t.split(':').next()).unwrap_or_default();
        out.entry(group.clone()).or_default().insert(format!("{sign}{address}"));
    }
    out
}

/// Plans the scenario, checks the plan wrote nothing, runs it once, and compares.
async fn plan_then_run(scenario: Scenario) -> BTreeMap<String, BTreeSet<String>> {
    plan_then_run_with_rules(scenario).await.0
}

/// As [`plan_then_run`], and the security-group rules too: those `plan` prints against those `run`
/// publishes to the security-group loop.
async fn plan_then_run_with_rules(scenario: Scenario) -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<IngressRule>) {
    let tgb = scenario.binding();
    let all: Vec<Arc<TargetGroupBinding>> =
        std::iter::once(tgb.clone()).chain(scenario.peers.iter().cloned()).map(Arc::new).collect();
    let ctx = scenario.context(&all).await;
    let arns: Vec<&str> = scenario.groups.iter().map(|(arn, _)| *arn).collect();
    let before = snapshot(&ctx, &arns);

    let mut out = Plan { text: String::new(), changes: 0 };
    let planned_rules =
        binding_plan(&ctx.ports, ctx.ports.records(), &tgb, &all, "test", &mut out).await.expect("plan");
    assert_eq!(snapshot(&ctx, &arns), before, "plan wrote nothing:\n{}", out.text);
    let plan = planned(&out.text);

    let result = match scenario.deleted {
        true => cleanup(&tgb, &ctx).await.map(drop),
        false => apply(&tgb, &ctx).await.map(drop),
    };
    result.expect("run");
    let run = changes(&before, &snapshot(&ctx, &arns));
    assert_eq!(plan, run, "plan and run disagree; the plan:\n{}", out.text);
    let planned_rules = planned_rules.map(|ask| ask.rules).unwrap_or_default();
    let published = match ctx.networking.state().asks.get("u-web") {
        Some((_, Ask::Rules { rules, .. })) => rules.clone(),
        _ => BTreeSet::new(),
    };
    assert_eq!(planned_rules, published, "plan and run ask different rules; the plan:\n{}", out.text);
    (run, published)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn a_pod_held_back_only_by_its_gate_is_registered_by_plan_and_run_alike() {
    let run = plan_then_run(Scenario {
        groups: &[(NEW, &["10.0.0.1", "10.0.9.9"])],
        binding: json!({"targetGroupARN": NEW, "serviceRef": {"name": "web", "port": 80}, "targetType": "ip"}),
        status_arn: None,
        registered: 0,
        deleted: false,
        peers: Vec::new(),
        claims: &[],
        endpoints: &[("10.0.0.1", true, "web-1"), ("10.0.0.2", false, "web-2"), ("10.0.0.3", false, "web-3")],
        gated: &["web-2"],
        container_ports: &[],
    })
    .await;
    assert_eq!(run, [(NEW.to_owned(), set(&["+10.0.0.2", "-10.0.9.9"]))].into(), "web-3 is not ready: not wanted");
}

#[tokio::test]
async fn an_exclusive_binding_moved_to_another_group_empties_the_old_one_in_plan_and_run_alike() {
    let run = plan_then_run(Scenario {
        groups: &[(NEW, &[]), (OLD, &["10.0.0.1", "10.0.0.7"])],
        binding: json!({"targetGroupARN": NEW, "serviceRef": {"name": "web", "port": 80}, "targetType": "ip"}),
        status_arn: Some(OLD),
        registered: 0,
        deleted: false,
        peers: Vec::new(),
        claims: &[],
        endpoints: &[("10.0.0.1", true, "web-1")],
        gated: &[],
        container_ports: &[],
    })
    .await;
    let expected = [(NEW.to_owned(), set(&["+10.0.0.1"])), (OLD.to_owned(), set(&["-10.0.0.1", "-10.0.0.7"]))];
    assert_eq!(run, expected.into());
}

/// Shared: the old group keeps what this binding never claimed (another cluster's 10.0.8.8, the
/// sibling's 10.0.0.6); the new group keeps the other cluster's 10.0.8.9.
#[tokio::test]
async fn a_shared_binding_moved_takes_only_its_claims_with_it_in_plan_and_run_alike() {
    let sibling = tgb(
        "api",
        "u-api",
        json!({"targetGroupARN": OLD, "serviceRef": {"name": "api", "port": 80}, "multiClusterTargetGroup": true}),
    );
    let run = plan_then_run(Scenario {
        groups: &[(NEW, &["10.0.8.9"]), (OLD, &["10.0.0.1", "10.0.0.2", "10.0.0.6", "10.0.8.8"])],
        binding: json!({"targetGroupARN": NEW, "serviceRef": {"name": "web", "port": 80}, "targetType": "ip",
                        "multiClusterTargetGroup": true}),
        status_arn: Some(OLD),
        registered: 0,
        deleted: false,
        peers: vec![sibling],
        claims: &[(OLD, &["10.0.0.1", "10.0.0.2"])],
        endpoints: &[("10.0.0.1", true, "web-1"), ("10.0.0.3", true, "web-3")],
        gated: &[],
        container_ports: &[],
    })
    .await;
    let expected =
        [(NEW.to_owned(), set(&["+10.0.0.1", "+10.0.0.3"])), (OLD.to_owned(), set(&["-10.0.0.1", "-10.0.0.2"]))];
    assert_eq!(run, expected.into());
}

/// The record was deleted by hand while the status says 2 were registered: what the endpoints hold
/// in the group is claimed again, so the not-ready 10.0.0.1 leaves; 10.0.0.2, whose pod left,
/// cannot be told from the other cluster's 10.0.8.8 any more, and both stay.
#[tokio::test]
async fn a_shared_binding_whose_record_was_lost_claims_again_what_its_endpoints_hold_in_plan_and_run_alike() {
    let run = plan_then_run(Scenario {
        groups: &[(NEW, &["10.0.0.1", "10.0.0.2", "10.0.8.8"])],
        binding: json!({"targetGroupARN": NEW, "serviceRef": {"name": "web", "port": 80}, "targetType": "ip",
                        "multiClusterTargetGroup": true}),
        status_arn: Some(NEW),
        registered: 2,
        deleted: false,
        peers: Vec::new(),
        claims: &[],
        endpoints: &[("10.0.0.1", false, "web-1"), ("10.0.0.3", true, "web-3")],
        gated: &[],
        container_ports: &[],
    })
    .await;
    assert_eq!(run, [(NEW.to_owned(), set(&["-10.0.0.1", "+10.0.0.3"]))].into());
}

#[tokio::test]
async fn a_deleted_shared_binding_takes_out_only_its_claims_in_plan_and_run_alike() {
    let run = plan_then_run(Scenario {
        groups: &[(NEW, &["10.0.0.1", "10.0.0.2", "10.0.8.8"])],
        binding: json!({"targetGroupARN": NEW, "serviceRef": {"name": "web", "port": 80}, "targetType": "ip",
                        "multiClusterTargetGroup": true}),
        status_arn: Some(NEW),
        registered: 0,
        deleted: true,
        peers: Vec::new(),
        claims: &[(NEW, &["10.0.0.1", "10.0.0.2"])],
        endpoints: &[("10.0.0.1", true, "web-1"), ("10.0.0.2", true, "web-2")],
        gated: &[],
        container_ports: &[],
    })
    .await;
    assert_eq!(run, [(NEW.to_owned(), set(&["-10.0.0.1", "-10.0.0.2"]))].into());
}

/// The rule's port is the container port named `web` on the serving pods, read through the same
/// port by both; the gated pod is serving too, so its port counts in both.
#[tokio::test]
async fn a_rule_on_a_named_container_port_is_the_same_in_plan_and_run() {
    let (run, rules) = plan_then_run_with_rules(Scenario {
        groups: &[(NEW, &[])],
        binding: json!({"targetGroupARN": NEW, "serviceRef": {"name": "web", "port": 80}, "targetType": "ip",
                        "networking": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}],
                                                    "ports": [{"protocol": "TCP", "port": "web"}]}]}}),
        status_arn: None,
        registered: 0,
        deleted: false,
        peers: Vec::new(),
        claims: &[],
        endpoints: &[("10.0.0.1", true, "web-1"), ("10.0.0.2", false, "web-2")],
        gated: &["web-2"],
        container_ports: &[("web-1", "web", 8080), ("web-2", "web", 9090), ("web-3", "web", 7070)],
    })
    .await;
    assert_eq!(run, [(NEW.to_owned(), set(&["+10.0.0.1", "+10.0.0.2"]))].into());
    let ports: BTreeSet<String> = rules.iter().map(|r| format!("{r:?}")).collect();
    assert_eq!(rules.len(), 2, "8080 and 9090 from 10.1.0.0/16, not web-3's 7070: {ports:?}");
}
