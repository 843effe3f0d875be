//! Model-based test of the group sequence (observe → decide → execute → settle) against an in-memory
//! target group shared with another cluster, under crashes and lost AWS answers at every step.
//!
//! The world: a few pod addresses, each held at most by one pod, of this cluster or the other one.
//! ELBv2 keeps one entry per address; an entry's *creator* is the writer whose RegisterTargets made
//! it active (registering an active target changes nothing). Every AWS call and every record write
//! may fail before taking effect, take effect and lose its answer, or crash the agent (which then
//! starts again from its persisted record alone). The other cluster registers the addresses its
//! pods hold and deregisters, lagging, the ones they left. Health lags as ELBv2's does: an entry
//! whose pod left keeps reporting healthy until its failed checks add up ([`ELB_LAG_SECS`]).
//! Deletion takes this cluster's pods with it, as deleting a namespace does.
//!
//! Addresses are reused across clusters: a pod of this cluster may get an address whose entry the
//! other cluster created and, lagging, still routes; this cluster adopts the entry without a write,
//! and the other cluster may then deregister it (nothing in ELBv2 can stop that). The agent must
//! then be looking again within [`ADOPTION_RECHECK_SECS`] to register it back. Assumed: the other
//! cluster's pod never gets an address whose entry this cluster created and still routes, or that
//! this cluster still claims as certain. That is the same reuse seen from the other side: this
//! cluster's deregistration, lagging, would remove the other cluster's adopted target, and the
//! other cluster's own adoption watch (the one checked here) puts it back.
//!
//! Checked:
//! 1. never is an entry the other cluster created deregistered while one of its pods holds the
//!    address (after lost answers, crashes and address reuse included); every adopted target is
//!    looked at again within [`ADOPTION_RECHECK_SECS`] during its watch;
//! 2. once faults stop, everything this cluster created and no longer wants is removed, everything it
//!    wants is registered, and its record claims nothing else but uncertain serving foreign targets;
//! 3. after deletion, nothing this cluster created remains.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::group::{GroupResult, GroupTask, reconcile_group};
use crate::aws::{AwsError, TargetGroups};
use crate::k8s::ownership::{OwnershipStore, RecordError};
use crate::model::{
    BindingId, HealthCheckTiming, RegisteredTarget, Target, TargetGroupInfo, TargetGroupIpType, TargetGroupRef,
    TargetGroupType, TargetId, TargetState,
};
use crate::plan::decide::{ADOPTION_RECHECK_SECS, ADOPTION_WATCH_SECS, UNCERTAIN_GRACE_SECS, Want};

const _: () = assert!(THEIR_LAG_SECS < ADOPTION_WATCH_SECS, "the watch must outlast the other cluster's lag");
use crate::plan::ownership::Record;

const ADDRESSES: u8 = 8;
/// The group's health checks: every 10 s, 5 s timeout, 3 failures to turn unhealthy.
const TIMING: HealthCheckTiming = HealthCheckTiming { interval_secs: 10, timeout_secs: 5, unhealthy_threshold: 3 };
/// The longest the other cluster takes to deregister an address its pod left.
const THEIR_LAG_SECS: u64 = 200;
/// How long the group goes on reporting healthy a target whose pod left.
const ELB_LAG_SECS: u64 = 10 * 3 + 5;
const ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shared/0123456789abcdef";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Us,
    Them,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Whose pod the entry routes to: the writer whose RegisterTargets made it active, or this
    /// cluster once its pod took the address from under the other cluster's entry.
    creator: Side,
    /// Since when the other cluster, which created it for a pod that left, may still deregister it
    /// (lagging, at most [`THEIR_LAG_SECS`]) although this cluster's pod now holds the address.
    stale_for_them: Option<u64>,
    /// Ticks of draining left; `None` while active.
    draining: Option<u32>,
    age: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pod {
    side: Side,
    ready: bool,
}

#[derive(Default)]
struct Stats {
    lost_answers: u32,
    refusals: u32,
    crashes: u32,
    deregistrations: u32,
    /// Deletion passes that kept a serving target under an uncertain claim, waiting out the lag.
    lag_waits: u32,
    /// Serving targets under uncertain claims let go of after the lag.
    releases: u32,
    /// Our pods given an address the other cluster's entry still routed.
    reuses: u32,
    /// Entries the other cluster deregistered while our pod held the address.
    removed_under_us: u32,
}

