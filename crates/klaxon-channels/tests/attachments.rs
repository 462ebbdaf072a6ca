//! Attachments through the real channels against the strict fakes: Telegram's `sendPhoto` /
//! `sendDocument` as deliveries of their own, Discord's multipart `payload_json` + `files[n]`.

mod common;

use std::time::Duration;

use common::{client, cx, file};
use klaxon_channels::discord::Discord;
use klaxon_channels::telegram::Telegram;
use klaxon_channels::{Channel, SendReport};
use klaxon_core::channel_url::{DiscordSpec, TelegramSpec};
use klaxon_core::render::discord::DiscordOptions;
use klaxon_core::render::telegram::ParseMode;
use klaxon_core::{Attachment, Notification, Secret, Verdict};
use klaxon_fakes::discord::{DEFAULT_WEBHOOK_ID, DEFAULT_WEBHOOK_TOKEN, FakeDiscord};
use klaxon_fakes::telegram::{DEFAULT_TOKEN, FakeTelegram};

fn telegram(fake: &FakeTelegram, chats: &[&str], mode: ParseMode) -> Telegram {
    let spec = TelegramSpec {
        api_base: fake.url(),
        token: Secret::new(DEFAULT_TOKEN),
        chats: chats.iter().map(|c| c.to_string()).collect(),
        parse_mode: mode,
        silent: true,
        thread: Some(7),
        preview: false,
    };
    Telegram::new("tg", spec, client(), Duration::from_secs(10))
}

fn discord(fake: &FakeDiscord) -> Discord {
    let spec = DiscordSpec {
        api_base: fake.url(),
        webhook_id: DEFAULT_WEBHOOK_ID.into(),
        token: Secret::new(DEFAULT_WEBHOOK_TOKEN),
        thread_id: Some("42".into()),
        options: DiscordOptions::default(),
    };
    Discord::new("dc", spec, client(), Duration::from_secs(10))
}

