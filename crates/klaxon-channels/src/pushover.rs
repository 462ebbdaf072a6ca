//! Pushover (PROVIDERS.md §8): a form post, or multipart when an image rides along; HTML
//! mode; emergency priority for critical with the channel's `retry`/`expire`.

use std::time::Duration;

use async_trait::async_trait;
use klaxon_core::channel_url::PushoverSpec;
use klaxon_core::limit::{LimitKey, Rate};
use klaxon_core::model::Attachment;
use klaxon_core::render::pushover::render_content;
use klaxon_core::template::{Content, Markup};
use klaxon_core::{Notification, Secret, Verdict};
use serde_json::Value;

use crate::{Channel, Health, SendContext, SendReport, http};

/// PROVIDERS.md §8: at most 2 concurrent connections, and no per-second limit published.
/// Two sends a second keeps us at about two in flight at ordinary latency; stretched 3 %.
pub const PER_APP: Rate = Rate::new(2, Duration::from_millis(1030), 2);
/// PROVIDERS.md §8: after a 5xx, retry no sooner than 5 s.
pub const SERVER_ERROR_FLOOR: Duration = Duration::from_secs(5);
/// Pushover's attachment limit (PROVIDERS.md §8: ≤ 5 MB; API docs: 5,242,880 bytes).
pub const ATTACHMENT_MAX: usize = 5_242_880;

pub struct Pushover {
    /// Templates for the title and body.
    words: crate::Words,
    spec: PushoverSpec,
    http: reqwest::Client,
    timeout: Duration,
    key: String,
}

impl Pushover {
    pub fn new(spec: PushoverSpec, http: reqwest::Client, timeout: Duration) -> Self {
        Pushover {
            words: crate::Words::defaults(""),
            key: format!("pushover:{}", http::secret_key(&spec.token)),
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

    fn fields(&self, n: &Notification, content: &Content) -> Vec<(&'static str, String)> {
        let m = render_content(n, content);
        let mut f = vec![
            ("token", self.spec.token.expose().to_string()),
            ("user", self.spec.user.expose().to_string()),
            ("message", m.message),
            ("title", m.title),
            ("priority", m.priority.to_string()),
            ("html", "1".into()),
            ("timestamp", m.timestamp.to_string()),
        ];
        if m.priority == 2 {
            f.push(("retry", self.spec.retry.to_string()));
            f.push(("expire", self.spec.expire.to_string()));
        }
        if let Some(s) = &self.spec.sound {
            f.push(("sound", s.clone()));
        }
        if !self.spec.devices.is_empty() {
            f.push(("device", self.spec.devices.join(",")));
        }
        f
    }

    /// The first image that Pushover can take, and notes on every file left out.
    fn pick_image<'a>(
        &self,
        n: &'a Notification,
        notes: &mut Vec<String>,
    ) -> Option<(&'a Attachment, Vec<u8>)> {
        let mut chosen = None;
        let mut left = 0;
        for a in &n.attachments {
            if chosen.is_some() || !a.content_type.starts_with("image/") {
                left += 1;
                continue;
            }
            chosen = http::decode_file(a, ATTACHMENT_MAX, "Pushover's 5 MB limit", notes)
                .map(|bytes| (a, bytes));
        }
        notes.extend(http::attachments_note(
            "Pushover takes one image per message",
            left,
        ));
        chosen
    }

    fn secrets_arr(&self) -> [&Secret; 2] {
        [&self.spec.token, &self.spec.user]
    }

    /// Pushover's `{status: 0, errors: [...]}`, or the raw text.
    fn errors(text: &str) -> String {
        http::error_body(text, "errors").1
    }

    fn failure(&self, status: u16, wait: Option<Duration>, text: &str) -> Verdict {
        let secrets = self.secrets_arr();
        let reason = format!("Pushover {status}: {}", Self::errors(text));
        match status {
            // The application's monthly quota is spent (PROVIDERS.md §8): no retry within
            // the engine's backoff can succeed before the 1st of next month, so it is final
            // here and the fallback channels take over.
            429 => Verdict::Reject {
                reason: http::short(&klaxon_core::secret::redact(
                    &format!("{reason} (monthly message quota exhausted)"),
                    &secrets,
                )),
                status: Some(429),
                disable_channel: false,
            },
            500..=599 => Verdict::Retry {
                reason: http::short(&klaxon_core::secret::redact(&reason, &secrets)),
                status: Some(status),
                after: Some(wait.unwrap_or_default().max(SERVER_ERROR_FLOOR)),
                throttled: false,
            },
            // Every 4xx: "do not resend unchanged" (PROVIDERS.md §8).
            _ => http::classify(status, wait, &reason, &secrets),
        }
    }

    fn floor(v: Verdict) -> Verdict {
        match v {
            Verdict::Retry {
                reason,
                status,
                after,
                throttled,
            } => Verdict::Retry {
                reason,
                status,
                after: Some(after.unwrap_or_default().max(SERVER_ERROR_FLOOR)),
                throttled,
            },
            other => other,
        }
    }
}

/// Pushover's own word on a request: `{"status": 1}` is the only acceptance, whatever the
/// HTTP status says.
fn accepted(json: Option<&Value>) -> bool {
    json.and_then(|j| j.get("status")).and_then(Value::as_i64) == Some(1)
}

#[async_trait]
impl Channel for Pushover {
    fn kind(&self) -> &'static str {
        "pushover"
    }

