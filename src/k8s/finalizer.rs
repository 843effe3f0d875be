use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use crate::api::{FINALIZER, TargetGroupBinding};

/// Adds the finalizer unless present. The patch carries the resourceVersion, so a concurrent
/// change makes it fail (409) instead of overwriting someone else's finalizer list.
pub async fn ensure(api: &Api<TargetGroupBinding>, tgb: &TargetGroupBinding) -> Result<bool, kube::Error> {
    if tgb.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(false);
    }
    let mut finalizers = tgb.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    patch(api, tgb, finalizers).await.map(|_| true)
}

/// Removes the finalizer, letting Kubernetes delete the binding.
pub async fn remove(api: &Api<TargetGroupBinding>, tgb: &TargetGroupBinding) -> Result<(), kube::Error> {
    if !tgb.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let finalizers = tgb.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    match patch(api, tgb, finalizers).await {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other,
    }
}

async fn patch(
    api: &Api<TargetGroupBinding>,
    tgb: &TargetGroupBinding,
    finalizers: Vec<String>,
) -> Result<(), kube::Error> {
    let body = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": tgb.resource_version() }
    });
    api.patch(&tgb.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await.map(drop)
}