/// Bytes that are not text and differ at every offset, so truncation or re-encoding shows.
fn blob(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn with_files(title: &str, files: Vec<Attachment>) -> Notification {
    let mut n = Notification::new("disk usage report attached").title(title);
    n.attachments = files;
    n
}

async fn send(ch: &dyn Channel, n: &Notification, target: &str) -> SendReport {
    ch.send(n, &cx(Some(target))).await
}

fn delivered(r: &SendReport) -> bool {
    matches!(
        r.verdict,
        Verdict::Delivered {
            provider_id: Some(_)
        }
    )
}

#[tokio::test]
async fn telegram_files_follow_the_text_as_photo_or_document() {
    let fake = FakeTelegram::start().await;
    // The engine spaces sends to a chat; this test sends a burst, so lift the fake's limits.
    fake.set_limits((100, Duration::from_secs(1)), 100, 100);
    let tg = telegram(&fake, &["111", "-100222"], ParseMode::Html);
    let png = blob(3000);
    let gif = blob(500);
    let pdf = blob(70_000);
    // Over the photo limit: still an image, but it can only go as a file.
    let big_jpeg = blob(klaxon_channels::telegram::PHOTO_MAX + 1);
    let n = with_files(
        "Disk report",
        vec![
            file("chart.png", "image/png", &png),
            file("spin.gif", "image/gif", &gif),
            file("report.pdf", "application/pdf", &pdf),
            file("huge.jpg", "image/jpeg; q=1", &big_jpeg),
        ],
    );
    let targets: Vec<String> = tg.targets(&n).into_iter().map(Option::unwrap).collect();
    assert_eq!(
        targets,
        [
            "111",
            "111#att1",
            "111#att2",
            "111#att3",
            "111#att4",
            "-100222",
            "-100222#att1",
            "-100222#att2",
            "-100222#att3",
            "-100222#att4"
        ]
    );
    for t in &targets[..5] {
        let r = send(&tg, &n, t).await;
        assert!(delivered(&r), "{t}: {r:?}");
        assert_eq!(r.note, None);
    }
    assert_eq!(fake.messages().len(), 1, "the text went once");
    let files = fake.files();
    let got: Vec<(&str, &str, Option<&str>)> = files
        .iter()
        .map(|f| (f.method.as_str(), f.chat_id.as_str(), f.filename.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("sendPhoto", "111", Some("chart.png")),
            ("sendDocument", "111", Some("spin.gif")),
            ("sendDocument", "111", Some("report.pdf")),
            ("sendDocument", "111", Some("huge.jpg")),
        ]
    );
    for (f, bytes) in files.iter().zip([&png, &gif, &pdf, &big_jpeg]) {
        assert!(f.bytes == **bytes, "{} arrived intact", f.method);
        assert!(f.disable_notification);
        assert_eq!(f.message_thread_id, Some(7));
        assert_eq!(f.parse_mode.as_deref(), Some("HTML"));
    }
    assert_eq!(files[0].content_type.as_deref(), Some("image/png"));
    assert_eq!(files[2].content_type.as_deref(), Some("application/pdf"));
    assert_eq!(
        files[2].caption_plain.as_deref(),
        Some("ℹ️ Disk report\n📎 report.pdf")
    );
    assert_eq!(fake.count_429(), 0);
}

#[tokio::test]
async fn telegram_captions_escape_hostile_names_in_every_mode() {
    let fake = FakeTelegram::start().await;
    let name = "<b>\"x\"&_*[y](z)`~>#+-=|{}.!\\.log";
    let n = with_files("</b> *bold* & _it_", vec![file(name, "text/plain", b"log")]);
    for (chat, mode) in [
        ("1", ParseMode::Html),
        ("2", ParseMode::MarkdownV2),
        ("3", ParseMode::Plain),
    ] {
        let tg = telegram(&fake, &[chat], mode);
        let r = send(&tg, &n, &format!("{chat}#att1")).await;
        assert!(delivered(&r), "{mode:?}: {r:?}");
        assert_eq!(r.note, None, "{mode:?}: no markup fallback was needed");
    }
    let files = fake.files();
    assert_eq!(files.len(), 3);
    for f in &files {
        assert_eq!(
            f.caption_plain.as_deref(),
            Some(format!("ℹ️ </b> *bold* & _it_\n📎 {name}").as_str()),
            "{:?}",
            f.parse_mode
        );
        // The caption shows the name as given; the part's name loses only its backslash.
        assert_eq!(
            f.filename.as_deref(),
            Some(name.replace('\\', "_").as_str())
        );
        assert_eq!(f.bytes, b"log");
    }
}

#[tokio::test]
async fn telegram_refuses_oversize_files_with_the_limit_named() {
    let fake = FakeTelegram::start().await;
    let tg = telegram(&fake, &["111"], ParseMode::Html);
    let n = with_files(
        "Dump",
        vec![file(
            "core.bin",
            "application/octet-stream",
            &vec![0; klaxon_channels::telegram::DOCUMENT_MAX + 1],
        )],
    );
    let r = send(&tg, &n, "111#att1").await;
    let Verdict::Reject { reason, .. } = &r.verdict else {
        panic!("{r:?}");
    };
    assert_eq!(
        reason,
        "attachment core.bin not sent: 50000001 bytes is over Telegram's 50 MB upload limit for bots"
    );
    assert_eq!(fake.requests(), 0, "nothing uploaded");
}

#[tokio::test]
async fn telegram_file_sends_keep_every_recovery() {
    let fake = FakeTelegram::start().await;
    let tg = telegram(&fake, &["-5", "404"], ParseMode::Html);
    let n = with_files("Chart", vec![file("c.png", "image/png", &blob(100))]);

    // 429 with retry_after: a throttled retry with the provider's wait, nothing recorded.
    fake.force_429(3);
    let r = send(&tg, &n, "-5#att1").await;
    match &r.verdict {
        Verdict::Retry {
            after, throttled, ..
        } => {
            assert!(*throttled);
            assert_eq!(*after, Some(Duration::from_secs(3)));
        }
        other => panic!("{other:?}"),
    }
    assert!(fake.files().is_empty());

    // A migrated group: resent to the supergroup, and the limits follow the new id.
    let fake = FakeTelegram::start().await;
    let tg = telegram(&fake, &["-5", "404"], ParseMode::Html);
    fake.migrate(-5, -1005);
    let r = send(&tg, &n, "-5#att1").await;
    assert!(delivered(&r), "{r:?}");
    assert!(
        r.note
            .as_deref()
            .unwrap()
            .contains("migrated to supergroup -1005")
    );
    assert_eq!(fake.files()[0].chat_id, "-1005");
    assert!(
        tg.limits(Some("-5#att1"))
            .iter()
            .any(|k| k.key.ends_with(":chat:-1005"))
    );

    // Markup refused: the caption goes again as plain text.
    fake.refuse_markup_next(1);
    let r = send(&tg, &n, "-5#att1").await;
    assert!(delivered(&r), "{r:?}");
    assert!(r.note.as_deref().unwrap().contains("sent as plain text"));
    let last = fake.files().pop().unwrap();
    assert_eq!(last.parse_mode, None);
    assert_eq!(last.caption.as_deref(), Some("ℹ️ Chart\n📎 c.png"));

    // An image Telegram will not show as a photo still arrives, as a file.
    fake.refuse_photos_next(1);
    let r = send(&tg, &n, "-5#att1").await;
    assert!(delivered(&r), "{r:?}");
    assert_eq!(
        r.note.as_deref(),
        Some(
            "sent as a file: Telegram refused it as a photo (\"Bad Request: PHOTO_INVALID_DIMENSIONS\")"
        )
    );
    let last = fake.files().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.filename.as_deref()),
        ("sendDocument", Some("c.png"))
    );
    assert_eq!(last.bytes, blob(100));

    // A chat that is gone is permanent.
    fake.chat_not_found("404");
    let r = send(&tg, &n, "404#att1").await;
    assert!(
        matches!(&r.verdict, Verdict::Reject { reason, .. } if reason.contains("chat not found")),
        "{r:?}"
    );
}

