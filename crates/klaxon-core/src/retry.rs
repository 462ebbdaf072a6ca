//! The retry schedule: exponential backoff with jitter. Pure; the engine turns the delay into a
//! delivery's `not_before`, so no task ever sleeps through a backoff.

use std::time::Duration;

use serde::Deserialize;

/// Default 3 retries at 1 s, 2 s, 4 s: what our users' existing bots do (issue #2).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Retries after the first attempt; `0` means one attempt only.
    pub retries: u32,
    /// Delay before the first retry.
    #[serde(with = "crate::duration")]
    pub base: Duration,
    /// Each further retry waits `factor` times longer.
    pub factor: f64,
    /// No single wait exceeds this.
    #[serde(with = "crate::duration")]
    pub cap: Duration,
    /// Fraction of the delay that is randomised, spreading retries of a burst apart.
    /// `0.2` gives delays in `[0.8·d, 1.2·d]`.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            base: Duration::from_secs(1),
            factor: 2.0,
            cap: Duration::from_secs(300),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Total attempts a delivery gets.
    pub fn max_attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// The delay before retry `n` (1-based: the wait after the n-th failed attempt), or `None`
    /// when the attempts are used up. `seed` picks the jitter: the engine passes a hash of the
    /// delivery id and attempt, so a burst of failures spreads out, and a test can predict it.
    pub fn delay(&self, failed_attempts: u32, seed: u64) -> Option<Duration> {
        if failed_attempts == 0 || failed_attempts > self.retries {
            return None;
        }
        let exp = self.factor.powi(failed_attempts as i32 - 1);
        let nominal = (self.base.as_secs_f64() * exp).min(self.cap.as_secs_f64());
        // Map the seed to [-1, 1) and scale by the jitter fraction.
        let unit = (seed % 1_000_000) as f64 / 500_000.0 - 1.0;
        let jittered = nominal * (1.0 + self.jitter.clamp(0.0, 1.0) * unit);
        Some(Duration::from_secs_f64(
            jittered.clamp(0.0, self.cap.as_secs_f64()),
        ))
    }
}

/// A cheap, well-mixed 64-bit hash (SplitMix64 finaliser) for jitter seeds.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_1_2_4_then_dead() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(p.max_attempts(), 4);
        assert_eq!(p.delay(1, 0), Some(Duration::from_secs(1)));
        assert_eq!(p.delay(2, 0), Some(Duration::from_secs(2)));
        assert_eq!(p.delay(3, 0), Some(Duration::from_secs(4)));
        assert_eq!(p.delay(4, 0), None);
    }

    #[test]
    fn jitter_stays_in_band_and_cap_holds() {
        let p = RetryPolicy {
            retries: 20,
            ..RetryPolicy::default()
        };
        for seed in 0..1000u64 {
            let d = p.delay(2, mix(seed)).unwrap().as_secs_f64();
            assert!((1.6..=2.4).contains(&d), "{d}");
            assert!(p.delay(20, mix(seed)).unwrap() <= p.cap);
        }
    }
}
