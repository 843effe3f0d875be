//! End to end on the sandbox: what must never go wrong (foreign targets, mass deregistration,
//! crashes, drift, throttling) and how bad inputs are reported.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tgb_sandbox::{
    Agent, create_ip_target_group, delete_target_group, deregister_directly, register_directly, target_zones,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_cluster_never_touches_foreign_targets() {
    let (sandbox, aws, kube) = world("multi", &[Ep::Ready("10.0.0.10")]).await;
    let arn = aws.ip_target_group_arn.clone();
    // Another cluster's target, registered before this cluster ever looked.
    register_directly(&sandbox, &arn, &[("10.0.9.9", 8080)]).await.expect("foreign target");
    let mut spec = ip_binding(&arn);
    spec["multiClusterTargetGroup"] = json!(true);
    binding(&kube, "demo", "web", spec).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "2s"]).expect("agent");

    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080", "10.0.9.9:8080"]).await;
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.11")]).await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.11:8080", "10.0.9.9:8080"]).await;
    // Drift checks come and go; the foreign target stays.
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.11:8080", "10.0.9.9:8080"]).await;
    delete_binding(&kube, "demo", "web").await;
    eventually("binding gone", Duration::from_secs(30), || async {
        get_binding(&kube, "demo", "web").await.is_none().then_some(())
    })
    .await;
    wait_for_targets(&sandbox, &arn, &["10.0.9.9:8080"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_binding_removes_strangers_and_drift_is_repaired() {
    let (sandbox, aws, kube) = world("drift", &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.0.11")]).await;
    let arn = aws.ip_target_group_arn.clone();
    register_directly(&sandbox, &arn, &[("10.0.9.9", 8080)]).await.expect("stranger");
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "2s"]).expect("agent");
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080", "10.0.0.11:8080"]).await;

    // Someone deregisters a target by hand: the next drift check puts it back.
    deregister_directly(&sandbox, &arn, &[("10.0.0.10", 8080)]).await.expect("manual deregistration");
    // Wait for the draining entry to expire so the repair is a fresh registration.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080", "10.0.0.11:8080"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_inputs_cost_no_aws_calls_between_drift_checks() {
    let (sandbox, aws, kube) = world("noop", &[Ep::Ready("10.0.0.10")]).await;
    let arn = aws.ip_target_group_arn.clone();
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "10m"]).expect("agent");
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080"]).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = sandbox.aws_calls().await.expect("calls");
    // Events that change nothing the binding depends on: a label on the binding, a rewrite of the
    // same EndpointSlice.
    let api: kube::Api<tgb_agent::api::TargetGroupBinding> = kube::Api::namespaced(kube.clone(), "demo");
    api.patch(
        "web",
        &Default::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
    )
    .await
    .expect("label");
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.10")]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = sandbox.aws_calls().await.expect("calls");
    // The test itself calls DescribeTargetHealth through wait_for_targets only before `before`.
    assert_eq!(before, after, "no AWS call for unchanged inputs");
}

