//! A fast webhook receiver that can verify Standard Webhooks signatures (PROVIDERS.md §5).
//!
//! Accepts `POST`, `PUT` and `PATCH` on any path. When started with a secret it checks
//! `webhook-id`, `webhook-timestamp` (±5 minutes) and `webhook-signature` (any one of the
//! space-separated `v1,<base64>` entries must match the HMAC-SHA256 of
//! `"{id}.{timestamp}.{body}"`, compared in constant time) and answers 401 otherwise. JSON
//! bodies must parse. Accepted requests are counted, their `webhook-id`s collected and, unless
//! disabled for benchmarks, recorded in full.
//!
//! The hot path is kept light for the benchmark: atomics for counters, one short lock for the
//! id set, and no body parsing beyond validation when bodies are not recorded.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::fault::{Fault, Intake};
use crate::server::Server;
use crate::{lock, reason_phrase, status_code};

/// Receivers accept timestamps within ±5 minutes of their clock (PROVIDERS.md §5).
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

/// Standard Webhooks secrets are `whsec_` followed by the base64 key (PROVIDERS.md §5).
pub const SECRET_PREFIX: &str = "whsec_";

/// The only signature scheme defined: HMAC-SHA256.
const SIGNATURE_VERSION: &str = "v1";

type HmacSha256 = Hmac<Sha256>;

/// How to start a [`WebhookSink`].
#[derive(Clone, Debug)]
pub struct SinkOptions {
    /// `whsec_<base64>`: verify signatures with it; `None` accepts unsigned requests.
    pub secret: Option<String>,
    /// Keep every accepted request in [`WebhookSink::received`]. Benchmarks turn this off:
    /// then only the count and the `webhook-id`s are kept.
    pub record_bodies: bool,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            secret: None,
            record_bodies: true,
        }
    }
}

/// One accepted request.
#[derive(Clone, Debug)]
pub struct WebhookRequest {
    /// `POST`, `PUT` or `PATCH`.
    pub method: String,
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// Every header, names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The parsed JSON body; for other content types the body as a (lossy UTF-8) string.
    pub body: Value,
    /// The `webhook-id` header.
    pub webhook_id: Option<String>,
    /// When the sink accepted it.
    pub at: std::time::Instant,
}

/// A webhook receiver on `127.0.0.1`.
#[derive(Debug)]
pub struct WebhookSink {
    shared: Arc<Shared>,
    server: Server,
}

#[derive(Debug)]
struct Shared {
    /// The keyed MAC, cloned per request (cheaper than re-keying).
    mac: Option<HmacSha256>,
    record_bodies: bool,
    /// Faults and the count of every request received, whatever the answer.
    intake: Intake,
    /// Status forced on every request by `set_status_for_all`; 0 when unset.
    status_for_all: AtomicU16,
    /// Accepted (2xx) requests; incremented after recording so a test that waits for the
    /// count sees the recorded request too.
    count: AtomicUsize,
    bad_signatures: AtomicUsize,
    received: Mutex<Vec<WebhookRequest>>,
    ids: Mutex<HashSet<String>>,
}

/// Decodes a Standard Webhooks secret (`whsec_` prefix optional, as in the reference
/// libraries) into the HMAC key.
///
/// # Errors
/// When the part after the prefix is not standard base64.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    BASE64
        .decode(encoded)
        .map_err(|err| format!("webhook secret is not valid base64: {err}"))
}

/// The `webhook-signature` entry (`v1,<base64>`) for a message, computed like a Standard
/// Webhooks sender; lets tests cross-check Klaxon's signer.
///
/// # Panics
/// If `secret` is not valid (see [`decode_secret`]): a broken test fixture.
pub fn sign(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    let mac = keyed_mac(secret).unwrap_or_else(|err| panic!("klaxon-fakes: {err}"));
    let digest = signed_content(&mac, id, ts, body).finalize().into_bytes();
    format!("{SIGNATURE_VERSION},{}", BASE64.encode(digest))
}

