//! Pod readiness gates, as the reference controller defines them: a pod whose spec declares the
//! readiness gate `target-health.elbv2.k8s.aws/<binding name>` becomes Ready only once the load
//! balancer reports its target healthy. This decides each gated pod's condition.

use std::collections::BTreeMap;

use crate::model::{TargetId, TargetState};

pub const GATE_PREFIX: &str = "target-health.elbv2.k8s.aws/";

/// The condition type of `binding`'s readiness gate.
pub fn gate_type(binding: &str) -> String {
    format!("{GATE_PREFIX}{binding}")
}

/// A readiness-gate condition to set.
pub struct GateCondition<'a> {
    pub type_: &'a str,
    pub status: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
}

/// The condition a gated pod should carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateStatus {
    pub healthy: bool,
    pub reason: String,
    pub message: String,
}

impl GateStatus {
    pub fn status(&self) -> &'static str {
        if self.healthy { "True" } else { "False" }
    }

    /// The pod condition of the gate `gate_type` this status sets.
    pub fn condition<'a>(&'a self, gate_type: &'a str) -> GateCondition<'a> {
        GateCondition { type_: gate_type, status: self.status(), reason: &self.reason, message: &self.message }
    }
}

/// For each gated pod (name → its address): True once every target at that address is healthy;
/// otherwise False with the first unhealthy target's state and ELBv2 reason.
pub fn gate_statuses(
    pods: &BTreeMap<String, String>,
    targets: &BTreeMap<TargetId, (TargetState, Option<String>)>,
) -> BTreeMap<String, GateStatus> {
    pods.iter()
        .map(|(pod, address)| {
            let mine: Vec<(&TargetId, &(TargetState, Option<String>))> =
                targets.iter().filter(|(id, _)| &id.id == address).collect();
            let status = match mine.iter().find(|(_, (state, _))| *state != TargetState::Healthy) {
                _ if mine.is_empty() => GateStatus {
                    healthy: false,
                    reason: "Target.NotRegistered".into(),
                    message: format!("{address} is not registered in the target group yet"),
                },
                None => GateStatus {
                    healthy: true,
                    reason: "Target.Healthy".into(),
                    message: format!("the load balancer reports {address} healthy"),
                },
                Some((id, (state, reason))) => GateStatus {
                    healthy: false,
                    reason: reason.clone().unwrap_or_else(|| format!("Target.{state:?}")),
                    message: format!("target {id} is {state:?}"),
                },
            };
            (pod.clone(), status)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_only_once_every_target_of_the_pod_is_healthy() {
        let pods: BTreeMap<String, String> = [
            ("a".to_string(), "10.0.0.1".to_string()),
            ("b".to_string(), "10.0.0.2".to_string()),
            ("c".to_string(), "10.0.0.3".to_string()),
        ]
        .into();
        let targets: BTreeMap<TargetId, (TargetState, Option<String>)> = [
            (TargetId::new("10.0.0.1", 80), (TargetState::Healthy, None)),
            (TargetId::new("10.0.0.1", 81), (TargetState::Healthy, None)),
            (TargetId::new("10.0.0.2", 80), (TargetState::Healthy, None)),
            (TargetId::new("10.0.0.2", 81), (TargetState::Initial, Some("Elb.InitialHealthChecking".into()))),
        ]
        .into();
        let got = gate_statuses(&pods, &targets);
        assert!(got["a"].healthy);
        assert_eq!((got["b"].healthy, got["b"].reason.as_str()), (false, "Elb.InitialHealthChecking"));
        assert_eq!((got["c"].status(), got["c"].reason.as_str()), ("False", "Target.NotRegistered"));
        assert_eq!(gate_type("web"), "target-health.elbv2.k8s.aws/web");
    }
}
