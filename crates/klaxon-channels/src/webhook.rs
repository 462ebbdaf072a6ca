//! Generic JSON webhooks (`json://`, `jsons://`): the body of PRODUCT.md §7a, Standard Webhooks
//! signing when a `whsec_` secret is set (PROVIDERS.md §5), `webhook-id` = the delivery id.

use std::time::Duration;

use async_trait::async_trait;
use klaxon_core::channel_url::WebhookSpec;
use klaxon_core::limit::LimitKey;
use klaxon_core::render::webhook::{body_content, decode_secret, sign};
use klaxon_core::template::Markup;
use klaxon_core::{Notification, Secret, Verdict};

use crate::{Channel, SendContext, SendReport, http};

pub struct Webhook {
    /// Templates for the title and body.
    words: crate::Words,
    name: String,
    spec: WebhookSpec,
    /// The decoded signing key, checked at start-up by config parsing.
    key: Option<Vec<u8>>,
    http: reqwest::Client,
    timeout: Duration,
    method: reqwest::Method,
}

impl Webhook {
    pub fn new(name: &str, spec: WebhookSpec, http: reqwest::Client, timeout: Duration) -> Self {
        let key = spec.secret.as_ref().and_then(|s| decode_secret(s).ok());
        let method =
            reqwest::Method::from_bytes(spec.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        Webhook {
            words: crate::Words::defaults(name),
            name: name.to_string(),
            spec,
            key,
            http,
            timeout,
            method,
        }
    }

    /// Words messages with these templates (the built-in ones otherwise).
    pub fn words(mut self, words: crate::Words) -> Self {
        self.words = words;
        self
    }

    fn all_secrets(&self) -> Vec<&Secret> {
        let mut s = vec![&self.spec.url];
        s.extend(self.spec.secret.as_ref());
        s.extend(self.spec.headers.iter().map(|(_, v)| v));
        s.extend(self.spec.basic_auth.as_ref().map(|(_, p)| p));
        s
    }
}

#[async_trait]
impl Channel for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn limits(&self, _target: Option<&str>) -> Vec<LimitKey> {
        Vec::new()
    }

    async fn send(&self, n: &Notification, cx: &SendContext) -> SendReport {
        let (content, note) = self.words.content(n, "webhook", Markup::Plain);
        let report: SendReport = async {
        let payload = serde_json::to_vec(&body_content(n, &content, cx.delivery_id, cx.attempt)).unwrap_or_default();
        let id = cx.delivery_id.to_string();
        let mut req = self
            .http
            .request(self.method.clone(), self.spec.url.expose())
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id);
        if let Some(key) = &self.key {
            let ts = chrono::Utc::now().timestamp();
            req = req
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sign(key, &id, ts, &payload));
        }
        for (k, v) in &self.spec.headers {
            req = req.header(k.as_str(), v.expose());
        }
        if let Some((user, pass)) = &self.spec.basic_auth {
            req = req.basic_auth(user, Some(pass.expose()));
        }
        let secrets = self.all_secrets();
        let resp = match req.body(payload).send().await {
            Ok(r) => r,
            Err(e) => return http::transport_error(&e, self.timeout, &secrets).into(),
        };
        let status = resp.status().as_u16();
        let wait = http::retry_after(resp.headers());
        if (200..300).contains(&status) {
            return http::delivered(None).into();
        }
        let text = resp.text().await.unwrap_or_default();
        let reason = format!("HTTP {status} from {}: {}", self.spec.display, text);
        if status == 410 {
            // Standard Webhooks: 410 Gone means the receiver wants no more calls.
            tracing::error!(channel = %self.name, "webhook answered 410 Gone; disabling the channel");
            return Verdict::Reject {
                reason: http::short(&klaxon_core::secret::redact(&reason, &secrets)),
                status: Some(status),
                disable_channel: true,
            }
            .into();
        }
        http::classify(status, wait, &reason, &secrets).into()
        }
        .await;
        report.also(note)
    }

    fn secrets(&self) -> Vec<&Secret> {
        self.all_secrets()
    }
}
