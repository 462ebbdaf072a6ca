//! A token bucket, the shape of the per-sender limits of Slack, Twilio and ntfy: `burst`
//! requests back to back, then one per `every`. Uses Tokio's clock so paused-time tests can
//! drive it.

use std::time::Duration;

use tokio::time::Instant;

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
