//! Every `Ready` reason a binding's status can carry, each brought about on the fakes through the
//! controller's own `reconcile`, and read back from the status it wrote; a failure also leaves a
//! Warning with the same reason. A reason no case here produces is one no operator was shown.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::context::tests::{TestContext, context_on, test_client};
use super::fakes::{FakeCluster, FakeTargetGroups, RecordFailure, Recorded};
use crate::api::TargetGroupBinding;
use crate::aws::AwsError;
use crate::aws::security_groups::SecurityGroupError;
use crate::index::{BackendIndex, BackendKey, NodeIndex};
use crate::k8s::ownership::RecordError;
use crate::model::{TargetGroupInfo, TargetGroupIpType, TargetGroupType};
use crate::plan::desired::{AddressFamily, EndpointView, ServicePortView, ServiceView, SlicePort, SliceView};
use crate::plan::instance::NodeView;
use crate::plan::sg_rules::NetworkingError;

const ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";
const OLD: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/old/0123456789abcdef";

/// One binding, `demo/web`, and the world it is reconciled in.
struct Scene {
    ctx: TestContext,
    writes: Arc<Recorded>,
    tgb: TargetGroupBinding,
}

/// The Service `web`: port 80 (`http`), of `type_`, with node port 30080.
fn service(type_: &str) -> ServiceView {
    ServiceView {
        type_: Some(type_.into()),
        ports: vec![ServicePortView { name: Some("http".into()), port: 80, node_port: Some(30080) }],
        selects_pods: true,
    }
}

/// A slice of `web` with one ready endpoint, 10.0.0.5:8080, of pod `web-0`.
fn one_endpoint() -> SliceView {
    SliceView {
        family: AddressFamily::Ipv4,
        ports: vec![SlicePort { name: Some("http".into()), port: Some(8080) }],
        endpoints: vec![EndpointView {
            addresses: vec!["10.0.0.5".into()],
            ready: Some(true),
            pod: Some("web-0".into()),
            ..Default::default()
        }],
    }
}

/// A ready node `node-1`, labelled `pool: web`.
fn node() -> NodeView {
    NodeView {
        name: "node-1".into(),
        labels: [("pool".to_owned(), "web".to_owned())].into(),
        taints: Vec::new(),
        ready: Some(true),
        provider_id: Some("aws:///us-east-1a/i-0123456789abcdef0".into()),
        unschedulable: false,
    }
}

/// `ARN` described as an instance group.
fn instance_group() -> TargetGroupInfo {
    TargetGroupInfo {
        arn: ARN.into(),
        name: "web".into(),
        target_type: TargetGroupType::Instance,
        vpc_id: Some("vpc-1".into()),
        ip_address_type: TargetGroupIpType::Ipv4,
        protocol: Some("HTTP".into()),
        health_check: None,
    }
}

