//! Redis pub/sub ingestion against the real Redis on this machine (`KLAXON_TEST_REDIS_URL`):
//! envelopes published to the configured channels become notifications; bad messages are
//! counted, not fatal; a dropped subscriber connection comes back by itself.

mod common;

use std::time::Duration;

use common::TestServer;
use klaxon_fakes::webhook::WebhookSink;
use redis::AsyncCommands;
use serde_json::json;

#[tokio::test]
async fn pubsub_envelopes_become_notifications_and_the_subscriber_recovers() {
    common::crypto();
    let Some(url) = common::redis_url() else {
        return;
    };
    let sink = WebhookSink::start().await;
    let tag = klaxon_core::model::new_id().simple().to_string();
    let (signals, hooks) = (format!("signals-{tag}"), format!("webhook_signals-{tag}"));
    let cfg = format!(
        r#"
[store]
url = "{{db}}"
[delivery]
health_interval = "1h"
[redis]
url = "{url}"
channels = ["{signals}", "{hooks}"]
[channels.hook]
url = "{}"
"#,
        common::json_url(&sink)
    );
    let s = TestServer::start(&cfg).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    let buy = json!({"event_type": "signal.generated", "source": "strategy_engine",
        "data": {"strategy_name": "break-and-enter", "action": "BUY", "symbol": "MNQI", "price": 23488.75}});
    common::publish_until_heard(&mut conn, &signals, &buy.to_string()).await;
    let sell = json!({"event_type": "webhook.signal", "data": {"webhook_name": "tv", "action": "SELL", "symbol": "ES", "price": 5012.5}});
    common::publish_until_heard(&mut conn, &hooks, &sell.to_string()).await;
    // Not JSON, and JSON without the envelope's required field: counted, nothing breaks.
    common::publish_until_heard(&mut conn, &signals, "not json").await;
    common::publish_until_heard(&mut conn, &signals, r#"{"data": {}}"#).await;

    common::wait_received(&sink, 2).await;
    let titles: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.body["title"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        titles.contains(&"BUY MNQI @ 23,488.75".to_string()),
        "{titles:?}"
    );
    assert!(
        titles.contains(&"tv: SELL ES @ 5,012.5".to_string()),
        "{titles:?}"
    );
    let (code, ready) = s.get("/ready").await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["redis"]["connected"], true);
    assert_eq!(ready["redis"]["rejected"], 2, "{ready}");
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("klaxon_ingest_rejected_total{source=\"redis\",reason=\"invalid_json\"}"),
        "{metrics}"
    );

    // Redis drops every subscriber (as on a restart): Klaxon subscribes again by itself.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(killed >= 1);
    let again = json!({"event_type": "signal.generated", "data": {"action": "EXIT_50", "symbol": "MNQI", "price": 23500}});
    common::publish_until_heard(&mut conn, &signals, &again.to_string()).await;
    common::wait_received(&sink, 3).await;
    assert!(
        !s.get("/ready").await.1.to_string().contains(&url),
        "no URL in /ready"
    );
    s.stop().await;
}

/// Published while Klaxon was down, or read by a consumer that died before acknowledging:
/// every entry still becomes exactly one notification, and nothing stays pending.
#[tokio::test]
async fn stream_entries_are_never_lost_and_never_doubled() {
    common::crypto();
    let Some(url) = common::redis_url() else {
        return;
    };
    let sink = WebhookSink::start().await;
    let tag = klaxon_core::model::new_id().simple().to_string();
    let key = format!("klaxon:events:{tag}");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = conn
        .xgroup_create_mkstream(&key, "klaxon", "0")
        .await
        .unwrap();
    for (i, action) in ["BUY", "SELL", "EXIT_50"].iter().enumerate() {
        let env = json!({"event_type": "signal.generated",
            "data": {"action": action, "symbol": "MNQI", "price": 23488 + i}});
        let _: String = conn
            .xadd(&key, "*", &[("payload", env.to_string())])
            .await
            .unwrap();
    }
    let _: String = conn.xadd(&key, "*", &[("payload", "nope")]).await.unwrap();
    // Another replica read the first entry and died before committing it.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("klaxon")
        .arg("dead-replica")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();

    let cfg = format!(
        r#"
[store]
url = "{{db}}"
[delivery]
health_interval = "1h"
[redis]
url = "{url}"
channels = ["unused-{tag}"]
stream = "{key}"
group = "klaxon"
consumer = "klaxon-test"
claim_idle = "200ms"
[channels.hook]
url = "{}"
"#,
        common::json_url(&sink)
    );
    let s = TestServer::start(&cfg).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let pending: (i64, Option<String>, Option<String>, Option<redis::Value>) =
            redis::cmd("XPENDING")
                .arg(&key)
                .arg("klaxon")
                .query_async(&mut conn)
                .await
                .unwrap();
        if sink.count() >= 3 && pending.0 == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivered {}, pending {}",
            sink.count(),
            pending.0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.count(), 3, "each entry once");
    let (_, ready) = s.get("/ready").await;
    assert_eq!(ready["redis_stream"]["connected"], true, "{ready}");
    assert_eq!(ready["redis_stream"]["rejected"], 1, "{ready}");
    s.stop().await;
    let _: () = conn.del(&key).await.unwrap();
}
