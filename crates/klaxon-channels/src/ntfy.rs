//! ntfy (PROVIDERS.md §8): JSON publish to the server root for text, so titles and tags in any
//! script travel without header encoding; `PUT /{topic}` with the raw file and the text in
//! headers when the notification carries a file (ntfy takes one per message).

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use klaxon_core::channel_url::{NtfyAuth, NtfySpec};
use klaxon_core::limit::{LimitKey, Rate};
use klaxon_core::model::Attachment;
use klaxon_core::render::ntfy::{NtfyMessage, render_content};
use klaxon_core::template::Markup;
use klaxon_core::{Notification, Secret, Verdict};
use serde_json::{Value, json};

use crate::{Channel, Health, SendContext, SendReport, http};

/// ntfy.sh's default visitor limit (PROVIDERS.md §8 [3P], ntfy config docs
/// `visitor-request-limit-burst: 60`, `visitor-request-limit-replenish: 5s`): 60 at once, then
/// one per 5 s. The interval stretched 3 %.
pub const PER_VISITOR: Rate = Rate::new(1, Duration::from_millis(5150), 60);
/// ntfy's default `attachment-file-size-limit` (15M, config docs): a larger file is refused
/// with 413, so it is left out up front and the text still goes.
pub const ATTACHMENT_MAX: usize = 15 * 1024 * 1024;
/// ntfy's own "too many requests" code (server/errors.go `errHTTPTooManyRequestsLimitRequests`).
const TOO_MANY_REQUESTS: i64 = 42901;

pub struct Ntfy {
    /// Templates for the title and body.
    words: crate::Words,
    spec: NtfySpec,
    http: reqwest::Client,
    timeout: Duration,
    /// The visitor this channel counts as on the server: its account, or anonymous.
    key: String,
}

impl Ntfy {
    pub fn new(spec: NtfySpec, http: reqwest::Client, timeout: Duration) -> Self {
        let who = match &spec.auth {
            NtfyAuth::None => "anonymous".to_string(),
            NtfyAuth::Token(t) => http::secret_key(t),
            NtfyAuth::Basic(user, _) => format!("user:{user}"),
        };
        Ntfy {
            words: crate::Words::defaults(""),
            key: format!("ntfy:{}:{who}", spec.server),
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

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.spec.auth {
            NtfyAuth::None => req,
            NtfyAuth::Token(t) => req.bearer_auth(t.expose()),
            NtfyAuth::Basic(user, pass) => req.basic_auth(user, Some(pass.expose())),
        }
    }

    fn all_secrets(&self) -> Vec<&Secret> {
        match &self.spec.auth {
            NtfyAuth::None => Vec::new(),
            NtfyAuth::Token(t) => vec![t],
            NtfyAuth::Basic(_, p) => vec![p],
        }
    }

    fn json_request(&self, m: &NtfyMessage) -> reqwest::RequestBuilder {
        let mut body = json!({
            "topic": self.spec.topic,
            "title": m.title,
            "message": m.message,
            "priority": m.priority,
            "tags": m.tags,
            "markdown": true,
        });
        if let Some(click) = &self.spec.click {
            body["click"] = json!(click);
        }
        self.http.post(format!("{}/", self.spec.server)).json(&body)
    }

    fn file_request(
        &self,
        m: &NtfyMessage,
        file: &Attachment,
        bytes: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .put(format!("{}/{}", self.spec.server, self.spec.topic))
            .header("Filename", header_value(&file.filename))
            .header("Title", header_value(&m.title))
            .header("Message", header_value(&m.message))
            .header("Priority", m.priority.to_string())
            .header("Tags", header_value(&m.tags.join(",")))
            .header("Markdown", "yes")
            .body(bytes);
        if let Some(click) = &self.spec.click {
            req = req.header("Click", header_value(click));
        }
        req
    }

    fn failure(&self, status: u16, wait: Option<Duration>, text: &str) -> Verdict {
        let (code, error) = http::error_body(text, "error");
        let reason = match code {
            Some(c) => format!("ntfy {status} ({c}): {error}"),
            None => format!("ntfy {status}: {error}"),
        };
        let status = if code == Some(TOO_MANY_REQUESTS) {
            429
        } else {
            status
        };
        http::classify(status, wait, &reason, &self.all_secrets())
    }
}

/// ntfy decodes RFC 2047 encoded words in headers (`=?UTF-8?B?…?=`); plain ASCII goes as is.
/// Newlines are kept inside the encoding, so a multi-line message survives a header.
fn header_value(text: &str) -> String {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        text.to_string()
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    }
}

