//! How healthy a binding's targets are, as AWS reported them: counts per state, a few reasons, and
//! the `TargetsHealthy` condition that `kubectl wait` and pipelines gate on.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{HealthCheckTiming, RegisteredTarget, Target, TargetId, TargetState};

/// A pod whose endpoint is gone may still serve through its termination grace period; Kubernetes'
/// default (30 s) is what the lag allows for.
const POD_EXIT_ALLOWANCE_SECS: u64 = 30;

/// Assumed when the group reports no health-check timing: five minutes, ELBv2's longest interval.
const UNKNOWN_HEALTH_LAG_SECS: u64 = 300;

/// How long ELBv2 may go on reporting a target whose pod is gone as healthy: the pod's exit, then
/// `unhealthy_threshold` failed checks, one interval apart, the last one timing out.
pub fn health_lag(timing: Option<HealthCheckTiming>) -> u64 {
    match timing {
        Some(t) => POD_EXIT_ALLOWANCE_SECS + t.interval_secs * t.unhealthy_threshold + t.timeout_secs,
        None => UNKNOWN_HEALTH_LAG_SECS,
    }
}

/// How many reasons of unhealthy targets the status names.
const REASONS_SHOWN: usize = 5;

/// Counts of this binding's desired targets per AWS state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthSummary {
    pub desired: usize,
    pub healthy: usize,
    pub initial: usize,
    pub unhealthy: usize,
    pub draining: usize,
    pub unused: usize,
    pub unavailable: usize,
    /// Not in the group at all (a registration that has not taken effect, or was refused).
    pub missing: usize,
    /// A few targets that are not healthy, with ELBv2's reason code.
    pub reasons: Vec<(TargetId, String)>,
}

impl HealthSummary {
    pub fn all_healthy(&self) -> bool {
        self.desired > 0 && self.healthy == self.desired
    }

    /// `TargetsHealthy` as (status, reason, message).
    pub fn condition(&self) -> (&'static str, &'static str, String) {
        if self.desired == 0 {
            return ("False", "NoTargets", "the binding wants no targets".to_owned());
        }
        let counts = format!("{}/{} healthy", self.healthy, self.desired);
        if self.all_healthy() {
            return ("True", "AllHealthy", counts);
        }
        let mut parts = vec![counts];
        for (n, name) in [
            (self.initial, "initial"),
            (self.unhealthy, "unhealthy"),
            (self.draining, "draining"),
            (self.unused, "unused"),
            (self.unavailable, "unavailable"),
            (self.missing, "not registered"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {name}"));
            }
        }
        if !self.reasons.is_empty() {
            let reasons: Vec<String> = self.reasons.iter().map(|(id, r)| format!("{id} {r}")).collect();
            parts.push(format!("reasons: {}", reasons.join(", ")));
        }
        ("False", "TargetsNotHealthy", parts.join("; "))
    }
}

/// The health of `desired` as read in `current` just before `registered_now` were registered
/// (those count as initial: ELBv2 starts every new target there).
pub fn summarize(desired: &BTreeSet<Target>, current: &[RegisteredTarget], registered_now: &[Target]) -> HealthSummary {
    let by_id: BTreeMap<&TargetId, &RegisteredTarget> = current.iter().map(|t| (&t.target.id, t)).collect();
    let new: BTreeSet<&TargetId> = registered_now.iter().map(|t| &t.id).collect();
    let mut summary = HealthSummary { desired: desired.len(), ..Default::default() };
    for target in desired {
        let seen = by_id.get(&target.id);
        let state = if new.contains(&target.id) { Some(TargetState::Initial) } else { seen.map(|t| t.state) };
        match state {
            Some(TargetState::Healthy) => summary.healthy += 1,
            Some(TargetState::Initial) => summary.initial += 1,
            Some(TargetState::Unhealthy) => summary.unhealthy += 1,
            Some(TargetState::Draining | TargetState::UnhealthyDraining) => summary.draining += 1,
            Some(TargetState::Unused) => summary.unused += 1,
            Some(TargetState::Unavailable) => summary.unavailable += 1,
            None => summary.missing += 1,
        }
        let reason = seen.filter(|_| !new.contains(&target.id)).and_then(|t| t.reason.clone());
        if state != Some(TargetState::Healthy)
            && let Some(reason) = reason
            && summary.reasons.len() < REASONS_SHOWN
        {
            summary.reasons.push((target.id.clone(), reason));
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_lag_covers_the_pod_exit_and_every_failed_check() {
        let timing = HealthCheckTiming { interval_secs: 30, timeout_secs: 5, unhealthy_threshold: 2 };
        assert_eq!(health_lag(Some(timing)), 30 + 30 * 2 + 5);
        assert_eq!(health_lag(None), 300);
    }

    fn t(n: u8) -> Target {
        Target::new(TargetId::new(format!("10.0.0.{n}"), 80))
    }

    fn reg(n: u8, state: TargetState, reason: Option<&str>) -> RegisteredTarget {
        RegisteredTarget { target: t(n), state, reason: reason.map(str::to_owned) }
    }

    #[test]
    fn counts_this_bindings_targets_per_state_with_reasons() {
        let desired: BTreeSet<Target> = (1..=5).map(t).collect();
        let current = [
            reg(1, TargetState::Healthy, None),
            reg(2, TargetState::Unhealthy, Some("Target.FailedHealthChecks")),
            reg(3, TargetState::Draining, Some("Target.DeregistrationInProgress")),
            reg(9, TargetState::Unhealthy, Some("Target.Timeout")),
        ];
        let s = summarize(&desired, &current, &[t(4)]);
        assert_eq!((s.healthy, s.unhealthy, s.draining, s.initial, s.missing), (1, 1, 1, 1, 1));
        assert_eq!(s.reasons.len(), 2, "another cluster's target is not this binding's: {:?}", s.reasons);
        let (status, reason, message) = s.condition();
        assert_eq!((status, reason), ("False", "TargetsNotHealthy"));
        assert!(message.starts_with("1/5 healthy; 1 initial; 1 unhealthy"), "{message}");
        assert!(message.contains("10.0.0.2:80 Target.FailedHealthChecks"), "{message}");
    }

    #[test]
    fn all_healthy_and_empty() {
        let desired: BTreeSet<Target> = [t(1)].into();
        let s = summarize(&desired, &[reg(1, TargetState::Healthy, None)], &[]);
        assert_eq!(s.condition(), ("True", "AllHealthy", "1/1 healthy".to_owned()));
        assert_eq!(summarize(&BTreeSet::new(), &[], &[]).condition().1, "NoTargets");
    }
}