#[tokio::test]
async fn telegram_file_errors_never_carry_the_token() {
    let fake = FakeTelegram::start().await;
    let tg = telegram(&fake, &["1"], ParseMode::Html);
    let n = with_files("x", vec![file("a.txt", "text/plain", b"a")]);
    fake.stop().await;
    let r = send(&tg, &n, "1#att1").await;
    let reason = r.verdict.reason().expect("a transport failure").to_string();
    assert!(matches!(r.verdict, Verdict::Retry { .. }), "{r:?}");
    assert!(!reason.contains(DEFAULT_TOKEN), "{reason}");
    assert!(!format!("{r:?}").contains(DEFAULT_TOKEN));
}

#[tokio::test]
async fn discord_sends_files_as_multipart_with_the_embed() {
    let fake = FakeDiscord::start().await;
    let dc = discord(&fake);
    let csv = blob(2048);
    let png = blob(4096);
    let n = with_files(
        "Fills",
        vec![
            file("fills.csv", "text/csv", &csv),
            file("chart \"1\".png", "image/png", &png),
        ],
    );
    let r = send(&dc, &n, "").await;
    assert!(delivered(&r), "{r:?}");
    assert_eq!(r.note, None);
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert!(m.wait);
    assert_eq!(m.thread_id.as_deref(), Some("42"));
    assert_eq!(m.body["embeds"][0]["title"], "ℹ️ Fills");
    assert_eq!(
        m.body["attachments"],
        serde_json::json!([{"id": 0, "filename": "fills.csv"}, {"id": 1, "filename": "chart \"1\".png"}])
    );
    let got: Vec<(u64, &str, Option<&str>)> = m
        .files
        .iter()
        .map(|f| (f.index, f.filename.as_str(), f.content_type.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (0, "fills.csv", Some("text/csv")),
            (1, "chart \"1\".png", Some("image/png"))
        ]
    );
    assert!(m.files[0].bytes == csv && m.files[1].bytes == png);
}

