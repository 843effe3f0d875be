//! Schema details schemars cannot derive from the Rust types alone: Kubernetes list/map merge
//! markers, the standard metav1.Condition constraints and the CIDR shape checked at admission.

use schemars::Schema;
use serde_json::{Value, json};

/// An IPv4 CIDR (`10.0.0.0/16`) or IPv6 CIDR (`2001:db8::/32`, any `::` compression). Checked by
/// the API server at admission; a pattern costs nothing in the CEL cost budget, which a rule
/// nested in three unbounded lists would exceed. IPv4-embedded IPv6 notation is not accepted.
pub const CIDR_PATTERN: &str = concat!(
    "^(",
    "((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
    "/(3[0-2]|[12]?[0-9])",
    "|",
    "(",
    "([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}",
    "|([0-9a-fA-F]{1,4}:){1,7}:",
    "|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}",
    "|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}",
    "|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}",
    "|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}",
    "|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}",
    "|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}",
    "|:((:[0-9a-fA-F]{1,4}){1,7}|:)",
    ")",
    "/(12[0-8]|1[01][0-9]|[1-9]?[0-9])",
    ")$"
);

/// The object schema itself, or the object branch of an `anyOf` an `Option` may produce.
fn object_schema(schema: &mut serde_json::Map<String, Value>) -> Option<&mut serde_json::Map<String, Value>> {
    if schema.contains_key("properties") {
        return Some(schema);
    }
    schema
        .get_mut("anyOf")
        .and_then(Value::as_array_mut)?
        .iter_mut()
        .find(|branch| branch.get("properties").is_some())
        .and_then(Value::as_object_mut)
}

fn mark(schema: Option<&mut Value>, key: &str) {
    if let Some(Value::Object(map)) = schema {
        map.insert(key.to_string(), json!("atomic"));
    }
}

/// `nodeSelector` is replaced whole by server-side apply, as in the reference's CRD (a
/// `metav1.LabelSelector` is an atomic map with atomic lists).
pub fn atomic_label_selector(schema: &mut Schema) {
    let Some(selector) = schema.as_object_mut().and_then(object_schema) else {
        return;
    };
    selector.insert("x-kubernetes-map-type".to_string(), json!("atomic"));
    let Some(expressions) = selector.get_mut("properties").and_then(|p| p.get_mut("matchExpressions")) else {
        return;
    };
    mark(expressions.pointer_mut("/items/properties/values"), "x-kubernetes-list-type");
    mark(Some(expressions), "x-kubernetes-list-type");
}

/// The constraints the Kubernetes OpenAPI definition of `metav1.Condition` carries, which
/// k8s-openapi's schema leaves out.
pub fn condition_constraints(schema: &mut Schema) {
    let Some(items) = schema.get_mut("items") else {
        return;
    };
    let constraints = [
        (
            "type",
            json!({
                "maxLength": 316,
                "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
            }),
        ),
        ("status", json!({ "enum": ["True", "False", "Unknown"] })),
        ("observedGeneration", json!({ "minimum": 0 })),
        ("reason", json!({ "maxLength": 1024, "minLength": 1, "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$" })),
        ("message", json!({ "maxLength": 32768 })),
    ];
    for (field, extra) in constraints {
        if let (Some(Value::Object(property)), Value::Object(extra)) =
            (items.pointer_mut(&format!("/properties/{field}")), extra)
        {
            property.extend(extra);
        }
    }
}
