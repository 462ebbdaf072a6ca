//! Discord webhooks (PROVIDERS.md §2): one embed per notification, `wait=true` for the
//! message id, limits followed from the `X-RateLimit-*` headers.
//!
//! Attachments go in the same request: `multipart/form-data` with the JSON body as
//! `payload_json` (plus `attachments: [{id, filename}]`) and the files as `files[n]`. Files
//! that do not fit one message are left out with a note, so the alert itself always goes.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use klaxon_core::channel_url::DiscordSpec;
use klaxon_core::limit::{LimitKey, Rate};
use klaxon_core::render::discord::render_content;
use klaxon_core::template::Markup;
use klaxon_core::verdict::wait_secs;
use klaxon_core::{Notification, Secret, Verdict};
use serde_json::{Value, json};

use crate::{Channel, SendContext, SendReport, http};

/// Commonly observed per-webhook bucket (5 requests per 2 s, PROVIDERS.md §2), used until the
/// headers say otherwise; stretched 3 % for jitter like every provider default.
pub const PER_WEBHOOK: Rate = Rate::new(5, Duration::from_millis(2060), 1);
/// At most 10 files per message (Discord's message resource docs).
pub const MAX_FILES: usize = 10;
/// Upload bytes per message for a server without boosts. Discord has moved this (8 MB, 25 MB,
/// now 10 MiB by third-party reports), so the smallest recent value, in decimal megabytes:
/// a 413 would lose the alert text with the files.
pub const UPLOAD_MAX: usize = 10_000_000;

/// Discord's code for a deleted webhook: it must not be called again.
const UNKNOWN_WEBHOOK: i64 = 10015;

pub struct Discord {
    /// Templates for the title and body.
    words: crate::Words,
    name: String,
    spec: DiscordSpec,
    http: reqwest::Client,
    timeout: Duration,
}

impl Discord {
    pub fn new(name: &str, spec: DiscordSpec, http: reqwest::Client, timeout: Duration) -> Self {
        Discord {
            words: crate::Words::defaults(name),
            name: name.to_string(),
            spec,
            http,
            timeout,
        }
    }

    /// Words messages with these templates (the built-in ones otherwise).
    pub fn words(mut self, words: crate::Words) -> Self {
        self.words = words;
        self
    }
}

/// One attachment, decoded.
struct File {
    filename: String,
    content_type: String,
    bytes: Vec<u8>,
}

/// The attachments that fit one message, in order, and a reason for each left out.
fn pick_files(n: &Notification) -> (Vec<File>, Vec<String>) {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut total = 0;
    for a in &n.attachments {
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&a.content_base64) else {
            skipped.push(format!(
                "attachment {} not sent: not valid base64",
                a.filename
            ));
            continue;
        };
        if files.len() == MAX_FILES {
            skipped.push(format!(
                "attachment {} not sent: Discord takes at most {MAX_FILES} files per message",
                a.filename
            ));
        } else if total + bytes.len() > UPLOAD_MAX {
            skipped.push(format!(
                "attachment {} ({} bytes) not sent: over Discord's {} upload limit per message",
                a.filename,
                bytes.len(),
                http::megabytes(UPLOAD_MAX)
            ));
        } else {
            total += bytes.len();
            files.push(File {
                filename: a.filename.clone(),
                content_type: a.content_type.clone(),
                bytes,
            });
        }
    }
    (files, skipped)
}

impl Discord {
    /// One execute-webhook call: JSON without files; with files, multipart with the body as
    /// `payload_json` naming each `files[n]` part in `attachments`.
    async fn post(
        &self,
        url: &str,
        body: &Value,
        files: &[File],
    ) -> Result<reqwest::Response, Verdict> {
        let secrets = [&self.spec.token];
        let url = url.to_string();
        if files.is_empty() {
            return http::post_json(&self.http, url, self.timeout, body, &secrets).await;
        }
        let mut body = body.clone();
        body["attachments"] = files
            .iter()
            .enumerate()
            .map(|(i, f)| json!({"id": i, "filename": f.filename}))
            .collect();
        let mut form = reqwest::multipart::Form::new().text("payload_json", body.to_string());
        let mut size = 0;
        for (i, f) in files.iter().enumerate() {
            size += f.bytes.len();
            let part = http::file_part(f.bytes.clone(), &f.filename, &f.content_type);
            form = form.part(format!("files[{i}]"), part);
        }
        let timeout = http::upload_timeout(self.timeout, size);
        http::post_multipart(&self.http, url, timeout, form, &secrets).await
    }
}

fn header_f64(h: &reqwest::header::HeaderMap, name: &str) -> Option<f64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The bucket is empty: hold the webhook until it resets, before Discord has to say 429.
fn hold_for(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    (header_f64(headers, "x-ratelimit-remaining") == Some(0.0))
        .then(|| header_f64(headers, "x-ratelimit-reset-after"))
        .flatten()
        .and_then(wait_secs)
}

