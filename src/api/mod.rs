//! The TargetGroupBinding API (`elbv2.k8s.aws`), schema-compatible with the AWS Load Balancer
//! Controller's CRD so existing manifests apply unchanged.

mod schema;
mod targetgroupbinding;

pub use targetgroupbinding::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Finalizer shared with the reference controller, so bindings taken over from it are cleaned up.
pub const FINALIZER: &str = "elbv2.k8s.aws/resources";

/// The version objects are stored in.
pub const STORAGE_VERSION: &str = "v1beta1";

/// Served but not stored, with the same schema (no conversion): the reference controller's first
/// API version, still listed in `status.storedVersions` on clusters that once stored it. Dropping
/// it from the CRD would make the API server refuse our CRD on exactly those clusters.
pub const LEGACY_VERSION: &str = "v1alpha1";

/// The CRD as YAML, exactly what `tgb-agent crd` prints and `crds/` holds.
pub fn crd_yaml() -> Result<String, serde_json::Error> {
    let mut crd = serde_json::to_value(crd())?;
    drop_nulls(&mut crd);
    integral_bounds(&mut crd);
    int_or_string_types(&mut crd);
    // Rendering a JSON value as YAML cannot fail.
    Ok(serde_yaml::to_string(&crd).unwrap_or_default())
}

/// The CRD: kube-derive's single version, plus the legacy version and the reference's schema shape.
pub fn crd() -> CustomResourceDefinition {
    use kube::CustomResourceExt;
    // `spec` stays required, unlike the reference: a binding without one means nothing, and one
    // such object would make every typed list of bindings fail to decode, blinding the agent to
    // all of them.
    let mut crd = TargetGroupBinding::crd();
    let legacy = crd.spec.versions.iter().find(|v| v.name == STORAGE_VERSION).map(|stored| {
        let mut legacy = stored.clone();
        legacy.name = LEGACY_VERSION.to_string();
        legacy.storage = false;
        legacy
    });
    // The reference lists v1alpha1 first.
    if let Some(legacy) = legacy {
        crd.spec.versions.insert(0, legacy);
    }
    crd
}

/// Optional fields are simply absent in the reference schema: drop the `nullable` markers and
/// `null` enum members that the schema generator adds for `Option` fields.
fn drop_nulls(schema: &mut serde_json::Value) {
    match schema {
        serde_json::Value::Object(map) => {
            map.remove("nullable");
            if let Some(serde_json::Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// `JSONSchemaProps` holds bounds as floats; port bounds read better as the integers they are.
fn integral_bounds(schema: &mut serde_json::Value) {
    match schema {
        serde_json::Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value.as_f64() {
                    Some(bound) if (key == "minimum" || key == "maximum") && bound.fract() == 0.0 => {
                        *value = serde_json::json!(bound as i64);
                    }
                    _ => integral_bounds(value),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_bounds),
        _ => {}
    }
}

/// Int-or-string fields list their two types in `anyOf`, as the reference's (controller-gen) CRD
/// does. Added after kube's schema rewriting, which would empty the branches.
fn int_or_string_types(schema: &mut serde_json::Value) {
    match schema {
        serde_json::Value::Object(map) => {
            if map.get("x-kubernetes-int-or-string") == Some(&serde_json::Value::Bool(true)) {
                map.entry("anyOf").or_insert_with(|| serde_json::json!([{ "type": "integer" }, { "type": "string" }]));
            }
            map.values_mut().for_each(int_or_string_types);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(int_or_string_types),
        _ => {}
    }
}
