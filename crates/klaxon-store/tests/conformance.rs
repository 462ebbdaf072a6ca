//! The store conformance suite: what every backend must do, written once against the `Store`
//! trait and run unchanged against SQLite and PostgreSQL.
//!
//! PostgreSQL: each test gets a fresh database `klaxon_test_<random>` on the server named by
//! `KLAXON_TEST_DATABASE_URL`, dropped when the test ends (also when it fails). Without that
//! variable the PostgreSQL tests print a notice and pass, unless `KLAXON_REQUIRE_SERVICES=1`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use klaxon_core::digest::Grouping;
use klaxon_core::model::{
    Attempt, AttemptOutcome, DeliveryStatus, Notification, Priority, Severity, new_id,
};
use klaxon_store::{
    ChannelPatch, ClaimRequest, Completion, Deferral, DepthScope, Fallback, FallbackMove, Finish,
    Flushed, ListFilter, NewDelivery, NewEntry, Store,
};

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = klaxon_store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap(); // idempotent
    (store, dir)
}

fn entry(n: Notification, channels: &[&str]) -> NewEntry {
    NewEntry {
        deliveries: channels
            .iter()
            .map(|c| NewDelivery {
                id: new_id(),
                channel: c.to_string(),
                target: None,
                group: None,
            })
            .collect(),
        notification: n,
        suppress: None,
    }
}

fn claim_req(limit: usize) -> ClaimRequest {
    ClaimRequest {
        now: Utc::now(),
        limit,
        lease: Duration::from_secs(30),
        owner: "w1".into(),
        channels: ["a", "b", "c", "x", "on", "off"].map(String::from).to_vec(),
    }
}

use klaxon_store::testing::PgDb;

/// A migrated store on a fresh PostgreSQL database (migrating twice: it is idempotent).
async fn pg_store(db: &PgDb) -> Arc<dyn Store> {
    let store = klaxon_store::open(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// Replicas starting at once: both migrations succeed and the schema is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_racing_migrations_apply_once() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let a = klaxon_store::open(&db.url).await.unwrap();
    let b = klaxon_store::open(&db.url).await.unwrap();
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { a.migrate().await }),
        tokio::spawn(async move { b.migrate().await })
    );
    ra.unwrap().unwrap();
    rb.unwrap().unwrap();
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM klaxon_migrations ORDER BY version")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(versions, klaxon_store::postgres::schema_versions());
    c.close().await.ok();
}

/// Two replicas claiming from one queue at once take disjoint sets that together cover it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_claim_disjoint_sets() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let a = pg_store(&db).await;
    let b = klaxon_store::open(&db.url).await.unwrap();
    let entries: Vec<NewEntry> = (0..300)
        .map(|i| entry(Notification::new(format!("n{i}")), &["a"]))
        .collect();
    a.insert(entries).await.unwrap();
    let drain = |store: Arc<dyn Store>, owner: &'static str| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let mut req = claim_req(7);
                req.owner = owner.into();
                let batch = store.claim(req).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|c| c.delivery.id));
            }
        })
    };
    let (ga, gb) = tokio::join!(drain(a, "w1"), drain(b, "w2"));
    let (ga, gb) = (ga.unwrap(), gb.unwrap());
    let mut all: Vec<_> = ga.iter().chain(&gb).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!(ga.len() + gb.len(), 300, "a delivery was claimed twice");
    assert_eq!(all.len(), 300);
}

/// Stores `a` and `b` insert `count` notifications made by `make(k)` at once, `b` in reverse
/// order; the answers paired per `k`.
async fn insert_racing(
    a: &Arc<dyn Store>,
    b: &Arc<dyn Store>,
    count: usize,
    make: impl Fn(usize) -> Notification,
) -> Vec<(klaxon_store::Inserted, klaxon_store::Inserted)> {
    let ea: Vec<NewEntry> = (0..count).map(|k| entry(make(k), &["x"])).collect();
    let eb: Vec<NewEntry> = (0..count).rev().map(|k| entry(make(k), &["x"])).collect();
    let (sa, sb) = (a.clone(), b.clone());
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { sa.insert(ea).await }),
        tokio::spawn(async move { sb.insert(eb).await })
    );
    let (ra, mut rb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
    rb.reverse();
    ra.into_iter().zip(rb).collect()
}

/// Two replicas inserting the same idempotency keys at once (in opposite orders): each key is
/// stored once, both answers name that one notification, and neither insert fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_share_idempotency_keys() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let a = pg_store(&db).await;
    let b = klaxon_store::open(&db.url).await.unwrap();
    for round in 0..5 {
        let pairs = insert_racing(&a, &b, 40, |k| {
            Notification::new("race").idempotency_key(format!("r{round}-k{k}"))
        })
        .await;
        for (x, y) in &pairs {
            assert_eq!(x.notification_id, y.notification_id);
            assert_eq!(x.deliveries, y.deliveries);
            assert!(
                x.duplicate != y.duplicate,
                "exactly one insert stores a key"
            );
        }
    }
    let stored = a
        .list(ListFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 200);
}

/// Two replicas inserting repeats of the same dedup keys at once (in opposite orders): per key
/// exactly one original is accepted, every other notification points at it, and neither insert
/// fails or deadlocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_share_dedup_keys() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let a = pg_store(&db).await;
    let b = klaxon_store::open(&db.url).await.unwrap();
    let t0 = Utc::now();
    for round in 0..5 {
        let pairs = insert_racing(&a, &b, 20, |k| {
            let mut n = deduped(&format!("r{round}-k{k}"), 300);
            n.created_at = t0;
            n
        })
        .await;
        for (x, y) in &pairs {
            match (x.duplicate_of, y.duplicate_of) {
                (None, Some(o)) => assert_eq!(o, x.notification_id),
                (Some(o), None) => assert_eq!(o, y.notification_id),
                other => panic!("exactly one original per key, got {other:?}"),
            }
        }
    }
}

/// A notification deduplicated on `key` within `window_secs`.
fn deduped(key: &str, window_secs: u64) -> Notification {
    let mut n = Notification::new("dup");
    n.dedup_key = Some(key.into());
    n.dedup_window_secs = Some(window_secs);
    n
}

async fn next_wake(w: &mut tokio::sync::mpsc::Receiver<klaxon_store::Wake>) -> klaxon_store::Wake {
    tokio::time::timeout(Duration::from_secs(20), w.recv())
        .await
        .expect("a wake-up arrives")
        .expect("the listener runs")
}