struct Sim {
    rng: fastrand::Rng,
    now: u64,
    group: BTreeMap<TargetId, Entry>,
    pods: Vec<Option<Pod>>,
    /// Per address: when its last pod left.
    left_at: Vec<Option<u64>>,
    record: Option<Record>,
    fault_rate: f64,
    crashed: bool,
    /// Addresses ELBv2 refuses to register (like a terminated instance).
    refused: Vec<TargetId>,
    violations: Vec<String>,
    stats: Stats,
}

fn address(i: u8) -> TargetId {
    TargetId::new(format!("10.0.0.{i}"), 8080)
}

enum Fault {
    None,
    /// Refused before taking effect (throttling).
    Before,
    /// Not taken effect, and the answer says nothing (a 5xx).
    Unknown,
    /// Took effect, then the answer was lost.
    After,
    /// The agent dies; the call took effect or not.
    Crash {
        applied: bool,
    },
}

impl Sim {
    fn fault(&mut self) -> Fault {
        if self.crashed {
            return Fault::Crash { applied: false };
        }
        let r = self.rng.f64();
        if r >= self.fault_rate {
            return Fault::None;
        }
        match (r / self.fault_rate * 4.0) as u32 {
            0 => Fault::Before,
            1 => Fault::Unknown,
            2 => Fault::After,
            _ => {
                self.crashed = true;
                self.stats.crashes += 1;
                Fault::Crash { applied: self.rng.bool() }
            }
        }
    }

    fn state_of(&self, id: &TargetId, entry: &Entry) -> TargetState {
        let index = id.id.rsplit('.').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(usize::MAX);
        match entry.draining {
            Some(_) => TargetState::Draining,
            None if entry.age == 0 => TargetState::Initial,
            None if self.pods.get(index).copied().flatten().is_some() => TargetState::Healthy,
            None if self.left_at.get(index).copied().flatten().is_some_and(|t| self.now < t + ELB_LAG_SECS) => {
                TargetState::Healthy
            }
            None => TargetState::Unhealthy,
        }
    }

    fn holder(&self, id: &TargetId) -> Option<Pod> {
        let index = id.id.rsplit('.').next().and_then(|n| n.parse::<usize>().ok())?;
        self.pods.get(index).copied().flatten()
    }

    fn active(&self, id: &TargetId) -> Option<&Entry> {
        self.group.get(id).filter(|e| e.draining.is_none())
    }

    fn register(&mut self, side: Side, id: &TargetId) {
        if self.active(id).is_none() {
            self.group.insert(id.clone(), Entry { creator: side, stale_for_them: None, draining: None, age: 0 });
        }
    }

    fn deregister(&mut self, side: Side, id: &TargetId) {
        if side == Side::Us
            && let Some(entry) = self.active(id)
            && entry.creator == Side::Them
            && self.holder(id).is_some_and(|p| p.side == Side::Them)
        {
            self.violations.push(format!("t={} deregistered {id}, created by and serving the other cluster", self.now));
        }
        if side == Side::Them && self.holder(id).is_some_and(|p| p.side == Side::Us) && self.active(id).is_some() {
            self.stats.removed_under_us += 1;
        }
        let ticks = self.rng.u32(0..3);
        if let Some(entry) = self.group.get_mut(id)
            && entry.draining.is_none()
        {
            entry.draining = Some(ticks);
        }
        if side == Side::Us {
            self.stats.deregistrations += 1;
        }
    }

    fn leave(&mut self, slot: usize) {
        self.pods[slot] = None;
        self.left_at[slot] = Some(self.now);
    }

    /// Deleting the namespace takes this cluster's pods (and their endpoints) at once.
    fn delete_our_pods(&mut self) {
        for slot in 0..self.pods.len() {
            if self.pods[slot].is_some_and(|p| p.side == Side::Us) {
                self.leave(slot);
            }
        }
    }

    fn wanted(&self) -> Vec<TargetId> {
        (0..ADDRESSES).map(address).filter(|id| self.holder(id) == Some(Pod { side: Side::Us, ready: true })).collect()
    }

