use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use crate::api::{TargetGroupBinding, TargetGroupBindingStatus, TargetHealthStatus, TargetReason};
pub use crate::plan::status::Observed;

pub const READY: &str = "Ready";
pub const TARGETS_HEALTHY: &str = "TargetsHealthy";

/// Replaces condition `type_`, keeping its transition time while its status stays the same.
fn set_condition(
    conditions: &mut Vec<Condition>,
    generation: Option<i64>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) {
    let last_transition_time = match conditions.iter().find(|c| c.type_ == type_) {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    });
}

/// The status to write: `Ready` replaced, `TargetsHealthy` and the target counts replaced when AWS
/// was read, everything else kept as it is.
pub fn next_status(tgb: &TargetGroupBinding, observed: &Observed) -> TargetGroupBindingStatus {
    let current = tgb.status.clone().unwrap_or_default();
    let generation = tgb.metadata.generation;
    let mut conditions = current.conditions.clone();
    match &observed.ready {
        Ok(message) => set_condition(&mut conditions, generation, READY, "True", "Reconciled", message.clone()),
        Err((reason, message)) => set_condition(&mut conditions, generation, READY, "False", reason, message.clone()),
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let (mut healthy_targets, mut targets) = (current.healthy_targets, current.targets);
    if let Some(health) = &observed.health {
        let (status, reason, message) = health.condition();
        set_condition(&mut conditions, generation, TARGETS_HEALTHY, status, reason, message);
        healthy_targets = Some(format!("{}/{}", health.healthy, health.desired));
        targets = Some(TargetHealthStatus {
            healthy: count(health.healthy),
            initial: count(health.initial),
            unhealthy: count(health.unhealthy),
            draining: count(health.draining),
            unused: count(health.unused),
            unavailable: count(health.unavailable),
            not_registered: count(health.missing),
            reasons: health
                .reasons
                .iter()
                .map(|(id, reason)| TargetReason { target: id.to_string(), reason: reason.clone() })
                .collect(),
            read_at: k8s_openapi::jiff::Timestamp::now().to_string(),
        });
    }
    TargetGroupBindingStatus {
        observed_generation: generation,
        conditions,
        desired_targets: observed.desired.map(count).or(current.desired_targets),
        registered_targets: observed.registered.map(count).or(current.registered_targets),
        claimed_targets: observed.claimed.map(count).or(current.claimed_targets),
        target_group_arn: observed.target_group_arn.clone().or(current.target_group_arn),
        healthy_targets,
        targets,
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
    use crate::plan::health::HealthSummary;

    fn observed(ready: Result<&str, (&str, &str)>) -> Observed {
        Observed {
            ready: ready.map(str::to_owned).map_err(|(r, m)| (r.to_owned(), m.to_owned())),
            desired: Some(2),
            registered: Some(2),
            claimed: None,
            target_group_arn: Some("arn".into()),
            health: None,
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

    #[test]
    fn health_sets_its_condition_and_counts_and_is_kept_when_not_read() {
        let tgb = TargetGroupBinding::new("b", Default::default());
        let mut o = observed(Ok("ok"));
        o.health = Some(HealthSummary { desired: 3, healthy: 2, initial: 1, ..Default::default() });
        let s = next_status(&tgb, &o);
        let health = s.conditions.iter().find(|c| c.type_ == TARGETS_HEALTHY).expect("condition");
        assert_eq!((health.status.as_str(), health.reason.as_str()), ("False", "TargetsNotHealthy"));
        assert_eq!(s.healthy_targets.as_deref(), Some("2/3"));
        assert_eq!(s.targets.as_ref().map(|t| (t.healthy, t.initial)), Some((2, 1)));
        let mut tgb = tgb;
        tgb.status = Some(s.clone());
        let unread = next_status(&tgb, &observed(Err(("Throttled", "slow"))));
        assert_eq!((unread.healthy_targets, unread.targets), (s.healthy_targets, s.targets));
        assert!(unread.conditions.iter().any(|c| c.type_ == TARGETS_HEALTHY));
    }
}
