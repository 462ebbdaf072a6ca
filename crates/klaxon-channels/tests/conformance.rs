//! One suite every HTTP channel passes against its strict fake (STYLE.md: the same compliance
//! test for every sink). Each channel is built the way the service builds it — from its URL
//! through `channel_url::parse` and `klaxon_channels::build` — so the suite also proves the
//! build mapping. Per channel it checks: one send is one message at the provider; injected
//! 2xx/4xx/429/5xx answers become Delivered / Reject / throttled Retry / Retry; no secret shows
//! in any verdict, note, health detail or the channel spec's `Debug`, even when the host is down.
//!
//! Email runs the same cases against a real SMTP server (`klaxon_fakes::smtp`): an HTTP
//! status the suite injects stands for the SMTP reply of the same class (4xx refusals → 550,
//! 429 → 421, 5xx → 451), and the verdict must carry that SMTP code.
//!
//! Adding a channel: a `Kind`, its `setup` arm (fake + URL), its row in `EXPECT`, and a
//! `conformance!` line.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use klaxon_channels::{Channel, SendReport};
use klaxon_core::channel_url::{ApiBases, Options, parse};
use klaxon_core::config::ChannelSpec;
use klaxon_core::{Notification, Severity, Verdict};
use klaxon_fakes::discord::FakeDiscord;
use klaxon_fakes::ntfy::FakeNtfy;
use klaxon_fakes::pushover::FakePushover;
use klaxon_fakes::slack::FakeSlack;
use klaxon_fakes::telegram::FakeTelegram;
use klaxon_fakes::twilio::FakeTwilio;
use klaxon_fakes::webhook::WebhookSink;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Telegram,
    Discord,
    Webhook,
    Slack,
    Sms,
    WhatsApp,
    Ntfy,
    Pushover,
    Email,
}

/// What the fake's injected 429 must become.
#[derive(Debug, Clone, Copy, PartialEq)]
enum On429 {
    /// Throttled retry carrying the provider's own wait.
    ThrottledWithWait,
    /// Throttled retry; the provider names no wait (Twilio 20429, ntfy 42901).
    Throttled,
    /// Final: Pushover's 429 means the monthly quota is spent.
    Reject,
    /// A plain retry: SMTP's 421 "slow down" is a transient reply like any 4xx.
    Retry,
}

/// Per channel: the kind it reports and its 429 rule.
const EXPECT: &[(Kind, &str, On429)] = &[
    (Kind::Telegram, "telegram", On429::ThrottledWithWait),
    (Kind::Discord, "discord", On429::ThrottledWithWait),
    (Kind::Webhook, "webhook", On429::ThrottledWithWait),
    (Kind::Slack, "slack", On429::ThrottledWithWait),
    (Kind::Sms, "sms", On429::Throttled),
    (Kind::WhatsApp, "whatsapp", On429::Throttled),
    (Kind::Ntfy, "ntfy", On429::Throttled),
    (Kind::Pushover, "pushover", On429::Reject),
    (Kind::Email, "email", On429::Retry),
];

/// The SMTP reply that stands for an injected HTTP status.
fn smtp_code(http: u16) -> u16 {
    match http {
        429 => 421,
        400..=499 => 550,
        _ => 451,
    }
}

/// The status a verdict must carry for an injected HTTP status.
fn expected_status(kind: Kind, http: u16) -> u16 {
    if kind == Kind::Email {
        smtp_code(http)
    } else {
        http
    }
}

const SMTP_USER: &str = "conformance-bot";
const SMTP_PASSWORD: &str = "conformance-smtp-password-0123";

#[async_trait]
impl Fake for klaxon_fakes::smtp::SmtpServer {
    fn delivered(&self) -> usize {
        self.received().len()
    }
    fn fail_next(&self, n: usize, status: u16) {
        klaxon_fakes::smtp::SmtpServer::fail_next(self, n, smtp_code(status));
    }
    async fn stop(&self) {
        klaxon_fakes::smtp::SmtpServer::stop(self);
    }
}

