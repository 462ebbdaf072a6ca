//! The ntfy channel against the strict fake server.

mod common;

use std::time::Duration;

use common::*;
use klaxon_channels::ntfy::Ntfy;
use klaxon_channels::{Channel, HealthState};
use klaxon_core::channel_url::{NtfyAuth, NtfySpec};
use klaxon_core::secret::Secret;
use klaxon_core::{Notification, Severity};
use klaxon_fakes::ntfy::FakeNtfy;

fn spec(fake: &FakeNtfy, auth: NtfyAuth) -> NtfySpec {
    NtfySpec {
        server: fake.url(),
        topic: "ops-alerts".into(),
        auth,
        tags: vec!["bot".into()],
        click: Some("https://example.com/dash".into()),
    }
}

fn channel(fake: &FakeNtfy) -> Ntfy {
    Ntfy::new(spec(fake, NtfyAuth::None), client(), TIMEOUT)
}

fn alert() -> Notification {
    Notification::new("Drawdown *5.2%* > 5%")
        .title("Risk breach — MNQ")
        .severity(Severity::Critical)
        .data("symbol", "MNQ")
        .tag("risk")
}

#[tokio::test]
async fn delivers_once_as_json_with_priority_tags_and_click() {
    let fake = FakeNtfy::start().await;
    let ch = channel(&fake);
    let report = send(&ch, &alert()).await;
    let klaxon_core::Verdict::Delivered {
        provider_id: Some(id),
    } = &report.verdict
    else {
        panic!("{report:?}");
    };
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(&m.id, id);
    assert!(m.json);
    assert_eq!(m.topic, "ops-alerts");
    assert_eq!(m.title.as_deref(), Some("Risk breach — MNQ"));
    assert_eq!(m.priority, 5);
    assert_eq!(m.tags, ["rotating_light", "bot", "risk"]);
    assert_eq!(m.click.as_deref(), Some("https://example.com/dash"));
    assert!(m.markdown);
    assert_eq!(m.message, "Drawdown \\*5.2%\\* \\> 5%\n\n**symbol**: MNQ");
    assert!(m.attachment.is_none());
}

#[tokio::test]
async fn first_file_goes_by_put_and_the_rest_are_noted() {
    let fake = FakeNtfy::start().await;
    let ch = channel(&fake);
    let mut n = alert();
    n.attachments.push(file(
        "chart.png",
        "image/png",
        &[0x89, b'P', b'N', b'G', 0, 1, 2],
    ));
    n.attachments.push(file("b.csv", "text/csv", b"a,b"));
    let report = send(&ch, &n).await;
    assert!(is_delivered(&report.verdict), "{report:?}");
    assert_eq!(
        report.note.as_deref(),
        Some("ntfy takes one file per message; 1 attachment(s) not sent")
    );
    let m = fake.messages().pop().unwrap();
    assert_eq!(m.method, "PUT");
    let a = m.attachment.unwrap();
    assert_eq!(a.name, "chart.png");
    assert_eq!(a.bytes, [0x89, b'P', b'N', b'G', 0, 1, 2]);
    // Non-ASCII text crossed in RFC 2047 headers and was decoded intact.
    assert_eq!(m.title.as_deref(), Some("Risk breach — MNQ"));
    assert_eq!(m.message, "Drawdown \\*5.2%\\* \\> 5%\n\n**symbol**: MNQ");
    assert_eq!(m.priority, 5);
    assert!(m.markdown);
}

#[tokio::test]
async fn a_file_of_several_megabytes_is_sent() {
    // ntfy takes files up to 15 MB; the fake must not stop at a web framework's default body
    // limit (2 MB) and make a valid upload look refused.
    let fake = FakeNtfy::start().await;
    let ch = channel(&fake);
    let mut n = alert();
    n.attachments.push(file(
        "dump.bin",
        "application/octet-stream",
        &vec![7u8; 3_000_000],
    ));
    let report = send(&ch, &n).await;
    assert!(is_delivered(&report.verdict), "{report:?}");
    let m = fake.messages().pop().unwrap();
    assert_eq!(m.attachment.unwrap().bytes.len(), 3_000_000);
}

