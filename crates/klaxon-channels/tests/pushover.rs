//! The Pushover channel against the strict fake API.

mod common;

use std::time::Duration;

use common::*;
use klaxon_channels::pushover::Pushover;
use klaxon_channels::{Channel, HealthState};
use klaxon_core::channel_url::PushoverSpec;
use klaxon_core::secret::Secret;
use klaxon_core::{Notification, Severity, Verdict};
use klaxon_fakes::pushover::{DEFAULT_TOKEN, DEFAULT_USER, FakePushover};

fn spec(fake: &FakePushover) -> PushoverSpec {
    PushoverSpec {
        api_base: fake.url(),
        user: Secret::new(DEFAULT_USER),
        token: Secret::new(DEFAULT_TOKEN),
        devices: Vec::new(),
        sound: None,
        retry: 60,
        expire: 3600,
    }
}

fn channel(fake: &FakePushover) -> Pushover {
    Pushover::new(spec(fake), client(), TIMEOUT)
}

fn alert() -> Notification {
    Notification::new("P&L <down>")
        .title("Risk breach")
        .severity(Severity::Warning)
        .data("symbol", "MNQ")
}

#[tokio::test]
async fn delivers_once_as_html_form() {
    let fake = FakePushover::start().await;
    let ch = channel(&fake);
    let n = alert();
    let report = send(&ch, &n).await;
    let Verdict::Delivered {
        provider_id: Some(id),
    } = &report.verdict
    else {
        panic!("{report:?}");
    };
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(&m.request, id);
    assert!(!m.multipart);
    assert_eq!(
        m.field("message"),
        Some("P&amp;L &lt;down&gt;\n<b>symbol</b>: MNQ")
    );
    assert_eq!(m.field("title"), Some("⚠️ Risk breach"));
    assert_eq!(m.field("priority"), Some("0"));
    assert_eq!(m.field("html"), Some("1"));
    let ts = n.created_at.timestamp().to_string();
    assert_eq!(m.field("timestamp"), Some(ts.as_str()));
    assert_eq!(m.field("retry"), None);
    assert_eq!(report.note, None);
}

#[tokio::test]
async fn critical_is_an_emergency_with_retry_expire_and_receipt() {
    let fake = FakePushover::start().await;
    let mut s = spec(&fake);
    s.devices = vec!["phone".into(), "desk".into()];
    s.sound = Some("siren".into());
    let ch = Pushover::new(s, client(), TIMEOUT);
    let report = send(&ch, &alert().severity(Severity::Critical)).await;
    assert!(is_delivered(&report.verdict), "{report:?}");
    let m = fake.messages().pop().unwrap();
    assert_eq!(m.field("priority"), Some("2"));
    assert_eq!(m.field("retry"), Some("60"));
    assert_eq!(m.field("expire"), Some("3600"));
    assert_eq!(m.field("sound"), Some("siren"));
    assert_eq!(m.field("device"), Some("phone,desk"));
    let receipt = m.receipt.unwrap();
    assert_eq!(report.note, Some(format!("emergency receipt {receipt}")));
}

#[tokio::test]
async fn first_image_is_attached_and_the_rest_noted() {
    let fake = FakePushover::start().await;
    let ch = channel(&fake);
    let mut n = alert();
    n.attachments.push(file("data.csv", "text/csv", b"a,b"));
    n.attachments
        .push(file("chart.png", "image/png", b"\x89PNG\r\n\x00\x01"));
    n.attachments
        .push(file("other.jpg", "image/jpeg", b"\xff\xd8"));
    let report = send(&ch, &n).await;
    assert!(is_delivered(&report.verdict), "{report:?}");
    assert_eq!(
        report.note.as_deref(),
        Some("Pushover takes one image per message; 2 attachment(s) not sent")
    );
    let m = fake.messages().pop().unwrap();
    assert!(m.multipart);
    let a = m.attachment.clone().unwrap();
    assert_eq!(a.filename, "chart.png");
    assert_eq!(a.content_type, "image/png");
    assert_eq!(a.bytes, b"\x89PNG\r\n\x00\x01");
    assert_eq!(m.field("token"), Some(DEFAULT_TOKEN));
    assert_eq!(m.field("html"), Some("1"));
}

