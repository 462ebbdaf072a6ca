//! A fake ntfy server (PROVIDERS.md §8; error codes from ntfy's `server/errors.go`).
//!
//! Publishing: `POST /` with JSON (`topic` required, else 400 40017 / 40009), or `POST`/`PUT
//! /{topic}` with the body as the message and `Title`, `Priority`, `Tags`, `Click`,
//! `Markdown`, `Filename`, `Message` headers (also their `X-` forms; RFC 2047 `=?UTF-8?B?…?=`
//! values are decoded as ntfy does). Topics are 1–64 of `[A-Za-z0-9_-]` (else 400 40009);
//! priorities 1–5 or min/low/default/high/max/urgent (else 400 40007). With credentials
//! configured, a request without them is 403 40301 and wrong ones 401 40101. Each visitor
//! (credential, else anonymous) has a token bucket — ntfy.sh's default burst 60 then one per
//! 5 s — answering 429 42901 without `Retry-After`, as ntfy does.
//!
//! A message over 4096 bytes (ntfy's default `message-size-limit`, body or JSON) is turned into an
//! attachment `attachment.txt`, as real ntfy does, so a test sees it in
//! [`NtfyMessage::attachment`]; a file (a `Filename` header or a non-UTF-8 body) is recorded
//! with its bytes; one over 15 MB is refused with 413 41301. `GET /v1/health` answers
//! `{"healthy":true}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::bucket::Buckets;
use crate::fault::Intake;
use crate::server::{Provider, Server};
use crate::{fnv1a, lock, reason_phrase, status_code};

/// ntfy.sh's visitor limit (PROVIDERS.md §8 [3P]): a burst of 60, then one per 5 s.
pub const DEFAULT_LIMIT: (u32, Duration) = (60, Duration::from_secs(5));
/// ntfy's default `message-size-limit`.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// ntfy's default `attachment-file-size-limit` (15M).
pub const MAX_ATTACHMENT_BYTES: usize = 15 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq)]
pub struct NtfyAttachment {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// One published message, as ntfy understood it.
#[derive(Clone, Debug)]
pub struct NtfyMessage {
    pub id: String,
    /// `POST` or `PUT`.
    pub method: String,
    /// Whether it came as JSON to `/`.
    pub json: bool,
    pub topic: String,
    pub title: Option<String>,
    pub message: String,
    /// 1–5; 3 when not given.
    pub priority: u8,
    pub tags: Vec<String>,
    pub click: Option<String>,
    pub markdown: bool,
    pub attachment: Option<NtfyAttachment>,
    /// Every header, names in lower case (values as sent, before RFC 2047 decoding).
    pub headers: Vec<(String, String)>,
}

/// Credentials the fake requires.
#[derive(Clone, Debug)]
enum Auth {
    Token(String),
    Basic(String, String),
}

#[derive(Debug)]
pub struct FakeNtfy {
    shared: Arc<Shared>,
    server: Server,
}

#[derive(Debug)]
struct Shared {
    intake: Intake,
    next_id: AtomicU64,
    state: Mutex<NtfyState>,
}

#[derive(Debug)]
struct NtfyState {
    auth: Option<Auth>,
    healthy: bool,
    buckets: Buckets,
    messages: Vec<NtfyMessage>,
    rejected: Vec<(u16, Value)>,
}

impl FakeNtfy {
    /// Starts an open server (no credentials needed) on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If the loopback interface cannot be bound.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            intake: Intake::default(),
            next_id: AtomicU64::new(1),
            state: Mutex::new(NtfyState {
                auth: None,
                healthy: true,
                buckets: Buckets::new(DEFAULT_LIMIT),
                messages: Vec::new(),
                rejected: Vec::new(),
            }),
        });
        let server = Server::start_provider(&shared).await;
        Self { shared, server }
    }

    /// The server URL; topics live at `{url}/{topic}`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    crate::lifecycle_methods!();

    /// From now on only `Authorization: Bearer {token}` may publish.
    pub fn require_token(&self, token: &str) {
        lock(&self.shared.state).auth = Some(Auth::Token(token.to_owned()));
    }

    /// From now on only HTTP Basic `user:pass` may publish.
    pub fn require_basic(&self, user: &str, pass: &str) {
        lock(&self.shared.state).auth = Some(Auth::Basic(user.to_owned(), pass.to_owned()));
    }

    /// What `/v1/health` reports.
    pub fn set_healthy(&self, healthy: bool) {
        lock(&self.shared.state).healthy = healthy;
    }

    /// Replaces the per-visitor bucket: `burst` back to back, then one per `every`.
    pub fn set_limit(&self, burst: u32, every: Duration) {
        lock(&self.shared.state).buckets.set_limit(burst, every);
    }

    crate::recorded_methods!(NtfyMessage, Value);
}

