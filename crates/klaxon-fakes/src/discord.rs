//! A strict fake of Discord's execute-webhook endpoint (PROVIDERS.md §2).
//!
//! Serves `POST /api/webhooks/{id}/{token}` (also `/api/v{N}/webhooks/…`) with the query
//! parameters `wait` and `thread_id`. Bodies are validated against the documented limits —
//! content, embed count, every embed field, the 6000-character total, `color`, `timestamp` —
//! and rejected with Discord's error shapes (`50035 Invalid Form Body` with a field-path error
//! tree, `50006` for an empty message, `50109` for invalid JSON, `10015 Unknown Webhook`).
//!
//! Files come as `multipart/form-data` with the message in `payload_json` and the files in
//! `files[n]` parts: at most 10, within the upload limit, and every `attachments[].id` in the
//! payload must name a part. They are recorded with the message ([`DiscordMessage::files`]).
//!
//! Each webhook has a fixed-window rate-limit bucket that starts at its first request, like
//! Discord's; every answer on the webhook route carries the `X-RateLimit-*` headers, and an
//! exhausted bucket answers 429 with `Retry-After` and a `retry_after` float in the body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::fault::Intake;
use crate::multipart::{self, FormData, FormError};
use crate::server::Server;
use crate::{ceil_secs, fnv1a, is_content_type, lock, reason_phrase, status_code, unix_now_f64};

/// The webhook id [`FakeDiscord::start`] registers.
pub const DEFAULT_WEBHOOK_ID: &str = "123";
/// The token of the default webhook.
pub const DEFAULT_WEBHOOK_TOKEN: &str = "abc";

/// Default bucket: 5 requests per 2 s per webhook, as commonly observed (PROVIDERS.md §2,
/// a third-party observation — hence configurable with [`FakeDiscord::set_limit`]).
pub const DEFAULT_LIMIT: (u32, Duration) = (5, Duration::from_secs(2));

/// `content` ≤ 2000 characters (PROVIDERS.md §2).
pub const MAX_CONTENT: usize = 2000;
/// At most 10 embeds per message (PROVIDERS.md §2).
pub const MAX_EMBEDS: usize = 10;
/// Embed `title` ≤ 256 (PROVIDERS.md §2).
pub const MAX_TITLE: usize = 256;
/// Embed `description` ≤ 4096 (PROVIDERS.md §2).
pub const MAX_DESCRIPTION: usize = 4096;
/// At most 25 fields per embed (PROVIDERS.md §2).
pub const MAX_FIELDS: usize = 25;
/// Field `name` 1–256 (PROVIDERS.md §2; empty names are rejected by Discord too).
pub const MAX_FIELD_NAME: usize = 256;
/// Field `value` 1–1024 (PROVIDERS.md §2).
pub const MAX_FIELD_VALUE: usize = 1024;
/// `footer.text` ≤ 2048 (PROVIDERS.md §2).
pub const MAX_FOOTER_TEXT: usize = 2048;
/// `author.name` ≤ 256 (PROVIDERS.md §2).
pub const MAX_AUTHOR_NAME: usize = 256;
/// Sum of title, description, field names and values, footer text and author name over all
/// embeds of a message (PROVIDERS.md §2).
pub const MAX_EMBEDS_TOTAL: usize = 6000;
/// `color` is a 24-bit RGB integer.
pub const MAX_COLOR: i64 = 0xFF_FFFF;
/// Webhook `username` override: 1–80 characters (Discord's webhook docs; not in PROVIDERS.md).
pub const MAX_USERNAME: usize = 80;

/// At most 10 files per message (Discord's message resource docs).
pub const MAX_FILES: usize = 10;
/// Default upload limit per request for a server without boosts: 10 MiB since late 2024
/// (third-party reports; it was 25 MiB before), so configurable with
/// [`FakeDiscord::set_upload_limit`].
pub const DEFAULT_UPLOAD_LIMIT: usize = 10 * 1024 * 1024;
/// Bodies the fake buffers at all; past this the answer is 413 without reading further.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Discord snowflakes count milliseconds from 2015-01-01.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// One accepted execute-webhook call.
#[derive(Clone, Debug)]
pub struct DiscordMessage {
    pub webhook_id: String,
    /// The JSON body as sent.
    pub body: Value,
    /// The `wait` query parameter.
    pub wait: bool,
    /// The `thread_id` query parameter, if any.
    pub thread_id: Option<String>,
    /// Files uploaded with the message (multipart), in part order.
    pub files: Vec<DiscordFile>,
    /// When the fake accepted it.
    pub at: std::time::Instant,
}

