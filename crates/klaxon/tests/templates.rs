//! Templates through the running service: trading signals published to Redis reach the strict
//! fake Discord and Telegram coloured by their action (PRODUCT.md §3), and a user template that
//! fails at send time costs nothing but is visible in the notification's attempts and metrics.

mod common;

use std::time::Duration;

use common::TestServer;
use klaxon_core::render::{BLUE, GREEN, ORANGE};
use klaxon_fakes::discord::FakeDiscord;
use klaxon_fakes::telegram::FakeTelegram;
use serde_json::{Value, json};

const TOKEN: &str = "123456:TEST-token_abc";

/// Waits until `f` holds, or panics with `what` after 20 s.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fakes_config(
    tg: &FakeTelegram,
    dc: &FakeDiscord,
    extra: &str,
) -> (String, Vec<(String, String)>) {
    let cfg = format!(
        "[store]\nurl = \"{{db}}\"\n[delivery]\nhealth_interval = \"1h\"\n\
         [channels.tg]\nurl = \"tgram://{TOKEN}/111\"\n[channels.dc]\nurl = \"discord://123/abc\"\n\
         [[routes]]\nto = [\"tg\", \"dc\"]\n{extra}"
    );
    let env = vec![
        ("KLAXON_TELEGRAM_API".to_string(), tg.url()),
        ("KLAXON_DISCORD_API".to_string(), dc.url()),
    ];
    (cfg, env)
}

#[tokio::test]
async fn signals_from_redis_are_coloured_by_action_on_discord_and_telegram() {
    common::crypto();
    let Some(url) = common::redis_url() else {
        return;
    };
    let tg = FakeTelegram::start().await;
    let dc = FakeDiscord::start().await;
    let tag = klaxon_core::model::new_id().simple().to_string();
    let (signals, hooks) = (format!("signals-{tag}"), format!("webhook_signals-{tag}"));
    let (cfg, env) = fakes_config(
        &tg,
        &dc,
        &format!("[redis]\nurl = \"{url}\"\nchannels = [\"{signals}\", \"{hooks}\"]\n"),
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let s = TestServer::start_env(&cfg, &env).await;
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    let envelopes = [
        (
            &signals,
            json!({"event_type": "signal.generated", "source": "strategy_engine",
                "data": {"strategy_name": "break-and-enter", "action": "BUY", "symbol": "MNQI", "price": 23488.75}}),
        ),
        (
            &hooks,
            json!({"event_type": "webhook.signal", "data": {"webhook_name": "TV-Bot", "strategy_type": "momentum",
                "alert_message": "RSI > 70", "user_id": "u-1", "action": "SELL", "symbol": "ES", "price": 5012.25}}),
        ),
        (
            &signals,
            json!({"event_type": "signal.generated", "source": "strategy_engine",
                "data": {"strategy_name": "break-and-enter", "action": "BUY", "symbol": "MNQI", "price": 23520.5, "comment": "EXIT_50"}}),
        ),
    ];
    for (channel, envelope) in &envelopes {
        common::publish_until_heard(&mut conn, channel, &envelope.to_string()).await;
    }
    until("three embeds and three Telegram messages", || {
        dc.messages().len() >= 3 && tg.messages().len() >= 3
    })
    .await;

    let embeds: Vec<Value> = dc
        .messages()
        .iter()
        .map(|m| m.body["embeds"][0].clone())
        .collect();
    let embed = |title: &str| {
        embeds
            .iter()
            .find(|e| e["title"] == title)
            .unwrap_or_else(|| panic!("no embed titled {title}: {embeds:#?}"))
            .clone()
    };
    let buy = embed("🟢 BUY MNQI @ 23,488.75");
    assert_eq!(buy["color"], json!(GREEN));
    assert!(
        buy["description"]
            .as_str()
            .unwrap()
            .starts_with("*Strategy*: break-and-enter\n"),
        "{buy}"
    );
    let sell = embed("🔵 TV-Bot: SELL ES @ 5,012.25");
    assert_eq!(sell["color"], json!(BLUE));
    assert!(
        sell["description"]
            .as_str()
            .unwrap()
            .starts_with("🔴 **SELL** ES\nRSI > 70"),
        "{sell}"
    );
    let exit = embed("🟠 EXIT 50% (partial) MNQI @ 23,520.5");
    assert_eq!(exit["color"], json!(ORANGE));

    // The fake parses Telegram HTML as strictly as Telegram: each was accepted as sent.
    let texts: Vec<String> = tg.messages().iter().map(|m| m.text.clone()).collect();
    for head in [
        "<b>🟢 BUY MNQI @ 23,488.75</b>\n<i>Strategy</i>: break-and-enter\n",
        "<b>🔵 TV-Bot: SELL ES @ 5,012.25</b>\n🔴 <b>SELL</b> ES\nRSI &gt; 70\n",
        "<b>🟠 EXIT 50% (partial) MNQI @ 23,520.5</b>\n<i>Strategy</i>: break-and-enter\n",
    ] {
        assert!(
            texts.iter().any(|t| t.starts_with(head)),
            "no message starting {head:?} in {texts:#?}"
        );
    }
    assert!(
        tg.messages()
            .iter()
            .all(|m| m.parse_mode.as_deref() == Some("HTML"))
    );
    s.stop().await;
}

#[tokio::test]
async fn a_failing_user_template_falls_back_and_the_attempt_says_why() {
    common::crypto();
    let tg = FakeTelegram::start().await;
    let dc = FakeDiscord::start().await;
    let (cfg, env) = fakes_config(
        &tg,
        &dc,
        r#"
[templates."signal.*"]
title = "{{ data.symbol }} {{ action | action_label }}"
discord = "**{{ data.symbol }}** at {{ data.price | price }}: {{ data.comment }}"
telegram = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
"#,
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let s = TestServer::start_env(&cfg, &env).await;
    let (code, v) = s
        .post(
            "/api/v1/events",
            &json!({"event_type": "signal.generated", "data": {"action": "SELL", "symbol": "ES",
                "price": 5012.25, "comment": "*not* <b>bold</b>", "strategy_name": "s1"}}),
        )
        .await;
    assert_eq!(code, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let v = s.wait_final(&id, Duration::from_secs(30)).await;
    let deliveries = v["deliveries"].as_array().unwrap();
    assert!(
        deliveries.iter().all(|d| d["status"] == "delivered"),
        "{v:#}"
    );
    let by = |c: &str| {
        deliveries
            .iter()
            .find(|d| d["channel"] == c)
            .unwrap()
            .clone()
    };
    let tg_attempt = &by("tg")["attempts"][0];
    let why = tg_attempt["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("templates.\"signal.*\".telegram") && why.contains("fuel"),
        "{tg_attempt:#}"
    );
    assert_eq!(by("dc")["attempts"][0]["error"], Value::Null, "{v:#}");

    // Telegram got the built-in body under the user's title; Discord the user's body, escaped.
    let m = &tg.messages()[0];
    assert!(
        m.text
            .starts_with("<b>🔴 ES SELL</b>\n<i>Strategy</i>: s1\n"),
        "{}",
        m.text
    );
    let e = &dc.messages()[0].body["embeds"][0];
    assert_eq!(e["title"], "🔴 ES SELL");
    assert_eq!(
        e["description"],
        "**ES** at 5,012.25: \\*not\\* <b>bold</b>"
    );
    let metrics = s.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("klaxon_template_errors_total")
                && l.contains("channel=\"tg\"")
                && l.contains("event_type=\"signal.generated\"")),
        "{metrics}"
    );
    s.stop().await;
}
