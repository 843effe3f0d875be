//! End to end: tgb-agent's CRD on the sandbox's real kube-apiserver, driven with kubectl as a user
//! would and with kube-rs as the agent does. It replaces the AWS Load Balancer Controller's CRD in
//! place on a cluster that once stored v1alpha1 objects, its CEL rules and bounds refuse bad edits
//! at admission (422 Invalid, naming the field), and the Events the agent publishes show up in
//! `kubectl describe`.

mod common;

use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, PostParams};
use kube::core::Status;
use serde_json::Value;
use tgb_agent::api::TargetGroupBinding;
use tgb_sandbox::{Sandbox, repo_root};

const CRD_NAME: &str = "targetgroupbindings.elbv2.k8s.aws";
const MISSION: &str = include_str!("fixtures/mission-targetgroupbinding.yaml");
const REFERENCE_CRD: &str = include_str!("fixtures/lbc-targetgroupbindings-crd.yaml");
const ARN_A_SUFFIX: &str = "targetgroup/app-tg/0123456789abcdef";
const ARN_B: &str = "arn:aws:elasticloadbalancing:ap-northeast-1:123456789012:targetgroup/other-tg/fedcba9876543210";

fn our_crd_path() -> std::path::PathBuf {
    repo_root().join("crds/targetgroupbindings.elbv2.k8s.aws.yaml")
}

/// The reference's CRD as its first releases shipped it: v1alpha1 was the storage version.
fn reference_crd_storing_v1alpha1() -> String {
    REFERENCE_CRD
        .replace("storage: false", "storage: FALSE")
        .replace("storage: true", "storage: false")
        .replace("storage: FALSE", "storage: true")
}

/// kubectl of the sandbox's Kubernetes release, with a discovery cache of its own.
struct Kubectl<'a>(&'a Sandbox);

impl Kubectl<'_> {
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut command = self.0.kubectl();
        command.env("KUBECACHEDIR", self.0.dir().join("kubectl-cache")).args(args);
        let mut command = tokio::process::Command::from(command);
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn kubectl");
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).await.expect("write kubectl's stdin");
        }
        drop(pipe);
        tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within 120 s"))
            .expect("kubectl output")
    }

    /// Runs kubectl, asserts that it succeeds and returns its stdout.
    async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl, asserts that it fails and returns its stderr.
    async fn refused(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin).await;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "kubectl {args:?} succeeded:\n{}", String::from_utf8_lossy(&out.stdout));
        stderr
    }

    async fn apply(&self, manifest: &str) -> String {
        self.ok(&["apply", "-f", "-"], Some(manifest)).await
    }

    async fn apply_refused(&self, manifest: &str) -> String {
        self.refused(&["apply", "-f", "-"], Some(manifest)).await
    }

    async fn patch_refused(&self, patch: &str) -> String {
        self.refused(
            &["patch", "targetgroupbinding", "app-tgb", "-n", "app-namespace", "--type", "merge", "-p", patch],
            None,
        )
        .await
    }

    async fn patch(&self, patch: &str) {
        self.ok(
            &["patch", "targetgroupbinding", "app-tgb", "-n", "app-namespace", "--type", "merge", "-p", patch],
            None,
        )
        .await;
    }

    async fn stored_versions(&self) -> String {
        self.ok(&["get", "crd", CRD_NAME, "-o", "jsonpath={.status.storedVersions}"], None).await
    }

    async fn wait_established(&self) {
        self.ok(&["wait", "--for=condition=Established", &format!("crd/{CRD_NAME}"), "--timeout=30s"], None).await;
    }

    /// The CRD's conditions are Established and NamesAccepted, both True, and nothing is wrong with
    /// its schema (no NonStructuralSchema condition).
    async fn assert_established_with_names_accepted(&self) {
        let conditions = self.ok(&["get", "crd", CRD_NAME, "-o", "jsonpath={.status.conditions}"], None).await;
        let conditions: Vec<Value> = serde_json::from_str(&conditions).expect("conditions are JSON");
        let status = |type_: &str| {
            conditions.iter().find(|c| c["type"] == type_).map(|c| c["status"].as_str().unwrap_or_default().to_owned())
        };
        assert_eq!(status("Established").as_deref(), Some("True"), "{conditions:?}");
        assert_eq!(status("NamesAccepted").as_deref(), Some("True"), "{conditions:?}");
        assert_eq!(status("NonStructuralSchema"), None, "{conditions:?}");
    }
}