/// ntfy's `{code, http, error, link}`.
fn error_body(status: u16, code: u32, error: &str) -> Value {
    json!({
        "code": code,
        "http": status,
        "error": error,
        "link": "https://ntfy.sh/docs/publish/",
    })
}

fn valid_topic(t: &str) -> bool {
    (1..=64).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Decodes an RFC 2047 `=?UTF-8?B?…?=` word; other values as they are.
fn decode_header(v: &str) -> String {
    let inner = v
        .strip_prefix("=?UTF-8?B?")
        .or_else(|| v.strip_prefix("=?utf-8?b?"))
        .and_then(|r| r.strip_suffix("?="));
    match inner
        .and_then(|b| BASE64.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
    {
        Some(text) => text,
        None => v.to_owned(),
    }
}

/// The first of `names` present, decoded.
fn header_any(headers: &HeaderMap, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| headers.get(*n))
        .and_then(|v| v.to_str().ok())
        .map(decode_header)
}

fn parse_priority(v: &str) -> Option<u8> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "min" => Some(1),
        "2" | "low" => Some(2),
        "" | "3" | "default" => Some(3),
        "4" | "high" => Some(4),
        "5" | "max" | "urgent" => Some(5),
        _ => None,
    }
}

fn is_yes(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "yes" | "true")
}

/// A publish before the checks that need state.
struct Publish {
    json: bool,
    topic: String,
    title: Option<String>,
    message: String,
    priority: u8,
    tags: Vec<String>,
    click: Option<String>,
    markdown: bool,
    attachment: Option<NtfyAttachment>,
}

type Rejection = (u16, u32, &'static str);

const TOPIC_INVALID: Rejection = (400, 40009, "invalid request: topic invalid");
const PRIORITY_INVALID: Rejection = (400, 40007, "invalid priority parameter");

fn parse_json(body: &[u8]) -> Result<Publish, Rejection> {
    let bad_json = (
        400,
        40017,
        "invalid request: request body must be message JSON",
    );
    let v: Value = serde_json::from_slice(body).map_err(|_| bad_json)?;
    let topic = v
        .get("topic")
        .and_then(Value::as_str)
        .ok_or(TOPIC_INVALID)?;
    if !valid_topic(topic) {
        return Err(TOPIC_INVALID);
    }
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let priority = match v.get("priority") {
        None | Some(Value::Null) => 3,
        Some(p) => p
            .as_u64()
            .filter(|p| (1..=5).contains(p))
            .map(|p| p as u8)
            .ok_or(PRIORITY_INVALID)?,
    };
    let tags = match v.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| t.as_str().map(str::to_owned).ok_or(bad_json))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad_json),
    };
    // Real ntfy turns an oversized message into a text attachment; so does the fake.
    let mut message = text("message").unwrap_or_default();
    let mut attachment = None;
    if message.len() > MAX_MESSAGE_BYTES {
        attachment = Some(NtfyAttachment {
            name: "attachment.txt".to_owned(),
            bytes: std::mem::take(&mut message).into_bytes(),
        });
        message = "You received a file: attachment.txt".to_owned();
    }
    Ok(Publish {
        json: true,
        topic: topic.to_owned(),
        title: text("title"),
        message,
        priority,
        tags,
        click: text("click"),
        markdown: v.get("markdown").and_then(Value::as_bool).unwrap_or(false),
        attachment,
    })
}

