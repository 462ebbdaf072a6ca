//! Scenario 1, the storage floor: how many rows per second this disk commits with Klaxon's
//! SQLite settings (WAL, `synchronous=FULL`), through Klaxon's own `Store::insert` and through a
//! plain two-column table, in transactions of 100 rows and of one.

use std::str::FromStr;
use std::time::{Duration, Instant};

use klaxon_core::model::{Notification, new_id};
use klaxon_store::{NewDelivery, NewEntry};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};

use crate::Scale;
use crate::harness::{Db, fresh_db};
use crate::report::{Fig, Report, Row, int};

/// Rows per transaction in the batched runs.
const BATCH: usize = 100;

/// The text of every row: a realistic fill report.
const MESSAGE: &str = "filled 2 MNQ @ 23,488.75 — strategy break-and-enter, account main, \
    slippage 0.25, latency 41 ms; risk: drawdown 1.2% of 5%, exposure 3 of 10 contracts, \
    next review at the close. This line pads the row to a realistic size.";

/// What the later scenarios compare with.
pub struct StoreFloor {
    /// `Store::insert` in transactions of 100 (one delivery each), notifications per second.
    pub store_batched: f64,
}

pub async fn run(report: &mut Report, scale: Scale) -> anyhow::Result<StoreFloor> {
    report.section(
        "1. Storage: rows committed per second",
        "Fresh SQLite files with Klaxon's settings (WAL, `synchronous=FULL`, so every commit is \
         an fsync). *Raw*: `CREATE TABLE t (id TEXT PRIMARY KEY, body TEXT)`, UUIDv7 text keys, \
         ~260-byte rows, one multi-row `INSERT` per transaction. *Store*: `klaxon_store::open` + \
         `migrate`, then `Store::insert` directly — one notification row and one delivery row \
         per entry, as the group committer calls it.",
    );
    let n_batched = scale.n(100_000);
    let n_single = scale.n(2_000);

    let floors = floor_rows(report, "", n_batched, n_single, raw_insert, async || {
        Db::sqlite()
    })
    .await?;
    report.note(format!(
        "{} rows batched, {} one per transaction. A stored notification is two rows (the \
         notification and its delivery) against one raw row. The 1/txn figures are this disk's \
         fsyncs per second: the most a service answering each request after its own commit could \
         do, and why Klaxon groups commits.",
        int(n_batched),
        int(n_single)
    ));
    Ok(StoreFloor {
        store_batched: floors.store_batched,
    })
}

/// `Store::insert` rates of one kind of database, notifications per second.
pub struct Floors {
    pub store_batched: f64,
    pub store_single: f64,
}

/// `Store::insert` on a fresh database from `fresh`, beside `raw`'s rows per second into a plain
/// table of the same kind, `n_batched` rows 100 a transaction and `n_single` one a transaction:
/// two report rows, their figures prefixed by `db` ("" for SQLite, scenario 1's own).
pub async fn floor_rows(
    report: &mut Report,
    db: &str,
    n_batched: usize,
    n_single: usize,
    raw: impl AsyncFn(usize, usize) -> anyhow::Result<f64>,
    fresh: impl AsyncFn() -> anyhow::Result<Db>,
) -> anyhow::Result<Floors> {
    let mut rates = [0.0; 2];
    for (i, (n, per_txn)) in [(n_batched, BATCH), (n_single, 1)].into_iter().enumerate() {
        let raw_rate = raw(n, per_txn).await?;
        let store_rate = store_insert(&fresh().await?, n, per_txn).await?;
        report.row(Row {
            figure: &format!("{db}store.insert direct, {per_txn}/txn"),
            value: Fig::rate(store_rate, "notifications/s"),
            baseline: Some((
                &format!("raw sqlx, {per_txn}/txn"),
                Fig::rate(raw_rate, "rows/s"),
            )),
            goal: None,
        });
        rates[i] = store_rate;
    }
    Ok(Floors {
        store_batched: rates[0],
        store_single: rates[1],
    })
}

/// Inserts `n` rows into a plain table, `per_txn` rows a transaction; rows per second.
async fn raw_insert(n: usize, per_txn: usize) -> anyhow::Result<f64> {
    let (_dir, url) = fresh_db()?;
    // The options of `klaxon_store::sqlite::SqliteStore::open`.
    let opts = SqliteConnectOptions::from_str(&url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        .pragma("cache_size", "-16000")
        .pragma("temp_store", "memory");
    let mut conn = SqliteConnection::connect_with(&opts).await?;
    let rate = raw_rows::<sqlx::Sqlite>(&mut conn, n, per_txn).await?;
    conn.close().await?;
    Ok(rate)
}

/// Creates the plain table on `conn` and inserts `n` rows into it, `per_txn` a transaction, as
/// one multi-row `INSERT` each; rows per second. The same statement text on SQLite and
/// PostgreSQL (`$n` placeholders are understood by both).
pub async fn raw_rows<DB>(
    conn: &mut DB::Connection,
    n: usize,
    per_txn: usize,
) -> anyhow::Result<f64>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query::<DB>("CREATE TABLE t (id TEXT PRIMARY KEY, body TEXT)")
        .execute(&mut *conn)
        .await?;
    // 224 characters + a 36-character id ≈ 260 bytes a row.
    let body: String = MESSAGE.chars().cycle().take(224).collect();
    let statement = multi_row_insert(per_txn);
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let rows = per_txn.min(n - done);
        let sql = if rows == per_txn {
            statement.clone()
        } else {
            multi_row_insert(rows)
        };
        let mut tx = conn.begin().await?;
        let mut q = sqlx::query::<DB>(sqlx::AssertSqlSafe(sql));
        for _ in 0..rows {
            q = q.bind(new_id().hyphenated().to_string()).bind(body.clone());
        }
        q.execute(&mut *tx).await?;
        tx.commit().await?;
        done += rows;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// `INSERT INTO t (id, body) VALUES ($1, $2), …` for `rows` rows.
fn multi_row_insert(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO t (id, body) VALUES ");
    for i in 0..rows {
        let sep = if i == 0 { "" } else { ", " };
        sql.push_str(&format!("{sep}(${}, ${})", 2 * i + 1, 2 * i + 2));
    }
    sql
}

/// Inserts `n` notifications (one delivery each) through `Store::insert` on a fresh database,
/// `per_txn` a call; notifications per second.
pub async fn store_insert(db: &Db, n: usize, per_txn: usize) -> anyhow::Result<f64> {
    let store = klaxon_store::open(db.url()).await?;
    store.migrate().await?;
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let rows = per_txn.min(n - done);
        let entries = (0..rows).map(|_| entry(MESSAGE)).collect();
        store.insert(entries).await?;
        done += rows;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// A notification routed to the benchmark channel, as `Ingest::plan` would make it.
pub fn entry(message: &str) -> NewEntry {
    NewEntry {
        notification: Notification::new(message).title("BUY MNQ"),
        deliveries: vec![NewDelivery {
            id: new_id(),
            channel: "sink".into(),
            target: None,
            group: None,
        }],
        suppress: None,
    }
}