/// Another replica hears, through LISTEN, when deliveries become due and when inbox rows
/// arrive; a store without due work stays quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commits_wake_other_replicas() {
    use klaxon_store::Wake;
    let Some(db) = PgDb::create().await else {
        return;
    };
    let a = pg_store(&db).await;
    let b = klaxon_store::open(&db.url).await.unwrap();
    let mut wakeups = b.wakeups().expect("PostgreSQL listens");
    // The listener's first wake-ups (it may have missed something before it listened).
    let mut first = vec![next_wake(&mut wakeups).await, next_wake(&mut wakeups).await];
    first.sort_by_key(|w| *w == Wake::Inbox);
    assert_eq!(first, [Wake::Due, Wake::Inbox]);

    a.insert(vec![entry(Notification::new("m"), &["a"])])
        .await
        .unwrap();
    assert_eq!(next_wake(&mut wakeups).await, Wake::Due);

    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("INSERT INTO klaxon_inbox (payload) VALUES ('{\"message\": \"x\"}'::jsonb)")
        .execute(&mut c)
        .await
        .unwrap();
    assert_eq!(next_wake(&mut wakeups).await, Wake::Inbox);
    c.close().await.ok();
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _dir) = super::sqlite().await;
                    super::$name(store).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = super::PgDb::create().await else {
                        return;
                    };
                    let store = super::pg_store(&db).await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

suite!(
    insert_and_get_round_trip,
    idempotency_key_returns_first,
    claims_in_priority_order_and_once,
    expired_lease_is_reclaimed,
    renewed_lease_is_kept,
    complete_records_attempts_and_status,
    complete_many_at_once_as_one_by_one,
    defer_and_send_at_respect_not_before,
    expired_notifications_are_not_claimed,
    only_open_channels_claimed,
    priority_wins_across_channels,
    list_filters_and_cursor,
    channel_state_persists,
    prune_removes_only_old_final_notifications,
    dead_delivery_hands_over_to_fallback,
    depth_counts_the_open_work_or_everything,
    open_circuit_moves_to_fallback,
    lost_lease_does_not_fall_back,
    requeue_gives_dead_letters_a_fresh_budget,
    finish_ends_claimed_deliveries_with_a_reason,
    dedup_repeats_inside_the_window_are_suppressed,
    dedup_inside_one_batch,
    dedup_needs_a_window_and_the_same_key,
    switched_off_entries_are_stored_suppressed,
    grouped_deliveries_wait_for_their_digest,
    full_batches_leave_the_rest_due,
    digest_takes_the_channels_targets,
    concurrent_flushes_digest_each_member_once,
);

async fn insert_and_get_round_trip(store: Arc<dyn Store>) {
    let n = Notification::new("hello")
        .title("t")
        .data("price", 1.5)
        .tag("x");
    let id = n.id;
    let r = store
        .insert(vec![entry(n.clone(), &["a", "b"])])
        .await
        .unwrap();
    assert_eq!(r[0].notification_id, id);
    assert!(!r[0].duplicate);
    assert_eq!(r[0].deliveries.len(), 2);
    let got = store.get(id).await.unwrap().unwrap();
    assert_eq!(got.notification, n);
    assert_eq!(got.deliveries.len(), 2);
    assert!(
        got.deliveries
            .iter()
            .all(|d| d.delivery.status == DeliveryStatus::Pending)
    );
    assert!(store.get(new_id()).await.unwrap().is_none());
}

async fn idempotency_key_returns_first(store: Arc<dyn Store>) {
    let a = Notification::new("one").idempotency_key("k1");
    let b = Notification::new("two").idempotency_key("k1");
    let c = Notification::new("three").idempotency_key("k1");
    let first = store.insert(vec![entry(a.clone(), &["x"])]).await.unwrap();
    // A repeat inside one batch and in a later one both return the first.
    let again = store
        .insert(vec![entry(b, &["x"]), entry(c, &["x"])])
        .await
        .unwrap();
    for r in &again {
        assert!(r.duplicate);
        assert_eq!(r.notification_id, a.id);
        assert_eq!(r.deliveries, first[0].deliveries);
    }
    let all = store
        .list(ListFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}

async fn claims_in_priority_order_and_once(store: Arc<dyn Store>) {
    let low = Notification::new("low").severity(Severity::Debug);
    let crit = Notification::new("crit").severity(Severity::Critical);
    let norm = Notification::new("norm");
    store
        .insert(vec![
            entry(low, &["c"]),
            entry(norm, &["c"]),
            entry(crit, &["c"]),
        ])
        .await
        .unwrap();
    let got = store.claim(claim_req(10)).await.unwrap();
    let order: Vec<Priority> = got.iter().map(|c| c.notification.priority).collect();
    assert_eq!(order, [Priority::Critical, Priority::Normal, Priority::Low]);
    assert!(
        got.iter()
            .all(|c| c.delivery.status == DeliveryStatus::Sending)
    );
    assert!(
        store.claim(claim_req(10)).await.unwrap().is_empty(),
        "leased rows are not claimed twice"
    );
}

async fn expired_lease_is_reclaimed(store: Arc<dyn Store>) {
    store
        .insert(vec![entry(Notification::new("m"), &["c"])])
        .await
        .unwrap();
    let mut req = claim_req(1);
    req.lease = Duration::from_millis(1);
    assert_eq!(store.claim(req).await.unwrap().len(), 1);
    let mut later = claim_req(1);
    later.now = Utc::now() + TimeDelta::seconds(1);
    later.owner = "w2".into();
    assert_eq!(
        store.claim(later).await.unwrap().len(),
        1,
        "a crashed worker's lease runs out"
    );
}

async fn renewed_lease_is_kept(store: Arc<dyn Store>) {
    store
        .insert(vec![entry(Notification::new("m"), &["c"])])
        .await
        .unwrap();
    let mut req = claim_req(1);
    req.lease = Duration::from_millis(1);
    let got = store.claim(req).await.unwrap();
    let id = got[0].delivery.id;
    store
        .renew("someone-else", &[id], Utc::now() + TimeDelta::seconds(60))
        .await
        .unwrap();
    store
        .renew("w1", &[id], Utc::now() + TimeDelta::seconds(60))
        .await
        .unwrap();
    let mut later = claim_req(1);
    later.now = Utc::now() + TimeDelta::seconds(1);
    later.owner = "w2".into();
    assert!(
        store.claim(later).await.unwrap().is_empty(),
        "the owner's renewal holds"
    );
}

async fn complete_records_attempts_and_status(store: Arc<dyn Store>) {
    let n = Notification::new("m");
    let id = n.id;
    store.insert(vec![entry(n, &["c"])]).await.unwrap();
    let c = store.claim(claim_req(1)).await.unwrap().remove(0);
    let retry_at = Utc::now() + TimeDelta::seconds(60);
    store
        .complete(vec![Completion {
            attempt: Attempt {
                delivery_id: c.delivery.id,
                number: 1,
                started_at: Utc::now(),
                outcome: AttemptOutcome::Retry,
                status_code: Some(503),
                error: Some("service unavailable".into()),
                latency_ms: 12,
            },
            status: DeliveryStatus::Retrying,
            not_before: Some(retry_at),
            provider_id: None,
            throttled: false,
            fallback: None,
        }])
        .await
        .unwrap();
    assert!(
        store.claim(claim_req(1)).await.unwrap().is_empty(),
        "not before its retry time"
    );
    let mut later = claim_req(1);
    later.now = retry_at + TimeDelta::seconds(1);
    let c2 = store.claim(later).await.unwrap().remove(0);
    assert_eq!(c2.delivery.attempts, 1);
    store
        .complete(vec![Completion {
            attempt: Attempt {
                delivery_id: c2.delivery.id,
                number: 2,
                started_at: Utc::now(),
                outcome: AttemptOutcome::Delivered,
                status_code: Some(200),
                error: None,
                latency_ms: 5,
            },
            status: DeliveryStatus::Delivered,
            not_before: None,
            provider_id: Some("msg-1".into()),
            throttled: false,
            fallback: None,
        }])
        .await
        .unwrap();
    let rec = store.get(id).await.unwrap().unwrap();
    let d = &rec.deliveries[0];
    assert_eq!(d.delivery.status, DeliveryStatus::Delivered);
    assert_eq!(d.delivery.provider_id.as_deref(), Some("msg-1"));
    assert_eq!(
        d.delivery.last_error.as_deref(),
        Some("service unavailable")
    );
    assert!(d.delivery.delivered_at.is_some());
    let outcomes: Vec<_> = d
        .attempts
        .iter()
        .map(|a| (a.number, a.outcome, a.status_code))
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, AttemptOutcome::Retry, Some(503)),
            (2, AttemptOutcome::Delivered, Some(200))
        ]
    );
    let depth = store.depth(DepthScope::All).await.unwrap();
    assert_eq!(
        depth
            .iter()
            .find(|r| r.status == DeliveryStatus::Delivered)
            .unwrap()
            .count,
        1
    );
}

