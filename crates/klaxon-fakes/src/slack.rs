//! A fake Slack incoming-webhook endpoint (PROVIDERS.md §3).
//!
//! `POST /services/{T}/{B}/{token}`: the path must name a registered webhook (else 404
//! `no_service`); the body must be JSON (else 400 `invalid_payload`) with `text` or `blocks`
//! (else 400 `no_text`); Block Kit limits are checked in top-level blocks and in each legacy
//! attachment's blocks (else 400 `invalid_blocks`). Each webhook has a token bucket, 1 message/s
//! with a short burst, answering 429 with `Retry-After`. An archived channel answers 410
//! `channel_is_archived`. Success is `200 ok` as `text/plain`; every error is a plain-text word.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::bucket::Buckets;
use crate::fault::Intake;
use crate::server::{Provider, Server};
use crate::{ceil_secs, is_content_type, lock, status_code};

/// Registered at start: `{url}/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX`.
pub const DEFAULT_WEBHOOK: &str = "T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX";
/// PROVIDERS.md §3: 1 message/s per webhook, short bursts allowed. Slack does not publish the
/// burst; 3 is enough to show a client that ignores the rate gets 429s.
pub const DEFAULT_LIMIT: (u32, Duration) = (3, Duration::from_secs(1));
/// Block Kit limits (PROVIDERS.md §3 and Slack's Block Kit reference).
pub const MAX_BLOCKS: usize = 50;
pub const MAX_HEADER: usize = 150;
pub const MAX_SECTION: usize = 3000;
pub const MAX_FIELDS: usize = 10;
pub const MAX_FIELD: usize = 2000;

/// One accepted post.
#[derive(Clone, Debug)]
pub struct SlackMessage {
    /// The webhook path after `/services/`.
    pub webhook: String,
    pub body: Value,
    pub at: std::time::Instant,
}

#[derive(Debug)]
pub struct FakeSlack {
    shared: Arc<Shared>,
    server: Server,
}

#[derive(Debug)]
struct Shared {
    intake: Intake,
    state: Mutex<HookState>,
}

#[derive(Debug)]
struct HookState {
    webhooks: HashSet<String>,
    archived: HashSet<String>,
    /// Per webhook path.
    buckets: Buckets,
    /// The body of a successful answer: `ok`, unless a test plays a proxy that answers 200
    /// with something else.
    ok_body: String,
    messages: Vec<SlackMessage>,
    /// Status and body of every non-2xx answer.
    rejected: Vec<(u16, String)>,
}

impl FakeSlack {
    /// Starts on `127.0.0.1:0` with [`DEFAULT_WEBHOOK`] registered.
    ///
    /// # Panics
    /// If the loopback interface cannot be bound.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            intake: Intake::default(),
            state: Mutex::new(HookState {
                webhooks: HashSet::from([DEFAULT_WEBHOOK.to_owned()]),
                archived: HashSet::new(),
                buckets: Buckets::new(DEFAULT_LIMIT),
                ok_body: "ok".to_owned(),
                messages: Vec::new(),
                rejected: Vec::new(),
            }),
        });
        let server = Server::start_provider(&shared).await;
        Self { shared, server }
    }

    /// Base URL; webhooks live at `{url}/services/{T}/{B}/{token}`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    crate::lifecycle_methods!();

    pub fn add_webhook(&self, path: &str) {
        lock(&self.shared.state).webhooks.insert(path.to_owned());
    }

    /// The webhook's channel is archived: later posts answer 410 `channel_is_archived`.
    pub fn archive(&self, path: &str) {
        lock(&self.shared.state).archived.insert(path.to_owned());
    }

    /// Replaces the per-webhook bucket: `burst` back to back, then one per `every`.
    pub fn set_limit(&self, burst: u32, every: Duration) {
        lock(&self.shared.state).buckets.set_limit(burst, every);
    }

    /// Answers accepted posts with `body` instead of `ok` (a proxy or captive portal in the
    /// way), still recording them.
    pub fn answer_ok_with(&self, body: &str) {
        lock(&self.shared.state).ok_body = body.to_owned();
    }

    crate::recorded_methods!(SlackMessage, String);
}

impl Provider for Shared {
    /// JSON only: Slack has no uploads through incoming webhooks.
    const BODY_LIMIT: usize = 2 * 1024 * 1024;

    fn intake(&self) -> &Intake {
        &self.intake
    }

    fn serve(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
        let Some(path) = uri.path().strip_prefix("/services/") else {
            return self.reject(404, "no_service", None);
        };
        if method != Method::POST {
            return self.reject(405, "invalid_method", None);
        }
        {
            let mut state = lock(&self.state);
            if !state.webhooks.contains(path) {
                drop(state);
                return self.reject(404, "no_service", None);
            }
            if state.archived.contains(path) {
                drop(state);
                return self.reject(410, "channel_is_archived", None);
            }
            if let Err(wait) = state.buckets.take(path) {
                drop(state);
                return self.reject(429, "rate_limited", Some(wait));
            }
        }
        if !is_content_type(headers, "application/json") {
            return self.reject(400, "invalid_payload", None);
        }
        let Ok(json) = serde_json::from_slice::<Value>(body) else {
            return self.reject(400, "invalid_payload", None);
        };
        if let Err(word) = validate(&json) {
            return self.reject(400, word, None);
        }
        let mut state = lock(&self.state);
        state.messages.push(SlackMessage {
            webhook: path.to_owned(),
            body: json,
            at: std::time::Instant::now(),
        });
        let answer = state.ok_body.clone();
        drop(state);
        (
            status_code(200),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            answer,
        )
            .into_response()
    }

