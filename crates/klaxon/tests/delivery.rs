//! End to end against strict fake providers on loopback: the real service, real HTTP, real
//! SQLite. Retry schedules are shortened in config; no test asserts a duration.

mod common;

use std::time::Duration;

use common::TestServer;
use klaxon_fakes::FailMode;
use klaxon_fakes::discord::FakeDiscord;
use klaxon_fakes::telegram::{FakeTelegram, TgMessage};
use klaxon_fakes::webhook::WebhookSink;
use serde_json::{Value, json};

const TOKEN: &str = "123456:TEST-token_abc";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn fast_retries(extra: &str) -> String {
    format!(
        r#"
[store]
url = "{{db}}"
[delivery.retry]
retries = 3
base = "50ms"
jitter = 0.0
[delivery.breaker]
threshold = 3
cooldown = "300ms"
{extra}
"#
    )
}

async fn send(s: &TestServer, body: Value) -> String {
    s.send(body).await
}

fn statuses(v: &Value) -> Vec<String> {
    v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap().to_string())
        .collect()
}

async fn channel(s: &TestServer, name: &str) -> Value {
    s.get(&format!("/api/v1/channels/{name}")).await.1
}

/// Waits until every notification of a batch's answer has reached a final state.
async fn wait_batch(s: &TestServer, answer: &Value) {
    for r in answer["results"].as_array().unwrap() {
        s.wait_final(r["id"].as_str().unwrap(), Duration::from_secs(30))
            .await;
    }
}

/// The messages the fake accepted, in the order they arrived.
fn arrived(tg: &FakeTelegram) -> Vec<TgMessage> {
    let mut sent = tg.messages();
    sent.sort_by_key(|m| m.at);
    sent
}

#[tokio::test]
async fn telegram_html_split_and_multi_chat() {
    let tg = FakeTelegram::start().await;
    let cfg = fast_retries(&format!(
        "[channels.tg]\nurl = \"tgram://{TOKEN}/111/-100222\"\n"
    ));
    let s = TestServer::start_env(&cfg, &[("KLAXON_TELEGRAM_API", &tg.url())]).await;
    let long: Vec<String> = (0..200)
        .map(|i| format!("line {i}: P&L <b>{i}</b> > 0 & \"quotes\""))
        .collect();
    let id = send(
        &s,
        json!({"title": "Fills <report>", "message": long.join("\n"), "data": {"price": 23488.75}}),
    )
    .await;
    let v = s.wait_final(&id, Duration::from_secs(30)).await;
    let st = statuses(&v);
    assert!(
        st.len() >= 4 && st.iter().all(|s| s == "delivered"),
        "one delivery per chat and part: {st:?}"
    );
    let targets: Vec<&str> = v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["target"].as_str().unwrap())
        .collect();
    assert!(
        targets.iter().any(|t| t.starts_with("111#1/")),
        "parts are targets of their own: {targets:?}"
    );
    let msgs = tg.messages();
    for chat in ["111", "-100222"] {
        let parts: Vec<_> = msgs.iter().filter(|m| m.chat_id == chat).collect();
        assert!(
            parts.len() >= 2,
            "long text split into several messages for {chat}"
        );
        let plain: String = parts
            .iter()
            .map(|m| m.plain.clone())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            plain.contains("line 199: P&L <b>199</b> > 0 & \"quotes\""),
            "text arrives as written"
        );
        assert!(
            parts
                .iter()
                .all(|m| m.parse_mode.as_deref() == Some("HTML") && m.link_preview_disabled)
        );
    }
    assert_eq!(tg.count_429(), 0);
    s.stop().await;
}

