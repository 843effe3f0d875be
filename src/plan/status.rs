//! What a binding's status says after a reconcile, and the Warning Events that go with it: a pure
//! function of what the reconcile wanted and what its target group's reconcile reported.

use super::health::HealthSummary;
use super::outcome::GroupReport;
use super::wanted::Wanted;
use crate::model::TargetId;

/// What a reconcile found, as the binding's status should show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `Ok` when the group holds exactly the desired targets; otherwise reason and message.
    pub ready: Result<String, (String, String)>,
    pub desired: Option<usize>,
    pub registered: Option<usize>,
    /// Shared bindings: see `TargetGroupBindingStatus::claimed_targets`.
    pub claimed: Option<usize>,
    pub target_group_arn: Option<String>,
    /// The health of the desired targets, as just read from AWS (`None`: not read this time).
    pub health: Option<HealthSummary>,
}

/// What the status is made from.
pub struct StatusInputs<'a> {
    pub tg_arn: &'a str,
    pub tg_name: &'a str,
    pub shared: bool,
    pub wanted: &'a Wanted,
    pub report: &'a GroupReport,
    /// Groups a changed spec left behind and not cleaned yet, described.
    pub left_behind: Option<&'a str>,
    /// The security-group loop's (or the ask's own) failure for this binding: reason, message.
    pub networking: Option<(&'static str, String)>,
}