    /// An injected failure with Slack's word for that status; a 429 waits 1 s.
    fn injected(&self, code: u16) -> Response {
        let word = match code {
            400 => "invalid_payload",
            403 => "action_prohibited",
            404 => "channel_not_found",
            410 => "channel_is_archived",
            429 => "rate_limited",
            500 => "rollup_error",
            _ => "service_unavailable",
        };
        let wait = (code == 429).then_some(Duration::from_secs(1));
        self.reject(code, word, wait)
    }
}

impl Shared {
    fn reject(&self, code: u16, word: &str, retry_after: Option<Duration>) -> Response {
        self.intake.answered(code);
        lock(&self.state).rejected.push((code, word.to_owned()));
        let mut response = (
            status_code(code),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            word.to_owned(),
        )
            .into_response();
        if let Some(wait) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(ceil_secs(wait)));
        }
        response
    }
}

/// Slack's checks on a body; `Err` is the word Slack answers with.
fn validate(body: &Value) -> Result<(), &'static str> {
    let text = body.get("text").and_then(Value::as_str);
    let top = body.get("blocks");
    let attachments = body.get("attachments").and_then(Value::as_array);
    let has_attachment_content = attachments.is_some_and(|a| {
        a.iter()
            .any(|x| x.get("blocks").is_some() || x.get("text").is_some())
    });
    if text.is_none_or(|t| t.trim().is_empty()) && top.is_none() && !has_attachment_content {
        return Err("no_text");
    }
    if let Some(blocks) = top {
        check_blocks(blocks)?;
    }
    for a in attachments.into_iter().flatten() {
        if let Some(blocks) = a.get("blocks") {
            check_blocks(blocks)?;
        }
    }
    Ok(())
}

fn len(v: Option<&Value>) -> Option<usize> {
    v.and_then(Value::as_str).map(|s| s.chars().count())
}

fn check_blocks(blocks: &Value) -> Result<(), &'static str> {
    let blocks = blocks.as_array().ok_or("invalid_blocks")?;
    if blocks.len() > MAX_BLOCKS {
        return Err("invalid_blocks");
    }
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("header") => {
                let text = b.get("text").ok_or("invalid_blocks")?;
                if text.get("type").and_then(Value::as_str) != Some("plain_text") {
                    return Err("invalid_blocks");
                }
                if !len(text.get("text")).is_some_and(|n| (1..=MAX_HEADER).contains(&n)) {
                    return Err("invalid_blocks");
                }
            }
            Some("section") => {
                let text = b.get("text");
                let fields = b.get("fields").and_then(Value::as_array);
                if text.is_none() && fields.is_none() {
                    return Err("invalid_blocks");
                }
                if let Some(t) = text
                    && !len(t.get("text")).is_some_and(|n| (1..=MAX_SECTION).contains(&n))
                {
                    return Err("invalid_blocks");
                }
                if let Some(f) = fields {
                    if f.is_empty() || f.len() > MAX_FIELDS {
                        return Err("invalid_blocks");
                    }
                    if !f
                        .iter()
                        .all(|x| len(x.get("text")).is_some_and(|n| (1..=MAX_FIELD).contains(&n)))
                    {
                        return Err("invalid_blocks");
                    }
                }
            }
            Some("context") => {
                let elements = b
                    .get("elements")
                    .and_then(Value::as_array)
                    .ok_or("invalid_blocks")?;
                if elements.is_empty() || elements.len() > 10 {
                    return Err("invalid_blocks");
                }
            }
            Some("divider" | "image" | "actions" | "rich_text") => {}
            _ => return Err("invalid_blocks"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation_words() {
        assert_eq!(validate(&json!({})), Err("no_text"));
        assert_eq!(validate(&json!({"text": " "})), Err("no_text"));
        assert_eq!(validate(&json!({"text": "hi"})), Ok(()));
        let header = |t: &str| json!({"type": "header", "text": {"type": "plain_text", "text": t}});
        assert_eq!(validate(&json!({"blocks": [header("x")]})), Ok(()));
        assert_eq!(
            validate(&json!({"blocks": [header(&"x".repeat(151))]})),
            Err("invalid_blocks")
        );
        let many: Vec<Value> = (0..51).map(|_| header("x")).collect();
        assert_eq!(
            validate(&json!({"text": "t", "attachments": [{"blocks": many}]})),
            Err("invalid_blocks")
        );
        let section =
            json!({"type": "section", "text": {"type": "mrkdwn", "text": "y".repeat(3001)}});
        assert_eq!(
            validate(&json!({"blocks": [section]})),
            Err("invalid_blocks")
        );
    }
}
