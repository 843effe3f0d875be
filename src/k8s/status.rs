use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use crate::api::{TargetGroupBinding, TargetGroupBindingStatus};

pub const READY: &str = "Ready";

/// What a reconcile found, as the binding's status should show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `Ok` when the group holds exactly the desired targets; otherwise reason and message.
    pub ready: Result<String, (String, String)>,
    pub desired: Option<usize>,
    pub registered: Option<usize>,
    pub target_group_arn: Option<String>,
}

/// The status to write: `Ready` replaced (its transition time kept when the status is unchanged),
/// other conditions kept as they are.
pub fn next_status(tgb: &TargetGroupBinding, observed: &Observed) -> TargetGroupBindingStatus {
    let current = tgb.status.clone().unwrap_or_default();
    let (status, reason, message) = match &observed.ready {
        Ok(message) => ("True", "Reconciled".to_owned(), message.clone()),
        Err((reason, message)) => ("False", reason.clone(), message.clone()),
    };
    let previous = current.conditions.iter().find(|c| c.type_ == READY);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    let ready = Condition {
        type_: READY.into(),
        status: status.into(),
        reason,
        message,
        observed_generation: tgb.metadata.generation,
        last_transition_time,
    };
    let mut conditions: Vec<Condition> = current.conditions.into_iter().filter(|c| c.type_ != READY).collect();
    conditions.push(ready);
    let count = |n: Option<usize>| n.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
    TargetGroupBindingStatus {
        observed_generation: tgb.metadata.generation,
        conditions,
        desired_targets: count(observed.desired).or(current.desired_targets),
        registered_targets: count(observed.registered).or(current.registered_targets),
        target_group_arn: observed.target_group_arn.clone().or(current.target_group_arn),
    }
}

/// Writes the status when it differs from what the binding already shows.
pub async fn update(
    api: &Api<TargetGroupBinding>,
    tgb: &TargetGroupBinding,
    observed: &Observed,
) -> Result<(), kube::Error> {
    let status = next_status(tgb, observed);
    if tgb.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let body = serde_json::json!({ "status": status });
    match api.patch_status(&tgb.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(ready: Result<&str, (&str, &str)>) -> Observed {
        Observed {
            ready: ready.map(str::to_owned).map_err(|(r, m)| (r.to_owned(), m.to_owned())),
            desired: Some(2),
            registered: Some(2),
            target_group_arn: Some("arn".into()),
        }
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let mut tgb = TargetGroupBinding::new("b", Default::default());
        tgb.metadata.generation = Some(3);
        let first = next_status(&tgb, &observed(Ok("2 targets")));
        assert_eq!(first.observed_generation, Some(3));
        let t0 = first.conditions[0].last_transition_time.clone();
        tgb.status = Some(first.clone());
        let again = next_status(&tgb, &observed(Ok("2 targets")));
        assert_eq!(again, first, "an unchanged observation writes nothing new");
        let failed = next_status(&tgb, &observed(Err(("Throttled", "slow down"))));
        assert_eq!(failed.conditions.len(), 1);
        assert_eq!(failed.conditions[0].status, "False");
        assert_eq!(failed.conditions[0].reason, "Throttled");
        assert!(failed.conditions[0].last_transition_time.0 >= t0.0);
    }

    #[test]
    fn unknown_counts_keep_the_last_known() {
        let mut tgb = TargetGroupBinding::new("b", Default::default());
        tgb.status = Some(next_status(&tgb, &observed(Ok("ok"))));
        let mut o = observed(Err(("AWSAccessDenied", "no")));
        o.desired = None;
        o.registered = None;
        let s = next_status(&tgb, &o);
        assert_eq!((s.desired_targets, s.registered_targets), (Some(2), Some(2)));
    }
}
