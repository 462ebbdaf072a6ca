//! The per-channel circuit breaker: after `threshold` consecutive failures the channel opens
//! for `cooldown`, then lets one probe through (half-open); a success closes it, a failure opens
//! it again. Pure: the engine passes the time in.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerPolicy {
    /// Consecutive failed attempts that open the circuit.
    pub threshold: u32,
    /// How long it stays open before a probe.
    #[serde(with = "crate::duration")]
    pub cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            threshold: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Open until the given time.
    Open {
        until: Duration,
    },
    /// One probe is in flight; others wait for its result.
    HalfOpen,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    failures: u32,
    state: BreakerState,
    /// When the circuit last opened; fallback (a later stage) acts when it stays open long.
    opened_at: Option<Duration>,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Breaker {
            policy,
            failures: 0,
            state: BreakerState::Closed,
            opened_at: None,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn opened_at(&self) -> Option<Duration> {
        self.opened_at
    }

    /// May a send go now? Moves Open → HalfOpen when the cool-down is over; the caller that
    /// gets `true` in that moment is the probe.
    pub fn allow(&mut self, now: Duration) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => false,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } => false,
        }
    }

    /// When sends may be tried again, if the circuit is not closed.
    pub fn blocked_until(&self) -> Option<Duration> {
        match self.state {
            BreakerState::Open { until } => Some(until),
            BreakerState::HalfOpen => None,
            BreakerState::Closed => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.state == BreakerState::Closed
    }

    pub fn on_success(&mut self) {
        self.failures = 0;
        self.state = BreakerState::Closed;
        self.opened_at = None;
    }

    /// The probe this breaker let through was not sent after all (deferred, shutting down):
    /// the circuit goes back to open-and-due, so the next caller probes instead of the channel
    /// waiting forever for a result that never comes.
    pub fn abandon_probe(&mut self, now: Duration) {
        if self.state == BreakerState::HalfOpen {
            self.state = BreakerState::Open { until: now };
        }
    }

    /// Counts a failure that says something about the channel's health (timeouts, 5xx, refused
    /// connections) and returns true when this failure opened the circuit.
    pub fn on_failure(&mut self, now: Duration) -> bool {
        self.failures += 1;
        let open = match self.state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => self.failures >= self.policy.threshold,
            BreakerState::Open { .. } => false,
        };
        if open {
            self.state = BreakerState::Open {
                until: now + self.policy.cooldown,
            };
            self.opened_at.get_or_insert(now);
        }
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_and_closes() {
        let s = Duration::from_secs;
        let mut b = Breaker::new(BreakerPolicy {
            threshold: 3,
            cooldown: s(30),
        });
        assert!(!b.on_failure(s(1)));
        assert!(!b.on_failure(s(2)));
        assert!(b.on_failure(s(3)));
        assert!(!b.allow(s(10)));
        assert_eq!(b.blocked_until(), Some(s(33)));
        assert!(b.allow(s(33)), "first caller after cool-down probes");
        assert!(!b.allow(s(33)), "others wait for the probe");
        assert!(b.on_failure(s(34)), "failed probe reopens");
        assert_eq!(b.opened_at(), Some(s(3)), "open since the first opening");
        assert!(b.allow(s(64)));
        b.abandon_probe(s(64));
        assert!(b.allow(s(64)), "an unsent probe hands the turn on");
        b.on_success();
        assert!(b.is_closed());
        assert!(b.allow(s(65)));
    }
}
