//! End to end with real workloads: a Deployment, its Service and the slices the real EndpointSlice
//! controller publishes for them. These cases only a control plane with its controllers can show:
//! what the cluster does between two of the agent's reads (garbage collection, re-publishing,
//! rollouts, namespace teardown).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tgb_sandbox::{Agent, Sandbox};

/// Deployment `web` in `demo`: `replicas` pods labelled `app: web`, listening on 8080.
async fn deployment(kube: &Client, replicas: i32, gated: bool) {
    let gates = if gated { json!([{"conditionType": "target-health.elbv2.k8s.aws/web"}]) } else { json!([]) };
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "readinessGates": gates,
                    "containers": [{"name": "web", "image": "web:1", "ports": [{"name": "http", "containerPort": 8080}]}]
                }
            }
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(kube.clone(), "demo")
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
}

/// `ip:8080` of the Deployment's pods that are Ready and not being deleted.
async fn ready_pods(kube: &Client) -> BTreeSet<String> {
    let pods: Api<Pod> = Api::namespaced(kube.clone(), "demo");
    let list = pods.list(&ListParams::default().labels("app=web")).await.expect("list pods");
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let status = p.status?;
            let ready = status.conditions?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(())?;
            Some(format!("{}:8080", status.pod_ip?))
        })
        .collect()
}

/// Waits until `n` pods are Ready and the group's active targets are exactly them.
async fn serving(sandbox: &Sandbox, kube: &Client, arn: &str, n: usize) -> BTreeSet<String> {
    eventually(&format!("{n} ready pods registered"), Duration::from_secs(60), || async {
        let pods = ready_pods(kube).await;
        (pods.len() == n && active_targets(sandbox, arn).await == pods).then_some(pods)
    })
    .await
}

/// A sandbox with the AWS fixture, Service `web` and its Deployment; returns the ip group's ARN.
async fn workload(prefix: &str, replicas: i32, gated: bool) -> (Sandbox, Client, String) {
    let sandbox = Sandbox::start().expect("sandbox");
    let aws = tgb_sandbox::seed_aws(&sandbox, prefix, 1).await.expect("fixture");
    let kube = sandbox.kube().await.expect("kube");
    namespace(&kube, "demo").await;
    service(&kube, "demo", "web", 80, "http", 8080).await;
    deployment(&kube, replicas, gated).await;
    (sandbox, kube, aws.ip_target_group_arn)
}

/// [`workload`] with an exclusive binding `web` and the agent running.
async fn start(prefix: &str, replicas: i32) -> (Sandbox, Client, String, Agent) {
    let (sandbox, kube, arn) = workload(prefix, replicas, false).await;
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");
    (sandbox, kube, arn, agent)
}

/// `kubectl replace --force`, `helm --force`, Argo's `Replace=true`: the Service goes and comes back
/// while its pods keep serving. The garbage collector deletes its EndpointSlices and the
/// EndpointSlice controller publishes new ones a moment later; in between there is a Service with
/// a selector and no slice, which is "not published yet", never "no endpoints".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_recreated_while_pods_serve_keeps_every_target() {
    let (sandbox, kube, arn, _agent) = start("svcrecreate", 2).await;
    let pods = serving(&sandbox, &kube, &arn, 2).await;

    // A loaded control plane: the EndpointSlice controller's next slice for demo lands 4 s late.
    let hold = json!({"holdRequests": {"count": 5, "seconds": 4, "verb": "create", "pathContains": "/namespaces/demo/endpointslices"}});
    sandbox.controllers_fault(hold).await.expect("hold the EndpointSlice controller");
    let services: Api<Service> = Api::namespaced(kube.clone(), "demo");
    let old = services.get("web").await.expect("service").metadata.uid;
    services.delete("web", &DeleteParams::default()).await.expect("delete service");
    // The garbage collector deletes the old Service's slices; then the Service comes back.
    let slices: Api<EndpointSlice> = Api::namespaced(kube.clone(), "demo");
    eventually("the old slices garbage-collected", Duration::from_secs(30), || async {
        let list = slices.list(&ListParams::default().labels("kubernetes.io/service-name=web")).await.ok()?;
        list.items.is_empty().then_some(())
    })
    .await;
    service(&kube, "demo", "web", 80, "http", 8080).await;
    assert_ne!(services.get("web").await.expect("service").metadata.uid, old, "a new Service, not the old one");

    // Watch the group until the new Service's slice is published and reconciled, and a while after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let active = active_targets(&sandbox, &arn).await;
        assert_eq!(active, pods, "targets left the group while the Service was re-created");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
}

/// A real empty backend is still honoured: scaled to zero, the group empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_scaled_to_zero_empties_the_group() {
    let (sandbox, kube, arn, _agent) = start("scalezero", 2).await;
    serving(&sandbox, &kube, &arn, 2).await;
    let deployments: Api<Deployment> = Api::namespaced(kube.clone(), "demo");
    let scale = json!({"spec": {"replicas": 0}});
    deployments.patch_scale("web", &PatchParams::default(), &Patch::Merge(&scale)).await.expect("scale to 0");
    wait_for_targets(&sandbox, &arn, &[]).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
}

