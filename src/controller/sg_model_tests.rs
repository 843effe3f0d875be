//! Model-based test of the security-group loop: two clusters (`blue`, `green`) reconcile the same
//! security group, interleaved at every AWS call, under stale reads, queued writes, lost answers,
//! refusals and crashes, while their bindings come, go, change and break.
//!
//! What runs for real: the planner [`plan_group`] with its grace [`unclaimed_grace`], the tag
//! reading [`claims_of`] and the revoke's re-read filter [`still_unclaimed`]. What is re-stated:
//! `networking::reconcile_security_group` (and the part of `networking::pass` that decides whether the group
//! is planned, with `may_release`, `ever_asked` and `swept`) cannot be called from here: it is private to
//! `networking`, takes a `Context` that needs a kube `Client`, and reads the wall clock. So the
//! pass below repeats its order, line for line: read the group, plan, remember the unclaimed
//! times, authorize one rule per call (`Duplicate` → look again at once), claim (`Ok` or
//! `RuleNotFound` → look again at once), release, revoke; the next pass comes at once when
//! notified, else after the plan's recheck or the drift interval. An agent none of whose bindings
//! asked since start passes only once every ask is known (empty), and until a pass leaves nothing
//! to do (no failure, no write, no grace running). Likewise the in-memory
//! [`SecurityGroups`] ([`Ec2`]) re-states `Ec2SecurityGroups`: a release marks the rule an agent's
//! and then deletes the claim tag and the creator tag (only where it names the cluster); a revoke
//! waits for its turn, reads the group again, keeps only [`still_unclaimed`] rules and sends at
//! once; one rule already gone fails the batch, and each rule is then retried alone, each after its
//! own turn. A mutation of `networking.rs` or of the adapter is invisible to this model.
//!
//! The world: one group of rules with ids `sgr-…` and tags. Every identity is held at most once
//! (EC2 refuses a second copy: `Duplicate`). It starts with hand-made rules (no tags), rules of the
//! first version (creator tag only), rules claimed by either cluster or by a third one (`red`,
//! which went quiet and never lets go), and rules an agent created that nobody claims any more. Each
//! cluster has three bindings whose asks change over time (random sets over a few rules, so the two
//! clusters often need the same rule); a binding may also be broken (its rules protected) or have
//! no networking. A crash loses the agent's memory: its asks (re-published one by one afterwards,
//! nothing released before all are back), its unclaimed times and its pending wake-up.
//!
//! Faults, per call: a read may be stale (a snapshot taken after this cluster's last pass, before
//! some of the other cluster's writes); a write may wait its turn in the write queue while the
//! other cluster goes on; any call may be refused before taking effect, take effect and lose its
//! answer, or crash the agent (the write landing or not). A revoke may also be in flight while the
//! other cluster acts between its re-read and its landing (the re-read→send window).
//!
//! Checked at every step (invariant 3 of issue #20):
//! - a rule a cluster needs (its published asks) is never absent while that cluster waits for its
//!   drift check after a pass without fault: any absence is repaired by the pass it is already in
//!   or the one it asked for at once, and a second pass without fault that still ends without
//!   the rule is a violation;
//! - no rule another cluster claims (by its tags) and needs is ever revoked, nor a hand-made one.
//!
//! At the end, faults off and loops run until quiet: every needed rule is present and claimed by
//! exactly the clusters that need it (hand-made ones by nobody); every rule an agent created that
//! nobody needs is revoked, except the quiet cluster's; hand-made rules are untouched.
//!
//! KNOWN BUGS this model finds with the code unmodified are listed in [`Known`]: counted and
//! printed, not failed (`TGB_SG_MODEL_STRICT=1` fails on them), each reproduced step by step by an
//! ignored test at the end. `TGB_SG_MODEL_TRACE=<seed>` prints one schedule's events.
//!
//! Mutations it kills (each tried by hand): `still_unclaimed` keeping claimed rules (a revoke that
//! ignores its re-read); `plan_group` not claiming a rule another cluster already claims; `claims_of`
//! not counting the creator tag as a claim (first-version rules, and every new rule's creator). It
//! does not kill dropping the grace in `plan_group`: the re-read and the claimer's pass at once keep
//! invariant 3 without it; the grace only saves re-authorizes.
//!
//! Assumed: one security group (ENI lookups and group selection are out of scope); no rules quota;
//! a failed CreateTags/DeleteTags/Revoke naming a missing rule changes nothing (all or nothing);
//! Describe answers are at worst stale by the other cluster's writes, never by this cluster's own
//! writes of an earlier pass; a write whose answer is lost has landed before the call returns.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use crate::aws::AwsError;
use crate::aws::security_groups::{SecurityGroupError, SecurityGroups};
use crate::model::sg_rule::{
    CLAIM_TAG_PREFIX, CLUSTER_TAG, EniGroups, ExistingRule, IngressRule, MANAGED_TAG, Peer, RuleProtocol, claims_of,
    still_unclaimed,
};
use crate::plan::sg_rules::{GroupInputs, plan_group, unclaimed_grace};

const GROUP: &str = "sg-0f00d";
const NAMES: [&str; 2] = ["blue", "green"];
/// A third cluster that claimed some rules and went quiet: its claims must outlive everything.
const QUIET: &str = "red";
/// The agent's default drift interval; the grace is then 10 s.
const DRIFT_SECS: u64 = 300;
const BINDINGS: usize = 3;
const CHURN_STEPS: u32 = 700;

fn grace() -> u64 {
    unclaimed_grace(DRIFT_SECS)
}

fn lb(port: u16) -> IngressRule {
    IngressRule::new(RuleProtocol::Tcp, port, port, Peer::SecurityGroup("sg-0b1a".into()))
}

/// The rules bindings ask for. Few, so both clusters often need the same one.
fn universe() -> Vec<IngressRule> {
    vec![
        lb(80),
        lb(443),
        lb(8080),
        IngressRule::new(RuleProtocol::Udp, 53, 53, Peer::Ipv4Cidr("10.0.0.0/16".into())),
        IngressRule::new(RuleProtocol::Tcp, 22, 22, Peer::Ipv4Cidr("10.0.0.0/8".into())),
    ]
}

/// Never asked for: a rule somebody made by hand.
fn outsider() -> IngressRule {
    IngressRule::new(RuleProtocol::Tcp, 3306, 3306, Peer::Ipv4Cidr("10.1.0.0/16".into()))
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    id: String,
    rule: IngressRule,
    tags: BTreeMap<String, String>,
}

/// Who claims a row, read straight off its tags (not through `claims_of`, so that a mutation
/// there cannot blind the checks).
fn tag_claims(tags: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut claims: BTreeSet<String> =
        tags.keys().filter_map(|k| k.strip_prefix(CLAIM_TAG_PREFIX)).map(str::to_owned).collect();
    claims.extend(tags.get(CLUSTER_TAG).filter(|c| !c.is_empty()).cloned());
    claims
}

fn agent_made(tags: &BTreeMap<String, String>) -> bool {
    tags.contains_key(MANAGED_TAG) || tags.contains_key(CLUSTER_TAG)
}

