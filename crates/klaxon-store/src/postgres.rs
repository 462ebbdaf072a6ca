//! The PostgreSQL store, for several replicas sharing one queue. Same semantics as the SQLite
//! store (the conformance suite runs unchanged against both); what differs is how replicas are
//! kept apart: claims lock rows with `FOR UPDATE SKIP LOCKED` so two replicas never take the
//! same delivery, idempotency keys are settled by a unique index (`ON CONFLICT DO NOTHING`)
//! rather than by a single writer, and migrations run under an advisory lock so replicas that
//! start together migrate exactly once.
//!
//! Times are Unix milliseconds (BIGINT) as in SQLite; ids are native `uuid`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use klaxon_core::model::{Attempt, AttemptOutcome, Delivery, DeliveryStatus, Notification};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::*;

/// Schema versions, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_dedup.sql")),
    (3, include_str!("../migrations/postgres/0003_groups.sql")),
    (4, include_str!("../migrations/postgres/0004_inbox.sql")),
];

/// The schema versions this build applies, in order.
pub fn schema_versions() -> Vec<i64> {
    MIGRATIONS.iter().map(|(v, _)| *v).collect()
}

/// `NOTIFY` channel: deliveries became due. Sent inside the committing transaction, so a
/// listener hears it exactly when the rows are visible.
const DUE_CHANNEL: &str = "klaxon_due";
/// `NOTIFY` channel of the inbox table's insert trigger (migration 4).
const INBOX_CHANNEL: &str = "klaxon_inbox";

/// Advisory lock key of retention ("klaxop"): one replica prunes at a time.
const PRUNE_LOCK: i64 = 0x6b6c_6178_6f70;

/// Listener reconnection backoff: from 100 ms, doubling, at most 5 s.
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The advisory lock key migrations hold (any constant; "klaxon" in ASCII), so that replicas
/// starting at once apply each migration exactly once: the second waits, then finds it done.
const MIGRATION_LOCK: i64 = 0x6b6c_6178_6f6e;

/// The class of the advisory locks dedup takes per key (`pg_advisory_xact_lock(class,
/// hashtext(key))`): the two-key space never meets the migration lock's one-key space.
const DEDUP_LOCK_CLASS: i32 = 0x6b6c_6464;

/// The columns `delivery_from_row` reads; a macro so queries stay `&'static str`.
macro_rules! pg_delivery_columns {
    () => {
        "id, notification_id, channel, target, status, attempts, throttled, not_before, last_error, provider_id, created_at, updated_at, delivered_at, expires_at, fallback_of, fell_back_to, budget_from, aggregated_into"
    };
}

/// ASCII-only lowercasing of a column, as SQLite's `lower()` does: PostgreSQL's `lower()`
/// folds all of Unicode, and text search must match the same rows on both backends.
macro_rules! ascii_lower {
    ($col:literal) => {
        concat!(
            "translate(",
            $col,
            ", 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
        )
    };
}

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn open(url: &str) -> Result<Self> {
        let opts =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::Config(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        Ok(PgStore { pool })
    }
}

/// How many repeats point at `n` (the index on `duplicate_of` answers it); a macro so queries
/// stay `&'static str`.
macro_rules! pg_repeats_column {
    () => {
        "(SELECT COUNT(*) FROM notifications r WHERE r.duplicate_of = n.id) AS repeats"
    };
}

/// A notification's head from a row with `body`, `duplicate_of` and `repeats`.
fn head_from_row(row: &PgRow) -> Result<NotificationRecord> {
    head(
        row.try_get("body")?,
        row.try_get("duplicate_of")?,
        row.try_get("repeats")?,
    )
}

fn delivery_from_row(row: &PgRow) -> Result<Delivery> {
    Ok(Delivery {
        id: row.try_get("id")?,
        notification_id: row.try_get("notification_id")?,
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
        delivered_at: row.try_get::<Option<i64>, _>("delivered_at")?.map(from_ms),
        fallback_of: row.try_get("fallback_of")?,
        fell_back_to: row.try_get("fell_back_to")?,
        budget_from: row.try_get::<i64, _>("budget_from")? as u32,
        aggregated_into: row.try_get("aggregated_into")?,
    })
}

