//! A binding's identity as the controller keys what it keeps.

use kube::ResourceExt;

use super::error::ReconcileError;
use crate::api::TargetGroupBinding;
use crate::model::BindingId;

/// The binding's UID, which everything kept for it is keyed by.
pub fn uid_of(tgb: &TargetGroupBinding) -> Result<String, ReconcileError> {
    tgb.uid().ok_or_else(|| ReconcileError::NoUid {
        binding: format!("{}/{}", tgb.namespace().unwrap_or_default(), tgb.name_any()),
    })
}

/// The binding as its ownership record and target groups know it; a binding without a UID is an
/// error, never keyed by its name.
pub fn id_of(tgb: &TargetGroupBinding) -> Result<BindingId, ReconcileError> {
    Ok(BindingId { uid: uid_of(tgb)?, namespace: tgb.namespace().unwrap_or_default(), name: tgb.name_any() })
}