fn claim_key(cluster: &str) -> String {
    format!("{CLAIM_TAG_PREFIX}{cluster}")
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Spec {
    /// No `spec.networking`, or the binding is gone.
    Off,
    Rules(BTreeSet<IngressRule>),
    /// The binding fails before it can say what it asks (its spec still names its last rules).
    Broken,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ask {
    Rules(BTreeSet<IngressRule>),
    Broken(BTreeSet<IngressRule>),
}

#[derive(Clone, Debug)]
struct Binding {
    spec: Spec,
    /// The rules its spec names (what a broken binding can still derive).
    named: BTreeSet<IngressRule>,
    /// Published to the agent since it started.
    published: bool,
}

/// One agent's memory: `networking::Contributions` and its loop's timer. Lost on a crash.
#[derive(Clone, Debug, Default)]
struct Agent {
    asks: BTreeMap<usize, Ask>,
    ever_asked: bool,
    /// With nothing asked since start, a pass found nothing left to do: no more passes.
    swept: bool,
    unclaimed_since: BTreeMap<String, u64>,
    /// `changed.notify_one()` since the last pass started.
    notified: bool,
    wake_at: u64,
    running: bool,
    /// A read, authorize or claim of the current pass met a fault.
    pass_faulted: bool,
    last_pass_clean: bool,
    last_pass_wrote: bool,
    crashed: bool,
    /// Reads may be stale, but never older than this step (the end of its own last pass).
    fresh_from: u64,
    desired_at_start: BTreeSet<IngressRule>,
    /// The current pass started after faults stopped and every binding published.
    settling: bool,
    passes_settling: u32,
}

impl Agent {
    /// Whether its loop has anything to look at (else each wake-up returns without a call).
    fn looks(&self) -> bool {
        self.ever_asked || !self.swept
    }
}

#[derive(Clone, Debug)]
struct Cluster {
    bindings: Vec<Binding>,
    agent: Agent,
    /// Needed rules seen present since they became needed: authorizing one again is a re-authorize.
    had: BTreeSet<IngressRule>,
    /// Consecutive passes without fault that ended with this needed rule absent.
    streak: BTreeMap<IngressRule, u32>,
    /// Needed rules already reported absent (one report per absence).
    flagged: BTreeSet<IngressRule>,
}

#[derive(Default, Clone, Copy)]
struct Stats {
    steps: u64,
    passes: u64,
    stale_reads: u64,
    delayed_writes: u64,
    lost_answers: u64,
    refusals: u64,
    crashes: u64,
    authorizes: u64,
    reauthorizes: u64,
    duplicates: u64,
    claims: u64,
    claims_on_gone: u64,
    releases: u64,
    revokes: u64,
    /// Rules planned for revocation that the re-read found claimed meanwhile, so kept.
    kept_by_reread: u64,
    /// Revokes that were in flight while the other cluster acted.
    windows: u64,
    /// Batches failed by a rule already gone, retried rule by rule.
    retries: u64,
    /// Revokes of rules the group showed unclaimed for less than the grace.
    early_revokes: u64,
    /// Passes of an agent none of whose bindings asked since start (sweeping up old claims).
    sweeps: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.passes += o.passes;
        self.stale_reads += o.stale_reads;
        self.delayed_writes += o.delayed_writes;
        self.lost_answers += o.lost_answers;
        self.refusals += o.refusals;
        self.crashes += o.crashes;
        self.authorizes += o.authorizes;
        self.reauthorizes += o.reauthorizes;
        self.duplicates += o.duplicates;
        self.claims += o.claims;
        self.claims_on_gone += o.claims_on_gone;
        self.releases += o.releases;
        self.revokes += o.revokes;
        self.kept_by_reread += o.kept_by_reread;
        self.windows += o.windows;
        self.retries += o.retries;
        self.early_revokes += o.early_revokes;
        self.sweeps += o.sweeps;
    }
}

#[derive(Clone, Copy)]
struct Faults {
    /// Per call: refused, answer lost or crash.
    rate: f64,
    stale: f64,
    delay: f64,
    /// Per revoke: in flight while the other cluster takes a few steps.
    window: f64,
}

const NO_FAULTS: Faults = Faults { rate: 0.0, stale: 0.0, delay: 0.0, window: 0.0 };

enum Fault {
    None,
    /// Refused before taking effect (throttling).
    Before,
    /// Took effect (if a write), then the answer was lost.
    After,
    /// The agent dies; the write landed or not.
    Crash {
        applied: bool,
    },
}

/// How a revoke reached EC2, which says what may have happened since its re-read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    /// Right after the re-read.
    AtOnce,
    /// After the other cluster acted between the re-read and the landing.
    InFlight,
}

/// KNOWN BUGS found by this model with the code unmodified (issue #20): reported and counted, not
/// failed, unless `TGB_SG_MODEL_STRICT=1`. Each has an ignored test below that reproduces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Known {
    /// A claim landed between a revoke's re-read and the revoke: EC2 has no conditional revoke,
    /// so the re-read narrows this to a round trip but cannot close it.
    InFlight,
    /// After either, the claimer's pass "at once" read the rule before it went, so the rule stays
    /// absent until the claimer's drift check.
    UntilDrift,
}

enum Change {
    Authorize(IngressRule, String),
    Tag(Vec<String>, String, String),
    /// Keys to delete; with a value, only where it matches.
    Untag(Vec<String>, Vec<(String, Option<String>)>),
    Revoke(Vec<String>, Sent),
}

struct Sim {
    rng: fastrand::Rng,
    now: u64,
    step: u64,
    rows: Vec<Row>,
    next_id: u64,
    /// (step, rows after that step's change)
    history: Vec<(u64, Vec<Row>)>,
    clusters: Vec<Cluster>,
    hand_made: Vec<Row>,
    faults: Faults,
    /// Needed rules removed by a revoke that landed on a claim made after its re-read.
    lost_to_race: BTreeSet<IngressRule>,
    /// Rule id → since when (model time) the group shows it an agent's and claimed by nobody.
    unclaimed_at: BTreeMap<String, u64>,
    violations: Vec<String>,
    /// KNOWN BUGS (see [`Known`]): reported, failed only with `TGB_SG_MODEL_STRICT=1`.
    known: Vec<(Known, String)>,
    stats: Stats,
    trace: Option<Vec<String>>,
}

fn lost(op: &'static str) -> SecurityGroupError {
    SecurityGroupError::Aws(AwsError::Transport { op, message: "connection reset".into() })
}

fn throttled(op: &'static str) -> SecurityGroupError {
    SecurityGroupError::Aws(AwsError::Throttled { op, message: "slow down".into() })
}

fn gone(op: &'static str) -> SecurityGroupError {
    SecurityGroupError::RuleNotFound { op, group: GROUP.into(), message: "no such rule".into() }
}

impl Sim {
    fn note(&mut self, line: impl FnOnce(&Sim) -> String) {
        if self.trace.is_some() {
            let line = format!("#{} t+{} {}", self.step, self.now - START, line(self));
            self.trace.get_or_insert_default().push(line);
        }
    }

    fn present(&self, rule: &IngressRule) -> bool {
        self.rows.iter().any(|r| &r.rule == rule)
    }

    fn desired_now(&self, x: usize) -> BTreeSet<IngressRule> {
        let mut desired = BTreeSet::new();
        for ask in self.clusters[x].agent.asks.values() {
            if let Ask::Rules(rules) = ask {
                desired.extend(rules.iter().cloned());
            }
        }
        desired
    }

    fn fault(&mut self, x: usize, taints: bool) -> Fault {
        let r = self.rng.f64();
        if r >= self.faults.rate {
            return Fault::None;
        }
        if taints {
            self.clusters[x].agent.pass_faulted = true;
        }
        match (r / self.faults.rate * 6.0) as u32 {
            0 | 1 => {
                self.stats.refusals += 1;
                Fault::Before
            }
            2..=4 => Fault::After,
            _ => {
                self.stats.crashes += 1;
                self.clusters[x].agent.crashed = true;
                Fault::Crash { applied: self.rng.bool() }
            }
        }
    }

    /// Steps a call waits before it is served: always one (the other cluster may act between any
    /// two calls), many more when a write waits its turn in a busy write queue.
    fn pauses(&mut self, queued: bool) -> u32 {
        if queued && self.rng.f64() < self.faults.delay {
            self.stats.delayed_writes += 1;
            1 + self.rng.u32(2..30)
        } else {
            1
        }
    }

