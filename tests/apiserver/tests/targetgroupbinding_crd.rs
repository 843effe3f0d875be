//! tgb-agent's CRD on the double, driven with kubectl as a user would: it replaces the reference
//! controller's CRD in place (v1alpha1 still in storedVersions), its CEL rules and bounds refuse
//! bad edits at admission, and Events written through events.k8s.io/v1 show up in `kubectl`.

mod common;

use common::Kubectl;
use serde_json::Value;

const OUR_CRD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds/targetgroupbindings.elbv2.k8s.aws.yaml");
const MISSION: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/mission-targetgroupbinding.yaml"));
const ARN_B: &str = "arn:aws:elasticloadbalancing:ap-northeast-1:123456789012:targetgroup/other-tg/fedcba9876543210";

fn reference_crd() -> String {
    std::fs::read_to_string(common::fixture("lbc-targetgroupbindings-crd.yaml")).expect("reference CRD fixture")
}

/// The reference's CRD as its first releases shipped it: v1alpha1 was the storage version.
fn reference_crd_storing_v1alpha1() -> String {
    reference_crd()
        .replace("storage: false", "storage: FALSE")
        .replace("storage: true", "storage: false")
        .replace("storage: FALSE", "storage: true")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn stored_versions(kubectl: &Kubectl) -> String {
    kubectl.ok(&["get", "crd", "targetgroupbindings.elbv2.k8s.aws", "-o", "jsonpath={.status.storedVersions}"]).await
}

/// Our CRD over a cluster that once stored v1alpha1 objects, with one binding in the namespace.
async fn cluster_migrated_from_the_reference(kubectl: &Kubectl) {
    kubectl.ok_with_stdin(&["apply", "-f", "-"], Some(&reference_crd_storing_v1alpha1())).await;
    kubectl.ok(&["create", "namespace", "app-namespace"]).await;
    let old_binding = MISSION.replace("elbv2.k8s.aws/v1beta1", "elbv2.k8s.aws/v1alpha1");
    kubectl.ok_with_stdin(&["apply", "-f", "-"], Some(&old_binding)).await;
    kubectl.ok_with_stdin(&["apply", "-f", "-"], Some(&reference_crd())).await;
    assert_eq!(stored_versions(kubectl).await, r#"["v1alpha1","v1beta1"]"#);
    let out = kubectl.ok(&["apply", "-f", OUR_CRD]).await;
    assert!(out.contains("customresourcedefinition.apiextensions.k8s.io/targetgroupbindings.elbv2.k8s.aws configured"));
}

#[tokio::test]
async fn our_crd_replaces_the_references_where_v1alpha1_was_stored() {
    let server = common::start().await;
    let kubectl = Kubectl::new(&server);
    kubectl.ok_with_stdin(&["apply", "-f", "-"], Some(&reference_crd_storing_v1alpha1())).await;
    kubectl.ok_with_stdin(&["apply", "-f", "-"], Some(&reference_crd())).await;
    assert_eq!(stored_versions(&kubectl).await, r#"["v1alpha1","v1beta1"]"#);

    // A CRD without v1alpha1 is refused, as a real API server refuses it.
    let mut without_alpha: Value = serde_yaml::from_str(&std::fs::read_to_string(OUR_CRD).unwrap()).unwrap();
    let versions = without_alpha["spec"]["versions"].as_array_mut().unwrap();
    versions.retain(|v| v["name"] != "v1alpha1");
    let out =
        kubectl.run_with_stdin(&["apply", "-f", "-"], Some(&serde_json::to_string(&without_alpha).unwrap())).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            r#"CustomResourceDefinition "targetgroupbindings.elbv2.k8s.aws" is invalid: status.storedVersions[0]: Invalid value: "v1alpha1": must appear in spec.versions"#
        ),
        "{}",
        stderr(&out)
    );

    // Ours keeps v1alpha1 served, so it applies; both versions are served, v1beta1 stores.
    let out = kubectl.ok(&["apply", "-f", OUR_CRD]).await;
    assert!(out.contains("targetgroupbindings.elbv2.k8s.aws configured"), "{out}");
    assert_eq!(stored_versions(&kubectl).await, r#"["v1alpha1","v1beta1"]"#);
    let versions = kubectl.ok(&["api-versions"]).await;
    assert!(versions.contains("elbv2.k8s.aws/v1alpha1") && versions.contains("elbv2.k8s.aws/v1beta1"), "{versions}");

    // Once every object is rewritten in v1beta1, a storage migration drops v1alpha1 from the status.
    kubectl
        .ok(&[
            "patch",
            "crd",
            "targetgroupbindings.elbv2.k8s.aws",
            "--subresource",
            "status",
            "--type",
            "merge",
            "-p",
            r#"{"status":{"storedVersions":["v1beta1"]}}"#,
        ])
        .await;
    assert_eq!(stored_versions(&kubectl).await, r#"["v1beta1"]"#);
}

#[tokio::test]
async fn bindings_stored_before_the_replacement_are_served_by_both_versions() {
    let server = common::start().await;
    let kubectl = Kubectl::new(&server);
    cluster_migrated_from_the_reference(&kubectl).await;
    for version in ["v1alpha1", "v1beta1"] {
        let resource = format!("targetgroupbindings.{version}.elbv2.k8s.aws");
        let arn = kubectl
            .ok(&["get", &resource, "app-tgb", "-n", "app-namespace", "-o", "jsonpath={.spec.targetGroupARN}"])
            .await;
        assert!(arn.ends_with("targetgroup/app-tg/0123456789abcdef"), "{version}: {arn}");
    }
}

#[tokio::test]
async fn editing_the_target_group_is_refused_at_admission_with_the_cel_message() {
    let server = common::start().await;
    let kubectl = Kubectl::new(&server);
    cluster_migrated_from_the_reference(&kubectl).await;

    let patch = format!(r#"{{"spec":{{"targetGroupARN":"{ARN_B}"}}}}"#);
    let out = kubectl
        .run(&["patch", "targetgroupbinding", "app-tgb", "-n", "app-namespace", "--type", "merge", "-p", &patch])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            r#"The TargetGroupBinding "app-tgb" is invalid: spec.targetGroupARN: Invalid value: "object": targetGroupARN is immutable once set"#
        ),
        "{}",
        stderr(&out)
    );

    // The same through `kubectl apply` of an edited manifest, and for the other identity fields.
    let edited = MISSION.replace("targetgroup/app-tg/0123456789abcdef", "targetgroup/other-tg/fedcba9876543210");
    let out = kubectl.run_with_stdin(&["apply", "-f", "-"], Some(&edited)).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("targetGroupARN is immutable once set"), "{}", stderr(&out));
    let out = kubectl
        .run_with_stdin(&["apply", "-f", "-"], Some(&MISSION.replace("targetType: ip", "targetType: instance")))
        .await;
    assert!(
        stderr(&out).contains("spec.targetType: Invalid value: \"object\": targetType is immutable"),
        "{}",
        stderr(&out)
    );
    let removed = MISSION.lines().filter(|l| !l.contains("targetGroupARN")).collect::<Vec<_>>().join("\n");
    let out = kubectl.run_with_stdin(&["apply", "-f", "-"], Some(&(removed + "\n  targetGroupName: other-tg\n"))).await;
    assert!(stderr(&out).contains("targetGroupARN is immutable once set"), "removing the ARN: {}", stderr(&out));

    // Fields not set yet may be set; other fields stay editable.
    kubectl
        .ok(&[
            "patch",
            "targetgroupbinding",
            "app-tgb",
            "-n",
            "app-namespace",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"ipAddressType":"ipv4"}}"#,
        ])
        .await;
    kubectl
        .ok(&[
            "patch",
            "targetgroupbinding",
            "app-tgb",
            "-n",
            "app-namespace",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"serviceRef":{"port":8080}}}"#,
        ])
        .await;
    let out = kubectl
        .run(&[
            "patch",
            "targetgroupbinding",
            "app-tgb",
            "-n",
            "app-namespace",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"ipAddressType":"ipv6"}}"#,
        ])
        .await;
    assert!(stderr(&out).contains("ipAddressType is immutable once set"), "{}", stderr(&out));
}