#[async_trait]
impl Channel for Ntfy {
    fn kind(&self) -> &'static str {
        "ntfy"
    }

    fn limits(&self, _target: Option<&str>) -> Vec<LimitKey> {
        vec![LimitKey {
            key: self.key.clone(),
            rate: PER_VISITOR,
        }]
    }

    async fn send(&self, n: &Notification, _cx: &SendContext) -> SendReport {
        let (content, note) = self.words.content(n, "ntfy", Markup::Ntfy);
        let report: SendReport = async {
            let m = render_content(n, &content, &self.spec.tags);
            let mut notes = Vec::new();
            let file = n.attachments.first().and_then(|first| {
                let bytes = http::decode_file(
                    first,
                    ATTACHMENT_MAX,
                    "ntfy's 15 MB attachment limit",
                    &mut notes,
                )?;
                Some((first, bytes))
            });
            notes.extend(http::attachments_note(
                "ntfy takes one file per message",
                n.attachments.len().saturating_sub(1),
            ));
            let with_file = file.is_some();
            let req = match file {
                Some((a, bytes)) => self.file_request(&m, a, bytes),
                None => self.json_request(&m),
            };
            let secrets = self.all_secrets();
            let mut answer = http::exchange(self.authorize(req), self.timeout, &secrets).await;
            if with_file && matches!(answer, Ok((413, _, _))) {
                // The server's own limit (or the visitor's attachment quota) is below ours: the
                // file cannot go, but the alert can, as text, rather than be lost with it.
                notes.push(format!(
                    "{} not sent: the ntfy server refused the file as too large (413)",
                    n.attachments[0].filename
                ));
                let req = self.json_request(&m);
                answer = http::exchange(self.authorize(req), self.timeout, &secrets).await;
            }
            let (status, wait, text) = match answer {
                Ok(answer) => answer,
                Err(v) => return v.into(),
            };
            let verdict = if (200..300).contains(&status) {
                let id = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|j| j.get("id").and_then(Value::as_str).map(str::to_string));
                http::delivered(id)
            } else {
                self.failure(status, wait, &text)
            };
            SendReport::noted(verdict, &notes)
        }
        .await;
        report.also(note)
    }

    fn secrets(&self) -> Vec<&Secret> {
        self.all_secrets()
    }

    /// `GET /v1/health`: the server is up and says so; publishes nothing.
    async fn check(&self) -> Health {
        let secrets = self.all_secrets();
        let req = self.http.get(format!("{}/v1/health", self.spec.server));
        let (status, text) = match http::probe(self.authorize(req), self.timeout, &secrets).await {
            Ok(answer) => answer,
            Err(health) => return health,
        };
        if !(200..300).contains(&status) {
            return Health::from_verdict(&self.failure(status, None, &text), "");
        }
        let healthy = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|j| j.get("healthy").and_then(Value::as_bool));
        match healthy {
            Some(true) => Health::ok(format!("ntfy server {} is healthy", self.spec.server)),
            _ => Health::failed(klaxon_core::secret::redact(
                &format!(
                    "ntfy server {} says it is not healthy: {}",
                    self.spec.server,
                    http::short(&text)
                ),
                &secrets,
            )),
        }
    }
}
