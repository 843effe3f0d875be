//! `admission.k8s.io/v1` AdmissionReview for pods: the request in, the answer (always allowed, with
//! a JSON patch when gates change) out. Only the fields injection reads are decoded.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::index::InjectIndex;
use crate::plan::inject::readiness_gates;

#[derive(Deserialize)]
struct Review {
    request: Request,
}

#[derive(Deserialize)]
struct Request {
    uid: String,
    /// The pod's namespace (a pod created with `generateName` may carry none itself).
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    object: Option<PodFields>,
}

#[derive(Deserialize, Default)]
struct PodFields {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Spec,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    readiness_gates: Vec<Gate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Gate {
    condition_type: String,
}

/// How a request was answered (the metric's `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    Unchanged,
    NotSynced,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Injected => "injected",
            Self::Unchanged => "unchanged",
            Self::NotSynced => "not_synced",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not a pod AdmissionReview: {0}")]
pub struct BadReview(#[from] serde_json::Error);

/// The AdmissionReview answering `body`. Pods are always allowed: injection never blocks a pod.
pub fn review(body: &[u8], index: &InjectIndex) -> Result<(Outcome, Value), BadReview> {
    let Review { request } = serde_json::from_slice(body)?;
    let mut response = json!({"uid": request.uid, "allowed": true});
    let outcome = if !index.synced() {
        // Before the first list, "no binding" may be wrong: say so rather than guess.
        response["warnings"] =
            json!(["tgb-agent: readiness gates not injected, its index has not listed bindings yet"]);
        Outcome::NotSynced
    } else {
        let pod = request.object.unwrap_or_default();
        let existing: Vec<String> = pod.spec.readiness_gates.into_iter().map(|g| g.condition_type).collect();
        match readiness_gates(&existing, &pod.metadata.labels, &index.candidates(&request.namespace)) {
            Some(gates) => {
                let value: Vec<Value> = gates.iter().map(|g| json!({"conditionType": g})).collect();
                // `add` replaces the member when it exists (RFC 6902), so one op serves both cases.
                let patch = json!([{"op": "add", "path": "/spec/readinessGates", "value": value}]);
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
                Outcome::Injected
            }
            None => Outcome::Unchanged,
        }
    };
    Ok((outcome, json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TargetGroupBinding;
    use k8s_openapi::api::core::v1::Service;
    use kube::runtime::watcher::Event;

    fn synced_index() -> InjectIndex {
        let index = InjectIndex::default();
        let binding: TargetGroupBinding = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "demo"},
            "spec": {"targetGroupARN": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/t/1",
                     "serviceRef": {"name": "web", "port": 80}, "targetType": "ip"}
        }))
        .expect("binding");
        let service: Service = serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "demo"}, "spec": {"selector": {"app": "web"}}}),
        )
        .expect("service");
        index.apply_for_test(binding, service);
        index
    }

    fn request(namespace: &str, pod: Value) -> Vec<u8> {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "request": {"uid": "u-1", "namespace": namespace, "operation": "CREATE", "object": pod}})
        .to_string()
        .into_bytes()
    }

    fn patch_of(answer: &Value) -> Value {
        let encoded = answer["response"]["patch"].as_str().expect("a patch");
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).expect("base64");
        serde_json::from_slice(&bytes).expect("json patch")
    }

    #[test]
    fn a_selected_pod_gets_a_json_patch_with_the_gate() {
        let pod = json!({"metadata": {"generateName": "web-", "labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "app", "image": "app"}]}});
        let (outcome, answer) = review(&request("demo", pod), &synced_index()).expect("review");
        assert_eq!(outcome, Outcome::Injected);
        assert_eq!(answer["response"]["uid"], "u-1");
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        assert_eq!(
            patch_of(&answer),
            json!([{"op": "add", "path": "/spec/readinessGates",
                    "value": [{"conditionType": "target-health.elbv2.k8s.aws/web"}]}])
        );
    }

    #[test]
    fn other_namespaces_and_unselected_pods_are_allowed_unchanged() {
        let index = synced_index();
        let web = json!({"metadata": {"labels": {"app": "web"}}, "spec": {}});
        let (outcome, answer) = review(&request("elsewhere", web), &index).expect("review");
        assert_eq!(outcome, Outcome::Unchanged);
        assert_eq!(answer["response"], json!({"uid": "u-1", "allowed": true}));
        let api = json!({"metadata": {"labels": {"app": "api"}}, "spec": {}});
        assert_eq!(review(&request("demo", api), &index).expect("review").0, Outcome::Unchanged);
    }

    #[test]
    fn before_the_index_has_listed_pods_are_allowed_with_a_warning() {
        let pod = json!({"metadata": {"labels": {"app": "web"}}, "spec": {}});
        let (outcome, answer) = review(&request("demo", pod), &InjectIndex::default()).expect("review");
        assert_eq!(outcome, Outcome::NotSynced);
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"]["warnings"][0].as_str().is_some_and(|w| w.contains("not injected")));
    }

    #[test]
    fn anything_but_a_review_is_refused() {
        assert!(review(b"{\"kind\": \"Pod\"}", &InjectIndex::default()).is_err());
        assert!(review(b"not json", &InjectIndex::default()).is_err());
    }

    impl InjectIndex {
        fn apply_for_test(&self, binding: TargetGroupBinding, service: Service) {
            self.binding_event(Event::Init);
            self.binding_event(Event::InitApply(binding));
            self.binding_event(Event::InitDone);
            self.service_event(Event::Init);
            self.service_event(Event::InitApply(service));
            self.service_event(Event::InitDone);
        }
    }
}
