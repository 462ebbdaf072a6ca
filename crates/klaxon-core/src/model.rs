//! The notification model of PRODUCT.md §1 and §5: what is stored, routed and delivered.
//!
//! These are internal types. The HTTP boundary has its own request DTO (`crate::input`), so the
//! wire format can grow without reshaping the engine.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How bad the thing that happened is. Ordered: `debug < info < warning < error < critical`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    Default,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Debug,
    #[default]
    Info,
    Warning,
    Error,
    Critical,
}

/// How urgently it must go out. When absent it follows severity (§1).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    Normal,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Debug,
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// The priority a notification gets when it names none (PRODUCT.md §1).
    pub fn default_priority(self) -> Priority {
        match self {
            Severity::Critical => Priority::Critical,
            Severity::Error => Priority::High,
            Severity::Warning | Severity::Info => Priority::Normal,
            Severity::Debug => Priority::Low,
        }
    }
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// Rank stored in the queue so one index orders claims: higher goes first.
    pub fn rank(self) -> i64 {
        match self {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
            Priority::Critical => 3,
        }
    }
}

macro_rules! string_enum {
    ($ty:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        impl FromStr for $ty {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.to_ascii_lowercase().as_str() {
                    $($text => Ok($ty::$variant),)+
                    _ => Err(UnknownValue {
                        value: s.to_string(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A string that is not one of an enum's spellings; says which ones are.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{value}` is not one of {}", expected.join(", "))]
pub struct UnknownValue {
    pub value: String,
    pub expected: &'static [&'static str],
}

string_enum!(Severity { Debug = "debug", Info = "info", Warning = "warning", Error = "error", Critical = "critical" });
string_enum!(Priority { Low = "low", Normal = "normal", High = "high", Critical = "critical" });
string_enum!(DeliveryStatus {
    Pending = "pending",
    Sending = "sending",
    Delivered = "delivered",
    Retrying = "retrying",
    Dead = "dead",
    Expired = "expired",
    Suppressed = "suppressed",
    Aggregated = "aggregated",
});

/// Where a delivery is in its life (PRODUCT.md §1):
/// `pending → sending → delivered`, or `→ retrying → … → dead`; `expired` past `expires_at`;
/// `suppressed` is set by dedup, `aggregated` when a digest took the delivery's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Sending,
    Delivered,
    Retrying,
    Dead,
    Expired,
    Suppressed,
    Aggregated,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 8] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Sending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Retrying,
        DeliveryStatus::Dead,
        DeliveryStatus::Expired,
        DeliveryStatus::Suppressed,
        DeliveryStatus::Aggregated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Expired => "expired",
            DeliveryStatus::Suppressed => "suppressed",
            DeliveryStatus::Aggregated => "aggregated",
        }
    }

    /// Final states never change again (except an operator's dead-letter retry).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            DeliveryStatus::Pending | DeliveryStatus::Sending | DeliveryStatus::Retrying
        )
    }
}

/// A file to send along where the channel supports files (PRODUCT.md §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attachment {
    #[schema(min_length = 1)]
    pub filename: String,
    pub content_type: String,
    /// Kept as base64 exactly as received: the store keeps the notification as JSON anyway.
    pub content_base64: String,
}

/// A validated notification, ready to be stored. Every field of PRODUCT.md §5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    /// UUIDv7: time-ordered, so inserts stay fast (STACK.md) and ids sort by arrival.
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub message: String,
    pub title: Option<String>,
    pub severity: Severity,
    pub priority: Priority,
    pub event_type: Option<String>,
    pub source: String,
    pub user_id: Option<String>,
    /// Explicit channel names; `None` lets routes decide.
    pub channels: Option<Vec<String>>,
    pub tags: Vec<String>,
    #[schema(value_type = Object)]
    pub data: serde_json::Map<String, serde_json::Value>,
    pub idempotency_key: Option<String>,
    pub dedup_key: Option<String>,
    /// Seconds; kept for the dedup stage.
    pub dedup_window_secs: Option<u64>,
    pub send_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub attachments: Vec<Attachment>,
}

impl Notification {
    /// A notification with defaults for everything but the message; the library's builder
    /// starts here.
    pub fn new(message: impl Into<String>) -> Self {
        Notification {
            id: new_id(),
            created_at: Utc::now(),
            message: message.into(),
            title: None,
            severity: Severity::Info,
            priority: Priority::Normal,
            event_type: None,
            source: "api".into(),
            user_id: None,
            channels: None,
            tags: Vec::new(),
            data: serde_json::Map::new(),
            idempotency_key: None,
            dedup_key: None,
            dedup_window_secs: None,
            send_at: None,
            expires_at: None,
            attachments: Vec::new(),
        }
    }

    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets severity and, as §1 says, the priority that follows from it.
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self.priority = severity.default_priority();
        self
    }

    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    pub fn channel(mut self, name: impl Into<String>) -> Self {
        self.channels.get_or_insert_with(Vec::new).push(name.into());
        self
    }

    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    pub fn data(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }

    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = Some(event_type.into());
        self
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Repeats of `key` inside the window (this one's, else its routes', else 5 minutes) are
    /// stored `suppressed`.
    pub fn dedup_key(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }

    /// Suppress repeats inside `window` (whole seconds); zero turns dedup off for this one,
    /// whatever its routes say.
    pub fn dedup_window(mut self, window: std::time::Duration) -> Self {
        self.dedup_window_secs = Some(window.as_secs());
        self
    }
}

/// A fresh time-ordered id.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// One notification to one channel target (a Telegram channel with three chats makes three
/// deliveries, so a retry never repeats a chat that already got the message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// Stable across retries: it is the `webhook-id` receivers deduplicate on.
    pub id: Uuid,
    pub notification_id: Uuid,
    pub channel: String,
    /// Provider-specific recipient within the channel (a chat id); `None` for single-target
    /// channels.
    pub target: Option<String>,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Of those, the ones the provider answered 429 (they do not use up the retry budget).
    pub throttled: u32,
    pub not_before: DateTime<Utc>,
    pub last_error: Option<String>,
    pub provider_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The delivery this one replaces (it failed, and this channel is its fallback).
    #[serde(default)]
    pub fallback_of: Option<Uuid>,
    /// The channel this delivery's notification was handed to when it failed.
    #[serde(default)]
    pub fell_back_to: Option<String>,
    /// Attempts made before an operator's retry; only later ones use up the retry budget.
    #[serde(default)]
    pub budget_from: u32,
    /// The digest delivery this one was folded into (status `aggregated`), so the history
    /// leads from each original to what was actually sent.
    #[serde(default)]
    pub aggregated_into: Option<Uuid>,
}

/// The outcome of one attempt, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttemptOutcome {
    Delivered,
    Retry,
    Rejected,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Rejected => "rejected",
        }
    }
}

/// One try of one delivery: time, outcome, status code, error, latency (PRODUCT.md §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub delivery_id: Uuid,
    pub number: u32,
    pub started_at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_follows_severity() {
        assert_eq!(Severity::Critical.default_priority(), Priority::Critical);
        assert_eq!(Severity::Error.default_priority(), Priority::High);
        assert_eq!(Severity::Warning.default_priority(), Priority::Normal);
        assert_eq!(Severity::Info.default_priority(), Priority::Normal);
        assert_eq!(Severity::Debug.default_priority(), Priority::Low);
    }

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::Debug < Severity::Critical);
        assert_eq!("WARNING".parse::<Severity>().unwrap(), Severity::Warning);
        let err = "loud".parse::<Severity>().unwrap_err();
        assert!(
            err.to_string()
                .contains("debug, info, warning, error, critical")
        );
    }
}
