use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::AwsError;
use super::write_queue::{Turn, WriteQueue};
use crate::fence::Fence;

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate_per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: rate_per_second.max(0.001), burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Takes the next token, waiting until it is due. Each caller reserves its token on arrival
    /// (the bucket goes into debt), so waiters are served in arrival order and each wakes once; a
    /// caller cancelled while it waits leaves its token unused, which only slows the others.
    pub async fn acquire(&self) {
        if let Some(wait) = self.reserve(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Reserves the next token: `None` when it is available now, otherwise how long until it is due.
    fn reserve(&self, now: Instant) -> Option<Duration> {
        // A poisoned lock only means another task panicked mid-update; the numbers are still usable.
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = *state;
        let refilled = now.saturating_duration_since(last).as_secs_f64() * self.rate;
        let tokens = (tokens + refilled).min(self.burst) - 1.0;
        *state = (tokens, now.max(last));
        (tokens < 0.0).then(|| Duration::from_secs_f64(-tokens / self.rate))
    }
}

/// The gate every AWS write passes: its turn at the write budget (by urgency), then the leader
/// fence, checked after the wait so that a replica deposed while it waited never sends.
#[derive(Debug)]
pub struct WriteLimit {
    queue: WriteQueue,
    fence: Arc<Fence>,
}

impl WriteLimit {
    pub fn new(queue: WriteQueue, fence: Arc<Fence>) -> Self {
        Self { queue, fence }
    }

    /// Call right before sending write `op`; an error means: do not send it (`Fenced`: not the
    /// leader; `Superseded`: its inputs changed while it waited).
    pub async fn acquire(&self, op: &'static str, turn: &Turn) -> Result<(), AwsError> {
        self.queue.take(turn).await.map_err(|_| AwsError::Superseded { op })?;
        if self.fence.allows_writes() { Ok(()) } else { Err(AwsError::Fenced { op }) }
    }
}

/// A rate and a burst, written `RATE:BURST` (`4:20`: 4 calls a second, 20 saved up at most).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    /// The reference controller's defaults: writes 4/s burst 20, Describe* 50/s burst 200.
    pub const WRITES: Rate = Rate { per_second: 4.0, burst: 20 };
    pub const DESCRIBES: Rate = Rate { per_second: 50.0, burst: 200 };
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.per_second, self.burst)
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    /// Refuses what would stall the agent (a zero or negative rate, no burst) or is not a number.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not RATE:BURST, e.g. 4:20 (RATE calls a second > 0, BURST a whole number >= 1)");
        let (rate, burst) = s.split_once(':').ok_or_else(bad)?;
        let per_second: f64 = rate.trim().parse().map_err(|_| bad())?;
        let burst: u32 = burst.trim().parse().map_err(|_| bad())?;
        if !per_second.is_finite() || per_second <= 0.0 || burst == 0 {
            return Err(bad());
        }
        Ok(Self { per_second, burst })
    }
}

/// Client-side limits per class of operation; by default the reference controller's.
#[derive(Debug)]
pub struct RateLimits {
    /// Every write: RegisterTargets / DeregisterTargets, Authorize/RevokeSecurityGroupIngress,
    /// CreateTags / DeleteTags.
    pub target_writes: WriteLimit,
    /// Describe* calls.
    pub describes: TokenBucket,
}

impl RateLimits {
    /// Limits whose writes also wait on `fence` (leader election).
    pub fn fenced(fence: Arc<Fence>) -> Self {
        Self::new(fence, Rate::WRITES, Rate::DESCRIBES)
    }

    pub fn new(fence: Arc<Fence>, writes: Rate, describes: Rate) -> Self {
        Self {
            target_writes: WriteLimit::new(WriteQueue::new(writes.per_second, writes.burst), fence),
            describes: TokenBucket::new(describes.per_second, describes.burst),
        }
    }
}

impl Default for RateLimits {
    /// Without leader election: the fence is always open.
    fn default() -> Self {
        Self::fenced(Arc::new(Fence::open()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::write_queue::Urgency;

    #[test]
    fn rates_parse_and_refuse_what_would_stall() {
        assert_eq!("4:20".parse(), Ok(Rate::WRITES));
        assert_eq!("0.5:1".parse(), Ok(Rate { per_second: 0.5, burst: 1 }));
        assert_eq!(Rate::DESCRIBES.to_string().parse(), Ok(Rate::DESCRIBES));
        for bad in ["", "4", "4:", ":20", "0:20", "-1:20", "4:0", "4:-1", "NaN:20", "inf:20", "4:2.5", "a:b"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn burst_then_rate_in_arrival_order() {
        let bucket = TokenBucket::new(4.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(bucket.reserve(start), None);
        }
        let due = |wait: Option<Duration>| wait.map(|w| (w.as_secs_f64() * 1000.0).round());
        assert_eq!(due(bucket.reserve(start)), Some(250.0), "burst spent: the next token in 250 ms");
        assert_eq!(due(bucket.reserve(start)), Some(500.0), "the one after waits behind it");
        assert_eq!(
            due(bucket.reserve(start + Duration::from_millis(600))),
            Some(150.0),
            "debt is paid at the rate: the fourth token is due at 750 ms"
        );
    }

    #[tokio::test]
    async fn a_closed_fence_refuses_writes_after_the_token() {
        let fence = Arc::new(Fence::closed());
        let limits = RateLimits::fenced(fence.clone());
        let turn = Turn::new(Urgency::Add);
        assert!(matches!(
            limits.target_writes.acquire("RegisterTargets", &turn).await,
            Err(AwsError::Fenced { op: "RegisterTargets" })
        ));
        fence.open_until(Instant::now() + Duration::from_secs(60));
        assert!(limits.target_writes.acquire("RegisterTargets", &turn).await.is_ok());
        fence.revoke();
        assert!(limits.target_writes.acquire("CreateTags", &turn).await.is_err());
        assert!(RateLimits::default().target_writes.acquire("DeregisterTargets", &turn).await.is_ok());
    }

    #[test]
    fn never_saves_more_than_burst() {
        let bucket = TokenBucket::new(100.0, 2);
        let later = Instant::now() + Duration::from_secs(3600);
        assert_eq!(bucket.reserve(later), None);
        assert_eq!(bucket.reserve(later), None);
        assert!(bucket.reserve(later).is_some());
    }
}
