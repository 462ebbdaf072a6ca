//! What a claimed delivery may do before its send ([`gate`], [`fresh_copy`]) and what follows
//! from one attempt ([`decide`]): pure decisions, kept apart from the engine's I/O so every
//! case is a table test.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use klaxon_core::Severity;
use klaxon_core::model::{Attempt, AttemptOutcome, Delivery, DeliveryStatus, Notification};
use klaxon_core::policy::{self, Freshness, Judgement, WhenMuted};
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

/// What becomes of a claimed delivery before any send.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// On to the rate limiter and the send.
    Go,
    /// Back to the store until then (a mute or quiet hours).
    Wait(DateTime<Utc>),
    /// Ended without an attempt: `suppressed` or `expired`, with the reason.
    End(DeliveryStatus, String),
}

/// Critical alerts and an operator's test pass every mute and quiet hour (PRODUCT.md §1).
pub fn passes_mute(n: &Notification) -> bool {
    n.severity == Severity::Critical || n.event_type.as_deref() == Some(crate::control::TEST_EVENT)
}

/// Decides a claimed delivery's way before its send. Freshness first: a signal too old to act
/// on is not worth waiting out the night for. `hold` is the channel's mute or quiet hours now
/// ([`super::registry::Runtime::hold`]).
pub fn gate(
    n: &Notification,
    freshness: Option<Freshness>,
    hold: Option<(DateTime<Utc>, String)>,
    when_muted: WhenMuted,
    now: DateTime<Utc>,
) -> Gate {
    if let Some(Judgement::Expire(reason)) = freshness.map(|f| f.judge(n.created_at, now)) {
        return Gate::End(DeliveryStatus::Expired, reason);
    }
    match hold {
        Some((until, why)) if !passes_mute(n) => match when_muted {
            WhenMuted::Wait => Gate::Wait(until),
            WhenMuted::Suppress => Gate::End(DeliveryStatus::Suppressed, why),
        },
        _ => Gate::Go,
    }
}

/// The notification as it goes out at `now`: itself while fresh, a copy marked STALE once past
/// its `max_age` (so every channel shows it, whatever its renderer), or the reason it expired.
pub fn fresh_copy(
    n: &Arc<Notification>,
    freshness: Option<Freshness>,
    now: DateTime<Utc>,
) -> Result<Arc<Notification>, String> {
    match freshness.map(|f| f.judge(n.created_at, now)) {
        None | Some(Judgement::Fresh) => Ok(n.clone()),
        Some(Judgement::Stale { age, max_age }) => {
            Ok(Arc::new(policy::mark_stale(n, age, max_age)))
        }
        Some(Judgement::Expire(reason)) => Err(reason),
    }
}

