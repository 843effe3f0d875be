//! Leader election on a coordination.k8s.io Lease in the agent's own namespace, so several
//! replicas can run and exactly one writes to AWS at a time.
//!
//! Timing, with L the lease duration (`--lease-duration`, 15 s by default):
//! - the leader renews every L/6 (`retry`); each attempt (GET + PUT) is cut off after at most
//!   2L/9 (`attempt`) and never outlives the renew deadline;
//! - the leader may start AWS writes only until `renew_deadline` = 2L/3 after the *start* of its
//!   last confirmed renewal (the [`Fence`] closes by itself then); at that deadline it steps down;
//! - a standby takes the lease only once the record has gone unchanged for L on the standby's own
//!   monotonic clock, counted from when it first *received* that version. Wall clocks (the
//!   record's renewTime) are written for humans and never compared.
//!
//! So the leader's last renewal that the standby could have seen started at t0 (leader's clock)
//! and was stored no earlier; the standby saw it at t0 or later and cannot take before t0 + L,
//! while the leader starts no write after t0 + 2L/3. The L/3 in between covers writes in flight
//! (main.rs bounds every AWS operation by it) and any difference in clock rates.
//!
//! What fencing cannot close: a process frozen in the microseconds between the fence check and
//! the request leaving the socket sends that one request when it wakes (AWS APIs take no fencing
//! token that could refuse it).
//!
//! A deposed leader exits (status 1) rather than going back to standby: the process restarts
//! with empty caches, no queued retries and no task left from its time as leader.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::fence::Fence;
use crate::health::Heartbeat;

/// The periods derived from the lease duration (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub lease: Duration,
    pub renew_deadline: Duration,
    pub retry: Duration,
    pub attempt: Duration,
}

impl Timing {
    pub fn for_lease(lease: Duration) -> Self {
        Self { lease, renew_deadline: lease * 2 / 3, retry: lease / 6, attempt: lease * 2 / 9 }
    }

    /// The longest an AWS write started just before the fence closes may stay in flight while
    /// no other replica can lead yet.
    pub fn write_margin(&self) -> Duration {
        self.lease - self.renew_deadline
    }
}

/// What to do about a lease record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder stopped renewing: take it.
    Take,
    /// It is ours: renew it.
    Renew,
    /// Someone else holds it and renews it: wait.
    Wait,
}

/// When this replica first received the current version of the lease record, on its own
/// monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    version: String,
    since: Instant,
}

/// Updates what was seen: a new version restarts the count, the same version keeps it.
pub fn sight(previous: Option<Sighting>, version: &str, received: Instant) -> Sighting {
    match previous {
        Some(seen) if seen.version == version => seen,
        _ => Sighting { version: version.to_owned(), since: received },
    }
}

/// Decides from the holder, the holder's lease duration and how long this replica has seen the
/// record unchanged; `now` is the monotonic time the record was received.
pub fn decide(holder: Option<&str>, duration: Duration, me: &str, seen: &Sighting, now: Instant) -> Decision {
    match holder.filter(|h| !h.is_empty()) {
        Some(h) if h == me => Decision::Renew,
        None => Decision::Take,
        Some(_) if now.saturating_duration_since(seen.since) > duration => Decision::Take,
        Some(_) => Decision::Wait,
    }
}

/// The leader's next move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Try to renew, giving up after `timeout`.
    Renew { timeout: Duration },
    /// The renew deadline has passed: step down (the fence is already closed).
    StepDown,
}

/// `renewed_at` is the start of the last confirmed renewal (or of the take).
pub fn leader_turn(renewed_at: Instant, timing: &Timing, now: Instant) -> Turn {
    let deadline = renewed_at + timing.renew_deadline;
    if now >= deadline {
        return Turn::StepDown;
    }
    Turn::Renew { timeout: timing.attempt.min(deadline - now) }
}

/// An identity no other replica shares: the pod's name, else the host name plus a random suffix
/// (a PID is 1 in every container).
pub fn identity(pod_name: Option<String>, hostname: Option<String>) -> String {
    if let Some(name) = pod_name.filter(|n| !n.trim().is_empty()) {
        return name;
    }
    let host = hostname.map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).unwrap_or_else(|| "tgb-agent".into());
    let suffix: String = std::iter::repeat_with(fastrand::lowercase).take(8).collect();
    format!("{host}-{suffix}")
}

/// Why a leader stopped leading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deposed {
    /// No renewal was confirmed within the renew deadline.
    DeadlinePassed,
    /// Another replica holds the lease.
    TakenBy(String),
}

impl std::fmt::Display for Deposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deposed::DeadlinePassed => f.write_str("no lease renewal confirmed within the renew deadline"),
            Deposed::TakenBy(holder) => write!(f, "the lease is held by {holder}"),
        }
    }
}

/// What one attempt found.
enum Outcome {
    Held,
    HeldBy(String),
    /// Another write raced ours (409): look again.
    Conflict,
}

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
}