impl Scene {
    /// An exclusive binding of `web` (port 80) on `groups`, its watches listed: the Service as
    /// `service` says, its slices, and the node `node-1`.
    async fn on(groups: FakeTargetGroups, service: Option<ServiceView>, slices: Vec<SliceView>) -> Self {
        let writes = Arc::new(Recorded::default());
        let mut ctx = context_on(writes.clone(), groups, FakeCluster::default()).await;
        let key = BackendKey { namespace: "demo".into(), service: "web".into() };
        let wake = ctx.watches.wake.clone();
        ctx.watches.backends = BackendIndex::seeded(test_client(), wake.clone(), &key, service, slices);
        ctx.watches.nodes = NodeIndex::seeded(test_client(), wake, vec![node()]);
        let tgb = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "demo", "uid": "u-1", "finalizers": [crate::api::FINALIZER]},
            "spec": {"targetGroupARN": ARN, "serviceRef": {"name": "web", "port": 80}}
        }))
        .expect("binding");
        Self { ctx, writes, tgb }
    }

    /// The usual world: `ARN` an empty ip group, `web` a ClusterIP Service with one endpoint.
    async fn new() -> Self {
        Self::on(FakeTargetGroups::default().with_group(ARN, &[]), Some(service("ClusterIP")), vec![one_endpoint()])
            .await
    }

    /// The spec with `patch`'s fields set (`null` unsets one).
    fn spec(mut self, patch: Value) -> Self {
        let mut spec = serde_json::to_value(&self.tgb.spec).expect("spec");
        if let (Some(spec), Some(patch)) = (spec.as_object_mut(), patch.as_object()) {
            for (field, value) in patch {
                spec.insert(field.clone(), value.clone());
            }
        }
        self.tgb.spec = serde_json::from_value(spec).expect("patched spec");
        self
    }

    /// Reconciles once; the `Ready` reason of the last status written, and whether a Warning gave it.
    async fn ready_reason(self) -> (String, bool) {
        let Self { ctx, writes, tgb } = self;
        let _ = super::reconcile(Arc::new(tgb), Arc::new(ctx)).await;
        let statuses = writes.statuses.lock().map(|s| s.clone()).unwrap_or_default();
        let reason = match statuses.last().map(|s| &s.ready) {
            Some(Ok(_)) => "Reconciled".to_owned(),
            Some(Err((reason, _))) => reason.clone(),
            None => format!("no status written; wrote {:?}", writes.log()),
        };
        let warned = writes.log().contains(&format!("Warning {reason}"));
        (reason, warned)
    }
}

/// Asserts the scene's reconcile says `reason` in `Ready`, with a Warning unless it succeeded.
async fn says(scene: Scene, reason: &str) {
    let (said, warned) = scene.ready_reason().await;
    assert_eq!(said, reason);
    assert_eq!(warned, reason != "Reconciled", "{reason}: a failure is also a Warning, a success is not");
}

#[tokio::test]
async fn a_binding_that_converged_is_reconciled() {
    says(Scene::new().await, "Reconciled").await;
}

#[tokio::test]
async fn a_target_aws_will_not_take_is_rejected() {
    let scene = Scene::new().await;
    scene.ctx.ports.target_groups.refused.lock().expect("refused").insert("10.0.0.5".into());
    says(scene, "TargetRejected").await;
}

#[tokio::test]
async fn a_spec_mistake_says_which() {
    says(Scene::new().await.spec(json!({"targetGroupARN": null})), "InvalidSpec").await;
    says(Scene::new().await.spec(json!({"vpcID": "vpc-other"})), "VpcMismatch").await;
    says(Scene::new().await.spec(json!({"ipAddressType": "ipv6"})), "IpAddressTypeMismatch").await;
    let role = json!({"iamRoleArnToAssume": "arn:aws:iam::123456789012:role/tgb", "targetType": "instance"});
    says(Scene::new().await.spec(role), "CrossAccountInstance").await;
    let no_peer = json!({"networking": {"ingress": [{"from": [], "ports": [{"port": 80}]}]}});
    says(Scene::new().await.spec(no_peer), "InvalidNetworking").await;
    let mut nameless = Scene::new().await;
    nameless.tgb.metadata.uid = None;
    says(nameless, "InvalidObject").await;
}

#[tokio::test]
async fn a_spec_at_odds_with_its_target_group_says_how() {
    let groups = FakeTargetGroups::default().with_described(instance_group());
    let scene = Scene::on(groups, Some(service("NodePort")), vec![one_endpoint()]).await;
    says(scene.spec(json!({"targetType": "ip"})), "TargetTypeMismatch").await;
    says(Scene::on(FakeTargetGroups::default(), None, Vec::new()).await, "TargetGroupNotFound").await;
    let gone_vpc = TargetGroupInfo { vpc_id: Some("vpc-gone".into()), ..instance_group() };
    let gone_vpc = TargetGroupInfo { target_type: TargetGroupType::Ip, ..gone_vpc };
    let scene = Scene::on(FakeTargetGroups::default().with_described(gone_vpc), Some(service("ClusterIP")), vec![]);
    says(scene.await.spec(json!({"targetType": "ip"})), "VpcNotFound").await;
}

