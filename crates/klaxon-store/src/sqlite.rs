//! The embedded SQLite store: one file, WAL, `synchronous=FULL` (a commit survives power loss,
//! not just a crash), one writer connection so writes never fight over the lock, and a few
//! reader connections beside it (WAL lets them read while the writer writes).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use klaxon_core::model::{Attempt, AttemptOutcome, Delivery, DeliveryStatus, Notification};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, Row, Sqlite, Transaction};
use uuid::Uuid;

use crate::*;

/// Schema versions, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_fallback.sql")),
    (3, include_str!("../migrations/sqlite/0003_dedup.sql")),
    (4, include_str!("../migrations/sqlite/0004_groups.sql")),
];

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

/// The columns `delivery_from_row` reads; a macro so queries stay `&'static str` (sqlx asks
/// that dynamic SQL be audited, and these are all static).
macro_rules! delivery_columns {
    () => {
        "id, notification_id, channel, target, status, attempts, throttled, not_before, last_error, provider_id, created_at, updated_at, delivered_at, expires_at, fallback_of, fell_back_to, budget_from, aggregated_into"
    };
}

impl SqliteStore {
    pub async fn open(url: &str) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // The writer's page cache holds the queue and the tables' right edges, where every
            // claim and insert lands: 16 MB keeps them off the disk.
            .pragma("cache_size", "-16000")
            .pragma("temp_store", "memory");
        // A SQLite connection is a file handle, a worker thread and a page cache inside this
        // process; sqlx's defaults close it after 30 minutes (10 idle) as if it were a server
        // session. Reopening one throws its warm cache away, and the cache's memory stays
        // with glibc in the old thread's arena while the new one fills another: RSS grew by
        // ~10 MB at each 30-minute mark in the soak (BENCHMARKS.md §14). Kept open instead.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(30))
            // A COMMIT that fails with SQLITE_FULL or an I/O error may be rolled back by SQLite
            // itself; sqlx's ROLLBACK then fails and leaves its transaction depth at 1, so the
            // connection's next `begin()` opens a SAVEPOINT instead — and a later failure can
            // leave it inside a transaction that never commits while every RELEASE "succeeds":
            // answers of 202 for nothing stored (found by tests/disk_full.rs). A connection
            // that comes back still in a transaction is closed; the pool opens a fresh one.
            .after_release(|conn, _| {
                Box::pin(async move {
                    let clean = !conn.is_in_transaction();
                    if !clean {
                        tracing::warn!(
                            "store writer connection left a failed transaction; reopening it"
                        );
                    }
                    Ok(clean)
                })
            })
            .connect_with(opts.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(30))
            // Readers walk history (dashboard pages, dead letters) that the OS page cache
            // already holds; 16 MB each grew RSS by up to 64 MB as the history did (the soak,
            // BENCHMARKS.md §14) for little gain, so they keep SQLite's default 2 MB.
            .connect_with(opts.read_only(true).pragma("cache_size", "-2000"))
            .await?;
        Ok(SqliteStore { writer, reader })
    }
}

/// How many repeats point at `n` (the notifications index on `duplicate_of` answers it); a
/// macro so queries stay `&'static str`.
macro_rules! repeats_column {
    () => {
        "(SELECT COUNT(*) FROM notifications r WHERE r.duplicate_of = n.id) AS repeats"
    };
}

/// A notification's head from a row with `body`, `duplicate_of` and `repeats`.
fn head_from_row(row: &SqliteRow) -> Result<NotificationRecord> {
    let duplicate_of = row
        .try_get::<Option<&str>, _>("duplicate_of")?
        .map(parse_id)
        .transpose()?;
    head(row.try_get("body")?, duplicate_of, row.try_get("repeats")?)
}

fn id_str(id: Uuid) -> String {
    id.hyphenated().to_string()
}

fn parse_id(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("bad id `{s}`: {e}")))
}

fn delivery_from_row(row: &SqliteRow) -> Result<Delivery> {
    let get_ms = |c: &str| -> Result<Option<i64>> { Ok(row.try_get::<Option<i64>, _>(c)?) };
    Ok(Delivery {
        id: parse_id(row.try_get("id")?)?,
        notification_id: parse_id(row.try_get("notification_id")?)?,
        channel: row.try_get("channel")?,
        target: row.try_get("target")?,
        status: parse_status(row.try_get("status")?)?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        throttled: row.try_get::<i64, _>("throttled")? as u32,
        not_before: from_ms(row.try_get("not_before")?),
        last_error: row.try_get("last_error")?,
        provider_id: row.try_get("provider_id")?,
        created_at: from_ms(row.try_get("created_at")?),
        updated_at: from_ms(row.try_get("updated_at")?),
        delivered_at: get_ms("delivered_at")?.map(from_ms),
        fallback_of: row
            .try_get::<Option<String>, _>("fallback_of")?
            .as_deref()
            .map(parse_id)
            .transpose()?,
        fell_back_to: row.try_get("fell_back_to")?,
        budget_from: row.try_get::<i64, _>("budget_from")? as u32,
        aggregated_into: row
            .try_get::<Option<String>, _>("aggregated_into")?
            .as_deref()
            .map(parse_id)
            .transpose()?,
    })
}