/// One uploaded file of a message.
#[derive(Clone, Debug)]
pub struct DiscordFile {
    /// `n` of the `files[n]` part: what `attachments[].id` refers to.
    pub index: u64,
    pub filename: String,
    pub content_type: Option<String>,
    /// The bytes exactly as received.
    pub bytes: Vec<u8>,
}

/// A fake Discord webhook server on `127.0.0.1`.
#[derive(Debug)]
pub struct FakeDiscord {
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
    /// Registered webhooks: id → token.
    webhooks: HashMap<String, String>,
    /// Requests per window, per webhook.
    limit: (u32, Duration),
    /// Bytes a multipart request may carry (files and payload).
    upload_limit: usize,
    /// Per webhook id.
    buckets: HashMap<String, Bucket>,
    /// The last message id handed out, so ids strictly increase.
    last_snowflake: u64,
    messages: Vec<DiscordMessage>,
    /// Status and body of every non-2xx answer.
    rejected: Vec<(u16, Value)>,
}

impl FakeDiscord {
    /// Starts the fake on `127.0.0.1:0` with webhook [`DEFAULT_WEBHOOK_ID`] /
    /// [`DEFAULT_WEBHOOK_TOKEN`] registered.
    ///
    /// # Panics
    /// If the loopback interface cannot be bound.
    pub async fn start() -> Self {
        let state = HookState {
            webhooks: HashMap::from([(
                DEFAULT_WEBHOOK_ID.to_owned(),
                DEFAULT_WEBHOOK_TOKEN.to_owned(),
            )]),
            limit: DEFAULT_LIMIT,
            upload_limit: DEFAULT_UPLOAD_LIMIT,
            buckets: HashMap::new(),
            last_snowflake: 0,
            messages: Vec::new(),
            rejected: Vec::new(),
        };
        let shared = Arc::new(Shared {
            intake: Intake::default(),
            state: Mutex::new(state),
        });
        let router = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(Arc::clone(&shared));
        let server = Server::start(router).await;
        Self { shared, server }
    }

    /// Base URL (`http://127.0.0.1:PORT`); webhooks live at `{url}/api/webhooks/{id}/{token}`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    crate::lifecycle_methods!();

    /// Registers (or re-keys) a webhook.
    pub fn add_webhook(&self, id: &str, token: &str) {
        lock(&self.shared.state)
            .webhooks
            .insert(id.to_owned(), token.to_owned());
    }

    /// Unregisters a webhook: later calls answer 404 `Unknown Webhook` (code 10015).
    pub fn delete_webhook(&self, id: &str) {
        lock(&self.shared.state).webhooks.remove(id);
    }

    /// Replaces the per-webhook bucket: `count` requests per fixed `window`. Running buckets
    /// keep their current window start.
    pub fn set_limit(&self, count: u32, window: Duration) {
        lock(&self.shared.state).limit = (count, window);
    }

    /// Replaces the per-request upload limit (a boosted server allows more).
    pub fn set_upload_limit(&self, bytes: usize) {
        lock(&self.shared.state).upload_limit = bytes;
    }

    crate::recorded_methods!(DiscordMessage, Value);
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    if let Some(code) = shared.intake.admit().await {
        return shared.injected(code);
    }
    let method = req.method().clone();
    let uri = req.uri().clone();
    let headers = req.headers().clone();
    let body = if is_content_type(&headers, "multipart/form-data") {
        multipart::read(req).await.map(Body::Form)
    } else {
        // On a request that arrived whole, reading fails only past the body limit.
        Bytes::from_request(req, &())
            .await
            .map(Body::Raw)
            .map_err(|_| FormError::TooLarge)
    };
    shared.serve(&method, &uri, &headers, body)
}

/// A request body as read: raw bytes (JSON), or multipart fields.
#[derive(Debug)]
enum Body {
    Raw(Bytes),
    Form(FormData),
}

/// The state of one webhook's bucket.
#[derive(Debug)]
struct Bucket {
    /// Start of the current fixed window (Discord starts it at the first request).
    started: Instant,
    /// Requests admitted in this window.
    used: u32,
}

/// What the `X-RateLimit-*` headers report.
#[derive(Debug)]
struct RateInfo {
    limit: u32,
    remaining: u32,
    reset_after: Duration,
    bucket: String,
}