#[tokio::test]
async fn a_backend_that_cannot_say_what_it_wants_says_why() {
    let groups = || FakeTargetGroups::default().with_group(ARN, &["10.0.0.1"]);
    says(Scene::on(groups(), None, Vec::new()).await, "ServiceNotFound").await;
    says(Scene::on(groups(), Some(service("ClusterIP")), Vec::new()).await, "EndpointsNotPublished").await;
    let scene = Scene::new().await.spec(json!({"serviceRef": {"name": "web", "port": 81}}));
    says(scene, "ServicePortNotFound").await;
    let instance = || FakeTargetGroups::default().with_described(instance_group());
    let scene = Scene::on(instance(), Some(service("ClusterIP")), Vec::new()).await;
    says(scene, "InvalidServiceType").await;
    let scene = Scene::on(instance(), Some(service("NodePort")), Vec::new()).await;
    says(scene.spec(json!({"nodeSelector": {"matchLabels": {"pool": "gpu"}}})), "NoNodeMatchesSelector").await;
}

#[tokio::test]
async fn an_aws_failure_says_which() {
    let op = "DescribeTargetGroups";
    let failures = [
        (AwsError::AccessDenied { op, message: "no".into() }, "AWSAccessDenied"),
        (AwsError::Validation { op, message: "bad".into() }, "AWSValidationError"),
        (AwsError::Throttled { op, message: "slow down".into() }, "Throttled"),
        (AwsError::TooManyTargets { op, arn: ARN.into(), message: "full".into() }, "TooManyTargets"),
        (AwsError::InvalidTarget { op, message: "not in the VPC".into() }, "InvalidTarget"),
        (AwsError::Api { op, code: "InternalFailure".into(), message: "oops".into() }, "AWSError"),
        (AwsError::Transport { op, message: "connection reset".into() }, "AWSUnreachable"),
        (AwsError::Fenced { op }, "NotLeader"),
        (AwsError::OtherAccount { op, arn: ARN.into(), account: "210987654321".into() }, "TargetGroupInOtherAccount"),
        (AwsError::NoRoleAccess { role: "arn:aws:iam::123456789012:role/tgb".into() }, "Unsupported"),
    ];
    for (error, reason) in failures {
        let scene = Scene::new().await;
        scene.ctx.ports.target_groups.fail_with(error);
        says(scene, reason).await;
    }
}

#[tokio::test]
async fn an_ownership_record_failure_says_which() {
    let failures: [(RecordFailure, &str); 3] = [
        (|name| RecordError::Corrupt { name, lines: vec!["10.0.0.1:8080=?".into()] }, "OwnershipRecordCorrupt"),
        (|name| RecordError::Fenced { name }, "NotLeader"),
        (|name| RecordError::Conflict { name }, "OwnershipRecordConflict"),
    ];
    for (failure, reason) in failures {
        let scene = Scene::new().await.spec(json!({"multiClusterTargetGroup": true}));
        if let Ok(mut failing) = scene.ctx.ports.records.failing.lock() {
            *failing = Some(failure);
        }
        says(scene, reason).await;
    }
    let scene = Scene::new().await.spec(json!({"multiClusterTargetGroup": true}));
    scene.ctx.ports.records.unreachable.store(true, std::sync::atomic::Ordering::Relaxed);
    says(scene, "OwnershipRecordFailed").await;
}

#[tokio::test]
async fn another_binding_on_the_group_is_a_conflict() {
    let mut scene = Scene::new().await;
    let mut older: TargetGroupBinding = serde_json::from_value(json!({
        "metadata": {"name": "api", "namespace": "demo", "uid": "u-0"},
        "spec": {"targetGroupARN": ARN, "serviceRef": {"name": "api", "port": 80}}
    }))
    .expect("binding");
    older.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    scene.tgb.metadata.creation_timestamp =
        Some(Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("time")));
    let mut writer = Writer::default();
    writer.apply_watcher_event(&watcher::Event::Apply(older));
    writer.apply_watcher_event(&watcher::Event::Apply(scene.tgb.clone()));
    scene.ctx.kube.bindings = writer.as_reader();
    says(scene, "TargetGroupConflict").await;
}

