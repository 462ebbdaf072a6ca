//! Scenario 15, intake on PostgreSQL: scenarios 1–3 again with `store.url = "postgres://…"` on
//! the server `KLAXON_TEST_DATABASE_URL` names, each run on a fresh database. The physical
//! limit is the same server's raw insert rate into a plain table, measured here the same way
//! scenario 1 measures SQLite's.

use sqlx::Connection;

use super::store::{raw_rows, store_insert};
use crate::Scale;
use crate::harness::{Db, Klaxon, batch_of, client, post_closed_loop, sink, small_notification};
use crate::report::{Fig, Goal, Report, Row, int};

/// Rows per transaction in the batched runs (scenario 1's).
const BATCH: usize = 100;
/// Concurrent clients posting one notification each (scenario 2's).
const SINGLE_WORKERS: usize = 32;
/// Concurrent clients posting batches (scenario 3's).
const BATCH_WORKERS: usize = 8;

pub async fn run(report: &mut Report, scale: Scale) -> anyhow::Result<()> {
    report.section(
        "15. Accepted throughput on PostgreSQL",
        "Scenarios 1–3 with the store on the local PostgreSQL (`KLAXON_TEST_DATABASE_URL`, a \
         fresh database per run, server defaults: `synchronous_commit = on`, so every commit \
         waits for its WAL flush). *Raw*: `CREATE TABLE t (id TEXT PRIMARY KEY, body TEXT)`, \
         UUIDv7 text keys, ~260-byte rows, one multi-row `INSERT` per transaction, over one \
         connection. *Store*: `Store::insert` directly. *HTTP*: the service in this process, \
         32 clients posting one notification each, then 8 posting batches of 100, while it \
         delivers to the sink.",
    );
    if std::env::var("KLAXON_TEST_DATABASE_URL").is_err() {
        report.note("skipped: set KLAXON_TEST_DATABASE_URL to a PostgreSQL server");
        return Ok(());
    }
    let n_batched = scale.n(100_000);
    let n_single = scale.n(2_000);

    let raw_batched = raw_insert(n_batched, BATCH).await?;
    let store_batched = store_insert(&fresh().await?, n_batched, BATCH).await?;
    report.row(Row {
        figure: "PostgreSQL store.insert direct, 100/txn",
        value: Fig::rate(store_batched, "notifications/s"),
        baseline: Some(("raw sqlx, 100/txn", Fig::rate(raw_batched, "rows/s"))),
        goal: None,
    });
    let raw_single = raw_insert(n_single, 1).await?;
    let store_single = store_insert(&fresh().await?, n_single, 1).await?;
    report.row(Row {
        figure: "PostgreSQL store.insert direct, 1/txn",
        value: Fig::rate(store_single, "notifications/s"),
        baseline: Some(("raw sqlx, 1/txn", Fig::rate(raw_single, "rows/s"))),
        goal: None,
    });

    let http = client();
    let n = scale.n(20_000);
    let body = small_notification();
    let target = sink(false).await;
    let klaxon =
        Klaxon::start_on(fresh().await?, &crate::harness::channel_url(&target), "").await?;
    let url = klaxon.url("/api/v1/notifications");
    post_closed_loop(&http, &url, body.clone(), n / 10, SINGLE_WORKERS, 202).await;
    let single = post_closed_loop(&http, &url, body, n, SINGLE_WORKERS, 202).await;
    klaxon.stop().await;
    report.row(Row {
        figure: "PostgreSQL accepted/s, single",
        value: Fig::rate(single.rate(), "req/s"),
        baseline: Some((
            "store.insert direct, 1/txn",
            Fig::rate(store_single, "notifications/s"),
        )),
        goal: None,
    });
    report.row(Row {
        figure: "PostgreSQL latency p99, single",
        value: single.lat.q(0.99),
        baseline: None,
        goal: None,
    });

    let batches = scale.n(500);
    let klaxon =
        Klaxon::start_on(fresh().await?, &crate::harness::channel_url(&target), "").await?;
    let url = klaxon.url("/api/v1/notifications/batch");
    let body = batch_of(BATCH);
    post_closed_loop(&http, &url, body.clone(), batches / 10, BATCH_WORKERS, 202).await;
    let batched = post_closed_loop(&http, &url, body, batches, BATCH_WORKERS, 202).await;
    klaxon.stop().await;
    target.stop().await;
    report.row(Row {
        figure: "PostgreSQL accepted/s, batches of 100",
        value: Fig::rate(batched.rate() * BATCH as f64, "notifications/s"),
        baseline: Some((
            "store.insert direct, 100/txn",
            Fig::rate(store_batched, "notifications/s"),
        )),
        goal: Some(Goal::AtLeast(40_000.0)),
    });
    report.row(Row {
        figure: "PostgreSQL batch latency p99",
        value: batched.lat.q(0.99),
        baseline: None,
        goal: None,
    });
    report.note(format!(
        "{} rows batched and {} one per transaction for the floors; {} single requests and {} \
         batches over HTTP, after a tenth as many to warm up. The single-request baseline is the \
         store's own 1/txn rate: what answering each request after its own commit would reach; \
         the service groups concurrent requests into shared commits.",
        int(n_batched),
        int(n_single),
        int(n),
        int(batches)
    ));
    for f in [single.failures("single"), batched.failures("batches")]
        .into_iter()
        .flatten()
    {
        report.note(f);
    }
    Ok(())
}

/// A fresh database on the server (the caller checked that one is configured).
async fn fresh() -> anyhow::Result<Db> {
    Db::postgres()
        .await?
        .ok_or_else(|| anyhow::anyhow!("KLAXON_TEST_DATABASE_URL is not set"))
}

/// Scenario 1's raw floor on a fresh PostgreSQL database.
async fn raw_insert(n: usize, per_txn: usize) -> anyhow::Result<f64> {
    let db = fresh().await?;
    let mut conn = sqlx::PgConnection::connect(db.url()).await?;
    let rate = raw_rows::<sqlx::Postgres>(&mut conn, n, per_txn).await?;
    conn.close().await?;
    Ok(rate)
}
