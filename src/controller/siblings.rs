//! The rules for bindings of this cluster that share a target group.

use std::sync::Arc;

use kube::ResourceExt;

use super::error::ReconcileError;
use crate::api::TargetGroupBinding;
use crate::model::BindingId;
use crate::plan::ownership::Record;

/// The binding's UID, which everything kept for it is keyed by.
pub fn uid_of(tgb: &TargetGroupBinding) -> Result<String, ReconcileError> {
    tgb.uid().ok_or_else(|| ReconcileError::NoUid {
        binding: format!("{}/{}", tgb.namespace().unwrap_or_default(), tgb.name_any()),
    })
}

pub fn binding_id(tgb: &TargetGroupBinding) -> BindingId {
    BindingId {
        uid: tgb.uid().unwrap_or_else(|| tgb.name_any()),
        namespace: tgb.namespace().unwrap_or_default(),
        name: tgb.name_any(),
    }
}

/// The other bindings of this cluster bound to `arn`, whatever their sharing mode.
pub fn bound_to(tgb: &TargetGroupBinding, arn: &str, all: &[Arc<TargetGroupBinding>]) -> Vec<BindingId> {
    all.iter().filter(|o| o.uid() != tgb.uid() && bound_arn(o).as_deref() == Some(arn)).map(|o| binding_id(o)).collect()
}

/// Groups a changed spec left behind, each with whether this binding has claims there: the other
/// groups in its ownership record, and for an exclusive binding the group its status still names
/// (unless another binding is bound to it now, which then owns it).
pub fn previous_groups(
    tgb: &TargetGroupBinding,
    current: &str,
    record: &Record,
    shared: bool,
    all: &[Arc<TargetGroupBinding>],
) -> Vec<(String, bool)> {
    let mut previous: Vec<(String, bool)> = record.previous_groups(current).map(|a| (a.to_owned(), true)).collect();
    if !shared
        && let Some(old) = tgb.status.as_ref().and_then(|s| s.target_group_arn.clone())
        && old != current
        && bound_to(tgb, &old, all).is_empty()
        && !previous.iter().any(|(a, _)| *a == old)
    {
        previous.push((old, false));
    }
    previous
}

/// The target group ARN a binding is bound to: from its spec, or as resolved into its status.
pub fn bound_arn(tgb: &TargetGroupBinding) -> Option<String> {
    tgb.spec
        .target_group_arn
        .clone()
        .filter(|a| !a.trim().is_empty())
        .or_else(|| tgb.status.as_ref().and_then(|s| s.target_group_arn.clone()))
}

fn is_multi_cluster(tgb: &TargetGroupBinding) -> bool {
    tgb.spec.multi_cluster_target_group == Some(true)
}

/// The other bindings of this cluster on target group `arn`. Several bindings may share a group
/// only when all of them are multi-cluster; otherwise the oldest binding keeps the group and
/// every later one fails with a conflict (and touches nothing).
pub fn siblings_of(
    tgb: &TargetGroupBinding,
    arn: &str,
    all: &[Arc<TargetGroupBinding>],
) -> Result<Vec<Arc<TargetGroupBinding>>, ReconcileError> {
    let siblings: Vec<_> =
        all.iter().filter(|o| o.uid() != tgb.uid() && bound_arn(o).as_deref() == Some(arn)).cloned().collect();
    if siblings.is_empty() || (is_multi_cluster(tgb) && siblings.iter().all(|s| is_multi_cluster(s))) {
        return Ok(siblings);
    }
    let age = |b: &TargetGroupBinding| (b.creation_timestamp().map(|t| t.0), b.namespace(), b.name_any());
    let oldest = siblings.iter().map(Arc::as_ref).chain(std::iter::once(tgb)).min_by_key(|b| age(b));
    match oldest {
        Some(oldest) if oldest.uid() != tgb.uid() => Err(ReconcileError::TargetGroupConflict {
            arn: arn.to_owned(),
            other: format!("{}/{}", oldest.namespace().unwrap_or_default(), oldest.name_any()),
        }),
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TargetGroupBindingSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn binding(name: &str, uid: &str, age_secs: i64, multi: bool) -> Arc<TargetGroupBinding> {
        let mut b = TargetGroupBinding::new(
            name,
            TargetGroupBindingSpec {
                target_group_arn: Some("arn:tg".into()),
                multi_cluster_target_group: Some(multi),
                ..Default::default()
            },
        );
        b.metadata.namespace = Some("ns".into());
        b.metadata.uid = Some(uid.into());
        let t = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + age_secs).expect("valid time");
        b.metadata.creation_timestamp = Some(Time(t));
        Arc::new(b)
    }

    #[test]
    fn groups_left_behind_are_the_records_others_and_an_exclusive_bindings_old_one() {
        use crate::model::TargetId;
        use crate::plan::ownership::Claim;
        let mut moved = binding("a", "1", 0, false);
        Arc::make_mut(&mut moved).status = Some(crate::api::TargetGroupBindingStatus {
            target_group_arn: Some("arn:old".into()),
            ..Default::default()
        });
        let record = Record::default()
            .with_group("arn:tg", [(TargetId::new("10.0.0.1", 80), Claim::Registered)].into())
            .with_group("arn:older", [(TargetId::new("10.0.0.2", 80), Claim::Registered)].into());
        let all = [moved.clone()];
        assert_eq!(
            previous_groups(&moved, "arn:tg", &record, false, &all),
            vec![("arn:older".to_string(), true), ("arn:old".to_string(), false)]
        );
        assert_eq!(previous_groups(&moved, "arn:tg", &record, true, &all), vec![("arn:older".to_string(), true)]);
        // Another binding is bound to the old group now: it is that binding's, not to be cleaned.
        let mut other = binding("b", "2", 5, false);
        Arc::make_mut(&mut other).spec.target_group_arn = Some("arn:old".into());
        let all = [moved.clone(), other];
        assert_eq!(previous_groups(&moved, "arn:tg", &Record::default(), false, &all), vec![]);
    }

    #[test]
    fn alone_is_fine() {
        let a = binding("a", "1", 0, false);
        assert!(siblings_of(&a, "arn:tg", std::slice::from_ref(&a)).expect("alone").is_empty());
    }

    #[test]
    fn all_multi_cluster_share() {
        let a = binding("a", "1", 0, true);
        let b = binding("b", "2", 5, true);
        assert_eq!(siblings_of(&b, "arn:tg", &[a.clone(), b.clone()]).expect("shared").len(), 1);
    }

    #[test]
    fn the_later_exclusive_binding_conflicts_and_the_older_keeps_the_group() {
        for (a_multi, b_multi) in [(false, false), (true, false), (false, true)] {
            let a = binding("a", "1", 0, a_multi);
            let b = binding("b", "2", 5, b_multi);
            let all = [a.clone(), b.clone()];
            let err = siblings_of(&b, "arn:tg", &all).expect_err("later one conflicts");
            assert_eq!(err.reason(), "TargetGroupConflict");
            assert!(siblings_of(&a, "arn:tg", &all).is_ok(), "older one proceeds ({a_multi},{b_multi})");
        }
    }
}
