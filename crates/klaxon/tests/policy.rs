//! Per-user limits, quiet hours and freshness end to end: the real service against the strict
//! webhook fake. Quiet windows are computed around the current time; stale notifications carry
//! an envelope timestamp in the past. No test asserts a duration.

mod common;

use std::time::Duration;

use chrono::{TimeDelta, Timelike, Utc};
use common::TestServer;
use klaxon_fakes::webhook::WebhookSink;
use serde_json::{Value, json};

fn cfg(channels: &str) -> String {
    format!(
        r#"
[store]
url = "{{db}}"
[delivery]
health_interval = "1h"
[delivery.retry]
retries = 0
base = "50ms"
jitter = 0.0
{channels}
"#
    )
}

/// The service with one webhook channel `hook` on a fresh sink; `keys` are added below its
/// `url` (channel keys first, then any other section).
async fn start_hook(keys: &str) -> (TestServer, WebhookSink) {
    common::crypto();
    let sink = WebhookSink::start().await;
    let url = common::json_url(&sink);
    let s = TestServer::start(&cfg(&format!("[channels.hook]\nurl = \"{url}\"\n{keys}\n"))).await;
    (s, sink)
}

fn delivery<'a>(v: &'a Value, channel: &str) -> &'a Value {
    v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["channel"] == channel)
        .unwrap_or_else(|| panic!("no delivery on {channel}: {v:#}"))
}

/// The messages the sink received, in arrival order.
fn arrivals(sink: &WebhookSink) -> Vec<String> {
    sink.received()
        .iter()
        .map(|r| r.body["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn per_user_limit_delays_but_delivers_all() {
    let (s, sink) = start_hook("per_user = { per_second = 1 }\n").await;
    let mut ids = Vec::new();
    for i in 1..=4 {
        ids.push(
            s.send(json!({"message": format!("alice {i}"), "user_id": "alice"}))
                .await,
        );
    }
    ids.push(s.send(json!({"message": "bob", "user_id": "bob"})).await);
    ids.push(s.send(json!({"message": "nobody"})).await);
    for id in &ids {
        let v = s.wait_final(id, Duration::from_secs(20)).await;
        assert_eq!(v["deliveries"][0]["status"], "delivered", "{v:#}");
    }
    let got = sink.received();
    assert_eq!(got.len(), 6, "every one delivered once");
    // Sent back to back, alice's four came at most one a second (a little under, for the
    // network); bob's and the anonymous one were not held by her limit.
    let mut alice: Vec<_> = got
        .iter()
        .filter(|r| r.body["message"].as_str().unwrap().starts_with("alice"))
        .map(|r| r.at)
        .collect();
    alice.sort();
    assert_eq!(alice.len(), 4);
    for pair in alice.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap > Duration::from_millis(500),
            "alice's sends {gap:?} apart"
        );
    }
    s.stop().await;
}

/// A window of local time around now (UTC): it began an hour ago and ends in an hour.
fn window_around_now() -> String {
    let now = Utc::now();
    let hm = |t: chrono::DateTime<Utc>| format!("{:02}:{:02}", t.hour(), t.minute());
    format!(
        "{}-{}",
        hm(now - TimeDelta::hours(1)),
        hm(now + TimeDelta::hours(1))
    )
}

