//! A binding's identity as the controller keys what it keeps.

use kube::ResourceExt;

use super::error::ReconcileError;
use crate::api::TargetGroupBinding;

/// The binding's UID, which everything kept for it is keyed by.
pub fn uid_of(tgb: &TargetGroupBinding) -> Result<String, ReconcileError> {
    tgb.uid().ok_or_else(|| ReconcileError::NoUid {
        binding: format!("{}/{}", tgb.namespace().unwrap_or_default(), tgb.name_any()),
    })
}