#[tokio::test]
async fn telegram_bursts_stay_under_limits() {
    let tg = FakeTelegram::start().await;
    let cfg = fast_retries(&format!(
        "[channels.tg]\nurl = \"tgram://{TOKEN}/1/2/3/-1004\"\n"
    ));
    let s = TestServer::start_env(&cfg, &[("KLAXON_TELEGRAM_API", &tg.url())]).await;
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"message": format!("burst {i}")}))
        .collect();
    let (code, v) = s.post("/api/v1/notifications/batch", &json!(batch)).await;
    assert_eq!(code, 202);
    wait_batch(&s, &v).await;
    assert_eq!(tg.messages().len(), 20);
    assert_eq!(tg.count_429(), 0, "rejected: {:?}", tg.rejected());
    s.stop().await;
}

/// A chat's backlog keeps its spacing when the store is busy just as a deferred send is due.
/// Sends beyond the 1.5 s hold go back to the store; they come back half a second before their
/// slot and wait for it in memory, so a writer held across the slot delays their claim, not the
/// send. (Due at the slot itself, the third message here would go when the lock is let go, 0.6 s
/// before the fourth, and draw a 429.)
#[tokio::test]
async fn a_store_busy_at_a_deferred_slot_does_not_bunch_a_chat() {
    use sqlx::Connection;
    let tg = FakeTelegram::start().await;
    let cfg = fast_retries(&format!("[channels.tg]\nurl = \"tgram://{TOKEN}/77\"\n"));
    let s = TestServer::start_env(&cfg, &[("KLAXON_TELEGRAM_API", &tg.url())]).await;
    let batch: Vec<Value> = (0..4)
        .map(|i| json!({"message": format!("fill {i}")}))
        .collect();
    let (code, v) = s.post("/api/v1/notifications/batch", &json!(batch)).await;
    assert_eq!(code, 202);
    let first = loop {
        if let Some(m) = tg.messages().first() {
            break tokio::time::Instant::from_std(m.at);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // The third message's slot is 2 × 1.03 s after the first; hold the write lock from 0.1 s
    // before it to 0.45 s after it.
    tokio::time::sleep_until(first + Duration::from_millis(1960)).await;
    let db = format!("sqlite://{}", s.dir.path().join("klaxon.db").display());
    let mut lock = sqlx::SqliteConnection::connect(&db).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .unwrap();
    tokio::time::sleep_until(first + Duration::from_millis(2510)).await;
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    drop(lock);
    wait_batch(&s, &v).await;
    assert_eq!(tg.count_429(), 0, "rejected: {:?}", tg.rejected());
    let sent: Vec<_> = arrived(&tg).into_iter().map(|m| (m.at, m.text)).collect();
    assert_eq!(sent.len(), 4);
    for (i, (_, text)) in sent.iter().enumerate() {
        assert!(
            text.contains(&format!("fill {i}")),
            "out of order: {sent:?}"
        );
    }
    for w in sent.windows(2) {
        assert!(
            w[1].0 - w[0].0 >= Duration::from_secs(1),
            "bunched: {sent:?}"
        );
    }
    s.stop().await;
}

/// A backlog to one chat does not hold a message to another chat of the same bot. Booked
/// under one GCRA frontier per key, the fills' eight slots (7 s of one chat's 1/s) would have
/// pushed the bot's 30/s frontier 7 s out, and the risk alert to another chat would have gone
/// last, behind it.
#[tokio::test]
async fn a_backlog_to_one_chat_does_not_hold_another_chat_of_the_bot() {
    let tg = FakeTelegram::start().await;
    let cfg = fast_retries(&format!(
        "[channels.fills]\nurl = \"tgram://{TOKEN}/77\"\n\
         [channels.risk]\nurl = \"tgram://{TOKEN}/88\"\n\
         [[routes]]\nmatch = {{ tags = \"fill\" }}\nto = [\"fills\"]\n\
         [[routes]]\nmatch = {{ tags = \"risk\" }}\nto = [\"risk\"]\n"
    ));
    let s = TestServer::start_env(&cfg, &[("KLAXON_TELEGRAM_API", &tg.url())]).await;
    let fills: Vec<Value> = (0..8)
        .map(|i| json!({"message": format!("fill {i}"), "tags": ["fill"]}))
        .collect();
    let (code, v) = s.post("/api/v1/notifications/batch", &json!(fills)).await;
    assert_eq!(code, 202);
    // Once the fills' slots are booked (the first has gone), the alert.
    while tg.messages().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let alert = send(
        &s,
        json!({"message": "drawdown limit hit", "severity": "critical", "tags": ["risk"]}),
    )
    .await;
    s.wait_final(&alert, Duration::from_secs(30)).await;
    wait_batch(&s, &v).await;
    assert_eq!(tg.count_429(), 0, "rejected: {:?}", tg.rejected());
    let sent = arrived(&tg);
    let alert_at = sent.iter().position(|m| m.chat_id == "88").unwrap();
    assert!(
        alert_at <= 3,
        "the alert went {}th of {}, behind the other chat's backlog",
        alert_at + 1,
        sent.len()
    );
    s.stop().await;
}

/// A 429's `retry_after` holds every chat of the channel. A send already in flight when the 429
/// comes back cannot be recalled (the bot's window lets up to 30 go together), so the channel's
/// own `rate_limit` spaces the two chats here: the second is planned half a second after the
/// first, inside the 2 s the 429 asks for, and must wait them out.
#[tokio::test]
async fn telegram_429_retry_after_is_honoured_for_the_whole_channel() {
    let tg = FakeTelegram::start().await;
    let cfg = fast_retries(&format!(
        "[channels.tg]\nurl = \"tgram://{TOKEN}/1/2\"\nrate_limit = \"2/s\"\n"
    ));
    let s = TestServer::start_env(&cfg, &[("KLAXON_TELEGRAM_API", &tg.url())]).await;
    tg.force_429(2);
    let id = send(&s, json!({"message": "after the storm"})).await;
    let v = s.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(statuses(&v), ["delivered", "delivered"], "{v:#}");
    assert_eq!(
        tg.early_requests(),
        0,
        "no request before retry_after elapsed"
    );
    let attempts: Vec<Vec<Value>> = v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["status_code"].clone())
                .collect()
        })
        .collect();
    assert!(
        attempts.iter().any(|a| a.first() == Some(&json!(429))),
        "{attempts:?}"
    );
    assert_eq!(channel(&s, "tg").await["rate_limited"], json!(1));
    s.stop().await;
}

