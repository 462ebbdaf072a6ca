//! The boundary DTOs: a notification and an event envelope as received over HTTP (or any other
//! way in), validated into the model with errors that name the field.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::model::{Attachment, Notification, Priority, Severity, new_id};

/// Longest accepted `message`: far above every provider's limit (splitting and truncation
/// happen per channel), but bounded so one request cannot fill the store.
pub const MESSAGE_MAX: usize = 64 * 1024;
pub const KEY_MAX: usize = 255;

/// A bad input: which field, a stable code, a message for humans.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InputError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

impl InputError {
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        InputError {
            field: field.into(),
            code,
            message: message.into(),
        }
    }
}

/// PRODUCT.md §5, as JSON.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationRequest {
    /// Required (an `Option` so that its absence gets a clear error naming it); blank only
    /// when there are attachments.
    #[schema(required = true, nullable = false)]
    pub message: Option<String>,
    pub title: Option<String>,
    pub severity: Option<Severity>,
    pub priority: Option<Priority>,
    pub event_type: Option<String>,
    pub source: Option<String>,
    pub user_id: Option<String>,
    #[schema(min_items = 1)]
    pub channels: Option<Vec<String>>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[schema(value_type = Option<Object>)]
    pub data: Option<Map<String, Value>>,
    #[schema(min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    pub dedup_key: Option<String>,
    pub dedup_window: Option<DurationInput>,
    pub send_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

/// `"5m"` or a number of seconds.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum DurationInput {
    Text(String),
    Secs(u64),
}

/// Deserialises `T` from JSON, naming the path of the first bad field (`title`,
/// `attachments[0].filename`) and the unknown field when there is one.
pub fn from_json<T: serde::de::DeserializeOwned>(
    value: Value,
    prefix: &str,
) -> Result<T, InputError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let (field, code) = if let Some(rest) = inner.strip_prefix("unknown field `") {
            (
                rest.split('`').next().unwrap_or("").to_string(),
                "unknown_field",
            )
        } else if let Some(rest) = inner.strip_prefix("missing field `") {
            (
                rest.split('`').next().unwrap_or("").to_string(),
                "missing_field",
            )
        } else {
            (
                if path == "." { String::new() } else { path },
                "invalid_field",
            )
        };
        let field = match (prefix.is_empty(), field.is_empty()) {
            (true, _) => field,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{field}"),
        };
        InputError {
            field,
            code,
            message: inner,
        }
    })
}

impl NotificationRequest {
    /// Validates and builds the notification. `prefix` qualifies field names in a batch
    /// (`[3].message`).
    pub fn into_notification(
        self,
        default_source: &str,
        prefix: &str,
    ) -> Result<Notification, InputError> {
        let f = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}.{name}")
            }
        };
        let message = self.message.ok_or_else(|| {
            InputError::new(f("message"), "missing_field", "`message` is required")
        })?;
        if message.trim().is_empty() && self.attachments.is_empty() {
            return Err(InputError::new(
                f("message"),
                "invalid_field",
                "`message` must not be empty",
            ));
        }
        if message.len() > MESSAGE_MAX {
            return Err(InputError::new(
                f("message"),
                "too_long",
                format!(
                    "`message` is {} bytes; the limit is {MESSAGE_MAX}",
                    message.len()
                ),
            ));
        }
        for (name, v) in [
            ("idempotency_key", &self.idempotency_key),
            ("dedup_key", &self.dedup_key),
        ] {
            if let Some(v) = v
                && (v.is_empty() || v.chars().count() > KEY_MAX)
            {
                return Err(InputError::new(
                    f(name),
                    "invalid_field",
                    format!("`{name}` must be 1–{KEY_MAX} characters"),
                ));
            }
        }
        if let Some(chs) = &self.channels
            && chs.is_empty()
        {
            return Err(InputError::new(
                f("channels"),
                "invalid_field",
                "`channels` must name at least one channel (or be left out)",
            ));
        }
        let dedup_window_secs = match self.dedup_window {
            None => None,
            Some(DurationInput::Secs(s)) => Some(s),
            Some(DurationInput::Text(t)) => Some(
                crate::duration::parse(&t)
                    .map_err(|m| InputError::new(f("dedup_window"), "invalid_field", m))?
                    .as_secs(),
            ),
        };
        if let (Some(s), Some(e)) = (self.send_at, self.expires_at)
            && e <= s
        {
            return Err(InputError::new(
                f("expires_at"),
                "invalid_field",
                "`expires_at` must be after `send_at`",
            ));
        }
        for (i, a) in self.attachments.iter().enumerate() {
            if a.filename.is_empty() {
                return Err(InputError::new(
                    f(&format!("attachments[{i}].filename")),
                    "invalid_field",
                    "filename must not be empty",
                ));
            }
            if base64::engine::general_purpose::STANDARD
                .decode(&a.content_base64)
                .is_err()
            {
                return Err(InputError::new(
                    f(&format!("attachments[{i}].content_base64")),
                    "invalid_field",
                    "not valid base64",
                ));
            }
        }
        let severity = self.severity.unwrap_or_default();
        Ok(Notification {
            id: new_id(),
            created_at: Utc::now(),
            message,
            title: self.title,
            severity,
            priority: self.priority.unwrap_or(severity.default_priority()),
            event_type: self.event_type,
            source: self.source.unwrap_or_else(|| default_source.to_string()),
            user_id: self.user_id,
            channels: self.channels,
            tags: self.tags,
            data: self.data.unwrap_or_default(),
            idempotency_key: self.idempotency_key,
            dedup_key: self.dedup_key,
            dedup_window_secs,
            send_at: self.send_at,
            expires_at: self.expires_at,
            attachments: self.attachments,
        })
    }
}