impl HookState {
    /// Counts one request against `id`'s bucket: `Ok` if admitted, `Err` if exhausted.
    fn take_token(&mut self, id: &str, now: Instant) -> Result<RateInfo, RateInfo> {
        let (limit, window) = self.limit;
        let bucket = self.buckets.entry(id.to_owned()).or_insert(Bucket {
            started: now,
            used: 0,
        });
        if now.duration_since(bucket.started) >= window {
            bucket.started = now;
            bucket.used = 0;
        }
        let admitted = bucket.used < limit;
        if admitted {
            bucket.used += 1;
        }
        let info = RateInfo {
            limit,
            remaining: limit.saturating_sub(bucket.used),
            reset_after: (bucket.started + window).saturating_duration_since(now),
            // Discord's bucket ids are opaque hashes; stable per webhook is all that matters.
            bucket: format!("{:016x}", fnv1a(id.as_bytes())),
        };
        if admitted { Ok(info) } else { Err(info) }
    }

    /// A Discord message id: a snowflake from the current time, strictly increasing.
    fn next_snowflake(&mut self) -> u64 {
        let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let candidate = now_ms.saturating_sub(DISCORD_EPOCH_MS) << 22;
        self.last_snowflake = candidate.max(self.last_snowflake + 1);
        self.last_snowflake
    }
}

/// A parsed, validated execute-webhook request.
#[derive(Debug)]
struct Execute {
    wait: bool,
    thread_id: Option<String>,
    body: Value,
    files: Vec<DiscordFile>,
}

/// A rejection: status and Discord-shaped JSON body.
type Rejection = (StatusCode, Value);

impl Shared {
    fn serve(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Result<Body, FormError>,
    ) -> Response {
        let Some((id, token)) = route(uri.path()) else {
            return self.reject(None, 404, json!({ "message": "404: Not Found", "code": 0 }));
        };
        if method == Method::GET {
            // Get Webhook with Token: the webhook object, no message posted.
            let known = lock(&self.state)
                .webhooks
                .get(id)
                .is_some_and(|t| t == token);
            return if known {
                let body = json!({ "id": id, "type": 1, "name": "Fake Webhook", "channel_id": "1", "guild_id": "1" });
                (StatusCode::OK, axum::Json(body)).into_response()
            } else {
                self.reject(
                    None,
                    404,
                    json!({ "message": "Unknown Webhook", "code": 10015 }),
                )
            };
        }
        if method != Method::POST {
            let body = json!({ "message": "405: Method Not Allowed", "code": 0 });
            return self.reject(None, 405, body);
        }

        let rate = {
            let mut state = lock(&self.state);
            let rate = state.take_token(id, Instant::now());
            let known = state.webhooks.get(id).is_some_and(|t| t == token);
            match rate {
                Err(rate) => {
                    drop(state);
                    return self.rate_limited(&rate);
                }
                Ok(rate) if !known => {
                    drop(state);
                    let body = json!({ "message": "Unknown Webhook", "code": 10015 });
                    return self.reject(Some(&rate), 404, body);
                }
                Ok(rate) => rate,
            }
        };

        let upload_limit = lock(&self.state).upload_limit;
        let execute = match parse_execute(uri, headers, body, upload_limit) {
            Ok(execute) => execute,
            Err((status, body)) => return self.reject(Some(&rate), status.as_u16(), body),
        };

        let mut state = lock(&self.state);
        let message_id = state.next_snowflake();
        let reply = execute.wait.then(|| {
            let obj = execute.body.as_object();
            let field = |name: &str| obj.and_then(|o| o.get(name)).cloned();
            json!({
                "id": message_id.to_string(),
                "type": 0,
                "channel_id": execute.thread_id.clone().unwrap_or_else(|| "1".to_owned()),
                "content": field("content").unwrap_or_else(|| json!("")),
                "embeds": field("embeds").filter(|e| !e.is_null()).unwrap_or_else(|| json!([])),
                "author": {
                    "id": id,
                    "username": field("username").unwrap_or_else(|| json!("Fake Hook")),
                    "bot": true,
                    "discriminator": "0000",
                },
                "webhook_id": id,
                "timestamp": chrono::Utc::now().to_rfc3339(),
                "tts": false,
                "mentions": [],
                "attachments": execute.files.iter().map(|f| json!({
                    "id": (message_id + 1 + f.index).to_string(),
                    "filename": f.filename,
                    "size": f.bytes.len(),
                    "content_type": f.content_type,
                    "url": format!("https://cdn.invalid/attachments/{message_id}/{}", f.filename),
                })).collect::<Vec<_>>(),
                "flags": field("flags").unwrap_or_else(|| json!(0)),
            })
        });
        state.messages.push(DiscordMessage {
            webhook_id: id.to_owned(),
            body: execute.body,
            wait: execute.wait,
            thread_id: execute.thread_id,
            files: execute.files,
            at: Instant::now().into_std(),
        });
        drop(state);

        let mut response = match reply {
            Some(message) => axum::Json(message).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        };
        rate_headers(response.headers_mut(), &rate);
        response
    }

