//! The inbox table (issue 6, item 3): rows a plain SQL client inserts into `klaxon_inbox` in
//! its own transactions become notifications exactly once — routed like API submissions,
//! delivered, and deleted from the inbox — also when two replicas race for them. A rolled-back
//! insert leaves nothing; a row that cannot be parsed is kept with its error, not retried.
//! Needs `KLAXON_TEST_DATABASE_URL` (a fresh database per test).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::TestServer;
use klaxon_fakes::webhook::WebhookSink;
use klaxon_store::testing::PgDb;
use serde_json::json;
use sqlx::Connection;

async fn server(db: &PgDb, sink: &WebhookSink) -> TestServer {
    let toml = format!(
        "[store]\nurl = \"{}\"\n\n[channels.hook]\nurl = \"{}/in\"\n",
        db.url,
        common::json_url(sink)
    );
    TestServer::start(&toml).await
}

/// Inserts `n` rows in one transaction of a plain client, as a trading backend would.
async fn insert_rows(url: &str, from: usize, n: usize) {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let mut tx = c.begin().await.unwrap();
    for i in from..from + n {
        let payload = if i % 2 == 0 {
            json!({"title": "Filled", "message": format!("row {i}"), "tags": ["inbox"]})
        } else {
            json!({"event_type": "trade.executed", "data": {"symbol": "MNQ", "row": i}})
        };
        sqlx::query("INSERT INTO klaxon_inbox (payload) VALUES ($1)")
            .bind(payload)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    c.close().await.ok();
}

/// Waits until the inbox holds only `left` rows (the bad ones).
async fn wait_taken(db: &PgDb, left: i64) {
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM klaxon_inbox")
            .fetch_one(&mut c)
            .await
            .unwrap();
        if n == left {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} rows still in the inbox"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.close().await.ok();
}

async fn stored_notifications(db: &PgDb) -> i64 {
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE source = 'inbox'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.ok();
    n
}

/// Which inbox rows the sink received, each counted once per delivery id.
fn rows_received(sink: &WebhookSink) -> (HashSet<i64>, usize) {
    let received = sink.received();
    let rows = received
        .iter()
        .map(|r| {
            r.body["data"]["row"].as_i64().unwrap_or_else(|| {
                r.body["message"].as_str().unwrap()["row ".len()..]
                    .parse()
                    .unwrap()
            })
        })
        .collect();
    (rows, received.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_rows_become_notifications_once() {
    common::crypto();
    let Some(db) = PgDb::create().await else {
        return;
    };
    let sink = WebhookSink::start().await;
    let s = server(&db, &sink).await;
    insert_rows(&db.url, 0, 200).await;
    // A trade rolled back: its row never existed.
    {
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let mut tx = c.begin().await.unwrap();
        sqlx::query("INSERT INTO klaxon_inbox (payload) VALUES ('{\"message\": \"rolled back\"}')")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        // Neither a notification nor an envelope: kept with the reason.
        sqlx::query("INSERT INTO klaxon_inbox (payload) VALUES ('{\"message\": \"x\", \"severity\": \"loud\"}'), ('[1, 2]')")
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.ok();
    }
    wait_taken(&db, 2).await;
    common::wait_received(&sink, 200).await;
    let (rows, requests) = rows_received(&sink);
    assert_eq!(rows, (0..200).collect::<HashSet<i64>>());
    assert_eq!(requests, 200);
    assert_eq!(stored_notifications(&db).await, 200);

    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let bad: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT payload::text, error FROM klaxon_inbox ORDER BY id")
            .fetch_all(&mut c)
            .await
            .unwrap();
    c.close().await.ok();
    assert!(
        bad[0]
            .1
            .as_deref()
            .is_some_and(|e| e.starts_with("payload.severity")),
        "the error names the field: {bad:?}"
    );
    assert!(
        bad[1]
            .1
            .as_deref()
            .is_some_and(|e| e.contains("JSON object")),
        "{bad:?}"
    );
    // Kept, not retried: a new row still goes, the bad ones stay as they were.
    insert_rows(&db.url, 200, 1).await;
    wait_taken(&db, 2).await;
    assert_eq!(stored_notifications(&db).await, 201);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_take_each_row_once() {
    common::crypto();
    let Some(db) = PgDb::create().await else {
        return;
    };
    let sink = WebhookSink::start().await;
    let a = server(&db, &sink).await;
    let b = server(&db, &sink).await;
    // Several committing writers at once, both replicas woken by each commit.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let url = db.url.clone();
            tokio::spawn(async move {
                insert_rows(&url, w * 500, 500).await;
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    wait_taken(&db, 0).await;
    common::wait_received(&sink, 2000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rows, requests) = rows_received(&sink);
    assert_eq!(rows.len(), 2000);
    assert_eq!(requests, 2000, "a row became two notifications");
    assert_eq!(stored_notifications(&db).await, 2000);
    a.stop().await;
    b.stop().await;
}