/// Completions arrive in batches of hundreds: a batch must leave every delivery exactly as
/// completing them one at a time would — outcomes, counters, errors, provider ids, a row
/// whose lease was lost left alone — and a delivery completed twice in one batch takes its
/// completions in order.
async fn complete_many_at_once_as_one_by_one(store: Arc<dyn Store>) {
    let entries: Vec<NewEntry> = (0..150)
        .map(|i| entry(Notification::new(format!("m{i}")), &["c"]))
        .collect();
    store.insert(entries).await.unwrap();
    let claimed = store.claim(claim_req(200)).await.unwrap();
    assert_eq!(claimed.len(), 150);
    let ids: Vec<uuid::Uuid> = claimed.iter().map(|c| c.delivery.id).collect();
    // The last one is completed elsewhere first: its lease is gone by the time of the batch.
    let lost = ids[149];
    let mut gone = dead(lost, None);
    gone.status = DeliveryStatus::Delivered;
    gone.attempt.outcome = AttemptOutcome::Delivered;
    gone.attempt.error = None;
    gone.provider_id = Some("first".into());
    store.complete(vec![gone]).await.unwrap();

    let retry_at = Utc::now() + TimeDelta::seconds(60);
    let completion = |i: usize, id: uuid::Uuid| {
        let mut c = dead(id, None);
        c.attempt.number = 1 + (i % 3) as u32;
        match i % 4 {
            0 => {
                c.status = DeliveryStatus::Delivered;
                c.attempt.outcome = AttemptOutcome::Delivered;
                c.attempt.status_code = Some(200);
                c.attempt.error = None;
                c.provider_id = Some(format!("p{i}"));
            }
            1 => {
                c.status = DeliveryStatus::Retrying;
                c.attempt.outcome = AttemptOutcome::Retry;
                c.attempt.status_code = Some(503);
                c.attempt.error = Some(format!("unavailable {i}"));
                c.not_before = Some(retry_at);
            }
            2 => {}
            _ => {
                c.status = DeliveryStatus::Retrying;
                c.attempt.outcome = AttemptOutcome::Retry;
                c.attempt.status_code = Some(429);
                c.attempt.error = Some("too many requests".into());
                c.not_before = Some(retry_at);
                c.throttled = true;
            }
        }
        c
    };
    let batch: Vec<Completion> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| completion(i, *id))
        .collect();
    store.complete(batch).await.unwrap();

    for (i, id) in ids.iter().enumerate() {
        let rec = store
            .get(claimed[i].notification.id)
            .await
            .unwrap()
            .unwrap();
        let d = &rec.deliveries[0];
        assert_eq!(d.delivery.id, *id);
        if *id == lost {
            assert_eq!(
                d.delivery.status,
                DeliveryStatus::Delivered,
                "a lost lease is left alone"
            );
            assert_eq!(d.delivery.provider_id.as_deref(), Some("first"));
            assert_eq!(d.attempts.len(), 2, "both attempts are on record");
            continue;
        }
        let want = completion(i, *id);
        assert_eq!(d.delivery.status, want.status, "delivery {i}");
        assert_eq!(d.delivery.attempts, want.attempt.number, "delivery {i}");
        assert_eq!(
            d.delivery.throttled,
            u32::from(want.throttled),
            "delivery {i}"
        );
        assert_eq!(d.delivery.last_error, want.attempt.error, "delivery {i}");
        assert_eq!(d.delivery.provider_id, want.provider_id, "delivery {i}");
        assert_eq!(
            d.delivery.delivered_at.is_some(),
            want.status == DeliveryStatus::Delivered,
            "delivery {i}"
        );
        if let Some(t) = want.not_before {
            assert_eq!(
                d.delivery.not_before.timestamp_millis(),
                t.timestamp_millis()
            );
        }
        let attempts: Vec<_> = d
            .attempts
            .iter()
            .map(|a| (a.number, a.outcome, a.status_code))
            .collect();
        assert_eq!(
            attempts,
            [(
                want.attempt.number,
                want.attempt.outcome,
                want.attempt.status_code
            )],
            "delivery {i}"
        );
    }

    // The same delivery twice in one batch: the first completion ends its hold, the second
    // finds it no longer held; both attempts are recorded.
    let n = Notification::new("twice");
    let nid = n.id;
    store.insert(vec![entry(n, &["c"])]).await.unwrap();
    let c = store.claim(claim_req(1)).await.unwrap().remove(0);
    let mut first = completion(1, c.delivery.id);
    first.attempt.number = 1;
    let mut second = completion(0, c.delivery.id);
    second.attempt.number = 2;
    store.complete(vec![first, second]).await.unwrap();
    let rec = store.get(nid).await.unwrap().unwrap();
    assert_eq!(rec.deliveries[0].delivery.status, DeliveryStatus::Retrying);
    assert_eq!(rec.deliveries[0].delivery.attempts, 1);
    assert_eq!(rec.deliveries[0].attempts.len(), 2);
}