    /// What a Describe answers `x`: the group now, or (stale) as it was at some step since `x`'s
    /// last pass ended.
    fn describe(&mut self, x: usize, may_be_stale: bool) -> Vec<Row> {
        if may_be_stale && self.rng.f64() < self.faults.stale {
            let from = self.clusters[x].agent.fresh_from;
            let first = self.history.iter().rposition(|(s, _)| *s <= from).unwrap_or(0);
            let last = self.history.len() - 1;
            if first < last {
                let i = self.rng.usize(first..last);
                self.stats.stale_reads += 1;
                let rows = self.history[i].1.clone();
                self.note(|_| format!("{} reads a stale group: {}", NAMES[x], show(&rows)));
                return rows;
            }
        }
        self.rows.clone()
    }

    fn apply(&mut self, x: usize, change: &Change) -> Result<(), SecurityGroupError> {
        let missing = |ids: &[String], rows: &[Row]| ids.iter().any(|id| !rows.iter().any(|r| &r.id == id));
        match change {
            Change::Authorize(rule, cluster) => {
                if self.present(rule) {
                    self.stats.duplicates += 1;
                    self.note(|_| format!("{cluster} authorize {rule}: Duplicate"));
                    return Err(SecurityGroupError::Duplicate {
                        op: "AuthorizeSecurityGroupIngress",
                        group: GROUP.into(),
                        message: "the rule already exists".into(),
                    });
                }
                self.next_id += 1;
                let id = format!("sgr-{:017x}", self.next_id);
                let tags = [(CLUSTER_TAG.to_owned(), cluster.clone()), (MANAGED_TAG.to_owned(), "true".to_owned())];
                self.rows.push(Row { id: id.clone(), rule: rule.clone(), tags: tags.into() });
                self.stats.authorizes += 1;
                if self.clusters[x].had.contains(rule) {
                    self.stats.reauthorizes += 1;
                }
                self.lost_to_race.remove(rule);
                self.note(|_| format!("{cluster} authorized {rule} as {id}"));
            }
            Change::Tag(ids, key, value) => {
                if missing(ids, &self.rows) {
                    self.note(|_| format!("{} tag {ids:?} {key}: RuleNotFound", NAMES[x]));
                    return Err(gone("CreateTags"));
                }
                for row in self.rows.iter_mut().filter(|r| ids.contains(&r.id)) {
                    row.tags.insert(key.clone(), value.clone());
                }
                if key.starts_with(CLAIM_TAG_PREFIX) {
                    self.stats.claims += 1;
                }
                self.note(|_| format!("{} tagged {ids:?} {key}", NAMES[x]));
            }
            Change::Untag(ids, keys) => {
                if missing(ids, &self.rows) {
                    return Err(gone("DeleteTags"));
                }
                for row in self.rows.iter_mut().filter(|r| ids.contains(&r.id)) {
                    for (key, value) in keys {
                        if value.is_none() || row.tags.get(key) == value.as_ref() {
                            row.tags.remove(key);
                        }
                    }
                }
                self.stats.releases += 1;
                self.note(|_| format!("{} released {ids:?}", NAMES[x]));
            }
            Change::Revoke(ids, sent) => {
                if missing(ids, &self.rows) {
                    self.note(|_| format!("{} revoke {ids:?}: RuleNotFound", NAMES[x]));
                    return Err(gone("RevokeSecurityGroupIngress"));
                }
                for id in ids {
                    let row = self.rows.iter().find(|r| &r.id == id).cloned().unwrap_or_else(|| unreachable!());
                    self.check_revoke(x, &row, *sent);
                    self.rows.retain(|r| &r.id != id);
                    self.stats.revokes += 1;
                }
                self.note(|_| format!("{} revoked {ids:?} ({sent:?})", NAMES[x]));
            }
        }
        let now = self.now;
        let unclaimed: BTreeSet<&String> =
            self.rows.iter().filter(|r| agent_made(&r.tags) && tag_claims(&r.tags).is_empty()).map(|r| &r.id).collect();
        self.unclaimed_at.retain(|id, _| unclaimed.contains(id));
        for id in unclaimed {
            self.unclaimed_at.entry(id.clone()).or_insert(now);
        }
        let rows = self.rows.clone();
        self.history.push((self.step, rows));
        if self.history.len() > 256 {
            self.history.drain(..128);
        }
        Ok(())
    }

    /// Invariant 3, second half, as each revoke lands: never a rule any cluster claims by its tags
    /// (the message names those whose published asks need it), nor a hand-made one.
    fn check_revoke(&mut self, x: usize, row: &Row, sent: Sent) {
        let at = format!("t+{} {} revoked {} ({})", self.now - START, NAMES[x], row.id, row.rule);
        if !agent_made(&row.tags) {
            self.violations.push(format!("{at}: a hand-made rule"));
            return;
        }
        let claims = tag_claims(&row.tags);
        if claims.is_empty() {
            let since = self.unclaimed_at.get(&row.id).copied().unwrap_or(START);
            if self.now - since < grace() {
                self.stats.early_revokes += 1;
                self.note(|s| format!("early revoke: unclaimed for {}s", s.now - since));
            }
            return;
        }
        let needed_by: Vec<&str> = claims
            .iter()
            .map(String::as_str)
            .filter(|c| {
                *c == QUIET
                    || NAMES.iter().position(|n| n == c).is_some_and(|i| self.desired_now(i).contains(&row.rule))
            })
            .collect();
        let message = format!("{at} while {claims:?} claim it and {needed_by:?} need it ({sent:?} after its re-read)");
        // A claim that landed after the re-read. Sent at once, the revoke cannot meet one: a
        // violation. Otherwise a KNOWN BUG, reported and counted (see [`Known`]).
        let kind = match sent {
            Sent::AtOnce => return self.violations.push(message),
            Sent::InFlight => Known::InFlight,
        };
        // Even if no claimer needs it right now: one that just restarted asks again soon.
        self.lost_to_race.insert(row.rule.clone());
        self.known.push((kind, message));
    }

    /// Invariant 3, first half, at every step.
    fn check_presence(&mut self) {
        let present: BTreeSet<IngressRule> = self.rows.iter().map(|r| r.rule.clone()).collect();
        for (x, name) in NAMES.iter().enumerate() {
            let desired = self.desired_now(x);
            let now = self.now;
            let c = &mut self.clusters[x];
            c.had.retain(|r| desired.contains(r));
            c.had.extend(desired.iter().filter(|r| present.contains(*r)).cloned());
            c.flagged.retain(|r| desired.contains(r) && !present.contains(r));
            c.streak.retain(|r, _| desired.contains(r) && !present.contains(r));
            let a = &c.agent;
            let waiting = !a.running && !a.notified && a.last_pass_clean;
            if !waiting {
                continue;
            }
            for rule in desired.iter().filter(|r| !present.contains(*r)) {
                if c.flagged.insert(rule.clone()) {
                    let message = format!(
                        "t+{} {name} needs {rule}, absent while its loop waits for the drift check (at +{})",
                        now - START,
                        c.agent.wake_at - START
                    );
                    if self.lost_to_race.contains(rule) {
                        self.known.push((Known::UntilDrift, message));
                    } else {
                        self.violations.push(message);
                    }
                }
            }
        }
    }

    fn publish(&mut self, x: usize, b: usize) {
        let c = &mut self.clusters[x];
        let binding = &mut c.bindings[b];
        binding.published = true;
        let agent = &mut c.agent;
        let ask = match &binding.spec {
            Spec::Off => {
                if agent.asks.remove(&b).is_some() {
                    agent.notified = true;
                    self.note(|_| format!("{} binding {b} withdraws", NAMES[x]));
                }
                return;
            }
            Spec::Rules(rules) => Ask::Rules(rules.clone()),
            Spec::Broken => {
                let mut protect = binding.named.clone();
                if let Some(Ask::Rules(before) | Ask::Broken(before)) = agent.asks.get(&b) {
                    protect.extend(before.iter().cloned());
                }
                Ask::Broken(protect)
            }
        };
        agent.ever_asked = true;
        if agent.asks.insert(b, ask.clone()).as_ref() != Some(&ask) {
            agent.notified = true;
        }
        let spec = binding.spec.clone();
        self.note(|_| format!("{} binding {b} publishes {}", NAMES[x], show_spec(&spec)));
    }

