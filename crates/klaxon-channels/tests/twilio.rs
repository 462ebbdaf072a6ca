//! The Twilio SMS and WhatsApp channel against the strict fake Messages API, including
//! segment counts checked against the fake's own (independently written) Twilio rules.

mod common;

use std::time::Duration;

use common::*;
use klaxon_channels::twilio::Twilio;
use klaxon_channels::{Channel, HealthState};
use klaxon_core::channel_url::TwilioSpec;
use klaxon_core::render::sms::{self, Encoding};
use klaxon_core::secret::Secret;
use klaxon_core::{Notification, Severity};
use klaxon_fakes::twilio::{DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilio, count_segments};
use proptest::prelude::*;

fn spec(fake: &FakeTwilio, from: &str, to: &[&str]) -> TwilioSpec {
    TwilioSpec {
        api_base: fake.url(),
        account_sid: DEFAULT_ACCOUNT_SID.into(),
        auth_token: Secret::new(DEFAULT_AUTH_TOKEN),
        from: from.into(),
        to: to.iter().map(|t| t.to_string()).collect(),
        max_segments: 2,
    }
}

fn sms_channel(fake: &FakeTwilio) -> Twilio {
    Twilio::new(
        spec(fake, "+15550001111", &["+15550002222", "+15550003333"]),
        client(),
        TIMEOUT,
    )
}

fn alert() -> Notification {
    Notification::new("Drawdown 5.2% > 5%")
        .title("Risk breach")
        .severity(Severity::Warning)
        .data("symbol", "MNQ")
}

#[tokio::test]
async fn one_message_per_recipient_with_the_sid() {
    let fake = FakeTwilio::start().await;
    let ch = sms_channel(&fake);
    assert_eq!(ch.kind(), "sms");
    let n = alert();
    let targets = ch.targets(&n);
    assert_eq!(targets.len(), 2);
    for t in &targets {
        let report = ch.send(&n, &cx(t.as_deref())).await;
        let klaxon_core::Verdict::Delivered {
            provider_id: Some(sid),
        } = &report.verdict
        else {
            panic!("{report:?}");
        };
        assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
        assert_eq!(report.note.as_deref(), Some("1 SMS segment(s)"));
    }
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].to, "+15550002222");
    assert_eq!(msgs[1].to, "+15550003333");
    assert_eq!(msgs[0].from.as_deref(), Some("+15550001111"));
    assert_eq!(
        msgs[0].body,
        "[WARNING] Risk breach: MNQ - Drawdown 5.2% > 5%"
    );
    assert_eq!(msgs[0].encoding, "GSM-7");
}