/// What the suite needs from a fake, whatever its provider.
#[async_trait]
trait Fake: Send + Sync {
    /// Messages the fake accepted.
    fn delivered(&self) -> usize;
    fn fail_next(&self, n: usize, status: u16);
    async fn stop(&self);
}

macro_rules! fake {
    ($ty:ty, |$f:ident| $count:expr) => {
        #[async_trait]
        impl Fake for $ty {
            fn delivered(&self) -> usize {
                let $f = self;
                $count
            }
            fn fail_next(&self, n: usize, status: u16) {
                <$ty>::fail_next(self, n, status)
            }
            async fn stop(&self) {
                <$ty>::stop(self).await
            }
        }
    };
}

fake!(FakeTelegram, |f| f.messages().len());
fake!(FakeDiscord, |f| f.messages().len());
fake!(WebhookSink, |f| f.count());
fake!(FakeSlack, |f| f.messages().len());
fake!(FakeTwilio, |f| f.messages().len());
fake!(FakeNtfy, |f| f.messages().len());
fake!(FakePushover, |f| f.messages().len());

const NTFY_TOKEN: &str = "tk_conformance_token_0123";
/// A webhook token as long as Discord's: the fake's default (`abc`) is too short for
/// redaction to touch, so a leak could not be told from a short word.
const DISCORD_TOKEN: &str = "conformance-discord-webhook-token-0123456789";

/// Starts the kind's fake; returns it with its base URL.
async fn start_fake(kind: Kind) -> (Box<dyn Fake>, String) {
    macro_rules! started {
        ($f:expr) => {{
            let f = $f;
            let url = f.url();
            (Box::new(f) as Box<dyn Fake>, url)
        }};
    }
    match kind {
        Kind::Telegram => started!(FakeTelegram::start().await),
        Kind::Discord => {
            let f = FakeDiscord::start().await;
            f.add_webhook(klaxon_fakes::discord::DEFAULT_WEBHOOK_ID, DISCORD_TOKEN);
            started!(f)
        }
        Kind::Webhook => started!(WebhookSink::start().await),
        Kind::Slack => started!(FakeSlack::start().await),
        Kind::Sms | Kind::WhatsApp => started!(FakeTwilio::start().await),
        Kind::Ntfy => {
            let f = FakeNtfy::start().await;
            f.require_token(NTFY_TOKEN);
            started!(f)
        }
        Kind::Pushover => started!(FakePushover::start().await),
        Kind::Email => {
            let py = klaxon_fakes::smtp::python().expect("checked by `available`");
            let f = klaxon_fakes::smtp::SmtpServer::start(
                &py,
                klaxon_fakes::smtp::SmtpMode::StartTls,
                SMTP_USER,
                SMTP_PASSWORD,
            );
            let base = format!("smtp://127.0.0.1:{}", f.port());
            (Box::new(f) as Box<dyn Fake>, base)
        }
    }
}

/// Whether the kind's provider can run here: the SMTP server needs its Python (a skip notice
/// otherwise, or a failure under `KLAXON_REQUIRE_SERVICES=1`).
fn available(kind: Kind) -> bool {
    kind != Kind::Email || klaxon_fakes::smtp::python().is_some()
}

