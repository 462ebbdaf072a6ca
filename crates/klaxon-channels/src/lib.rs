//! Klaxon's channels: one small module per provider behind one small trait.
//!
//! A channel renders (through `klaxon_core::render`), makes its HTTP call(s) and says what
//! happened as a [`Verdict`]. It never sleeps, retries, rate-limits or batches on its own: the
//! engine does, from the verdict and the limits the channel declares ([`Channel::limits`]).
//!
//! Adding a provider: a module with a struct holding its spec, `limits` from the provider's
//! documented numbers (named constants with their source), `send` that posts and classifies
//! with [`http::classify`], and a line in [`build`].

pub mod discord;
pub mod email;
pub mod http;
pub mod log;
pub mod ntfy;
pub mod pushover;
pub mod slack;
pub mod telegram;
pub mod twilio;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use klaxon_core::channel_url::Provider;
use klaxon_core::config::ChannelSpec;
use klaxon_core::limit::LimitKey;
use klaxon_core::template::{Content, Markup, Templates};
use klaxon_core::{Notification, Secret, Verdict};
use uuid::Uuid;

/// What the engine knows about one send.
#[derive(Debug, Clone)]
pub struct SendContext {
    /// Stable across retries: the `webhook-id` receivers deduplicate on.
    pub delivery_id: Uuid,
    /// The recipient within the channel (a chat id), as returned by [`Channel::targets`].
    pub target: Option<String>,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// The verdict plus what else the provider told us.
#[derive(Debug, Clone, PartialEq)]
pub struct SendReport {
    pub verdict: Verdict,
    /// Something the operator should know even on success (a chat migrated, markup dropped).
    pub note: Option<String>,
    /// The provider says its bucket is empty: hold further sends this long (Discord's
    /// `X-RateLimit-Remaining: 0` with `Reset-After`).
    pub hold: Option<Duration>,
}

impl SendReport {
    /// The verdict with the notes gathered on the way, joined with `; ` (none: no note).
    pub fn noted(verdict: Verdict, notes: &[String]) -> Self {
        SendReport {
            verdict,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
            hold: None,
        }
    }
}

impl SendReport {
    /// Adds `note` (if any) to the notes already there.
    pub fn also(mut self, note: Option<String>) -> Self {
        self.note = match (self.note.take(), note) {
            (Some(a), Some(b)) => Some(format!("{b}; {a}")),
            (a, b) => b.or(a),
        };
        self
    }
}

/// How a channel words its messages: the compiled templates, and the channel's name (for
/// templates configured per channel, and for the error count).
#[derive(Debug, Clone)]
pub struct Words {
    templates: Arc<Templates>,
    channel: String,
}

impl Words {
    pub fn new(templates: Arc<Templates>, channel: &str) -> Self {
        Words {
            templates,
            channel: channel.to_string(),
        }
    }

    /// The built-in templates, for a channel built without a configuration.
    pub fn defaults(channel: &str) -> Self {
        Words::new(Templates::defaults(), channel)
    }

    /// The title and body of `n` for this channel. A template that failed fell back to the
    /// built-in one; that is counted in `klaxon_template_errors_total` and returned as the note
    /// the engine logs and records with the attempt, so the operator sees why.
    pub fn content(
        &self,
        n: &Notification,
        kind: &str,
        markup: Markup,
    ) -> (Content, Option<String>) {
        let content = self.quiet(n, kind, markup);
        let note = content.error_note();
        if let Some(note) = &note {
            let event_type = n.event_type.clone().unwrap_or_default();
            tracing::debug!(channel = %self.channel, event_type = %event_type, "{note}");
            metrics::counter!(
                "klaxon_template_errors_total",
                "event_type" => event_type,
                "channel" => self.channel.clone()
            )
            .increment(content.errors.len() as u64);
        }
        (content, note)
    }

    /// The same without reporting, for planning (how many parts a message will have).
    pub fn quiet(&self, n: &Notification, kind: &str, markup: Markup) -> Content {
        self.templates.render(n, kind, &self.channel, markup)
    }
}

impl From<Verdict> for SendReport {
    fn from(verdict: Verdict) -> Self {
        SendReport {
            verdict,
            note: None,
            hold: None,
        }
    }
}

#[async_trait]
pub trait Channel: Send + Sync {
    /// The provider kind: `telegram`, `discord`, `webhook`, `slack`, `email`, `sms`, `whatsapp`,
    /// `ntfy`, `pushover`, `log`.
    fn kind(&self) -> &'static str;

