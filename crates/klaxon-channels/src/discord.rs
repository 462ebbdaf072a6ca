//! Discord webhooks (PROVIDERS.md §2): one embed per notification, `wait=true` for the
//! message id, limits followed from the `X-RateLimit-*` headers.

use std::time::Duration;

use async_trait::async_trait;
use klaxon_core::channel_url::DiscordSpec;
use klaxon_core::limit::{LimitKey, Rate};
use klaxon_core::render::discord::render;
use klaxon_core::verdict::parse_retry_after;
use klaxon_core::{Notification, Secret, Verdict};
use serde_json::Value;

use crate::{Channel, SendContext, SendReport, http};

/// Commonly observed per-webhook bucket (5 requests per 2 s, PROVIDERS.md §2), used until the
/// headers say otherwise; stretched 3 % for jitter like every provider default.
pub const PER_WEBHOOK: Rate = Rate::new(5, Duration::from_millis(2060), 1);
/// Discord's code for a deleted webhook: it must not be called again.
const UNKNOWN_WEBHOOK: i64 = 10015;

pub struct Discord {
    name: String,
    spec: DiscordSpec,
    http: reqwest::Client,
    timeout: Duration,
}

impl Discord {
    pub fn new(name: &str, spec: DiscordSpec, http: reqwest::Client, timeout: Duration) -> Self {
        Discord {
            name: name.to_string(),
            spec,
            http,
            timeout,
        }
    }
}

fn header_f64(h: &reqwest::header::HeaderMap, name: &str) -> Option<f64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
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
        let body = render(n, &self.spec.options);
        let resp = match http::post_json(&self.http, url, self.timeout, &body, &secrets).await {
            Ok(r) => r,
            Err(v) => return v.into(),
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        // The bucket is empty: hold the webhook until it resets, before Discord has to say 429.
        let hold = (header_f64(&headers, "x-ratelimit-remaining") == Some(0.0))
            .then(|| header_f64(&headers, "x-ratelimit-reset-after"))
            .flatten()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
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
                note: None,
                hold,
            };
        }
        let code = json
            .as_ref()
            .and_then(|j| j.get("code"))
            .and_then(Value::as_i64);
        let message = json
            .as_ref()
            .and_then(|j| j.get("message"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| text.clone());
        if status == 404 || code == Some(UNKNOWN_WEBHOOK) {
            tracing::error!(channel = %self.name, "Discord says the webhook is gone; disabling the channel");
            return Verdict::Reject {
                reason: format!(
                    "Discord: {} (the webhook was deleted; create a new one)",
                    http::short(&message)
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
            .and_then(|s| parse_retry_after(&s.to_string()))
            .or_else(|| http::retry_after(&headers));
        let detail = match json.as_ref().and_then(|j| j.get("errors")) {
            Some(e) => format!("{message} {e}"),
            None => message,
        };
        SendReport {
            verdict: http::classify(status, wait, &format!("Discord: {detail}"), &secrets),
            note: None,
            hold,
        }
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