    fn random_spec(&mut self) -> Spec {
        let roll = self.rng.f64();
        if roll < 0.2 {
            return Spec::Off;
        }
        if roll < 0.28 {
            return Spec::Broken;
        }
        let all = universe();
        // The first rule is the one both clusters usually need.
        let mut rules: BTreeSet<IngressRule> = all.iter().skip(1).filter(|_| self.rng.f64() < 0.3).cloned().collect();
        if self.rng.f64() < 0.6 {
            rules.insert(all[0].clone());
        }
        Spec::Rules(rules)
    }

    fn change_binding(&mut self, x: usize, b: usize, spec: Spec) {
        let binding = &mut self.clusters[x].bindings[b];
        if let Spec::Rules(rules) = &spec {
            binding.named = rules.clone();
        }
        if spec == Spec::Off {
            binding.named.clear();
        }
        binding.spec = spec;
        // Its reconcile publishes at once, unless the agent is still starting (then it comes later).
        if binding.published || self.rng.bool() {
            self.publish(x, b);
        }
    }

    fn restart(&mut self, x: usize) {
        let (now, step) = (self.now, self.step);
        let c = &mut self.clusters[x];
        c.agent = Agent { wake_at: now + DRIFT_SECS, fresh_from: step, ..Agent::default() };
        c.streak.clear();
        c.flagged.clear();
        for b in &mut c.bindings {
            b.published = false;
        }
        self.note(|_| format!("{} crashed and restarts", NAMES[x]));
    }

    fn end_pass(&mut self, x: usize, recheck: Option<u64>) {
        let desired = self.desired_now(x);
        self.stats.passes += 1;
        let (now, step) = (self.now, self.step);
        let a = &mut self.clusters[x].agent;
        a.running = false;
        a.wake_at = now + recheck.unwrap_or(DRIFT_SECS).min(DRIFT_SECS);
        a.fresh_from = step;
        a.last_pass_clean = !a.pass_faulted;
        a.passes_settling += u32::from(a.settling);
        let clean = a.last_pass_clean;
        let asked_again = a.notified;
        let start = a.desired_at_start.clone();
        self.note(|s| format!("{} pass ends (clean {clean}, again {asked_again}): {}", NAMES[x], show(&s.rows)));
        if !clean {
            return;
        }
        for rule in start.intersection(&desired) {
            let present = self.present(rule);
            let streak = self.clusters[x].streak.entry(rule.clone()).or_default();
            if present {
                *streak = 0;
                continue;
            }
            *streak += 1;
            if *streak >= 2 {
                let message =
                    format!("t+{} {} needs {rule}, still absent after two passes without fault", now - START, NAMES[x]);
                if self.lost_to_race.contains(rule) {
                    self.known.push((Known::UntilDrift, message));
                } else {
                    self.violations.push(message);
                }
            }
        }
    }
}

const START: u64 = 1_700_000_000;

fn show(rows: &[Row]) -> String {
    let parts: Vec<String> = rows
        .iter()
        .map(|r| {
            let claims = tag_claims(&r.tags);
            let kind = if !agent_made(&r.tags) {
                "hand".to_owned()
            } else if r.tags.contains_key(MANAGED_TAG) {
                format!("{claims:?}")
            } else {
                format!("v1{claims:?}")
            };
            format!("{}:{}:{kind}", &r.id[r.id.len() - 2..], r.rule.from_port)
        })
        .collect();
    parts.join(" ")
}

fn show_spec(spec: &Spec) -> String {
    match spec {
        Spec::Off => "nothing".into(),
        Spec::Broken => "broken".into(),
        Spec::Rules(rules) => format!("{:?}", rules.iter().map(|r| r.from_port).collect::<Vec<_>>()),
    }
}

#[derive(Clone)]
struct World(Arc<Mutex<Sim>>);

impl World {
    fn sim(&self) -> MutexGuard<'_, Sim> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Gives the other cluster a turn: pending once.
#[derive(Default)]
struct Pause(bool);

impl Future for Pause {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// How a write gets its turn.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Through the write queue: may wait long.
    Queued,
    /// Sent right after the call's previous step (a revoke after its re-read).
    AtOnce,
}

/// The in-memory EC2 of one cluster's agent (re-states `Ec2SecurityGroups` over the shared group).
struct Ec2 {
    world: World,
    x: usize,
}

impl Ec2 {
    /// `Ec2SecurityGroups::revoke_unclaimed`: its own turn, a re-read, then the call at once.
    async fn revoke_unclaimed(&self, rule_ids: &[String]) -> Result<(), SecurityGroupError> {
        const OP: &str = "RevokeSecurityGroupIngress";
        if rule_ids.is_empty() {
            return Ok(());
        }
        let pauses = self.world.sim().pauses(true);
        self.wait(pauses).await;
        let fresh = existing(&self.read("DescribeSecurityGroupRules", false, false).await?);
        let ids = still_unclaimed(rule_ids, &fresh);
        {
            let mut sim = self.world.sim();
            // Still there, yet no longer unclaimed: a claim made while the revoke waited its turn.
            let there = rule_ids.iter().filter(|id| fresh.iter().any(|r| &r.rule_id == *id)).count();
            sim.stats.kept_by_reread += (there - ids.len()) as u64;
        }
        if ids.is_empty() {
            return Ok(());
        }
        self.write(OP, Change::Revoke(ids, Sent::AtOnce), Turn::AtOnce, false).await
    }

    async fn wait(&self, n: u32) {
        for _ in 0..n {
            Pause::default().await;
        }
    }

    async fn read(&self, op: &'static str, may_be_stale: bool, taints: bool) -> Result<Vec<Row>, SecurityGroupError> {
        self.wait(1).await;
        let mut sim = self.world.sim();
        if sim.clusters[self.x].agent.crashed {
            return Err(lost(op));
        }
        match sim.fault(self.x, taints) {
            Fault::None => Ok(sim.describe(self.x, may_be_stale)),
            Fault::Before => Err(throttled(op)),
            Fault::After | Fault::Crash { .. } => Err(lost(op)),
        }
    }

    async fn write(
        &self,
        op: &'static str,
        change: Change,
        turn: Turn,
        taints: bool,
    ) -> Result<(), SecurityGroupError> {
        let pauses = match turn {
            Turn::Queued => self.world.sim().pauses(true),
            Turn::AtOnce => {
                let mut sim = self.world.sim();
                // One interleaving point: the other cluster may take any number of steps.
                let in_flight = sim.rng.f64() < sim.faults.window;
                sim.stats.windows += u64::from(in_flight);
                u32::from(in_flight)
            }
        };
        let change = match change {
            Change::Revoke(ids, Sent::AtOnce) if pauses > 0 => Change::Revoke(ids, Sent::InFlight),
            other => other,
        };
        self.wait(pauses).await;
        let mut sim = self.world.sim();
        if sim.clusters[self.x].agent.crashed {
            return Err(lost(op));
        }
        let fault = sim.fault(self.x, taints);
        let applies = matches!(fault, Fault::None | Fault::After | Fault::Crash { applied: true });
        let result = if applies { sim.apply(self.x, &change) } else { Ok(()) };
        match fault {
            Fault::None => result,
            Fault::Before => Err(throttled(op)),
            Fault::After => {
                if result.is_ok() {
                    sim.stats.lost_answers += 1;
                    sim.note(|_| format!("{} {op}: answer lost", NAMES[self.x]));
                }
                Err(lost(op))
            }
            Fault::Crash { .. } => Err(lost(op)),
        }
    }
}

fn existing(rows: &[Row]) -> Vec<ExistingRule> {
    let mut rules: Vec<ExistingRule> = rows
        .iter()
        .map(|r| {
            let (managed, claims) = claims_of(&r.tags);
            ExistingRule { rule_id: r.id.clone(), rule: r.rule.clone(), managed, claims }
        })
        .collect();
    rules.sort();
    rules
}

fn is_gone(e: &SecurityGroupError) -> bool {
    matches!(e, SecurityGroupError::GroupNotFound { .. } | SecurityGroupError::RuleNotFound { .. })
}

impl SecurityGroups for Ec2 {
    async fn ingress_rules(&self, _: &str) -> Result<Vec<ExistingRule>, SecurityGroupError> {
        Ok(existing(&self.read("DescribeSecurityGroupRules", true, true).await?))
    }