/// Builds the kind's channel from a URL, as the service would, with its provider at `base`;
/// returns it with the channel spec's `Debug`.
fn build(kind: Kind, base: &str) -> (Arc<dyn Channel>, String) {
    let mut apis = ApiBases::default();
    let host = base.trim_start_matches("http://");
    let sid = klaxon_fakes::twilio::DEFAULT_ACCOUNT_SID;
    let twilio_token = klaxon_fakes::twilio::DEFAULT_AUTH_TOKEN;
    let url = match kind {
        Kind::Telegram => {
            apis.telegram = base.to_string();
            let token = klaxon_fakes::telegram::DEFAULT_TOKEN;
            format!("tgram://{token}/12345")
        }
        Kind::Discord => {
            apis.discord = base.to_string();
            let id = klaxon_fakes::discord::DEFAULT_WEBHOOK_ID;
            format!("discord://{id}/{DISCORD_TOKEN}")
        }
        Kind::Webhook => format!("json://{host}/hooks/klaxon"),
        Kind::Slack => {
            apis.slack = base.to_string();
            let path = klaxon_fakes::slack::DEFAULT_WEBHOOK;
            format!("slack://{path}")
        }
        Kind::Sms => {
            apis.twilio = base.to_string();
            format!("twilio://{sid}:{twilio_token}@+15550001111/+15550002222")
        }
        Kind::WhatsApp => {
            apis.twilio = base.to_string();
            format!("twilio://{sid}:{twilio_token}@whatsapp:+15550001111/whatsapp:+15550002222")
        }
        Kind::Ntfy => format!("ntfy://{host}/alerts?token={NTFY_TOKEN}"),
        Kind::Pushover => {
            apis.pushover = base.to_string();
            let (user, token) = (
                klaxon_fakes::pushover::DEFAULT_USER,
                klaxon_fakes::pushover::DEFAULT_TOKEN,
            );
            format!("pover://{user}@{token}")
        }
        Kind::Email => {
            let hostport = base.trim_start_matches("smtp://");
            format!(
                "mailto://{SMTP_USER}:{SMTP_PASSWORD}@{hostport}?to=ops@example.com&from=alerts@example.com&verify=no"
            )
        }
    };
    let provider = parse(&url, &Options::default(), &apis)
        .unwrap_or_else(|e| panic!("{kind:?} URL does not parse: {e}"));
    let spec = ChannelSpec {
        name: format!("{kind:?}").to_lowercase(),
        provider,
        enabled: true,
        rate_limit: None,
        timeout: TIMEOUT,
        fallback: Vec::new(),
        fallback_after: Duration::from_secs(60),
        retry: None,
        policy: Default::default(),
    };
    let debug = format!("{spec:?}");
    (klaxon_channels::build(&spec, &client()), debug)
}

/// Starts the kind's fake and builds its channel against it.
async fn setup(kind: Kind) -> (Arc<dyn Channel>, Box<dyn Fake>, String) {
    let (fake, base) = start_fake(kind).await;
    let (ch, debug) = build(kind, &base);
    (ch, fake, debug)
}

fn expect(kind: Kind) -> (&'static str, On429) {
    let (_, name, on429) = EXPECT
        .iter()
        .find(|(k, _, _)| *k == kind)
        .unwrap_or_else(|| panic!("{kind:?} has no row in EXPECT"));
    (name, *on429)
}

/// Text that breaks naive markup and naive length handling on every provider.
fn hostile() -> Notification {
    Notification::new("P&L <b>*down*</b> _5%_ [x](y) 🚀 `code` > ~~")
        .title("Risk <breach> & *more*")
        .severity(Severity::Error)
        .data("symbol", "MNQ")
        .data("price", 23488.75)
}

fn assert_clean(kind: Kind, ch: &dyn Channel, report: &SendReport) {
    let shown = format!(
        "{} {} {report:?}",
        report.verdict.reason().unwrap_or(""),
        report.note.as_deref().unwrap_or("")
    );
    for s in ch.secrets() {
        assert!(
            !shown.contains(s.expose()),
            "{kind:?} leaked a secret: {shown}"
        );
    }
}

async fn delivers_once(kind: Kind) {
    let (ch, fake, debug) = setup(kind).await;
    assert_eq!(ch.kind(), expect(kind).0);
    assert!(!ch.secrets().is_empty(), "{kind:?} declares its secrets");
    for s in ch.secrets() {
        assert!(
            !debug.contains(s.expose()),
            "{kind:?} spec Debug shows a secret: {debug}"
        );
    }
    let report = send(ch.as_ref(), &hostile()).await;
    assert!(is_delivered(&report.verdict), "{kind:?}: {report:?}");
    assert_eq!(fake.delivered(), 1, "{kind:?}: one send, one message");
    assert_clean(kind, ch.as_ref(), &report);
}