#[tokio::test]
async fn out_of_range_ports_and_malformed_cidrs_are_refused() {
    let server = common::start().await;
    let kubectl = Kubectl::new(&server);
    kubectl.ok(&["apply", "-f", OUR_CRD]).await;
    kubectl.ok(&["create", "namespace", "app-namespace"]).await;

    let out = kubectl.run_with_stdin(&["apply", "-f", "-"], Some(&MISSION.replace("port: 80}", "port: 70000}"))).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("spec.serviceRef.port: Invalid value: 70000: spec.serviceRef.port in body should be less than or equal to 65535"),
        "{}",
        stderr(&out)
    );
    let out = kubectl.run_with_stdin(&["apply", "-f", "-"], Some(&MISSION.replace("port: 80}", "port: 0}"))).await;
    assert!(stderr(&out).contains("should be greater than or equal to 1"), "{}", stderr(&out));

    let networking_port = MISSION.replace("[{protocol: TCP}]", "[{protocol: TCP, port: 70000}]");
    let out = kubectl.run_with_stdin(&["apply", "-f", "-"], Some(&networking_port)).await;
    assert!(
        stderr(&out).contains("spec.networking.ingress[0].ports[0].port: Invalid value: 70000"),
        "{}",
        stderr(&out)
    );

    let peer = "[{securityGroup: {groupID: sg-0123456789abcdef0}}]";
    let cidr = |c: &str| MISSION.replace(peer, &format!("[{{ipBlock: {{cidr: \"{c}\"}}}}]"));
    let out = kubectl.run_with_stdin(&["apply", "-f", "-"], Some(&cidr("10.0.0.0/33"))).await;
    assert!(
        stderr(&out).contains(r#"spec.networking.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.0/33""#),
        "{}",
        stderr(&out)
    );
    for bad in ["10.0.0/16", "10.0.0.0", "2001:db8::/129", "fe80::1::/64"] {
        let out = kubectl.run_with_stdin(&["apply", "-f", "-", "--dry-run=server"], Some(&cidr(bad))).await;
        assert!(!out.status.success(), "{bad} accepted");
    }
    for good in ["10.0.0.0/16", "0.0.0.0/0", "2001:db8::/32", "::/0", "fd00:1:2:3:4:5:6:7/128"] {
        kubectl.ok_with_stdin(&["apply", "-f", "-", "--dry-run=server"], Some(&cidr(good))).await;
    }
    // Named ports stay allowed; the mission's binding applies unchanged.
    kubectl.ok_with_stdin(&["apply", "-f", "-"], Some(&MISSION.replace("port: 80}", "port: http}"))).await;
}