    /// Records and renders a non-2xx answer, with rate-limit headers when a bucket was hit.
    fn reject(&self, rate: Option<&RateInfo>, code: u16, body: Value) -> Response {
        lock(&self.state).rejected.push((code, body.clone()));
        let mut response = (status_code(code), axum::Json(body)).into_response();
        if let Some(rate) = rate {
            rate_headers(response.headers_mut(), rate);
        }
        response
    }

    /// The 429 for an exhausted bucket.
    fn rate_limited(&self, rate: &RateInfo) -> Response {
        self.intake.answered(429);
        let mut response = self.reject(Some(rate), 429, rate_limited_body(rate.reset_after));
        let headers = response.headers_mut();
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(ceil_secs(rate.reset_after)),
        );
        headers.insert("x-ratelimit-scope", HeaderValue::from_static("user"));
        response
    }

    /// An injected failure in Discord's shape; a 429 looks like a real one (1 s wait).
    fn injected(&self, code: u16) -> Response {
        if code == 429 {
            self.intake.answered(429);
            let wait = Duration::from_secs(1);
            let mut response = self.reject(None, 429, rate_limited_body(wait));
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(ceil_secs(wait)));
            headers.insert("x-ratelimit-scope", HeaderValue::from_static("user"));
            return response;
        }
        let body = json!({ "message": format!("{code}: {}", reason_phrase(code)), "code": 0 });
        self.reject(None, code, body)
    }
}

/// Discord's 429 body; `retry_after` in seconds with millisecond precision.
fn rate_limited_body(wait: Duration) -> Value {
    let secs = ((wait.as_secs_f64() * 1000.0).ceil() / 1000.0).max(0.001);
    json!({ "message": "You are being rate limited.", "retry_after": secs, "global": false })
}

/// Adds the `X-RateLimit-*` headers Discord sends on every answer of a bucketed route.
/// (`X-RateLimit-Global` is only sent for the global limit, which this fake does not model.)
fn rate_headers(headers: &mut HeaderMap, rate: &RateInfo) {
    let reset_after = rate.reset_after.as_secs_f64();
    let values = [
        ("x-ratelimit-limit", rate.limit.to_string()),
        ("x-ratelimit-remaining", rate.remaining.to_string()),
        (
            "x-ratelimit-reset",
            format!("{:.3}", unix_now_f64() + reset_after),
        ),
        ("x-ratelimit-reset-after", format!("{reset_after:.3}")),
        ("x-ratelimit-bucket", rate.bucket.clone()),
    ];
    for (name, value) in values {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// Extracts `(id, token)` from `/api/webhooks/{id}/{token}` or `/api/v{N}/webhooks/…`.
fn route(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/")?;
    let rest = match rest.split_once('/') {
        Some((version, tail))
            if version.len() > 1
                && version.starts_with('v')
                && version[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            tail
        }
        _ => rest,
    };
    let (id, token) = rest.strip_prefix("webhooks/")?.split_once('/')?;
    let token = token.strip_suffix('/').unwrap_or(token);
    (!id.is_empty() && !token.is_empty() && !token.contains('/')).then_some((id, token))
}

/// Parses the query and body and validates them.
fn parse_execute(
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Body, FormError>,
    upload_limit: usize,
) -> Result<Execute, Rejection> {
    let mut errors = FormErrors::default();
    let mut wait = false;
    let mut thread_id = None;
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "wait" => match value.to_ascii_lowercase().as_str() {
                "true" | "1" => wait = true,
                "false" | "0" => wait = false,
                _ => errors.add(
                    &["wait"],
                    "BOOLEAN_TYPE_COERCE",
                    format!("Value \"{value}\" is not a valid boolean."),
                ),
            },
            "thread_id" => {
                if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                    thread_id = Some(value.into_owned());
                } else {
                    errors.add(
                        &["thread_id"],
                        "NUMBER_TYPE_COERCE",
                        format!("Value \"{value}\" is not snowflake."),
                    );
                }
            }
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors.into_rejection());
    }

    let (body, files) = match body {
        Err(FormError::TooLarge) => return Err(too_large()),
        Err(FormError::Malformed(detail)) => {
            // Wording approximated: Discord does not document its text for a broken form.
            let message = format!("Invalid multipart body: {detail}");
            return Err((
                StatusCode::BAD_REQUEST,
                json!({ "message": message, "code": 0 }),
            ));
        }
        Ok(Body::Form(form)) => parse_form(form, upload_limit)?,
        Ok(Body::Raw(raw)) => {
            if !is_content_type(headers, "application/json") {
                // Discord does not read a body it cannot decode, so the message looks empty.
                return Err(empty_message());
            }
            (parse_json(&raw)?, Vec::new())
        }
    };
    validate_body(&body, files.len())?;
    Ok(Execute {
        wait,
        thread_id,
        body,
        files,
    })
}