impl LeaderElection {
    pub fn new(client: Client, namespace: &str, name: &str, identity: String, duration: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity,
            timing: Timing::for_lease(duration),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Waits until this process holds the lease; returns when the successful attempt started.
    pub async fn acquire(&self, heartbeat: &Heartbeat) -> Instant {
        let mut seen = None;
        loop {
            heartbeat.beat();
            let started = Instant::now();
            match tokio::time::timeout(self.timing.attempt, self.try_hold(&mut seen)).await {
                Ok(Ok(Outcome::Held)) => return started,
                Ok(Ok(Outcome::HeldBy(_) | Outcome::Conflict)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, lease = %self.name, "leader election: cannot read or write the lease")
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, "leader election: the lease request did not answer in time")
                }
            }
            heartbeat.beat();
            tokio::time::sleep(self.timing.retry.mul_f64(0.8 + 0.4 * fastrand::f64())).await;
        }
    }

    /// Renews the lease while keeping `fence` open until each confirmed renewal's start plus the
    /// renew deadline. Returns (with the fence revoked) when this replica must stop leading.
    pub async fn hold(&self, mut renewed_at: Instant, fence: &Fence, heartbeat: &Heartbeat) -> Deposed {
        let timing = self.timing;
        fence.open_until(renewed_at + timing.renew_deadline);
        let mut seen = None;
        loop {
            heartbeat.beat();
            let now = Instant::now();
            let timeout = match leader_turn(renewed_at, &timing, now) {
                Turn::StepDown => {
                    fence.revoke();
                    return Deposed::DeadlinePassed;
                }
                Turn::Renew { timeout } => timeout,
            };
            match tokio::time::timeout(timeout, self.try_hold(&mut seen)).await {
                Ok(Ok(Outcome::Held)) => {
                    renewed_at = now;
                    fence.open_until(now + timing.renew_deadline);
                }
                Ok(Ok(Outcome::HeldBy(holder))) => {
                    fence.revoke();
                    return Deposed::TakenBy(holder);
                }
                Ok(Ok(Outcome::Conflict)) => {
                    tracing::debug!(lease = %self.name, "leader election: renewal raced another write; retrying")
                }
                Ok(Err(error)) => tracing::warn!(%error, lease = %self.name, "leader election: renewal failed"),
                Err(_) => {
                    tracing::warn!(lease = %self.name, ?timeout, "leader election: renewal did not answer in time")
                }
            }
            heartbeat.beat();
            // Wake at the deadline at the latest, to step down on time.
            let next = (now + timing.retry).min(renewed_at + timing.renew_deadline);
            tokio::time::sleep_until(next.into()).await;
        }
    }

    /// Gives the lease up on a graceful stop, so a standby takes over at once.
    pub async fn release(&self) {
        let release = async {
            if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
                && let Some(spec) = lease.spec.as_mut()
                && spec.holder_identity.as_deref() == Some(self.identity.as_str())
            {
                spec.holder_identity = None;
                if let Err(error) = self.api.replace(&self.name, &PostParams::default(), &lease).await {
                    tracing::warn!(%error, "leader election: could not release the lease");
                }
            }
        };
        if tokio::time::timeout(self.timing.attempt, release).await.is_err() {
            tracing::warn!("leader election: releasing the lease did not answer in time; it will expire");
        }
    }

    /// One GET and, when [`decide`] says so, one PUT conditional on the version read.
    async fn try_hold(&self, seen: &mut Option<Sighting>) -> Result<Outcome, kube::Error> {
        // Written into the record for humans; taken before the request, as the renewal's start.
        let now = Timestamp::now();
        let seconds = i32::try_from(self.timing.lease.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return held_unless_conflict(self.api.create(&PostParams::default(), &lease).await);
        };
        let received = Instant::now();
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let sighting = sight(seen.take(), &version, received);
        let spec = lease.spec.get_or_insert_with(Default::default);
        let their_duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.timing.lease, Duration::from_secs);
        let decision = decide(spec.holder_identity.as_deref(), their_duration, &self.identity, &sighting, received);
        *seen = Some(sighting);
        match decision {
            Decision::Wait => return Ok(Outcome::HeldBy(spec.holder_identity.clone().unwrap_or_default())),
            Decision::Renew => {}
            Decision::Take => {
                tracing::info!(lease = %self.name, previous = ?spec.holder_identity, "leader election: taking the lease");
                spec.holder_identity = Some(self.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            }
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        // `replace` carries the resourceVersion read above: a concurrent writer makes it a 409.
        held_unless_conflict(self.api.replace(&self.name, &PostParams::default(), &lease).await)
    }
}