    async fn groups_with_rules_of(&self, cluster: &str) -> Result<BTreeSet<String>, SecurityGroupError> {
        let rows = self.read("DescribeSecurityGroupRules", true, false).await?;
        let holds = rows.iter().any(|r| {
            let (managed, claims) = claims_of(&r.tags);
            claims.contains(cluster) || (managed && claims.is_empty())
        });
        Ok(if holds { BTreeSet::from([GROUP.to_owned()]) } else { BTreeSet::new() })
    }

    async fn authorize(&self, _: &str, rule: &IngressRule, cluster: &str) -> Result<(), SecurityGroupError> {
        let change = Change::Authorize(rule.clone(), cluster.to_owned());
        self.write("AuthorizeSecurityGroupIngress", change, Turn::Queued, true).await
    }

    async fn claim(&self, _: &str, rule_ids: &[String], cluster: &str) -> Result<(), SecurityGroupError> {
        if rule_ids.is_empty() {
            return Ok(());
        }
        let change = Change::Tag(rule_ids.to_vec(), claim_key(cluster), "true".into());
        let result = self.write("CreateTags", change, Turn::Queued, true).await;
        if matches!(result, Err(SecurityGroupError::RuleNotFound { .. })) {
            self.world.sim().stats.claims_on_gone += 1;
        }
        result
    }

    async fn release(&self, _: &str, rule_ids: &[String], cluster: &str) -> Result<(), SecurityGroupError> {
        if rule_ids.is_empty() {
            return Ok(());
        }
        let mark = Change::Tag(rule_ids.to_vec(), MANAGED_TAG.into(), "true".into());
        self.write("CreateTags", mark, Turn::Queued, false).await?;
        let keys = vec![(claim_key(cluster), None), (CLUSTER_TAG.to_owned(), Some(cluster.to_owned()))];
        self.write("DeleteTags", Change::Untag(rule_ids.to_vec(), keys), Turn::Queued, false).await
    }

    async fn revoke(&self, _: &str, rule_ids: &[String]) -> Result<(), SecurityGroupError> {
        match self.revoke_unclaimed(rule_ids).await {
            Err(e) if is_gone(&e) && rule_ids.len() > 1 => {
                self.world.sim().stats.retries += 1;
                for id in rule_ids {
                    match self.revoke_unclaimed(std::slice::from_ref(id)).await {
                        Err(e) if !is_gone(&e) => return Err(e),
                        _ => {}
                    }
                }
                Ok(())
            }
            Err(e) if is_gone(&e) => Ok(()),
            other => other,
        }
    }

    async fn instance_enis(&self, _: &[String]) -> Result<BTreeMap<String, EniGroups>, SecurityGroupError> {
        unreachable!("the model has one group; ENI lookups are out of scope")
    }

    async fn enis_for_ips(&self, _: &str, _: &[String]) -> Result<BTreeMap<String, EniGroups>, SecurityGroupError> {
        unreachable!("the model has one group; ENI lookups are out of scope")
    }
}

/// `networking::pass` for the one group: what it asks, whether the group is planned.
async fn pass(world: World, x: usize) -> Option<u64> {
    let ec2 = Ec2 { world: world.clone(), x };
    let cluster = NAMES[x];
    let (ever_asked, swept, may_release, desired, protected, waiting_grace) = {
        let sim = world.sim();
        let c = &sim.clusters[x];
        let a = &c.agent;
        // Nothing is released until every binding with networking has said what it asks since start.
        let may_release =
            c.bindings.iter().enumerate().filter(|(_, b)| b.spec != Spec::Off).all(|(i, _)| a.asks.contains_key(&i));
        let mut desired = BTreeSet::new();
        let mut protected = BTreeSet::new();
        for ask in a.asks.values() {
            match ask {
                Ask::Rules(rules) => desired.extend(rules.iter().cloned()),
                Ask::Broken(protect) => protected.extend(protect.iter().cloned()),
            }
        }
        (a.ever_asked, a.swept, may_release, desired, protected, !a.unclaimed_since.is_empty())
    };
    if !ever_asked && (swept || !may_release) {
        return None;
    }
    world.sim().stats.sweeps += u64::from(!ever_asked);
    let mut planned = !desired.is_empty() || waiting_grace;
    // Whether this pass left anything to do: a failure, a write, a grace still running.
    let mut left = false;
    match ec2.groups_with_rules_of(cluster).await {
        Ok(groups) => planned |= groups.contains(GROUP),
        Err(_) => left = true,
    }
    let mut recheck = None;
    if planned {
        match reconcile_security_group(&ec2, cluster, &desired, &protected, may_release).await {
            Ok((group_recheck, wrote)) => {
                left |= wrote || group_recheck.is_some();
                recheck = group_recheck;
            }
            Err(()) => left = true,
        }
    }
    if !ever_asked && !left {
        world.sim().clusters[x].agent.swept = true;
    }
    recheck
}

/// `networking::reconcile_security_group`, in its order (no rules quota here).
async fn reconcile_security_group(
    ec2: &Ec2,
    cluster: &str,
    desired: &BTreeSet<IngressRule>,
    protected: &BTreeSet<IngressRule>,
    may_release: bool,
) -> Result<(Option<u64>, bool), ()> {
    let existing = ec2.ingress_rules(GROUP).await.map_err(drop)?;
    let plan = {
        let mut sim = ec2.world.sim();
        let since = sim.clusters[ec2.x].agent.unclaimed_since.clone();
        let now = sim.now;
        let plan = plan_group(GroupInputs {
            cluster,
            desired,
            protected,
            existing: &existing,
            unclaimed_since: &since,
            may_release,
            grace: grace(),
            now,
        });
        let agent = &mut sim.clusters[ec2.x].agent;
        agent.unclaimed_since = plan.unclaimed_since.clone();
        agent.last_pass_wrote = plan.writes();
        sim.note(|_| {
            format!(
                "{cluster} plans from {}: authorize {:?} claim {:?} release {:?} revoke {:?}",
                show_existing(&existing),
                plan.authorize.iter().map(|r| r.from_port).collect::<Vec<_>>(),
                plan.claim,
                plan.release,
                plan.revoke
            )
        });
        plan
    };
    let notify = || ec2.world.sim().clusters[ec2.x].agent.notified = true;
    let mut failed = false;
    for rule in &plan.authorize {
        match ec2.authorize(GROUP, rule, cluster).await {
            Ok(()) => {}
            Err(SecurityGroupError::Duplicate { .. }) => notify(),
            Err(_) => failed = true,
        }
    }
    if !plan.claim.is_empty() {
        match ec2.claim(GROUP, &plan.claim, cluster).await {
            Ok(()) | Err(SecurityGroupError::RuleNotFound { .. }) => notify(),
            Err(_) => failed = true,
        }
    }
    let _ = ec2.release(GROUP, &plan.release, cluster).await;
    let _ = ec2.revoke(GROUP, &plan.revoke).await;
    if failed { Err(()) } else { Ok((plan.recheck_in, plan.writes())) }
}

fn show_existing(existing: &[ExistingRule]) -> String {
    let parts: Vec<String> = existing
        .iter()
        .map(|e| {
            format!(
                "{}:{}:{}{:?}",
                &e.rule_id[e.rule_id.len() - 2..],
                e.rule.from_port,
                if e.managed { "" } else { "hand" },
                e.claims
            )
        })
        .collect();
    parts.join(" ")
}

type PassFuture = Pin<Box<dyn Future<Output = Option<u64>> + Send>>;

struct Runner {
    world: World,
    passes: Vec<Option<PassFuture>>,
}

impl Runner {
    fn runnable(&self, x: usize) -> bool {
        let sim = self.world.sim();
        let a = &sim.clusters[x].agent;
        self.passes[x].is_some() || (a.looks() && (a.notified || sim.now >= a.wake_at))
    }

