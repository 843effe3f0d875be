use std::sync::Mutex;
use std::time::{Duration, Instant};

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

    /// Waits until a token is available and takes it.
    pub async fn acquire(&self) {
        loop {
            let wait = self.try_take(Instant::now());
            match wait {
                None => return,
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Takes a token if one is available, otherwise says how long until one is.
    fn try_take(&self, now: Instant) -> Option<Duration> {
        // A poisoned lock only means another task panicked mid-update; the numbers are still usable.
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = *state;
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            None
        } else {
            *state = (tokens, now);
            Some(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }
}

/// Client-side limits per class of operation, no higher than the reference controller's defaults.
#[derive(Debug)]
pub struct RateLimits {
    /// RegisterTargets / DeregisterTargets.
    pub target_writes: TokenBucket,
    /// Describe* calls.
    pub describes: TokenBucket,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self { target_writes: TokenBucket::new(4.0, 20), describes: TokenBucket::new(50.0, 200) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let bucket = TokenBucket::new(4.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(bucket.try_take(start), None);
        }
        let wait = bucket.try_take(start).expect("burst is spent");
        assert!((wait.as_secs_f64() - 0.25).abs() < 1e-6, "{wait:?}");
        assert_eq!(bucket.try_take(start + Duration::from_millis(250)), None);
        assert!(bucket.try_take(start + Duration::from_millis(260)).is_some());
    }

    #[test]
    fn never_saves_more_than_burst() {
        let bucket = TokenBucket::new(100.0, 2);
        let later = Instant::now() + Duration::from_secs(3600);
        assert_eq!(bucket.try_take(later), None);
        assert_eq!(bucket.try_take(later), None);
        assert!(bucket.try_take(later).is_some());
    }
}