#[tokio::test]
async fn telegram_migrated_chat_and_markdown() {
    let tg = FakeTelegram::start().await;
    tg.migrate(-100, -1009);
    let cfg = fast_retries(&format!(
        "[channels.tg]\nurl = \"tgram://{TOKEN}/-100\"\nformat = \"markdown\"\nsilent = true\nthread = 7\n"
    ));
    let s = TestServer::start_env(&cfg, &[("KLAXON_TELEGRAM_API", &tg.url())]).await;
    let id = send(
        &s,
        json!({"title": "a_b*c", "message": "1.5% [x](y) `z` ~!#+-=|{}.\\", "tags": ["risk"]}),
    )
    .await;
    let v = s.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(statuses(&v), ["delivered"], "{v:#}");
    let m = tg.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].chat_id, "-1009", "resent to the supergroup");
    assert_eq!(m[0].parse_mode.as_deref(), Some("MarkdownV2"));
    assert!(m[0].disable_notification && m[0].message_thread_id == Some(7));
    assert!(
        m[0].plain.contains("1.5% [x](y) `z` ~!#+-=|{}.\\"),
        "{}",
        m[0].plain
    );
    s.stop().await;
}

#[tokio::test]
async fn discord_embed_id_and_deleted_webhook_disables() {
    let dc = FakeDiscord::start().await;
    let cfg = fast_retries(
        "[channels.dc]\nurl = \"discord://123/abc\"\n\n[channels.gone]\nurl = \"discord://999/zzz\"\n",
    );
    let s = TestServer::start_env(&cfg, &[("KLAXON_DISCORD_API", &dc.url())]).await;
    let id = send(&s, json!({"title": "SELL ES", "message": "@everyone filled", "channels": ["dc"], "data": {"action": "SELL", "price": 5012.25}})).await;
    let v = s.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(statuses(&v), ["delivered"]);
    assert!(
        v["deliveries"][0]["provider_id"].is_string(),
        "wait=true gives the message id"
    );
    let body = &dc.messages()[0].body;
    assert_eq!(body["embeds"][0]["title"], json!("🔴 SELL ES"));
    assert_eq!(body["embeds"][0]["color"], json!(0xE74C3C));
    assert_eq!(body["allowed_mentions"], json!({"parse": []}));

    let id = send(
        &s,
        json!({"message": "to a deleted webhook", "channels": ["gone"]}),
    )
    .await;
    let v = s.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(statuses(&v), ["dead"]);
    assert_eq!(
        v["deliveries"][0]["attempts"].as_array().unwrap().len(),
        1,
        "404 is not retried"
    );
    let c = channel(&s, "gone").await;
    assert_eq!(
        (c["state"].as_str(), c["enabled"].as_bool()),
        (Some("disabled"), Some(false)),
        "{c}"
    );
    s.stop().await;
}

