//! Channel health checks: each channel's cheapest call that proves credentials and route
//! (`Channel::check`), at start-up and every `delivery.health_interval`. The result is shown in
//! `/status` and `/api/v1/channels` and exported as a gauge; it never stops deliveries — the
//! breaker decides that from real sends.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use klaxon_channels::{Health, HealthState};
use klaxon_core::secret::redact;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::registry::{Guard, Registry, Runtime};
use crate::events::{Event, Events};

/// A check that has not answered by then has failed: a provider that slow will time sends out.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HealthView {
    pub state: HealthState,
    pub detail: String,
    pub checked_at: DateTime<Utc>,
}

pub async fn run(
    registry: Arc<Registry>,
    events: Events,
    every: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = check_all(&registry) => {}
        }
        // The dashboard's cards show the new results at once.
        if events.watched() {
            for rt in registry.all() {
                events.publish(Event::Channel(rt.view(Utc::now())));
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Checks every channel at once and records the results.
pub async fn check_all(registry: &Registry) {
    let mut set = JoinSet::new();
    for rt in registry.all() {
        let rt = rt.clone();
        set.spawn(async move {
            let view = check_one(&rt).await;
            record(&rt, view);
        });
    }
    while set.join_next().await.is_some() {}
}

async fn check_one(rt: &Runtime) -> HealthView {
    let health = tokio::time::timeout(CHECK_TIMEOUT, rt.channel.check())
        .await
        .unwrap_or_else(|_| {
            Health::failed(format!("no answer within {} s", CHECK_TIMEOUT.as_secs()))
        });
    HealthView {
        state: health.state,
        // Channels scrub their own errors; this is the last line of defence for the page.
        detail: redact(&health.detail, &rt.channel.secrets()),
        checked_at: Utc::now(),
    }
}

fn record(rt: &Runtime, view: HealthView) {
    let name = rt.spec.name.clone();
    let gauge = match view.state {
        HealthState::Ok => 1.0,
        HealthState::Failed => 0.0,
        HealthState::NotCheckable => -1.0,
    };
    metrics::gauge!("klaxon_channel_health", "channel" => name.clone()).set(gauge);
    let before = rt.health.guard().as_ref().map(|h| h.state);
    if view.state == HealthState::Failed && before != Some(HealthState::Failed) {
        tracing::warn!(channel = %name, detail = %view.detail, "channel health check failed");
    } else if view.state == HealthState::Ok && before == Some(HealthState::Failed) {
        tracing::info!(channel = %name, "channel health check passes again");
    }
    *rt.health.guard() = Some(view);
}