#[tokio::test]
async fn quiet_hours_hold_or_suppress_and_critical_passes() {
    common::crypto();
    let sink = WebhookSink::start().await;
    let window = window_around_now();
    let url = common::json_url(&sink);
    let s = TestServer::start(&cfg(&format!(
        r#"
[channels.wait]
url = "{url}"
quiet_hours = "{window}"
timezone = "UTC"
[channels.drop]
url = "{url}"
quiet_hours = ["{window}"]
when_muted = "suppress"
"#
    )))
    .await;
    let both = json!(["wait", "drop"]);
    let crit = s
        .send(json!({"message": "margin call", "severity": "critical", "channels": both}))
        .await;
    let info = s.send(json!({"message": "fyi", "channels": both})).await;

    let v = s.wait_final(&crit, Duration::from_secs(10)).await;
    for ch in ["wait", "drop"] {
        assert_eq!(delivery(&v, ch)["status"], "delivered", "{v:#}");
    }
    // Until both have been looked at: one ended, the other put back for later.
    let suppressed = loop {
        let (_, v) = s.get(&format!("/api/v1/notifications/{info}")).await;
        let ended = !matches!(
            delivery(&v, "drop")["status"].as_str(),
            Some("pending" | "sending")
        );
        let held = delivery(&v, "wait")["not_before"]
            .as_str()
            .and_then(|t| t.parse::<chrono::DateTime<Utc>>().ok())
            .is_some_and(|t| t > Utc::now() + TimeDelta::minutes(1));
        if ended && held {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let dropped = delivery(&suppressed, "drop");
    assert_eq!(dropped["status"], "suppressed", "{suppressed:#}");
    assert_eq!(
        dropped["last_error"],
        format!("quiet hours {window} UTC"),
        "the reason is recorded"
    );
    assert_eq!(dropped["attempts"], json!([]), "nothing was sent");
    // The other waits for the window's end, unsent.
    let held = delivery(&suppressed, "wait");
    assert_eq!(held["status"], "pending", "{suppressed:#}");
    let not_before: chrono::DateTime<Utc> = held["not_before"].as_str().unwrap().parse().unwrap();
    assert!(not_before > Utc::now() + TimeDelta::minutes(30), "{held}");
    assert_eq!(arrivals(&sink), ["margin call", "margin call"]);

    let (_, ch) = s.get("/api/v1/channels/wait").await;
    assert_eq!(ch["quiet_hours"], format!("{window} UTC"), "{ch:#}");
    assert!(ch["quiet_until"].is_string(), "{ch:#}");
    assert_eq!(ch["when_muted"], "wait");
    let (_, status) = s.get("/status").await;
    assert!(status.to_string().contains("quiet_until"), "{status:#}");
    s.stop().await;
}

#[tokio::test]
async fn an_operator_mute_can_suppress_too() {
    let (s, sink) = start_hook("when_muted = \"suppress\"\n").await;
    let until = (Utc::now() + TimeDelta::hours(1)).to_rfc3339();
    let r = s
        .http
        .patch(s.url("/api/v1/channels/hook"))
        .json(&json!({"muted_until": until}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let id = s.send(json!({"message": "fyi"})).await;
    let v = s.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(v["deliveries"][0]["status"], "suppressed", "{v:#}");
    assert!(
        v["deliveries"][0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("channel muted until"),
        "{v:#}"
    );
    assert_eq!(sink.count(), 0);
    s.stop().await;
}

fn signal(minutes_ago: i64, symbol: &str) -> Value {
    json!({
        "event_type": "signal.generated",
        "source": "strategy_engine",
        "timestamp": (Utc::now() - TimeDelta::minutes(minutes_ago)).to_rfc3339(),
        "data": {"strategy_name": "break-and-enter", "action": "BUY", "symbol": symbol, "price": 23488.75}
    })
}

async fn post_event(s: &TestServer, envelope: Value) -> String {
    let (code, v) = s.post("/api/v1/events", &envelope).await;
    assert_eq!(code, 202, "{v}");
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_late_signal_arrives_marked_stale() {
    let (s, sink) = start_hook("").await;
    let late = post_event(&s, signal(10, "MNQI")).await;
    let v = s.wait_final(&late, Duration::from_secs(10)).await;
    assert_eq!(v["deliveries"][0]["status"], "delivered", "{v:#}");
    let fresh = post_event(&s, signal(0, "ESZ5")).await;
    s.wait_final(&fresh, Duration::from_secs(10)).await;

    let got = sink.received();
    let body = |sym: &str| {
        got.iter()
            .map(|r| &r.body)
            .find(|b| b["title"].as_str().unwrap_or_default().contains(sym))
            .unwrap_or_else(|| panic!("nothing about {sym}: {got:?}"))
            .clone()
    };
    let late = body("MNQI");
    let title = late["title"].as_str().unwrap();
    assert!(title.starts_with("⏰ STALE (10m"), "{title}");
    assert!(title.ends_with("BUY MNQI @ 23,488.75"), "{title}");
    assert!(late["data"]["stale"]["age_secs"].as_u64().unwrap() >= 600);
    assert_eq!(late["data"]["stale"]["max_age_secs"], 120);
    let fresh = body("ESZ5");
    assert!(
        !fresh["title"].as_str().unwrap().contains("STALE"),
        "{fresh}"
    );
    assert!(fresh["data"].get("stale").is_none(), "{fresh}");
    // The stored notification is the one submitted; only what went out was marked.
    let (_, stored) = s
        .get(&format!(
            "/api/v1/notifications/{}",
            v["id"].as_str().unwrap()
        ))
        .await;
    assert!(!stored["title"].as_str().unwrap().contains("STALE"));
    s.stop().await;
}

#[tokio::test]
async fn a_late_signal_expires_when_configured() {
    let (s, sink) =
        start_hook("[events.\"signal.*\"]\nmax_age = \"2m\"\nwhen_stale = \"expire\"\n").await;
    let late = post_event(&s, signal(10, "MNQI")).await;
    let v = s.wait_final(&late, Duration::from_secs(10)).await;
    let d = &v["deliveries"][0];
    assert_eq!(d["status"], "expired", "{v:#}");
    let reason = d["last_error"].as_str().unwrap();
    assert!(
        reason.starts_with("older than max_age 2m (age 10m"),
        "{reason}"
    );
    let fresh = post_event(&s, signal(0, "ESZ5")).await;
    let v = s.wait_final(&fresh, Duration::from_secs(10)).await;
    assert_eq!(v["deliveries"][0]["status"], "delivered", "{v:#}");
    assert_eq!(sink.count(), 1, "only the fresh one went out");
    s.stop().await;
}