/// Deleting the namespace deletes the binding with everything else: the finalizer holds the
/// namespace until the agent has deregistered the binding's targets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_cleans_the_group_before_the_namespace_goes() {
    let (sandbox, kube, arn, _agent) = start("nsdelete", 2).await;
    serving(&sandbox, &kube, &arn, 2).await;
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    namespaces.delete("demo", &DeleteParams::default()).await.expect("delete namespace");
    eventually("namespace demo gone", Duration::from_secs(90), || async {
        namespaces.get_opt("demo").await.expect("get namespace").is_none().then_some(())
    })
    .await;
    assert_eq!(active_targets(&sandbox, &arn).await, BTreeSet::new(), "the namespace went and left targets behind");
}

/// A rolling update of a Deployment that declares the readiness gate: a new pod turns Ready only
/// once the load balancer sees it healthy, so the rollout never leaves the group without a healthy
/// target, and at the end the group holds exactly the new pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_rollout_keeps_healthy_targets_throughout() {
    let (sandbox, kube, arn) = workload("rollout", 3, true).await;
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");
    let before = serving(&sandbox, &kube, &arn, 3).await;

    let restart = json!({"spec": {"template": {"metadata": {"annotations": {"e2e/restartedAt": "1"}}}}});
    Api::<Deployment>::namespaced(kube.clone(), "demo")
        .patch("web", &PatchParams::default(), &Patch::Merge(&restart))
        .await
        .expect("restart");
    let mut min_healthy = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(90);
    let after = loop {
        let health = tgb_sandbox::targets(&sandbox, &arn).await.expect("describe targets");
        min_healthy = min_healthy.min(health.values().filter(|s| s.as_str() == "healthy").count());
        let pods = ready_pods(&kube).await;
        let active = active_targets(&sandbox, &arn).await;
        if pods.len() == 3 && pods.is_disjoint(&before) && active == pods {
            break pods;
        }
        assert!(Instant::now() < deadline, "rollout not done: ready pods {pods:?}, active targets {active:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("rolling update of 3 gated pods: min healthy targets seen {min_healthy}; new targets {after:?}");
    assert!(min_healthy >= 1, "the group had no healthy target during the rollout");
}

/// A shared binding's ownership record deleted by hand: the agent that last wrote it carries on
/// from memory (an `OwnershipRecordRestored` Warning; its deletion removes its targets). An agent
/// restarted since remembers nothing: while the pods serve, what they hold is this binding's;
/// once they are gone, the binding cannot tell its targets from another cluster's, so its
/// deletion is held with a reason and a Warning instead of vanishing quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ownership_record_never_lets_a_binding_vanish_quietly() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let (sandbox, kube, arn) = workload("lostrecord", 2, false).await;
    let mut spec = ip_binding(&arn);
    spec["multiClusterTargetGroup"] = json!(true);
    binding(&kube, "demo", "web", spec.clone()).await;
    binding(&kube, "demo", "web-2", spec).await;
    let mut agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");
    serving(&sandbox, &kube, &arn, 2).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
    wait_for_condition(&kube, "demo", "web-2", "True", "Reconciled").await;
    let records: Api<ConfigMap> = Api::namespaced(kube.clone(), "tgb-system");
    let lose = |name: &'static str| {
        let (kube, records) = (kube.clone(), records.clone());
        async move {
            let uid = get_binding(&kube, "demo", name).await.and_then(|b| b.metadata.uid).expect("uid");
            records.delete(&format!("tgb-owned-{uid}"), &DeleteParams::default()).await.expect("delete the record");
        }
    };

    // The agent remembers web-2's record: its deletion removes what it registered, and says why.
    lose("web-2").await;
    delete_binding(&kube, "demo", "web-2").await;
    eventually("web-2 deleted", Duration::from_secs(30), || async {
        get_binding(&kube, "demo", "web-2").await.is_none().then_some(())
    })
    .await;
    let reasons = warning_reasons(&kube, "demo", "web-2").await;
    assert!(reasons.contains(&"OwnershipRecordRestored".to_string()), "{reasons:?}");

    // `web` re-registers them; its Service and so its endpoints go (fail static: targets kept),
    // then its record is lost.
    serving(&sandbox, &kube, &arn, 2).await;
    Api::<Service>::namespaced(kube.clone(), "demo").delete("web", &DeleteParams::default()).await.expect("delete svc");
    wait_for_condition(&kube, "demo", "web", "False", "ServiceNotFound").await;
    let slices: Api<EndpointSlice> = Api::namespaced(kube.clone(), "demo");
    eventually("the slices garbage-collected", Duration::from_secs(30), || async {
        let list = slices.list(&ListParams::default().labels("kubernetes.io/service-name=web")).await.ok()?;
        list.items.is_empty().then_some(())
    })
    .await;
    lose("web").await;
    // An agent that never saw `web`'s record: a restart forgets. `plan` (no memory either) says
    // before it what the deletion will do: remove nothing, and wait.
    agent.kill();
    delete_binding(&kube, "demo", "web").await;
    let (_, text) = plan_as_agent(&sandbox, "e2e");
    assert!(text.contains("OwnershipRecordLost") && text.contains("the deletion would be held"), "{text}");
    assert!(!text.contains("- deregister"), "{text}");
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "60s"]).expect("agent");
    wait_for_condition(&kube, "demo", "web", "False", "OwnershipRecordLost").await;
    eventually("an OwnershipRecordLost Warning", Duration::from_secs(10), || async {
        warning_reasons(&kube, "demo", "web").await.contains(&"OwnershipRecordLost".to_string()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(get_binding(&kube, "demo", "web").await.is_some(), "the binding vanished with its targets unaccounted for");
    assert_eq!(active_targets(&sandbox, &arn).await.len(), 2, "nothing this binding cannot prove its own is removed");
}