    fn limits(&self, _target: Option<&str>) -> Vec<LimitKey> {
        vec![LimitKey {
            key: self.key.clone(),
            rate: PER_APP,
        }]
    }

    async fn send(&self, n: &Notification, _cx: &SendContext) -> SendReport {
        let (content, note) = self.words.content(n, "pushover", Markup::Html);
        let report: SendReport = async {
            let url = format!("{}/1/messages.json", self.spec.api_base);
            let fields = self.fields(n, &content);
            let mut notes = Vec::new();
            let req = match self.pick_image(n, &mut notes) {
                None => self.http.post(url).form(&fields),
                Some((a, bytes)) => {
                    let mut form = reqwest::multipart::Form::new();
                    for (k, v) in fields {
                        form = form.text(k, v);
                    }
                    let named = |b: Vec<u8>| {
                        reqwest::multipart::Part::bytes(b).file_name(a.filename.clone())
                    };
                    // An unparsable type is sent without one; Pushover sniffs images anyway.
                    let part = match named(bytes.clone()).mime_str(&a.content_type) {
                        Ok(p) => p,
                        Err(_) => named(bytes),
                    };
                    form = form.part("attachment", part);
                    self.http.post(url).multipart(form)
                }
            };
            let secrets = self.secrets_arr();
            let (status, wait, text) = match http::exchange(req, self.timeout, &secrets).await {
                Ok(answer) => answer,
                // Pushover asks for 5 s between retries after a failed connection too.
                Err(v) => return Self::floor(v).into(),
            };
            let json: Option<Value> = serde_json::from_str(&text).ok();
            let ok = accepted(json.as_ref());
            let verdict = if (200..300).contains(&status) && ok {
                let field = |k: &str| {
                    json.as_ref()
                        .and_then(|j| j.get(k))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                if let Some(r) = field("receipt") {
                    notes.push(format!("emergency receipt {r}"));
                }
                http::delivered(field("request"))
            } else if (200..300).contains(&status) {
                // A 200 without `status: 1` is not an acceptance; resending it unchanged would
                // get the same answer.
                Verdict::reject(http::short(&klaxon_core::secret::redact(
                    &format!(
                        "Pushover {status} without status 1: {}",
                        Self::errors(&text)
                    ),
                    &secrets,
                )))
            } else {
                self.failure(status, wait, &text)
            };
            SendReport::noted(verdict, &notes)
        }
        .await;
        report.also(note)
    }

    fn secrets(&self) -> Vec<&Secret> {
        self.secrets_arr().to_vec()
    }

    /// `users/validate.json`: checks the token and user key (and devices) without sending.
    async fn check(&self) -> Health {
        let secrets = self.secrets_arr();
        let mut form = vec![
            ("token", self.spec.token.expose().to_string()),
            ("user", self.spec.user.expose().to_string()),
        ];
        if let [one] = self.spec.devices.as_slice() {
            form.push(("device", one.clone()));
        }
        let req = self
            .http
            .post(format!("{}/1/users/validate.json", self.spec.api_base))
            .form(&form);
        let (status, text) = match http::probe(req, self.timeout, &secrets).await {
            Ok(answer) => answer,
            Err(health) => return health,
        };
        let json: Option<Value> = serde_json::from_str(&text).ok();
        let ok = accepted(json.as_ref());
        if !ok {
            return Health::failed(http::short(&klaxon_core::secret::redact(
                &format!("Pushover {status}: {}", Self::errors(&text)),
                &secrets,
            )));
        }
        let devices = json
            .as_ref()
            .and_then(|j| j.get("devices"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        Health::ok(format!("Pushover user key valid, {devices} device(s)"))
    }
}
