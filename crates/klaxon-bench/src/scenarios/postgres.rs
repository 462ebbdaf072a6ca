//! Scenario 15, intake on PostgreSQL: scenarios 1–3 again with `store.url = "postgres://…"` on
//! the server `KLAXON_TEST_DATABASE_URL` names, each run on a fresh database. The physical
//! limit is the same server's raw insert rate into a plain table, measured here the same way
//! scenario 1 measures SQLite's.

use sqlx::Connection;

use super::http::{BATCH_SIZE, batch_intake, single_intake};
use super::store::{floor_rows, raw_rows};
use crate::Scale;
use crate::harness::{Db, client, sink};
use crate::report::{Fig, Goal, Report, Row, int};

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

    let floors = floor_rows(
        report,
        "PostgreSQL ",
        n_batched,
        n_single,
        raw_insert,
        fresh,
    )
    .await?;
    let (store_batched, store_single) = (floors.store_batched, floors.store_single);

    let http = client();
    let n = scale.n(20_000);
    let target = sink(false).await;
    let (single, _) = single_intake(&http, fresh().await?, &target, n).await?;
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
    let batched = batch_intake(&http, fresh().await?, &target, batches).await?;
    target.stop().await;
    report.row(Row {
        figure: "PostgreSQL accepted/s, batches of 100",
        value: Fig::rate(batched.rate() * BATCH_SIZE as f64, "notifications/s"),
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