#[tokio::test]
async fn rules_that_cannot_be_asked_say_why() {
    let named = json!({"networking": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "ports": [{"port": "web"}]}]}});
    says(Scene::new().await.spec(named.clone()), "NamedPortNotFound").await;
    let scene = Scene::new().await.spec(named);
    scene.ctx.ports.cluster.ports_unreadable.store(true, std::sync::atomic::Ordering::Relaxed);
    says(scene, "KubernetesAPIError").await;
}

/// What the security-group loop last said of the binding's rules reaches its status.
#[tokio::test]
async fn the_security_group_loops_outcome_says_why() {
    let (op, group) = ("AuthorizeSecurityGroupIngress", "sg-1".to_owned());
    let message = || "refused".to_owned();
    let outcomes: Vec<(&'static str, String)> = [
        NetworkingError::NoSecurityGroup { eni: "eni-1".into() },
        NetworkingError::AmbiguousSecurityGroup {
            eni: "eni-1".into(),
            groups: "sg-1, sg-2".into(),
            cluster: "c".into(),
        },
        NetworkingError::EniNotFound("10.0.0.5".into()),
    ]
    .iter()
    .map(|e| (e.reason(), e.to_string()))
    .chain(
        [
            SecurityGroupError::Duplicate { op, group: group.clone(), message: message() },
            SecurityGroupError::RulesLimitExceeded { op, group: group.clone(), message: message() },
            SecurityGroupError::GroupNotFound { op, group: group.clone(), message: message() },
            SecurityGroupError::InvalidRule { op, group: group.clone(), message: message() },
            SecurityGroupError::RuleNotFound { op, group: group.clone(), message: message() },
        ]
        .iter()
        .map(|e| (e.reason(), e.to_string())),
    )
    .collect();
    let rules = json!({"networking": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "ports": [{"port": 8080}]}]}});
    for (reason, message) in outcomes {
        let scene = Scene::new().await.spec(rules.clone());
        scene.ctx.networking.state().results.insert("u-1".into(), (1, Some((reason, message))));
        says(scene, reason).await;
    }
}

#[tokio::test]
async fn a_group_a_changed_spec_left_behind_and_not_cleaned_says_so() {
    let groups = FakeTargetGroups::default().with_group(ARN, &[]).with_group(OLD, &["10.0.0.9"]);
    groups.fail_group_with(OLD, AwsError::AccessDenied { op: "DescribeTargetHealth", message: "no".into() });
    let mut scene = Scene::on(groups, Some(service("ClusterIP")), vec![one_endpoint()]).await;
    scene.tgb.status =
        Some(crate::api::TargetGroupBindingStatus { target_group_arn: Some(OLD.into()), ..Default::default() });
    says(scene, "PreviousTargetGroupNotCleaned").await;
}

/// A deletion that cannot finish says so; one that would strand targets it can no longer tell from
/// another cluster's says that.
#[tokio::test]
async fn a_deletion_that_cannot_finish_says_why() {
    let deleted = |mut scene: Scene| {
        scene.tgb.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        scene
    };
    let scene = deleted(Scene::new().await);
    scene
        .ctx
        .ports
        .target_groups
        .fail_with(AwsError::AccessDenied { op: "DescribeTargetHealth", message: "no".into() });
    says(scene, "FailedCleanup").await;

    let groups = FakeTargetGroups::default().with_group(ARN, &["10.0.0.9"]);
    let mut scene = deleted(Scene::on(groups, Some(service("ClusterIP")), Vec::new()).await);
    scene.tgb.spec.multi_cluster_target_group = Some(true);
    scene.tgb.status = Some(crate::api::TargetGroupBindingStatus {
        target_group_arn: Some(ARN.into()),
        registered_targets: Some(2),
        ..Default::default()
    });
    says(scene, "OwnershipRecordLost").await;
}