#[tokio::test]
async fn discord_follows_its_rate_limit_headers() {
    let dc = FakeDiscord::start().await;
    let cfg = fast_retries("[channels.dc]\nurl = \"https://discord.com/api/webhooks/123/abc\"\n");
    let s = TestServer::start_env(&cfg, &[("KLAXON_DISCORD_API", &dc.url())]).await;
    let batch: Vec<Value> = (0..12)
        .map(|i| json!({"message": format!("n{i}")}))
        .collect();
    let (_, v) = s.post("/api/v1/notifications/batch", &json!(batch)).await;
    wait_batch(&s, &v).await;
    assert_eq!(dc.messages().len(), 12);
    assert_eq!(dc.count_429(), 0);
    s.stop().await;
}

#[tokio::test]
async fn signed_webhook_with_stable_id_across_retries() {
    let sink = WebhookSink::start_signed(SECRET).await;
    let url = common::json_url(&sink);
    let cfg = fast_retries(&format!(
        "[channels.hook]\nurl = \"{url}/in?src=klaxon\"\nsecret = \"{SECRET}\"\nheaders = {{ X-Team = \"quant\" }}\n"
    ));
    let s = TestServer::start(&cfg).await;
    sink.fail_next(2, 503);
    let id = send(&s, json!({"title": "Risk breach", "message": "Drawdown 5.2% > 5%", "severity": "warning", "tags": ["risk"]})).await;
    let v = s.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(statuses(&v), ["delivered"], "{v:#}");
    let d = &v["deliveries"][0];
    let codes: Vec<&Value> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(503), &json!(503), &json!(null)]);
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].webhook_id.as_deref(),
        d["id"].as_str(),
        "webhook-id is the delivery id"
    );
    assert_eq!(got[0].path, "/in");
    assert_eq!(got[0].body["type"], json!("warning"));
    assert_eq!(got[0].body["version"], json!("1.0"));
    assert_eq!(got[0].body["attempt"], json!(3));
    assert!(
        got[0]
            .headers
            .iter()
            .any(|(k, v)| k == "x-team" && v == "quant")
    );
    assert_eq!(sink.bad_signatures(), 0);
    s.stop().await;
}