    /// Time passes; pods come and go; the other cluster does its part. `churn`: pods may change.
    fn tick(&mut self, churn: bool) {
        self.now += self.rng.u64(5..40);
        self.group.retain(|_, e| e.draining != Some(0));
        for e in self.group.values_mut() {
            e.age += 1;
            if let Some(d) = &mut e.draining {
                *d -= 1;
            }
        }
        for i in 0..ADDRESSES {
            let id = address(i);
            let slot = usize::from(i);
            match self.pods[slot] {
                Some(Pod { side: Side::Us, ready: true }) if churn && self.rng.f64() < 0.15 => {
                    self.pods[slot] = Some(Pod { side: Side::Us, ready: false });
                }
                Some(Pod { side: Side::Us, ready: false }) if !churn || self.rng.f64() < 0.4 => self.leave(slot),
                Some(Pod { side: Side::Them, .. }) if churn && self.rng.f64() < 0.1 => self.leave(slot),
                None if churn && self.rng.f64() < 0.3 => {
                    let side = if self.rng.bool() { Side::Us } else { Side::Them };
                    let routed_by_other = self.active(&id).is_some_and(|e| e.creator != side);
                    let we_claim_it = self
                        .record
                        .as_ref()
                        .and_then(|r| r.claims(ARN))
                        .is_some_and(|c| c.get(&id).is_some_and(|claim| claim.is_certain()));
                    if side == Side::Them && we_claim_it {
                        // The other direction of the reuse: the other cluster's own watch repairs it.
                    } else if !routed_by_other {
                        self.pods[slot] = Some(Pod { side, ready: true });
                    } else if side == Side::Us {
                        self.stats.reuses += 1;
                        self.pods[slot] = Some(Pod { side, ready: true });
                        if let Some(entry) = self.group.get_mut(&id) {
                            *entry = Entry { creator: Side::Us, stale_for_them: Some(self.now), ..*entry };
                        }
                    }
                }
                _ => {}
            }
        }
        // The other cluster registers its pods' addresses and, lagging, deregisters the ones they left.
        for i in 0..ADDRESSES {
            let id = address(i);
            let theirs = self.holder(&id).is_some_and(|p| p.side == Side::Them);
            if theirs && (!churn || self.rng.f64() < 0.7) {
                self.register(Side::Them, &id);
            } else if let Some(entry) = self.active(&id).copied().filter(|_| !theirs)
                && (entry.creator == Side::Them || entry.stale_for_them.is_some())
                && (!churn
                    || self.rng.f64() < 0.3
                    || entry.stale_for_them.is_some_and(|t| self.now >= t + THEIR_LAG_SECS))
            {
                self.deregister(Side::Them, &id);
            }
        }
    }
}

#[derive(Clone)]
struct World(Arc<Mutex<Sim>>);

impl World {
    fn sim(&self) -> std::sync::MutexGuard<'_, Sim> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn lost(op: &'static str) -> AwsError {
    AwsError::Transport { op, message: "connection reset".into() }
}

impl TargetGroups for World {
    async fn describe(&self, _: &TargetGroupRef) -> Result<TargetGroupInfo, AwsError> {
        let mut sim = self.sim();
        match sim.fault() {
            Fault::None | Fault::After => {}
            Fault::Before => return Err(AwsError::Throttled { op: "DescribeTargetGroups", message: "slow".into() }),
            Fault::Unknown | Fault::Crash { .. } => return Err(lost("DescribeTargetGroups")),
        }
        Ok(TargetGroupInfo {
            arn: ARN.into(),
            name: "shared".into(),
            target_type: TargetGroupType::Ip,
            vpc_id: None,
            ip_address_type: TargetGroupIpType::Ipv4,
            protocol: Some("HTTP".into()),
            health_check: Some(TIMING),
        })
    }

    async fn targets(&self, _: &str) -> Result<Vec<RegisteredTarget>, AwsError> {
        let mut sim = self.sim();
        match sim.fault() {
            Fault::None | Fault::After => {}
            Fault::Before => return Err(AwsError::Throttled { op: "DescribeTargetHealth", message: "slow".into() }),
            Fault::Unknown | Fault::Crash { .. } => return Err(lost("DescribeTargetHealth")),
        }
        Ok(sim
            .group
            .iter()
            .map(|(id, e)| RegisteredTarget {
                target: Target::new(id.clone()),
                state: sim.state_of(id, e),
                reason: None,
            })
            .collect())
    }

    async fn register(&self, _: &str, targets: &[Target], _: &crate::aws::Turn) -> Result<(), AwsError> {
        let mut sim = self.sim();
        let fault = sim.fault();
        let applies = matches!(fault, Fault::None | Fault::After | Fault::Crash { applied: true });
        if applies && targets.iter().any(|t| sim.refused.contains(&t.id)) {
            sim.stats.refusals += 1;
            return Err(AwsError::InvalidTarget { op: "RegisterTargets", message: "not running".into() });
        }
        if applies {
            for t in targets {
                sim.register(Side::Us, &t.id);
            }
        }
        answer(&mut sim, fault, "RegisterTargets")
    }