#[tokio::test]
async fn describe_shows_events_written_through_events_k8s_io() {
    let server = common::start().await;
    let kubectl = Kubectl::new(&server);
    kubectl.ok(&["apply", "-f", OUR_CRD]).await;
    kubectl.ok(&["create", "namespace", "app-namespace"]).await;
    kubectl.ok_with_stdin(&["apply", "-f", "-"], Some(MISSION)).await;
    let uid = kubectl
        .ok(&["get", "targetgroupbinding", "app-tgb", "-n", "app-namespace", "-o", "jsonpath={.metadata.uid}"])
        .await;

    let event = format!(
        r#"{{"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {{"name": "app-tgb.registered", "namespace": "app-namespace"}},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "tgb-agent", "reportingInstance": "tgb-agent-0",
            "action": "RegisterTargets", "reason": "TargetsRegistered", "type": "Normal",
            "note": "registered 3 targets in app-tg",
            "regarding": {{"apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
                          "namespace": "app-namespace", "name": "app-tgb", "uid": "{uid}"}}}}"#
    );
    kubectl.ok_with_stdin(&["create", "-f", "-"], Some(&event)).await;

    let described = kubectl.ok(&["describe", "targetgroupbinding", "app-tgb", "-n", "app-namespace"]).await;
    let events = described.split("Events:").nth(1).unwrap_or_default();
    assert!(
        events.contains("Normal") && events.contains("TargetsRegistered") && events.contains("tgb-agent"),
        "{described}"
    );
    assert!(events.contains("registered 3 targets in app-tg"), "{described}");

    let listed = kubectl.ok(&["get", "events", "-n", "app-namespace"]).await;
    assert!(
        listed.contains("TargetsRegistered")
            && listed.contains("targetgroupbinding/app-tgb")
            && listed.contains("registered 3 targets in app-tg"),
        "{listed}"
    );

    // And the other way round: a core/v1 Event is an events.k8s.io/v1 Event with renamed fields.
    let core = r#"{"apiVersion": "v1", "kind": "Event", "metadata": {"name": "legacy", "namespace": "app-namespace"},
        "involvedObject": {"kind": "TargetGroupBinding", "namespace": "app-namespace", "name": "app-tgb"},
        "reason": "Legacy", "message": "written by a core/v1 client", "type": "Warning",
        "source": {"component": "old-controller"}, "count": 1}"#;
    kubectl.ok_with_stdin(&["create", "-f", "-"], Some(core)).await;
    let note = kubectl
        .ok(&[
            "get",
            "events.v1.events.k8s.io",
            "legacy",
            "-n",
            "app-namespace",
            "-o",
            "jsonpath={.note}/{.regarding.name}",
        ])
        .await;
    assert_eq!(note, "written by a core/v1 client/app-tgb");
    let selected = kubectl
        .ok(&[
            "get",
            "events.v1.events.k8s.io",
            "-n",
            "app-namespace",
            "--field-selector",
            "regarding.name=app-tgb,type=Warning",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(selected.trim(), "event.events.k8s.io/legacy");
}

#[tokio::test]
async fn kubectl_create_namespace_sends_protobuf_and_works() {
    let server = common::start().await;
    let kubectl = Kubectl::new(&server);
    let out = kubectl.ok(&["create", "namespace", "team-a"]).await;
    assert!(out.contains("namespace/team-a created"), "{out}");
    let phase = kubectl.ok(&["get", "namespace", "team-a", "-o", "jsonpath={.status.phase}"]).await;
    assert_eq!(phase, "Active");
    let out = kubectl.run(&["create", "namespace", "team-a"]).await;
    assert!(stderr(&out).contains(r#"namespaces "team-a" already exists"#), "{}", stderr(&out));
}

#[tokio::test]
async fn kubectl_create_configmap_secret_and_serviceaccount_send_protobuf_and_work() {
    let server = common::start().await;
    let kubectl = Kubectl::new(&server);
    kubectl.ok(&["create", "configmap", "settings", "--from-literal=mode=ip", "--from-literal=port=80"]).await;
    let data = kubectl.ok(&["get", "configmap", "settings", "-o", "jsonpath={.data}"]).await;
    assert_eq!(data, r#"{"mode":"ip","port":"80"}"#);
    kubectl.ok(&["create", "secret", "generic", "creds", "--from-literal=password=hunter2"]).await;
    let secret = kubectl.ok(&["get", "secret", "creds", "-o", "jsonpath={.data.password}"]).await;
    assert_eq!(secret, "aHVudGVyMg==", "base64 of the bytes sent");
    kubectl.ok(&["create", "serviceaccount", "agent"]).await;
    kubectl.ok(&["get", "serviceaccount", "agent"]).await;
}

/// The CIDR pattern of the committed CRD against the standard library's address parsers, on
/// random valid CIDRs and random one-character corruptions of them (IPv4-embedded IPv6 left out).
#[test]
fn the_cidr_pattern_accepts_exactly_the_cidrs() {
    let crd: Value = serde_yaml::from_str(&std::fs::read_to_string(OUR_CRD).unwrap()).unwrap();
    let pointer = "/spec/versions/1/schema/openAPIV3Schema/properties/spec/properties/networking/properties/ingress/items/properties/from/items/properties/ipBlock/properties/cidr/pattern";
    let pattern = regex_lite::Regex::new(crd.pointer(pointer).and_then(Value::as_str).expect("pattern")).unwrap();
    let is_cidr = |s: &str| {
        let Some((addr, prefix)) = s.split_once('/') else { return false };
        let prefix_ok = |max: u8| {
            !prefix.is_empty()
                && prefix.bytes().all(|b| b.is_ascii_digit())
                && (prefix == "0" || !prefix.starts_with('0'))
                && prefix.parse::<u8>().is_ok_and(|p| p <= max)
        };
        match (addr.parse::<std::net::Ipv4Addr>(), addr.parse::<std::net::Ipv6Addr>()) {
            (Ok(_), _) => prefix_ok(32),
            (_, Ok(_)) => prefix_ok(128),
            _ => false,
        }
    };
    let mut rng = fastrand::Rng::with_seed(13);
    let mut valid = 0;
    for _ in 0..5000 {
        let cidr = if rng.bool() {
            let addr = std::net::Ipv4Addr::from(rng.u32(..));
            format!("{addr}/{}", rng.u8(0..=32))
        } else {
            // Runs of zero groups, so that `::` compression shows up in every position.
            let groups: Vec<u16> = (0..8).map(|_| if rng.u8(..3) == 0 { 0 } else { rng.u16(..) }).collect();
            let addr = std::net::Ipv6Addr::from(<[u16; 8]>::try_from(groups.clone()).unwrap());
            let text = if rng.bool() {
                addr.to_string()
            } else {
                groups.iter().map(|g| format!("{g:x}")).collect::<Vec<_>>().join(":")
            };
            format!("{text}/{}", rng.u8(0..=128))
        };
        let mut candidates = vec![cidr.clone()];
        let mut corrupted: Vec<char> = cidr.chars().collect();
        let at = rng.usize(..corrupted.len());
        match rng.u8(..3) {
            0 => {
                corrupted.remove(at);
            }
            1 => corrupted.insert(at, ['0', '9', 'f', 'g', ':', '.', '/', '3'][rng.usize(..8)]),
            _ => corrupted[at] = ['1', 'a', ':', '.', 'z', '/'][rng.usize(..6)],
        }
        candidates.push(corrupted.into_iter().collect());
        for candidate in candidates {
            let Some((addr, _)) = candidate.split_once('/') else {
                assert!(!pattern.is_match(&candidate), "{candidate}");
                continue;
            };
            if addr.contains(':') && addr.contains('.') {
                continue;
            }
            let expected = is_cidr(&candidate);
            valid += usize::from(expected);
            assert_eq!(pattern.is_match(&candidate), expected, "{candidate}");
        }
    }
    assert!(valid > 5000, "enough valid samples: {valid}");
}

/// kube-runtime's Recorder (what the agent uses) writes events.k8s.io/v1 Events, then patches
/// their series on repeats; `kubectl describe` shows them with the count.
#[tokio::test]
async fn describe_shows_the_events_a_kube_runtime_recorder_writes() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use kube::Resource;
    use kube::api::{Api, DynamicObject, ListParams};
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};

    let server = common::start().await;
    let kubectl = Kubectl::new(&server);
    kubectl.ok(&["apply", "-f", OUR_CRD]).await;
    kubectl.ok(&["create", "namespace", "app-namespace"]).await;
    kubectl.ok_with_stdin(&["apply", "-f", "-"], Some(MISSION)).await;

    let client = common::client(&server).await;
    let gvk = kube::api::GroupVersionKind::gvk("elbv2.k8s.aws", "v1beta1", "TargetGroupBinding");
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "targetgroupbindings");
    let binding: DynamicObject =
        Api::namespaced_with(client.clone(), "app-namespace", &resource).get("app-tgb").await.expect("binding");
    let reference = binding.object_ref(&resource);
    let recorder = Recorder::new(client.clone(), Reporter { controller: "tgb-agent".into(), instance: None });
    let event = Event {
        type_: EventType::Warning,
        reason: "TargetGroupNotFound".into(),
        note: Some("target group app-tg does not exist".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    for _ in 0..3 {
        recorder.publish(&event, &reference).await.expect("publish");
    }

    let core: Api<CoreEvent> = Api::namespaced(client, "app-namespace");
    let uid = binding.metadata.uid.clone().unwrap_or_default();
    let found = core.list(&ListParams::default().fields(&format!("involvedObject.uid={uid}"))).await.expect("list");
    assert_eq!(found.items.len(), 1, "{found:?}");
    let stored = &found.items[0];
    assert_eq!(stored.message.as_deref(), Some("target group app-tg does not exist"));
    assert_eq!(stored.reporting_component.as_deref(), Some("tgb-agent"));
    assert_eq!(stored.series.as_ref().and_then(|s| s.count), Some(3));

    let described = kubectl.ok(&["describe", "targetgroupbinding", "app-tgb", "-n", "app-namespace"]).await;
    let events = described.split("Events:").nth(1).unwrap_or_default();
    assert!(events.contains("Warning") && events.contains("TargetGroupNotFound"), "{described}");
    assert!(events.contains("(x3 over") && events.contains("target group app-tg does not exist"), "{described}");
}

/// The refusals are `Status` objects a client can act on: 422, reason Invalid, the field in causes.
#[tokio::test]
async fn refusals_are_422_invalid_statuses_naming_the_field() {
    let server = common::start().await;
    let kubectl = Kubectl::new(&server);
    cluster_migrated_from_the_reference(&kubectl).await;

    let mut without_alpha: Value = serde_yaml::from_str(&std::fs::read_to_string(OUR_CRD).unwrap()).unwrap();
    without_alpha["spec"]["versions"].as_array_mut().unwrap().retain(|v| v["name"] != "v1alpha1");
    let path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/targetgroupbindings.elbv2.k8s.aws";
    let response = common::http(&server, "PUT", path, Some(&without_alpha.to_string())).await;
    assert_eq!(response.status, 422, "{}", response.body);
    let status = response.json();
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["causes"][0]["field"], "status.storedVersions[0]");
    assert_eq!(status["details"]["causes"][0]["reason"], "FieldValueInvalid");
    assert_eq!(
        status["message"],
        r#"CustomResourceDefinition.apiextensions.k8s.io "targetgroupbindings.elbv2.k8s.aws" is invalid: status.storedVersions[0]: Invalid value: "v1alpha1": must appear in spec.versions"#
    );

    let path = "/apis/elbv2.k8s.aws/v1beta1/namespaces/app-namespace/targetgroupbindings/app-tgb";
    let mut binding = common::http(&server, "GET", path, None).await.json();
    binding["spec"]["targetGroupARN"] = ARN_B.into();
    let response = common::http(&server, "PUT", path, Some(&binding.to_string())).await;
    assert_eq!(response.status, 422, "{}", response.body);
    let status = response.json();
    assert_eq!(status["details"]["kind"], "TargetGroupBinding");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.targetGroupARN");
    assert!(
        status["details"]["causes"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(r#"Invalid value: "object": targetGroupARN is immutable once set"#)),
        "{status}"
    );
    // A non-blocking schema error (a bound) is reported with the rule's; a blocking one (an
    // unsupported enum value) stops the rules, as a real server says.
    binding["spec"]["serviceRef"]["port"] = 70000.into();
    let status = common::http(&server, "PUT", path, Some(&binding.to_string())).await.json();
    let fields: Vec<&str> =
        status["details"]["causes"].as_array().unwrap().iter().filter_map(|c| c["field"].as_str()).collect();
    assert_eq!(fields, vec!["spec.serviceRef.port", "spec.targetGroupARN"], "{status}");
    binding["spec"]["targetType"] = "lambda".into();
    let status = common::http(&server, "PUT", path, Some(&binding.to_string())).await.json();
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains(r#"spec.targetType: Unsupported value: "lambda""#), "{message}");
    assert!(
        message.contains(
            r#"<nil>: Invalid value: "null": some validation rules were not checked because the object was invalid"#
        ),
        "{message}"
    );
    assert!(!message.contains("immutable"), "{message}");
    let unchanged = common::http(&server, "GET", path, None).await.json();
    assert!(unchanged["spec"]["targetGroupARN"].as_str().is_some_and(|a| a.ends_with("app-tg/0123456789abcdef")));
}