    /// The deliveries `n` becomes on this channel: one per recipient, and one per message
    /// where the provider needs several (so each part is rate-limited and retried on its own).
    /// Most channels have one (`None`).
    fn targets(&self, _n: &Notification) -> Vec<Option<String>> {
        vec![None]
    }

    /// Whether `target` (one of `targets`) is for `recipient`, a target of a short notification
    /// without files. A digest is made per recipient and goes to every part for it.
    fn addresses(&self, target: Option<&str>, recipient: Option<&str>) -> bool {
        target == recipient
    }

    /// The rate limits one send to `target` counts against, with the provider's defaults.
    fn limits(&self, target: Option<&str>) -> Vec<LimitKey>;

    /// One attempt. Never panics, never sleeps; errors are verdicts.
    async fn send(&self, n: &Notification, cx: &SendContext) -> SendReport;

    /// Every secret this channel holds, so errors can be scrubbed and tests can check none leaks.
    fn secrets(&self) -> Vec<&Secret>;

    /// The provider's cheapest call that proves the credentials and the route work, without
    /// sending anything to a person (Telegram `getMe`, SMTP `NOOP`, Twilio's account fetch).
    /// Run at start-up and every few minutes; the result is shown, never acted on.
    async fn check(&self) -> Health {
        Health::not_checkable("the provider has no call that checks without sending a message")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Ok,
    Failed,
    NotCheckable,
}

/// What a health check found; `detail` is secret-free (the bot's name, the SMTP greeting, or
/// why it failed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    pub state: HealthState,
    pub detail: String,
}

impl Health {
    pub fn ok(detail: impl Into<String>) -> Self {
        Health {
            state: HealthState::Ok,
            detail: detail.into(),
        }
    }

    pub fn failed(detail: impl Into<String>) -> Self {
        Health {
            state: HealthState::Failed,
            detail: detail.into(),
        }
    }

    pub fn not_checkable(detail: impl Into<String>) -> Self {
        Health {
            state: HealthState::NotCheckable,
            detail: detail.into(),
        }
    }

    /// A failed verdict from a check call, as a health result.
    pub fn from_verdict(v: &Verdict, ok_detail: impl Into<String>) -> Self {
        match v {
            Verdict::Delivered { .. } => Health::ok(ok_detail),
            other => Health::failed(other.reason().unwrap_or("failed").to_string()),
        }
    }
}

/// Builds the channel a spec describes with the built-in templates. `http` is shared by every
/// channel (one pool of connections per provider host).
pub fn build(spec: &ChannelSpec, http: &reqwest::Client) -> Arc<dyn Channel> {
    build_with(spec, http, Templates::defaults())
}

/// Builds the channel a spec describes, wording its messages with `templates`.
pub fn build_with(
    spec: &ChannelSpec,
    http: &reqwest::Client,
    templates: Arc<Templates>,
) -> Arc<dyn Channel> {
    let words = Words::new(templates, &spec.name);
    match &spec.provider {
        Provider::Telegram(t) => Arc::new(
            telegram::Telegram::new(&spec.name, t.clone(), http.clone(), spec.timeout).words(words),
        ),
        Provider::Discord(d) => Arc::new(
            discord::Discord::new(&spec.name, d.clone(), http.clone(), spec.timeout).words(words),
        ),
        Provider::Webhook(w) => Arc::new(
            webhook::Webhook::new(&spec.name, w.clone(), http.clone(), spec.timeout).words(words),
        ),
        Provider::Slack(s) => Arc::new(
            slack::Slack::new(&spec.name, s.clone(), http.clone(), spec.timeout).words(words),
        ),
        Provider::Twilio(t) => {
            Arc::new(twilio::Twilio::new(t.clone(), http.clone(), spec.timeout).words(words))
        }
        Provider::Ntfy(n) => {
            Arc::new(ntfy::Ntfy::new(n.clone(), http.clone(), spec.timeout).words(words))
        }
        Provider::Pushover(p) => {
            Arc::new(pushover::Pushover::new(p.clone(), http.clone(), spec.timeout).words(words))
        }
        Provider::Email(e) => {
            Arc::new(email::Email::new(&spec.name, e.clone(), spec.timeout).words(words))
        }
        Provider::Log => Arc::new(log::Log::new(&spec.name).words(words)),
    }
}

/// The HTTP client every channel shares: rustls, no redirects (Standard Webhooks treats 3xx as
/// failure, and following one could carry a token elsewhere), bounded connect time.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("Klaxon/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client builds with a TLS provider installed")
}