async fn defer_and_send_at_respect_not_before(store: Arc<dyn Store>) {
    let mut later = Notification::new("scheduled");
    later.send_at = Some(Utc::now() + TimeDelta::seconds(30));
    store
        .insert(vec![
            entry(later, &["c"]),
            entry(Notification::new("now"), &["c"]),
        ])
        .await
        .unwrap();
    let got = store.claim(claim_req(10)).await.unwrap();
    assert_eq!(got.len(), 1, "send_at in the future waits");
    let when = Utc::now() + TimeDelta::seconds(5);
    store
        .defer(vec![Deferral {
            delivery_id: got[0].delivery.id,
            not_before: when,
        }])
        .await
        .unwrap();
    assert!(store.claim(claim_req(10)).await.unwrap().is_empty());
    let due = store.next_due().await.unwrap().unwrap();
    assert!(
        (due - when).num_milliseconds().abs() < 2,
        "next_due is the deferred time"
    );
}

async fn expired_notifications_are_not_claimed(store: Arc<dyn Store>) {
    let mut n = Notification::new("stale");
    n.expires_at = Some(Utc::now() - TimeDelta::seconds(1));
    let id = n.id;
    store.insert(vec![entry(n, &["c"])]).await.unwrap();
    assert!(store.claim(claim_req(10)).await.unwrap().is_empty());
    let rec = store.get(id).await.unwrap().unwrap();
    assert_eq!(rec.deliveries[0].delivery.status, DeliveryStatus::Expired);
}

async fn finish_ends_claimed_deliveries_with_a_reason(store: Arc<dyn Store>) {
    let n = Notification::new("late");
    let id = n.id;
    store
        .insert(vec![entry(n, &["a", "b", "c"])])
        .await
        .unwrap();
    let got = store.claim(claim_req(10)).await.unwrap();
    let by = |ch: &str| {
        got.iter()
            .find(|c| c.delivery.channel == ch)
            .unwrap()
            .delivery
            .id
    };
    let (a, b, c) = (by("a"), by("b"), by("c"));
    // `c` was lost to an expired lease and re-claimed elsewhere: not ours to finish.
    store
        .defer(vec![Deferral {
            delivery_id: c,
            not_before: Utc::now(),
        }])
        .await
        .unwrap();
    store
        .finish(vec![
            Finish {
                delivery_id: a,
                status: DeliveryStatus::Suppressed,
                reason: "quiet hours 22:00-07:00 UTC".into(),
            },
            Finish {
                delivery_id: b,
                status: DeliveryStatus::Expired,
                reason: "older than max_age 2m (age 10m 3s)".into(),
            },
            Finish {
                delivery_id: c,
                status: DeliveryStatus::Expired,
                reason: "no".into(),
            },
        ])
        .await
        .unwrap();
    let rec = store.get(id).await.unwrap().unwrap();
    let of = |d: uuid::Uuid| rec.deliveries.iter().find(|r| r.delivery.id == d).unwrap();
    assert_eq!(of(a).delivery.status, DeliveryStatus::Suppressed);
    assert_eq!(
        of(a).delivery.last_error.as_deref(),
        Some("quiet hours 22:00-07:00 UTC")
    );
    assert_eq!(of(b).delivery.status, DeliveryStatus::Expired);
    assert!(
        of(a).attempts.is_empty() && of(b).attempts.is_empty(),
        "no attempt was made"
    );
    assert_eq!(of(c).delivery.status, DeliveryStatus::Pending);
    let left = store.claim(claim_req(10)).await.unwrap();
    assert_eq!(left.len(), 1, "finished deliveries are never claimed again");
}

async fn only_open_channels_claimed(store: Arc<dyn Store>) {
    store
        .insert(vec![entry(Notification::new("m"), &["off", "on"])])
        .await
        .unwrap();
    let mut req = claim_req(10);
    req.channels = vec!["on".into()];
    let got = store.claim(req).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].delivery.channel, "on");
    assert_eq!(
        store.claim(claim_req(10)).await.unwrap()[0]
            .delivery
            .channel,
        "off"
    );
}

