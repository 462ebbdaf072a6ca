//! Redis Streams against the real binary and the real Redis (`KLAXON_TEST_REDIS_URL`): Klaxon
//! SIGKILLed after reading entries and before committing them, entries published while it is
//! down, and kills at random moments under a steady stream — every entry becomes exactly one
//! notification and is delivered; nothing stays pending in the group.
//!
//! "Between read and ack" is made certain, not hoped for: the test holds SQLite's write lock, so
//! Klaxon reads the entries and then waits on the commit; the kill lands there.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::Binary;
use klaxon_fakes::webhook::WebhookSink;
use redis::AsyncCommands;
use serde_json::json;
use sqlx::{Connection, SqliteConnection};

struct Setup {
    config: std::path::PathBuf,
    db: std::path::PathBuf,
    port: u16,
    key: String,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn new(redis: &str, sink: &WebhookSink) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("stream.db");
        let port = common::free_port();
        let key = format!("klaxon:crash:{}", klaxon_core::model::new_id().simple());
        let hook = sink.url().replacen("http://", "json://", 1) + "/in";
        let config = dir.path().join("klaxon.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[store]
url = "sqlite://{}"
[delivery]
health_interval = "1h"
[redis]
url = "{redis}"
channels = ["unused-{port}"]
stream = "{key}"
group = "klaxon"
consumer = "replica-1"
claim_idle = "1s"
[channels.hook]
url = "{hook}"
"#,
                db.display()
            ),
        )
        .unwrap();
        Setup {
            config,
            db,
            port,
            key,
            _dir: dir,
        }
    }

    /// The real binary on this configuration, once `/ready` (store and stream consumer up).
    async fn start(&self) -> Binary {
        Binary::serve_with_config(&self.config, &[], &[], self.port).await
    }

    async fn sqlite(&self) -> SqliteConnection {
        SqliteConnection::connect(&format!("sqlite://{}", self.db.display()))
            .await
            .unwrap()
    }

    /// Notifications in the store, per idempotency key (the stream entry id).
    async fn notifications(&self) -> HashMap<String, i64> {
        let mut c = self.sqlite().await;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT idempotency_key, COUNT(*) FROM notifications GROUP BY idempotency_key",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        rows.into_iter().collect()
    }
}

async fn pending(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    let summary: (i64, Option<String>, Option<String>, Option<redis::Value>) =
        redis::cmd("XPENDING")
            .arg(key)
            .arg("klaxon")
            .query_async(conn)
            .await
            .unwrap();
    summary.0
}

async fn publish(conn: &mut redis::aio::MultiplexedConnection, key: &str, i: usize) -> String {
    let env = json!({"event_type": "signal.generated", "source": "strategy_engine",
        "data": {"strategy_name": "break-and-enter", "action": "BUY", "symbol": "MNQI", "price": 23000 + i, "n": i}});
    conn.xadd(key, "*", &[("payload", env.to_string())])
        .await
        .unwrap()
}

/// Waits until every entry id in `want` was delivered and nothing is pending in the group.
async fn drained(
    sink: &WebhookSink,
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    want: usize,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: HashSet<String> = sink
            .received()
            .iter()
            .filter_map(|r| r.body["data"]["n"].as_u64().map(|n| n.to_string()))
            .collect();
        let left = pending(conn, key).await;
        if delivered.len() >= want && left == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {want} entries delivered, {left} still pending",
            delivered.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_read_and_ack_loses_and_doubles_nothing() {
    klaxon::app::install_crypto();
    let Some(url) = common::redis_url() else {
        return;
    };
    let sink = WebhookSink::start().await;
    let setup = Setup::new(&url, &sink);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = setup.key.clone();

    // 1. Read, not committed: the test holds the write lock while Klaxon reads three entries.
    let mut klaxon = setup.start().await;
    let mut lock = setup.sqlite().await;
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(publish(&mut conn, &key, i).await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while pending(&mut conn, &key).await < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Klaxon never read the entries"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    klaxon.kill();
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    drop(lock);
    assert!(
        setup.notifications().await.is_empty(),
        "the kill landed after the commit: the test proved nothing"
    );
    assert_eq!(
        pending(&mut conn, &key).await,
        3,
        "read and not acknowledged"
    );

    // 2. Published while Klaxon is down.
    for i in 3..5 {
        ids.push(publish(&mut conn, &key, i).await);
    }
    let mut klaxon = setup.start().await;
    drained(&sink, &mut conn, &key, 5).await;
    klaxon.kill();

    // 3. Killed at moments the test does not choose, while entries keep coming.
    let mut n = 5;
    for round in 0..3u64 {
        let mut klaxon = setup.start().await;
        let until = tokio::time::Instant::now() + Duration::from_millis(200 + 170 * round);
        while tokio::time::Instant::now() < until {
            ids.push(publish(&mut conn, &key, n).await);
            n += 1;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        klaxon.kill();
        // Some more while it is down.
        for _ in 0..5 {
            ids.push(publish(&mut conn, &key, n).await);
            n += 1;
        }
    }
    let mut klaxon = setup.start().await;
    drained(&sink, &mut conn, &key, n).await;

    let stored = setup.notifications().await;
    let want: HashSet<&String> = ids.iter().collect();
    assert_eq!(stored.len(), want.len(), "one notification per entry");
    for id in &ids {
        // Klaxon's idempotency key for a stream entry names the stream and the entry id.
        let k = format!("redis-stream:{key}:{id}");
        assert_eq!(
            stored.get(&k),
            Some(&1),
            "entry {id}: exactly one notification"
        );
    }
    // A repeat delivery (a kill after the send, before its record) keeps its webhook-id.
    let mut webhook_ids: HashMap<u64, HashSet<String>> = HashMap::new();
    let received = sink.received();
    for r in &received {
        webhook_ids
            .entry(r.body["data"]["n"].as_u64().unwrap())
            .or_default()
            .insert(r.webhook_id.clone().unwrap_or_default());
    }
    assert_eq!(webhook_ids.len(), n, "every entry delivered");
    for (entry, w) in &webhook_ids {
        assert_eq!(
            w.len(),
            1,
            "entry {entry} arrived under several webhook-ids"
        );
    }
    println!(
        "entries {n}, notifications {}, deliveries received {} (repeats with the same webhook-id: {})",
        stored.len(),
        received.len(),
        received.len() - webhook_ids.len()
    );
    klaxon.kill();
    let _: () = conn.del(&key).await.unwrap();
}