/// Rows per multi-row INSERT: 64 × 12 parameters stays far below SQLite's limit of 32,766.
const ROWS_PER_STATEMENT: usize = 64;

/// `prefix (?, ?, …), (?, ?, …)…`: placeholders only, so the text is safe to build.
fn multi_row(prefix: &str, columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    let mut sql = String::with_capacity(prefix.len() + rows * (row.len() + 2));
    sql.push_str(prefix);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&row);
    }
    sql
}

async fn existing(tx: &mut Transaction<'static, Sqlite>, key: &str) -> Result<Option<Inserted>> {
    let Some(row) =
        sqlx::query("SELECT id, duplicate_of FROM notifications WHERE idempotency_key = ?")
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?
    else {
        return Ok(None);
    };
    let nid: String = row.try_get("id")?;
    let duplicate_of = row
        .try_get::<Option<&str>, _>("duplicate_of")?
        .map(parse_id)
        .transpose()?;
    let rows = sqlx::query(
        "SELECT id, channel, target, status FROM deliveries WHERE notification_id = ? ORDER BY id",
    )
    .bind(&nid)
    .fetch_all(&mut **tx)
    .await?;
    let deliveries = rows
        .iter()
        .map(|r| {
            Ok(DeliverySummary {
                id: parse_id(r.try_get("id")?)?,
                channel: r.try_get("channel")?,
                target: r.try_get("target")?,
                status: parse_status(r.try_get("status")?)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Some(Inserted {
        notification_id: parse_id(&nid)?,
        duplicate: true,
        deliveries,
        duplicate_of,
    }))
}

/// The newest original (not itself a repeat) with `key` created in `(from, to]`.
async fn find_original(
    tx: &mut Transaction<'static, Sqlite>,
    key: &str,
    from: i64,
    to: i64,
) -> Result<Option<(i64, Uuid)>> {
    let row = sqlx::query(
        "SELECT id, created_at FROM notifications \
         WHERE dedup_key = ?1 AND duplicate_of IS NULL AND created_at > ?2 AND created_at <= ?3 \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(key)
    .bind(from)
    .bind(to)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|r| Ok((r.try_get("created_at")?, parse_id(r.try_get("id")?)?)))
        .transpose()
}

/// Writes new notifications with their deliveries (and the digest groups they join) in the
/// caller's transaction, each with the original it repeats, if any: multi-row inserts, since a
/// statement per row would cost a round trip each. Deliveries of a repeat or of a switched-off
/// source start `suppressed` and join no group.
async fn write_entries<'a>(
    tx: &mut Transaction<'static, Sqlite>,
    entries: impl Iterator<Item = (&'a NewEntry, Option<Uuid>)>,
    now: i64,
) -> Result<()> {
    let fresh: Vec<(&NewEntry, Option<Uuid>)> = entries.collect();
    for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(multi_row(
            "INSERT INTO notifications (id, created_at, severity, priority, event_type, source, user_id, title, message, idempotency_key, dedup_key, duplicate_of, body) VALUES ",
            13,
            chunk.len(),
        )));
        for (e, duplicate_of) in chunk {
            let n = &e.notification;
            let body = serde_json::to_string(n).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            q = q
                .bind(id_str(n.id))
                .bind(ms(n.created_at))
                .bind(n.severity.as_str())
                .bind(n.priority.as_str())
                .bind(n.event_type.clone())
                .bind(n.source.clone())
                .bind(n.user_id.clone())
                .bind(n.title.clone())
                .bind(n.message.clone())
                .bind(n.idempotency_key.clone())
                // Only a notification deduplicated at all can be an original.
                .bind(dedup_span(n).map(|(k, _, _)| k.to_string()))
                .bind(duplicate_of.map(id_str))
                .bind(body);
        }
        q.execute(&mut **tx).await?;
    }
    let rows: Vec<(&Notification, &NewDelivery, DeliveryStatus, Option<String>)> = fresh
        .iter()
        .flat_map(|(e, duplicate_of)| {
            let (status, why) = initial_status(e, *duplicate_of);
            e.deliveries
                .iter()
                .map(move |d| (&e.notification, d, status, why.clone()))
        })
        .collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(multi_row(
            "INSERT INTO deliveries (id, notification_id, channel, target, status, last_error, priority, attempts, not_before, expires_at, created_at, updated_at, group_key) VALUES ",
            13,
            chunk.len(),
        )));
        for (n, d, status, why) in chunk {
            let group = d
                .group
                .as_ref()
                .filter(|_| *status == DeliveryStatus::Pending);
            q = q
                .bind(id_str(d.id))
                .bind(id_str(n.id))
                .bind(d.channel.clone())
                .bind(d.target.clone())
                .bind(status.as_str())
                .bind(why.clone())
                .bind(n.priority.rank())
                .bind(0i64)
                .bind(n.send_at.map(ms).unwrap_or(now))
                .bind(n.expires_at.map(ms))
                .bind(now)
                .bind(now)
                .bind(group.map(|g| g.key.clone()));
        }
        q.execute(&mut **tx).await?;
    }
    let grouped = fresh
        .iter()
        .filter(|(e, dup)| initial_status(e, *dup).0 == DeliveryStatus::Pending)
        .map(|(e, _)| *e);
    for (d, g) in new_groups(grouped) {
        sqlx::query(
            "INSERT INTO delivery_groups (group_key, channel, target, wait_ms, interval_ms, max_batch, label) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (group_key) DO NOTHING",
        )
        .bind(&g.key)
        .bind(&d.channel)
        .bind(&d.target)
        .bind(g.wait.as_millis() as i64)
        .bind(g.interval.as_millis() as i64)
        .bind(g.max_batch as i64)
        .bind(label(g))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Hands a delivery's notification to its fallback channel: new rows that point back at the one
/// they replace, and the old row marked with where it went, in the caller's transaction.
async fn insert_fallback(
    tx: &mut Transaction<'static, Sqlite>,
    from: Uuid,
    f: &Fallback,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE deliveries SET fell_back_to = ?1 WHERE id = ?2")
        .bind(&f.channel)
        .bind(id_str(from))
        .execute(&mut **tx)
        .await?;
    for d in &f.deliveries {
        sqlx::query(
            "INSERT INTO deliveries (id, notification_id, channel, target, status, priority, attempts, not_before, expires_at, created_at, updated_at, fallback_of) \
             SELECT ?1, notification_id, ?2, ?3, 'pending', priority, 0, ?4, expires_at, ?4, ?4, ?5 FROM deliveries WHERE id = ?5",
        )
        .bind(id_str(d.id))
        .bind(&d.channel)
        .bind(&d.target)
        .bind(now)
        .bind(id_str(from))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn hold_group(tx: &mut Transaction<'static, Sqlite>, key: &str, until: i64) -> Result<()> {
    sqlx::query("UPDATE delivery_groups SET held_until = ?1 WHERE group_key = ?2")
        .bind(until)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<()> {
        let mut conn = self.writer.acquire().await?;
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS klaxon_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            .execute(&mut *conn)
            .await?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM klaxon_migrations")
            .fetch_all(&mut *conn)
            .await?;
        drop(conn);
        for (version, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            let mut tx = self.writer.begin().await?;
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO klaxon_migrations (version, applied_at) VALUES (?, ?)")
                .bind(version)
                .bind(ms(Utc::now()))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, "applied store migration");
        }
        if let Some(newer) = applied
            .iter()
            .find(|v| !MIGRATIONS.iter().any(|(m, _)| m == *v))
        {
            return Err(StoreError::Corrupt(format!(
                "the database has schema version {newer}, newer than this Klaxon knows; upgrade Klaxon"
            )));
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn insert(&self, entries: Vec<NewEntry>) -> Result<Vec<Inserted>> {
        let now = ms(Utc::now());
        let mut tx = self.writer.begin().await?;
        // Pass 1: settle idempotency (against the table and earlier entries of this batch).
        let mut out: Vec<Option<Inserted>> = Vec::with_capacity(entries.len());
        let mut first_in_batch: HashMap<&str, usize> = HashMap::new();
        let mut fresh: Vec<usize> = Vec::with_capacity(entries.len());
        let mut repeat_in_batch: Vec<(usize, usize)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let Some(key) = e.notification.idempotency_key.as_deref() else {
                fresh.push(i);
                out.push(None);
                continue;
            };
            if let Some(&j) = first_in_batch.get(key) {
                // Answered once the batch's first is settled (dedup may suppress it).
                repeat_in_batch.push((i, j));
                out.push(None);
            } else if let Some(first) = existing(&mut tx, key).await? {
                out.push(Some(first));
            } else {
                first_in_batch.insert(key, i);
                fresh.push(i);
                out.push(None);
            }
        }
        // Pass 2: dedup, in order. The single writer connection serialises inserts, so the
        // lookup and the insert below cannot race another one.
        let mut duplicate_of: Vec<Option<Uuid>> = vec![None; entries.len()];
        let mut pass = DedupPass::default();
        for &i in &fresh {
            let n = &entries[i].notification;
            let Some((key, from, to)) = dedup_span(n) else {
                continue;
            };
            let stored = find_original(&mut tx, key, from, to).await?;
            duplicate_of[i] = pass.decide(n, stored);
        }
        // Pass 3: the rows themselves.
        write_entries(
            &mut tx,
            fresh.iter().map(|&i| (&entries[i], duplicate_of[i])),
            now,
        )
        .await?;
        tx.commit().await?;
        let mut out: Vec<Inserted> = out
            .into_iter()
            .zip(&entries)
            .zip(duplicate_of)
            .map(|((o, e), dup)| o.unwrap_or_else(|| summary(e, dup)))
            .collect();
        for (i, j) in repeat_in_batch {
            out[i] = Inserted {
                duplicate: true,
                ..out[j].clone()
            };
        }
        Ok(out)
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>> {
        let now = ms(req.now);
        let lease_until = now + req.lease.as_millis() as i64;
        let mut tx = self.writer.begin().await?;
        // One short indexed query per channel that may send, so the rows of a disabled or
        // paused channel — however many — are never read; then the best `limit` of them all.
        let mut candidates: Vec<(i64, i64, String)> = Vec::new();
        for channel in &req.channels {
            let rows = sqlx::query(
                "SELECT id, priority, not_before FROM deliveries \
                 WHERE channel = ?1 AND status IN ('pending', 'retrying', 'sending') AND group_key IS NULL \
                   AND (CASE WHEN status = 'sending' THEN lease_until < ?2 ELSE not_before <= ?2 END) \
                 ORDER BY priority DESC, not_before LIMIT ?3",
            )
            .bind(channel)
            .bind(now)
            .bind(req.limit as i64)
            .fetch_all(&mut *tx)
            .await?;
            for r in &rows {
                candidates.push((
                    r.try_get("priority")?,
                    r.try_get("not_before")?,
                    r.try_get("id")?,
                ));
            }
        }
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        candidates.truncate(req.limit);
        let ids: Vec<&str> = candidates.iter().map(|c| c.2.as_str()).collect();
        let rows = if ids.is_empty() {
            Vec::new()
        } else {
            sqlx::query(concat!(
                "UPDATE deliveries SET status = 'sending', lease_until = ?1, lease_owner = ?2, updated_at = ?3 \
                 WHERE id IN (SELECT value FROM json_each(?4)) \
                   AND status IN ('pending', 'retrying', 'sending') \
                 RETURNING ",
                delivery_columns!(),
                ", priority"
            ))
            .bind(lease_until)
            .bind(&req.owner)
            .bind(now)
            .bind(serde_json::to_string(&ids).unwrap_or_default())
            .fetch_all(&mut *tx)
            .await?
        };

        let mut claimed = Vec::with_capacity(rows.len());
        let mut expired = Vec::new();
        for row in &rows {
            let d = delivery_from_row(row)?;
            let expires: Option<i64> = row.try_get("expires_at")?;
            if expires.is_some_and(|e| e <= now) {
                expired.push(id_str(d.id));
            } else {
                let prio: i64 = row.try_get("priority")?;
                claimed.push((prio, d));
            }
        }
        if !expired.is_empty() {
            sqlx::query(
                "UPDATE deliveries SET status = 'expired', lease_until = NULL, lease_owner = NULL, \
                 last_error = 'expired before it could be delivered', updated_at = ?1 \
                 WHERE id IN (SELECT value FROM json_each(?2))",
            )
            .bind(now)
            .bind(serde_json::to_string(&expired).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
        }
        let ids: Vec<String> = claimed
            .iter()
            .map(|(_, d)| id_str(d.notification_id))
            .collect();
        let bodies = if ids.is_empty() {
            Vec::new()
        } else {
            sqlx::query(
                "SELECT id, body FROM notifications WHERE id IN (SELECT value FROM json_each(?))",
            )
            .bind(serde_json::to_string(&ids).unwrap_or_default())
            .fetch_all(&mut *tx)
            .await?
        };
        tx.commit().await?;

        let mut by_id: HashMap<String, Arc<Notification>> = HashMap::with_capacity(bodies.len());
        for row in &bodies {
            let id: String = row.try_get("id")?;
            let body: String = row.try_get("body")?;
            by_id.insert(id, Arc::new(notification_from_body(&body)?));
        }
        // RETURNING gives no order guarantee; restore the queue's.
        claimed.sort_by(|(pa, a), (pb, b)| {
            pb.cmp(pa)
                .then(a.not_before.cmp(&b.not_before))
                .then(a.id.cmp(&b.id))
        });
        claimed
            .into_iter()
            .map(|(_, d)| {
                let n = by_id
                    .get(&id_str(d.notification_id))
                    .cloned()
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("delivery {} has no notification", d.id))
                    })?;
                Ok(Claimed {
                    delivery: d,
                    notification: n,
                })
            })
            .collect()
    }

    async fn complete(&self, done: Vec<Completion>) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let now = ms(Utc::now());
        let mut tx = self.writer.begin().await?;
        for c in &done {
            let a = &c.attempt;
            let id = id_str(a.delivery_id);
            sqlx::query(
                "INSERT INTO attempts (delivery_id, number, started_at, outcome, status_code, error, latency_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(&id)
            .bind(a.number as i64)
            .bind(ms(a.started_at))
            .bind(a.outcome.as_str())
            .bind(a.status_code.map(i64::from))
            .bind(&a.error)
            .bind(a.latency_ms as i64)
            .execute(&mut *tx)
            .await?;
            let delivered = (c.status == DeliveryStatus::Delivered).then_some(now);
            let updated = sqlx::query(
                "UPDATE deliveries SET status = ?1, attempts = MAX(attempts, ?2), throttled = throttled + ?9, not_before = COALESCE(?3, not_before), \
                 last_error = COALESCE(?4, last_error), provider_id = COALESCE(?5, provider_id), delivered_at = COALESCE(?6, delivered_at), \
                 lease_until = NULL, lease_owner = NULL, updated_at = ?7 \
                 WHERE id = ?8 AND status = 'sending'",
            )
            .bind(c.status.as_str())
            .bind(a.number as i64)
            .bind(c.not_before.map(ms))
            .bind(&a.error)
            .bind(&c.provider_id)
            .bind(delivered)
            .bind(now)
            .bind(&id)
            .bind(c.throttled as i64)
            .execute(&mut *tx)
            .await?;
            // Only when this worker still held the row: a lost lease means another worker has
            // it, and its outcome decides.
            if let Some(f) = &c.fallback
                && updated.rows_affected() == 1
            {
                insert_fallback(&mut tx, a.delivery_id, f, now).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn requeue(&self, ids: Option<Vec<Uuid>>) -> Result<Vec<Uuid>> {
        let now = ms(Utc::now());
        let ids_json = ids.map(|v| {
            serde_json::to_string(&v.iter().map(|i| id_str(*i)).collect::<Vec<_>>())
                .unwrap_or_default()
        });
        let rows: Vec<String> = sqlx::query_scalar(
            "UPDATE deliveries SET status = 'pending', not_before = ?1, budget_from = attempts, \
               throttled = 0, lease_until = NULL, lease_owner = NULL, updated_at = ?1, \
               expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at <= ?1 THEN NULL ELSE expires_at END \
             WHERE status = 'dead' AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2))) \
             RETURNING id",
        )
        .bind(now)
        .bind(ids_json)
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(|r| parse_id(r)).collect()
    }

    async fn reschedule(
        &self,
        channel: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE deliveries SET not_before = ?1, updated_at = ?4 \
             WHERE channel = ?2 AND not_before = ?3 AND status IN ('pending', 'retrying')",
        )
        .bind(ms(to))
        .bind(channel)
        .bind(ms(from))
        .bind(ms(Utc::now()))
        .execute(&self.writer)
        .await?;
        Ok(r.rows_affected())
    }

    async fn fall_back(&self, moves: Vec<FallbackMove>) -> Result<()> {
        if moves.is_empty() {
            return Ok(());
        }
        let now = ms(Utc::now());
        let mut tx = self.writer.begin().await?;
        for m in &moves {
            let updated = sqlx::query(
                "UPDATE deliveries SET status = 'dead', last_error = ?1, lease_until = NULL, lease_owner = NULL, updated_at = ?2 \
                 WHERE id = ?3 AND status = 'sending'",
            )
            .bind(&m.reason)
            .bind(now)
            .bind(id_str(m.delivery_id))
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 1 {
                insert_fallback(&mut tx, m.delivery_id, &m.fallback, now).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn renew(&self, owner: &str, ids: &[Uuid], until: DateTime<Utc>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ids.iter().map(|i| id_str(*i)).collect();
        sqlx::query(
            "UPDATE deliveries SET lease_until = ?1 \
             WHERE id IN (SELECT value FROM json_each(?2)) AND status = 'sending' AND lease_owner = ?3",
        )
        .bind(ms(until))
        .bind(serde_json::to_string(&ids).unwrap_or_default())
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn defer(&self, items: Vec<Deferral>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let now = ms(Utc::now());
        let mut tx = self.writer.begin().await?;
        for d in &items {
            sqlx::query(
                "UPDATE deliveries SET status = CASE WHEN attempts > 0 THEN 'retrying' ELSE 'pending' END, \
                 not_before = ?1, lease_until = NULL, lease_owner = NULL, updated_at = ?2 \
                 WHERE id = ?3 AND status = 'sending'",
            )
            .bind(ms(d.not_before))
            .bind(now)
            .bind(id_str(d.delivery_id))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn finish(&self, items: Vec<Finish>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let now = ms(Utc::now());
        let mut tx = self.writer.begin().await?;
        for f in &items {
            sqlx::query(
                "UPDATE deliveries SET status = ?1, last_error = ?2, lease_until = NULL, lease_owner = NULL, updated_at = ?3 \
                 WHERE id = ?4 AND status = 'sending'",
            )
            .bind(f.status.as_str())
            .bind(&f.reason)
            .bind(now)
            .bind(id_str(f.delivery_id))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(CASE WHEN status = 'sending' THEN lease_until ELSE not_before END) FROM deliveries \
             WHERE status IN ('pending', 'retrying', 'sending') AND group_key IS NULL",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(v.map(from_ms))
    }

    async fn pending_groups(&self) -> Result<Vec<PendingGroup>> {
        let rows = sqlx::query(PENDING_GROUPS).fetch_all(&self.reader).await?;
        rows.iter().map(pending_group).collect()
    }

    async fn flush_group(
        &self,
        key: &str,
        now: DateTime<Utc>,
        targets: &DigestTargets<'_>,
    ) -> Result<Flushed> {
        let now_ms = ms(now);
        // One writer: this transaction alone decides and writes, so two flushes of one group
        // run one after the other, and the second finds it held.
        let mut tx = self.writer.begin().await?;
        let Some(g) = sqlx::query("SELECT * FROM delivery_groups WHERE group_key = ?")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?
        else {
            tx.rollback().await?;
            return Ok(Flushed::Nothing);
        };
        let g = GroupRow::from_row(&g)?;
        // Members past their expiry are not worth a line in a digest.
        sqlx::query(
            "UPDATE deliveries SET status = 'expired', last_error = 'expired before it could be delivered', updated_at = ?1 \
             WHERE group_key = ?2 AND group_key IS NOT NULL AND status = 'pending' AND expires_at <= ?1",
        )
        .bind(now_ms)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "SELECT d.id, d.not_before, n.body FROM deliveries d JOIN notifications n ON n.id = d.notification_id \
             WHERE d.group_key = ?1 AND d.group_key IS NOT NULL AND d.status = 'pending' AND d.not_before <= ?2 \
             ORDER BY d.not_before, d.id LIMIT ?3",
        )
        .bind(key)
        .bind(now_ms)
        .bind(g.max_batch.max(1) + 1)
        .fetch_all(&mut *tx)
        .await?;
        let members = rows
            .iter()
            .map(|r| {
                Ok((
                    parse_id(r.try_get("id")?)?,
                    r.try_get("not_before")?,
                    r.try_get("body")?,
                ))
            })
            .collect::<Result<Vec<Member>>>()?;
        let out = match flush_step(&g, members, now, targets)? {
            FlushStep::Nothing => {
                // Explicitly: a dropped transaction rolls back only when its connection is next
                // used, and until then the group's lock would turn other flushes away.
                tx.rollback().await?;
                return Ok(Flushed::Nothing);
            }
            FlushStep::Release { id, held_until } => {
                sqlx::query(
                    "UPDATE deliveries SET group_key = NULL, not_before = ?1, updated_at = ?1 WHERE id = ?2",
                )
                .bind(now_ms)
                .bind(id_str(id))
                .execute(&mut *tx)
                .await?;
                hold_group(&mut tx, key, held_until).await?;
                Flushed::Released { delivery_id: id }
            }
            FlushStep::Digest {
                entry,
                members,
                held_until,
            } => {
                let delivery_id = entry.deliveries[0].id;
                write_entries(&mut tx, std::iter::once((&*entry, None)), now_ms).await?;
                let ids: Vec<String> = members.iter().map(|i| id_str(*i)).collect();
                sqlx::query(
                    "UPDATE deliveries SET status = 'aggregated', aggregated_into = ?1, updated_at = ?2 \
                     WHERE id IN (SELECT value FROM json_each(?3))",
                )
                .bind(id_str(delivery_id))
                .bind(now_ms)
                .bind(serde_json::to_string(&ids).unwrap_or_default())
                .execute(&mut *tx)
                .await?;
                hold_group(&mut tx, key, held_until).await?;
                Flushed::Digest {
                    notification_id: entry.notification.id,
                    delivery_id,
                    channel: g.channel.clone(),
                    members: members.len(),
                }
            }
        };
        tx.commit().await?;
        Ok(out)
    }

    async fn get(&self, id: Uuid) -> Result<Option<NotificationRecord>> {
        let Some(row) = sqlx::query(concat!(
            "SELECT n.body, n.duplicate_of, ",
            repeats_column!(),
            " FROM notifications n WHERE n.id = ?"
        ))
        .bind(id_str(id))
        .fetch_optional(&self.reader)
        .await?
        else {
            return Ok(None);
        };
        let head = head_from_row(&row)?;
        let drows = sqlx::query(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE notification_id = ? ORDER BY id"
        ))
        .bind(id_str(id))
        .fetch_all(&self.reader)
        .await?;
        let arows = sqlx::query(
            "SELECT a.* FROM attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE d.notification_id = ? ORDER BY a.delivery_id, a.number",
        )
        .bind(id_str(id))
        .fetch_all(&self.reader)
        .await?;
        let mut attempts: HashMap<Uuid, Vec<Attempt>> = HashMap::new();
        for r in &arows {
            let a = Attempt {
                delivery_id: parse_id(r.try_get("delivery_id")?)?,
                number: r.try_get::<i64, _>("number")? as u32,
                started_at: from_ms(r.try_get("started_at")?),
                outcome: match r.try_get::<&str, _>("outcome")? {
                    "delivered" => AttemptOutcome::Delivered,
                    "retry" => AttemptOutcome::Retry,
                    _ => AttemptOutcome::Rejected,
                },
                status_code: r
                    .try_get::<Option<i64>, _>("status_code")?
                    .map(|c| c as u16),
                error: r.try_get("error")?,
                latency_ms: r.try_get::<i64, _>("latency_ms")? as u64,
            };
            attempts.entry(a.delivery_id).or_default().push(a);
        }
        let deliveries = drows
            .iter()
            .map(|r| {
                let d = delivery_from_row(r)?;
                let a = attempts.remove(&d.id).unwrap_or_default();
                Ok(DeliveryRecord {
                    delivery: d,
                    attempts: a,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Some(NotificationRecord { deliveries, ..head }))
    }

    async fn list(&self, f: ListFilter) -> Result<Vec<NotificationRecord>> {
        // With a status the deliveries' (status, notification_id) index is walked newest
        // first, so a rare status (dead letters) and a common one both stop after a page;
        // without one, notifications are walked by id.
        let sql = if f.status.is_some() {
            concat!(
                "SELECT n.id, n.body, n.duplicate_of, ",
                repeats_column!(),
                " FROM deliveries d JOIN notifications n ON n.id = d.notification_id \
             WHERE d.status = ?5 AND (?6 IS NULL OR d.channel = ?6) \
               AND (?1 IS NULL OR d.notification_id < ?1) AND (?2 IS NULL OR n.severity = ?2) \
               AND (?3 IS NULL OR n.created_at >= ?3) AND (?4 IS NULL OR n.created_at < ?4) \
               AND (?8 IS NULL OR instr(lower(n.message), ?8) > 0 \
                    OR instr(lower(coalesce(n.title, '')), ?8) > 0) \
             GROUP BY d.notification_id ORDER BY d.notification_id DESC LIMIT ?7"
            )
        } else {
            concat!(
                "SELECT n.id, n.body, n.duplicate_of, ",
                repeats_column!(),
                " FROM notifications n \
             WHERE (?1 IS NULL OR n.id < ?1) AND (?2 IS NULL OR n.severity = ?2) \
               AND (?3 IS NULL OR n.created_at >= ?3) AND (?4 IS NULL OR n.created_at < ?4) \
               AND (?6 IS NULL OR EXISTS (SELECT 1 FROM deliveries d \
                    WHERE d.notification_id = n.id AND d.channel = ?6)) \
               AND (?8 IS NULL OR instr(lower(n.message), ?8) > 0 \
                    OR instr(lower(coalesce(n.title, '')), ?8) > 0) \
             ORDER BY n.id DESC LIMIT ?7"
            )
        };
        let rows = sqlx::query(sql)
            .bind(f.cursor.map(id_str))
            .bind(f.severity.map(|s| s.as_str()))
            .bind(f.since.map(ms))
            .bind(f.until.map(ms))
            .bind(f.status.map(|s| s.as_str()))
            .bind(&f.channel)
            .bind(f.limit.clamp(1, 1000) as i64)
            .bind(
                f.text
                    .as_deref()
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_ascii_lowercase),
            )
            .fetch_all(&self.reader)
            .await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<Result<_, _>>()?;
        let drows = if ids.is_empty() {
            Vec::new()
        } else {
            sqlx::query(concat!(
                "SELECT ",
                delivery_columns!(),
                " FROM deliveries WHERE notification_id IN (SELECT value FROM json_each(?)) ORDER BY id"
            ))
            .bind(serde_json::to_string(&ids).unwrap_or_default())
            .fetch_all(&self.reader)
            .await?
        };
        let deliveries = drows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>>>()?;
        let heads = rows.iter().map(head_from_row).collect::<Result<Vec<_>>>()?;
        Ok(crate::records(heads, deliveries))
    }

    async fn depth(&self, scope: DepthScope) -> Result<Vec<DepthRow>> {
        let rows = sqlx::query(scope.sql()).fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| {
                Ok(DepthRow {
                    channel: r.try_get("channel")?,
                    status: parse_status(r.try_get("status")?)?,
                    count: r.try_get("n")?,
                })
            })
            .collect()
    }

    async fn channel_states(&self) -> Result<Vec<ChannelState>> {
        let rows = sqlx::query("SELECT * FROM channel_state ORDER BY channel")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(state_from_row).collect()
    }

    async fn prune(&self, before: DateTime<Utc>, batch: usize, dry_run: bool) -> Result<Pruned> {
        let cutoff = ms(before);
        if dry_run {
            let row = sqlx::query(concat!(
                "SELECT (SELECT COUNT(*) FROM notifications n WHERE ",
                prunable!("?1"),
                ") AS n, (SELECT COUNT(*) FROM deliveries d2 JOIN notifications n ON n.id = d2.notification_id WHERE ",
                prunable!("?1"),
                ") AS d, (SELECT COUNT(*) FROM attempts a JOIN deliveries d2 ON d2.id = a.delivery_id \
                   JOIN notifications n ON n.id = d2.notification_id WHERE ",
                prunable!("?1"),
                ") AS a"
            ))
            .bind(cutoff)
            .fetch_one(&self.reader)
            .await?;
            return Ok(Pruned {
                notifications: row.try_get::<i64, _>("n")? as u64,
                deliveries: row.try_get::<i64, _>("d")? as u64,
                attempts: row.try_get::<i64, _>("a")? as u64,
                ran: true,
            });
        }
        let batch = batch.max(1);
        let mut total = Pruned {
            ran: true,
            ..Pruned::default()
        };
        // One short transaction per batch on the single writer: API commits and claims queue
        // behind a batch, never behind the whole prune.
        loop {
            let mut tx = self.writer.begin().await?;
            let ids: Vec<String> = sqlx::query_scalar(concat!(
                "SELECT n.id FROM notifications n WHERE ",
                prunable!("?1"),
                " ORDER BY n.created_at LIMIT ?2"
            ))
            .bind(cutoff)
            .bind(batch as i64)
            .fetch_all(&mut *tx)
            .await?;
            if ids.is_empty() {
                return Ok(total);
            }
            let ids_json = serde_json::to_string(&ids).unwrap_or_default();
            let attempts = sqlx::query(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries \
                 WHERE notification_id IN (SELECT value FROM json_each(?1)))",
            )
            .bind(&ids_json)
            .execute(&mut *tx)
            .await?;
            let deliveries = sqlx::query(
                "DELETE FROM deliveries WHERE notification_id IN (SELECT value FROM json_each(?1))",
            )
            .bind(&ids_json)
            .execute(&mut *tx)
            .await?;
            let notifications = sqlx::query(
                "DELETE FROM notifications WHERE id IN (SELECT value FROM json_each(?1))",
            )
            .bind(&ids_json)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            total.attempts += attempts.rows_affected();
            total.deliveries += deliveries.rows_affected();
            total.notifications += notifications.rows_affected();
            if ids.len() < batch {
                return Ok(total);
            }
        }
    }

    async fn patch_channel(&self, channel: &str, p: ChannelPatch) -> Result<ChannelState> {
        let now = ms(Utc::now());
        let mut tx = self.writer.begin().await?;
        sqlx::query("INSERT INTO channel_state (channel, updated_at) VALUES (?, ?) ON CONFLICT (channel) DO NOTHING")
            .bind(channel)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        // Each field: `?n` = 1 to set, then the value.
        sqlx::query(
            "UPDATE channel_state SET \
               enabled = CASE WHEN ?1 THEN ?2 ELSE enabled END, \
               disabled_reason = CASE WHEN ?3 THEN ?4 ELSE disabled_reason END, \
               paused_until = CASE WHEN ?5 THEN ?6 ELSE paused_until END, \
               muted_until = CASE WHEN ?7 THEN ?8 ELSE muted_until END, \
               last_error = COALESCE(?9, last_error), last_error_at = COALESCE(?10, last_error_at), \
               last_success_at = COALESCE(?11, last_success_at), updated_at = ?12 \
             WHERE channel = ?13",
        )
        .bind(p.enabled.is_some())
        .bind(p.enabled.flatten())
        .bind(p.disabled_reason.is_some())
        .bind(p.disabled_reason.clone().flatten())
        .bind(p.paused_until.is_some())
        .bind(p.paused_until.flatten().map(ms))
        .bind(p.muted_until.is_some())
        .bind(p.muted_until.flatten().map(ms))
        .bind(p.last_error.as_ref().map(|(e, _)| e.clone()))
        .bind(p.last_error.as_ref().map(|(_, t)| ms(*t)))
        .bind(p.last_success_at.map(ms))
        .bind(now)
        .bind(channel)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT * FROM channel_state WHERE channel = ?")
            .bind(channel)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        state_from_row(&row)
    }
}

fn state_from_row(r: &SqliteRow) -> Result<ChannelState> {
    let t = |c: &str| -> Result<Option<DateTime<Utc>>> {
        Ok(r.try_get::<Option<i64>, _>(c)?.map(from_ms))
    };
    Ok(ChannelState {
        channel: r.try_get("channel")?,
        enabled: r.try_get::<Option<bool>, _>("enabled")?,
        disabled_reason: r.try_get("disabled_reason")?,
        paused_until: t("paused_until")?,
        muted_until: t("muted_until")?,
        last_error: r.try_get("last_error")?,
        last_error_at: t("last_error_at")?,
        last_success_at: t("last_success_at")?,
    })
}
