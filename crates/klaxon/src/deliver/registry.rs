//! The configured channels at run time: each with its circuit breaker, enable switch, pause and
//! counters. What `/status` and `/api/v1/channels` show comes from here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use klaxon_channels::Channel;
use klaxon_core::breaker::{Breaker, BreakerPolicy, BreakerState};
use klaxon_core::config::ChannelSpec;
use klaxon_core::limit::{self, LimitKey, Rate};
use klaxon_core::policy::WhenMuted;
use klaxon_store::ChannelState;
use serde::Serialize;

use super::health::HealthView;

/// Locks a mutex whether or not a panicking thread poisoned it: the state behind these locks is
/// counters and flags that stay meaningful, and the engine must keep running.
pub trait Guard<T> {
    fn guard(&self) -> std::sync::MutexGuard<'_, T>;
}

impl<T> Guard<T> for Mutex<T> {
    fn guard(&self) -> std::sync::MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One channel at run time.
pub struct Runtime {
    pub spec: ChannelSpec,
    pub channel: Arc<dyn Channel>,
    pub breaker: Mutex<Breaker>,
    /// What changes while running (switch, pause, last error and success): the store's own
    /// record, loaded at start and written back as it changes.
    pub state: Mutex<ChannelState>,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub throttled: AtomicU64,
    /// Deliveries of this channel the engine holds (waiting or sending).
    pub busy: std::sync::atomic::AtomicUsize,
    /// At most `cap` sends at once on this channel — three quarters of all send slots — so one
    /// slow provider cannot take every slot and hold up a critical alert elsewhere.
    pub slots: Arc<tokio::sync::Semaphore>,
    pub cap: usize,
    /// The last health check's result; `None` until the first has run.
    pub health: Mutex<Option<HealthView>>,
}

/// What a channel's state is, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelHealth {
    Ok,
    Error,
    Disabled,
    CircuitOpen,
    RateLimited,
}

/// A channel as `/status` and `/api/v1/channels` show it. No secrets: the provider part is
/// `describe()`d.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelView {
    pub name: String,
    pub kind: &'static str,
    pub destination: String,
    pub state: ChannelHealth,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub delivered: u64,
    pub failed: u64,
    pub retried: u64,
    pub rate_limited: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub paused_until: Option<DateTime<Utc>>,
    /// An operator's mute: non-critical deliveries are held (or suppressed) until then.
    pub muted_until: Option<DateTime<Utc>>,
    /// Configured quiet hours, e.g. `"22:00-07:00 Europe/Berlin"`.
    pub quiet_hours: Option<String>,
    /// When the quiet hours in force now end; `null` outside them.
    pub quiet_until: Option<DateTime<Utc>>,
    /// What a mute or quiet hours do to non-critical deliveries: `wait` or `suppress`.
    pub when_muted: WhenMuted,
    pub circuit: &'static str,
    /// Where this channel's notifications go when it fails.
    pub fallback: Vec<String>,
    pub health: Option<HealthView>,
}

impl Runtime {
    pub fn enabled(&self) -> bool {
        let s = self.state.guard();
        s.enabled.unwrap_or(self.spec.enabled)
    }

