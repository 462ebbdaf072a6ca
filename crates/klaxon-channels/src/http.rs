//! Shared HTTP plumbing for channels: turn transport errors into verdicts without leaking the
//! URL (bot tokens live in Telegram's path), read `Retry-After`, and classify answers.

use std::time::Duration;

use klaxon_core::Secret;
use klaxon_core::secret::redact;
use klaxon_core::verdict::{Verdict, classify_http, parse_retry_after};
use serde_json::Value;

/// Provider error bodies are quoted in attempts; keep them short.
pub const REASON_MAX: usize = 500;

/// A transport failure (no HTTP answer): always worth retrying. The message names the kind of
/// failure, never the URL.
pub fn transport_error(e: &reqwest::Error, timeout: Duration, secrets: &[&Secret]) -> Verdict {
    let what = if e.is_timeout() {
        format!("timed out after {}s", timeout.as_secs_f32())
    } else if e.is_connect() {
        format!("connection failed: {}", source_chain(e))
    } else if e.is_body() || e.is_decode() {
        format!("reading the answer failed: {}", source_chain(e))
    } else {
        format!("request failed: {}", source_chain(e))
    };
    Verdict::retry(redact(&what, secrets))
}

/// The innermost causes of an error, without reqwest's own line (which quotes the URL).
fn source_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    if parts.is_empty() {
        // reqwest's own line quotes the URL (Telegram's holds the token): cut it out.
        let mut s = e.to_string();
        if let Some(url) = e.url() {
            s = s.replace(url.as_str(), "[url]");
        }
        s
    } else {
        parts.join(": ")
    }
}

/// Sends a built request with the channel's timeout and reads the whole answer: status,
/// `Retry-After` and body text. A transport failure, sending or reading, comes back as its
/// verdict, the URL never quoted.
pub async fn exchange(
    req: reqwest::RequestBuilder,
    timeout: Duration,
    secrets: &[&Secret],
) -> Result<(u16, Option<Duration>, String), Verdict> {
    let failed = |e: reqwest::Error| transport_error(&e, timeout, secrets);
    let resp = req.timeout(timeout).send().await.map_err(failed)?;
    let status = resp.status().as_u16();
    let wait = retry_after(resp.headers());
    let text = resp.text().await.map_err(failed)?;
    Ok((status, wait, text))
}

/// Sends a health-check request with the channel's timeout: status and body text (empty when
/// the body cannot be read, so the status decides), or the unhealthy state of a transport
/// failure, the URL never quoted.
pub async fn probe(
    req: reqwest::RequestBuilder,
    timeout: Duration,
    secrets: &[&Secret],
) -> Result<(u16, String), crate::Health> {
    match req.timeout(timeout).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            Ok((status, resp.text().await.unwrap_or_default()))
        }
        Err(e) => Err(crate::Health::from_verdict(
            &transport_error(&e, timeout, secrets),
            "",
        )),
    }
}

/// Decodes an attachment that must fit `max` bytes. When it cannot go, a note says why
/// (`over_limit` names the limit: "ntfy's 15 MB attachment limit") and `None` comes back.
pub fn decode_file(
    a: &klaxon_core::model::Attachment,
    max: usize,
    over_limit: &str,
    notes: &mut Vec<String>,
) -> Option<Vec<u8>> {
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(&a.content_base64) {
        Ok(bytes) if bytes.len() <= max => Some(bytes),
        Ok(bytes) => {
            notes.push(format!(
                "{} ({} bytes) is over {over_limit} and was not sent",
                a.filename,
                bytes.len()
            ));
            None
        }
        Err(_) => {
            notes.push(format!(
                "{} is not valid base64 and was not sent",
                a.filename
            ));
            None
        }
    }
}

/// POSTs JSON with the channel's timeout; a transport failure comes back as its verdict.
pub async fn post_json(
    client: &reqwest::Client,
    url: String,
    timeout: Duration,
    body: &serde_json::Value,
    secrets: &[&Secret],
) -> Result<reqwest::Response, Verdict> {
    client
        .post(url)
        .timeout(timeout)
        .json(body)
        .send()
        .await
        .map_err(|e| transport_error(&e, timeout, secrets))
}

/// POSTs a `multipart/form-data` body (file uploads) with the channel's timeout; a transport
/// failure comes back as its verdict, the URL never quoted.
pub async fn post_multipart(
    client: &reqwest::Client,
    url: String,
    timeout: Duration,
    form: reqwest::multipart::Form,
    secrets: &[&Secret],
) -> Result<reqwest::Response, Verdict> {
    client
        .post(url)
        .timeout(timeout)
        .multipart(form)
        .send()
        .await
        .map_err(|e| transport_error(&e, timeout, secrets))
}

/// A file part named `filename` with the sender's content type. A type reqwest cannot parse
/// is dropped rather than failing the send: the provider then sees a plain byte stream.
pub fn file_part(bytes: Vec<u8>, filename: &str, content_type: &str) -> reqwest::multipart::Part {
    // Control characters (a newline in a name) would corrupt the part's headers, and servers
    // disagree on whether `\\` is an escape inside a quoted file name (multer keeps both
    // characters), so a name never carries one.
    let name: String = filename
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '\\' { '_' } else { c })
        .collect();
    let part = || reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.clone());
    part().mime_str(content_type).unwrap_or_else(|_| part())
}