#[tokio::test]
async fn segment_counts_match_twilios() {
    let fake = FakeTwilio::start().await;
    let mut s = spec(&fake, "+15550001111", &["+15550002222"]);
    s.max_segments = 3;
    let ch = Twilio::new(s, client(), TIMEOUT);
    let texts = [
        "short and plain".to_string(),
        "x".repeat(400),
        "{[~]}|^€\\".repeat(40),
        "é ñ ü Ä §".repeat(30),
        "Цена выросла на 5%".repeat(10),
        "🚀".repeat(90),
        format!("{}🚀", "a".repeat(150)),
    ];
    for text in texts {
        let n = Notification::new(text.clone()).title("t");
        let body = ch.body(&n);
        let ours = sms::segments(&body);
        assert!(ours.count <= 3, "{body}");
        let report = send(&ch, &n).await;
        assert!(is_delivered(&report.verdict), "{report:?}");
        let got = fake.messages().pop().unwrap();
        assert_eq!(got.body, body);
        assert_eq!(got.num_segments as usize, ours.count, "{body}");
        let enc = if ours.encoding == Encoding::Gsm7 {
            "GSM-7"
        } else {
            "UCS-2"
        };
        assert_eq!(got.encoding, enc);
        assert_eq!(report.note, Some(format!("{} SMS segment(s)", ours.count)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Klaxon's count and the fake's agree on any mix of basic, extension, accented, Cyrillic
    /// and astral characters, and a cut body never exceeds the budget.
    #[test]
    fn counts_agree(text in "[a-z €\\[\\]{}~|^\\\\éñÄжЦ🚀😀\n]{0,400}", max in 1usize..5) {
        let ours = sms::segments(&text);
        let (enc, count) = count_segments(&text);
        prop_assert_eq!(ours.count as u32, count);
        prop_assert_eq!(ours.encoding == Encoding::Gsm7, enc == "GSM-7");
        let cut = sms::fit_segments(&text, max);
        prop_assert!(count_segments(&cut).1 as usize <= max);
    }
}

#[tokio::test]
async fn whatsapp_has_no_segments_and_may_be_long() {
    let fake = FakeTwilio::start().await;
    let ch = Twilio::new(
        spec(&fake, "whatsapp:+15550001111", &["whatsapp:+15550002222"]),
        client(),
        TIMEOUT,
    );
    assert_eq!(ch.kind(), "whatsapp");
    let n = Notification::new("y".repeat(1200)).title("Fill *now*");
    let report = send(&ch, &n).await;
    assert!(is_delivered(&report.verdict), "{report:?}");
    assert_eq!(report.note, None);
    let got = fake.messages().pop().unwrap();
    assert_eq!(got.to, "whatsapp:+15550002222");
    assert!(got.body.starts_with("*ℹ️ Fill ∗now∗*\nyyy"), "{}", got.body);
    assert!(got.body.chars().count() > 1000);
}

#[tokio::test]
async fn messaging_service_sends_without_from() {
    let fake = FakeTwilio::start().await;
    let service = format!("MG{}", "0".repeat(32));
    let ch = Twilio::new(spec(&fake, &service, &["+15550002222"]), client(), TIMEOUT);
    assert!(is_delivered(&send(&ch, &alert()).await.verdict));
    let got = fake.messages().pop().unwrap();
    assert_eq!(got.from, None);
    assert_eq!(got.messaging_service_sid, Some(service));
}

#[tokio::test]
async fn bad_numbers_and_channel_mix_are_permanent() {
    let fake = FakeTwilio::start().await;
    let ch = Twilio::new(spec(&fake, "+15550001111", &["12345"]), client(), TIMEOUT);
    let report = send(&ch, &alert()).await;
    assert!(!reject(&report.verdict));
    assert!(report.verdict.reason().unwrap().contains("21211"));
    let ch = Twilio::new(
        spec(&fake, "+15550001111", &["whatsapp:+15550002222"]),
        client(),
        TIMEOUT,
    );
    let report = send(&ch, &alert()).await;
    assert!(report.verdict.reason().unwrap().contains("21910"));
    assert_eq!(report.verdict.status(), Some(400));
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn wrong_token_is_rejected_and_never_shown() {
    let fake = FakeTwilio::start().await;
    let mut s = spec(&fake, "+15550001111", &["+15550002222"]);
    s.auth_token = Secret::new("wrong-token-wrong-token");
    let ch = Twilio::new(s, client(), TIMEOUT);
    let report = send(&ch, &alert()).await;
    assert!(!reject(&report.verdict));
    assert_eq!(report.verdict.status(), Some(401));
    assert!(report.verdict.reason().unwrap().contains("20003"));
    assert_no_secret(&ch, &report);
    let health = ch.check().await;
    assert_eq!(health.state, HealthState::Failed);
    assert!(!health.detail.contains("wrong-token"));
}

#[tokio::test]
async fn too_many_requests_is_a_throttled_retry() {
    let fake = FakeTwilio::start().await;
    fake.set_limit(1, Duration::from_secs(5));
    let ch = sms_channel(&fake);
    assert!(is_delivered(&send(&ch, &alert()).await.verdict));
    let report = send(&ch, &alert()).await;
    // Twilio sends no Retry-After with 20429: the engine's backoff decides the wait.
    assert_eq!(retry(&report.verdict), (true, None));
    assert!(report.verdict.reason().unwrap().contains("20429"));
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test]
async fn server_errors_and_dead_hosts_retry() {
    let fake = FakeTwilio::start().await;
    let ch = sms_channel(&fake);
    fake.fail_next(1, 503);
    let report = send(&ch, &alert()).await;
    assert_eq!(retry(&report.verdict), (false, None));
    fake.stop().await;
    let report = send(&ch, &alert()).await;
    assert!(!retry(&report.verdict).0);
    assert_no_secret(&ch, &report);
}

#[tokio::test]
async fn files_are_not_sent_by_sms() {
    let fake = FakeTwilio::start().await;
    let ch = sms_channel(&fake);
    let mut n = alert();
    n.attachments.push(file("chart.png", "image/png", b"hi"));
    let report = send(&ch, &n).await;
    assert!(is_delivered(&report.verdict));
    assert_eq!(
        report.note.as_deref(),
        Some("Twilio SMS cannot carry files; 1 attachment(s) not sent; 1 SMS segment(s)")
    );
}

#[tokio::test]
async fn check_fetches_the_account() {
    let fake = FakeTwilio::start().await;
    let ch = sms_channel(&fake);
    let health = ch.check().await;
    assert_eq!(health.state, HealthState::Ok, "{health:?}");
    assert!(health.detail.contains("active"));
    fake.set_account_status(DEFAULT_ACCOUNT_SID, "suspended");
    let health = ch.check().await;
    assert_eq!(health.state, HealthState::Failed);
    assert!(fake.messages().is_empty(), "a check sends nothing");
    let keys = ch.limits(Some("+15550002222"));
    assert_eq!(
        keys[0].key,
        format!("twilio:{DEFAULT_ACCOUNT_SID}:+15550001111")
    );
    // One segment a second: a two-segment budget spaces messages two intervals apart.
    assert_eq!(keys[0].rate.interval(), Duration::from_millis(2060));
}
