//! The live event bus: what the engine and the operator controls just did, for whoever is
//! watching (the dashboard's server-sent-event stream, `GET /api/v1/events/stream`).
//!
//! Invariants:
//! - Publishing never waits and never fails: a `tokio::sync::broadcast` channel drops the
//!   oldest events for a receiver that falls behind, and that receiver is told how many it
//!   missed (the stream sends `event: lagged`). Nobody watching costs one atomic load.
//! - Events carry no secrets: channels appear as their redacted `ChannelView`.

use chrono::{DateTime, Utc};
use klaxon_core::model::{DeliveryStatus, Severity};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::deliver::registry::ChannelView;

/// Events kept for a slow receiver before it starts to lose the oldest: a few seconds of a
/// busy engine. A dashboard that falls further behind reloads rather than replays.
pub const CAPACITY: usize = 4096;

/// How much of a message a delivery event carries: a table row's worth.
pub const SUMMARY_CHARS: usize = 200;

/// One thing that happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// An attempt was made and accounted: its outcome.
    Delivery(DeliveryEvent),
    /// A channel changed (operator switch, mute, or its state after an attempt).
    Channel(ChannelView),
    /// A notification was committed to the store.
    Accepted(AcceptedEvent),
}

impl Event {
    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Delivery(_) => "delivery",
            Event::Channel(_) => "channel",
            Event::Accepted(_) => "accepted",
        }
    }
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryEvent {
    pub delivery_id: Uuid,
    pub notification_id: Uuid,
    pub channel: String,
    /// The recipient within the channel (a chat id), when the channel has several.
    pub target: Option<String>,
    /// What the delivery is now: `delivered`, `retrying`, `dead`, …
    pub status: DeliveryStatus,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub error: Option<String>,
    /// How long the provider took to answer this attempt.
    pub latency_ms: u64,
    /// From the notification's acceptance to this outcome: what the latency chart shows.
    pub accept_to_outcome_ms: u64,
    pub title: Option<String>,
    /// The start of the message (at most [`SUMMARY_CHARS`]), for the live list and its search.
    pub summary: String,
    pub severity: Severity,
    pub at: DateTime<Utc>,
}

/// A notification just accepted.
#[derive(Debug, Clone, Serialize)]
pub struct AcceptedEvent {
    pub notification_id: Uuid,
    pub deliveries: usize,
    pub at: DateTime<Utc>,
}

/// The bus; cheap to clone, every clone publishes to the same receivers.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    /// Cancelled when the server stops taking requests: open streams end, so a graceful
    /// shutdown does not wait forever for a dashboard left open.
    closing: CancellationToken,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Self {
        Events {
            tx: broadcast::channel(CAPACITY).0,
            closing: CancellationToken::new(),
        }
    }

    /// Sends `event` to every current receiver; nothing happens when there is none.
    pub fn publish(&self, event: Event) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(event);
        }
    }

    /// Whether anyone is listening (to skip building an event nobody reads).
    pub fn watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Ends every open stream (the server is stopping).
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Resolves once [`Events::close`] was called.
    pub fn closing(&self) -> CancellationToken {
        self.closing.clone()
    }
}
