//! A token bucket, the shape of the per-sender limits of Slack, Twilio and ntfy: `burst`
//! requests back to back, then one per `every`. Uses Tokio's clock so paused-time tests can
//! drive it.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// One [`Bucket`] per sender key (a webhook, a visitor, an account), all with the same limit.
#[derive(Debug)]
pub(crate) struct Buckets {
    /// `(burst, every)` for buckets created from now on.
    limit: (u32, Duration),
    by_key: HashMap<String, Bucket>,
}

impl Buckets {
    pub(crate) fn new((burst, every): (u32, Duration)) -> Self {
        Buckets {
            limit: (burst, every),
            by_key: HashMap::new(),
        }
    }

    /// Replaces the limit; every sender starts again with a full bucket.
    pub(crate) fn set_limit(&mut self, burst: u32, every: Duration) {
        self.limit = (burst, every);
        self.by_key.clear();
    }

    /// Takes one token from `key`'s bucket, or says how long until one is back.
    pub(crate) fn take(&mut self, key: &str) -> Result<(), Duration> {
        let (burst, every) = self.limit;
        self.by_key
            .entry(key.to_owned())
            .or_insert_with(|| Bucket::new(burst, every))
            .take()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    burst: u32,
    every: Duration,
    /// Tokens left at `at` (fractional while refilling).
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(crate) fn new(burst: u32, every: Duration) -> Self {
        Bucket {
            burst,
            every,
            tokens: f64::from(burst),
            at: Instant::now(),
        }
    }

    /// Takes one token, or says how long until one is back.
    pub(crate) fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() / self.every.as_secs_f64().max(1e-9);
        self.tokens = (self.tokens + refill).min(f64::from(self.burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.every.mul_f64(1.0 - self.tokens))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn burst_then_steady() {
        let mut b = Bucket::new(2, Duration::from_millis(200));
        assert!(b.take().is_ok());
        assert!(b.take().is_ok());
        let wait = b.take().unwrap_err();
        assert!(wait > Duration::from_millis(100) && wait <= Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(210)).await;
        assert!(b.take().is_ok());
        assert!(b.take().is_err());
    }
}