#[tokio::test]
async fn an_image_just_under_five_megabytes_is_sent() {
    // Pushover takes 5,242,880 bytes; the fake must not stop at a web framework's default
    // body limit (2 MB) and make a valid upload look refused.
    let fake = FakePushover::start().await;
    let ch = channel(&fake);
    let mut n = alert();
    n.attachments
        .push(file("big.png", "image/png", &vec![7u8; 5_000_000]));
    let report = send(&ch, &n).await;
    assert!(is_delivered(&report.verdict), "{report:?}");
    let m = fake.messages().pop().unwrap();
    assert_eq!(m.attachment.unwrap().bytes.len(), 5_000_000);
}

#[tokio::test]
async fn an_image_over_five_megabytes_is_left_out() {
    let fake = FakePushover::start().await;
    let ch = channel(&fake);
    let mut n = alert();
    n.attachments
        .push(file("huge.png", "image/png", &vec![0u8; 5_242_881]));
    let report = send(&ch, &n).await;
    assert!(is_delivered(&report.verdict), "{report:?}");
    assert_eq!(
        report.note.as_deref(),
        Some("huge.png (5242881 bytes) is over Pushover's 5 MB limit and was not sent")
    );
    let m = fake.messages().pop().unwrap();
    assert!(!m.multipart && m.attachment.is_none());
}

#[tokio::test]
async fn bad_keys_are_rejected_and_never_shown() {
    let fake = FakePushover::start().await;
    let mut s = spec(&fake);
    s.token = Secret::new("WrongAppToken00000000000000000");
    let ch = Pushover::new(s, client(), TIMEOUT);
    let report = send(&ch, &alert()).await;
    assert!(!reject(&report.verdict));
    assert!(
        report
            .verdict
            .reason()
            .unwrap()
            .contains("application token is invalid")
    );
    assert_no_secret(&ch, &report);
    let health = ch.check().await;
    assert_eq!(health.state, HealthState::Failed);
    assert!(!health.detail.contains("WrongAppToken"));

    let mut s = spec(&fake);
    s.user = Secret::new("WrongUserKey000000000000000000");
    let ch = Pushover::new(s, client(), TIMEOUT);
    let report = send(&ch, &alert()).await;
    assert_eq!(report.verdict.status(), Some(400));
    assert_no_secret(&ch, &report);
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn spent_quota_is_final() {
    let fake = FakePushover::start().await;
    fake.set_quota_remaining(0);
    let ch = channel(&fake);
    let report = send(&ch, &alert()).await;
    assert!(!reject(&report.verdict), "{report:?}");
    assert_eq!(report.verdict.status(), Some(429));
    assert!(report.verdict.reason().unwrap().contains("quota"));
}

#[tokio::test]
async fn server_errors_and_dead_hosts_wait_at_least_five_seconds() {
    let fake = FakePushover::start().await;
    let ch = channel(&fake);
    fake.fail_next(1, 502);
    let report = send(&ch, &alert()).await;
    assert_eq!(
        retry(&report.verdict),
        (false, Some(Duration::from_secs(5)))
    );
    fake.stop().await;
    let report = send(&ch, &alert()).await;
    assert_eq!(
        retry(&report.verdict),
        (false, Some(Duration::from_secs(5)))
    );
    assert_no_secret(&ch, &report);
}

#[tokio::test]
async fn check_validates_without_sending() {
    let fake = FakePushover::start().await;
    let ch = channel(&fake);
    let health = ch.check().await;
    assert_eq!(health.state, HealthState::Ok, "{health:?}");
    assert_eq!(health.detail, "Pushover user key valid, 2 device(s)");
    assert_eq!(fake.validations(), 1);
    assert!(fake.messages().is_empty());
    let keys = ch.limits(None);
    assert!(!keys[0].key.contains(DEFAULT_TOKEN));
}