#[tokio::test]
async fn a_file_the_server_refuses_as_too_large_leaves_the_text_to_go() {
    // A self-hosted server's attachment limit, or ntfy.sh's per-visitor quota, can be below
    // 15 MB: its 413 refuses the file, and must not lose the alert with it.
    let fake = FakeNtfy::start().await;
    let ch = channel(&fake);
    let mut n = alert();
    n.attachments
        .push(file("chart.png", "image/png", &[0x89, b'P', b'N', b'G']));
    fake.fail_next(1, 413);
    let report = send(&ch, &n).await;
    assert!(is_delivered(&report.verdict), "{report:?}");
    assert_eq!(
        report.note.as_deref(),
        Some("chart.png not sent: the ntfy server refused the file as too large (413)")
    );
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].json && msgs[0].attachment.is_none());
    assert_eq!(fake.rejected()[0].1["code"], 41301);
}

#[tokio::test]
async fn long_messages_stay_text() {
    let fake = FakeNtfy::start().await;
    let ch = channel(&fake);
    let report = send(&ch, &Notification::new("🚀*".repeat(3000))).await;
    assert!(is_delivered(&report.verdict));
    let m = fake.messages().pop().unwrap();
    assert!(
        m.attachment.is_none(),
        "the body was cut under ntfy's 4096-byte limit"
    );
    assert!(m.message.ends_with('…'));
}

#[tokio::test]
async fn credentials_are_sent_checked_and_never_shown() {
    let fake = FakeNtfy::start().await;
    fake.require_token("tk_secret_token_123");
    let ok = Ntfy::new(
        spec(&fake, NtfyAuth::Token(Secret::new("tk_secret_token_123"))),
        client(),
        TIMEOUT,
    );
    assert!(is_delivered(&send(&ok, &alert()).await.verdict));

    let wrong = Ntfy::new(
        spec(&fake, NtfyAuth::Token(Secret::new("tk_wrong_wrong_wrong"))),
        client(),
        TIMEOUT,
    );
    let report = send(&wrong, &alert()).await;
    assert!(!reject(&report.verdict));
    assert_eq!(report.verdict.status(), Some(401));
    assert!(report.verdict.reason().unwrap().contains("40101"));
    assert_no_secret(&wrong, &report);

    let anonymous = channel(&fake);
    let report = send(&anonymous, &alert()).await;
    assert_eq!(report.verdict.status(), Some(403));

    fake.require_basic("phil", "hunter2-password");
    let basic = Ntfy::new(
        spec(
            &fake,
            NtfyAuth::Basic("phil".into(), Secret::new("hunter2-password")),
        ),
        client(),
        TIMEOUT,
    );
    assert!(is_delivered(&send(&basic, &alert()).await.verdict));
    fake.stop().await;
    let report = send(&basic, &alert()).await;
    assert!(!retry(&report.verdict).0);
    assert_no_secret(&basic, &report);
    assert_eq!(fake.messages().len(), 2);
}

#[tokio::test]
async fn visitor_limit_is_a_throttled_retry() {
    let fake = FakeNtfy::start().await;
    fake.set_limit(1, Duration::from_secs(5));
    let ch = channel(&fake);
    assert!(is_delivered(&send(&ch, &alert()).await.verdict));
    let report = send(&ch, &alert()).await;
    assert_eq!(retry(&report.verdict), (true, None));
    assert!(report.verdict.reason().unwrap().contains("42901"));
    assert_eq!(fake.count_429(), 1);
    let key = &ch.limits(None)[0];
    assert_eq!(key.rate.burst, 60);
}

#[tokio::test]
async fn server_errors_retry() {
    let fake = FakeNtfy::start().await;
    let ch = channel(&fake);
    fake.fail_next(1, 500);
    let report = send(&ch, &alert()).await;
    assert_eq!(retry(&report.verdict), (false, None));
    assert!(report.verdict.reason().unwrap().contains("50001"));
}

#[tokio::test]
async fn health_check() {
    let fake = FakeNtfy::start().await;
    let ch = channel(&fake);
    assert_eq!(ch.check().await.state, HealthState::Ok);
    fake.set_healthy(false);
    assert_eq!(ch.check().await.state, HealthState::Failed);
    fake.stop().await;
    assert_eq!(ch.check().await.state, HealthState::Failed);
    assert!(fake.messages().is_empty(), "a check publishes nothing");
}