fn parse_json(raw: &[u8]) -> Result<Value, Rejection> {
    serde_json::from_slice(raw).map_err(|_| {
        let message = "The request body contains invalid JSON.";
        (
            StatusCode::BAD_REQUEST,
            json!({ "code": 50109, "message": message }),
        )
    })
}

fn too_large() -> Rejection {
    let body = json!({ "code": 40005, "message": "Request entity too large" });
    (StatusCode::PAYLOAD_TOO_LARGE, body)
}

/// Reads a multipart execute-webhook body: the message from `payload_json`, files from
/// `files[n]` parts, and checks that the payload's `attachments` refer to uploaded parts.
fn parse_form(form: FormData, upload_limit: usize) -> Result<(Value, Vec<DiscordFile>), Rejection> {
    let mut size = 0;
    let mut body = json!({});
    for (name, text) in form.text {
        size += text.len();
        // Other text fields are ignored: with `payload_json` present Discord reads only it.
        if name == "payload_json" {
            body = parse_json(text.as_bytes())?;
        }
    }
    let mut errors = FormErrors::default();
    let mut files = Vec::new();
    for (name, part) in form.files {
        size += part.bytes.len();
        let index = name
            .strip_prefix("files[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|n| n.parse::<u64>().ok());
        let Some(index) = index else {
            // Wording approximated; the documented form is `files[n]`.
            errors.add(&[&name], "BASE_TYPE_INVALID", "Expected a files[n] part.");
            continue;
        };
        files.push(DiscordFile {
            index,
            filename: part.filename.unwrap_or_default(),
            content_type: part.content_type,
            bytes: part.bytes.to_vec(),
        });
    }
    if size > upload_limit {
        return Err(too_large());
    }
    if files.len() > MAX_FILES {
        errors.add(
            &["attachments"],
            "BASE_TYPE_MAX_LENGTH",
            format!("Must be {MAX_FILES} or fewer in length."),
        );
    }
    let declared = body.get("attachments").filter(|a| !a.is_null());
    for (j, attachment) in check_list(&mut errors, &["attachments"], declared, MAX_FILES)
        .iter()
        .enumerate()
    {
        let j = j.to_string();
        let id = attachment.get("id").and_then(|id| match id {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        });
        if !id.is_some_and(|id| files.iter().any(|f| f.index == id)) {
            // Wording approximated: an id must name a `files[id]` part of this request.
            errors.add(
                &["attachments", &j, "id"],
                "ATTACHMENT_NOT_FOUND",
                "Unknown attachment id: no files[id] part with this index.",
            );
        }
    }
    if !errors.is_empty() {
        return Err(errors.into_rejection());
    }
    Ok((body, files))
}

fn empty_message() -> Rejection {
    let body = json!({ "code": 50006, "message": "Cannot send an empty message" });
    (StatusCode::BAD_REQUEST, body)
}

/// Validates an execute-webhook body against PROVIDERS.md §2; `files` uploaded with it count
/// as content.
fn validate_body(body: &Value, files: usize) -> Result<(), Rejection> {
    let mut errors = FormErrors::default();
    let Value::Object(message) = body else {
        errors.add(&[], "DICT_TYPE_CONVERT", DICT_MESSAGE);
        return Err(errors.into_rejection());
    };
    check_text(
        &mut errors,
        &["content"],
        message.get("content"),
        Text::optional(MAX_CONTENT),
    );
    check_text(
        &mut errors,
        &["username"],
        message.get("username"),
        Text::non_empty(MAX_USERNAME),
    );
    let embeds = check_list(&mut errors, &["embeds"], message.get("embeds"), MAX_EMBEDS);
    let total: usize = embeds
        .iter()
        .enumerate()
        .map(|(i, embed)| check_embed(&mut errors, &i.to_string(), embed))
        .sum();
    if total > MAX_EMBEDS_TOTAL {
        errors.add(
            &["embeds"],
            "MAX_EMBED_SIZE_EXCEEDED",
            format!("Embed size exceeds maximum size of {MAX_EMBEDS_TOTAL}"),
        );
    }
    if !errors.is_empty() {
        return Err(errors.into_rejection());
    }

    // Discord trims content, so whitespace alone is empty.
    let has_content = message
        .get("content")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.trim().is_empty());
    let has_components = message
        .get("components")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    let has_poll = message.get("poll").is_some_and(|p| !p.is_null());
    if !(has_content || !embeds.is_empty() || has_components || has_poll || files > 0) {
        return Err(empty_message());
    }
    Ok(())
}

