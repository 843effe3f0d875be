//! The TargetGroupBinding API (`elbv2.k8s.aws`), schema-compatible with the AWS Load Balancer
//! Controller's CRD so existing manifests apply unchanged.

pub mod conditions;
mod targetgroupbinding;

pub use targetgroupbinding::*;

/// Finalizer shared with the reference controller, so bindings taken over from it are cleaned up.
pub const FINALIZER: &str = "elbv2.k8s.aws/resources";

/// The CRD as YAML, exactly what `tgb-agent crd` prints and `crds/` holds.
pub fn crd_yaml() -> Result<String, serde_json::Error> {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(TargetGroupBinding::crd())?;
    drop_nulls(&mut crd);
    // Rendering a JSON value as YAML cannot fail.
    Ok(serde_yaml::to_string(&crd).unwrap_or_default())
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
