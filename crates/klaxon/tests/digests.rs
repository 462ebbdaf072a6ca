//! Aggregation end to end (PRODUCT.md §7): a burst of signals to a route with `group_by`
//! reaches the webhook as a handful of digests, each original `aggregated` and pointing at the
//! digest delivery that carried it; a critical signal in the burst goes at once on its own, and
//! a group holding one signal sends it as itself. The real service, real SQLite, the strict
//! webhook fake; no test asserts a duration.

mod common;

use std::collections::{HashMap, HashSet};

use common::{TestServer, json_url, wait_received};
use klaxon_fakes::telegram::FakeTelegram;
use klaxon_fakes::webhook::WebhookSink;
use serde_json::{Value, json};

const SYMBOLS: [&str; 3] = ["MNQ", "ES", "NQ"];

#[tokio::test]
async fn a_burst_becomes_a_handful_of_digests() {
    common::crypto();
    let sink = WebhookSink::start().await;
    // A `group_wait` long enough that the critical signal is out before any digest is made.
    let cfg = format!(
        r#"
[store]
url = "{{db}}"
[channels.hook]
url = "{}"
[[routes]]
match = {{ event_type = "signal.*" }}
to = ["hook"]
group_by = ["symbol"]
group_wait = "2s"
group_interval = "30s"
max_batch = 100
"#,
        json_url(&sink)
    );
    let s = TestServer::start(&cfg).await;

    // 200 signals over three symbols in one burst, one of them critical; and one on a symbol
    // of its own.
    let mut items: Vec<Value> = (0..200)
        .map(|i| {
            json!({
                "title": format!("BUY {}", SYMBOLS[i % 3]),
                "message": format!("signal {i}"),
                "event_type": "signal.generated",
                "severity": if i == 100 { "critical" } else { "info" },
                "data": {"symbol": SYMBOLS[i % 3], "action": "BUY", "price": 20000 + i},
            })
        })
        .collect();
    items.push(json!({
        "title": "SELL YM", "message": "lonely signal", "event_type": "signal.generated",
        "data": {"symbol": "YM", "action": "SELL", "price": 44000},
    }));
    let (code, v) = s.post("/api/v1/notifications/batch", &json!(items)).await;
    assert_eq!(code, 202, "{v}");
    let ids: Vec<String> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 201);

    // The critical signal first, alone; then one digest per symbol and the lone YM signal.
    wait_received(&sink, 5).await;
    let got = sink.received();
    assert_eq!(got[0].body["message"], "signal 100");
    assert_eq!(got[0].body["severity"], "critical");
    let digests: Vec<&Value> = got
        .iter()
        .map(|r| &r.body)
        .filter(|b| b["event_type"] == "klaxon.digest")
        .collect();
    assert_eq!(digests.len(), 3, "one digest per symbol: {got:#?}");
    let mut by_symbol: HashMap<String, u64> = HashMap::new();
    for d in &digests {
        let symbol = d["data"]["group"]["symbol"].as_str().unwrap().to_string();
        let count = d["data"]["count"].as_u64().unwrap();
        assert_eq!(d["data"]["items"].as_array().unwrap().len() as u64, count);
        assert!(
            d["title"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{count} signals in ")),
            "{d}"
        );
        assert!(d["title"].as_str().unwrap().ends_with(&symbol), "{d}");
        assert_eq!(d["source"], "klaxon");
        by_symbol.insert(symbol, count);
    }
    let want: HashMap<String, u64> = [("MNQ", 67), ("ES", 66), ("NQ", 66)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(by_symbol, want);
    let lone: Vec<&Value> = got
        .iter()
        .map(|r| &r.body)
        .filter(|b| b["message"] == "lonely signal")
        .collect();
    assert_eq!(lone.len(), 1, "a group of one is sent as itself");

    // Every original says where it went: the critical and the lone one delivered themselves,
    // the rest point at a digest delivery the webhook received.
    let sent: HashSet<String> = got.iter().filter_map(|r| r.webhook_id.clone()).collect();
    let mut into = HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        let (_, n) = s.get(&format!("/api/v1/notifications/{id}")).await;
        let d = &n["deliveries"][0];
        if i == 100 || i == 200 {
            assert_eq!(d["status"], "delivered", "{n}");
            assert_eq!(d["aggregated_into"], Value::Null);
        } else {
            assert_eq!(d["status"], "aggregated", "{n}");
            let digest = d["aggregated_into"].as_str().expect("points at its digest");
            assert!(sent.contains(digest), "digest {digest} was delivered");
            into.insert(digest.to_string());
        }
    }
    assert_eq!(into.len(), 3);

    let metrics = s.http.get(s.url("/metrics")).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("klaxon_digests_total{channel=\"hook\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("klaxon_aggregated_total{channel=\"hook\"} 199"),
        "{text}"
    );
    // The digests are notifications of their own, in the history beside the originals.
    let (_, list) = s.get("/api/v1/notifications?limit=1000").await;
    let stored = list["items"].as_array().map(Vec::len).unwrap_or_default();
    assert_eq!(
        stored,
        201 + 3,
        "the originals and three digests are stored"
    );
    assert_eq!(sink.count(), 5);
    s.stop().await;
}