const DICT_MESSAGE: &str = "Only dictionaries may be used in a DictType";

/// Validates one embed; returns its contribution to the 6000-character total.
fn check_embed(errors: &mut FormErrors, index: &str, embed: &Value) -> usize {
    let Value::Object(embed) = embed else {
        errors.add(&["embeds", index], "DICT_TYPE_CONVERT", DICT_MESSAGE);
        return 0;
    };
    let mut size = 0;
    size += check_text(
        errors,
        &["embeds", index, "title"],
        embed.get("title"),
        Text::optional(MAX_TITLE),
    );
    size += check_text(
        errors,
        &["embeds", index, "description"],
        embed.get("description"),
        Text::optional(MAX_DESCRIPTION),
    );
    check_color(errors, index, embed.get("color"));
    if let Some(timestamp) = embed.get("timestamp").filter(|t| !t.is_null()) {
        let valid = timestamp
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok());
        if !valid {
            errors.add(
                &["embeds", index, "timestamp"],
                "DATE_TIME_TYPE_PARSE",
                format!("Could not parse {timestamp}. Should be ISO8601."),
            );
        }
    }
    for (object, field, max) in [
        ("footer", "text", MAX_FOOTER_TEXT),
        ("author", "name", MAX_AUTHOR_NAME),
    ] {
        match embed.get(object) {
            None | Some(Value::Null) => {}
            Some(Value::Object(inner)) => {
                size += check_text(
                    errors,
                    &["embeds", index, object, field],
                    inner.get(field),
                    Text::non_empty(max).required(),
                );
            }
            Some(_) => errors.add(
                &["embeds", index, object],
                "DICT_TYPE_CONVERT",
                DICT_MESSAGE,
            ),
        }
    }
    let fields = check_list(
        errors,
        &["embeds", index, "fields"],
        embed.get("fields"),
        MAX_FIELDS,
    );
    for (j, field) in fields.iter().enumerate() {
        let j = j.to_string();
        let Value::Object(field) = field else {
            errors.add(
                &["embeds", index, "fields", &j],
                "DICT_TYPE_CONVERT",
                DICT_MESSAGE,
            );
            continue;
        };
        for (name, max) in [("name", MAX_FIELD_NAME), ("value", MAX_FIELD_VALUE)] {
            size += check_text(
                errors,
                &["embeds", index, "fields", &j, name],
                field.get(name),
                Text::non_empty(max).required(),
            );
        }
        if field
            .get("inline")
            .is_some_and(|v| !(v.is_boolean() || v.is_null()))
        {
            errors.add(
                &["embeds", index, "fields", &j, "inline"],
                "BOOLEAN_TYPE_COERCE",
                "Value is not a valid boolean.",
            );
        }
    }
    size
}

/// `color` must be an integer in `0..=0xFFFFFF`.
fn check_color(errors: &mut FormErrors, index: &str, color: Option<&Value>) {
    let path = ["embeds", index, "color"];
    match color {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => match n.as_i64() {
            Some(c) if c < 0 => errors.add(
                &path,
                "NUMBER_TYPE_MIN",
                "int value should be greater than or equal to 0.",
            ),
            Some(c) if c <= MAX_COLOR => {}
            // Larger than i64 (as_u64) lands here too.
            Some(_) | None if n.is_u64() || n.is_i64() => errors.add(
                &path,
                "NUMBER_TYPE_MAX",
                format!("int value should be less than or equal to {MAX_COLOR}."),
            ),
            _ => errors.add(
                &path,
                "NUMBER_TYPE_COERCE",
                format!("Value \"{n}\" is not int."),
            ),
        },
        Some(other) => errors.add(
            &path,
            "NUMBER_TYPE_COERCE",
            format!("Value \"{other}\" is not int."),
        ),
    }
}

