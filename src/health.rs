//! What `/healthz` and `/readyz` report, kept as cheap atomics and a small map the probes read.
//!
//! - [`Progress`]: reconciles in flight and when each started. A reconcile running longer than the
//!   bound means the loop is stuck (a hung call with no timeout, a deadlock): the kubelet should
//!   restart the agent. An idle agent is healthy.
//! - [`Heartbeat`]: the lease loop beats on every turn; no beat for a lease duration means it is
//!   wedged (it turns several times per lease).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Reconciles in flight, by a unique ticket, with the binding and the start time.
#[derive(Debug, Default)]
pub struct Progress {
    next: AtomicU64,
    in_flight: Mutex<HashMap<u64, (String, Instant)>>,
}

/// Marks one reconcile finished when dropped: also when the reconcile is cancelled.
pub struct Ticket<'a> {
    progress: &'a Progress,
    id: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.progress.lock().remove(&self.id);
    }
}

impl Progress {
    /// Registers a reconcile of `key` starting now; it finishes when the ticket is dropped.
    pub fn started(&self, key: String) -> Ticket<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (key, Instant::now()));
        Ticket { progress: self, id }
    }

    /// Runs `work` as the reconcile of `key`.
    pub async fn track<F: Future>(&self, key: String, work: F) -> F::Output {
        let _ticket = self.started(key);
        work.await
    }

    /// The reconcile in flight for the longest time, if any: (binding, running for).
    pub fn oldest(&self, now: Instant) -> Option<(String, Duration)> {
        self.lock()
            .values()
            .min_by_key(|(_, started)| *started)
            .map(|(key, started)| (key.clone(), now.saturating_duration_since(*started)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (String, Instant)>> {
        // A poisoned map only means a panic elsewhere mid-update; the entries are still usable.
        self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Wraps a reconcile function so that each run is registered in `health`'s [`Progress`].
pub fn tracking<K, C, F, Fut>(
    health: std::sync::Arc<Health>,
    mut reconcile: F,
) -> impl FnMut(std::sync::Arc<K>, C) -> futures::future::BoxFuture<'static, Fut::Output>
where
    K: kube::Resource,
    F: FnMut(std::sync::Arc<K>, C) -> Fut,
    Fut: Future + Send + 'static,
{
    move |object, ctx| {
        let meta = object.meta();
        let key =
            format!("{}/{}", meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default());
        let health = health.clone();
        let work = reconcile(object, ctx);
        Box::pin(async move { health.progress.track(key, work).await })
    }
}

/// The last turn of a loop, on the monotonic clock.
#[derive(Debug)]
pub struct Heartbeat {
    base: Instant,
    last: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self { base: Instant::now(), last: AtomicU64::new(0) }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        let nanos = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.fetch_max(nanos, Ordering::Relaxed);
    }

    /// Time since the last beat (since creation when it never beat).
    pub fn age(&self, now: Instant) -> Duration {
        let last = self.base + Duration::from_nanos(self.last.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

/// Everything the health endpoints look at.
#[derive(Debug)]
pub struct Health {
    pub progress: Progress,
    /// Set once the caches have listed everything (or at once on a standby, which has none).
    pub ready: std::sync::Arc<AtomicBool>,
    /// The pod webhook can answer (certificate loaded, index listed); true when it is not served.
    pub webhook_ready: std::sync::Arc<AtomicBool>,
    /// A reconcile running longer than this fails `/healthz`.
    pub stuck_after: Duration,
    /// The lease loop and how long it may go without a turn; `None` without leader election.
    pub lease: Option<(Heartbeat, Duration)>,
}

impl Health {
    pub fn new(stuck_after: Duration, lease_loop_bound: Option<Duration>) -> Self {
        Self {
            progress: Progress::default(),
            ready: std::sync::Arc::new(AtomicBool::new(false)),
            webhook_ready: std::sync::Arc::new(AtomicBool::new(true)),
            stuck_after,
            lease: lease_loop_bound.map(|bound| (Heartbeat::default(), bound)),
        }
    }

    /// `Ok` or why the agent is not live.
    pub fn live(&self, now: Instant) -> Result<(), String> {
        if let Some((key, running)) = self.progress.oldest(now)
            && running > self.stuck_after
        {
            return Err(format!(
                "the reconcile of {key} has been running for {:.1}s (limit {:.1}s)",
                running.as_secs_f64(),
                self.stuck_after.as_secs_f64()
            ));
        }
        if let Some((heartbeat, bound)) = &self.lease {
            let age = heartbeat.age(now);
            if age > *bound {
                return Err(format!(
                    "the leader-election loop has not turned for {}ms (limit {}ms)",
                    age.as_millis(),
                    bound.as_millis()
                ));
            }
        }
        Ok(())
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.webhook_ready.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_reconcile_fails_liveness_and_an_idle_agent_does_not() {
        let health = Health::new(Duration::from_secs(60), None);
        let now = Instant::now();
        assert!(health.live(now + Duration::from_secs(3600)).is_ok(), "idle for an hour is fine");
        let quick = health.progress.started("demo/a".into());
        let stuck = health.progress.started("demo/b".into());
        drop(quick);
        assert!(health.live(now + Duration::from_secs(30)).is_ok());
        let error = health.live(now + Duration::from_secs(61)).expect_err("stuck");
        assert!(error.contains("demo/b"), "{error}");
        drop(stuck);
        assert!(health.live(now + Duration::from_secs(3600)).is_ok(), "finished: healthy again");
    }

    #[tokio::test]
    async fn a_cancelled_reconcile_is_not_left_in_flight() {
        let progress = Progress::default();
        let work = progress.track("demo/a".into(), std::future::pending::<()>());
        assert!(tokio::time::timeout(Duration::from_millis(10), work).await.is_err());
        assert_eq!(progress.oldest(Instant::now()), None);
    }

    #[test]
    fn a_wedged_lease_loop_fails_liveness() {
        let health = Health::new(Duration::from_secs(60), Some(Duration::from_secs(15)));
        let (heartbeat, _) = health.lease.as_ref().expect("lease");
        heartbeat.beat();
        let now = Instant::now();
        assert!(health.live(now + Duration::from_secs(10)).is_ok());
        assert!(health.live(now + Duration::from_secs(16)).is_err());
        heartbeat.beat();
        assert!(health.live(Instant::now()).is_ok());
    }
}