/// PostgreSQL cannot keep U+0000 in a text column, so no text field of a notification that has
/// a column may hold one — on every store alike, so that what one store accepts every store
/// does, and a sender gets a 400 naming the field instead of a 503 to retry forever. (`data`,
/// tags and attachments may: they are kept as JSON, where it is escaped.) An event's title and
/// message are made from its `data`.
pub fn check_nul(n: &Notification, prefix: &str) -> Result<(), InputError> {
    // An event's own fields first: its title and message are made of them and its `data`.
    let fields = [
        ("event_type", n.event_type.as_ref()),
        ("source", Some(&n.source)),
        ("user_id", n.user_id.as_ref()),
        ("idempotency_key", n.idempotency_key.as_ref()),
        ("dedup_key", n.dedup_key.as_ref()),
        ("title", n.title.as_ref()),
        ("message", Some(&n.message)),
    ];
    for (name, v) in fields {
        if v.is_some_and(|v| v.contains('\0')) {
            let field = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}.{name}")
            };
            return Err(InputError::new(
                field,
                "invalid_field",
                format!("`{name}` contains a NUL character (U+0000), which cannot be stored"),
            ));
        }
    }
    Ok(())
}

/// One JSON object that is either a notification (it has `message`) or an event envelope (§3),
/// for tools that take both (`klaxon route --explain`).
pub fn notification_or_envelope(
    value: Value,
    default_source: &str,
) -> Result<Notification, InputError> {
    if value.get("message").is_some() || value.get("event_type").is_none() {
        from_json::<NotificationRequest>(value, "")?.into_notification(default_source, "")
    } else {
        from_json::<Envelope>(value, "")?.into_notification(default_source, "")
    }
}

/// The event envelope of PRODUCT.md §3.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub event_type: String,
    pub source: Option<String>,
    pub timestamp: Option<DateTime<Utc>>,
    pub severity: Option<Severity>,
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// Extensions beyond §3 that senders often want; same meaning as on a notification.
    pub channels: Option<Vec<String>>,
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub user_id: Option<String>,
}

