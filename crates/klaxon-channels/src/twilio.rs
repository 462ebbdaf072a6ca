//! Twilio Messages API for SMS and WhatsApp (PROVIDERS.md §4): one delivery per recipient,
//! form-encoded, HTTP Basic `AccountSid:AuthToken`; Twilio's error `code` refines the status.

use std::time::Duration;

use async_trait::async_trait;
use klaxon_core::channel_url::TwilioSpec;
use klaxon_core::limit::{LimitKey, Rate};
use klaxon_core::render::sms;
use klaxon_core::template::{Content, Markup};
use klaxon_core::{Notification, Secret, Verdict};
use serde_json::Value;

use crate::{Channel, Health, SendContext, SendReport, http};

/// Twilio's documented throughput for a US long code: 1 message segment per second per
/// number ("Understanding Twilio's rate limits / MPS"). Keyed on the sender; stretched 3 %.
/// A message may take `max_segments` segments, so its share is that many intervals: faster,
/// Twilio queues the excess and a long queue ends in error 30001 (queue overflow).
pub const PER_LONG_CODE: Rate = Rate::new(1, Duration::from_millis(1030), 1);
/// WhatsApp senders get 80 messages/s by default (Twilio's WhatsApp throughput docs, Meta's
/// default Cloud API tier); stretched 3 %.
pub const PER_WHATSAPP_SENDER: Rate = Rate::new(80, Duration::from_millis(1030), 1);

/// PROVIDERS.md §4: too many concurrent requests, safe to retry with backoff.
const TOO_MANY_REQUESTS: i64 = 20429;

pub struct Twilio {
    /// Templates for the title and body.
    words: crate::Words,
    spec: TwilioSpec,
    http: reqwest::Client,
    timeout: Duration,
}

impl Twilio {
    pub fn new(spec: TwilioSpec, http: reqwest::Client, timeout: Duration) -> Self {
        Twilio {
            words: crate::Words::defaults(""),
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

    fn account_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}",
            self.spec.api_base, self.spec.account_sid
        )
    }

    /// The body this notification becomes, as Twilio will receive it.
    pub fn body(&self, n: &Notification) -> String {
        self.body_of(n, &self.words.quiet(n, self.kind(), Markup::Plain))
    }

    fn body_of(&self, n: &Notification, content: &Content) -> String {
        sms::render_content(
            n,
            content,
            self.spec.is_whatsapp(),
            self.spec.max_segments as usize,
        )
    }

    /// Twilio's `{code, message}` error, or the status and raw text when the body is not one.
    fn failure(&self, status: u16, wait: Option<Duration>, text: &str) -> Verdict {
        let (code, message) = http::error_body(text, "message");
        let reason = match code {
            Some(c) => format!("Twilio {status} error {c}: {message}"),
            None => format!("Twilio {status}: {message}"),
        };
        let secrets = [&self.spec.auth_token];
        if code == Some(TOO_MANY_REQUESTS) {
            // 20429 is the throttle whatever the status line says.
            return http::classify(429, wait, &reason, &secrets);
        }
        // Everything else follows the status: 21211 (bad To), 21617 (too long) and 20003
        // (auth) come as 400/401 and are permanent; 5xx is Twilio's own trouble.
        http::classify(status, wait, &reason, &secrets)
    }
}

#[async_trait]
impl Channel for Twilio {
    fn kind(&self) -> &'static str {
        if self.spec.is_whatsapp() {
            "whatsapp"
        } else {
            "sms"
        }
    }

    fn targets(&self, _n: &Notification) -> Vec<Option<String>> {
        self.spec.to.iter().cloned().map(Some).collect()
    }

    fn limits(&self, _target: Option<&str>) -> Vec<LimitKey> {
        let rate = if self.spec.is_whatsapp() {
            PER_WHATSAPP_SENDER
        } else {
            Rate {
                per: PER_LONG_CODE.per * self.spec.max_segments.max(1),
                ..PER_LONG_CODE
            }
        };
        vec![LimitKey {
            key: format!("twilio:{}:{}", self.spec.account_sid, self.spec.from),
            rate,
        }]
    }

    async fn send(&self, n: &Notification, cx: &SendContext) -> SendReport {
        let (content, note) = self.words.content(n, self.kind(), Markup::Plain);
        let report: SendReport = async {
            let Some(to) = cx.target.as_deref() else {
                return Verdict::reject("Twilio delivery without a recipient").into();
            };
            let body = self.body_of(n, &content);
            // A Messaging Service picks the sender itself; it is named by SID, not `From`.
            let from_field = if self.spec.from.starts_with("MG") {
                "MessagingServiceSid"
            } else {
                "From"
            };
            let form = [
                ("To", to),
                (from_field, self.spec.from.as_str()),
                ("Body", &body),
            ];
            let secrets = [&self.spec.auth_token];
            let req = self
                .http
                .post(format!("{}/Messages.json", self.account_url()))
                .basic_auth(&self.spec.account_sid, Some(self.spec.auth_token.expose()))
                .form(&form);
            let (status, wait, text) = match http::exchange(req, self.timeout, &secrets).await {
                Ok(answer) => answer,
                Err(v) => return v.into(),
            };
            let mut notes = Vec::new();
            if !self.spec.is_whatsapp() {
                notes.extend(http::attachments_note(
                    "Twilio SMS cannot carry files",
                    n.attachments.len(),
                ));
            } else {
                notes.extend(http::attachments_note(
                    "WhatsApp through Twilio takes media only by public URL",
                    n.attachments.len(),
                ));
            }
            let verdict = if (200..300).contains(&status) {
                let json: Option<Value> = serde_json::from_str(&text).ok();
                let field = |k: &str| json.as_ref().and_then(|j| j.get(k)).cloned();
                // Twilio sends `num_segments` as a string; accept a number too.
                let segments = field("num_segments").and_then(|v| match v {
                    Value::String(s) => s.parse::<u64>().ok(),
                    v => v.as_u64(),
                });
                if let Some(s) = segments.filter(|_| !self.spec.is_whatsapp()) {
                    notes.push(format!("{s} SMS segment(s)"));
                }
                http::delivered(field("sid").and_then(|v| v.as_str().map(str::to_string)))
            } else {
                self.failure(status, wait, &text)
            };
            SendReport::noted(verdict, &notes)
        }
        .await;
        report.also(note)
    }

    fn secrets(&self) -> Vec<&Secret> {
        vec![&self.spec.auth_token]
    }

    /// Fetches the account: proves the SID and token without sending anything.
    async fn check(&self) -> Health {
        let secrets = [&self.spec.auth_token];
        let req = self
            .http
            .get(format!("{}.json", self.account_url()))
            .basic_auth(&self.spec.account_sid, Some(self.spec.auth_token.expose()));
        let (status, text) = match http::probe(req, self.timeout, &secrets).await {
            Ok(answer) => answer,
            Err(health) => return health,
        };
        if !(200..300).contains(&status) {
            return Health::from_verdict(&self.failure(status, None, &text), "");
        }
        let json: Value = serde_json::from_str(&text).unwrap_or_default();
        let name = json
            .get("friendly_name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let state = json.get("status").and_then(Value::as_str).unwrap_or("?");
        let detail = format!("Twilio account \"{}\" is {state}", http::short(name));
        if state == "active" {
            Health::ok(detail)
        } else {
            // A suspended or closed account answers the fetch but sends nothing.
            Health::failed(detail)
        }
    }
}
