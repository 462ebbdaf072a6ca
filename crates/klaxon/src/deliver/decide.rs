//! What follows from one attempt: the pure decision, kept apart from the engine's I/O so every
//! case is a table test.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use klaxon_core::model::{Attempt, AttemptOutcome, Delivery, DeliveryStatus};
use klaxon_core::retry::{RetryPolicy, mix};
use klaxon_core::verdict::Verdict;
use klaxon_store::Completion;

/// A 429 storm longer than this many throttled answers ends the delivery anyway: the provider
/// is not going to take it.
pub const MAX_THROTTLED: u32 = 50;

/// Side effects on the channel that the engine applies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Effects {
    /// Pause the whole channel for this long (a 429's `retry_after`).
    pub pause: Option<Duration>,
    /// The channel's health suffered (counts towards the circuit breaker).
    pub failure: bool,
    /// Disable the channel, with this reason (webhook 410, deleted Discord webhook).
    pub disable: Option<String>,
}

/// Turns a verdict into the stored outcome and the channel effects.
pub fn decide(
    d: &Delivery,
    verdict: &Verdict,
    policy: &RetryPolicy,
    started_at: DateTime<Utc>,
    latency: Duration,
    now: DateTime<Utc>,
) -> (Completion, Effects) {
    let number = d.attempts + 1;
    let mut effects = Effects::default();
    let attempt = |outcome, error: Option<String>| Attempt {
        delivery_id: d.id,
        number,
        started_at,
        outcome,
        status_code: verdict.status(),
        error,
        latency_ms: latency.as_millis() as u64,
    };
    let completion = match verdict {
        Verdict::Delivered { provider_id } => Completion {
            attempt: attempt(AttemptOutcome::Delivered, None),
            status: DeliveryStatus::Delivered,
            not_before: None,
            provider_id: provider_id.clone(),
            throttled: false,
            fallback: None,
        },
        Verdict::Retry {
            reason,
            after,
            throttled,
            ..
        } => {
            let throttled = *throttled;
            if throttled {
                effects.pause = Some(after.unwrap_or(Duration::from_secs(1)));
            } else {
                effects.failure = true;
            }
            // Only non-429 failures use up the retry budget.
            let failures = number
                .saturating_sub(d.budget_from)
                .saturating_sub(d.throttled + u32::from(throttled));
            let backoff = if throttled {
                Some(Duration::ZERO)
            } else {
                policy.delay(failures, mix(d.id.as_u128() as u64 ^ u64::from(number)))
            };
            let exhausted =
                failures > policy.retries || d.throttled + u32::from(throttled) > MAX_THROTTLED;
            match backoff.filter(|_| !exhausted) {
                Some(delay) => {
                    let wait = delay.max(after.unwrap_or_default());
                    Completion {
                        attempt: attempt(AttemptOutcome::Retry, Some(reason.clone())),
                        status: DeliveryStatus::Retrying,
                        not_before: Some(now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX)),
                        provider_id: None,
                        throttled,
                        fallback: None,
                    }
                }
                None => Completion {
                    attempt: attempt(
                        AttemptOutcome::Retry,
                        Some(format!("{reason} (gave up after {number} attempts)")),
                    ),
                    status: DeliveryStatus::Dead,
                    not_before: None,
                    provider_id: None,
                    throttled,
                    fallback: None,
                },
            }
        }
        Verdict::Reject {
            reason,
            disable_channel,
            ..
        } => {
            if *disable_channel {
                effects.disable = Some(reason.clone());
            }
            Completion {
                attempt: attempt(AttemptOutcome::Rejected, Some(reason.clone())),
                status: DeliveryStatus::Dead,
                not_before: None,
                provider_id: None,
                throttled: false,
                fallback: None,
            }
        }
    };
    (completion, effects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use klaxon_core::model::new_id;

    fn delivery(attempts: u32, throttled: u32) -> Delivery {
        let now = Utc::now();
        Delivery {
            id: new_id(),
            notification_id: new_id(),
            channel: "c".into(),
            target: None,
            status: DeliveryStatus::Sending,
            attempts,
            throttled,
            not_before: now,
            last_error: None,
            provider_id: None,
            created_at: now,
            updated_at: now,
            delivered_at: None,
            fallback_of: None,
            fell_back_to: None,
            aggregated_into: None,
            budget_from: 0,
        }
    }

    fn retry(status: u16, after: Option<u64>, throttled: bool) -> Verdict {
        Verdict::Retry {
            reason: format!("HTTP {status}"),
            status: Some(status),
            after: after.map(Duration::from_secs),
            throttled,
        }
    }

    fn no_jitter() -> RetryPolicy {
        RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn default_schedule_then_dead() {
        let now = Utc::now();
        let p = no_jitter();
        let mut waits = Vec::new();
        for attempts in 0..4 {
            let (c, e) = decide(
                &delivery(attempts, 0),
                &retry(503, None, false),
                &p,
                now,
                Duration::ZERO,
                now,
            );
            assert!(e.failure);
            assert_eq!(c.attempt.number, attempts + 1);
            waits.push((c.status, c.not_before.map(|t| (t - now).num_milliseconds())));
        }
        assert_eq!(
            waits,
            [
                (DeliveryStatus::Retrying, Some(1000)),
                (DeliveryStatus::Retrying, Some(2000)),
                (DeliveryStatus::Retrying, Some(4000)),
                (DeliveryStatus::Dead, None),
            ]
        );
    }

    #[test]
    fn retry_after_is_a_floor_and_429_does_not_use_the_budget() {
        let now = Utc::now();
        let p = no_jitter();
        let (c, e) = decide(
            &delivery(0, 0),
            &retry(503, Some(7), false),
            &p,
            now,
            Duration::ZERO,
            now,
        );
        assert_eq!((c.not_before.unwrap() - now).num_seconds(), 7);
        assert_eq!(e.pause, None);

        // Three real failures and many 429s: still retrying, at exactly retry_after.
        let (c, e) = decide(
            &delivery(12, 9),
            &retry(429, Some(30), true),
            &p,
            now,
            Duration::ZERO,
            now,
        );
        assert_eq!(c.status, DeliveryStatus::Retrying);
        assert!(c.throttled && !e.failure);
        assert_eq!(e.pause, Some(Duration::from_secs(30)));
        assert_eq!((c.not_before.unwrap() - now).num_seconds(), 30);

        let (c, _) = decide(
            &delivery(60, MAX_THROTTLED),
            &retry(429, Some(1), true),
            &p,
            now,
            Duration::ZERO,
            now,
        );
        assert_eq!(c.status, DeliveryStatus::Dead);
    }

    #[test]
    fn an_operator_retry_gets_a_fresh_budget() {
        let now = Utc::now();
        let mut d = delivery(4, 0);
        d.budget_from = 4;
        let (c, _) = decide(
            &d,
            &retry(503, None, false),
            &no_jitter(),
            now,
            Duration::ZERO,
            now,
        );
        assert_eq!(c.status, DeliveryStatus::Retrying);
        assert_eq!(c.attempt.number, 5);
        assert_eq!((c.not_before.unwrap() - now).num_milliseconds(), 1000);
    }

    #[test]
    fn reject_is_final_and_may_disable() {
        let now = Utc::now();
        let v = Verdict::Reject {
            reason: "HTTP 410".into(),
            status: Some(410),
            disable_channel: true,
        };
        let (c, e) = decide(&delivery(0, 0), &v, &no_jitter(), now, Duration::ZERO, now);
        assert_eq!(c.status, DeliveryStatus::Dead);
        assert_eq!(c.attempt.status_code, Some(410));
        assert_eq!(e.disable.as_deref(), Some("HTTP 410"));
        assert!(
            !e.failure,
            "one bad message says nothing about the channel's health"
        );
    }

    #[test]
    fn delivered_records_provider_id() {
        let now = Utc::now();
        let v = Verdict::Delivered {
            provider_id: Some("42".into()),
        };
        let (c, e) = decide(
            &delivery(2, 0),
            &v,
            &no_jitter(),
            now,
            Duration::from_millis(15),
            now,
        );
        assert_eq!(
            (
                c.status,
                c.provider_id.as_deref(),
                c.attempt.number,
                c.attempt.latency_ms
            ),
            (DeliveryStatus::Delivered, Some("42"), 3, 15)
        );
        assert_eq!(e, Effects::default());
    }
}