#[async_trait]
impl Channel for Discord {
    fn kind(&self) -> &'static str {
        "discord"
    }

    fn limits(&self, _target: Option<&str>) -> Vec<LimitKey> {
        vec![LimitKey {
            key: format!("discord:{}", self.spec.webhook_id),
            rate: PER_WEBHOOK,
        }]
    }

    async fn send(&self, n: &Notification, _cx: &SendContext) -> SendReport {
        let (content, note) = self.words.content(n, "discord", Markup::Discord);
        let report: SendReport = async {
        let mut url = format!(
            "{}/api/webhooks/{}/{}?wait=true",
            self.spec.api_base,
            self.spec.webhook_id,
            self.spec.token.expose()
        );
        if let Some(t) = &self.spec.thread_id {
            url.push_str("&thread_id=");
            url.push_str(&url::form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>());
        }
        let secrets = [&self.spec.token];
        let body = render_content(n, &content, &self.spec.options);
        let (files, mut skipped) = pick_files(n);
        let mut sent = self.post(&url, &body, &files).await;
        if !files.is_empty() && matches!(&sent, Ok(r) if r.status().as_u16() == 413) {
            // The server's upload limit is below ours (Discord has moved it more than once):
            // the alert matters more than its files, so it goes again without them.
            skipped.push(format!(
                "{} file(s) not sent: Discord refused the upload as too large (413)",
                files.len()
            ));
            sent = self.post(&url, &body, &[]).await;
        }
        let note = (!skipped.is_empty()).then(|| skipped.join("; "));
        if let Some(note) = &note {
            tracing::warn!(channel = %self.name, "{note}");
        }
        let resp = match sent {
            Ok(r) => r,
            Err(v) => {
                return SendReport {
                    verdict: v,
                    note,
                    hold: None,
                };
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let hold = hold_for(&headers);
        let text = resp.text().await.unwrap_or_default();
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            let id = json
                .as_ref()
                .and_then(|j| j.get("id"))
                .and_then(|v| v.as_str())
                .map(str::to_string);
            return SendReport {
                verdict: http::delivered(id),
                note,
                hold,
            };
        }
        let (code, message) = http::error_fields(json.as_ref(), "message", &text);
        if status == 404 || code == Some(UNKNOWN_WEBHOOK) {
            tracing::error!(channel = %self.name, "Discord says the webhook is gone; disabling the channel");
            return Verdict::Reject {
                // Whatever answered may have quoted the URL, and the URL holds the token.
                reason: format!(
                    "Discord: {} (the webhook was deleted; create a new one)",
                    http::short(&klaxon_core::secret::redact(&message, &secrets))
                ),
                status: Some(status),
                disable_channel: true,
            }
            .into();
        }
        // 429: the body's float `retry_after` is more precise than the header's integer.
        let wait = json
            .as_ref()
            .and_then(|j| j.get("retry_after"))
            .and_then(|v| v.as_f64())
            .and_then(wait_secs)
            .or_else(|| http::retry_after(&headers));
        let detail = match json.as_ref().and_then(|j| j.get("errors")) {
            Some(e) => format!("{message} {e}"),
            None => message,
        };
        SendReport {
            verdict: http::classify(status, wait, &format!("Discord: {detail}"), &secrets),
            note,
            hold,
        }
        }
        .await;
        report.also(note)
    }

    fn secrets(&self) -> Vec<&Secret> {
        vec![&self.spec.token]
    }

    /// `GET` on the webhook URL returns the webhook without posting (Discord's Get Webhook
    /// with Token): a deleted webhook shows here before an alert needs it.
    async fn check(&self) -> crate::Health {
        let url = format!(
            "{}/api/webhooks/{}/{}",
            self.spec.api_base,
            self.spec.webhook_id,
            self.spec.token.expose()
        );
        let secrets = [&self.spec.token];
        let (status, text) = match http::get_text(&self.http, url, self.timeout, &secrets).await {
            Ok(r) => r,
            Err(v) => return crate::Health::from_verdict(&v, ""),
        };
        let json: Option<Value> = serde_json::from_str(&text).ok();
        let field = |k: &str| {
            json.as_ref()
                .and_then(|j| j.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if status == 200 {
            crate::Health::ok(format!(
                "webhook `{}`",
                field("name").unwrap_or_else(|| self.spec.webhook_id.clone())
            ))
        } else {
            http::check_failed(status, &field("message").unwrap_or(text), &secrets)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn headers(remaining: &'static str, reset_after: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", HeaderValue::from_static(remaining));
        h.insert(
            "x-ratelimit-reset-after",
            HeaderValue::from_static(reset_after),
        );
        h
    }

    #[test]
    fn an_empty_bucket_holds_the_webhook_and_absurd_resets_do_not_panic() {
        assert_eq!(
            hold_for(&headers("0", "1.5")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(hold_for(&headers("1", "1.5")), None);
        assert_eq!(hold_for(&headers("0", "-3")), None);
        // `Duration::from_secs_f64(1e20)` panics; a hostile or broken proxy must not crash a send.
        assert_eq!(
            hold_for(&headers("0", "1e20")),
            Some(Duration::from_secs(86_400))
        );
    }
}