/// The status, and the Warning Events (reason, message) to record with it.
#[derive(Debug, PartialEq, Eq)]
pub struct StatusPlan {
    pub observed: Observed,
    pub warnings: Vec<(&'static str, String)>,
}

pub fn status(inputs: StatusInputs<'_>) -> StatusPlan {
    let StatusInputs { tg_arn, tg_name, shared, wanted, report, left_behind, networking } = inputs;
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    if !wanted.skipped.is_empty() {
        let nodes: Vec<String> = wanted.skipped.iter().map(|s| format!("{} {}", s.node, s.reason)).collect();
        let message = format!("skipped nodes: {}", nodes.join("; "));
        warnings.push(("NodeSkipped", message.clone()));
        notes.push(message);
    }
    if let Some(note) = uncertain_note(report) {
        warnings.push(("OwnershipUncertain", note.clone()));
        notes.push(note);
    }
    let refused = refused_note(report);
    if let Some(note) = &refused {
        warnings.push(("TargetRejected", note.clone()));
    }
    if let Some(left) = left_behind {
        warnings.push(("PreviousTargetGroupNotCleaned", left.to_owned()));
    }
    if let Some((reason, message)) = &networking {
        warnings.push((reason, message.clone()));
    }
    let summary = format!(
        "{} of {} targets registered in target group {tg_name}",
        report.wanted_registered,
        wanted.targets.len()
    );
    let ready = match (refused, left_behind, networking) {
        (_, _, Some((reason, message))) => Err((reason.to_owned(), format!("{summary}; spec.networking: {message}"))),
        (Some(note), _, None) => Err(("TargetRejected".to_owned(), format!("{summary}; {note}"))),
        (None, Some(left), None) => Err(("PreviousTargetGroupNotCleaned".to_owned(), format!("{summary}; {left}"))),
        (None, None, None) if notes.is_empty() => Ok(summary),
        (None, None, None) => Ok(format!("{summary}; {}", notes.join("; "))),
    };
    // Until the group an exclusive binding left is clean, the status keeps naming the old one, so
    // the next reconcile finds it.
    let target_group_arn = match left_behind {
        Some(_) if !shared => None,
        _ => Some(tg_arn.to_owned()),
    };
    let observed = Observed {
        ready,
        desired: Some(wanted.targets.len()),
        registered: Some(report.wanted_registered),
        claimed: report.claimed,
        target_group_arn,
        health: report.health.clone(),
    };
    StatusPlan { observed, warnings }
}

/// The condition-sized description of the uncertain claims a reconcile left alone, if any.
pub fn uncertain_note(report: &GroupReport) -> Option<String> {
    let kept = &report.decision.uncertain_kept;
    (!kept.is_empty()).then(|| {
        format!(
            "{} serving targets are left alone because a lost AWS answer made their ownership uncertain: {}",
            kept.len(),
            sample(kept.iter())
        )
    })
}

/// The condition-sized description of the targets AWS refused, if any.
pub fn refused_note(report: &GroupReport) -> Option<String> {
    let refused = &report.refused;
    let first = refused.first()?;
    Some(format!(
        "AWS refused {} targets ({}): {}; the others are registered, these are retried at the next drift check",
        refused.len(),
        first.1,
        sample(refused.iter().map(|(t, _)| &t.id))
    ))
}

/// At most five ids, then how many more.
pub fn sample<'a>(ids: impl ExactSizeIterator<Item = &'a TargetId>) -> String {
    let total = ids.len();
    let shown: Vec<String> = ids.take(5).map(ToString::to_string).collect();
    let more = if total > shown.len() { format!(" and {} more", total - shown.len()) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Target, TargetId};
    use crate::plan::instance::SkippedNode;

    const ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";

    fn wanted(ids: &[&str]) -> Wanted {
        Wanted { targets: ids.iter().map(|i| Target::new(TargetId::new(*i, 8080))).collect(), ..Wanted::default() }
    }

    fn report(registered: usize) -> GroupReport {
        GroupReport { wanted_registered: registered, ..GroupReport::default() }
    }

    fn inputs<'a>(wanted: &'a Wanted, report: &'a GroupReport) -> StatusInputs<'a> {
        StatusInputs { tg_arn: ARN, tg_name: "web", shared: false, wanted, report, left_behind: None, networking: None }
    }

    fn reason(plan: &StatusPlan) -> &str {
        match &plan.observed.ready {
            Ok(_) => "Reconciled",
            Err((reason, _)) => reason,
        }
    }

    #[test]
    fn all_registered_is_reconciled_with_counts_and_no_warning() {
        let (w, r) = (wanted(&["10.0.0.1", "10.0.0.2"]), report(2));
        let plan = status(inputs(&w, &r));
        assert_eq!(plan.observed.ready, Ok("2 of 2 targets registered in target group web".into()));
        assert_eq!((plan.observed.desired, plan.observed.registered), (Some(2), Some(2)));
        assert_eq!(plan.observed.target_group_arn.as_deref(), Some(ARN));
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn skipped_nodes_and_uncertain_claims_are_notes_and_warnings_not_failures() {
        let mut w = wanted(&["i-1"]);
        w.skipped = vec![SkippedNode { node: "n2".into(), reason: "has no instance id".into() }];
        let mut r = report(1);
        r.decision.uncertain_kept = vec![TargetId::new("10.0.0.9", 8080)];
        let plan = status(inputs(&w, &r));
        assert_eq!(reason(&plan), "Reconciled");
        let Ok(message) = &plan.observed.ready else { unreachable!() };
        assert!(
            message.contains("skipped nodes: n2 has no instance id") && message.contains("10.0.0.9:8080"),
            "{message}"
        );
        let reasons: Vec<&str> = plan.warnings.iter().map(|(r, _)| *r).collect();
        assert_eq!(reasons, ["NodeSkipped", "OwnershipUncertain"]);
    }

    #[test]
    fn a_refused_target_fails_ready_and_names_the_first_reason() {
        let (w, mut r) = (wanted(&["10.0.0.1", "10.0.0.2"]), report(1));
        r.refused = vec![(Target::new(TargetId::new("10.0.0.2", 8080)), "InvalidTarget".into())];
        let plan = status(inputs(&w, &r));
        assert_eq!(reason(&plan), "TargetRejected");
        assert_eq!(plan.warnings[0].0, "TargetRejected");
        assert!(plan.warnings[0].1.contains("AWS refused 1 targets (InvalidTarget): 10.0.0.2:8080"));
    }

    #[test]
    fn a_group_left_behind_fails_ready_and_an_exclusive_binding_keeps_naming_the_old_group() {
        let (w, r) = (wanted(&["10.0.0.1"]), report(1));
        let left = "previous target group arn:old still holds targets of this binding";
        let plan = status(StatusInputs { left_behind: Some(left), ..inputs(&w, &r) });
        assert_eq!(reason(&plan), "PreviousTargetGroupNotCleaned");
        assert_eq!(plan.observed.target_group_arn, None, "the status keeps the old ARN until it is clean");
        let shared = status(StatusInputs { left_behind: Some(left), shared: true, ..inputs(&w, &r) });
        assert_eq!(shared.observed.target_group_arn.as_deref(), Some(ARN), "shared: the record names the old group");
    }

    #[test]
    fn a_networking_failure_wins_over_everything_else() {
        let (w, mut r) = (wanted(&["10.0.0.1"]), report(0));
        r.refused = vec![(Target::new(TargetId::new("10.0.0.1", 8080)), "InvalidTarget".into())];
        let networking = Some(("AmbiguousSecurityGroup", "eni-1 has sg-1, sg-2".to_owned()));
        let plan = status(StatusInputs { networking, left_behind: Some("old"), ..inputs(&w, &r) });
        assert_eq!(reason(&plan), "AmbiguousSecurityGroup");
        let reasons: Vec<&str> = plan.warnings.iter().map(|(r, _)| *r).collect();
        assert_eq!(
            reasons,
            ["TargetRejected", "PreviousTargetGroupNotCleaned", "AmbiguousSecurityGroup"],
            "each is told"
        );
    }

    #[test]
    fn samples_show_five_and_count_the_rest() {
        let ids: Vec<TargetId> = (1..=7).map(|i| TargetId::new(format!("10.0.0.{i}"), 80)).collect();
        let text = sample(ids.iter());
        assert!(text.ends_with("10.0.0.5:80 and 2 more"), "{text}");
    }
}
