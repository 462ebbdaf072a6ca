//! One suite every HTTP channel passes against its strict fake (STYLE.md: the same compliance
//! test for every sink). Each channel is built the way the service builds it — from its URL
//! through `channel_url::parse` and `klaxon_channels::build` — so the suite also proves the
//! build mapping. Per channel it checks: one send is one message at the provider; injected
//! 2xx/4xx/429/5xx answers become Delivered / Reject / throttled Retry / Retry; no secret shows
//! in any verdict, note, health detail or the channel spec's `Debug`, even when the host is down.
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
    // (Kind::Email, "email", …): the SMTP channel lands from the email branch with its own
    // fake server; its row, `setup` arm and `conformance!` line go here. SMTP has no HTTP
    // statuses, so its classification cases map 4xx/5xx SMTP replies instead.
];

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

/// Starts the kind's fake and builds its channel from a URL, as the service would.
async fn setup(kind: Kind) -> (Arc<dyn Channel>, Box<dyn Fake>, String) {
    let mut apis = ApiBases::default();
    let sid = klaxon_fakes::twilio::DEFAULT_ACCOUNT_SID;
    let twilio_token = klaxon_fakes::twilio::DEFAULT_AUTH_TOKEN;
    let (url, fake): (String, Box<dyn Fake>) = match kind {
        Kind::Telegram => {
            let f = FakeTelegram::start().await;
            apis.telegram = f.url();
            let token = klaxon_fakes::telegram::DEFAULT_TOKEN;
            (format!("tgram://{token}/12345"), Box::new(f))
        }
        Kind::Discord => {
            let f = FakeDiscord::start().await;
            apis.discord = f.url();
            let (id, token) = (
                klaxon_fakes::discord::DEFAULT_WEBHOOK_ID,
                klaxon_fakes::discord::DEFAULT_WEBHOOK_TOKEN,
            );
            (format!("discord://{id}/{token}"), Box::new(f))
        }
        Kind::Webhook => {
            let f = WebhookSink::start().await;
            let host = f.url().trim_start_matches("http://").to_string();
            (format!("json://{host}/hooks/klaxon"), Box::new(f))
        }
        Kind::Slack => {
            let f = FakeSlack::start().await;
            apis.slack = f.url();
            let path = klaxon_fakes::slack::DEFAULT_WEBHOOK;
            (format!("slack://{path}"), Box::new(f))
        }
        Kind::Sms => {
            let f = FakeTwilio::start().await;
            apis.twilio = f.url();
            (
                format!("twilio://{sid}:{twilio_token}@+15550001111/+15550002222"),
                Box::new(f),
            )
        }
        Kind::WhatsApp => {
            let f = FakeTwilio::start().await;
            apis.twilio = f.url();
            (
                format!(
                    "twilio://{sid}:{twilio_token}@whatsapp:+15550001111/whatsapp:+15550002222"
                ),
                Box::new(f),
            )
        }
        Kind::Ntfy => {
            let f = FakeNtfy::start().await;
            f.require_token(NTFY_TOKEN);
            let host = f.url().trim_start_matches("http://").to_string();
            (
                format!("ntfy://{host}/alerts?token={NTFY_TOKEN}"),
                Box::new(f),
            )
        }
        Kind::Pushover => {
            let f = FakePushover::start().await;
            apis.pushover = f.url();
            let (user, token) = (
                klaxon_fakes::pushover::DEFAULT_USER,
                klaxon_fakes::pushover::DEFAULT_TOKEN,
            );
            (format!("pover://{user}@{token}"), Box::new(f))
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
    };
    let debug = format!("{spec:?}");
    (klaxon_channels::build(&spec, &client()), fake, debug)
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
        assert_eq!(report.verdict.status(), Some(status), "{kind:?}");
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
        | (On429::Reject, Verdict::Reject { .. }) => {}
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

macro_rules! conformance {
    ($($name:ident => $kind:expr),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn delivers_once() {
                super::delivers_once($kind).await;
            }

            #[tokio::test]
            async fn classifies_answers() {
                super::classifies($kind).await;
            }

            #[tokio::test]
            async fn no_secret_when_the_host_is_down() {
                super::no_secret_when_down($kind).await;
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
    // email => Kind::Email, — with its row in EXPECT (see there).
}