fn keyed_mac(secret: &str) -> Result<HmacSha256, String> {
    let key = decode_secret(secret)?;
    HmacSha256::new_from_slice(&key).map_err(|err| format!("invalid HMAC key: {err}"))
}

/// The MAC fed with `"{id}.{ts}.{body}"`.
fn signed_content(mac: &HmacSha256, id: &str, ts: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = mac.clone();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

impl WebhookSink {
    /// Starts an unsigned sink that records bodies.
    ///
    /// # Panics
    /// If the loopback interface cannot be bound.
    pub async fn start() -> Self {
        Self::start_with(SinkOptions::default()).await
    }

    /// Starts a sink that verifies signatures made with `secret` (`whsec_<base64>`).
    ///
    /// # Panics
    /// If `secret` is not valid base64, or the loopback interface cannot be bound.
    pub async fn start_signed(secret: &str) -> Self {
        Self::start_with(SinkOptions {
            secret: Some(secret.to_owned()),
            ..SinkOptions::default()
        })
        .await
    }

    /// Starts a sink with explicit options.
    ///
    /// # Panics
    /// If the secret is not valid base64, or the loopback interface cannot be bound.
    pub async fn start_with(options: SinkOptions) -> Self {
        let mac = options
            .secret
            .as_deref()
            .map(|secret| keyed_mac(secret).unwrap_or_else(|err| panic!("klaxon-fakes: {err}")));
        let shared = Arc::new(Shared {
            mac,
            record_bodies: options.record_bodies,
            intake: Intake::default(),
            status_for_all: AtomicU16::new(0),
            count: AtomicUsize::new(0),
            bad_signatures: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
            ids: Mutex::new(HashSet::new()),
        });
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let server = Server::start(router).await;
        Self { shared, server }
    }

    /// Base URL (`http://127.0.0.1:PORT`); any path below it is accepted.
    pub fn url(&self) -> String {
        self.server.url()
    }

    crate::lifecycle_methods!();

    /// Answers every request with `status`, e.g. 410 Gone to make a sender disable the
    /// endpoint. A non-2xx status is answered before any check and nothing is recorded; a
    /// 2xx status (200 restores the default) is answered after the normal checks and
    /// recording.
    pub fn set_status_for_all(&self, status: u16) {
        self.shared.status_for_all.store(status, Ordering::SeqCst);
    }

    /// Accepted requests (empty when bodies are not recorded).
    pub fn received(&self) -> Vec<WebhookRequest> {
        lock(&self.shared.received).clone()
    }

    /// How many requests were accepted (answered 2xx).
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// The distinct `webhook-id`s of accepted requests (retries share an id).
    pub fn distinct_ids(&self) -> HashSet<String> {
        lock(&self.shared.ids).clone()
    }

    /// Requests refused for a missing or invalid signature or timestamp.
    pub fn bad_signatures(&self) -> usize {
        self.shared.bad_signatures.load(Ordering::SeqCst)
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.intake.requests.fetch_add(1, Ordering::Relaxed);
    if !matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        let mut response = error(405, "method not allowed");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, PUT, PATCH"));
        return response;
    }
    match shared.intake.faults.take() {
        Fault::Fail(code) => return error(code, reason_phrase(code)),
        Fault::Delay(delay) => tokio::time::sleep(delay).await,
        Fault::Pass => {}
    }
    let forced = shared.status_for_all.load(Ordering::Relaxed);
    if forced != 0 && !(200..300).contains(&forced) {
        return error(forced, reason_phrase(forced));
    }
    if let Some(mac) = &shared.mac
        && let Err(reason) = verify(mac, &headers, &body, chrono::Utc::now().timestamp())
    {
        shared.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return error(401, reason);
    }

    let is_json = is_json(&headers);
    let parsed = if shared.record_bodies {
        if is_json {
            serde_json::from_slice::<Value>(&body).ok()
        } else {
            Some(Value::String(String::from_utf8_lossy(&body).into_owned()))
        }
    } else if is_json {
        // Validate without building a tree.
        serde_json::from_slice::<serde::de::IgnoredAny>(&body)
            .ok()
            .map(|_| Value::Null)
    } else {
        Some(Value::Null)
    };
    let Some(parsed) = parsed else {
        return error(400, "body is not valid JSON");
    };

    let webhook_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(id) = &webhook_id {
        lock(&shared.ids).insert(id.clone());
    }
    if shared.record_bodies {
        let request = WebhookRequest {
            method: method.as_str().to_owned(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect(),
            body: parsed,
            webhook_id,
            at: tokio::time::Instant::now().into_std(),
        };
        lock(&shared.received).push(request);
    }
    shared.count.fetch_add(1, Ordering::SeqCst);

    let status = if forced == 0 { 200 } else { forced };
    (
        status_code(status),
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"ok":true}"#,
    )
        .into_response()
}

/// `application/json` or any `+json` type, ignoring parameters.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
        .is_some_and(|essence| essence == "application/json" || essence.ends_with("+json"))
}

