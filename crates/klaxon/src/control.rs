//! Operator controls: switch a channel on or off, mute it, send it a test, retry dead
//! letters. The HTTP API exposes them and the CLI calls the API, so there is one
//! implementation of each; every change to a channel is persisted in the store and survives a
//! restart.

use std::time::Duration;

use chrono::{DateTime, Utc};
use klaxon_core::model::{DeliveryStatus, Notification, Severity};
use klaxon_store::{ChannelPatch, NotificationRecord, StoreError};
use uuid::Uuid;

use crate::app::Shared;
use crate::deliver::registry::{ChannelView, Guard};
use crate::ingest::IngestError;

/// The event type of a "Send test" notification: it passes a mute, as the operator asked for it.
pub const TEST_EVENT: &str = "klaxon.test";

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no channel named `{0}`")]
    NoChannel(String),
    #[error("channel `{0}` is disabled; enable it first")]
    Disabled(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// A change an operator asks for; `None` leaves a setting as it is.
#[derive(Debug, Default)]
pub struct ChannelChange {
    pub enabled: Option<bool>,
    /// `Some(None)` unmutes.
    pub muted_until: Option<Option<DateTime<Utc>>>,
}

/// Applies `change` to the running channel and persists it.
pub async fn change_channel(
    s: &Shared,
    name: &str,
    change: ChannelChange,
) -> Result<ChannelView, ControlError> {
    let rt = s
        .registry
        .get(name)
        .ok_or_else(|| ControlError::NoChannel(name.to_string()))?;
    let mut patch = ChannelPatch::default();
    if let Some(on) = change.enabled {
        patch.enabled = Some(Some(on));
        // Switched on again: the provider's old reason and the open circuit are history.
        patch.disabled_reason = Some(None);
    }
    patch.muted_until = change.muted_until;
    let was_muted_until = rt.muted_until(Utc::now());
    let saved = s.store.patch_channel(name, patch).await?;
    // Deliveries held by a mute wait for its end; lifted or shortened, they go sooner.
    if let (Some(old), Some(new)) = (was_muted_until, change.muted_until) {
        let new = new.unwrap_or_else(Utc::now);
        if new < old {
            // Deferrals stored the mute's end to the millisecond.
            let old = DateTime::from_timestamp_millis(old.timestamp_millis()).unwrap_or(old);
            s.store.reschedule(name, old, new).await?;
        }
    }
    {
        let mut st = rt.state.guard();
        st.enabled = saved.enabled;
        st.disabled_reason = saved.disabled_reason.clone();
        st.muted_until = saved.muted_until;
    }
    if change.enabled == Some(true) {
        rt.breaker.guard().on_success();
    }
    tracing::info!(channel = %name, enabled = ?change.enabled, muted_until = ?change.muted_until, "channel changed by an operator");
    s.engine.wake();
    let view = rt.view(Utc::now());
    s.events
        .publish(crate::events::Event::Channel(view.clone()));
    Ok(view)
}

/// What a test send came to.
#[derive(Debug)]
pub struct TestOutcome {
    pub record: NotificationRecord,
    /// Every delivery reached a final state within the wait.
    pub finished: bool,
    pub delivered: bool,
}

/// Sends a test notification through the channel — through the store and the engine, like any
/// other, so it is rate-limited and recorded — and waits for its outcome up to `wait`.
pub async fn test_channel(
    s: &Shared,
    name: &str,
    wait: Duration,
) -> Result<TestOutcome, ControlError> {
    let rt = s
        .registry
        .get(name)
        .ok_or_else(|| ControlError::NoChannel(name.to_string()))?;
    if !rt.enabled() {
        return Err(ControlError::Disabled(name.to_string()));
    }
    let mut n = Notification::new(format!(
        "If you can read this, channel `{name}` works. Sent from the Klaxon dashboard or CLI."
    ))
    .title("Klaxon test")
    .severity(Severity::Info)
    .source("klaxon")
    .event_type(TEST_EVENT)
    .channel(name);
    n.data.insert("channel".into(), name.into());
    let inserted = s.ingest.submit(n).await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(record) = s.store.get(inserted.notification_id).await? {
            let finished = record
                .deliveries
                .iter()
                .all(|d| d.delivery.status.is_final());
            if finished || tokio::time::Instant::now() >= deadline {
                let delivered = finished
                    && record
                        .deliveries
                        .iter()
                        .all(|d| d.delivery.status == DeliveryStatus::Delivered);
                return Ok(TestOutcome {
                    record,
                    finished,
                    delivered,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Puts dead deliveries back in the queue (`None`: all of them) and wakes the engine.
pub async fn retry_dead(s: &Shared, ids: Option<Vec<Uuid>>) -> Result<Vec<Uuid>, ControlError> {
    let done = s.store.requeue(ids).await?;
    if !done.is_empty() {
        tracing::info!(
            count = done.len(),
            "dead deliveries requeued by an operator"
        );
        s.engine.wake();
    }
    Ok(done)
}