    async fn deregister(&self, _: &str, targets: &[Target], _: &crate::aws::Turn) -> Result<(), AwsError> {
        let mut sim = self.sim();
        let fault = sim.fault();
        let applies = matches!(fault, Fault::None | Fault::After | Fault::Crash { applied: true });
        if applies && targets.iter().any(|t| !sim.group.contains_key(&t.id)) {
            return Err(AwsError::InvalidTarget { op: "DeregisterTargets", message: "not registered".into() });
        }
        if applies {
            for t in targets {
                sim.deregister(Side::Us, &t.id);
            }
        }
        answer(&mut sim, fault, "DeregisterTargets")
    }
}

fn answer(sim: &mut Sim, fault: Fault, op: &'static str) -> Result<(), AwsError> {
    match fault {
        Fault::None => Ok(()),
        Fault::Before => Err(AwsError::Throttled { op, message: "slow down".into() }),
        Fault::After => {
            sim.stats.lost_answers += 1;
            Err(lost(op))
        }
        Fault::Unknown | Fault::Crash { .. } => Err(lost(op)),
    }
}

fn record_error() -> RecordError {
    RecordError::Corrupt { name: "tgb-owned-model".into(), lines: vec!["the API server did not answer".into()] }
}

impl OwnershipStore for World {
    async fn read(&self, _: &BindingId) -> Result<Option<Record>, RecordError> {
        Ok(self.sim().record.clone())
    }

    async fn write(&self, _: &BindingId, record: &Record) -> Result<(), RecordError> {
        let mut sim = self.sim();
        match sim.fault() {
            Fault::None => {
                sim.record = Some(record.clone());
                Ok(())
            }
            Fault::After | Fault::Crash { applied: true } => {
                sim.record = Some(record.clone());
                Err(record_error())
            }
            Fault::Before | Fault::Unknown | Fault::Crash { applied: false } => Err(record_error()),
        }
    }

    async fn delete(&self, _: &BindingId) -> Result<(), RecordError> {
        self.sim().record = None;
        Ok(())
    }
}

/// One reconcile of this cluster's binding, started from its persisted record, as after a restart.
fn reconcile(world: &World, deleting: bool) {
    let binding = BindingId { uid: "u1".into(), namespace: "ns".into(), name: "web".into() };
    let (mut record, wanted, ours_now, now) = {
        let mut sim = world.sim();
        sim.crashed = false;
        let wanted: BTreeSet<Target> = sim.wanted().into_iter().map(Target::new).collect();
        let ours_now: BTreeSet<String> = (0..ADDRESSES)
            .map(address)
            .filter(|id| sim.holder(id).is_some_and(|p| p.side == Side::Us))
            .map(|id| id.id)
            .collect();
        (sim.record.clone().unwrap_or_default(), wanted, ours_now, sim.now)
    };
    let want = if deleting { Want::Nothing } else { Want::Targets { targets: &wanted, confirmed: true } };
    let task = GroupTask {
        binding: &binding,
        arn: ARN,
        want,
        shared: true,
        siblings: &[],
        ours_now: &ours_now,
        now,
        // One clock for every replica here; re-arming on a new leader is unit-tested.
        leading_since: 0,
        why: super::group::Why::change(),
        read: None,
    };
    let result = futures::executor::block_on(reconcile_group(world, world, &mut record, task));
    assert!(!matches!(result, Ok(GroupResult::NeedsConfirmation(_))), "confirmed inputs never ask for confirmation");
    let Ok(GroupResult::Done(report)) = result else { return };
    let mut sim = world.sim();
    if deleting {
        sim.stats.lag_waits += u32::from(!report.decision.uncertain_kept.is_empty());
        sim.stats.releases += u32::try_from(report.decision.released.len()).unwrap_or(u32::MAX);
        return;
    }
    // While the other cluster may still deregister an entry our pod now needs, the agent must be
    // back soon to register it again.
    let exposed = sim.group.iter().any(|(id, e)| {
        e.draining.is_none()
            && e.stale_for_them.is_some()
            && sim.holder(id) == Some(Pod { side: Side::Us, ready: true })
    });
    if exposed && report.decision.recheck_in.is_none_or(|r| r > ADOPTION_RECHECK_SECS) {
        let message = format!("t={now} an adopted target is not looked at again within {ADOPTION_RECHECK_SECS}s");
        sim.violations.push(message);
    }
}

