//! The Slack channel against the strict fake incoming webhook.

mod common;

use std::time::Duration;

use common::*;
use klaxon_channels::Channel;
use klaxon_channels::slack::Slack;
use klaxon_core::Notification;
use klaxon_core::channel_url::SlackSpec;
use klaxon_core::secret::Secret;
use klaxon_fakes::slack::{DEFAULT_WEBHOOK, FakeSlack};

fn channel(fake: &FakeSlack, path: &str) -> Slack {
    Slack::new(
        "slack",
        SlackSpec {
            api_base: fake.url(),
            token: Secret::new(path),
        },
        client(),
        TIMEOUT,
    )
}

fn alert() -> Notification {
    Notification::new("Drawdown <5.2%> & rising")
        .title("Risk breach")
        .data("symbol", "MNQ")
        .data("price", 23488.75)
}

#[tokio::test]
async fn delivers_once_with_blocks_and_colour() {
    let fake = FakeSlack::start().await;
    let ch = channel(&fake, DEFAULT_WEBHOOK);
    let report = send(&ch, &alert()).await;
    assert!(is_delivered(&report.verdict), "{report:?}");
    assert_eq!(report.note, None);
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 1);
    let body = &msgs[0].body;
    assert_eq!(msgs[0].webhook, DEFAULT_WEBHOOK);
    assert_eq!(body["attachments"][0]["color"], "#3498DB");
    let blocks = body["attachments"][0]["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["text"]["text"], "ℹ️ Risk breach");
    assert_eq!(
        blocks[1]["text"]["text"],
        "Drawdown &lt;5.2%&gt; &amp; rising"
    );
    assert_eq!(blocks[2]["fields"].as_array().unwrap().len(), 2);
    assert!(body["text"].as_str().unwrap().contains("Risk breach"));
}

#[tokio::test]
async fn files_are_not_sent_and_the_note_says_so() {
    let fake = FakeSlack::start().await;
    let ch = channel(&fake, DEFAULT_WEBHOOK);
    let mut n = alert();
    for name in ["a.png", "b.csv"] {
        n.attachments.push(file(name, "image/png", b"hi"));
    }
    let report = send(&ch, &n).await;
    assert!(is_delivered(&report.verdict));
    assert_eq!(
        report.note.as_deref(),
        Some("Slack incoming webhooks cannot carry files; 2 attachment(s) not sent")
    );
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test]
async fn gone_webhooks_disable_the_channel() {
    let fake = FakeSlack::start().await;
    let unknown = channel(&fake, "T000/B000/WRONGWRONGWRONG");
    let report = send(&unknown, &alert()).await;
    assert!(reject(&report.verdict), "404 no_service disables");
    assert!(report.verdict.reason().unwrap().contains("no_service"));
    assert_no_secret(&unknown, &report);

    fake.archive(DEFAULT_WEBHOOK);
    let ch = channel(&fake, DEFAULT_WEBHOOK);
    let report = send(&ch, &alert()).await;
    assert!(reject(&report.verdict), "410 channel_is_archived disables");
    assert_eq!(report.verdict.status(), Some(410));
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn bad_payload_and_forbidden_are_rejected_without_disabling() {
    let fake = FakeSlack::start().await;
    let ch = channel(&fake, DEFAULT_WEBHOOK);
    for status in [400, 403] {
        fake.fail_next(1, status);
        let report = send(&ch, &alert()).await;
        assert!(!reject(&report.verdict), "{status} must not disable");
        assert_eq!(report.verdict.status(), Some(status));
    }
}

#[tokio::test]
async fn rate_limit_is_a_throttled_retry_with_slacks_wait() {
    let fake = FakeSlack::start().await;
    fake.set_limit(1, Duration::from_secs(3));
    let ch = channel(&fake, DEFAULT_WEBHOOK);
    assert!(is_delivered(&send(&ch, &alert()).await.verdict));
    let report = send(&ch, &alert()).await;
    let (throttled, after) = retry(&report.verdict);
    assert!(throttled);
    // The fake's Retry-After is the whole seconds until its bucket refills (about 3).
    let after = after.expect("Retry-After is honoured");
    assert!(after >= Duration::from_secs(2) && after <= Duration::from_secs(3));
    assert_eq!(fake.count_429(), 1);
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test]
async fn server_errors_and_a_dead_host_are_retried_without_leaking_the_path() {
    let fake = FakeSlack::start().await;
    let ch = channel(&fake, DEFAULT_WEBHOOK);
    fake.fail_next(1, 500);
    let report = send(&ch, &alert()).await;
    assert_eq!(retry(&report.verdict), (false, None));
    assert!(report.verdict.reason().unwrap().contains("rollup_error"));

    fake.stop().await;
    let report = send(&ch, &alert()).await;
    assert!(!retry(&report.verdict).0);
    assert_no_secret(&ch, &report);
    assert!(
        !report
            .verdict
            .reason()
            .unwrap()
            .contains("XXXXXXXXXXXXXXXX")
    );
}

#[tokio::test]
async fn a_200_that_is_not_ok_is_delivered_with_a_note() {
    let fake = FakeSlack::start().await;
    fake.answer_ok_with("<html>portal</html>");
    let ch = channel(&fake, DEFAULT_WEBHOOK);
    let report = send(&ch, &alert()).await;
    // Resending could post twice; the operator is told instead.
    assert!(is_delivered(&report.verdict));
    assert_eq!(
        report.note.as_deref(),
        Some("Slack answered 200 with \"<html>portal</html>\" instead of \"ok\"")
    );
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test]
async fn limits_and_health() {
    let fake = FakeSlack::start().await;
    let ch = channel(&fake, DEFAULT_WEBHOOK);
    let keys = ch.limits(None);
    assert_eq!(keys.len(), 1);
    assert!(!keys[0].key.contains(DEFAULT_WEBHOOK));
    assert_eq!(keys[0].rate.count, 1);
    // Any Slack call would post a message: no check, and nothing was sent by asking.
    let health = ch.check().await;
    assert_eq!(health.state, klaxon_channels::HealthState::NotCheckable);
    assert_eq!(fake.requests(), 0);
}
