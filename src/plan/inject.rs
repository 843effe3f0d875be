//! Readiness-gate injection at pod creation, the reference controller's contract: a pod created in
//! a namespace that asks for injection gets the gate `target-health.elbv2.k8s.aws/<binding>` of
//! every `targetType: ip` binding whose Service selects it, so a rollout waits for the load
//! balancer to see the new pod healthy.

use std::collections::BTreeMap;

use super::gates::gate_type;

/// The first version's gate prefix: gates of this kind are never set by anyone any more, so a pod
/// carrying one would never turn Ready. The reference controller strips them; so does this.
pub const LEGACY_GATE_PREFIX: &str = "target-health.alb.ingress.k8s.aws/";

/// A binding as injection sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub binding: String,
    /// The Service's `spec.selector`: `None` while the Service does not exist (skipped).
    pub selector: Option<BTreeMap<String, String>>,
}

/// The pod's readiness gates after injection (condition types, in order), or `None` when nothing
/// changes. Gates the pod declares are kept (once each); the legacy ones are dropped; a Service
/// with an empty selector selects no pod here (its endpoints are written by hand).
pub fn readiness_gates(
    existing: &[String],
    pod_labels: &BTreeMap<String, String>,
    candidates: &[Candidate],
) -> Option<Vec<String>> {
    let mut gates: Vec<String> = Vec::with_capacity(existing.len() + candidates.len());
    for gate in existing {
        if !gate.starts_with(LEGACY_GATE_PREFIX) && !gates.contains(gate) {
            gates.push(gate.clone());
        }
    }
    for candidate in candidates {
        let Some(selector) = candidate.selector.as_ref().filter(|s| !s.is_empty()) else { continue };
        if selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)) {
            let gate = gate_type(&candidate.binding);
            if !gates.contains(&gate) {
                gates.push(gate);
            }
        }
    }
    (gates.as_slice() != existing).then_some(gates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn candidate(binding: &str, selector: Option<&[(&str, &str)]>) -> Candidate {
        Candidate { binding: binding.to_owned(), selector: selector.map(labels) }
    }

    fn owned(gates: &[&str]) -> Vec<String> {
        gates.iter().map(|g| (*g).to_owned()).collect()
    }

    #[test]
    fn a_pod_its_service_selects_gets_the_bindings_gate() {
        let pod = labels(&[("app", "web"), ("pod-template-hash", "abc")]);
        let got = readiness_gates(&[], &pod, &[candidate("web", Some(&[("app", "web")]))]);
        assert_eq!(got, Some(owned(&["target-health.elbv2.k8s.aws/web"])));
    }

    #[test]
    fn a_selector_must_match_every_label() {
        let pod = labels(&[("app", "web")]);
        let got = readiness_gates(&[], &pod, &[candidate("web", Some(&[("app", "web"), ("tier", "front")]))]);
        assert_eq!(got, None);
    }

    #[test]
    fn missing_services_and_empty_selectors_select_nothing() {
        let pod = labels(&[("app", "web")]);
        let got = readiness_gates(&[], &pod, &[candidate("gone", None), candidate("by-hand", Some(&[]))]);
        assert_eq!(got, None);
    }

    #[test]
    fn declared_gates_are_kept_and_never_doubled() {
        let pod = labels(&[("app", "web")]);
        let existing = owned(&["example.com/feature", "target-health.elbv2.k8s.aws/web"]);
        let candidates = [candidate("web", Some(&[("app", "web")])), candidate("api", Some(&[("app", "web")]))];
        let got = readiness_gates(&existing, &pod, &candidates);
        assert_eq!(
            got,
            Some(owned(&["example.com/feature", "target-health.elbv2.k8s.aws/web", "target-health.elbv2.k8s.aws/api"]))
        );
        let again = readiness_gates(got.as_deref().unwrap_or_default(), &pod, &candidates);
        assert_eq!(again, None, "injection is idempotent (a webhook may be called twice)");
    }

    #[test]
    fn legacy_gates_are_stripped_even_with_nothing_to_add() {
        let pod = labels(&[("app", "web")]);
        let existing = owned(&["target-health.alb.ingress.k8s.aws/old-ingress", "example.com/feature"]);
        assert_eq!(readiness_gates(&existing, &pod, &[]), Some(owned(&["example.com/feature"])));
    }
}
