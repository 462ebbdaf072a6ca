//! Fallback chains and health checks, end to end: the real service against strict fakes.

mod common;

use std::time::Duration;

use common::TestServer;
use klaxon_fakes::discord::FakeDiscord;
use klaxon_fakes::telegram::{DEFAULT_TOKEN, FakeTelegram};
use klaxon_fakes::webhook::WebhookSink;
use serde_json::{Value, json};

fn base(extra: &str) -> String {
    format!(
        r#"
[store]
url = "{{db}}"
[delivery]
health_interval = "1h"
[delivery.retry]
retries = 1
base = "50ms"
jitter = 0.0
{extra}
"#
    )
}

async fn send(s: &TestServer, body: Value) -> String {
    s.send(body).await
}

fn by_channel<'a>(v: &'a Value, channel: &str) -> Vec<&'a Value> {
    v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["channel"] == channel)
        .collect()
}

/// Waits until `channel` has a delivered delivery of notification `id`.
async fn wait_delivered_on(s: &TestServer, id: &str, channel: &str, timeout: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (_, v) = s.get(&format!("/api/v1/notifications/{id}")).await;
        if by_channel(&v, channel)
            .iter()
            .any(|d| d["status"] == "delivered")
        {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered on {channel} in {timeout:?}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_dead_primary_delivers_through_the_chain_recorded_on_every_delivery() {
    common::crypto();
    let tg = FakeTelegram::start().await;
    tg.chat_not_found(111);
    let dc = FakeDiscord::start().await;
    dc.add_webhook("42", "tok");
    dc.delete_webhook("42");
    let sink = WebhookSink::start().await;
    // Telegram → Discord → webhook: the first two fail for good, the third takes it.
    let cfg = base(&format!(
        r#"
[channels.tg]
url = "tgram://{DEFAULT_TOKEN}/111"
fallback = ["dc", "hook"]
[channels.dc]
url = "discord://42/tok"
[channels.hook]
url = "{}"
"#,
        common::json_url(&sink)
    ));
    let s = TestServer::start_env(
        &cfg,
        &[
            ("KLAXON_TELEGRAM_API", &tg.url()),
            ("KLAXON_DISCORD_API", &dc.url()),
        ],
    )
    .await;
    let id = send(
        &s,
        json!({"title": "Margin call", "message": "Equity 12% below maintenance", "severity": "critical", "channels": ["tg"]}),
    )
    .await;
    let v = wait_delivered_on(&s, &id, "hook", Duration::from_secs(20)).await;
    assert_eq!(sink.count(), 1, "delivered once through the last fallback");
    let got = &sink.received()[0];
    assert_eq!(got.body["title"], "Margin call");

    let tg_d = by_channel(&v, "tg");
    let dc_d = by_channel(&v, "dc");
    let hook_d = by_channel(&v, "hook");
    assert_eq!((tg_d.len(), dc_d.len(), hook_d.len()), (1, 1, 1), "{v:#}");
    assert_eq!(tg_d[0]["status"], "dead");
    assert_eq!(tg_d[0]["fell_back_to"], "dc");
    assert_eq!(dc_d[0]["fallback_of"], tg_d[0]["id"]);
    assert_eq!(dc_d[0]["status"], "dead");
    assert_eq!(dc_d[0]["fell_back_to"], "hook");
    assert_eq!(hook_d[0]["fallback_of"], dc_d[0]["id"]);
    assert_eq!(hook_d[0]["fell_back_to"], Value::Null);
    // The primary says why it failed.
    assert!(
        tg_d[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("chat not found"),
        "{v:#}"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_open_circuit_hands_waiting_deliveries_to_the_fallback_after_fallback_after() {
    common::crypto();
    let down = WebhookSink::start().await;
    down.set_status_for_all(503);
    let backup = WebhookSink::start().await;
    let cfg = format!(
        r#"
[store]
url = "{{db}}"
[delivery]
health_interval = "1h"
[delivery.retry]
retries = 10
base = "200ms"
jitter = 0.0
[delivery.breaker]
threshold = 2
cooldown = "1h"
[channels.primary]
url = "{}"
fallback = ["backup"]
fallback_after = "1s"
[channels.backup]
url = "{}"
"#,
        common::json_url(&down),
        common::json_url(&backup)
    );
    let s = TestServer::start(&cfg).await;
    let ids = [
        send(&s, json!({"message": "first", "channels": ["primary"]})).await,
        send(&s, json!({"message": "second", "channels": ["primary"]})).await,
        send(&s, json!({"message": "third", "channels": ["primary"]})).await,
    ];
    for id in &ids {
        let v = wait_delivered_on(&s, id, "backup", Duration::from_secs(20)).await;
        let p = by_channel(&v, "primary");
        assert_eq!(p[0]["status"], "dead", "{v:#}");
        assert_eq!(p[0]["fell_back_to"], "backup");
        let b = by_channel(&v, "backup");
        assert_eq!(b[0]["fallback_of"], p[0]["id"]);
    }
    // With a one-hour cool-down, retries alone would have kept them waiting: the circuit's
    // age moved them, and at least one never reached the provider at all.
    let (_, primary) = s.get("/api/v1/channels/primary").await;
    assert_eq!(primary["circuit"], "open", "{primary:#}");
    assert!(down.requests() < 3 * 11, "the open circuit held sends back");
    let moved_untried = {
        let mut n = 0;
        for id in &ids {
            let (_, v) = s.get(&format!("/api/v1/notifications/{id}")).await;
            let p = by_channel(&v, "primary");
            if p[0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("circuit open"))
            {
                n += 1;
            }
        }
        n
    };
    assert!(
        moved_untried >= 1,
        "some deliveries were moved by the circuit"
    );
    assert_eq!(backup.count(), 3);
    s.stop().await;
}

#[tokio::test]
async fn health_checks_show_in_channels_and_status() {
    common::crypto();
    let tg = FakeTelegram::start().await;
    let dc = FakeDiscord::start().await;
    dc.add_webhook("42", "tok");
    let sink = WebhookSink::start().await;
    let cfg = base(&format!(
        r#"
[channels.tg]
url = "tgram://{DEFAULT_TOKEN}/111"
[channels.badtoken]
url = "tgram://999999:WRONG-token-xyz/111"
[channels.dc]
url = "discord://42/tok"
[channels.dcgone]
url = "discord://43/tok"
[channels.hook]
url = "{}"
"#,
        common::json_url(&sink)
    ));
    let s = TestServer::start_env(
        &cfg,
        &[
            ("KLAXON_TELEGRAM_API", &tg.url()),
            ("KLAXON_DISCORD_API", &dc.url()),
        ],
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let channels = loop {
        let (_, v) = s.get("/api/v1/channels").await;
        let all = v["channels"].as_array().cloned().unwrap_or_default();
        if !all.is_empty() && all.iter().all(|c| !c["health"].is_null()) {
            break all;
        }
        assert!(tokio::time::Instant::now() < deadline, "no health: {v:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let health = |name: &str| -> (String, String) {
        let c = channels.iter().find(|c| c["name"] == name).unwrap();
        (
            c["health"]["state"].as_str().unwrap().to_string(),
            c["health"]["detail"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(health("tg"), ("ok".into(), "bot @fake_bot".into()));
    let (state, detail) = health("badtoken");
    assert_eq!(state, "failed");
    assert!(detail.contains("401"), "{detail}");
    assert!(
        !detail.contains("WRONG-token"),
        "no secret in health: {detail}"
    );
    assert_eq!(health("dc").0, "ok");
    let (state, detail) = health("dcgone");
    assert_eq!(state, "failed");
    assert!(detail.contains("Unknown Webhook"), "{detail}");
    assert_eq!(health("hook").0, "not_checkable");
    // The same in /status, and no token anywhere in it.
    let (_, status) = s.get("/status").await;
    let text = status.to_string();
    assert!(text.contains("bot @fake_bot"));
    assert!(!text.contains("WRONG-token") && !text.contains("TEST-token"));
    assert_eq!(tg.messages().len(), 0, "a health check sends nothing");
    assert_eq!(dc.messages().len(), 0);
    s.stop().await;
}

#[tokio::test]
async fn a_channel_the_provider_switched_off_hands_its_queue_to_the_fallback() {
    common::crypto();
    let gone = WebhookSink::start().await;
    gone.set_status_for_all(410);
    let backup = WebhookSink::start().await;
    let cfg = base(&format!(
        r#"
[channels.primary]
url = "{}"
fallback = ["backup"]
[channels.backup]
url = "{}"
"#,
        common::json_url(&gone),
        common::json_url(&backup)
    ));
    let s = TestServer::start(&cfg).await;
    let first = send(&s, json!({"message": "first", "channels": ["primary"]})).await;
    wait_delivered_on(&s, &first, "backup", Duration::from_secs(20)).await;
    let (_, ch) = s.get("/api/v1/channels/primary").await;
    assert_eq!(ch["state"], "disabled", "{ch:#}");
    // Sent after the 410: the channel no longer sends, so the queue moves on without a try.
    let second = send(&s, json!({"message": "second", "channels": ["primary"]})).await;
    let v = wait_delivered_on(&s, &second, "backup", Duration::from_secs(20)).await;
    let p = by_channel(&v, "primary");
    assert!(p[0]["attempts"].as_array().unwrap().is_empty(), "{v:#}");
    assert!(
        p[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("channel disabled"),
        "{v:#}"
    );
    assert_eq!(gone.requests(), 1);
    assert_eq!(backup.count(), 2);
    s.stop().await;
}

/// The classic chain: Telegram is down, the alert arrives by email through a real SMTP server
/// (STARTTLS and AUTH), and the history shows both legs.
#[tokio::test]
async fn telegram_down_falls_back_to_email_over_real_smtp() {
    use klaxon_fakes::smtp::{SmtpMode, SmtpServer, python};
    common::crypto();
    let Some(py) = python() else { return };
    let smtp = SmtpServer::start(&py, SmtpMode::StartTls, "alerts-bot", "smtp-pass-9");
    let tg = FakeTelegram::start().await;
    let tg_url = tg.url();
    tg.stop().await;
    let cfg = base(&format!(
        r#"
[channels.tg]
url = "tgram://{DEFAULT_TOKEN}/111"
fallback = ["mail"]
[channels.mail]
url = "mailto://alerts-bot:smtp-pass-9@127.0.0.1:{}?to=ops@example.com&from=alerts@example.com&verify=no"
"#,
        smtp.port()
    ));
    let s = TestServer::start_env(&cfg, &[("KLAXON_TELEGRAM_API", &tg_url)]).await;
    let id = send(
        &s,
        json!({"title": "Kill switch engaged", "message": "Daily loss limit hit", "severity": "critical", "channels": ["tg"]}),
    )
    .await;
    let v = wait_delivered_on(&s, &id, "mail", Duration::from_secs(20)).await;
    let mail = smtp.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(mail.len(), 1);
    assert!(mail[0].tls, "sent over STARTTLS");
    assert_eq!(mail[0].login.as_deref(), Some("alerts-bot"));
    assert_eq!(mail[0].rcpt_tos, ["ops@example.com"]);
    let raw = String::from_utf8_lossy(&mail[0].bytes()).into_owned();
    assert!(raw.contains("Kill switch engaged"), "{raw}");
    let tg_d = by_channel(&v, "tg");
    assert_eq!(tg_d[0]["status"], "dead");
    assert_eq!(tg_d[0]["fell_back_to"], "mail");
    assert_eq!(by_channel(&v, "mail")[0]["fallback_of"], tg_d[0]["id"]);
    // The SMTP health check (connect + NOOP) passes; nothing leaks the password.
    let (_, ch) = s.get("/api/v1/channels/mail").await;
    let text = s.get("/status").await.1.to_string() + &ch.to_string() + &v.to_string();
    assert!(!text.contains("smtp-pass-9"));
    s.stop().await;
}