fn parse_plain(topic: &str, headers: &HeaderMap, body: &[u8]) -> Result<Publish, Rejection> {
    if !valid_topic(topic) {
        return Err(TOPIC_INVALID);
    }
    let priority = match header_any(headers, &["x-priority", "priority", "prio", "p"]) {
        None => 3,
        Some(p) => parse_priority(&p).ok_or(PRIORITY_INVALID)?,
    };
    let filename = header_any(headers, &["x-filename", "filename", "file", "f"]);
    let text = std::str::from_utf8(body).ok();
    let (message, attachment) = match (filename, text) {
        (None, Some(t)) if t.len() <= MAX_MESSAGE_BYTES => (t.to_owned(), None),
        (name, _) => {
            let name = name.unwrap_or_else(|| "attachment.txt".to_owned());
            let message = header_any(headers, &["x-message", "message", "m"])
                .unwrap_or_else(|| format!("You received a file: {name}"));
            (
                message,
                Some(NtfyAttachment {
                    name,
                    bytes: body.to_vec(),
                }),
            )
        }
    };
    if attachment
        .as_ref()
        .is_some_and(|a| a.bytes.len() > MAX_ATTACHMENT_BYTES)
    {
        return Err((
            413,
            41301,
            "attachment too large, or bandwidth limit reached",
        ));
    }
    Ok(Publish {
        json: false,
        topic: topic.to_owned(),
        title: header_any(headers, &["x-title", "title", "ti", "t"]),
        message,
        priority,
        tags: header_any(headers, &["x-tags", "tags", "tag", "ta"])
            .map(|t| {
                t.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        click: header_any(headers, &["x-click", "click"]),
        markdown: header_any(headers, &["x-markdown", "markdown", "md"])
            .is_some_and(|v| is_yes(&v)),
        attachment,
    })
}

impl Provider for Shared {
    /// Files up to [`MAX_ATTACHMENT_BYTES`] must reach the fake's own 413 41301 check.
    const BODY_LIMIT: usize = MAX_ATTACHMENT_BYTES + 1024 * 1024;

    fn intake(&self) -> &Intake {
        &self.intake
    }

    fn serve(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
        let path = uri.path();
        if path == "/v1/health" && method == Method::GET {
            let healthy = lock(&self.state).healthy;
            return axum::Json(json!({ "healthy": healthy })).into_response();
        }
        if !matches!(*method, Method::POST | Method::PUT) {
            return self.reject((404, 40401, "page not found"));
        }
        let visitor = match self.visitor(headers) {
            Ok(v) => v,
            Err(r) => return self.reject(r),
        };
        {
            let taken = lock(&self.state).buckets.take(&visitor);
            if taken.is_err() {
                return self.reject((
                    429,
                    42901,
                    "limit reached: too many requests, please be nice",
                ));
            }
        }
        let parsed = match path.strip_prefix('/') {
            Some("") => parse_json(body),
            Some(topic) if !topic.contains('/') => parse_plain(topic, headers, body),
            _ => Err((404, 40401, "page not found")),
        };
        let p = match parsed {
            Ok(p) => p,
            Err(r) => return self.reject(r),
        };
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        let id = format!("{:012x}", fnv1a(&n.to_be_bytes()) & 0xffff_ffff_ffff);
        let time = chrono::Utc::now().timestamp();
        let mut reply = json!({
            "id": id,
            "time": time,
            "expires": time + 43_200,
            "event": "message",
            "topic": p.topic,
            "message": p.message,
        });
        if let Some(t) = &p.title {
            reply["title"] = json!(t);
        }
        if p.priority != 3 {
            reply["priority"] = json!(p.priority);
        }
        if !p.tags.is_empty() {
            reply["tags"] = json!(p.tags);
        }
        if let Some(a) = &p.attachment {
            reply["attachment"] = json!({"name": a.name, "size": a.bytes.len()});
        }
        lock(&self.state).messages.push(NtfyMessage {
            id,
            method: method.as_str().to_owned(),
            json: p.json,
            topic: p.topic,
            title: p.title,
            message: p.message,
            priority: p.priority,
            tags: p.tags,
            click: p.click,
            markdown: p.markdown,
            attachment: p.attachment,
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        });
        axum::Json(reply).into_response()
    }

    /// An injected failure with ntfy's code for that status.
    fn injected(&self, status: u16) -> Response {
        let (code, error): (u32, &'static str) = match status {
            400 => (40017, "invalid request: request body must be message JSON"),
            401 => (40101, "unauthorized"),
            403 => (40301, "forbidden"),
            413 => (41301, "attachment too large, or bandwidth limit reached"),
            429 => (42901, "limit reached: too many requests, please be nice"),
            500..=599 => (50001, "internal server error"),
            _ => (0, reason_phrase(status)),
        };
        self.reject((status, code, error))
    }
}

impl Shared {
    /// Who is publishing: the credential, or anonymous; checks credentials when required.
    fn visitor(&self, headers: &HeaderMap) -> Result<String, Rejection> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let required = lock(&self.state).auth.clone();
        let Some(required) = required else {
            return Ok(given.unwrap_or_else(|| "anonymous".to_owned()));
        };
        let Some(given) = given else {
            return Err((403, 40301, "forbidden"));
        };
        let ok = match &required {
            Auth::Token(t) => given.strip_prefix("Bearer ") == Some(t.as_str()),
            Auth::Basic(u, p) => given
                .strip_prefix("Basic ")
                .and_then(|b| BASE64.decode(b.trim()).ok())
                .is_some_and(|b| b == format!("{u}:{p}").as_bytes()),
        };
        if ok {
            Ok(given)
        } else {
            Err((401, 40101, "unauthorized"))
        }
    }

    fn reject(&self, (status, code, error): Rejection) -> Response {
        self.intake.answered(status);
        let body = error_body(status, code, error);
        lock(&self.state).rejected.push((status, body.clone()));
        (status_code(status), axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_rules() {
        assert!(valid_topic("alerts_1-x"));
        assert!(!valid_topic("bad$topic"));
        assert!(!valid_topic(&"a".repeat(65)));
        assert_eq!(parse_priority("high"), Some(4));
        assert_eq!(parse_priority("urgent"), Some(5));
        assert_eq!(parse_priority("6"), None);
        assert_eq!(decode_header("=?UTF-8?B?0KbQtdC90LA=?="), "Цена");
        assert_eq!(decode_header("plain"), "plain");
        let err = parse_json(br#"{"message":"x"}"#).err().unwrap();
        assert_eq!(err.1, 40009);
        let err = parse_json(br#"{"topic":"t","priority":9}"#).err().unwrap();
        assert_eq!(err.1, 40007);
        let ok =
            parse_json(br#"{"topic":"t","message":"m","tags":["a"],"markdown":true}"#).unwrap();
        assert!(ok.markdown && ok.tags == ["a"] && ok.priority == 3);
    }

    #[test]
    fn oversized_text_becomes_an_attachment() {
        let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        let p = parse_plain("t", &HeaderMap::new(), big.as_bytes()).unwrap();
        assert_eq!(p.message, "You received a file: attachment.txt");
        assert_eq!(p.attachment.unwrap().bytes.len(), MAX_MESSAGE_BYTES + 1);
    }
}
