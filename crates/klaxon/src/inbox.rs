//! The inbox table (PostgreSQL, PRODUCT.md §2): a trading backend `INSERT`s a notification or
//! an event envelope into `klaxon_inbox` inside its own transaction; this poller turns committed
//! rows into notifications exactly once. Each round takes rows with `FOR UPDATE SKIP LOCKED`
//! and, in one transaction, inserts their notifications (routed by the same plan as the API)
//! and deletes them, so neither a crash nor a second replica can lose or double a row.
//!
//! The insert trigger's `NOTIFY` wakes the poller; a slow poll covers a missed wake-up. A row
//! that cannot become a notification keeps its reason in `error` and is never taken again.

use std::sync::Arc;
use std::time::Duration;

use klaxon_core::input::{Envelope, NotificationRequest, from_json};
use klaxon_store::{NewEntry, StoreError};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::app::Shared;
use crate::ingest::Ingest;

/// Rows taken in one transaction.
const BATCH: usize = 500;
/// Looked at this often without a wake-up (a `NOTIFY` lost while the listener reconnected).
const SAFETY_POLL: Duration = Duration::from_secs(5);
/// Source of inbox notifications that name none.
pub const SOURCE: &str = "inbox";

/// One payload as the API would take it: with `message` a notification (as
/// `POST /api/v1/notifications`), without one an event envelope (as `POST /api/v1/events`).
/// Errors name the field, prefixed `payload`.
pub fn plan(ingest: &Ingest, payload: Value) -> Result<NewEntry, String> {
    let Some(obj) = payload.as_object() else {
        return Err("payload: expected a JSON object (a notification or an event envelope)".into());
    };
    let n = if obj.contains_key("message") {
        from_json::<NotificationRequest>(payload, "payload")
            .and_then(|r| r.into_notification(SOURCE, "payload"))
    } else {
        from_json::<Envelope>(payload, "payload")
            .and_then(|e| e.into_notification(SOURCE, "payload"))
    };
    n.and_then(|n| ingest.plan(n, "payload"))
        .map_err(|e| e.to_string())
}

/// Takes one round of rows; returns how many were taken.
pub async fn round(shared: &Shared) -> Result<usize, StoreError> {
    let ingest = shared.ingest.clone();
    let plan = move |v: Value| plan(&ingest, v);
    let r = shared.store.take_inbox(BATCH, &plan).await?;
    for (id, reason) in &r.rejected {
        metrics::counter!("klaxon_ingest_rejected_total", "source" => SOURCE, "reason" => "invalid_payload")
            .increment(1);
        tracing::warn!(inbox_id = id, %reason, "inbox row cannot become a notification; kept with its error");
    }
    shared
        .ingest
        .accepted(r.inserted.iter().map(|(src, i)| (src.clone(), i)));
    if !r.inserted.is_empty() {
        // Rows may join digest groups; the inbox is not a hot path, so no need to know.
        shared.ingest.wake_groups();
    }
    Ok(r.taken)
}

/// Polls the inbox until `stop`: at once when `wake` fires, else every `SAFETY_POLL`.
pub async fn run(shared: Arc<Shared>, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        match round(&shared).await {
            // A full round: more may be waiting.
            Ok(n) if n >= BATCH && !stop.is_cancelled() => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "taking inbox rows failed; trying again"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(SAFETY_POLL) => {}
        }
    }
}