#[tokio::test]
async fn failures_retry_then_die_and_open_the_circuit() {
    let sink = WebhookSink::start().await;
    let url = common::json_url(&sink);
    // The breaker opens after 5 failures: the doomed delivery's 4 attempts are all ordinary
    // ones (a failed half-open probe would not use up its budget).
    let cfg = fast_retries(&format!("[channels.hook]\nurl = \"{url}/\"\n"))
        .replace("threshold = 3", "threshold = 5");
    let s = TestServer::start(&cfg).await;
    sink.set_fail(FailMode::Status(500));
    let id = send(&s, json!({"message": "doomed"})).await;
    let v = s.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(statuses(&v), ["dead"]);
    assert_eq!(
        v["deliveries"][0]["attempts"].as_array().unwrap().len(),
        4,
        "1 + 3 retries"
    );
    // A fifth failure in a row opens the circuit.
    send(&s, json!({"message": "the fifth failure"})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while channel(&s, "hook").await["circuit"] == json!("closed") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the circuit never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = channel(&s, "hook").await;
    assert!(c["last_error"].as_str().unwrap().contains("500"), "{c}");
    assert!(
        matches!(c["circuit"].as_str(), Some("open" | "half_open")),
        "{c}"
    );

    // The provider recovers: the circuit's probe succeeds and new work flows.
    sink.set_fail(FailMode::None);
    let id = send(&s, json!({"message": "after recovery"})).await;
    let v = s.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(statuses(&v), ["delivered"]);
    assert_eq!(channel(&s, "hook").await["circuit"], json!("closed"));

    // 400 is permanent: one attempt, dead.
    sink.set_fail(FailMode::Status(400));
    let id = send(&s, json!({"message": "malformed for them"})).await;
    let v = s.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(v["deliveries"][0]["attempts"].as_array().unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn gone_webhook_disables_the_channel_and_survives_restart() {
    let sink = WebhookSink::start().await;
    let url = common::json_url(&sink);
    let s = TestServer::start(&fast_retries(&format!(
        "[channels.hook]\nurl = \"{url}/\"\n"
    )))
    .await;
    sink.set_status_for_all(410);
    let id = send(&s, json!({"message": "m"})).await;
    assert_eq!(
        statuses(&s.wait_final(&id, Duration::from_secs(30)).await),
        ["dead"]
    );
    let c = channel(&s, "hook").await;
    assert_eq!(c["state"], json!("disabled"), "{c}");
    assert!(c["disabled_reason"].as_str().unwrap().contains("410"));
    // Later notifications wait instead of hitting the gone endpoint.
    let id2 = send(&s, json!({"message": "waits"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, v) = s.get(&format!("/api/v1/notifications/{id2}")).await;
    assert_eq!(statuses(&v), ["pending"]);
    let s = s.restart().await;
    let c = channel(&s, "hook").await;
    assert_eq!(
        c["state"],
        json!("disabled"),
        "the switch is persisted: {c}"
    );
    assert_eq!(sink.count(), 0);
    s.stop().await;
}

#[tokio::test]
async fn scheduled_and_expired() {
    let sink = WebhookSink::start().await;
    let url = common::json_url(&sink);
    // Retries every 100 ms for long enough that expiry, not the retry budget, ends it.
    let cfg = fast_retries(&format!(
        "[channels.hook]\nurl = \"{url}/\"\nretry = {{ retries = 50, base = \"100ms\", factor = 1.0, jitter = 0.0 }}\n"
    ));
    let s = TestServer::start(&cfg).await;
    let at = chrono::Utc::now() + chrono::TimeDelta::milliseconds(700);
    let id = send(&s, json!({"message": "later", "send_at": at.to_rfc3339()})).await;
    let v = s.wait_final(&id, Duration::from_secs(30)).await;
    let delivered_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(v["deliveries"][0]["delivered_at"].clone()).unwrap();
    assert!(delivered_at >= at, "not sent before send_at");

    sink.stop().await;
    let expires = chrono::Utc::now() + chrono::TimeDelta::milliseconds(150);
    let id = send(
        &s,
        json!({"message": "stale soon", "expires_at": expires.to_rfc3339()}),
    )
    .await;
    let v = s.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(statuses(&v), ["expired"], "{v:#}");
    s.stop().await;
}

#[tokio::test]
async fn telegram_markup_refused_is_resent_once_as_plain_text() {
    let tg = FakeTelegram::start().await;
    let cfg = fast_retries(&format!("[channels.tg]\nurl = \"tgram://{TOKEN}/5\"\n"));
    let s = TestServer::start_env(&cfg, &[("KLAXON_TELEGRAM_API", &tg.url())]).await;
    tg.refuse_markup_next(1);
    let id = send(&s, json!({"title": "Fill", "message": "BUY 2 @ 23,488.75"})).await;
    let v = s.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(statuses(&v), ["delivered"]);
    assert_eq!(
        v["deliveries"][0]["attempts"].as_array().unwrap().len(),
        1,
        "recovered inside one attempt"
    );
    let m = tg.messages();
    assert_eq!((m.len(), m[0].parse_mode.as_deref()), (1, None));
    assert!(m[0].plain.contains("BUY 2 @ 23,488.75"));
    s.stop().await;
}

#[tokio::test]
async fn a_slow_provider_times_out_and_is_retried() {
    let sink = WebhookSink::start().await;
    let url = common::json_url(&sink);
    let cfg = fast_retries(&format!(
        "[channels.hook]\nurl = \"{url}/\"\ntimeout = \"200ms\"\nretry = {{ retries = 20, base = \"50ms\" }}\n"
    ));
    let s = TestServer::start(&cfg).await;
    sink.set_fail(FailMode::Slow(Duration::from_secs(2)));
    let id = send(&s, json!({"message": "slow"})).await;
    // Wait until the first attempt has timed out, then let the provider answer promptly.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = s.get(&format!("/api/v1/notifications/{id}")).await;
        if v["deliveries"][0]["attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            let err = v["deliveries"][0]["attempts"][0]["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(err.contains("timed out"), "{err}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no attempt recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sink.set_fail(FailMode::None);
    let v = s.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(statuses(&v), ["delivered"], "{v:#}");
    s.stop().await;
}

/// Dedup end to end (PRODUCT.md §7): five identical events inside a route's window make one
/// message at the receiver and four stored repeats pointing at it; the same event past the
/// window (its `timestamp` says so: nothing sleeps) is delivered again.
#[tokio::test]
async fn repeats_inside_the_dedup_window_are_suppressed() {
    let sink = WebhookSink::start().await;
    let cfg = fast_retries(&format!(
        "[channels.hook]\nurl = \"{}\"\n\n[[routes]]\nmatch = {{ event_type = \"signal.*\" }}\nto = [\"hook\"]\ndedup_window = \"5m\"\n",
        common::json_url(&sink)
    ));
    let s = TestServer::start(&cfg).await;
    let event = |at: &str| {
        json!({"event_type": "signal.generated", "source": "strategy_engine", "timestamp": at,
               "data": {"strategy_name": "break-and-enter", "action": "BUY", "symbol": "MNQI", "price": 23488.75}})
    };
    let mut answers = Vec::new();
    for at in [
        "2030-01-01T10:00:00Z",
        "2030-01-01T10:00:30Z",
        "2030-01-01T10:01:00Z",
        "2030-01-01T10:02:00Z",
        "2030-01-01T10:04:59Z",
    ] {
        let (code, v) = s.post("/api/v1/events", &event(at)).await;
        assert_eq!(code, 202, "{v}");
        answers.push(v);
    }
    let original = answers[0]["id"].as_str().unwrap().to_string();
    assert_eq!(answers[0]["status"], "accepted");
    assert_eq!(answers[0]["duplicate_of"], Value::Null);
    for a in &answers[1..] {
        assert_eq!(a["status"], "suppressed", "{a}");
        assert_eq!(a["duplicate_of"], original.as_str());
        assert_eq!(statuses(a), ["suppressed"]);
    }
    // Past the window, measured from the original.
    let (code, later) = s
        .post("/api/v1/events", &event("2030-01-01T10:05:01Z"))
        .await;
    assert_eq!(
        (code, &later["status"]),
        (202, &json!("accepted")),
        "{later}"
    );
    let later = later["id"].as_str().unwrap().to_string();

    let v = s.wait_final(&original, Duration::from_secs(20)).await;
    assert_eq!(statuses(&v), ["delivered"]);
    assert_eq!(v["repeats"], 4);
    assert_eq!(v["duplicate_of"], Value::Null);
    let v = s.wait_final(&later, Duration::from_secs(20)).await;
    assert_eq!(statuses(&v), ["delivered"]);
    assert_eq!(v["repeats"], 0);
    for a in &answers[1..] {
        let (_, r) = s
            .get(&format!(
                "/api/v1/notifications/{}",
                a["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(r["duplicate_of"], original.as_str());
        assert_eq!(statuses(&r), ["suppressed"]);
        let why = r["deliveries"][0]["last_error"].as_str().unwrap();
        assert!(why.contains(&original), "{why}");
    }
    // Suppressed deliveries are never claimed: every delivery is final, and the receiver got
    // exactly the two that were not repeats.
    let mut received: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.body["id"].as_str().unwrap().to_string())
        .collect();
    received.sort();
    let mut want = [original.clone(), later];
    want.sort();
    assert_eq!(received, want, "sent concurrently, so in any order");
    // The history says the same.
    let (_, page) = s
        .get("/api/v1/notifications?status=suppressed&limit=10")
        .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert!(items.iter().all(|i| i["duplicate_of"] == original.as_str()));
    s.stop().await;
}

/// A switched-off source's events are accepted (never an error to the sender) and recorded,
/// with every delivery `suppressed` and the reason on it; other sources are untouched.
#[tokio::test]
async fn switched_off_source_is_recorded_not_sent() {
    let sink = WebhookSink::start().await;
    let cfg = fast_retries(&format!(
        "[channels.hook]\nurl = \"{}\"\n\n[sources.webhook_signals]\nenabled = false\n\n[sources.strategy_engine.strategies]\n\"muted-*\" = false\n",
        common::json_url(&sink)
    ));
    let s = TestServer::start(&cfg).await;
    let event = |source: &str, strategy: &str| {
        json!({"event_type": "webhook.signal", "source": source,
               "data": {"strategy_name": strategy, "action": "BUY", "symbol": "ES"}})
    };
    let mut muted = Vec::new();
    for (source, strategy) in [("webhook_signals", "any"), ("strategy_engine", "muted-1")] {
        let (code, v) = s.post("/api/v1/events", &event(source, strategy)).await;
        assert_eq!(code, 202, "{v}");
        assert_eq!(v["status"], "suppressed");
        assert_eq!(statuses(&v), ["suppressed"]);
        muted.push(v["id"].as_str().unwrap().to_string());
    }
    let (code, v) = s
        .post("/api/v1/events", &event("strategy_engine", "live"))
        .await;
    assert_eq!((code, &v["status"]), (202, &json!("accepted")));
    let live = v["id"].as_str().unwrap().to_string();
    s.wait_final(&live, Duration::from_secs(20)).await;
    for (id, why) in muted.iter().zip([
        "source `webhook_signals` is switched off",
        "strategy `muted-1` of source `strategy_engine` is switched off",
    ]) {
        let (_, r) = s.get(&format!("/api/v1/notifications/{id}")).await;
        let text = r["deliveries"][0]["last_error"].as_str().unwrap();
        assert!(text.contains(why), "{text}");
    }
    let received: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.body["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(received, [live]);
    // And it is counted, by source and reason.
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("klaxon_notifications_suppressed_total{")
                && l.contains(r#"source="webhook_signals""#)
                && l.contains(r#"reason="switched_off""#)
                && l.ends_with(" 1")),
        "{text}"
    );
    s.stop().await;
}
