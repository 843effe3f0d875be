//! Leader election on a coordination.k8s.io Lease in the agent's own namespace, so several
//! replicas can run and exactly one writes to AWS at a time.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// What to do about a lease, given who holds it and when it was last renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder stopped renewing: take it.
    Take,
    /// It is ours: renew it.
    Renew,
    /// Someone else holds it and renews it: wait.
    Wait,
}

pub fn decide(
    holder: Option<&str>,
    renewed: Option<Timestamp>,
    duration: Duration,
    me: &str,
    now: Timestamp,
) -> Decision {
    match holder.filter(|h| !h.is_empty()) {
        Some(h) if h == me => Decision::Renew,
        None => Decision::Take,
        Some(_) => {
            let expired = renewed.is_none_or(|at| {
                at.checked_add(SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX))
                    .is_ok_and(|end| end < now)
            });
            if expired { Decision::Take } else { Decision::Wait }
        }
    }
}

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaderElection {
    pub fn new(client: Client, namespace: &str, name: &str, identity: String, duration: Duration) -> Self {
        Self { api: Api::namespaced(client, namespace), name: name.to_owned(), identity, duration }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How often the leader renews (and a standby retries): a third of the lease, so two renewals
    /// may fail before the lease runs out.
    fn period(&self) -> Duration {
        self.duration / 3
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_hold().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, lease = %self.name, "leader election: cannot read or write the lease")
                }
            }
            tokio::time::sleep(self.period().mul_f64(0.8 + 0.4 * fastrand::f64())).await;
        }
    }

    /// Renews the lease until that fails for longer than the lease lasts or another process took
    /// it; then returns, and the caller must stop writing at once.
    pub async fn hold(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.period()).await;
            match self.try_hold().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.name, "leader election: another process holds the lease now");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, lease = %self.name, "leader election: renewal failed");
                    // Stop before the lease can expire under us, not after.
                    if last_renewed.elapsed() + self.period() >= self.duration {
                        tracing::error!(lease = %self.name, "leader election: could not renew in time");
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up on a graceful stop, so a standby takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            if let Err(error) = self.api.replace(&self.name, &PostParams::default(), &lease).await {
                tracing::warn!(%error, "leader election: could not release the lease");
            }
        }
    }

    /// Takes or renews the lease when [`decide`] says so; `Ok(false)` when someone else holds it
    /// or won a race for it.
    async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
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
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let renewed = spec.renew_time.as_ref().map(|t| t.0);
        let their_duration =
            spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok()).map_or(self.duration, Duration::from_secs);
        match decide(spec.holder_identity.as_deref(), renewed, their_duration, &self.identity, now) {
            Decision::Wait => return Ok(false),
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
        conflict_is_false(self.api.replace(&self.name, &PostParams::default(), &lease).await)
    }
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("valid time")
    }

    #[test]
    fn decisions() {
        let d = Duration::from_secs(15);
        assert_eq!(decide(None, None, d, "me", at(0)), Decision::Take);
        assert_eq!(decide(Some(""), Some(at(0)), d, "me", at(1)), Decision::Take);
        assert_eq!(decide(Some("me"), Some(at(0)), d, "me", at(100)), Decision::Renew);
        assert_eq!(decide(Some("other"), Some(at(0)), d, "me", at(10)), Decision::Wait);
        assert_eq!(decide(Some("other"), Some(at(0)), d, "me", at(15)), Decision::Wait, "not before it has run out");
        assert_eq!(decide(Some("other"), Some(at(0)), d, "me", at(16)), Decision::Take);
        assert_eq!(decide(Some("other"), None, d, "me", at(0)), Decision::Take);
    }
}