/// The slowest uplink an upload is given time for: 2 MB/s (a home line's 16 Mbit/s).
const UPLOAD_RATE: f64 = 2_000_000.0;

/// How long an upload of `bytes` may take: the channel's timeout plus the time to push the
/// file at [`UPLOAD_RATE`], at most three times the timeout (the engine bounds a whole send,
/// recoveries included, at four).
pub fn upload_timeout(timeout: Duration, bytes: usize) -> Duration {
    (timeout + Duration::from_secs_f64(bytes as f64 / UPLOAD_RATE)).min(timeout * 3)
}

/// A provider's limit for people: `50 MB` (decimal, as providers state them).
pub fn megabytes(bytes: usize) -> String {
    format!("{} MB", bytes / 1_000_000)
}

pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// Classifies an answer with the shared rules; `reason` is the provider's text, scrubbed of
/// secrets and shortened.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    reason: &str,
    secrets: &[&Secret],
) -> Verdict {
    classify_http(status, retry_after, short(&redact(reason, secrets)))
}

/// A provider's JSON error body: its numeric `code`, if any, and the text under `message_key`
/// (Twilio and Discord say `message`, ntfy `error`, Pushover lists `errors`, joined with
/// `; `). A body that is not JSON, or lacks that text, is quoted raw.
pub fn error_fields(json: Option<&Value>, message_key: &str, text: &str) -> (Option<i64>, String) {
    let code = json.and_then(|j| j.get("code")).and_then(Value::as_i64);
    let message = match json.and_then(|j| j.get(message_key)) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("; "),
        _ => text.to_string(),
    };
    (code, message)
}

/// [`error_fields`] of a body not parsed yet.
pub fn error_body(text: &str, message_key: &str) -> (Option<i64>, String) {
    let json: Option<Value> = serde_json::from_str(text).ok();
    error_fields(json.as_ref(), message_key, text)
}

/// A provider's words as a reason to keep: trimmed, bounded, and without NUL characters, which
/// PostgreSQL refuses in text (the attempt could not be recorded and the send would repeat).
pub fn short(text: &str) -> String {
    let text = text.trim();
    let clean: std::borrow::Cow<str> = if text.contains('\0') {
        text.replace('\0', "\u{FFFD}").into()
    } else {
        text.into()
    };
    klaxon_core::render::truncate_chars(&clean, REASON_MAX)
}

/// Pulls a provider id out of a 2xx verdict's place.
pub fn delivered(provider_id: Option<String>) -> Verdict {
    Verdict::Delivered { provider_id }
}

/// A GET for health checks: status and body text, or the transport failure's verdict.
pub async fn get_text(
    client: &reqwest::Client,
    url: String,
    timeout: Duration,
    secrets: &[&Secret],
) -> Result<(u16, String), Verdict> {
    let resp = client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| transport_error(&e, timeout, secrets))?;
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .map_err(|e| transport_error(&e, timeout, secrets))?;
    Ok((status, text))
}

/// A health check's failure from an HTTP answer that was not a success.
pub fn check_failed(status: u16, reason: &str, secrets: &[&Secret]) -> crate::Health {
    crate::Health::failed(format!(
        "HTTP {status}: {}",
        short(&redact(reason, secrets))
    ))
}

/// A stable, non-reversible name for a credential, for limit keys: channels sharing a token
/// share its limit, and the key never carries the token.
pub fn secret_key(secret: &Secret) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    secret.expose().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// "2 attachment(s) not sent" notes, shared by the providers that cannot carry (all) files.
pub fn attachments_note(what: &str, count: usize) -> Option<String> {
    (count > 0).then(|| format!("{what}; {count} attachment(s) not sent"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_keeps_no_nul() {
        assert_eq!(short("  bad\0 chat \0"), "bad\u{FFFD} chat \u{FFFD}");
        assert_eq!(short(" fine "), "fine");
    }

    #[test]
    fn provider_error_bodies() {
        let twilio = r#"{"code":21211,"message":"Invalid 'To' Phone Number","status":400}"#;
        assert_eq!(
            error_body(twilio, "message"),
            (Some(21211), "Invalid 'To' Phone Number".to_string())
        );
        let ntfy = r#"{"code":42901,"http":429,"error":"limit reached"}"#;
        assert_eq!(
            error_body(ntfy, "error"),
            (Some(42901), "limit reached".to_string())
        );
        let pushover = r#"{"status":0,"errors":["user is invalid","device is invalid"]}"#;
        assert_eq!(
            error_body(pushover, "errors"),
            (None, "user is invalid; device is invalid".to_string())
        );
        assert_eq!(
            error_body("<html>Bad Gateway</html>", "message"),
            (None, "<html>Bad Gateway</html>".to_string())
        );
        assert_eq!(
            error_body(r#"{"code":7}"#, "message"),
            (Some(7), r#"{"code":7}"#.to_string())
        );
    }

    #[test]
    fn uploads_get_time_for_their_size_within_a_bound() {
        let t = Duration::from_secs(15);
        assert_eq!(upload_timeout(t, 0), t);
        assert_eq!(upload_timeout(t, 20_000_000), Duration::from_secs(25));
        assert_eq!(upload_timeout(t, 50_000_000), Duration::from_secs(40));
        assert_eq!(upload_timeout(t, 500_000_000), Duration::from_secs(45));
    }
}