/// Length rule of a string field, in characters.
#[derive(Clone, Copy, Debug)]
struct Text {
    max: usize,
    /// 0 or 1.
    min: usize,
    required: bool,
}

impl Text {
    const fn optional(max: usize) -> Self {
        Self {
            max,
            min: 0,
            required: false,
        }
    }

    const fn non_empty(max: usize) -> Self {
        Self {
            max,
            min: 1,
            required: false,
        }
    }

    const fn required(self) -> Self {
        Self {
            required: true,
            ..self
        }
    }
}

/// Validates a string field; returns its length in characters (0 when absent or invalid).
fn check_text(errors: &mut FormErrors, path: &[&str], value: Option<&Value>, rule: Text) -> usize {
    let text = match value {
        None | Some(Value::Null) => {
            if rule.required {
                errors.add(path, "BASE_TYPE_REQUIRED", "This field is required");
            }
            return 0;
        }
        Some(Value::String(text)) => text,
        Some(other) => {
            errors.add(
                path,
                "BASE_TYPE_STRING",
                format!("Could not interpret \"{other}\" as string."),
            );
            return 0;
        }
    };
    let len = text.chars().count();
    if len > rule.max || len < rule.min {
        if rule.min > 0 {
            let message = format!("Must be between {} and {} in length.", rule.min, rule.max);
            errors.add(path, "BASE_TYPE_BAD_LENGTH", message);
        } else {
            let message = format!("Must be {} or fewer in length.", rule.max);
            errors.add(path, "BASE_TYPE_MAX_LENGTH", message);
        }
    }
    len
}

/// Validates an optional array field; returns its elements (none when invalid or too long,
/// so they are not validated further).
fn check_list<'a>(
    errors: &mut FormErrors,
    path: &[&str],
    value: Option<&'a Value>,
    max: usize,
) -> &'a [Value] {
    match value {
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) if items.len() > max => {
            errors.add(
                path,
                "BASE_TYPE_MAX_LENGTH",
                format!("Must be {max} or fewer in length."),
            );
            &[]
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.add(
                path,
                "LIST_TYPE_CONVERT",
                "Only iterables may be used in a ListType",
            );
            &[]
        }
    }
}

/// Discord's `errors` tree: nested objects keyed by field path, `_errors` arrays at the leaves.
#[derive(Debug, Default)]
struct FormErrors {
    tree: Map<String, Value>,
}