/// Turns a verdict into the stored outcome and the channel effects. `probe`: the attempt was
/// the half-open circuit's probe.
pub fn decide(
    d: &Delivery,
    verdict: &Verdict,
    policy: &RetryPolicy,
    started_at: DateTime<Utc>,
    latency: Duration,
    now: DateTime<Utc>,
    probe: bool,
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
            let throttled_429 = *throttled;
            if throttled_429 {
                effects.pause = Some(after.unwrap_or(Duration::from_secs(1)));
            } else {
                effects.failure = true;
            }
            // Neither a 429 nor a failed circuit probe uses up the retry budget: the first is
            // the provider asking to wait, the second says the outage goes on — the circuit
            // already spaces the probes, so a long outage cannot burn the one alert probed.
            let throttled = throttled_429 || probe;
            let failures = number
                .saturating_sub(d.budget_from)
                .saturating_sub(d.throttled + u32::from(throttled));
            let seed = mix(d.id.as_u128() as u64 ^ u64::from(number));
            let backoff = if throttled_429 {
                Some(Duration::ZERO)
            } else if probe {
                // A probe spares the budget, so it may be a first attempt (nothing counted yet)
                // or come with `retries = 0`: it still waits like a first retry.
                Some(policy.delay(failures.max(1), seed).unwrap_or(policy.base))
            } else {
                policy.delay(failures, seed)
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
                false,
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
    fn failed_probe_spares_the_budget_but_still_counts_for_the_circuit() {
        let now = Utc::now();
        let p = no_jitter();
        // Three failures so far: a fourth ordinary one spends the budget (1 + 3 retries)…
        let (c, _) = decide(
            &delivery(3, 0),
            &retry(503, None, false),
            &p,
            now,
            Duration::ZERO,
            now,
            false,
        );
        assert_eq!(c.status, DeliveryStatus::Dead);
        // …but as the circuit's probe it only says the outage goes on.
        let (c, e) = decide(
            &delivery(3, 0),
            &retry(503, None, false),
            &p,
            now,
            Duration::ZERO,
            now,
            true,
        );
        assert_eq!(c.status, DeliveryStatus::Retrying);
        assert!(c.throttled, "counted apart from the budget");
        assert!(e.failure, "the breaker hears of it");
        assert_eq!(e.pause, None, "no channel pause: that is for 429s");
        // A first attempt that happens to be the probe retries too.
        let (c, _) = decide(
            &delivery(0, 0),
            &retry(503, None, false),
            &p,
            now,
            Duration::ZERO,
            now,
            true,
        );
        assert_eq!(c.status, DeliveryStatus::Retrying);
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
            false,
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
            false,
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
            false,
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
            false,
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
        let (c, e) = decide(
            &delivery(0, 0),
            &v,
            &no_jitter(),
            now,
            Duration::ZERO,
            now,
            false,
        );
        assert_eq!(c.status, DeliveryStatus::Dead);
        assert_eq!(c.attempt.status_code, Some(410));
        assert_eq!(e.disable.as_deref(), Some("HTTP 410"));
        assert!(
            !e.failure,
            "one bad message says nothing about the channel's health"
        );
    }

    #[test]
    fn gate_table() {
        let now: DateTime<Utc> = "2026-05-01T23:00:00Z".parse().unwrap();
        let morning: DateTime<Utc> = "2026-05-02T07:00:00Z".parse().unwrap();
        let quiet = Some((morning, "quiet hours 22:00-07:00 UTC".to_string()));
        let signal = |mins: i64, severity| {
            let mut n = Notification::new("BUY MNQ")
                .event_type("signal.generated")
                .severity(severity);
            n.created_at = now - TimeDelta::minutes(mins);
            n
        };
        let mark = Freshness::for_event(&[], Some("signal.generated"));
        let expire = mark.map(|f| Freshness {
            when_stale: policy::WhenStale::Expire,
            ..f
        });
        let info = Severity::Info;
        let crit = Severity::Critical;
        let suppressed = Gate::End(
            DeliveryStatus::Suppressed,
            "quiet hours 22:00-07:00 UTC".into(),
        );
        let cases = [
            (signal(0, info), mark, None, WhenMuted::Wait, Gate::Go),
            (
                signal(0, info),
                mark,
                quiet.clone(),
                WhenMuted::Wait,
                Gate::Wait(morning),
            ),
            (
                signal(0, info),
                mark,
                quiet.clone(),
                WhenMuted::Suppress,
                suppressed,
            ),
            (
                signal(0, crit),
                mark,
                quiet.clone(),
                WhenMuted::Suppress,
                Gate::Go,
            ),
            // Stale but marked: still goes (the mark is made at send time).
            (signal(10, info), mark, None, WhenMuted::Wait, Gate::Go),
            (
                signal(10, crit),
                expire,
                quiet.clone(),
                WhenMuted::Wait,
                Gate::End(
                    DeliveryStatus::Expired,
                    "older than max_age 2m (age 10m)".into(),
                ),
            ),
            (
                Notification::new("t").event_type(crate::control::TEST_EVENT),
                None,
                quiet,
                WhenMuted::Wait,
                Gate::Go,
            ),
        ];
        for (i, (n, f, hold, when, want)) in cases.into_iter().enumerate() {
            assert_eq!(gate(&n, f, hold, when, now), want, "case {i}");
        }
    }

    #[test]
    fn fresh_copy_marks_only_stale_ones() {
        let now = Utc::now();
        let mut n = Notification::new("BUY")
            .event_type("signal.generated")
            .title("BUY MNQ");
        let f = Freshness::for_event(&[], n.event_type.as_deref());
        let fresh = Arc::new(n.clone());
        assert!(Arc::ptr_eq(&fresh_copy(&fresh, f, now).unwrap(), &fresh));
        n.created_at = now - TimeDelta::seconds(603);
        let late = fresh_copy(&Arc::new(n.clone()), f, now).unwrap();
        assert_eq!(
            late.title.as_deref(),
            Some("⏰ STALE (10m 3s late) · BUY MNQ")
        );
        let expire = f.map(|f| Freshness {
            when_stale: policy::WhenStale::Expire,
            ..f
        });
        assert_eq!(
            fresh_copy(&Arc::new(n), expire, now).unwrap_err(),
            "older than max_age 2m (age 10m 3s)"
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
            false,
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
