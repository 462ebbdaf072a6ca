//! Scale-out (issue 6): replicas of the real binary on one PostgreSQL database (a fresh one per
//! test, from `KLAXON_TEST_DATABASE_URL`) drain one queue into a fake webhook. Every accepted
//! notification arrives, each under one `webhook-id`; without a crash none arrives twice, and a
//! replica SIGKILLed midway changes neither (its leased rows are taken over after the lease).
//! An API-only replica and a worker replica split intake and delivery.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{Binary, free_port};
use klaxon_fakes::FailMode;
use klaxon_fakes::webhook::WebhookSink;
use klaxon_store::testing::PgDb;
use serde_json::{Value, json};

const NOTIFICATIONS: usize = 5000;
/// Items per batch request (the API takes up to 1,000).
const BATCH: usize = 500;

async fn replica(db: &PgDb, sink: &WebhookSink, role: &str) -> Binary {
    let hook = common::json_url(sink) + "/in";
    Binary::serve(
        &["--role", role],
        &[("KLAXON_STORE_URL", &db.url), ("WEBHOOK_URL", &hook)],
        free_port(),
    )
    .await
}

/// Submits `n` notifications through the given replicas' APIs in turn; returns the ids
/// accepted (every batch must be).
async fn submit(bases: &[String], n: usize) -> HashSet<String> {
    let http = reqwest::Client::new();
    let mut accepted = HashSet::new();
    for (b, chunk) in (0..n).collect::<Vec<_>>().chunks(BATCH).enumerate() {
        let items: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"message": format!("n{i}")}))
            .collect();
        let base = &bases[b % bases.len()];
        let r = http
            .post(format!("{base}/api/v1/notifications/batch"))
            .json(&items)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let v: Value = r.json().await.unwrap();
        for item in v["results"].as_array().unwrap() {
            accepted.insert(item["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(accepted.len(), n);
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_deliver_every_notification_once() {
    common::crypto();
    let Some(db) = PgDb::create().await else {
        return;
    };
    let sink = WebhookSink::start().await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&db, &sink, "all").await);
    }
    let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
    let want = submit(&bases, NOTIFICATIONS).await;
    common::wait_delivered(&sink, &want, Duration::from_secs(90)).await;
    // Settled: nothing is still on its way that could arrive a second time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = sink.received();
    assert_eq!(common::repeats(&received), 0, "a delivery was sent twice");
    assert_eq!(received.len(), NOTIFICATIONS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_midway_loses_nothing() {
    common::crypto();
    let Some(db) = PgDb::create().await else {
        return;
    };
    let sink = WebhookSink::start().await;
    // Slow answers keep deliveries in flight (leased) when the kill lands.
    sink.set_fail(FailMode::Slow(Duration::from_millis(20)));
    let mut victim = replica(&db, &sink, "all").await;
    let survivors = [
        replica(&db, &sink, "all").await,
        replica(&db, &sink, "all").await,
    ];
    let bases: Vec<String> = survivors.iter().map(|r| r.base.clone()).collect();
    let submitting = tokio::spawn(async move { submit(&bases, NOTIFICATIONS).await });
    // Midway: the victim holds claimed rows, some of them being sent.
    while sink.count() < NOTIFICATIONS / 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.kill();
    let killed_at = std::time::Instant::now();
    let at_kill = sink.count();
    assert!(at_kill < NOTIFICATIONS, "the kill landed midway");
    sink.set_fail(FailMode::None);
    let want = submitting.await.unwrap();
    common::wait_delivered(&sink, &want, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = sink.received();
    // At least once: what the victim had sent but not yet recorded when it died is sent
    // again once its lease runs out — under the same webhook-id. Nothing first sent after the
    // kill arrives twice: the survivors never send a delivery twice.
    let again = common::repeats(&received);
    let mut first_seen: HashMap<&str, std::time::Instant> = HashMap::new();
    for r in &received {
        let id = r.webhook_id.as_deref().unwrap_or_default();
        match first_seen.get(id) {
            Some(first) => assert!(
                *first < killed_at,
                "delivery {id} was first sent after the kill and sent again"
            ),
            None => {
                first_seen.insert(id, r.at);
            }
        }
    }
    println!(
        "killed at {at_kill} received; {} requests for {NOTIFICATIONS} notifications ({again} repeats)",
        received.len()
    );
}

/// An API-only replica takes notifications in and sends nothing; a worker replica, which
/// serves no API, delivers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_worker_roles_split_intake_and_delivery() {
    common::crypto();
    let Some(db) = PgDb::create().await else {
        return;
    };
    let sink = WebhookSink::start().await;
    let api = replica(&db, &sink, "api").await;
    let want = submit(std::slice::from_ref(&api.base), 50).await;
    // Delivery needs a worker: give the API replica time it would need to send.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.count(), 0, "an api replica does not deliver");

    let worker = replica(&db, &sink, "worker").await;
    common::wait_delivered(&sink, &want, Duration::from_secs(30)).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v1/notifications", worker.base))
        .json(&json!({"message": "to a worker"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "a worker serves no API");
    let metrics = http
        .get(format!("{}/metrics", worker.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("klaxon_deliveries_total{channel=\"webhook\",outcome=\"delivered\"} 50"),
        "the worker's metrics count its deliveries"
    );
    // And the other way round: what reaches the API replica now is sent by the worker.
    let more = submit(std::slice::from_ref(&api.base), 10).await;
    common::wait_delivered(&sink, &more, Duration::from_secs(30)).await;
    assert_eq!(common::repeats(&sink.received()), 0);
}