fn held_unless_conflict(result: Result<Lease, kube::Error>) -> Result<Outcome, kube::Error> {
    match result {
        Ok(_) => Ok(Outcome::Held),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Outcome::Conflict),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Duration = Duration::from_secs(15);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn holders() {
        let t0 = Instant::now();
        let seen = sight(None, "1", t0);
        assert_eq!(decide(None, L, "me", &seen, t0), Decision::Take);
        assert_eq!(decide(Some(""), L, "me", &seen, t0), Decision::Take, "released");
        assert_eq!(decide(Some("me"), L, "me", &seen, t0 + secs(100)), Decision::Renew);
        assert_eq!(decide(Some("other"), L, "me", &seen, t0 + secs(10)), Decision::Wait);
        assert_eq!(decide(Some("other"), L, "me", &seen, t0 + secs(15)), Decision::Wait, "not before it ran out");
        assert_eq!(decide(Some("other"), L, "me", &seen, t0 + secs(16)), Decision::Take);
    }

    /// The record's renewTime plays no part, so a standby whose wall clock is an hour ahead of the
    /// leader's (or behind it) judges exactly as one in sync: only versions and its own monotonic
    /// clock count.
    #[test]
    fn skewed_wall_clocks_do_not_matter() {
        let t0 = Instant::now();
        // A standby starts and reads a record renewed "an hour ago" by the leader's wall clock:
        // it has just seen this version, so it waits the full lease.
        let seen = sight(None, "41", t0);
        assert_eq!(decide(Some("leader"), L, "standby", &seen, t0 + secs(1)), Decision::Wait);
        // The leader keeps renewing: every new version restarts the count.
        let seen = sight(Some(seen), "42", t0 + secs(10));
        assert_eq!(decide(Some("leader"), L, "standby", &seen, t0 + secs(20)), Decision::Wait);
        let seen = sight(Some(seen), "43", t0 + secs(20));
        let seen = sight(Some(seen), "43", t0 + secs(30));
        assert_eq!(decide(Some("leader"), L, "standby", &seen, t0 + secs(30)), Decision::Wait, "43 seen 10 s");
        // The leader stops: the same version for longer than the lease, whatever renewTime says.
        let seen = sight(Some(seen), "43", t0 + secs(36));
        assert_eq!(decide(Some("leader"), L, "standby", &seen, t0 + secs(36)), Decision::Take);
    }

    #[test]
    fn the_holders_duration_is_the_one_that_counts() {
        let t0 = Instant::now();
        let seen = sight(None, "7", t0);
        assert_eq!(decide(Some("leader"), secs(60), "standby", &seen, t0 + secs(30)), Decision::Wait);
        assert_eq!(decide(Some("leader"), secs(60), "standby", &seen, t0 + secs(61)), Decision::Take);
    }

    /// Renewals that hang: each attempt is cut off at the deadline, and at the deadline the leader
    /// steps down, a full L/3 before a standby could take the lease.
    #[test]
    fn hung_renewals_step_down_before_the_lease_can_be_taken() {
        let timing = Timing::for_lease(L);
        assert_eq!(timing.renew_deadline, secs(10));
        assert!(timing.attempt < timing.renew_deadline && timing.retry < timing.attempt);
        let renewed = Instant::now();
        assert_eq!(leader_turn(renewed, &timing, renewed + secs(2)), Turn::Renew { timeout: timing.attempt });
        // Renewals hang from here: the attempt never outlives the deadline.
        assert_eq!(leader_turn(renewed, &timing, renewed + secs(9)), Turn::Renew { timeout: secs(1) });
        assert_eq!(leader_turn(renewed, &timing, renewed + secs(10)), Turn::StepDown);
        // The earliest a standby can take: it saw the last renewal no earlier than it started.
        let seen = sight(None, "99", renewed);
        assert_eq!(decide(Some("leader"), L, "standby", &seen, renewed + secs(10)), Decision::Wait);
        assert_eq!(decide(Some("leader"), L, "standby", &seen, renewed + secs(15)), Decision::Wait);
        assert_eq!(timing.write_margin(), secs(5));
    }

    /// A leader frozen (SIGSTOP) past its lease wakes to a passed deadline: its first move is to
    /// step down, whatever its timers were about to do.
    #[test]
    fn a_frozen_leader_steps_down_when_it_wakes() {
        let timing = Timing::for_lease(L);
        let renewed = Instant::now();
        assert_eq!(leader_turn(renewed, &timing, renewed + secs(40)), Turn::StepDown);
        let fence = Fence::closed();
        fence.open_until(renewed + timing.renew_deadline);
        assert!(!fence.allows_writes_at(renewed + secs(40)));
    }

    #[test]
    fn identities_are_unique_without_a_pod_name() {
        assert_eq!(identity(Some("tgb-agent-7d9f-abcde".into()), Some("host".into())), "tgb-agent-7d9f-abcde");
        let a = identity(None, Some("host\n".into()));
        let b = identity(None, Some("host".into()));
        assert!(a.starts_with("host-") && a.len() == "host-".len() + 8, "{a}");
        assert_ne!(a, b);
        assert!(identity(Some(" ".into()), None).starts_with("tgb-agent-"));
    }
}