async fn list_filters_and_cursor(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let sev = if i % 2 == 0 {
            Severity::Error
        } else {
            Severity::Info
        };
        let n = Notification::new(format!("m{i}")).severity(sev);
        ids.push(n.id);
        store
            .insert(vec![entry(n, &[if i < 3 { "a" } else { "b" }])])
            .await
            .unwrap();
    }
    let page1 = store
        .list(ListFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page1.iter().map(|r| r.notification.id).collect::<Vec<_>>(),
        [ids[4], ids[3]]
    );
    let page2 = store
        .list(ListFilter {
            limit: 2,
            cursor: Some(ids[3]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page2.iter().map(|r| r.notification.id).collect::<Vec<_>>(),
        [ids[2], ids[1]]
    );
    let errors = store
        .list(ListFilter {
            limit: 10,
            severity: Some(Severity::Error),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(errors.len(), 3);
    let on_b = store
        .list(ListFilter {
            limit: 10,
            channel: Some("b".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(on_b.len(), 2);
    assert_eq!(on_b[0].deliveries[0].delivery.channel, "b");
    let pending = store
        .list(ListFilter {
            limit: 10,
            status: Some(DeliveryStatus::Pending),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 5);
    // Status with channel and cursor: read through the status index, still newest first.
    let pending_a = store
        .list(ListFilter {
            limit: 10,
            status: Some(DeliveryStatus::Pending),
            channel: Some("a".into()),
            cursor: Some(ids[2]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        pending_a
            .iter()
            .map(|r| r.notification.id)
            .collect::<Vec<_>>(),
        [ids[1], ids[0]]
    );
    let none = store
        .list(ListFilter {
            limit: 10,
            status: Some(DeliveryStatus::Dead),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    // Text: title or message, case-insensitive.
    let m3 = store
        .list(ListFilter {
            limit: 10,
            text: Some("M3".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        m3.iter().map(|r| r.notification.id).collect::<Vec<_>>(),
        [ids[3]]
    );
}

async fn channel_state_persists(store: Arc<dyn Store>) {
    let s = store
        .patch_channel(
            "tg",
            ChannelPatch {
                enabled: Some(Some(false)),
                disabled_reason: Some(Some("410 Gone".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s.enabled, Some(false));
    let s = store
        .patch_channel(
            "tg",
            ChannelPatch {
                last_error: Some(("boom".into(), Utc::now())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            s.enabled,
            s.disabled_reason.as_deref(),
            s.last_error.as_deref()
        ),
        (Some(false), Some("410 Gone"), Some("boom"))
    );
    let s = store
        .patch_channel(
            "tg",
            ChannelPatch {
                enabled: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s.enabled, None);
    assert_eq!(store.channel_states().await.unwrap().len(), 1);
}

async fn priority_wins_across_channels(store: Arc<dyn Store>) {
    store
        .insert(vec![
            entry(Notification::new("low").severity(Severity::Debug), &["a"]),
            entry(
                Notification::new("crit").severity(Severity::Critical),
                &["b"],
            ),
        ])
        .await
        .unwrap();
    let got = store.claim(claim_req(1)).await.unwrap();
    assert_eq!(
        got[0].notification.message, "crit",
        "a critical on another channel goes first"
    );
}

fn dead(id: uuid::Uuid, fallback: Option<Fallback>) -> Completion {
    Completion {
        attempt: Attempt {
            delivery_id: id,
            number: 1,
            started_at: Utc::now(),
            outcome: AttemptOutcome::Rejected,
            status_code: Some(400),
            error: Some("chat not found".into()),
            latency_ms: 3,
        },
        status: DeliveryStatus::Dead,
        not_before: None,
        provider_id: None,
        throttled: false,
        fallback,
    }
}

/// `Open` is what the gauges count every 5 s: the queue and the dead letters, never the
/// delivered history (whose count grows with retention); `All` is `/status`'s full count.
async fn depth_counts_the_open_work_or_everything(store: Arc<dyn Store>) {
    let entries = ["a", "a", "b"].map(|ch| entry(Notification::new("m"), &[ch]));
    store.insert(entries.into()).await.unwrap();
    let claimed = store.claim(claim_req(3)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let mut done = dead(claimed[0].delivery.id, None);
    done.status = DeliveryStatus::Delivered;
    done.attempt.outcome = AttemptOutcome::Delivered;
    store
        .complete(vec![done, dead(claimed[1].delivery.id, None)])
        .await
        .unwrap();
    store
        .insert(vec![entry(Notification::new("later"), &["b"])])
        .await
        .unwrap();

    let count = |rows: &[klaxon_store::DepthRow], status| -> i64 {
        rows.iter()
            .filter(|r| r.status == status)
            .map(|r| r.count)
            .sum()
    };
    let all = store.depth(DepthScope::All).await.unwrap();
    let open = store.depth(DepthScope::Open).await.unwrap();
    for (status, n) in [
        (DeliveryStatus::Delivered, 1),
        (DeliveryStatus::Dead, 1),
        (DeliveryStatus::Sending, 1),
        (DeliveryStatus::Pending, 1),
    ] {
        assert_eq!(count(&all, status), n, "All, {status:?}: {all:?}");
        let open_n = if status == DeliveryStatus::Delivered {
            0
        } else {
            n
        };
        assert_eq!(count(&open, status), open_n, "Open, {status:?}: {open:?}");
    }
    assert!(
        open.iter()
            .all(|r| DepthScope::Open.statuses().contains(&r.status)),
        "{open:?}"
    );
    // Rows per channel: the pending one is `b`'s, however the claim ordered the others.
    assert!(
        open.iter()
            .any(|r| r.channel == "b" && r.status == DeliveryStatus::Pending && r.count == 1),
        "{open:?}"
    );
}

fn to_channel(channel: &str, targets: &[Option<&str>]) -> Fallback {
    Fallback {
        channel: channel.into(),
        deliveries: targets
            .iter()
            .map(|t| NewDelivery {
                id: new_id(),
                channel: channel.into(),
                target: t.map(String::from),
                group: None,
            })
            .collect(),
    }
}

async fn dead_delivery_hands_over_to_fallback(store: Arc<dyn Store>) {
    let n = Notification::new("m").severity(Severity::Critical);
    let id = n.id;
    store.insert(vec![entry(n, &["a"])]).await.unwrap();
    let c = store.claim(claim_req(1)).await.unwrap().remove(0);
    let fb = to_channel("b", &[Some("x@y"), Some("z@y")]);
    store
        .complete(vec![dead(c.delivery.id, Some(fb.clone()))])
        .await
        .unwrap();
    let rec = store.get(id).await.unwrap().unwrap();
    let primary = rec
        .deliveries
        .iter()
        .find(|d| d.delivery.id == c.delivery.id)
        .unwrap();
    assert_eq!(primary.delivery.status, DeliveryStatus::Dead);
    assert_eq!(primary.delivery.fell_back_to.as_deref(), Some("b"));
    let new: Vec<_> = rec
        .deliveries
        .iter()
        .filter(|d| d.delivery.channel == "b")
        .collect();
    assert_eq!(new.len(), 2);
    for d in &new {
        assert_eq!(d.delivery.fallback_of, Some(c.delivery.id));
        assert_eq!(d.delivery.status, DeliveryStatus::Pending);
    }
    // The new rows are queued work with the notification's priority.
    let claimed = store.claim(claim_req(5)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|c| c.delivery.channel == "b"));
}

async fn open_circuit_moves_to_fallback(store: Arc<dyn Store>) {
    let n = Notification::new("m");
    let id = n.id;
    store.insert(vec![entry(n, &["a"])]).await.unwrap();
    let c = store.claim(claim_req(1)).await.unwrap().remove(0);
    store
        .fall_back(vec![FallbackMove {
            delivery_id: c.delivery.id,
            reason: "circuit open for 61 s; handed to `b`".into(),
            fallback: to_channel("b", &[None]),
        }])
        .await
        .unwrap();
    let rec = store.get(id).await.unwrap().unwrap();
    let primary = &rec
        .deliveries
        .iter()
        .find(|d| d.delivery.id == c.delivery.id)
        .unwrap()
        .delivery;
    assert_eq!(primary.status, DeliveryStatus::Dead);
    assert_eq!(primary.attempts, 0, "no attempt was made");
    assert!(
        primary
            .last_error
            .as_deref()
            .unwrap()
            .contains("circuit open")
    );
    assert_eq!(primary.fell_back_to.as_deref(), Some("b"));
    assert_eq!(rec.deliveries.len(), 2);
}

async fn lost_lease_does_not_fall_back(store: Arc<dyn Store>) {
    let n = Notification::new("m");
    let id = n.id;
    store.insert(vec![entry(n, &["a"])]).await.unwrap();
    let c = store.claim(claim_req(1)).await.unwrap().remove(0);
    // The lease ran out and another worker took the row and delivered it.
    store
        .defer(vec![Deferral {
            delivery_id: c.delivery.id,
            not_before: Utc::now(),
        }])
        .await
        .unwrap();
    store
        .complete(vec![dead(c.delivery.id, Some(to_channel("b", &[None])))])
        .await
        .unwrap();
    let rec = store.get(id).await.unwrap().unwrap();
    assert_eq!(
        rec.deliveries.len(),
        1,
        "a stale worker's outcome adds nothing"
    );
    assert_eq!(rec.deliveries[0].delivery.fell_back_to, None);
}

async fn requeue_gives_dead_letters_a_fresh_budget(store: Arc<dyn Store>) {
    let a = Notification::new("a");
    let b = Notification::new("b");
    let (ida, idb) = (a.id, b.id);
    store
        .insert(vec![entry(a, &["a"]), entry(b, &["b"])])
        .await
        .unwrap();
    let claimed = store.claim(claim_req(5)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    store
        .complete(claimed.iter().map(|c| dead(c.delivery.id, None)).collect())
        .await
        .unwrap();
    let da = claimed
        .iter()
        .find(|c| c.delivery.channel == "a")
        .unwrap()
        .delivery
        .id;
    // One by id: only that one comes back.
    assert_eq!(store.requeue(Some(vec![da])).await.unwrap(), vec![da]);
    assert!(
        store.requeue(Some(vec![da])).await.unwrap().is_empty(),
        "not dead any more"
    );
    let rec = store.get(ida).await.unwrap().unwrap();
    let d = &rec.deliveries[0];
    assert_eq!(d.delivery.status, DeliveryStatus::Pending);
    assert_eq!((d.delivery.attempts, d.delivery.budget_from), (1, 1));
    assert_eq!(d.attempts.len(), 1, "the history stays");
    // All: the rest.
    assert_eq!(store.requeue(None).await.unwrap().len(), 1);
    let rec = store.get(idb).await.unwrap().unwrap();
    assert_eq!(rec.deliveries[0].delivery.status, DeliveryStatus::Pending);
    assert_eq!(store.claim(claim_req(5)).await.unwrap().len(), 2);
}

/// Times are explicit `created_at`s: the window is measured between notifications, not against
/// the clock, so nothing here sleeps.
async fn dedup_repeats_inside_the_window_are_suppressed(store: Arc<dyn Store>) {
    let t0 = Utc::now() - TimeDelta::hours(1);
    let at = |secs: i64| {
        let mut n = deduped("k", 60);
        n.created_at = t0 + TimeDelta::seconds(secs);
        n
    };
    let first = at(0);
    let first_id = first.id;
    let r = store.insert(vec![entry(first, &["a"])]).await.unwrap();
    assert_eq!(r[0].duplicate_of, None);
    assert_eq!(r[0].deliveries[0].status, DeliveryStatus::Pending);

    let mut repeats = Vec::new();
    for secs in [10, 59] {
        let n = at(secs);
        repeats.push(n.id);
        let r = store.insert(vec![entry(n, &["a", "b"])]).await.unwrap();
        assert!(
            !r[0].duplicate,
            "a repeat is stored, unlike an idempotent retry"
        );
        assert_eq!(r[0].duplicate_of, Some(first_id));
        assert!(
            r[0].deliveries
                .iter()
                .all(|d| d.status == DeliveryStatus::Suppressed)
        );
    }
    let rec = store.get(repeats[0]).await.unwrap().unwrap();
    assert_eq!(rec.duplicate_of, Some(first_id));
    assert_eq!(rec.deliveries.len(), 2);
    for d in &rec.deliveries {
        assert_eq!(d.delivery.status, DeliveryStatus::Suppressed);
        assert!(
            d.delivery
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains(&first_id.to_string())),
            "{:?}",
            d.delivery.last_error
        );
    }
    assert_eq!(store.get(first_id).await.unwrap().unwrap().repeats, 2);

    // Past the window (measured from the original, not the last repeat) a new original.
    let later = at(61);
    let later_id = later.id;
    let r = store.insert(vec![entry(later, &["a"])]).await.unwrap();
    assert_eq!(r[0].duplicate_of, None);
    // Repeats now point at the newest original inside their window.
    let r = store.insert(vec![entry(at(70), &["a"])]).await.unwrap();
    assert_eq!(r[0].duplicate_of, Some(later_id));
    assert_eq!(store.get(later_id).await.unwrap().unwrap().repeats, 1);
    assert_eq!(store.get(first_id).await.unwrap().unwrap().repeats, 2);

    // Only the originals' deliveries are ever claimed.
    let claimed = store.claim(claim_req(50)).await.unwrap();
    let mut ids: Vec<_> = claimed.iter().map(|c| c.notification.id).collect();
    ids.sort();
    let mut want = vec![first_id, later_id];
    want.sort();
    assert_eq!(ids, want);

    // The history shows the pointer and the count.
    let page = store
        .list(ListFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 5);
    let of = |id| page.iter().find(|r| r.notification.id == id).unwrap();
    assert_eq!((of(first_id).repeats, of(first_id).duplicate_of), (2, None));
    assert_eq!(of(repeats[1]).duplicate_of, Some(first_id));
    let suppressed = store
        .list(ListFilter {
            limit: 10,
            status: Some(DeliveryStatus::Suppressed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(suppressed.len(), 3);
    assert!(suppressed.iter().all(|r| r.duplicate_of.is_some()));
}

/// A burst folded into one group commit is deduplicated like one spread over many.
async fn dedup_inside_one_batch(store: Arc<dyn Store>) {
    let t0 = Utc::now();
    let batch: Vec<NewEntry> = (0..4)
        .map(|i| {
            let mut n = deduped("burst", 300);
            n.created_at = t0 + TimeDelta::milliseconds(i);
            entry(n, &["a"])
        })
        .collect();
    let first_id = batch[0].notification.id;
    let r = store.insert(batch).await.unwrap();
    assert_eq!(r[0].duplicate_of, None);
    assert!(r[1..].iter().all(|x| x.duplicate_of == Some(first_id)));
    assert_eq!(store.get(first_id).await.unwrap().unwrap().repeats, 3);
    // An idempotent retry of a repeat answers with that repeat, pointer included. The original
    // is made first: a repeat's window reaches back from its own creation time, so an "original"
    // created a millisecond after it would not count (and the test would depend on the clock).
    let orig = deduped("burst2", 300);
    let orig_id = orig.id;
    let mut n = deduped("burst2", 300);
    n.idempotency_key = Some("once".into());
    let mut again = n.clone();
    again.id = new_id();
    let r = store
        .insert(vec![
            entry(orig, &["a"]),
            entry(n, &["a"]),
            entry(again, &["a"]),
        ])
        .await
        .unwrap();
    assert_eq!(r[1].duplicate_of, Some(orig_id));
    assert!(r[2].duplicate);
    assert_eq!(r[2].duplicate_of, Some(orig_id));
    assert_eq!(r[2].deliveries[0].status, DeliveryStatus::Suppressed);
}

async fn dedup_needs_a_window_and_the_same_key(store: Arc<dyn Store>) {
    let t0 = Utc::now();
    let mut no_window = Notification::new("m");
    no_window.dedup_key = Some("k".into());
    let mut zero = deduped("k", 0);
    zero.created_at = t0;
    let other_key = deduped("other", 300);
    let first = deduped("k", 300);
    let first_id = first.id;
    let r = store
        .insert(vec![
            entry(first, &["a"]),
            entry(no_window, &["a"]),
            entry(zero, &["a"]),
            entry(other_key, &["a"]),
        ])
        .await
        .unwrap();
    assert!(
        r.iter().all(|x| x.duplicate_of.is_none()),
        "no window, a zero window, another key: none is a repeat"
    );
    // Those were not originals either: a repeat still points at the first.
    let r = store
        .insert(vec![entry(deduped("k", 300), &["a"])])
        .await
        .unwrap();
    assert_eq!(r[0].duplicate_of, Some(first_id));
    // A repeat with a longer window than the original's still finds it.
    let mut late = deduped("other", 3600);
    late.created_at = Utc::now() + TimeDelta::minutes(30);
    let r = store.insert(vec![entry(late, &["a"])]).await.unwrap();
    assert!(r[0].duplicate_of.is_some());
}

async fn switched_off_entries_are_stored_suppressed(store: Arc<dyn Store>) {
    let n = Notification::new("muted");
    let id = n.id;
    let mut e = entry(n, &["a", "b"]);
    e.suppress = Some("source `x` is switched off".into());
    let r = store.insert(vec![e]).await.unwrap();
    assert_eq!(r[0].duplicate_of, None);
    assert!(
        r[0].deliveries
            .iter()
            .all(|d| d.status == DeliveryStatus::Suppressed)
    );
    let rec = store.get(id).await.unwrap().unwrap();
    assert!(rec.deliveries.iter().all(|d| {
        d.delivery.status == DeliveryStatus::Suppressed
            && d.delivery.last_error.as_deref() == Some("source `x` is switched off")
    }));
    assert!(store.claim(claim_req(10)).await.unwrap().is_empty());
}

// ---- digest groups ----

const WAIT: Duration = Duration::from_secs(2);
const INTERVAL: Duration = Duration::from_secs(10);

/// A notification whose delivery to `a` waits in group `key`.
fn grouped(n: Notification, key: &str, max_batch: usize) -> NewEntry {
    NewEntry {
        deliveries: vec![NewDelivery {
            id: new_id(),
            channel: "a".into(),
            target: Some("chat".into()),
            group: Some(Grouping {
                key: key.into(),
                wait: WAIT,
                interval: INTERVAL,
                max_batch,
                values: vec![("symbol".into(), Some(key.into()))],
            }),
        }],
        notification: n,
        suppress: None,
    }
}

fn signal(symbol: &str, i: usize) -> Notification {
    Notification::new(format!("BUY {symbol} #{i}"))
        .event_type("signal.generated")
        .data("symbol", symbol)
        .data("action", "BUY")
        .data("price", 100 + i)
}

/// Digest targets as a one-part channel gives them: the recipient as stored.
static AS_STORED: fn(&str, Option<&str>, &Notification) -> Vec<Option<String>> =
    |_, recipient, _| vec![recipient.map(String::from)];

/// `d` from now, in the milliseconds the store keeps.
fn after(d: Duration) -> chrono::DateTime<Utc> {
    let t = Utc::now() + TimeDelta::from_std(d).unwrap();
    chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap()
}

async fn grouped_deliveries_wait_for_their_digest(store: Arc<dyn Store>) {
    let t0 = after(Duration::ZERO);
    let mut entries: Vec<NewEntry> = (0..5)
        .map(|i| grouped(signal("MNQI", i), "g1", 100))
        .collect();
    entries[2].notification = entries[2].notification.clone().severity(Severity::Error);
    let members: Vec<uuid::Uuid> = entries.iter().map(|e| e.deliveries[0].id).collect();
    store.insert(entries).await.unwrap();

    // Waiting members are not claimable, and the scheduler is not woken for them.
    assert!(store.claim(claim_req(10)).await.unwrap().is_empty());
    assert_eq!(store.next_due().await.unwrap(), None);
    let groups = store.pending_groups().await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(
        (groups[0].key.as_str(), groups[0].channel.as_str()),
        ("g1", "a")
    );
    assert!(groups[0].due_at() >= t0 + TimeDelta::from_std(WAIT).unwrap());
    let due = groups[0].due_at();

    // Before `group_wait` nothing happens; at it, one digest takes all five.
    let early = due - TimeDelta::milliseconds(1);
    assert_eq!(
        store.flush_group("g1", early, &AS_STORED).await.unwrap(),
        Flushed::Nothing
    );
    let flushed = store.flush_group("g1", due, &AS_STORED).await.unwrap();
    let Flushed::Digest {
        notification_id,
        delivery_id,
        channel,
        members: n,
    } = flushed
    else {
        panic!("expected a digest, got {flushed:?}");
    };
    assert_eq!((channel.as_str(), n), ("a", 5));
    let digest = store.get(notification_id).await.unwrap().unwrap();
    let dn = &digest.notification;
    assert_eq!(dn.event_type.as_deref(), Some("klaxon.digest"));
    assert_eq!(dn.source, "klaxon");
    assert_eq!(dn.severity, Severity::Error);
    assert_eq!(dn.channels, Some(vec!["a".to_string()]));
    assert_eq!(dn.data["count"], 5);
    assert_eq!(dn.data["group"], serde_json::json!({"symbol": "g1"}));
    assert_eq!(dn.data["items"].as_array().unwrap().len(), 5);
    assert_eq!(digest.deliveries.len(), 1);
    let dd = &digest.deliveries[0].delivery;
    assert_eq!((dd.id, dd.target.as_deref()), (delivery_id, Some("chat")));
    let aggregated = store
        .list(ListFilter {
            status: Some(DeliveryStatus::Aggregated),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    for id in &members {
        let d = aggregated
            .iter()
            .flat_map(|r| &r.deliveries)
            .find(|d| d.delivery.id == *id)
            .expect("member is aggregated");
        assert_eq!(d.delivery.status, DeliveryStatus::Aggregated);
        assert_eq!(d.delivery.aggregated_into, Some(delivery_id));
    }
    // The digest itself is an ordinary delivery, due when it was made.
    let mut req = claim_req(10);
    req.now = due;
    let claimed = store.claim(req).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.id, delivery_id);
    assert!(store.pending_groups().await.unwrap().is_empty());

    // A late member waits out the interval, and alone it goes as itself.
    let late = grouped(signal("MNQI", 9), "g1", 100);
    let late_id = late.deliveries[0].id;
    store.insert(vec![late]).await.unwrap();
    let groups = store.pending_groups().await.unwrap();
    let held = due + TimeDelta::from_std(INTERVAL).unwrap();
    assert_eq!(
        groups[0].due_at(),
        held.max(groups[0].oldest + TimeDelta::from_std(WAIT).unwrap())
    );
    let due = groups[0].due_at();
    assert_eq!(
        store
            .flush_group("g1", due - TimeDelta::milliseconds(1), &AS_STORED)
            .await
            .unwrap(),
        Flushed::Nothing
    );
    assert_eq!(
        store.flush_group("g1", due, &AS_STORED).await.unwrap(),
        Flushed::Released {
            delivery_id: late_id
        }
    );
    let mut req = claim_req(10);
    req.now = due;
    let claimed = store.claim(req).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.id, late_id);
    assert_eq!(claimed[0].delivery.aggregated_into, None);
}

async fn full_batches_leave_the_rest_due(store: Arc<dyn Store>) {
    let entries: Vec<NewEntry> = (0..5).map(|i| grouped(signal("ES", i), "g2", 2)).collect();
    store.insert(entries).await.unwrap();
    let now = after(WAIT * 2);
    let mut sizes = Vec::new();
    // The same instant: a full batch does not hold back what it left behind …
    loop {
        match store.flush_group("g2", now, &AS_STORED).await.unwrap() {
            Flushed::Digest { members, .. } => sizes.push(members),
            Flushed::Released { .. } => sizes.push(1),
            Flushed::Nothing => break,
        }
    }
    assert_eq!(sizes, vec![2, 2, 1]);
    // … and the last send holds the group for its interval.
    store
        .insert(vec![
            grouped(signal("ES", 7), "g2", 2),
            grouped(signal("ES", 8), "g2", 2),
        ])
        .await
        .unwrap();
    let later = after(WAIT * 3);
    assert_eq!(
        store.flush_group("g2", later, &AS_STORED).await.unwrap(),
        Flushed::Nothing
    );
    let groups = store.pending_groups().await.unwrap();
    assert_eq!(
        groups[0].held_until,
        Some(now + TimeDelta::from_std(INTERVAL).unwrap())
    );
}

async fn digest_takes_the_channels_targets(store: Arc<dyn Store>) {
    let entries: Vec<NewEntry> = (0..3).map(|i| grouped(signal("CL", i), "g3", 10)).collect();
    store.insert(entries).await.unwrap();
    // A channel that needs two parts for this digest, as Telegram does for a long one.
    let parts = |channel: &str, recipient: Option<&str>, d: &Notification| {
        assert_eq!((channel, recipient), ("a", Some("chat")));
        assert_eq!(d.event_type.as_deref(), Some("klaxon.digest"));
        vec![Some("chat#1/2".to_string()), Some("chat#2/2".to_string())]
    };
    let flushed = store
        .flush_group("g3", after(WAIT * 2), &parts)
        .await
        .unwrap();
    let Flushed::Digest {
        notification_id,
        delivery_id,
        members,
        ..
    } = flushed
    else {
        panic!("expected a digest, got {flushed:?}");
    };
    assert_eq!(members, 3);
    let rec = store.get(notification_id).await.unwrap().unwrap();
    let targets: Vec<_> = rec
        .deliveries
        .iter()
        .map(|d| d.delivery.target.clone().unwrap())
        .collect();
    assert_eq!(targets, ["chat#1/2", "chat#2/2"]);
    assert_eq!(rec.deliveries[0].delivery.id, delivery_id);
}

/// Flushes racing on the same groups (two replicas, or two loops of one): every member ends
/// in exactly one digest.
async fn concurrent_flushes_digest_each_member_once(store: Arc<dyn Store>) {
    race_flushes(store.clone(), store).await;
}

async fn race_flushes(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let keys = ["r1", "r2", "r3"];
    let entries: Vec<NewEntry> = (0..90)
        .map(|i| grouped(signal(keys[i % 3], i), keys[i % 3], 10))
        .collect();
    a.insert(entries).await.unwrap();
    let now = after(WAIT * 2);
    let flush = |store: Arc<dyn Store>| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..20 {
                for k in keys {
                    if let Flushed::Digest {
                        members,
                        delivery_id,
                        ..
                    } = store.flush_group(k, now, &AS_STORED).await.unwrap()
                    {
                        got.push((delivery_id, members));
                    }
                }
            }
            got
        })
    };
    let (ga, gb) = tokio::join!(flush(a.clone()), flush(b));
    let digests: Vec<_> = ga.unwrap().into_iter().chain(gb.unwrap()).collect();
    assert_eq!(
        digests.iter().map(|d| d.1).sum::<usize>(),
        90,
        "{digests:?}"
    );
    assert_eq!(digests.len(), 9, "10 a digest: {digests:?}");
    let rec = a
        .list(ListFilter {
            status: Some(DeliveryStatus::Aggregated),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut into: Vec<_> = rec
        .iter()
        .flat_map(|r| &r.deliveries)
        .filter_map(|d| d.delivery.aggregated_into)
        .collect();
    assert_eq!(into.len(), 90);
    into.sort();
    into.dedup();
    assert_eq!(into.len(), 9);
}

/// Two replicas flushing the same groups at once never digest a member twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_flush_groups_once() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let a = pg_store(&db).await;
    let b = klaxon_store::open(&db.url).await.unwrap();
    race_flushes(a, b).await;
}

/// Retention: notifications whose deliveries are all final go, with their deliveries and
/// attempts, in batches; one with a delivery still waiting stays whole; a dry run counts
/// exactly what a real run then removes.
async fn prune_removes_only_old_final_notifications(store: Arc<dyn Store>) {
    let done: Vec<NewEntry> = (0..5)
        .map(|i| entry(Notification::new(format!("done {i}")), &["a"]))
        .collect();
    let done_ids: Vec<_> = done.iter().map(|e| e.notification.id).collect();
    let waiting = entry(Notification::new("half"), &["a", "off"]);
    let waiting_id = waiting.notification.id;
    let unrouted = entry(Notification::new("no route"), &[]);
    store
        .insert(done.into_iter().chain([waiting, unrouted]).collect())
        .await
        .unwrap();
    let mut req = claim_req(100);
    req.channels = vec!["a".into()];
    let claimed = store.claim(req).await.unwrap();
    assert_eq!(claimed.len(), 6);
    store
        .complete(claimed.iter().map(|c| dead(c.delivery.id, None)).collect())
        .await
        .unwrap();

    let nothing = store
        .prune(Utc::now() - TimeDelta::hours(1), 2, false)
        .await
        .unwrap();
    assert_eq!(
        (nothing.notifications, nothing.deliveries, nothing.attempts),
        (0, 0, 0),
        "nothing is old enough"
    );
    let later = Utc::now() + TimeDelta::hours(1);
    let counted = store.prune(later, 2, true).await.unwrap();
    assert_eq!(
        (counted.notifications, counted.deliveries, counted.attempts),
        (6, 5, 5),
        "five finished notifications and the unrouted one"
    );
    assert_eq!(
        store
            .get(done_ids[0])
            .await
            .unwrap()
            .map(|r| r.deliveries.len()),
        Some(1),
        "a dry run changes nothing"
    );
    let pruned = store.prune(later, 2, false).await.unwrap();
    assert!(pruned.ran);
    assert_eq!(
        (pruned.notifications, pruned.deliveries, pruned.attempts),
        (6, 5, 5)
    );
    for id in &done_ids {
        assert!(store.get(*id).await.unwrap().is_none());
    }
    let kept = store.get(waiting_id).await.unwrap().unwrap();
    assert_eq!(
        kept.deliveries.len(),
        2,
        "a notification still waiting stays whole"
    );
    assert_eq!(
        kept.deliveries
            .iter()
            .map(|d| d.attempts.len())
            .sum::<usize>(),
        1
    );
    let again = store.prune(later, 2, false).await.unwrap();
    assert_eq!(again.notifications, 0);
}