/// A digest too long for one Telegram message goes to each chat as several parts, each within
/// Telegram's limit (the strict fake rejects longer text), one digest per chat; its `data` is
/// not repeated as text under the table.
#[tokio::test]
async fn a_long_digest_reaches_each_chat_in_parts() {
    common::crypto();
    let tg = FakeTelegram::start().await;
    let cfg = r#"
[store]
url = "{db}"
[channels.tg]
url = "tgram://123456:TEST-token_abc/111/-100222"
[[routes]]
to = ["tg"]
group_by = []
group_wait = "1s"
max_batch = 150
"#;
    let s = TestServer::start_env(cfg, &[("KLAXON_TELEGRAM_API", &tg.url())]).await;
    let items: Vec<Value> = (0..150)
        .map(|i| {
            json!({
                "title": format!("fill report number {i:03} for the main account"),
                "message": format!("fill {i}"),
                "event_type": "trade.executed",
                "data": {"symbol": "MNQ", "action": "BUY", "price": 20000 + i},
            })
        })
        .collect();
    let (code, v) = s.post("/api/v1/notifications/batch", &json!(items)).await;
    assert_eq!(code, 202, "{v}");
    let first = v["results"][0]["id"].as_str().unwrap().to_string();

    // Each original's two deliveries (one per chat) point at that chat's digest.
    let n = wait_aggregated(&s, &first).await;
    let into: HashSet<&str> = n["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["aggregated_into"].as_str().expect("aggregated"))
        .collect();
    assert_eq!(into.len(), 2, "{n}");

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let msgs = tg.messages();
        let per_chat = |chat: &str| {
            msgs.iter()
                .filter(|m| m.chat_id == chat)
                .map(|m| m.plain.clone())
                .collect::<Vec<_>>()
        };
        let (a, b) = (per_chat("111"), per_chat("-100222"));
        // The digest template's compact table: time, action, symbol, price (the last one's).
        let whole = |parts: &[String]| parts.join("\n").contains("20,149");
        if whole(&a) && whole(&b) {
            assert!(a.len() >= 2 && b.len() >= 2, "split into parts: {a:?}");
            assert!(a[0].contains("150 notifications in "), "{}", a[0]);
            assert!(!a.concat().contains("items"), "{a:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "digest parts not all received: {} messages, rejected {:?}: {:#?}",
            msgs.len(),
            tg.rejected(),
            msgs.iter()
                .map(|m| format!(
                    "{} {}",
                    m.chat_id,
                    m.plain.chars().take(120).collect::<String>()
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(tg.rejected().is_empty(), "{:?}", tg.rejected());
    s.stop().await;
}

/// Polls a notification until its deliveries are all `aggregated`, or panics after 30 s.
async fn wait_aggregated(s: &TestServer, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, v) = s.get(&format!("/api/v1/notifications/{id}")).await;
        let done = v["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["status"] == "aggregated"));
        if done {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not aggregated: {v:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