fn run_schedule(seed: u64) -> (Vec<String>, Stats) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let refused = if rng.bool() { vec![address(rng.u8(0..ADDRESSES))] } else { Vec::new() };
    let sim = Sim {
        rng,
        now: 1_700_000_000,
        group: BTreeMap::new(),
        pods: vec![None; usize::from(ADDRESSES)],
        left_at: vec![None; usize::from(ADDRESSES)],
        record: None,
        fault_rate: 0.3,
        crashed: false,
        refused,
        violations: Vec::new(),
        stats: Stats::default(),
    };
    let world = World(Arc::new(Mutex::new(sim)));
    let mut failures = Vec::new();

    // Churn under faults.
    for _ in 0..40 {
        world.sim().tick(true);
        reconcile(&world, false);
    }
    // Faults stop, pods settle; enough time for every grace period to run out.
    world.sim().fault_rate = 0.0;
    world.sim().tick(false);
    for _ in 0..4 {
        reconcile(&world, false);
        let mut sim = world.sim();
        sim.now += UNCERTAIN_GRACE_SECS;
        sim.tick(false);
    }
    reconcile(&world, false);
    {
        let sim = world.sim();
        let wanted = sim.wanted();
        for (id, entry) in &sim.group {
            let ours = entry.creator == Side::Us && entry.draining.is_none();
            if ours && !wanted.contains(id) {
                failures.push(format!("stranded: {id} is still registered by this cluster and wanted by nobody"));
            }
        }
        for id in wanted.iter().filter(|id| !sim.refused.contains(id)) {
            if sim.active(id).is_none() {
                failures.push(format!("wanted {id} is not registered"));
            }
        }
        let claims = sim.record.as_ref().and_then(|r| r.claims(ARN).cloned()).unwrap_or_default();
        for (id, claim) in claims {
            let foreign_serving = sim.active(&id).is_some_and(|e| e.creator == Side::Them) && sim.holder(&id).is_some();
            if !wanted.contains(&id) && !foreign_serving {
                failures.push(format!("stale claim {id} {claim:?}"));
            }
        }
    }
    // Deletion: the namespace goes with the pods; under faults first, then without, until done.
    world.sim().delete_our_pods();
    world.sim().fault_rate = 0.3;
    for _ in 0..5 {
        reconcile(&world, true);
        world.sim().tick(false);
    }
    world.sim().fault_rate = 0.0;
    for _ in 0..4 {
        reconcile(&world, true);
        let mut sim = world.sim();
        sim.now += UNCERTAIN_GRACE_SECS;
        sim.tick(false);
    }
    let mut sim = world.sim();
    for (id, entry) in &sim.group {
        if entry.creator == Side::Us && entry.draining.is_none() {
            failures.push(format!("after deletion: {id} is still registered by this cluster"));
        }
    }
    if let Some(claims) = sim.record.as_ref().and_then(|r| r.claims(ARN)).filter(|c| !c.is_empty()) {
        failures.push(format!("after deletion: claims remain, so the deletion never ends: {claims:?}"));
    }
    failures.extend(sim.violations.iter().cloned());
    let stats = std::mem::take(&mut sim.stats);
    (failures, stats)
}

#[test]
fn shared_group_survives_crashes_lost_answers_and_address_reuse() {
    let schedules = std::env::var("TGB_MODEL_SCHEDULES").ok().and_then(|s| s.parse().ok()).unwrap_or(3_000u64);
    let mut totals = Stats::default();
    for seed in 0..schedules {
        let (failures, stats) = run_schedule(seed);
        assert!(failures.is_empty(), "seed {seed}: {failures:#?}");
        totals.lost_answers += stats.lost_answers;
        totals.refusals += stats.refusals;
        totals.crashes += stats.crashes;
        totals.deregistrations += stats.deregistrations;
        totals.lag_waits += stats.lag_waits;
        totals.releases += stats.releases;
        totals.reuses += stats.reuses;
        totals.removed_under_us += stats.removed_under_us;
    }
    // The faults must actually have been exercised, or the test proves nothing.
    assert!(totals.lost_answers > schedules as u32 && totals.crashes > schedules as u32);
    assert!(totals.refusals > 0 && totals.deregistrations > schedules as u32);
    assert!(totals.lag_waits > 0 && totals.releases > 0, "deletion never met a lagging uncertain target");
    assert!(totals.reuses > 0 && totals.removed_under_us > 0, "no address was reused while the other side lagged");
    println!(
        "{schedules} schedules: {} deregistrations, {} lost answers, {} crashes, {} refused batches, \
         {} deletion passes waiting out the health lag, {} releases, {} reuses of a routed address, \
         {} adopted targets deregistered by the other cluster, 0 violations",
        totals.deregistrations,
        totals.lost_answers,
        totals.crashes,
        totals.refusals,
        totals.lag_waits,
        totals.releases,
        totals.reuses,
        totals.removed_under_us
    );
}
