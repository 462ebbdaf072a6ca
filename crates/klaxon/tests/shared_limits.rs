//! Rate limits shared through Redis (issue 6, item 2), against the real Redis on this machine
//! (`KLAXON_TEST_REDIS_URL`) and, for the replicas, the real PostgreSQL
//! (`KLAXON_TEST_DATABASE_URL`).
//!
//! In process: two limiters on one Redis (two replicas) draw from one bucket, use each other's
//! bookings and see each other's 429 pauses; with Redis unreachable each limits on its own.
//! Out of process: three `klaxon` binaries share one Telegram bot through the fake Telegram,
//! which enforces 1 message per chat per second and 30 per second per bot with real 429s. With
//! shared limits it answers no 429 at all; the same run with `shared_limits = false` is the
//! control that shows the three would otherwise overrun the bot.

mod common;

use std::time::Duration;

use common::{Binary, free_port};
use klaxon::deliver::limits::RateLimits;
use klaxon_core::limit::{LimitKey, Rate};
use klaxon_core::model::new_id;
use klaxon_core::secret::Secret;
use klaxon_fakes::telegram::{DEFAULT_TOKEN, FakeTelegram};
use klaxon_store::testing::PgDb;
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

/// A prefix of its own per test, so runs and tests never share a bucket.
fn prefix() -> String {
    format!("klaxon-test-{}:", new_id().simple())
}

fn key(name: &str, rate: &str) -> LimitKey {
    LimitKey {
        key: name.into(),
        rate: rate.parse().unwrap(),
    }
}

fn shared(url: &str, prefix: &str) -> RateLimits {
    RateLimits::shared(&Secret::new(url.to_string()), prefix).unwrap()
}

/// Two replicas' limits on one Redis under a prefix of their own; None (skipped) without Redis.
fn two_replicas() -> Option<(RateLimits, RateLimits)> {
    let url = common::redis_url()?;
    let p = prefix();
    Some((shared(&url, &p), shared(&url, &p)))
}

/// `wait` is `expected` give or take the time the calls took (well under a second here).
fn about(wait: Duration, expected: Duration) -> bool {
    wait + Duration::from_secs(1) > expected && wait < expected + Duration::from_secs(1)
}

const MINUTE: Duration = Duration::from_secs(60);
/// The engine's hold: a slot further off is booked and the delivery deferred.
const HOLD: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn two_replicas_draw_from_one_bucket() {
    let Some((a, b)) = two_replicas() else {
        return;
    };
    assert!(a.is_shared());
    // One a minute: the slots are whole minutes apart whichever replica asks, so the waits say
    // exactly how many sends each saw before it.
    let keys = [key("bot", "1/min")];
    let origin = Instant::now();
    let mut waits = Vec::new();
    for i in 0..6 {
        let limits = if i % 2 == 0 { &a } else { &b };
        let now = origin.elapsed();
        let at = limits.slot(new_id(), &keys, now, Duration::MAX).await;
        waits.push(at - now);
    }
    for (i, w) in waits.iter().enumerate() {
        assert!(
            about(*w, MINUTE * i as u32),
            "send {i} waits {w:?}: {waits:?}"
        );
    }
    // A key of its own is not held by the others.
    let now = origin.elapsed();
    let at = b.slot(new_id(), &[key("other", "1/min")], now, HOLD).await;
    assert!(about(at - now, Duration::ZERO), "{:?}", at - now);
}

#[tokio::test]
async fn a_deferred_delivery_keeps_its_slot_on_whichever_replica_claims_it() {
    let Some((a, b)) = two_replicas() else {
        return;
    };
    let keys = [key("chat", "1/min")];
    let ids: Vec<Uuid> = (0..3).map(|_| new_id()).collect();
    let origin = Instant::now();
    let now = origin.elapsed();
    // Replica a claims three: the first goes now, the others are booked a minute apart.
    let mut slots = Vec::new();
    for id in &ids {
        slots.push(a.slot(*id, &keys, now, HOLD).await - now);
    }
    assert!(about(slots[0], Duration::ZERO) && about(slots[1], MINUTE));
    assert!(about(slots[2], 2 * MINUTE), "{slots:?}");
    // Replica b claims the second when it comes due: it gets the booked slot, not a fourth.
    let now = origin.elapsed();
    let at = b.slot(ids[1], &keys, now, HOLD).await;
    assert!(about(at - now, MINUTE), "{:?}", at - now);
    // A booking is used once: asked again, the delivery queues behind the third.
    let now = origin.elapsed();
    let at = b.slot(ids[1], &keys, now, HOLD).await;
    assert!(about(at - now, 3 * MINUTE), "{:?}", at - now);
}