/// Fail static: a mistake in the configuration (the Service deleted or renamed, a wrong port) never
/// removes serving targets. Deliberately unlike the reference controller, which empties the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_mistakes_keep_the_targets_with_a_condition() {
    let (sandbox, aws, kube) = world("svcdel", &[Ep::Ready("10.0.0.10")]).await;
    let arn = aws.ip_target_group_arn.clone();
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "2s"]).expect("agent");
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080"]).await;
    let services: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(kube.clone(), "demo");
    services.delete("web", &Default::default()).await.expect("delete service");
    wait_for_condition(&kube, "demo", "web", "False", "ServiceNotFound").await;
    // The Warning is written just after the condition.
    eventually("a ServiceNotFound Warning", Duration::from_secs(10), || async {
        warning_reasons(&kube, "demo", "web").await.contains(&"ServiceNotFound".to_string()).then_some(())
    })
    .await;
    // Through a drift check or two, the target stays.
    for _ in 0..15 {
        assert_eq!(active_targets(&sandbox, &arn).await, set(&["10.0.0.10:8080"]), "a missing Service removed targets");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    service(&kube, "demo", "web", 80, "http", 8080).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;

    // A wrong port number edited into the binding: reported, nothing removed.
    let api: kube::Api<tgb_agent::api::TargetGroupBinding> = kube::Api::namespaced(kube.clone(), "demo");
    let patch = json!({"spec": {"serviceRef": {"name": "web", "port": 8443}}});
    api.patch("web", &Default::default(), &kube::api::Patch::Merge(patch)).await.expect("wrong port");
    wait_for_condition(&kube, "demo", "web", "False", "ServicePortNotFound").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(active_targets(&sandbox, &arn).await, set(&["10.0.0.10:8080"]), "a wrong port removed targets");

    // Endpoints that really go away do remove their targets.
    let patch = json!({"spec": {"serviceRef": {"name": "web", "port": 80}}});
    api.patch("web", &Default::default(), &kube::api::Patch::Merge(patch)).await.expect("right port");
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[]).await;
    wait_for_targets(&sandbox, &arn, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_and_restarted_converges_without_wrong_deregistration() {
    let (sandbox, aws, kube) = world("crash", &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.0.11")]).await;
    let arn = aws.ip_target_group_arn.clone();
    let mut spec = ip_binding(&arn);
    spec["multiClusterTargetGroup"] = json!(true);
    register_directly(&sandbox, &arn, &[("10.0.9.9", 8080)]).await.expect("foreign target");
    binding(&kube, "demo", "web", spec).await;
    let mut agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080", "10.0.0.11:8080", "10.0.9.9:8080"]).await;
    // Slow registrations down, change the endpoints and kill the agent mid-reconcile.
    sandbox.throttle("RegisterTargets", 3).await.expect("throttle");
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.11"), Ep::Ready("10.0.0.12")])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.kill();
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent restarted");
    wait_for_targets(&sandbox, &arn, &["10.0.0.11:8080", "10.0.0.12:8080", "10.0.9.9:8080"]).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_until_converged() {
    let (sandbox, aws, kube) = world("throttle", &[Ep::Ready("10.0.0.10")]).await;
    let arn = aws.ip_target_group_arn.clone();
    sandbox.throttle("RegisterTargets", 4).await.expect("throttle");
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080"]).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
    let log = agent.log();
    assert!(log.contains("Throttled"), "the throttling was seen and retried:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_outside_the_vpc_is_registered_with_az_all() {
    let (sandbox, aws, kube) = world("az", &[Ep::Ready("10.0.0.10"), Ep::Ready("192.168.5.5")]).await;
    let arn = aws.ip_target_group_arn.clone();
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080", "192.168.5.5:8080"]).await;
    let zones = target_zones(&sandbox, &arn).await.expect("zones");
    assert_eq!(zones.get("192.168.5.5:8080"), Some(&Some("all".to_string())));
    assert_ne!(zones.get("10.0.0.10:8080"), Some(&Some("all".to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_their_condition_and_event_while_others_keep_working() {
    let (sandbox, aws, kube) = world("bad", &[Ep::Ready("10.0.0.10")]).await;
    let arn = aws.ip_target_group_arn.clone();
    let missing = arn.replace("/bad-ip/", "/nope/");
    binding(&kube, "demo", "good", ip_binding(&arn)).await;
    binding(&kube, "demo", "no-tg", ip_binding(&missing)).await;
    binding(
        &kube,
        "demo",
        "by-bad-name",
        json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupName": "does-not-exist"}),
    )
    .await;
    binding(&kube, "demo", "wrong-type", ip_binding(&aws.instance_target_group_arn)).await;
    binding(&kube, "demo", "selector", json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": arn, "targetType": "ip", "nodeSelector": {"matchLabels": {"a": "b"}}})).await;
    binding(&kube, "demo", "no-port", json!({"serviceRef": {"name": "web", "port": 81}, "targetGroupARN": create_ip_target_group(&sandbox, &aws, "bad-other").await.expect("tg")})).await;
    // Static mistakes, refused before any AWS call: a CIDR the schema cannot catch, a name that
    // contradicts the ARN.
    // (On a group of their own: bindings sharing the good one's group would contend for it.)
    let elsewhere = arn.replace("/bad-ip/", "/static/");
    let mut bad_cidr = ip_binding(&elsewhere);
    bad_cidr["networking"] =
        json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.1/8"}}], "ports": [{"port": 8080}]}]});
    binding(&kube, "demo", "bad-cidr", bad_cidr).await;
    let mut two_names = ip_binding(&elsewhere);
    two_names["targetGroupName"] = json!("some-other-group");
    binding(&kube, "demo", "two-names", two_names).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");

    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080"]).await;
    wait_for_condition(&kube, "demo", "good", "True", "Reconciled").await;
    for (name, reason) in [
        ("no-tg", "TargetGroupNotFound"),
        ("by-bad-name", "TargetGroupNotFound"),
        ("wrong-type", "TargetTypeMismatch"),
        ("selector", "InvalidSpec"),
        ("no-port", "ServicePortNotFound"),
        ("bad-cidr", "InvalidNetworking"),
        ("two-names", "InvalidSpec"),
    ] {
        wait_for_condition(&kube, "demo", name, "False", reason).await;
        eventually(&format!("Warning event {reason} for {name}"), Duration::from_secs(10), || async {
            warning_reasons(&kube, "demo", name).await.contains(&reason.to_string()).then_some(())
        })
        .await;
    }
    // Nothing was written for the broken bindings: the instance group is untouched.
    assert!(active_targets(&sandbox, &aws.instance_target_group_arn).await.is_empty());
    // The good binding still follows its endpoints.
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.0.11")])
        .await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080", "10.0.0.11:8080"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_group_deleted_outside_gives_a_condition_and_the_binding_stays_deletable() {
    let (sandbox, aws, kube) = world("tggone", &[Ep::Ready("10.0.0.10")]).await;
    let arn = create_ip_target_group(&sandbox, &aws, "tggone-x").await.expect("tg");
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "2s"]).expect("agent");
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080"]).await;
    delete_target_group(&sandbox, &arn).await.expect("delete tg");
    wait_for_condition(&kube, "demo", "web", "False", "TargetGroupNotFound").await;
    delete_binding(&kube, "demo", "web").await;
    eventually("binding gone", Duration::from_secs(30), || async {
        get_binding(&kube, "demo", "web").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_exclusive_binding_on_a_group_conflicts_and_touches_nothing() {
    let (sandbox, aws, kube) = world("twice", &[Ep::Ready("10.0.0.10")]).await;
    let arn = aws.ip_target_group_arn.clone();
    service(&kube, "demo", "other", 80, "http", 8080).await;
    endpoint_slice(&kube, "demo", "other", "other-a", "http", 8080, &[Ep::Ready("10.0.0.50")]).await;
    binding(&kube, "demo", "first", ip_binding(&arn)).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080"]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // creation timestamps have 1 s resolution
    binding(&kube, "demo", "second", json!({"serviceRef": {"name": "other", "port": 80}, "targetGroupARN": arn})).await;
    wait_for_condition(&kube, "demo", "second", "False", "TargetGroupConflict").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080"]).await;
    // Deleting the loser must not take the winner's targets.
    delete_binding(&kube, "demo", "second").await;
    eventually("second gone", Duration::from_secs(30), || async {
        get_binding(&kube, "demo", "second").await.is_none().then_some(())
    })
    .await;
    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_with_only_the_shipped_rbac() {
    // Every other test already runs the agent as its ServiceAccount under deploy/rbac.yaml. Here
    // the agent is pointed at a namespace where that RBAC grants nothing: writing an ownership
    // record there is refused, and the refusal is a condition, not a crash or a silent gap.
    let (sandbox, aws, kube) = world("rbac", &[Ep::Ready("10.0.0.10")]).await;
    let arn = aws.ip_target_group_arn.clone();
    let mut spec = ip_binding(&arn);
    spec["multiClusterTargetGroup"] = json!(true);
    binding(&kube, "demo", "web", spec).await;
    let _agent =
        Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s", "--namespace", "demo"]).expect("agent");
    wait_for_condition(&kube, "demo", "web", "False", "OwnershipRecordFailed").await;
    assert!(active_targets(&sandbox, &arn).await.is_empty(), "nothing registered without an ownership record");
}

/// `deploy/rbac.yaml` is minimal: what the real authorizer grants the agent's ServiceAccount is
/// exactly this list, per namespace (every other test shows it is sufficient: they all run the
/// agent as that ServiceAccount). A grant added to the manifests must be added here, on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_rbac_grants_exactly_what_the_agent_uses() {
    use k8s_openapi::api::authorization::v1::{SelfSubjectRulesReview, SelfSubjectRulesReviewSpec};
    use std::collections::BTreeSet;
    let sandbox = tgb_sandbox::Sandbox::start().expect("sandbox");
    let agent = sandbox.agent_kube().await.expect("agent kube client");
    let granted = |namespace: &'static str| {
        let agent = agent.clone();
        async move {
            let review = SelfSubjectRulesReview {
                spec: SelfSubjectRulesReviewSpec { namespace: Some(namespace.into()) },
                ..Default::default()
            };
            let api: kube::Api<SelfSubjectRulesReview> = kube::Api::all(agent);
            let review = api.create(&Default::default(), &review).await.expect("rules review");
            let status = review.status.expect("review status");
            assert!(!status.incomplete, "the authorizer could not list every rule");
            let mut granted = BTreeSet::new();
            for rule in status.resource_rules {
                // A grant limited to named objects shows as `…:verb@name`.
                let names =
                    rule.resource_names.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| vec![String::new()]);
                for group in rule.api_groups.unwrap_or_default() {
                    for resource in rule.resources.clone().unwrap_or_default() {
                        for verb in &rule.verbs {
                            for name in &names {
                                // Not from deploy/: the API server's bootstrap policy lets every
                                // identity review itself and every ServiceAccount read trust bundles.
                                if !resource.starts_with("selfsubject") && resource != "clustertrustbundles" {
                                    let at = if name.is_empty() { String::new() } else { format!("@{name}") };
                                    granted.insert(format!("{group}/{resource}:{verb}{at}"));
                                }
                            }
                        }
                    }
                }
            }
            granted
        }
    };
    let cluster_wide = [
        "elbv2.k8s.aws/targetgroupbindings:get",
        "elbv2.k8s.aws/targetgroupbindings:list",
        "elbv2.k8s.aws/targetgroupbindings:watch",
        "elbv2.k8s.aws/targetgroupbindings:update",
        "elbv2.k8s.aws/targetgroupbindings:patch",
        "elbv2.k8s.aws/targetgroupbindings/status:patch",
        "/services:get",
        "/services:list",
        "/services:watch",
        "/nodes:get",
        "/nodes:list",
        "/nodes:watch",
        "/pods:get",
        "/pods/status:patch",
        "discovery.k8s.io/endpointslices:get",
        "discovery.k8s.io/endpointslices:list",
        "discovery.k8s.io/endpointslices:watch",
        "/events:create",
        "/events:patch",
        "events.k8s.io/events:create",
        "events.k8s.io/events:patch",
        // The pod webhook's CA bundle, in its own configuration only.
        "admissionregistration.k8s.io/mutatingwebhookconfigurations:get@tgb-agent-webhook",
        "admissionregistration.k8s.io/mutatingwebhookconfigurations:patch@tgb-agent-webhook",
    ];
    let own_namespace = [
        "/configmaps:get",
        "/configmaps:list",
        "/configmaps:watch",
        "/configmaps:create",
        "/configmaps:update",
        "/configmaps:patch",
        "/configmaps:delete",
        "coordination.k8s.io/leases:get",
        "coordination.k8s.io/leases:create",
        "coordination.k8s.io/leases:update",
        // The pod webhook's certificate Secret (RBAC cannot limit create by name).
        "/secrets:create",
        "/secrets:get@tgb-agent-webhook-tls",
        "/secrets:update@tgb-agent-webhook-tls",
    ];
    let expected: BTreeSet<String> = cluster_wide.iter().map(|s| s.to_string()).collect();
    assert_eq!(granted("demo").await, expected, "grants in any namespace");
    let expected: BTreeSet<String> = cluster_wide.iter().chain(&own_namespace).map(|s| s.to_string()).collect();
    assert_eq!(granted("tgb-system").await, expected, "grants in the agent's own namespace");
}