#[tokio::test]
async fn discord_leaves_out_what_does_not_fit_and_says_so() {
    let fake = FakeDiscord::start().await;
    let dc = discord(&fake);
    let max = klaxon_channels::discord::UPLOAD_MAX;
    let mut files = vec![
        file("huge.bin", "application/octet-stream", &vec![1; max + 1]),
        // With the nine small files below, exactly the limit.
        file("big.bin", "application/octet-stream", &vec![2; max - 9]),
    ];
    files.extend((0..11).map(|i| file(&format!("f{i}.txt"), "text/plain", b"x")));
    let n = with_files("Many", files);
    let r = send(&dc, &n, "").await;
    assert!(delivered(&r), "{r:?}");
    assert_eq!(
        r.note.as_deref(),
        Some(
            "attachment huge.bin (10000001 bytes) not sent: over Discord's 10 MB upload limit \
             per message; attachment f9.txt not sent: Discord takes at most 10 files per message; \
             attachment f10.txt not sent: Discord takes at most 10 files per message"
        )
    );
    let m = &fake.messages()[0];
    assert_eq!(m.files.len(), 10);
    assert_eq!(m.files[0].filename, "big.bin");
    assert_eq!(m.files[0].bytes.len(), max - 9);
    assert_eq!(m.files[9].filename, "f8.txt");
}

#[tokio::test]
async fn discord_sends_the_alert_without_files_when_the_upload_is_refused() {
    let fake = FakeDiscord::start().await;
    // A server whose limit is below the channel's default.
    fake.set_upload_limit(1000);
    let dc = discord(&fake);
    let n = with_files(
        "Dump",
        vec![file("dump.bin", "application/octet-stream", &blob(5000))],
    );
    let r = send(&dc, &n, "").await;
    assert!(delivered(&r), "{r:?}");
    assert_eq!(
        r.note.as_deref(),
        Some("1 file(s) not sent: Discord refused the upload as too large (413)")
    );
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].files.is_empty());
    assert_eq!(msgs[0].body["embeds"][0]["title"], "ℹ️ Dump");
    assert_eq!(msgs[0].body.get("attachments"), None);
    assert_eq!(fake.rejected()[0].0, 413);
}

#[tokio::test]
async fn discord_multipart_keeps_rate_limit_and_gone_webhook_handling() {
    let fake = FakeDiscord::start().await;
    let dc = discord(&fake);
    let n = with_files("x", vec![file("a.txt", "text/plain", b"a")]);

    fake.fail_next(1, 429);
    let r = send(&dc, &n, "").await;
    assert!(
        matches!(
            r.verdict,
            Verdict::Retry {
                throttled: true,
                after: Some(_),
                ..
            }
        ),
        "{r:?}"
    );

    // The bucket's last slot: the channel holds further sends until it resets.
    let fresh = FakeDiscord::start().await;
    fresh.set_limit(1, Duration::from_secs(5));
    let r = send(&discord(&fresh), &n, "").await;
    assert!(delivered(&r), "{r:?}");
    assert!(r.hold.is_some_and(|h| h > Duration::from_secs(4)), "{r:?}");

    fake.delete_webhook(DEFAULT_WEBHOOK_ID);
    fake.set_limit(100, Duration::from_secs(1));
    let r = send(&dc, &n, "").await;
    assert!(
        matches!(
            r.verdict,
            Verdict::Reject {
                disable_channel: true,
                ..
            }
        ),
        "{r:?}"
    );
    assert!(!format!("{r:?}").contains(DEFAULT_WEBHOOK_TOKEN));
}

#[tokio::test]
async fn telegram_split_text_and_files_are_separate_deliveries() {
    let fake = FakeTelegram::start().await;
    fake.set_limits((100, Duration::from_secs(1)), 100, 100);
    let tg = telegram(&fake, &["9"], ParseMode::Html);
    let long: Vec<String> = (0..400).map(|i| format!("line {i} <ok> & more")).collect();
    let mut n = with_files("Long", vec![file("a.txt", "text/plain", b"a")]);
    n.message = long.join("\n");
    let targets: Vec<String> = tg.targets(&n).into_iter().map(Option::unwrap).collect();
    let parts = targets.len() - 1;
    assert!(parts >= 2, "{targets:?}");
    let mut want: Vec<String> = (1..=parts).map(|i| format!("9#{i}/{parts}")).collect();
    want.push("9#att1".into());
    assert_eq!(targets, want);
    for t in &targets {
        let r = send(&tg, &n, t).await;
        assert!(delivered(&r), "{t}: {r:?}");
    }
    assert_eq!(fake.messages().len(), parts);
    assert_eq!(fake.files().len(), 1);
}
