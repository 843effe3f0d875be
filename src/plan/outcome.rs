//! What a target group's reconcile did, as plain data: the one report the status, Events,
//! metrics and errors are made from.

use std::collections::BTreeMap;

use crate::model::{Target, TargetId, TargetState};
use crate::plan::decide::GroupDecision;
use crate::plan::health::HealthSummary;

/// What happened to the group.
#[derive(Debug, Default)]
pub struct GroupReport {
    pub decision: GroupDecision,
    pub deregistered: Vec<Target>,
    pub registered: Vec<Target>,
    /// Targets AWS refused one by one (register: not registrable; they are retried at the next check).
    pub refused: Vec<(Target, String)>,
    /// Wanted targets registered once the writes are done (seen registered, or registered now).
    pub wanted_registered: usize,
    /// Shared bindings: claims in the record on targets in the group (as read, or registered now).
    pub claimed: Option<usize>,
    /// The wanted targets' health as just read (new registrations count as initial).
    pub health: Option<HealthSummary>,
    /// Each wanted target's state and ELBv2 reason as just read (new registrations: initial).
    pub states: BTreeMap<TargetId, (TargetState, Option<String>)>,
}
