//! The TargetGroupBinding API (`elbv2.k8s.aws`), schema-compatible with the AWS Load Balancer
//! Controller's CRD so existing manifests apply unchanged.

pub mod conditions;
mod targetgroupbinding;

pub use targetgroupbinding::*;

/// Finalizer shared with the reference controller, so bindings taken over from it are cleaned up.
pub const FINALIZER: &str = "elbv2.k8s.aws/resources";

/// The CRD as YAML, exactly what `tgb-agent crd` prints and `crds/` holds.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&TargetGroupBinding::crd())
}