impl Envelope {
    pub fn into_notification(
        self,
        default_source: &str,
        prefix: &str,
    ) -> Result<Notification, InputError> {
        if self.event_type.trim().is_empty() {
            let field = if prefix.is_empty() {
                "event_type".into()
            } else {
                format!("{prefix}.event_type")
            };
            return Err(InputError::new(
                field,
                "invalid_field",
                "`event_type` must not be empty",
            ));
        }
        let severity = self
            .severity
            .unwrap_or_else(|| crate::event::default_severity(&self.event_type));
        let (title, message) = crate::event::summarise(&self.event_type, &self.data);
        let mut n = Notification::new(message);
        n.title = Some(title);
        n.severity = severity;
        n.priority = severity.default_priority();
        n.created_at = self.timestamp.unwrap_or_else(Utc::now);
        n.source = self.source.unwrap_or_else(|| default_source.to_string());
        n.user_id = self.user_id.or_else(|| {
            self.data
                .get("user_id")
                .and_then(|v| v.as_str().map(str::to_string))
        });
        n.event_type = Some(self.event_type);
        n.data = self.data;
        n.channels = self.channels;
        n.idempotency_key = self.idempotency_key;
        n.tags = self.tags;
        check_nul(&n, prefix).map_err(|mut e| {
            // An event has no title or message of its own: they are made from its `data`.
            if e.field.ends_with("title") || e.field.ends_with("message") {
                e.field = if prefix.is_empty() {
                    "data".into()
                } else {
                    format!("{prefix}.data")
                };
                e.message = "`data` has a NUL character (U+0000) in a text the title or message \
                             is made of, which cannot be stored"
                    .into();
            }
            e
        })?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Notification, InputError> {
        from_json::<NotificationRequest>(v, "")?.into_notification("api", "")
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(parse(json!({"title": "x"})).unwrap_err().field, "message");
        assert_eq!(parse(json!({"message": 5})).unwrap_err().field, "message");
        assert_eq!(
            parse(json!({"message": "m", "severity": "loud"}))
                .unwrap_err()
                .field,
            "severity"
        );
        let e = parse(json!({"message": "m", "titel": "x"})).unwrap_err();
        assert_eq!((e.field.as_str(), e.code), ("titel", "unknown_field"));
        let e = parse(json!({"message": "m", "attachments": [{"filename": "a", "content_type": "t", "content_base64": "%%"}]})).unwrap_err();
        assert_eq!(e.field, "attachments[0].content_base64");
        let e = parse(json!({"message": "m", "send_at": "tomorrow"})).unwrap_err();
        assert_eq!(e.field, "send_at");
        let e = from_json::<NotificationRequest>(json!({"message": 1}), "[4]").unwrap_err();
        assert_eq!(e.field, "[4].message");
    }

    #[test]
    fn all_fields_accepted() {
        let n = parse(json!({
            "message": "m", "title": "t", "severity": "error", "event_type": "order.error",
            "source": "bot", "user_id": "u1", "channels": ["a"], "tags": ["x"], "data": {"k": 1},
            "idempotency_key": "i", "dedup_key": "d", "dedup_window": "5m",
            "send_at": "2030-01-01T00:00:00Z", "expires_at": "2030-01-02T00:00:00Z",
            "attachments": [{"filename": "a.txt", "content_type": "text/plain", "content_base64": "aGk="}]
        }))
        .unwrap();
        assert_eq!(n.priority, Priority::High);
        assert_eq!(n.dedup_window_secs, Some(300));
        assert_eq!(n.attachments.len(), 1);
    }

    #[test]
    fn a_nul_in_a_stored_text_field_is_refused_naming_it() {
        let n = parse(json!({"message": "a\0b", "data": {"k": "\0"}})).unwrap();
        let e = check_nul(&n, "").unwrap_err();
        assert_eq!((e.field.as_str(), e.code), ("message", "invalid_field"));
        let n = parse(json!({"message": "m", "source": "\0"})).unwrap();
        assert_eq!(check_nul(&n, "[2]").unwrap_err().field, "[2].source");
        let n = parse(json!({"message": "m", "tags": ["\0"], "data": {"\0": 1}})).unwrap();
        assert!(check_nul(&n, "").is_ok(), "kept as JSON, escaped");
    }

    #[test]
    fn notification_or_envelope_by_shape() {
        let n =
            notification_or_envelope(json!({"message": "m", "event_type": "x"}), "api").unwrap();
        assert_eq!(
            (n.message.as_str(), n.event_type.as_deref()),
            ("m", Some("x"))
        );
        let n = notification_or_envelope(
            json!({"event_type": "risk.breach", "data": {"message": "dd"}}),
            "api",
        )
        .unwrap();
        assert_eq!(n.event_type.as_deref(), Some("risk.breach"));
        let e = notification_or_envelope(json!({"title": "t"}), "api").unwrap_err();
        assert_eq!(e.field, "message");
    }

    #[test]
    fn envelope_becomes_notification() {
        let env: Envelope = from_json(json!({
            "event_type": "signal.generated", "source": "strategy_engine",
            "data": {"strategy_name": "break-and-enter", "action": "BUY", "symbol": "MNQI", "price": 23488.75, "comment": "EXIT_50", "metadata": {}}
        }), "").unwrap();
        let n = env.into_notification("api", "").unwrap();
        assert_eq!(n.title.as_deref(), Some("BUY MNQI @ 23,488.75"));
        assert_eq!(n.source, "strategy_engine");
        assert_eq!(n.event_type.as_deref(), Some("signal.generated"));
    }
}