/// Calendars in Redis, as in process: a backlog booked far out under one chat does not hold the
/// bot's other chats, and the bot's 30 in any window go at once.
#[tokio::test]
async fn a_backlog_to_one_chat_does_not_hold_the_bots_other_chats() {
    let Some((a, b)) = two_replicas() else {
        return;
    };
    let bot = LimitKey {
        key: "bot".into(),
        rate: Rate::sliding(30, Duration::from_millis(1030)),
    };
    let to = |chat: &str| [bot.clone(), key(&format!("chat:{chat}"), "1/min")];
    let origin = Instant::now();
    // Replica a books three minutes of one chat.
    let now = origin.elapsed();
    let mut slots = Vec::new();
    for _ in 0..3 {
        slots.push(a.slot(new_id(), &to("busy"), now, HOLD).await - now);
    }
    assert!(about(slots[2], 2 * MINUTE), "{slots:?}");
    // Replica b's message to another chat goes now, not after the busy chat's last slot.
    let now = origin.elapsed();
    let at = b.slot(new_id(), &to("quiet"), now, HOLD).await;
    assert!(about(at - now, Duration::ZERO), "{:?}", at - now);
    // 28 more chats fill the bot's window (30 sends with the busy chat's first and the quiet
    // chat's); the next waits for the window to pass.
    for c in 0..28 {
        let at = b.slot(new_id(), &to(&c.to_string()), now, HOLD).await;
        assert!(about(at - now, Duration::ZERO), "chat {c}: {:?}", at - now);
    }
    let now = origin.elapsed();
    let at = a.slot(new_id(), &to("late"), now, HOLD).await;
    let wait = at - now;
    assert!(
        wait > Duration::from_millis(500) && wait <= Duration::from_millis(1030),
        "{wait:?}"
    );
}

#[tokio::test]
async fn a_429_on_one_replica_pauses_the_other() {
    let Some((a, b)) = two_replicas() else {
        return;
    };
    let channel = key("channel:tg", "30/s");
    let origin = Instant::now();
    assert_eq!(b.paused_elsewhere(&channel.key).await, None);
    a.pause(&channel, origin.elapsed(), Duration::from_secs(20))
        .await;
    let left = b
        .paused_elsewhere(&channel.key)
        .await
        .expect("b sees the pause");
    assert!(about(left, Duration::from_secs(20)), "{left:?}");
    // And plans its next send after it.
    let now = origin.elapsed();
    let at = b
        .slot(new_id(), std::slice::from_ref(&channel), now, HOLD)
        .await;
    assert!(about(at - now, Duration::from_secs(20)), "{:?}", at - now);
}

#[tokio::test]
async fn without_redis_a_replica_limits_on_its_own() {
    // Nothing listens on port 1: every call fails at once and the local limiter answers.
    let limits = shared("redis://127.0.0.1:1", &prefix());
    // A TLS URL is understood too (this build speaks rediss://).
    assert!(shared("rediss://127.0.0.1:1", &prefix()).is_shared());
    let keys = [key("bot", "1/min")];
    let origin = Instant::now();
    let mut waits = Vec::new();
    for _ in 0..3 {
        let now = origin.elapsed();
        waits.push(limits.slot(new_id(), &keys, now, Duration::MAX).await - now);
    }
    for (i, w) in waits.iter().enumerate() {
        assert!(about(*w, MINUTE * i as u32), "{waits:?}");
    }
    let channel = key("channel:tg", "30/s");
    limits
        .pause(&channel, origin.elapsed(), Duration::from_secs(20))
        .await;
    assert_eq!(limits.paused_elsewhere(&channel.key).await, None);
    let now = origin.elapsed();
    let at = limits
        .slot(new_id(), std::slice::from_ref(&channel), now, HOLD)
        .await;
    assert!(about(at - now, Duration::from_secs(20)), "{:?}", at - now);
}

const CHATS: usize = 40;
/// Notifications, each to every chat: 360 messages, 12 s at the bot's 30/s.
const NOTIFICATIONS: usize = 9;