impl FormErrors {
    fn add(&mut self, path: &[&str], code: &str, message: impl Into<String>) {
        let mut node = &mut self.tree;
        for segment in path {
            let child = node
                .entry((*segment).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            // Path nodes are only ever created as objects; a clash would be a bug here, and
            // dropping one error message is better than crashing the fake.
            let Value::Object(map) = child else {
                return;
            };
            node = map;
        }
        let entry = node.entry("_errors").or_insert_with(|| json!([]));
        if let Value::Array(list) = entry {
            list.push(json!({ "code": code, "message": message.into() }));
        }
    }

    fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    fn into_rejection(self) -> Rejection {
        let body = json!({ "code": 50035, "message": "Invalid Form Body", "errors": self.tree });
        (StatusCode::BAD_REQUEST, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(body: Value) -> Value {
        match validate_body(&body, 0) {
            Err((status, body)) => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                body
            }
            Ok(()) => panic!("accepted {body}"),
        }
    }

    #[test]
    fn routes() {
        assert_eq!(route("/api/webhooks/1/t"), Some(("1", "t")));
        assert_eq!(route("/api/v10/webhooks/1/t/"), Some(("1", "t")));
        assert_eq!(route("/api/webhooks/1"), None);
        assert_eq!(route("/api/webhooks/1/t/slack"), None);
        assert_eq!(route("/webhooks/1/t"), None);
    }

    #[test]
    fn accepts_valid_messages() {
        let full = json!({
            "content": "hi",
            "username": "Klaxon",
            "allowed_mentions": { "parse": [] },
            "embeds": [{
                "title": "t", "description": "d", "color": 0xFF0000,
                "timestamp": "2026-01-02T03:04:05.678Z",
                "footer": { "text": "f" }, "author": { "name": "a" },
                "fields": [{ "name": "n", "value": "v", "inline": true }],
            }],
        });
        assert!(validate_body(&full, 0).is_ok());
        assert!(validate_body(&json!({ "embeds": [{ "title": "only" }] }), 0).is_ok());
        assert!(validate_body(&json!({ "content": "é".repeat(MAX_CONTENT) }), 0).is_ok());
    }

    #[test]
    fn rejects_empty_messages() {
        for body in [
            json!({}),
            json!({ "content": "  " }),
            json!({ "embeds": [] }),
        ] {
            assert_eq!(errors_of(body)["code"], 50006);
        }
    }

    #[test]
    fn reports_field_paths() {
        let body = errors_of(json!({ "embeds": [{}, { "title": "x".repeat(257) }] }));
        assert_eq!(body["code"], 50035);
        assert_eq!(
            body["errors"]["embeds"]["1"]["title"]["_errors"][0]["code"],
            "BASE_TYPE_MAX_LENGTH"
        );
        let body = errors_of(json!({
            "content": "x".repeat(2001),
            "embeds": [{ "color": 0x100_0000, "timestamp": "yesterday",
                         "fields": [{ "name": "", "value": "v" }, { "name": "n" }],
                         "footer": {} }],
        }));
        let errors = &body["errors"];
        assert!(errors["content"]["_errors"].is_array());
        let embed = &errors["embeds"]["0"];
        assert_eq!(embed["color"]["_errors"][0]["code"], "NUMBER_TYPE_MAX");
        assert_eq!(
            embed["timestamp"]["_errors"][0]["code"],
            "DATE_TIME_TYPE_PARSE"
        );
        assert_eq!(
            embed["fields"]["0"]["name"]["_errors"][0]["code"],
            "BASE_TYPE_BAD_LENGTH"
        );
        assert_eq!(
            embed["fields"]["1"]["value"]["_errors"][0]["code"],
            "BASE_TYPE_REQUIRED"
        );
        assert_eq!(
            embed["footer"]["text"]["_errors"][0]["code"],
            "BASE_TYPE_REQUIRED"
        );
    }

    #[test]
    fn enforces_counts_and_total() {
        let many = vec![json!({ "title": "t" }); MAX_EMBEDS + 1];
        let body = errors_of(json!({ "embeds": many }));
        assert!(body["errors"]["embeds"]["_errors"].is_array());
        let fields = vec![json!({ "name": "n", "value": "v" }); MAX_FIELDS + 1];
        let body = errors_of(json!({ "embeds": [{ "fields": fields }] }));
        assert!(body["errors"]["embeds"]["0"]["fields"]["_errors"].is_array());
        // Two embeds of 4096 + 1000 each: fine alone, over 6000 together.
        let big = json!({ "description": "d".repeat(4096), "title": "t".repeat(200) });
        assert!(validate_body(&json!({ "embeds": [big.clone()] }), 0).is_ok());
        let body = errors_of(json!({ "embeds": [big.clone(), big] }));
        assert_eq!(
            body["errors"]["embeds"]["_errors"][0]["code"],
            "MAX_EMBED_SIZE_EXCEEDED"
        );
    }

    #[test]
    fn rejects_bad_colors() {
        for (color, code) in [
            (json!(-1), "NUMBER_TYPE_MIN"),
            (json!(16_777_216), "NUMBER_TYPE_MAX"),
            (json!(u64::MAX), "NUMBER_TYPE_MAX"),
            (json!(1.5), "NUMBER_TYPE_COERCE"),
            (json!("#ff0000"), "NUMBER_TYPE_COERCE"),
        ] {
            let body = errors_of(json!({ "embeds": [{ "title": "t", "color": color }] }));
            assert_eq!(
                body["errors"]["embeds"]["0"]["color"]["_errors"][0]["code"],
                code
            );
        }
    }

    #[test]
    fn buckets_are_fixed_windows_from_the_first_request() {
        let mut state = HookState {
            webhooks: HashMap::new(),
            limit: (2, Duration::from_secs(2)),
            upload_limit: DEFAULT_UPLOAD_LIMIT,
            buckets: HashMap::new(),
            last_snowflake: 0,
            messages: Vec::new(),
            rejected: Vec::new(),
        };
        let t0 = Instant::now();
        let first = state.take_token("1", t0).expect("first");
        assert_eq!(
            (first.remaining, first.reset_after),
            (1, Duration::from_secs(2))
        );
        assert!(
            state
                .take_token("1", t0 + Duration::from_millis(500))
                .is_ok()
        );
        let over = state
            .take_token("1", t0 + Duration::from_millis(1500))
            .expect_err("third");
        assert_eq!(over.reset_after, Duration::from_millis(500));
        assert!(state.take_token("2", t0).is_ok(), "buckets are per webhook");
        assert!(state.take_token("1", t0 + Duration::from_secs(2)).is_ok());
        assert!(state.next_snowflake() < state.next_snowflake());
    }
}
