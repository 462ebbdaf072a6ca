//! Slack incoming webhooks (PROVIDERS.md §3): one Block Kit message per notification; Slack's
//! plain-text error words decide between reject, disable and retry.

use std::time::Duration;

use async_trait::async_trait;
use klaxon_core::channel_url::SlackSpec;
use klaxon_core::limit::{LimitKey, Rate};
use klaxon_core::render::slack::render_content;
use klaxon_core::template::Markup;
use klaxon_core::{Notification, Secret, Verdict};

use crate::{Channel, SendContext, SendReport, http};

/// PROVIDERS.md §3: 1 message/s per webhook, short bursts allowed [D]. Slack does not say how
/// short, so two back to back; the interval stretched 3 % like every provider default.
pub const PER_WEBHOOK: Rate = Rate::new(1, Duration::from_millis(1030), 2);

/// Answers that mean the webhook or its channel is gone for good (PROVIDERS.md §3):
/// calling again cannot help, so the channel is switched off and says why.
const GONE: &[&str] = &[
    "channel_not_found",
    "channel_is_archived",
    "no_service",
    "no_active_hooks",
];

pub struct Slack {
    /// Templates for the title and body.
    words: crate::Words,
    name: String,
    spec: SlackSpec,
    http: reqwest::Client,
    timeout: Duration,
    /// The webhook's limit key: a hash of its path, which is the credential.
    key: String,
}

impl Slack {
    pub fn new(name: &str, spec: SlackSpec, http: reqwest::Client, timeout: Duration) -> Self {
        Slack {
            words: crate::Words::defaults(name),
            name: name.to_string(),
            key: format!("slack:{}", http::secret_key(&spec.token)),
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

#[async_trait]
impl Channel for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn limits(&self, _target: Option<&str>) -> Vec<LimitKey> {
        vec![LimitKey {
            key: self.key.clone(),
            rate: PER_WEBHOOK,
        }]
    }

    async fn send(&self, n: &Notification, _cx: &SendContext) -> SendReport {
        let (content, note) = self.words.content(n, "slack", Markup::Slack);
        let report: SendReport = async {
        let url = format!(
            "{}/services/{}",
            self.spec.api_base,
            self.spec.token.expose()
        );
        let secrets = [&self.spec.token];
        let body = render_content(n, &content);
        let req = self.http.post(url).json(&body);
        let (status, wait, text) = match http::exchange(req, self.timeout, &secrets).await {
            Ok(answer) => answer,
            Err(v) => return v.into(),
        };
        let word = text.trim();
        let mut notes = Vec::new();
        notes.extend(http::attachments_note(
            "Slack incoming webhooks cannot carry files",
            n.attachments.len(),
        ));
        if (200..300).contains(&status) {
            // The docs promise exactly `ok`. Anything else on a 200 came from something that
            // is not Slack's hook endpoint (a proxy page); the post may or may not have gone
            // out, and resending risks a double, so it counts as delivered and says so.
            if word != "ok" {
                notes.push(format!(
                    "Slack answered {status} with {:?} instead of \"ok\"",
                    http::short(&klaxon_core::secret::redact(word, &secrets))
                ));
            }
            return SendReport::noted(http::delivered(None), &notes);
        }
        let reason = format!("Slack {status}: {word}");
        let verdict = if GONE.contains(&word) || status == 404 || status == 410 {
            // Whatever answered may have echoed the URL, and the URL is the credential.
            let reason = http::short(&klaxon_core::secret::redact(
                &format!("{reason} (create a new incoming webhook)"),
                &secrets,
            ));
            tracing::error!(channel = %self.name, %reason, "Slack says the webhook's channel is gone; disabling the channel");
            Verdict::Reject {
                reason,
                status: Some(status),
                disable_channel: true,
            }
        } else {
            http::classify(status, wait, &reason, &secrets)
        };
        SendReport::noted(verdict, &notes)
        }
        .await;
        report.also(note)
    }

    fn secrets(&self) -> Vec<&Secret> {
        vec![&self.spec.token]
    }
}