    /// Until when non-critical deliveries wait, if the channel is muted now.
    pub fn muted_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.state.guard().muted_until.filter(|t| *t > now)
    }

    /// Why and until when non-critical deliveries are held back now: an operator's mute first,
    /// then quiet hours. A mute that ends inside quiet hours is followed by them when the
    /// delivery is looked at again.
    pub fn hold(&self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, String)> {
        if let Some(until) = self.muted_until(now) {
            return Some((until, format!("channel muted until {}", until.to_rfc3339())));
        }
        let quiet = self.spec.policy.quiet_hours.as_ref()?;
        let until = quiet.quiet_until(now)?;
        Some((until, format!("quiet hours {}", quiet.describe())))
    }

    /// The per-user limit keys a send to `user` carries on this channel (none without a user).
    pub fn user_keys(&self, user: Option<&str>) -> Vec<LimitKey> {
        let Some(user) = user else {
            return Vec::new();
        };
        let rates = self.spec.policy.per_user_rates(&self.spec.provider);
        limit::user_keys(&self.spec.name, user, rates)
    }

    /// The channel-wide limit key every send carries: a configured `rate_limit`, and the handle
    /// a 429 pauses.
    pub fn channel_key(&self) -> LimitKey {
        LimitKey {
            key: format!("channel:{}", self.spec.name),
            // Without a configured limit the key only carries pauses: a rate no one reaches.
            rate: self.spec.rate_limit.unwrap_or(Rate::new(
                1_000_000,
                Duration::from_secs(1),
                1_000_000,
            )),
        }
    }

    pub fn view(&self, now: DateTime<Utc>) -> ChannelView {
        let s = self.state.guard().clone();
        let breaker = self.breaker.guard().state();
        let enabled = s.enabled.unwrap_or(self.spec.enabled);
        let paused = s.paused_until.filter(|t| *t > now);
        let health = self.health.guard().clone();
        // The newest word on the channel decides: a failed send, or a failed health check
        // (a bad token shows before the first alert needs it), unless a send worked since.
        let failed_check = health
            .as_ref()
            .filter(|h| h.state == klaxon_channels::HealthState::Failed)
            .map(|h| h.checked_at);
        let last_failure = s.last_error_at.max(failed_check);
        let failing = match (last_failure, s.last_success_at) {
            (Some(e), Some(ok)) => e > ok,
            (Some(_), None) => true,
            _ => false,
        };
        let state = if !enabled {
            ChannelHealth::Disabled
        } else if matches!(breaker, BreakerState::Open { .. } | BreakerState::HalfOpen) {
            ChannelHealth::CircuitOpen
        } else if paused.is_some() {
            ChannelHealth::RateLimited
        } else if failing {
            ChannelHealth::Error
        } else {
            ChannelHealth::Ok
        };
        ChannelView {
            name: self.spec.name.clone(),
            kind: self.channel.kind(),
            destination: klaxon_core::channel_url::describe(&self.spec.provider),
            state,
            enabled,
            disabled_reason: if enabled {
                None
            } else {
                s.disabled_reason.clone()
            },
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            rate_limited: self.throttled.load(Ordering::Relaxed),
            last_error: s.last_error,
            last_error_at: s.last_error_at,
            last_success_at: s.last_success_at,
            paused_until: paused,
            muted_until: s.muted_until.filter(|t| *t > now),
            quiet_hours: self.spec.policy.quiet_hours.as_ref().map(|q| q.describe()),
            quiet_until: self
                .spec
                .policy
                .quiet_hours
                .as_ref()
                .and_then(|q| q.quiet_until(now)),
            when_muted: self.spec.policy.when_muted,
            circuit: match breaker {
                BreakerState::Closed => "closed",
                BreakerState::Open { .. } => "open",
                BreakerState::HalfOpen => "half_open",
            },
            fallback: self.spec.fallback.clone(),
            health,
        }
    }
}

pub struct Registry {
    channels: BTreeMap<String, Arc<Runtime>>,
}

impl Registry {
    pub fn new(
        specs: &[ChannelSpec],
        http: &reqwest::Client,
        breaker: &BreakerPolicy,
        persisted: &[ChannelState],
        concurrency: usize,
        templates: &Arc<klaxon_core::template::Templates>,
    ) -> Self {
        let cap = (concurrency * 3 / 4).max(1);
        let channels = specs
            .iter()
            .map(|spec| {
                let saved = persisted.iter().find(|s| s.channel == spec.name);
                let state = saved.cloned().unwrap_or_else(|| ChannelState {
                    channel: spec.name.clone(),
                    ..ChannelState::default()
                });
                let rt = Runtime {
                    spec: spec.clone(),
                    channel: klaxon_channels::build_with(spec, http, templates.clone()),
                    breaker: Mutex::new(Breaker::new(breaker.clone())),
                    state: Mutex::new(state),
                    delivered: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    retried: AtomicU64::new(0),
                    throttled: AtomicU64::new(0),
                    busy: std::sync::atomic::AtomicUsize::new(0),
                    slots: Arc::new(tokio::sync::Semaphore::new(cap)),
                    cap,
                    health: Mutex::new(None),
                };
                (spec.name.clone(), Arc::new(rt))
            })
            .collect();
        Registry { channels }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Runtime>> {
        self.channels.get(name)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Runtime>> {
        self.channels.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.channels.keys().map(String::as_str).collect()
    }
}
