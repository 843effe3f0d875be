//! Fault injection, request statistics and RBAC enforcement.

mod common;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PatchParams, PostParams};
use serde_json::json;

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

fn code(err: kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn injected_failures_are_consumed_in_order() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let armed = common::http(
        &server,
        "POST",
        "/_double/faults",
        Some(r#"{"failRequests": {"count": 2, "status": 500, "pathContains": "/configmaps", "verb": "list"}}"#),
    )
    .await;
    assert_eq!(armed.status, 200, "{}", armed.body);
    assert_eq!(armed.json()["failRequests"][0]["count"], 2);

    api.create(&PostParams::default(), &configmap("a")).await.expect("create is not a list");
    assert_eq!(code(api.list(&Default::default()).await.unwrap_err()), 500);
    assert_eq!(code(api.list(&Default::default()).await.unwrap_err()), 500);
    assert_eq!(api.list(&Default::default()).await.unwrap().items.len(), 1);

    common::http(&server, "POST", "/_double/faults", Some(r#"{"failRequests": {"count": 1, "status": 429}}"#)).await;
    let throttled = common::http(&server, "GET", "/api/v1/namespaces/default/configmaps/a", None).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.header("retry-after"), Some("1"));
    assert_eq!(throttled.json()["reason"], "TooManyRequests");

    let bad =
        common::http(&server, "POST", "/_double/faults", Some(r#"{"failRequests": {"count": 1, "status": 404}}"#))
            .await;
    assert_eq!(bad.status, 400);
    common::http(&server, "POST", "/_double/faults", Some(r#"{"failRequests": {"count": 5}}"#)).await;
    let cleared = common::http(&server, "DELETE", "/_double/faults", None).await;
    assert_eq!(cleared.json()["failRequests"], json!([]));
    api.get("a").await.expect("no faults left");
}

#[tokio::test]
async fn stats_count_requests_by_verb_and_resource() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    common::http(&server, "DELETE", "/_double/stats", None).await;
    api.create(&PostParams::default(), &configmap("a")).await.unwrap();
    api.get("a").await.unwrap();
    api.get("a").await.unwrap();
    api.patch("a", &PatchParams::default(), &kube::api::Patch::Merge(json!({"data": {"k": "w"}}))).await.unwrap();
    let stats = common::http(&server, "GET", "/_double/stats", None).await.json();
    assert_eq!(stats["byResource"]["configmaps"], json!({"create": 1, "get": 2, "patch": 1}), "{stats}");
    assert_eq!(stats["byVerb"]["get"], 2);
    assert_eq!(stats["total"], 4);
    assert_eq!(stats["openWatches"], 0);
}

#[tokio::test]
async fn dropped_watches_end_their_streams() {
    use futures::StreamExt;
    let server = common::start().await;
    let client = common::client(&server).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut stream = api.watch(&kube::api::WatchParams::default(), "0").await.unwrap().boxed();
    assert!(
        common::eventually(5, || async {
            common::http(&server, "GET", "/_double/stats", None).await.json()["openWatches"] == 1
        })
        .await
    );
    let stats = common::http(&server, "GET", "/_double/stats", None).await.json();
    assert_eq!(stats["openWatchesByResource"], json!({"configmaps": 1}), "{stats}");
    assert_eq!(stats["peakOpenWatches"], 1, "{stats}");
    common::http(&server, "POST", "/_double/faults", Some(r#"{"dropWatches": true}"#)).await;
    let ended =
        tokio::time::timeout(std::time::Duration::from_secs(5), async { while stream.next().await.is_some() {} }).await;
    assert!(ended.is_ok(), "watch stream should end");
    assert!(
        common::eventually(5, || async {
            common::http(&server, "GET", "/_double/stats", None).await.json()["openWatches"] == 0
        })
        .await
    );
    let stats = common::http(&server, "GET", "/_double/stats", None).await.json();
    assert_eq!(stats["openWatchesByResource"], json!({}), "{stats}");
    assert_eq!(stats["peakOpenWatches"], 1, "the peak outlives the watch: {stats}");
    let reset = common::http(&server, "DELETE", "/_double/stats", None).await.json();
    assert_eq!(reset["peakOpenWatches"], 0, "a reset starts the peak from what is open: {reset}");
}

#[tokio::test]
async fn rbac_enforcement_for_service_accounts() {
    let server = common::start_with(kube_apiserver_double::Config { enforce_rbac: true, ..Default::default() }).await;
    let admin = common::client(&server).await;
    let agent = common::client_with_token(&server, "system:serviceaccount:tools:agent").await;
    let as_agent: Api<ConfigMap> = Api::namespaced(agent.clone(), "default");

    let err = as_agent.list(&Default::default()).await.unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
            assert_eq!(
                status.message,
                r#"configmaps is forbidden: User "system:serviceaccount:tools:agent" cannot list resource "configmaps" in API group "" in the namespace "default""#
            );
        }
        other => panic!("{other:?}"),
    }

    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "cm-reader", "namespace": "default"},
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["update"], "resourceNames": ["mine"]}
        ]
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "agent-reads", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": "tools"}]
    });
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(admin.clone(), "default");
    roles.create(&PostParams::default(), &serde_json::from_value(role).unwrap()).await.unwrap();
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(admin.clone(), "default");
    bindings.create(&PostParams::default(), &serde_json::from_value(binding).unwrap()).await.unwrap();

    let as_admin: Api<ConfigMap> = Api::namespaced(admin, "default");
    as_admin.create(&PostParams::default(), &configmap("mine")).await.unwrap();
    as_admin.create(&PostParams::default(), &configmap("theirs")).await.unwrap();

    assert_eq!(as_agent.list(&Default::default()).await.unwrap().items.len(), 2);
    let mut mine = as_agent.get("mine").await.unwrap();
    mine.data = Some([("k".to_string(), "changed".to_string())].into());
    as_agent.replace("mine", &PostParams::default(), &mine).await.expect("update allowed by resourceNames");
    let mut theirs = as_agent.get("theirs").await.unwrap();
    theirs.data = Some([("k".to_string(), "changed".to_string())].into());
    assert_eq!(code(as_agent.replace("theirs", &PostParams::default(), &theirs).await.unwrap_err()), 403);
    assert_eq!(code(as_agent.create(&PostParams::default(), &configmap("new")).await.unwrap_err()), 403);
    let other_ns: Api<ConfigMap> = Api::namespaced(agent, "kube-system");
    assert_eq!(code(other_ns.list(&Default::default()).await.unwrap_err()), 403);
}