/// Three replicas on one database and one Redis, sending through one bot.
async fn three_replicas(db: &PgDb, tg: &FakeTelegram, redis: &str, share: bool) -> Vec<Binary> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("klaxon.toml");
    std::fs::write(
        &config,
        format!(
            "[redis]\nurl = \"{redis}\"\nchannels = []\nkey_prefix = \"{}\"\nshared_limits = {share}\n",
            prefix()
        ),
    )
    .unwrap();
    let chats: Vec<String> = (1..=CHATS).map(|c| (1000 + c).to_string()).collect();
    let chats = chats.join(",");
    let api = tg.url();
    let env = [
        ("KLAXON_STORE_URL", db.url.as_str()),
        ("TELEGRAM_BOT_TOKEN", DEFAULT_TOKEN),
        ("TELEGRAM_CHAT_ID", chats.as_str()),
        ("KLAXON_TELEGRAM_API", api.as_str()),
    ];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Binary::serve_with_config(&config, &[], &env, free_port()).await);
    }
    replicas
}

/// Sends the notifications through the first replica and waits until the fake has every
/// message; returns how many each replica delivered (from its `/metrics`).
async fn run(replicas: &[Binary], tg: &FakeTelegram) -> Vec<u64> {
    let http = reqwest::Client::new();
    let items: Vec<Value> = (0..NOTIFICATIONS)
        .map(|i| json!({"title": "fill", "message": format!("order {i} filled")}))
        .collect();
    let r = http
        .post(format!("{}/api/v1/notifications/batch", replicas[0].base))
        .json(&items)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let want = CHATS * NOTIFICATIONS;
    let deadline = Instant::now() + Duration::from_secs(120);
    while tg.messages().len() < want {
        assert!(
            Instant::now() < deadline,
            "{} of {want} messages after 120 s",
            tg.messages().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut sent = Vec::new();
    for r in replicas {
        let text = http
            .get(format!("{}/metrics", r.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        sent.push(
            text.lines()
                .filter(|l| {
                    l.starts_with("klaxon_deliveries_total{") && l.contains("outcome=\"delivered\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64,
        );
    }
    sent
}

/// From the first message the fake accepted to the last.
fn span(tg: &FakeTelegram) -> Duration {
    let at: Vec<_> = tg.messages().iter().map(|m| m.at).collect();
    match (at.iter().min(), at.iter().max()) {
        (Some(a), Some(b)) => *b - *a,
        _ => Duration::ZERO,
    }
}

/// The most messages the fake accepted from the bot in any one-second window.
fn busiest_second(tg: &FakeTelegram) -> usize {
    let mut at: Vec<_> = tg.messages().iter().map(|m| m.at).collect();
    at.sort();
    (0..at.len())
        .map(|i| at[i..].partition_point(|t| *t < at[i] + Duration::from_secs(1)))
        .max()
        .unwrap_or(0)
}

/// One test, not two: the control runs after the shared run, so the two never load the machine
/// (and the replicas' timing) at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_together_stay_within_one_bots_limit() {
    common::crypto();
    let Some(redis) = common::redis_url() else {
        return;
    };
    let Some(db) = PgDb::create().await else {
        return;
    };
    let tg = FakeTelegram::start().await;
    tg.set_limits((1, Duration::from_secs(1)), 20, 30);
    let replicas = three_replicas(&db, &tg, &redis, true).await;
    let sent = run(&replicas, &tg).await;
    drop(replicas);
    let busiest = busiest_second(&tg);
    eprintln!(
        "shared limits: {} messages in {:?} (at 30/s: {:?}), sent by the replicas {sent:?}, at most {busiest} in one second, {} answered 429",
        tg.messages().len(),
        span(&tg),
        Duration::from_millis(1030) * (CHATS * NOTIFICATIONS) as u32 / 30,
        tg.count_429()
    );
    assert!(
        sent.iter().filter(|n| **n > 0).count() >= 2,
        "the work was not spread over replicas ({sent:?}): nothing was shared"
    );
    assert_eq!(tg.count_429(), 0, "{:?}", tg.rejected());
    assert!(busiest <= 30, "{busiest} messages in one second");
    assert_eq!(tg.messages().len(), CHATS * NOTIFICATIONS);

    // The control: the same, each replica limiting on its own.
    let Some(db) = PgDb::create().await else {
        return;
    };
    let tg = FakeTelegram::start().await;
    tg.set_limits((1, Duration::from_secs(1)), 20, 30);
    let replicas = three_replicas(&db, &tg, &redis, false).await;
    let sent = run(&replicas, &tg).await;
    eprintln!(
        "limits per replica: {} messages in {:?}, sent by the replicas {sent:?}, {} answered 429",
        tg.messages().len(),
        span(&tg),
        tg.count_429()
    );
    // Each replica keeps to 30/s on its own; together they do not, and Telegram says so.
    assert!(
        tg.count_429() > 0,
        "sent by {sent:?}: no replica overlapped"
    );
    // The 429s cost time, not messages.
    assert_eq!(tg.messages().len(), CHATS * NOTIFICATIONS);
}