    /// One step of cluster `x`'s loop: start a pass if due, then run it to its next AWS call.
    fn advance(&mut self, x: usize) {
        if self.passes[x].is_none() {
            let mut sim = self.world.sim();
            let desired = sim.desired_now(x);
            let settling = sim.faults.rate == 0.0;
            let a = &mut sim.clusters[x].agent;
            a.notified = false;
            a.running = true;
            a.pass_faulted = false;
            a.last_pass_wrote = false;
            a.desired_at_start = desired;
            a.settling = settling;
            sim.note(|_| format!("{} pass starts", NAMES[x]));
            drop(sim);
            self.passes[x] = Some(Box::pin(pass(self.world.clone(), x)));
        }
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let polled = self.passes[x].as_mut().map(|f| f.as_mut().poll(&mut cx));
        let mut sim = self.world.sim();
        if sim.clusters[x].agent.crashed {
            self.passes[x] = None;
            sim.restart(x);
        } else if let Some(Poll::Ready(recheck)) = polled {
            self.passes[x] = None;
            sim.end_pass(x, recheck);
        }
    }

    fn tick(&mut self, churn: bool) {
        let runnable: Vec<usize> = (0..NAMES.len()).filter(|&x| self.runnable(x)).collect();
        {
            let mut sim = self.world.sim();
            sim.step += 1;
            sim.stats.steps += 1;
            if sim.rng.bool() {
                sim.now += 1;
            }
        }
        let pick = self.world.sim().rng.usize(0..=runnable.len());
        if let Some(&x) = runnable.get(pick) {
            self.advance(x);
        } else {
            self.environment(churn, runnable.is_empty());
        }
        self.world.sim().check_presence();
    }