/// `{"ok":false,"error":…}` with `status`; a 429 also says when to come back.
fn error(status: u16, message: &str) -> Response {
    let mut response = (
        status_code(status),
        axum::Json(json!({ "ok": false, "error": message })),
    )
        .into_response();
    if status == 429 {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Verifies the Standard Webhooks headers against `body` at time `now` (Unix seconds).
fn verify(
    mac: &HmacSha256,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), &'static str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let id = header("webhook-id")
        .filter(|id| !id.is_empty())
        .ok_or("missing webhook-id")?;
    let timestamp: i64 = header("webhook-timestamp")
        .ok_or("missing webhook-timestamp")?
        .trim()
        .parse()
        .map_err(|_| "invalid webhook-timestamp")?;
    if timestamp < now.saturating_sub(TIMESTAMP_TOLERANCE_SECS) {
        return Err("message timestamp too old");
    }
    if timestamp > now.saturating_add(TIMESTAMP_TOLERANCE_SECS) {
        return Err("message timestamp too new");
    }
    let signatures = header("webhook-signature").ok_or("missing webhook-signature")?;
    let signed = signed_content(mac, id, timestamp, body);
    let matched = signatures
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == SIGNATURE_VERSION)
        .filter_map(|(_, signature)| BASE64.decode(signature).ok())
        // `verify_slice` compares in constant time.
        .any(|signature| signed.clone().verify_slice(&signature).is_ok());
    if matched {
        Ok(())
    } else {
        Err("no matching signature")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn headers(id: &str, ts: i64, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", signature.to_owned()),
        ] {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(name, value);
            }
        }
        headers
    }

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // Test vector from the standard-webhooks reference libraries.
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = 1_614_265_330;
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(SECRET, id, ts, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn verifies_signatures_and_timestamps() {
        let Ok(mac) = keyed_mac(SECRET) else {
            panic!("fixture secret is valid");
        };
        let now = 1_700_000_000;
        let body = b"{}";
        let good = sign(SECRET, "msg_1", now, body);
        assert_eq!(
            verify(&mac, &headers("msg_1", now, &good), body, now),
            Ok(())
        );
        // Any one of several entries may match (secret rotation).
        let rotated = format!("v1,AAAA v1a,xyz {good}");
        assert_eq!(
            verify(&mac, &headers("msg_1", now, &rotated), body, now),
            Ok(())
        );
        assert!(verify(&mac, &headers("msg_2", now, &good), body, now).is_err());
        assert!(verify(&mac, &headers("msg_1", now, &good), b"{ }", now).is_err());
        let old = now - TIMESTAMP_TOLERANCE_SECS - 1;
        let stale = sign(SECRET, "msg_1", old, body);
        assert_eq!(
            verify(&mac, &headers("msg_1", old, &stale), body, now),
            Err("message timestamp too old")
        );
        assert_eq!(
            verify(&mac, &HeaderMap::new(), body, now),
            Err("missing webhook-id")
        );
        assert!(decode_secret("whsec_not base64!").is_err());
    }
}