/// The notification stored under `key` (committed, possibly by another replica), as a duplicate.
async fn existing(tx: &mut Transaction<'static, Postgres>, key: &str) -> Result<Option<Inserted>> {
    let Some((nid, duplicate_of)) = sqlx::query_as::<_, (Uuid, Option<Uuid>)>(
        "SELECT id, duplicate_of FROM notifications WHERE idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT id, channel, target, status FROM deliveries WHERE notification_id = $1 ORDER BY id",
    )
    .bind(nid)
    .fetch_all(&mut **tx)
    .await?;
    let deliveries = rows
        .iter()
        .map(|r| {
            Ok(DeliverySummary {
                id: r.try_get("id")?,
                channel: r.try_get("channel")?,
                target: r.try_get("target")?,
                status: parse_status(r.try_get("status")?)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Some(Inserted {
        notification_id: nid,
        duplicate: true,
        deliveries,
        duplicate_of,
    }))
}

/// The newest original (not itself a repeat) with `key` created in `(from, to]`, committed by
/// anyone: the caller holds the key's advisory lock, so no other original can be in flight.
async fn find_original(
    tx: &mut Transaction<'static, Postgres>,
    key: &str,
    from: i64,
    to: i64,
) -> Result<Option<(i64, Uuid)>> {
    Ok(sqlx::query_as::<_, (i64, Uuid)>(
        "SELECT created_at, id FROM notifications \
         WHERE dedup_key = $1 AND duplicate_of IS NULL AND created_at > $2 AND created_at <= $3 \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(key)
    .bind(from)
    .bind(to)
    .fetch_optional(&mut **tx)
    .await?)
}

/// One array per column of `notifications`, for an `UNNEST` insert.
type NotificationColumns = (
    Vec<Uuid>,
    Vec<i64>,
    Vec<&'static str>,
    Vec<&'static str>,
    Vec<Option<String>>,
    Vec<String>,
    Vec<Option<String>>,
    Vec<Option<String>>,
    Vec<String>,
    Vec<Option<String>>,
    Vec<Option<String>>,
    Vec<String>,
);

/// One array per inserted column of `deliveries`.
type DeliveryColumns = (
    Vec<Uuid>,
    Vec<Uuid>,
    Vec<String>,
    Vec<Option<String>>,
    Vec<i64>,
    Vec<i64>,
    Vec<Option<i64>>,
    Vec<Option<String>>,
    Vec<&'static str>,
    Vec<Option<String>>,
);

/// Inserts notifications in one statement; a key already stored (by anyone, committed before
/// or racing with this transaction) makes its row a no-op, not an error. Returns the ids that
/// went in.
async fn write_notifications<'a>(
    tx: &mut Transaction<'static, Postgres>,
    entries: impl Iterator<Item = (&'a NewEntry, Option<Uuid>)>,
) -> Result<std::collections::HashSet<Uuid>> {
    let mut cols: NotificationColumns = Default::default();
    // Beside the tuple: std implements Default for tuples of at most 12.
    let mut duplicate_col: Vec<Option<Uuid>> = Vec::new();
    for (e, duplicate_of) in entries {
        let n = &e.notification;
        duplicate_col.push(duplicate_of);
        cols.0.push(n.id);
        cols.1.push(ms(n.created_at));
        cols.2.push(n.severity.as_str());
        cols.3.push(n.priority.as_str());
        cols.4.push(n.event_type.clone());
        cols.5.push(n.source.clone());
        cols.6.push(n.user_id.clone());
        cols.7.push(n.title.clone());
        cols.8.push(n.message.clone());
        cols.9.push(n.idempotency_key.clone());
        // Only a notification deduplicated at all can be an original.
        cols.10.push(dedup_span(n).map(|(k, _, _)| k.to_string()));
        cols.11
            .push(serde_json::to_string(n).map_err(|e| StoreError::Corrupt(e.to_string()))?);
    }
    if cols.0.is_empty() {
        return Ok(Default::default());
    }
    Ok(sqlx::query_scalar(
        "INSERT INTO notifications (id, created_at, severity, priority, event_type, source, user_id, title, message, idempotency_key, dedup_key, body, duplicate_of) \
         SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::uuid[]) \
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING id",
    )
    .bind(cols.0)
    .bind(cols.1)
    .bind(cols.2)
    .bind(cols.3)
    .bind(cols.4)
    .bind(cols.5)
    .bind(cols.6)
    .bind(cols.7)
    .bind(cols.8)
    .bind(cols.9)
    .bind(cols.10)
    .bind(cols.11)
    .bind(duplicate_col)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect())
}

/// Inserts the deliveries of stored notifications, and a row for each digest group they join
/// (`DO NOTHING`: a group's rules are part of its key and never change, and so inserting never
/// waits on a flush that holds the group). Deliveries of a repeat or of a switched-off source
/// start `suppressed` and join no group.
async fn write_deliveries<'a>(
    tx: &mut Transaction<'static, Postgres>,
    entries: impl Iterator<Item = (&'a NewEntry, Option<Uuid>)>,
    now: i64,
) -> Result<()> {
    let entries: Vec<(&NewEntry, Option<Uuid>)> = entries.collect();
    let mut d: DeliveryColumns = Default::default();
    for (e, duplicate_of) in &entries {
        let n = &e.notification;
        let (status, why) = initial_status(e, *duplicate_of);
        for nd in &e.deliveries {
            d.8.push(status.as_str());
            d.9.push(why.clone());
            d.0.push(nd.id);
            d.1.push(n.id);
            d.2.push(nd.channel.clone());
            d.3.push(nd.target.clone());
            d.4.push(n.priority.rank());
            d.5.push(n.send_at.map(ms).unwrap_or(now));
            d.6.push(n.expires_at.map(ms));
            d.7.push(
                nd.group
                    .as_ref()
                    .filter(|_| status == DeliveryStatus::Pending)
                    .map(|g| g.key.clone()),
            );
        }
    }
    if d.0.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO deliveries (id, notification_id, channel, target, status, last_error, priority, attempts, not_before, expires_at, created_at, updated_at, group_key) \
         SELECT u.id, u.nid, u.channel, u.target, u.status, u.last_error, u.priority, 0, u.not_before, u.expires_at, $8, $8, u.group_key \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::int8[], $9::text[], $10::text[], $11::text[]) \
           AS u(id, nid, channel, target, priority, not_before, expires_at, group_key, status, last_error)",
    )
    .bind(d.0)
    .bind(d.1)
    .bind(d.2)
    .bind(d.3)
    .bind(d.4)
    .bind(d.5)
    .bind(d.6)
    .bind(now)
    .bind(d.7)
    .bind(d.8)
    .bind(d.9)
    .execute(&mut **tx)
    .await?;
    // Other replicas hear of claimable work at the commit (grouped rows wait for their digest).
    let claimable = entries.iter().any(|(e, dup)| {
        initial_status(e, *dup).0 == DeliveryStatus::Pending
            && e.deliveries.iter().any(|nd| nd.group.is_none())
    });
    if claimable {
        notify_due(tx).await?;
    }
    // Sorted keys: two inserts of the same new groups wait on each other in one order.
    let pending = entries
        .iter()
        .filter(|(e, dup)| initial_status(e, *dup).0 == DeliveryStatus::Pending)
        .map(|(e, _)| *e);
    let mut groups = new_groups(pending);
    groups.sort_by(|a, b| a.1.key.cmp(&b.1.key));
    for (nd, g) in groups {
        sqlx::query(
            "INSERT INTO delivery_groups (group_key, channel, target, wait_ms, interval_ms, max_batch, label) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (group_key) DO NOTHING",
        )
        .bind(&g.key)
        .bind(&nd.channel)
        .bind(&nd.target)
        .bind(g.wait.as_millis() as i64)
        .bind(g.interval.as_millis() as i64)
        .bind(g.max_batch as i64)
        .bind(label(g))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn hold_group(tx: &mut Transaction<'static, Postgres>, key: &str, until: i64) -> Result<()> {
    sqlx::query("UPDATE delivery_groups SET held_until = $1 WHERE group_key = $2")
        .bind(until)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Hands a delivery's notification to its fallback channel: new rows that point back at the one
/// they replace, and the old row marked with where it went, in the caller's transaction.
async fn insert_fallback(
    tx: &mut Transaction<'static, Postgres>,
    from: Uuid,
    f: &Fallback,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE deliveries SET fell_back_to = $1 WHERE id = $2")
        .bind(&f.channel)
        .bind(from)
        .execute(&mut **tx)
        .await?;
    for d in &f.deliveries {
        sqlx::query(
            "INSERT INTO deliveries (id, notification_id, channel, target, status, priority, attempts, not_before, expires_at, created_at, updated_at, fallback_of) \
             SELECT $1, notification_id, $2, $3, 'pending', priority, 0, $4, expires_at, $4, $4, $5 FROM deliveries WHERE id = $5",
        )
        .bind(d.id)
        .bind(&d.channel)
        .bind(&d.target)
        .bind(now)
        .bind(from)
        .execute(&mut **tx)
        .await?;
    }
    notify_due(tx).await
}

/// Records attempts and outcomes of deliveries that appear once each in `group`.
async fn complete_group(
    tx: &mut Transaction<'static, Postgres>,
    group: &[&Completion],
    now: i64,
) -> Result<()> {
    if group.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = group.iter().map(|c| c.attempt.delivery_id).collect();
    let numbers: Vec<i64> = group.iter().map(|c| c.attempt.number as i64).collect();
    let errors: Vec<Option<String>> = group.iter().map(|c| c.attempt.error.clone()).collect();
    sqlx::query(
        "INSERT INTO attempts (delivery_id, number, started_at, outcome, status_code, error, latency_ms) \
         SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::int8[], $4::text[], $5::int8[], $6::text[], $7::int8[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&numbers)
    .bind(group.iter().map(|c| ms(c.attempt.started_at)).collect::<Vec<_>>())
    .bind(group.iter().map(|c| c.attempt.outcome.as_str()).collect::<Vec<_>>())
    .bind(
        group
            .iter()
            .map(|c| c.attempt.status_code.map(i64::from))
            .collect::<Vec<_>>(),
    )
    .bind(&errors)
    .bind(group.iter().map(|c| c.attempt.latency_ms as i64).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    // Only rows this worker still holds: a lost lease means another worker has the row, and
    // its outcome decides.
    let updated: std::collections::HashSet<Uuid> = sqlx::query_scalar(
        "UPDATE deliveries d SET status = u.status, attempts = GREATEST(d.attempts, u.number), \
           throttled = d.throttled + u.throttled, not_before = COALESCE(u.not_before, d.not_before), \
           last_error = COALESCE(u.error, d.last_error), provider_id = COALESCE(u.provider_id, d.provider_id), \
           delivered_at = COALESCE(u.delivered_at, d.delivered_at), \
           lease_until = NULL, lease_owner = NULL, updated_at = $9 \
         FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::text[], $7::int8[], $8::int8[]) \
           AS u(id, status, number, not_before, error, provider_id, delivered_at, throttled) \
         WHERE d.id = u.id AND d.status = 'sending' \
         RETURNING d.id",
    )
    .bind(&ids)
    .bind(group.iter().map(|c| c.status.as_str()).collect::<Vec<_>>())
    .bind(&numbers)
    .bind(group.iter().map(|c| c.not_before.map(ms)).collect::<Vec<_>>())
    .bind(&errors)
    .bind(group.iter().map(|c| c.provider_id.clone()).collect::<Vec<_>>())
    .bind(
        group
            .iter()
            .map(|c| (c.status == DeliveryStatus::Delivered).then_some(now))
            .collect::<Vec<_>>(),
    )
    .bind(group.iter().map(|c| c.throttled as i64).collect::<Vec<_>>())
    .bind(now)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    for c in group {
        if let Some(f) = &c.fallback
            && updated.contains(&c.attempt.delivery_id)
        {
            insert_fallback(tx, c.attempt.delivery_id, f, now).await?;
        }
    }
    Ok(())
}

/// Tells every listening replica that deliveries are due, when `tx` commits.
async fn notify_due(tx: &mut Transaction<'static, Postgres>) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(DUE_CHANNEL)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Feeds `tx` with the store's `NOTIFY`s until the receiver is dropped. A lost connection is
/// re-made with backoff, and after it both wake-ups are sent: what was committed meanwhile
/// was not heard.
async fn listen(pool: PgPool, tx: tokio::sync::mpsc::Sender<Wake>) {
    use sqlx::postgres::PgListener;
    let mut backoff = LISTEN_BACKOFF_MIN;
    loop {
        let listener = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen_all([DUE_CHANNEL, INBOX_CHANNEL]).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            _ = tx.closed() => return,
            l = listener => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot LISTEN for store wake-ups");
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
                    continue;
                }
            }
        };
        backoff = LISTEN_BACKOFF_MIN;
        // A full queue already holds a wake-up of that kind, so `try_send` loses nothing.
        let _ = tx.try_send(Wake::Due);
        let _ = tx.try_send(Wake::Inbox);
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                n = listener.try_recv() => n,
            };
            match next {
                Ok(Some(n)) => {
                    let wake = if n.channel() == INBOX_CHANNEL {
                        Wake::Inbox
                    } else {
                        Wake::Due
                    };
                    let _ = tx.try_send(wake);
                }
                Ok(None) => {
                    tracing::warn!("store wake-up connection lost; reconnected");
                    let _ = tx.try_send(Wake::Due);
                    let _ = tx.try_send(Wake::Inbox);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "store wake-up connection failed");
                    break;
                }
            }
        }
    }
}

/// Inserts notifications and their deliveries in the caller's transaction (the API's group
/// commit, or an inbox round that deletes its rows in the same one).
// The tuples are the UNNEST column arrays, one vector per column.
#[allow(clippy::type_complexity)]
async fn insert_in(
    tx: &mut Transaction<'static, Postgres>,
    entries: Vec<NewEntry>,
) -> Result<Vec<Inserted>> {
    let now = ms(Utc::now());
    // Repeats of a key within this batch answer with the batch's first entry of that key.
    let mut first_in_batch: HashMap<&str, usize> = HashMap::new();
    let mut repeat_of: Vec<Option<usize>> = Vec::with_capacity(entries.len());
    let mut candidates: Vec<usize> = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        match e.notification.idempotency_key.as_deref() {
            Some(key) => {
                if let Some(&j) = first_in_batch.get(key) {
                    repeat_of.push(Some(j));
                } else {
                    first_in_batch.insert(key, i);
                    candidates.push(i);
                    repeat_of.push(None);
                }
            }
            None => {
                candidates.push(i);
                repeat_of.push(None);
            }
        }
    }

    // Dedup: two replicas must not both take a repeat for an original. Each key's
    // advisory lock is held to the commit, so the second waits, then sees the first's
    // original. Locks go in key order, so two batches never wait on each other in a cycle.
    let mut keys: Vec<&str> = candidates
        .iter()
        .filter_map(|&i| dedup_span(&entries[i].notification).map(|(k, _, _)| k))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(DEDUP_LOCK_CLASS)
            .bind(key)
            .execute(&mut **tx)
            .await?;
    }
    let mut duplicate_of: Vec<Option<Uuid>> = vec![None; entries.len()];
    let mut pass = DedupPass::default();
    for &i in &candidates {
        let n = &entries[i].notification;
        let Some((key, from, to)) = dedup_span(n) else {
            continue;
        };
        let stored = find_original(tx, key, from, to).await?;
        // An original whose idempotency key turns out taken below is not stored; a repeat
        // of it in this same batch would then point at nothing. That needs a racing
        // replica with the same idempotency key inside one batch: rare enough to accept.
        duplicate_of[i] = pass.decide(n, stored);
    }

    // All notifications in one statement; a key already stored (by anyone, committed
    // before or racing with this transaction) makes its row a no-op, not an error.
    // Rows go in key order: two replicas inserting overlapping keys then wait on each other
    // in the same order, never in a cycle (which PostgreSQL would break with an error).
    let mut order = candidates.clone();
    order.sort_by(|&x, &y| {
        let key = |i: usize| entries[i].notification.idempotency_key.as_deref();
        key(x).cmp(&key(y))
    });
    let inserted =
        write_notifications(tx, order.iter().map(|&i| (&entries[i], duplicate_of[i]))).await?;

    let mut out: Vec<Option<Inserted>> = vec![None; entries.len()];
    let mut fresh: Vec<usize> = Vec::with_capacity(inserted.len());
    for &i in &candidates {
        let e = &entries[i];
        if inserted.contains(&e.notification.id) {
            fresh.push(i);
            out[i] = Some(summary(e, duplicate_of[i]));
        } else {
            let key = e.notification.idempotency_key.as_deref().ok_or_else(|| {
                StoreError::Corrupt(format!("notification {} was not stored", e.notification.id))
            })?;
            out[i] = Some(existing(tx, key).await?.ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "idempotency key `{key}` conflicted but its row is gone"
                ))
            })?);
        }
    }

    write_deliveries(
        tx,
        fresh.iter().map(|&i| (&entries[i], duplicate_of[i])),
        now,
    )
    .await?;

    for (i, r) in repeat_of.iter().enumerate() {
        if let Some(j) = *r {
            out[i] = out[j].clone().map(|o| Inserted {
                duplicate: true,
                ..o
            });
        }
    }
    out.into_iter()
        .zip(&entries)
        .map(|(o, e)| o.unwrap_or_else(|| summary(e, None)))
        .map(Ok)
        .collect()
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<()> {
        // One transaction under a transaction-scoped advisory lock: a replica starting at the
        // same time waits here, then sees the versions this one recorded.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS klaxon_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM klaxon_migrations")
            .fetch_all(&mut *tx)
            .await?;
        if let Some(newer) = applied
            .iter()
            .find(|v| !MIGRATIONS.iter().any(|(m, _)| m == *v))
        {
            return Err(StoreError::Corrupt(format!(
                "the database has schema version {newer}, newer than this Klaxon knows; upgrade Klaxon"
            )));
        }
        for (version, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO klaxon_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(ms(Utc::now()))
                .execute(&mut *tx)
                .await?;
            tracing::info!(version, "applied store migration");
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert(&self, entries: Vec<NewEntry>) -> Result<Vec<Inserted>> {
        let mut tx = self.pool.begin().await?;
        let out = insert_in(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>> {
        let now = ms(req.now);
        let lease_until = now + req.lease.as_millis() as i64;
        if req.channels.is_empty() || req.limit == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        // Rows another replica is claiming right now are skipped, not waited for: each replica
        // takes a disjoint set. A lapsed lease (`sending`, lease_until past) is due again.
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM deliveries \
             WHERE channel = ANY($1) AND status IN ('pending', 'retrying', 'sending') AND group_key IS NULL \
               AND (CASE WHEN status = 'sending' THEN lease_until < $2 ELSE not_before <= $2 END) \
             ORDER BY priority DESC, not_before, id LIMIT $3 \
             FOR UPDATE SKIP LOCKED",
        )
        .bind(&req.channels)
        .bind(now)
        .bind(req.limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let rows = if ids.is_empty() {
            Vec::new()
        } else {
            sqlx::query(concat!(
                "UPDATE deliveries SET status = 'sending', lease_until = $1, lease_owner = $2, updated_at = $3 \
                 WHERE id = ANY($4) AND status IN ('pending', 'retrying', 'sending') \
                 RETURNING ",
                pg_delivery_columns!(),
                ", priority"
            ))
            .bind(lease_until)
            .bind(&req.owner)
            .bind(now)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
        };

        let mut claimed = Vec::with_capacity(rows.len());
        let mut expired: Vec<Uuid> = Vec::new();
        for row in &rows {
            let d = delivery_from_row(row)?;
            let expires: Option<i64> = row.try_get("expires_at")?;
            if expires.is_some_and(|e| e <= now) {
                expired.push(d.id);
            } else {
                let prio: i64 = row.try_get("priority")?;
                claimed.push((prio, d));
            }
        }
        if !expired.is_empty() {
            sqlx::query(
                "UPDATE deliveries SET status = 'expired', lease_until = NULL, lease_owner = NULL, \
                 last_error = 'expired before it could be delivered', updated_at = $1 \
                 WHERE id = ANY($2)",
            )
            .bind(now)
            .bind(&expired)
            .execute(&mut *tx)
            .await?;
        }
        let nids: Vec<Uuid> = claimed.iter().map(|(_, d)| d.notification_id).collect();
        let bodies = if nids.is_empty() {
            Vec::new()
        } else {
            sqlx::query("SELECT id, body FROM notifications WHERE id = ANY($1)")
                .bind(&nids)
                .fetch_all(&mut *tx)
                .await?
        };
        tx.commit().await?;

        let mut by_id: HashMap<Uuid, Arc<Notification>> = HashMap::with_capacity(bodies.len());
        for row in &bodies {
            let id: Uuid = row.try_get("id")?;
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
                let n = by_id.get(&d.notification_id).cloned().ok_or_else(|| {
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
        let mut tx = self.pool.begin().await?;
        // Two statements a group rather than two a row: the completion writer must keep up
        // with every replica's sends, and a crashed replica re-sends what it had not recorded.
        // A delivery twice in one batch (re-claimed after a lost lease) splits it, so each
        // statement sees a delivery once and the first outcome decides, as row by row would.
        let mut group: Vec<&Completion> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for c in &done {
            if !seen.insert(c.attempt.delivery_id) {
                complete_group(&mut tx, &group, now).await?;
                group.clear();
                seen.clear();
                seen.insert(c.attempt.delivery_id);
            }
            group.push(c);
        }
        complete_group(&mut tx, &group, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn requeue(&self, ids: Option<Vec<Uuid>>) -> Result<Vec<Uuid>> {
        let now = ms(Utc::now());
        let rows: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE deliveries SET status = 'pending', not_before = $1, budget_from = attempts, \
               throttled = 0, lease_until = NULL, lease_owner = NULL, updated_at = $1, \
               expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at <= $1 THEN NULL ELSE expires_at END \
             WHERE status = 'dead' AND ($2::uuid[] IS NULL OR id = ANY($2)) \
             RETURNING id",
        )
        .bind(now)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        if !rows.is_empty() {
            self.notify_due().await?;
        }
        Ok(rows)
    }

    async fn reschedule(
        &self,
        channel: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE deliveries SET not_before = $1, updated_at = $4 \
             WHERE channel = $2 AND not_before = $3 AND status IN ('pending', 'retrying')",
        )
        .bind(ms(to))
        .bind(channel)
        .bind(ms(from))
        .bind(ms(Utc::now()))
        .execute(&self.pool)
        .await?;
        if r.rows_affected() > 0 {
            self.notify_due().await?;
        }
        Ok(r.rows_affected())
    }

    async fn fall_back(&self, moves: Vec<FallbackMove>) -> Result<()> {
        if moves.is_empty() {
            return Ok(());
        }
        let now = ms(Utc::now());
        let mut tx = self.pool.begin().await?;
        for m in &moves {
            let updated = sqlx::query(
                "UPDATE deliveries SET status = 'dead', last_error = $1, lease_until = NULL, lease_owner = NULL, updated_at = $2 \
                 WHERE id = $3 AND status = 'sending'",
            )
            .bind(&m.reason)
            .bind(now)
            .bind(m.delivery_id)
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
        sqlx::query(
            "UPDATE deliveries SET lease_until = $1 \
             WHERE id = ANY($2) AND status = 'sending' AND lease_owner = $3",
        )
        .bind(ms(until))
        .bind(ids)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn defer(&self, items: Vec<Deferral>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let now = ms(Utc::now());
        let mut tx = self.pool.begin().await?;
        for d in &items {
            sqlx::query(
                "UPDATE deliveries SET status = CASE WHEN attempts > 0 THEN 'retrying' ELSE 'pending' END, \
                 not_before = $1, lease_until = NULL, lease_owner = NULL, updated_at = $2 \
                 WHERE id = $3 AND status = 'sending'",
            )
            .bind(ms(d.not_before))
            .bind(now)
            .bind(d.delivery_id)
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
        let mut tx = self.pool.begin().await?;
        for f in &items {
            sqlx::query(
                "UPDATE deliveries SET status = $1, last_error = $2, lease_until = NULL, lease_owner = NULL, updated_at = $3 \
                 WHERE id = $4 AND status = 'sending'",
            )
            .bind(f.status.as_str())
            .bind(&f.reason)
            .bind(now)
            .bind(f.delivery_id)
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
        .fetch_one(&self.pool)
        .await?;
        Ok(v.map(from_ms))
    }

    async fn pending_groups(&self) -> Result<Vec<PendingGroup>> {
        let rows = sqlx::query(PENDING_GROUPS).fetch_all(&self.pool).await?;
        rows.iter().map(pending_group).collect()
    }

    async fn flush_group(
        &self,
        key: &str,
        now: DateTime<Utc>,
        targets: &DigestTargets<'_>,
    ) -> Result<Flushed> {
        let now_ms = ms(now);
        let mut tx = self.pool.begin().await?;
        // The group's row is the flush's lock: a replica that finds it taken leaves the group
        // to the one flushing it, and whoever comes after sees it held for its interval.
        let Some(g) = sqlx::query(
            "SELECT * FROM delivery_groups WHERE group_key = $1 FOR UPDATE SKIP LOCKED",
        )
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
            "UPDATE deliveries SET status = 'expired', last_error = 'expired before it could be delivered', updated_at = $1 \
             WHERE group_key = $2 AND status = 'pending' AND expires_at <= $1",
        )
        .bind(now_ms)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "SELECT d.id, d.not_before, n.body FROM deliveries d JOIN notifications n ON n.id = d.notification_id \
             WHERE d.group_key = $1 AND d.status = 'pending' AND d.not_before <= $2 \
             ORDER BY d.not_before, d.id LIMIT $3 \
             FOR UPDATE OF d SKIP LOCKED",
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
                    r.try_get("id")?,
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
                    "UPDATE deliveries SET group_key = NULL, not_before = $1, updated_at = $1 WHERE id = $2",
                )
                .bind(now_ms)
                .bind(id)
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
                write_notifications(&mut tx, std::iter::once((&*entry, None))).await?;
                write_deliveries(&mut tx, std::iter::once((&*entry, None)), now_ms).await?;
                sqlx::query(
                    "UPDATE deliveries SET status = 'aggregated', aggregated_into = $1, updated_at = $2 \
                     WHERE id = ANY($3)",
                )
                .bind(delivery_id)
                .bind(now_ms)
                .bind(&members)
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
            pg_repeats_column!(),
            " FROM notifications n WHERE n.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let head = head_from_row(&row)?;
        let drows = sqlx::query(concat!(
            "SELECT ",
            pg_delivery_columns!(),
            " FROM deliveries WHERE notification_id = $1 ORDER BY id"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let arows = sqlx::query(
            "SELECT a.* FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
             WHERE d.notification_id = $1 ORDER BY a.delivery_id, a.number",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut attempts: HashMap<Uuid, Vec<Attempt>> = HashMap::new();
        for r in &arows {
            let a = Attempt {
                delivery_id: r.try_get("delivery_id")?,
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
        // With a status the deliveries' (status, notification_id) index picks the
        // notifications; without one, notifications are walked by id. Newest first either way.
        let sql = if f.status.is_some() {
            concat!(
                "SELECT n.id, n.body, n.duplicate_of, ",
                pg_repeats_column!(),
                " FROM notifications n \
                 WHERE n.id IN (SELECT d.notification_id FROM deliveries d \
                     WHERE d.status = $5 AND ($6::text IS NULL OR d.channel = $6) \
                       AND ($1::uuid IS NULL OR d.notification_id < $1)) \
                   AND ($2::text IS NULL OR n.severity = $2) \
                   AND ($3::int8 IS NULL OR n.created_at >= $3) AND ($4::int8 IS NULL OR n.created_at < $4) \
                   AND ($8::text IS NULL OR strpos(",
                ascii_lower!("n.message"),
                ", $8) > 0 OR strpos(",
                ascii_lower!("coalesce(n.title, '')"),
                ", $8) > 0) \
                 ORDER BY n.id DESC LIMIT $7"
            )
        } else {
            concat!(
                "SELECT n.id, n.body, n.duplicate_of, ",
                pg_repeats_column!(),
                " FROM notifications n \
                 WHERE ($1::uuid IS NULL OR n.id < $1) AND ($2::text IS NULL OR n.severity = $2) \
                   AND ($3::int8 IS NULL OR n.created_at >= $3) AND ($4::int8 IS NULL OR n.created_at < $4) \
                   AND ($5::text IS NULL OR TRUE) /* status: unused here, bound for both shapes */ \
                   AND ($6::text IS NULL OR EXISTS (SELECT 1 FROM deliveries d \
                        WHERE d.notification_id = n.id AND d.channel = $6)) \
                   AND ($8::text IS NULL OR strpos(",
                ascii_lower!("n.message"),
                ", $8) > 0 OR strpos(",
                ascii_lower!("coalesce(n.title, '')"),
                ", $8) > 0) \
                 ORDER BY n.id DESC LIMIT $7"
            )
        };
        let rows = sqlx::query(sql)
            .bind(f.cursor)
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
            .fetch_all(&self.pool)
            .await?;
        let ids: Vec<Uuid> = rows
            .iter()
            .map(|r| r.try_get::<Uuid, _>("id"))
            .collect::<Result<_, _>>()?;
        let drows = if ids.is_empty() {
            Vec::new()
        } else {
            sqlx::query(concat!(
                "SELECT ",
                pg_delivery_columns!(),
                " FROM deliveries WHERE notification_id = ANY($1) ORDER BY id"
            ))
            .bind(&ids)
            .fetch_all(&self.pool)
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
        let rows = sqlx::query(scope.sql()).fetch_all(&self.pool).await?;
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
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(state_from_row).collect()
    }

    async fn prune(&self, before: DateTime<Utc>, batch: usize, dry_run: bool) -> Result<Pruned> {
        let cutoff = ms(before);
        if dry_run {
            return self.prune_counts(cutoff).await;
        }
        // A session lock on a connection kept for the run: replicas pruning at once would only
        // fight over the same rows. A replica that dies mid-run closes its connection, which
        // releases the lock.
        let mut lock = self.pool.acquire().await?;
        let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(PRUNE_LOCK)
            .fetch_one(&mut *lock)
            .await?;
        if !mine {
            return Ok(Pruned::default());
        }
        let out = self.prune_batches(cutoff, batch).await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(PRUNE_LOCK)
            .execute(&mut *lock)
            .await?;
        out
    }

    fn wakeups(&self) -> Option<tokio::sync::mpsc::Receiver<Wake>> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(listen(self.pool.clone(), tx));
        Some(rx)
    }

    fn has_inbox(&self) -> bool {
        true
    }

    async fn take_inbox(&self, limit: usize, plan: &InboxPlan) -> Result<InboxRound> {
        let mut tx = self.pool.begin().await?;
        // Rows another replica is taking are skipped: each row is taken by one transaction,
        // and its notification commits together with the row's deletion.
        let rows = sqlx::query(
            "SELECT id, payload FROM klaxon_inbox WHERE error IS NULL ORDER BY id LIMIT $1 \
             FOR UPDATE SKIP LOCKED",
        )
        .bind(limit.max(1) as i64)
        .fetch_all(&mut *tx)
        .await?;
        let mut round = InboxRound {
            taken: rows.len(),
            ..InboxRound::default()
        };
        if rows.is_empty() {
            return Ok(round);
        }
        let mut done: Vec<i64> = Vec::with_capacity(rows.len());
        let mut entries = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            let payload: serde_json::Value = r.try_get("payload")?;
            match plan(payload) {
                Ok(e) => {
                    done.push(id);
                    entries.push(e);
                }
                Err(reason) => round.rejected.push((id, reason)),
            }
        }
        let sources: Vec<String> = entries
            .iter()
            .map(|e| e.notification.source.clone())
            .collect();
        let inserted = insert_in(&mut tx, entries).await?;
        round.inserted = sources.into_iter().zip(inserted).collect();
        if !round.rejected.is_empty() {
            // Kept with the reason, never retried: a payload does not get better by waiting.
            let (ids, reasons): (Vec<i64>, Vec<String>) = round.rejected.iter().cloned().unzip();
            sqlx::query(
                "UPDATE klaxon_inbox i SET error = u.reason, failed_at = now() \
                 FROM UNNEST($1::int8[], $2::text[]) AS u(id, reason) WHERE i.id = u.id",
            )
            .bind(ids)
            .bind(reasons)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM klaxon_inbox WHERE id = ANY($1)")
            .bind(&done)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(round)
    }

    async fn patch_channel(&self, channel: &str, p: ChannelPatch) -> Result<ChannelState> {
        let now = ms(Utc::now());
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO channel_state (channel, updated_at) VALUES ($1, $2) ON CONFLICT (channel) DO NOTHING",
        )
        .bind(channel)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Each field: a flag whether to set it, then the value.
        let row = sqlx::query(
            "UPDATE channel_state SET \
               enabled = CASE WHEN $1 THEN $2 ELSE enabled END, \
               disabled_reason = CASE WHEN $3 THEN $4 ELSE disabled_reason END, \
               paused_until = CASE WHEN $5 THEN $6 ELSE paused_until END, \
               muted_until = CASE WHEN $7 THEN $8 ELSE muted_until END, \
               last_error = COALESCE($9, last_error), last_error_at = COALESCE($10, last_error_at), \
               last_success_at = COALESCE($11, last_success_at), updated_at = $12 \
             WHERE channel = $13 RETURNING *",
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
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        state_from_row(&row)
    }
}

impl PgStore {
    /// `NOTIFY` after a change committed outside a transaction of ours.
    async fn notify_due(&self) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(DUE_CHANNEL)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn prune_counts(&self, cutoff: i64) -> Result<Pruned> {
        let row = sqlx::query(concat!(
            "SELECT (SELECT COUNT(*) FROM notifications n WHERE ",
            prunable!("$1"),
            ") AS n, (SELECT COUNT(*) FROM deliveries d2 JOIN notifications n ON n.id = d2.notification_id WHERE ",
            prunable!("$1"),
            ") AS d, (SELECT COUNT(*) FROM attempts a JOIN deliveries d2 ON d2.id = a.delivery_id \
               JOIN notifications n ON n.id = d2.notification_id WHERE ",
            prunable!("$1"),
            ") AS a"
        ))
        .bind(cutoff)
        .fetch_one(&self.pool)
        .await?;
        Ok(Pruned {
            notifications: row.try_get::<i64, _>("n")? as u64,
            deliveries: row.try_get::<i64, _>("d")? as u64,
            attempts: row.try_get::<i64, _>("a")? as u64,
            ran: true,
        })
    }

    async fn prune_batches(&self, cutoff: i64, batch: usize) -> Result<Pruned> {
        let mut total = Pruned {
            ran: true,
            ..Pruned::default()
        };
        loop {
            let mut tx = self.pool.begin().await?;
            let ids: Vec<Uuid> = sqlx::query_scalar(concat!(
                "SELECT n.id FROM notifications n WHERE ",
                prunable!("$1"),
                " ORDER BY n.created_at LIMIT $2"
            ))
            .bind(cutoff)
            .bind(batch.max(1) as i64)
            .fetch_all(&mut *tx)
            .await?;
            if ids.is_empty() {
                return Ok(total);
            }
            // Final and unchanged since before the cutoff is checked again at delete time: an
            // operator may have requeued a dead letter since the select.
            let attempts = sqlx::query(concat!(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE ",
                "notification_id = ANY($1) AND status NOT IN ('pending', 'retrying', 'sending') AND updated_at < $2",
                ")"
            ))
            .bind(&ids)
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            let deliveries = sqlx::query(concat!(
                "DELETE FROM deliveries WHERE ",
                "notification_id = ANY($1) AND status NOT IN ('pending', 'retrying', 'sending') AND updated_at < $2"
            ))
            .bind(&ids)
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            let notifications = sqlx::query(
                "DELETE FROM notifications n WHERE n.id = ANY($1) \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id)",
            )
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            total.attempts += attempts.rows_affected();
            total.deliveries += deliveries.rows_affected();
            total.notifications += notifications.rows_affected();
            if ids.len() < batch.max(1) {
                return Ok(total);
            }
        }
    }
}

fn state_from_row(r: &PgRow) -> Result<ChannelState> {
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