    /// Bindings change and (after a restart) publish again; time passes.
    fn environment(&mut self, churn: bool, idle: bool) {
        let mut sim = self.world.sim();
        for x in 0..NAMES.len() {
            for b in 0..sim.clusters[x].bindings.len() {
                if !sim.clusters[x].bindings[b].published && sim.rng.f64() < 0.3 {
                    sim.publish(x, b);
                }
            }
        }
        if churn && sim.rng.f64() < 0.25 {
            let (x, b) = (sim.rng.usize(0..NAMES.len()), sim.rng.usize(0..BINDINGS));
            let spec = sim.random_spec();
            sim.change_binding(x, b, spec);
        }
        sim.now += sim.rng.u64(0..3);
        if idle && sim.rng.f64() < 0.1 {
            // Nothing to do: on to the next timer.
            let next = sim.clusters.iter().filter(|c| c.agent.looks()).map(|c| c.agent.wake_at).min();
            if let Some(next) = next {
                sim.now = sim.now.max(next);
            }
        }
    }
}

fn initial_rows(rng: &mut fastrand::Rng) -> Vec<Row> {
    let mut rows = Vec::new();
    let tags = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let claim = |c: &str| claim_key(c);
    for (i, rule) in universe().into_iter().chain([outsider()]).enumerate() {
        let id = format!("sgr-{:017x}", 0xa00 + i);
        let t = if i == universe().len() {
            Some(tags(&[]))
        } else {
            let creator = *rng.choice(["blue", "green", QUIET].iter()).unwrap_or(&"blue");
            match rng.u32(0..10) {
                0..=3 => None,
                4 => Some(tags(&[])),
                5 => Some(tags(&[(CLUSTER_TAG, creator)])),
                6 => Some(tags(&[(MANAGED_TAG, "true")])),
                7 => Some(tags(&[(MANAGED_TAG, "true"), (CLUSTER_TAG, creator), (&claim("blue"), "true")])),
                8 => Some(tags(&[(MANAGED_TAG, "true"), (CLUSTER_TAG, "blue"), (&claim("green"), "true")])),
                _ => Some(tags(&[(MANAGED_TAG, "true"), (CLUSTER_TAG, QUIET)])),
            }
        };
        if let Some(tags) = t {
            rows.push(Row { id, rule, tags });
        }
    }
    rows
}

struct Outcome {
    failures: Vec<String>,
    known: Vec<(Known, String)>,
    stats: Stats,
    trace: Vec<String>,
}

fn new_sim(rng: fastrand::Rng, rows: Vec<Row>, faults: Faults, trace: bool) -> Sim {
    let hand_made = rows.iter().filter(|r| !agent_made(&r.tags)).cloned().collect();
    let unclaimed_at = rows
        .iter()
        .filter(|r| agent_made(&r.tags) && tag_claims(&r.tags).is_empty())
        .map(|r| (r.id.clone(), START))
        .collect();
    Sim {
        rng,
        now: START,
        step: 0,
        history: vec![(0, rows.clone())],
        rows,
        next_id: 0,
        clusters: Vec::new(),
        hand_made,
        faults,
        lost_to_race: BTreeSet::new(),
        unclaimed_at,
        violations: Vec::new(),
        known: Vec::new(),
        stats: Stats::default(),
        trace: trace.then(Vec::new),
    }
}

fn add_cluster(sim: &mut Sim, specs: Vec<Spec>) {
    let bindings = specs
        .into_iter()
        .map(|spec| {
            let named = match &spec {
                Spec::Rules(rules) => rules.clone(),
                _ => BTreeSet::new(),
            };
            Binding { spec, named, published: false }
        })
        .collect();
    let agent = Agent { wake_at: sim.now + DRIFT_SECS, ..Agent::default() };
    let cluster = Cluster { bindings, agent, had: BTreeSet::new(), streak: BTreeMap::new(), flagged: BTreeSet::new() };
    sim.clusters.push(cluster);
}

/// Faults off, every binding published: runs both loops (skipping idle time) until neither has
/// anything left to write or wait for.
fn settle(runner: &mut Runner) -> bool {
    {
        let mut sim = runner.world.sim();
        sim.faults = NO_FAULTS;
        sim.note(|_| "faults stop".into());
        for x in 0..NAMES.len() {
            for b in 0..sim.clusters[x].bindings.len() {
                sim.publish(x, b);
            }
        }
    }
    for _ in 0..20_000 {
        let quiet = (0..NAMES.len()).all(|x| {
            let sim = runner.world.sim();
            let a = &sim.clusters[x].agent;
            runner.passes[x].is_none()
                && !a.notified
                && !a.last_pass_wrote
                && a.unclaimed_since.is_empty()
                && (a.passes_settling >= 1 || !a.looks())
        });
        if quiet {
            return true;
        }
        if (0..NAMES.len()).any(|x| runner.runnable(x)) {
            runner.tick(false);
        } else {
            let mut sim = runner.world.sim();
            let next = sim.clusters.iter().filter(|c| c.agent.looks()).map(|c| c.agent.wake_at).min();
            sim.now = next.unwrap_or(sim.now).max(sim.now + 1);
        }
    }
    false
}

/// Every needed rule present and claimed by exactly its needers; an agent's rule nobody needs
/// revoked (unless the quiet cluster claims it); hand-made rules untouched.
fn end_checks(sim: &mut Sim, settled: bool) -> Outcome {
    let mut failures = std::mem::take(&mut sim.violations);
    let known = std::mem::take(&mut sim.known);
    if !settled {
        failures.push("the loops never went quiet once faults stopped".into());
    }
    let needed: Vec<BTreeSet<IngressRule>> = (0..NAMES.len())
        .map(|x| {
            let asks = sim.clusters[x].bindings.iter().filter_map(|b| match &b.spec {
                Spec::Rules(rules) => Some(rules.iter().cloned()),
                _ => None,
            });
            asks.flatten().collect()
        })
        .collect();
    for rule in universe().into_iter().chain([outsider()]) {
        let needers: BTreeSet<String> =
            (0..NAMES.len()).filter(|&x| needed[x].contains(&rule)).map(|x| NAMES[x].to_owned()).collect();
        let Some(row) = sim.rows.iter().find(|r| r.rule == rule) else {
            if !needers.is_empty() {
                failures.push(format!("end: {rule} needed by {needers:?} is absent"));
            }
            continue;
        };
        if !agent_made(&row.tags) {
            continue;
        }
        let claims = tag_claims(&row.tags);
        let ours: BTreeSet<String> = claims.iter().filter(|c| NAMES.contains(&c.as_str())).cloned().collect();
        if ours != needers {
            failures.push(format!("end: {} ({rule}) is claimed by {claims:?}, needed by {needers:?}", row.id));
        } else if needers.is_empty() && !claims.contains(QUIET) {
            failures.push(format!("end: stranded {} ({rule}): an agent's rule nobody needs", row.id));
        }
    }
    for hand in &sim.hand_made {
        if !sim.rows.contains(hand) {
            failures.push(format!("end: hand-made {} ({}) was touched", hand.id, hand.rule));
        }
    }
    let trace = sim.trace.take().unwrap_or_default();
    Outcome { failures, known, stats: sim.stats, trace }
}

fn run_schedule(seed: u64, trace: bool) -> Outcome {
    let mut rng = fastrand::Rng::with_seed(seed);
    let rows = initial_rows(&mut rng);
    let faults = Faults {
        rate: 0.05 + rng.f64() * 0.2,
        stale: rng.f64() * 0.5,
        delay: rng.f64() * 0.4,
        window: if rng.bool() { rng.f64() * 0.3 } else { 0.0 },
    };
    let mut sim = new_sim(rng, rows, faults, trace);
    for _ in NAMES {
        // Sometimes an agent starts with no binding asking, beside the claims an earlier run left.
        let quiet = sim.rng.f64() < 0.2;
        let specs = (0..BINDINGS).map(|_| if quiet { Spec::Off } else { sim.random_spec() }).collect();
        add_cluster(&mut sim, specs);
    }
    let world = World(Arc::new(Mutex::new(sim)));
    let mut runner = Runner { world: world.clone(), passes: vec![None, None] };
    for _ in 0..CHURN_STEPS {
        runner.tick(true);
    }
    // Broken bindings heal or go; then faults stop and the loops settle.
    {
        let mut sim = world.sim();
        for x in 0..NAMES.len() {
            for b in 0..BINDINGS {
                if sim.clusters[x].bindings[b].spec == Spec::Broken {
                    let named = sim.clusters[x].bindings[b].named.clone();
                    let spec = if sim.rng.bool() && !named.is_empty() { Spec::Rules(named) } else { Spec::Off };
                    sim.clusters[x].bindings[b].spec = spec;
                }
            }
        }
    }
    let settled = settle(&mut runner);
    let mut sim = world.sim();
    end_checks(&mut sim, settled)
}

#[test]
fn two_clusters_sharing_a_security_group_keep_every_needed_rule() {
    let schedules: u64 = std::env::var("TGB_SG_MODEL_SCHEDULES").ok().and_then(|s| s.parse().ok()).unwrap_or(800);
    let traced: Option<u64> = std::env::var("TGB_SG_MODEL_TRACE").ok().and_then(|s| s.parse().ok());
    let strict = std::env::var("TGB_SG_MODEL_STRICT").is_ok_and(|v| v == "1");
    let mut totals = Stats::default();
    let mut known: BTreeMap<Known, (u64, u64, String)> = BTreeMap::new();
    for seed in 0..schedules {
        let outcome = run_schedule(seed, traced == Some(seed));
        if traced == Some(seed) {
            println!("{}", outcome.trace.join("\n"));
        }
        assert!(outcome.failures.is_empty(), "seed {seed}: {:#?}", outcome.failures);
        totals.add(&outcome.stats);
        for (kind, message) in outcome.known {
            let entry = known.entry(kind).or_insert_with(|| (0, seed, message.clone()));
            entry.0 += 1;
            if strict {
                panic!("seed {seed}: KNOWN BUG {kind:?}: {message}");
            }
        }
    }
    let n = schedules;
    println!(
        "{n} schedules, {} steps, {} passes: {} stale reads, {} delayed writes, {} lost answers, {} refusals, \
         {} crashes, {} revokes in flight; {} authorizes ({} re-authorizes), {} duplicates, {} claims ({} on a \
         rule already gone), {} releases, {} revokes ({} less than the grace after the group last showed a \
         claim), {} planned revokes kept by the re-read, {} batches retried rule by rule, {} passes with nothing \
         asked since start; violations=0",
        totals.steps,
        totals.passes,
        totals.stale_reads,
        totals.delayed_writes,
        totals.lost_answers,
        totals.refusals,
        totals.crashes,
        totals.windows,
        totals.authorizes,
        totals.reauthorizes,
        totals.duplicates,
        totals.claims,
        totals.claims_on_gone,
        totals.releases,
        totals.revokes,
        totals.early_revokes,
        totals.kept_by_reread,
        totals.retries,
        totals.sweeps,
    );
    // KNOWN BUGS: counted and shown, not failed (TGB_SG_MODEL_STRICT=1 fails on them).
    for (kind, (count, seed, example)) in &known {
        println!("KNOWN BUG {kind:?}: {count} (first: seed {seed}: {example})");
    }
    // The faults must actually have been exercised, or the test proves nothing.
    assert!(totals.stale_reads > n && totals.delayed_writes > n && totals.lost_answers > n, "faults too rare");
    assert!(totals.crashes > n / 2 && totals.refusals > n && totals.windows > n / 10, "crashes or refusals too rare");
    assert!(totals.revokes > n && totals.releases > n && totals.claims > n, "rules never changed hands");
    assert!(totals.reauthorizes > 0 && totals.claims_on_gone > 0, "no claim ever lost its rule to a revoke");
    assert!(totals.duplicates > 0 && totals.kept_by_reread > 0, "the clusters never raced for a rule");
    assert!(totals.sweeps > 0, "no agent ever restarted with nothing asked");
}

// Minimal schedules of the KNOWN BUGS, step by step. Ignored: each fails until its bug is fixed.

const BLUE: usize = 0;
const GREEN: usize = 1;

fn row(id: &str, rule: IngressRule, pairs: &[(&str, &str)]) -> Row {
    Row { id: id.into(), rule, tags: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
}

/// No faults, both agents started with one binding each, time well past every grace.
fn scripted(rows: Vec<Row>, blue: &[IngressRule], green: &[IngressRule]) -> Runner {
    let mut sim = new_sim(fastrand::Rng::with_seed(0), rows, NO_FAULTS, true);
    add_cluster(&mut sim, vec![Spec::Rules(blue.iter().cloned().collect())]);
    add_cluster(&mut sim, vec![Spec::Rules(green.iter().cloned().collect())]);
    sim.publish(BLUE, 0);
    sim.publish(GREEN, 0);
    sim.now += 60;
    Runner { world: World(Arc::new(Mutex::new(sim))), passes: vec![None, None] }
}

/// Runs `x`'s loop one AWS call at a time until `done`.
fn run_until(runner: &mut Runner, x: usize, done: impl Fn(&Sim) -> bool) {
    for _ in 0..50 {
        if done(&runner.world.sim()) {
            return;
        }
        runner.advance(x);
        runner.world.sim().check_presence();
    }
    panic!("{}: never got there: {:#?}", NAMES[x], runner.world.sim().trace);
}

/// Runs one whole pass of `x`.
fn one_pass(runner: &mut Runner, x: usize) {
    let passes = runner.world.sim().stats.passes;
    run_until(runner, x, |sim| sim.stats.passes > passes);
}

fn hand_made_22() -> Row {
    row("sgr-0000000000000hand", universe()[4].clone(), &[])
}

fn assert_no_known(runner: &Runner) {
    let sim = runner.world.sim();
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    assert!(sim.known.is_empty(), "{:#?}\n{}", sim.known, sim.trace.as_deref().unwrap_or_default().join("\n"));
}

/// Known::InFlight then Known::UntilDrift. blue released tcp/80 long ago; green starts needing it.
#[test]
#[ignore = "KNOWN BUG (#20): a claim landing between a revoke's re-read and the revoke loses its rule"]
fn known_bug_a_claim_between_the_re_read_and_the_revoke() {
    let rows = vec![row("sgr-000000000000000a", lb(80), &[(MANAGED_TAG, "true")]), hand_made_22()];
    let mut runner = scripted(rows, &[universe()[4].clone()], &[lb(80), universe()[4].clone()]);
    runner.world.sim().clusters[BLUE].agent.unclaimed_since.insert("sgr-000000000000000a".into(), START);
    // 1. blue plans to revoke it, waits its turn, reads again: unclaimed; its revoke is on its way.
    runner.world.sim().faults.window = 1.0;
    run_until(&mut runner, BLUE, |sim| sim.stats.windows == 1);
    runner.world.sim().faults.window = 0.0;
    // 2. green reads it and claims it: the claim lands; green looks again at once and sees its claim.
    one_pass(&mut runner, GREEN);
    one_pass(&mut runner, GREEN);
    // 3. blue's revoke lands: the rule green claims and needs is gone until green's drift check.
    one_pass(&mut runner, BLUE);
    assert_no_known(&runner);
}

/// Found by this model (it revoked under a claim, and the rule stayed gone until the claimer's drift
/// check) and fixed: a batch that fails on a rule already gone is retried rule by rule, each read
/// again after its own wait. Two rules nobody claims; both clusters revoke one of them.
#[test]
fn a_revoke_retried_rule_by_rule_reads_the_group_again() {
    let rows = vec![
        row("sgr-000000000000000a", lb(80), &[(MANAGED_TAG, "true")]),
        row("sgr-000000000000000b", lb(443), &[(MANAGED_TAG, "true")]),
        hand_made_22(),
    ];
    let mut runner = scripted(rows, &[universe()[4].clone()], &[universe()[4].clone()]);
    {
        let mut sim = runner.world.sim();
        let since = &mut sim.clusters[BLUE].agent.unclaimed_since;
        since.extend([("sgr-000000000000000a".into(), START), ("sgr-000000000000000b".into(), START)]);
        sim.clusters[GREEN].agent.unclaimed_since.insert("sgr-000000000000000b".into(), START);
    }
    // 1. blue revokes both; after its re-read (both unclaimed) the call is on its way ...
    runner.world.sim().faults.window = 1.0;
    run_until(&mut runner, BLUE, |sim| sim.stats.windows == 1);
    runner.world.sim().faults.window = 0.0;
    // 2. ... while green revokes tcp/443 first (both graces ran out together).
    one_pass(&mut runner, GREEN);
    // 3. blue's batch fails (tcp/443 is gone): tcp/80 waits for its own turn, to be read again.
    run_until(&mut runner, BLUE, |sim| sim.stats.retries == 1);
    // 4. Meanwhile green starts needing tcp/80 and claims it; its pass at once sees its claim.
    {
        let mut sim = runner.world.sim();
        sim.change_binding(GREEN, 0, Spec::Rules([lb(80), universe()[4].clone()].into()));
    }
    one_pass(&mut runner, GREEN);
    one_pass(&mut runner, GREEN);
    // 5. blue's retry reads the group again: green's claim keeps tcp/80.
    one_pass(&mut runner, BLUE);
    assert_no_known(&runner);
}

/// Found by this model and fixed: an agent restarted while none of its bindings asks for rules
/// never ran its loop (`ever_asked` stayed false), so its claims stayed and their rules were never
/// revoked. green authorized tcp/80, then restarted after its binding dropped networking.
#[test]
fn a_restarted_agent_with_nothing_asked_releases_its_claims() {
    let mut runner = scripted(vec![hand_made_22()], &[universe()[4].clone()], &[lb(80)]);
    one_pass(&mut runner, GREEN);
    {
        let mut sim = runner.world.sim();
        assert!(sim.present(&lb(80)));
        sim.restart(GREEN);
        sim.clusters[GREEN].bindings[0].spec = Spec::Off;
    }
    let settled = settle(&mut runner);
    assert!(!runner.world.sim().present(&lb(80)), "green's rule nobody needs stays");
    // Swept: green's loop makes no EC2 call any more until a binding asks.
    let passes = runner.world.sim().stats.passes;
    runner.world.sim().now += 3 * DRIFT_SECS;
    assert!(settle(&mut runner) && settled);
    assert_eq!(runner.world.sim().stats.passes, passes, "a swept agent with nothing asked still passes");
    let outcome = end_checks(&mut runner.world.sim(), true);
    assert!(outcome.failures.is_empty(), "{:#?}", outcome.failures);
    assert!(outcome.known.is_empty(), "{:#?}\n{}", outcome.known, outcome.trace.join("\n"));
}

/// Fail static: after a restart nothing is released while a binding that asks has not said so
/// yet, even with nothing asked at all so far. green claims tcp/80 (binding 0) and tcp/443
/// (binding 1); binding 0 drops networking while green is down; binding 1 reconciles late.
#[test]
fn a_restarted_agent_releases_nothing_until_every_ask_is_back() {
    let mut runner = scripted(vec![hand_made_22()], &[universe()[4].clone()], &[lb(80)]);
    {
        let mut sim = runner.world.sim();
        let rules: BTreeSet<IngressRule> = [lb(443)].into();
        sim.clusters[GREEN].bindings.push(Binding { spec: Spec::Rules(rules.clone()), named: rules, published: false });
        sim.publish(GREEN, 1);
    }
    one_pass(&mut runner, GREEN);
    let claimed_by_green = |sim: &Sim, rule: &IngressRule| {
        sim.rows.iter().any(|r| &r.rule == rule && tag_claims(&r.tags).contains(NAMES[GREEN]))
    };
    {
        let mut sim = runner.world.sim();
        assert!(claimed_by_green(&sim, &lb(80)) && claimed_by_green(&sim, &lb(443)));
        sim.restart(GREEN);
        sim.change_binding(GREEN, 0, Spec::Off);
        sim.publish(GREEN, 0);
    }
    // Two drift intervals: green's loop wakes and returns without a call; both claims stay.
    for _ in 0..2 {
        runner.world.sim().now += DRIFT_SECS;
        assert!(runner.runnable(GREEN));
        one_pass(&mut runner, GREEN);
        let sim = runner.world.sim();
        assert!(claimed_by_green(&sim, &lb(80)) && claimed_by_green(&sim, &lb(443)), "released before every ask");
    }
    // Binding 1 says it still asks for tcp/443: tcp/80 goes, tcp/443 stays.
    assert!(settle(&mut runner));
    {
        let sim = runner.world.sim();
        assert!(!sim.present(&lb(80)) && claimed_by_green(&sim, &lb(443)));
    }
    let outcome = end_checks(&mut runner.world.sim(), true);
    assert!(outcome.failures.is_empty(), "{:#?}", outcome.failures);
    assert!(outcome.known.is_empty(), "{:#?}\n{}", outcome.known, outcome.trace.join("\n"));
}