async fn classifies(kind: Kind) {
    let (ch, fake, _) = setup(kind).await;
    let n = hostile();
    for status in [400, 403] {
        fake.fail_next(1, status);
        let report = send(ch.as_ref(), &n).await;
        assert!(
            matches!(report.verdict, Verdict::Reject { .. }),
            "{kind:?} {status}: {report:?}"
        );
        assert_eq!(
            report.verdict.status(),
            Some(expected_status(kind, status)),
            "{kind:?}"
        );
        assert_clean(kind, ch.as_ref(), &report);
    }
    fake.fail_next(1, 429);
    let report = send(ch.as_ref(), &n).await;
    match (expect(kind).1, &report.verdict) {
        (
            On429::ThrottledWithWait,
            Verdict::Retry {
                throttled: true,
                after: Some(_),
                ..
            },
        )
        | (
            On429::Throttled,
            Verdict::Retry {
                throttled: true, ..
            },
        )
        | (On429::Reject, Verdict::Reject { .. })
        | (
            On429::Retry,
            Verdict::Retry {
                throttled: false, ..
            },
        ) => {}
        (want, got) => panic!("{kind:?} 429: want {want:?}, got {got:?}"),
    }
    assert_clean(kind, ch.as_ref(), &report);
    for status in [500, 502, 503] {
        fake.fail_next(1, status);
        let report = send(ch.as_ref(), &n).await;
        assert!(
            matches!(
                report.verdict,
                Verdict::Retry {
                    throttled: false,
                    ..
                }
            ),
            "{kind:?} {status}: {report:?}"
        );
        assert_clean(kind, ch.as_ref(), &report);
    }
    assert_eq!(
        fake.delivered(),
        0,
        "{kind:?}: no failed answer counts as sent"
    );
    let report = send(ch.as_ref(), &n).await;
    assert!(
        is_delivered(&report.verdict),
        "{kind:?} recovers: {report:?}"
    );
    assert_eq!(fake.delivered(), 1);
}

async fn no_secret_when_down(kind: Kind) {
    let (ch, fake, _) = setup(kind).await;
    fake.stop().await;
    let report = send(ch.as_ref(), &hostile()).await;
    assert!(
        matches!(report.verdict, Verdict::Retry { .. }),
        "{kind:?}: {report:?}"
    );
    assert_clean(kind, ch.as_ref(), &report);
    let health = ch.check().await;
    for s in ch.secrets() {
        assert!(
            !health.detail.contains(s.expose()),
            "{kind:?} health leaked: {}",
            health.detail
        );
    }
}

/// Behind a proxy that quotes the whole request in its answer (path, headers, form body),
/// every credential the channel sent comes back: none may reach a verdict, a note or a
/// health detail, whatever the status.
async fn no_secret_when_echoed(kind: Kind) {
    if kind == Kind::Email {
        // No HTTP to echo: the SMTP server's own replies are covered by `classifies`, and the
        // email tests check a wrong password's 535 for leaks.
        return;
    }
    for status in [200, 400, 401, 404, 410, 429, 500] {
        let (ch, _) = build(kind, &echo_server(status).await);
        let report = send(ch.as_ref(), &hostile()).await;
        assert_clean(kind, ch.as_ref(), &report);
        let health = ch.check().await;
        for s in ch.secrets() {
            assert!(
                !health.detail.contains(s.expose()),
                "{kind:?} {status} health leaked: {}",
                health.detail
            );
        }
    }
}

macro_rules! conformance {
    ($($name:ident => $kind:expr),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn delivers_once() {
                if available($kind) {
                    super::delivers_once($kind).await;
                }
            }

            #[tokio::test]
            async fn classifies_answers() {
                if available($kind) {
                    super::classifies($kind).await;
                }
            }

            #[tokio::test]
            async fn no_secret_when_the_host_is_down() {
                if available($kind) {
                    super::no_secret_when_down($kind).await;
                }
            }

            #[tokio::test]
            async fn no_secret_when_a_proxy_echoes_the_request() {
                if available($kind) {
                    super::no_secret_when_echoed($kind).await;
                }
            }
        }
    )*};
}

conformance! {
    telegram => Kind::Telegram,
    discord => Kind::Discord,
    webhook => Kind::Webhook,
    slack => Kind::Slack,
    sms => Kind::Sms,
    whatsapp => Kind::WhatsApp,
    ntfy => Kind::Ntfy,
    pushover => Kind::Pushover,
    email => Kind::Email,
}