/// The `Status` of a refused request (panics on success or any other error).
fn refusal<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected the API server to refuse, got {other:?}"),
    }
}

fn cause_fields(status: &Status) -> Vec<&str> {
    status.details.iter().flat_map(|d| &d.causes).map(|c| c.field.as_str()).collect()
}

fn assert_invalid(status: &Status, field: &str) {
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"), "{status:?}");
    let details = status.details.as_ref().expect("details");
    assert_eq!(details.kind, "TargetGroupBinding", "{status:?}");
    assert!(cause_fields(status).contains(&field), "{field} not among the causes: {status:?}");
}

/// Our CRD on a cluster that ran the reference's from its v1alpha1 days: the binding created then
/// is still stored as v1alpha1 when ours replaces the CRD in place; both versions serve it, and
/// our CEL rules guard its identity fields from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_crd_replaces_the_references_where_v1alpha1_was_stored() {
    let sandbox = Sandbox::start().expect("sandbox");
    let kubectl = Kubectl(&sandbox);
    let kube = sandbox.kube().await.expect("kube");

    // The sandbox installed ours; go back to a cluster that never had it. Not before its storage
    // is up: the API server's CRD finalizer fails on storage still initializing and retries only
    // after a backoff longer than this test waits (seen once under load).
    common::eventually("the CRD's watch cache ready", Duration::from_secs(60), || async {
        let out = kubectl
            .run(&["get", "--raw", "/apis/elbv2.k8s.aws/v1beta1/targetgroupbindings?resourceVersion=0"], None)
            .await;
        out.status.success().then_some(())
    })
    .await;
    kubectl.ok(&["delete", "crd", CRD_NAME, "--wait=true"], None).await;
    common::eventually("the CRD to be gone", Duration::from_secs(30), || async {
        let crds: Api<CustomResourceDefinition> = Api::all(kube.clone());
        crds.get_opt(CRD_NAME).await.expect("get crd").is_none().then_some(())
    })
    .await;

    // The reference's history: v1alpha1 stored, a binding written then, v1beta1 stored later.
    kubectl.apply(&reference_crd_storing_v1alpha1()).await;
    kubectl.wait_established().await;
    kubectl.ok(&["create", "namespace", "app-namespace"], None).await;
    kubectl.apply(&MISSION.replace("elbv2.k8s.aws/v1beta1", "elbv2.k8s.aws/v1alpha1")).await;
    kubectl.apply(REFERENCE_CRD).await;
    kubectl.wait_established().await;
    assert_eq!(kubectl.stored_versions().await, r#"["v1alpha1","v1beta1"]"#);

    // A CRD without v1alpha1 is refused while objects may still be stored in it...
    let mut without_alpha = tgb_agent::api::crd();
    without_alpha.spec.versions.retain(|v| v.name != "v1alpha1");
    let stderr = kubectl.apply_refused(&serde_json::to_string(&without_alpha).expect("JSON")).await;
    assert!(
        stderr.contains(
            r#"status.storedVersions[0]: Invalid value: "v1alpha1": missing from spec.versions; v1alpha1 was previously a storage version, and must remain in spec.versions until a storage migration ensures no data remains persisted in v1alpha1 and removes v1alpha1 from status.storedVersions"#
        ),
        "{stderr}"
    );
    let crds: Api<CustomResourceDefinition> = Api::all(kube.clone());
    without_alpha.metadata.resource_version = crds.get(CRD_NAME).await.expect("crd").metadata.resource_version;
    let status = refusal(crds.replace(CRD_NAME, &PostParams::default(), &without_alpha).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"), "{status:?}");
    assert_eq!(cause_fields(&status), vec!["status.storedVersions[0]"], "{status:?}");

    // ... while ours, which keeps v1alpha1 served, applies over it in place.
    let out = kubectl.ok(&["apply", "-f", &our_crd_path().to_string_lossy()], None).await;
    assert!(out.contains(&format!("customresourcedefinition.apiextensions.k8s.io/{CRD_NAME} configured")), "{out}");
    kubectl.wait_established().await;
    kubectl.assert_established_with_names_accepted().await;
    assert_eq!(kubectl.stored_versions().await, r#"["v1alpha1","v1beta1"]"#);
    let versions = kubectl.ok(&["api-versions"], None).await;
    assert!(versions.contains("elbv2.k8s.aws/v1alpha1") && versions.contains("elbv2.k8s.aws/v1beta1"), "{versions}");

    // The binding stored as v1alpha1 reads in both versions, and decodes as the agent's type.
    for version in ["v1alpha1", "v1beta1"] {
        let resource = format!("targetgroupbindings.{version}.elbv2.k8s.aws");
        let read = kubectl
            .ok(
                &[
                    "get",
                    &resource,
                    "app-tgb",
                    "-n",
                    "app-namespace",
                    "-o",
                    "jsonpath={.apiVersion} {.spec.targetGroupARN}",
                ],
                None,
            )
            .await;
        assert!(read.starts_with(&format!("elbv2.k8s.aws/{version} ")) && read.ends_with(ARN_A_SUFFIX), "{read}");
    }
    let bindings: Api<TargetGroupBinding> = Api::namespaced(kube.clone(), "app-namespace");
    let binding = bindings.get("app-tgb").await.expect("the binding decodes");
    assert_eq!(binding.spec.service_ref.name, "service-name");
    assert!(binding.spec.target_group_arn.as_deref().is_some_and(|a| a.ends_with(ARN_A_SUFFIX)));

    // Our CEL transition rules now refuse edits of its identity fields, at admission.
    let stderr = kubectl.patch_refused(&format!(r#"{{"spec":{{"targetGroupARN":"{ARN_B}"}}}}"#)).await;
    assert!(
        stderr.contains(r#"The TargetGroupBinding "app-tgb" is invalid: spec.targetGroupARN: Invalid value: targetGroupARN is immutable once set: create a new TargetGroupBinding for another target group"#),
        "{stderr}"
    );
    // The same through `kubectl apply` of an edited manifest, and for the other identity fields.
    let stderr = kubectl.apply_refused(&MISSION.replace(ARN_A_SUFFIX, "targetgroup/other-tg/fedcba9876543210")).await;
    assert!(stderr.contains("spec.targetGroupARN: Invalid value: targetGroupARN is immutable once set"), "{stderr}");
    let stderr = kubectl.apply_refused(&MISSION.replace("targetType: ip", "targetType: instance")).await;
    assert!(stderr.contains("spec.targetType: Invalid value: targetType is immutable once set"), "{stderr}");
    let without_arn = MISSION.lines().filter(|l| !l.contains("targetGroupARN")).collect::<Vec<_>>().join("\n");
    let stderr = kubectl.apply_refused(&(without_arn + "\n  targetGroupName: other-tg\n")).await;
    assert!(stderr.contains("targetGroupARN is immutable once set"), "removing the ARN: {stderr}");

    // Fields not set yet may be set once; other fields stay editable.
    kubectl.patch(r#"{"spec":{"ipAddressType":"ipv4"}}"#).await;
    kubectl.patch(r#"{"spec":{"serviceRef":{"port":8080}}}"#).await;
    let stderr = kubectl.patch_refused(r#"{"spec":{"ipAddressType":"ipv6"}}"#).await;
    assert!(stderr.contains("spec.ipAddressType: Invalid value: ipAddressType is immutable once set"), "{stderr}");
    kubectl.patch(r#"{"spec":{"multiClusterTargetGroup":true}}"#).await;
    let stderr = kubectl.patch_refused(r#"{"spec":{"multiClusterTargetGroup":false}}"#).await;
    assert!(stderr.contains("multiClusterTargetGroup cannot be turned off"), "{stderr}");

    // What a client sees: a 422 Invalid Status naming the field, with the rule's message.
    let mut edited = bindings.get("app-tgb").await.expect("binding");
    edited.spec.target_group_arn = Some(ARN_B.into());
    let status = refusal(bindings.replace("app-tgb", &PostParams::default(), &edited).await);
    assert_invalid(&status, "spec.targetGroupARN");
    let cause = &status.details.as_ref().expect("details").causes[0];
    assert_eq!(cause.reason, "FieldValueInvalid", "{status:?}");
    assert!(cause.message.contains("targetGroupARN is immutable once set"), "{status:?}");
    // A bound broken in the same edit is reported beside the rule's refusal.
    edited.spec.service_ref.port = IntOrString::Int(70000);
    let status = refusal(bindings.replace("app-tgb", &PostParams::default(), &edited).await);
    assert_invalid(&status, "spec.serviceRef.port");
    assert_invalid(&status, "spec.targetGroupARN");
    // A value of the wrong kind (outside an enum) stops the rules from running at all.
    let mut lambda = serde_json::to_value(&edited).expect("JSON");
    lambda["spec"]["targetType"] = "lambda".into();
    let raw: Api<kube::api::DynamicObject> =
        Api::namespaced_with(kube.clone(), "app-namespace", &kube::api::ApiResource::erase::<TargetGroupBinding>(&()));
    let status =
        refusal(raw.replace("app-tgb", &PostParams::default(), &serde_json::from_value(lambda).expect("object")).await);
    assert_invalid(&status, "spec.targetType");
    assert!(status.message.contains(r#"spec.targetType: Unsupported value: "lambda""#), "{status:?}");
    assert!(
        status.message.contains(
            "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid"
        ),
        "{status:?}"
    );
    assert!(!cause_fields(&status).contains(&"spec.targetGroupARN"), "{status:?}");
    let unchanged = bindings.get("app-tgb").await.expect("binding");
    assert!(unchanged.spec.target_group_arn.as_deref().is_some_and(|a| a.ends_with(ARN_A_SUFFIX)));

    // Once every object is rewritten in the storage version, a storage migration may drop v1alpha1
    // from the status (which a later CRD without v1alpha1 then needs).
    let current = kubectl.ok(&["get", "targetgroupbindings", "-A", "-o", "json"], None).await;
    kubectl.ok(&["replace", "-f", "-"], Some(&current)).await;
    kubectl
        .ok(
            &[
                "patch",
                "crd",
                CRD_NAME,
                "--subresource",
                "status",
                "--type",
                "merge",
                "-p",
                r#"{"status":{"storedVersions":["v1beta1"]}}"#,
            ],
            None,
        )
        .await;
    assert_eq!(kubectl.stored_versions().await, r#"["v1beta1"]"#);
}

/// Our CRD as installed (by the sandbox, like deploy/): established, and its bounds refuse
/// out-of-range ports and malformed CIDRs with the API server's schema messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_ports_and_malformed_cidrs_are_refused_as_invalid() {
    let sandbox = Sandbox::start().expect("sandbox");
    let kubectl = Kubectl(&sandbox);
    let kube = sandbox.kube().await.expect("kube");

    // The API server estimates the cost of every CEL rule when the CRD is written and refuses a
    // CRD over budget (or with rules that do not compile): ours being installed and established
    // at all is that check passing.
    kubectl.assert_established_with_names_accepted().await;
    kubectl.ok(&["create", "namespace", "app-namespace"], None).await;

    let stderr = kubectl.apply_refused(&MISSION.replace("port: 80}", "port: 70000}")).await;
    assert!(
        stderr.contains("spec.serviceRef.port: Invalid value: 70000: spec.serviceRef.port in body should be less than or equal to 65535"),
        "{stderr}"
    );
    let stderr = kubectl.apply_refused(&MISSION.replace("port: 80}", "port: 0}")).await;
    assert!(
        stderr.contains(
            "spec.serviceRef.port: Invalid value: 0: spec.serviceRef.port in body should be greater than or equal to 1"
        ),
        "{stderr}"
    );
    let stderr = kubectl.apply_refused(&MISSION.replace("[{protocol: TCP}]", "[{protocol: TCP, port: 70000}]")).await;
    assert!(stderr.contains("spec.networking.ingress[0].ports[0].port: Invalid value: 70000"), "{stderr}");

    let peer = "[{securityGroup: {groupID: sg-0123456789abcdef0}}]";
    let with_cidr = |c: &str| MISSION.replace(peer, &format!("[{{ipBlock: {{cidr: \"{c}\"}}}}]"));
    let stderr = kubectl.apply_refused(&with_cidr("10.0.0.0/33")).await;
    assert!(
        stderr.contains(r#"spec.networking.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.0/33": spec.networking.ingress[0].from[0].ipBlock.cidr in body should match"#),
        "{stderr}"
    );
    for bad in
        ["10.0.0/16", "10.0.0.0", "010.0.0.0/8", "10.0.0.0/08", "2001:db8::/129", "fe80::1::/64", "::ffff:10.0.0.0/104"]
    {
        kubectl.refused(&["apply", "-f", "-", "--dry-run=server"], Some(&with_cidr(bad))).await;
    }
    for good in ["10.0.0.0/16", "0.0.0.0/0", "2001:db8::/32", "::/0", "fd00:1:2:3:4:5:6:7/128", "1:2:3:4:5:6:7::/64"] {
        kubectl.ok(&["apply", "-f", "-", "--dry-run=server"], Some(&with_cidr(good))).await;
    }

    // What a client sees: 422 Invalid, the field in the causes, nothing stored.
    let bindings: Api<TargetGroupBinding> = Api::namespaced(kube.clone(), "app-namespace");
    let mission: TargetGroupBinding = serde_yaml::from_str(MISSION).expect("mission binding");
    let mut port = mission.clone();
    port.spec.service_ref.port = IntOrString::Int(70000);
    let status = refusal(bindings.create(&PostParams::default(), &port).await);
    assert_invalid(&status, "spec.serviceRef.port");
    let cidr: TargetGroupBinding = serde_yaml::from_str(&with_cidr("10.0.0.0/33")).expect("binding");
    let status = refusal(bindings.create(&PostParams::default(), &cidr).await);
    assert_invalid(&status, "spec.networking.ingress[0].from[0].ipBlock.cidr");
    assert!(bindings.get_opt("app-tgb").await.expect("get").is_none(), "a refused binding was stored");

    // Named ports stay allowed; the mission's binding applies unchanged.
    kubectl.apply(&MISSION.replace("port: 80}", "port: http}")).await;
    kubectl.apply(MISSION).await;
    let port = bindings.get("app-tgb").await.expect("binding").spec.service_ref.port;
    assert_eq!(port, IntOrString::Int(80));
}

/// The agent publishes Events through kube-runtime's Recorder (events.k8s.io/v1, a series patched
/// on repeats); `kubectl describe` and `kubectl get events` show them on the binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_the_events_the_agent_publishes() {
    let sandbox = Sandbox::start().expect("sandbox");
    let kubectl = Kubectl(&sandbox);
    let kube = sandbox.kube().await.expect("kube");
    kubectl.ok(&["create", "namespace", "app-namespace"], None).await;
    kubectl.apply(MISSION).await;

    let binding =
        Api::<TargetGroupBinding>::namespaced(kube.clone(), "app-namespace").get("app-tgb").await.expect("binding");
    let events = tgb_agent::k8s::events::Events::new(kube.clone(), Some("tgb-agent-0".into()));
    for _ in 0..3 {
        events.warning(&binding, "TargetGroupNotFound", "target group app-tg does not exist".into()).await;
    }

    let uid = binding.metadata.uid.clone().expect("uid");
    let core: Api<CoreEvent> = Api::namespaced(kube.clone(), "app-namespace");
    let found = core.list(&ListParams::default().fields(&format!("involvedObject.uid={uid}"))).await.expect("list");
    assert_eq!(found.items.len(), 1, "one Event, its series counting the repeats: {found:?}");
    let stored = &found.items[0];
    assert_eq!(stored.message.as_deref(), Some("target group app-tg does not exist"));
    assert_eq!(stored.reporting_component.as_deref(), Some("tgb-agent"));
    assert_eq!(stored.reporting_instance.as_deref(), Some("tgb-agent-0"));
    assert_eq!(stored.series.as_ref().and_then(|s| s.count), Some(3));

    let described = kubectl.ok(&["describe", "targetgroupbinding", "app-tgb", "-n", "app-namespace"], None).await;
    let shown = described.split("Events:").nth(1).unwrap_or_default();
    assert!(shown.contains("Warning") && shown.contains("TargetGroupNotFound"), "{described}");
    assert!(shown.contains("(x3 over") && shown.contains("target group app-tg does not exist"), "{described}");

    let listed = kubectl.ok(&["get", "events", "-n", "app-namespace"], None).await;
    assert!(
        listed.contains("TargetGroupNotFound")
            && listed.contains("targetgroupbinding/app-tgb")
            && listed.contains("target group app-tg does not exist"),
        "{listed}"
    );
}
