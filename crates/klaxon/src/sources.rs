//! Ingestion sources beside HTTP: Redis pub/sub (PRODUCT.md §2). Each message is one event
//! envelope (§3); it is routed and committed like `POST /api/v1/events`. A bad message is
//! logged with the reason and counted (`klaxon_ingest_rejected_total{source,reason}`), never
//! fatal; a lost connection is re-made with backoff, and `/ready` says whether the subscriber
//! is on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use klaxon_core::config::RedisConfig;
use klaxon_core::input::{Envelope, from_json};
use klaxon_core::secret::redact;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::app::Shared;
use crate::deliver::registry::Guard;

/// Reconnection backoff: from 100 ms, doubling, at most 5 s — a strategy engine's signals are
/// lost while nobody is subscribed (pub/sub keeps nothing), so come back fast.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What `/ready` shows about the subscriber. No URL: it may hold a password.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SubscriberState {
    pub connected: bool,
    pub channels: Vec<String>,
    pub since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub received: u64,
    pub rejected: u64,
}

#[derive(Clone, Default)]
pub struct Subscriber(pub Arc<Mutex<SubscriberState>>);

impl Subscriber {
    pub fn state(&self) -> SubscriberState {
        self.0.guard().clone()
    }
}

/// Runs the Redis subscriber until `cancel`.
pub async fn redis(
    cfg: RedisConfig,
    shared: Arc<Shared>,
    state: Subscriber,
    cancel: CancellationToken,
) {
    state.0.guard().channels = cfg.channels.clone();
    keep_connected("redis", &cfg, &state, &cancel, || {
        session(&cfg, &shared, &state)
    })
    .await;
}

/// Runs `session` again and again until `cancel`, waiting a backoff between tries that
/// starts over once a session got connected; the state says why the last one ended.
async fn keep_connected<F, Fut>(
    source: &'static str,
    cfg: &RedisConfig,
    state: &Subscriber,
    cancel: &CancellationToken,
    mut session: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<()>>,
{
    let mut backoff = BACKOFF_MIN;
    loop {
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            r = session() => r,
        };
        let reason = match outcome {
            Ok(()) => "the connection closed".to_string(),
            Err(e) => redact(&e.to_string(), &[&cfg.url]),
        };
        let was_connected = {
            let mut s = state.0.guard();
            let was = s.connected;
            s.connected = false;
            s.since = Some(Utc::now());
            s.last_error = Some(reason.clone());
            was
        };
        if was_connected {
            backoff = BACKOFF_MIN;
        }
        metrics::gauge!("klaxon_ingest_connected", "source" => source).set(0.0);
        tracing::warn!(source, reason = %reason, retry_in = ?backoff, "Redis connection lost; reconnecting");
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Marks a source on.
fn connected(source: &'static str, state: &Subscriber) {
    let mut s = state.0.guard();
    s.connected = true;
    s.since = Some(Utc::now());
    metrics::gauge!("klaxon_ingest_connected", "source" => source).set(1.0);
}

/// A Redis client for `url` with `TCP_NODELAY`: the redis crate leaves Nagle on, so a command
/// written while an earlier one on the same multiplexed connection is unacknowledged can wait
/// for the server's delayed ACK (up to ~40 ms) — every send's rate-limit slot goes through one
/// such connection.
pub(crate) fn redis_client(url: &klaxon_core::secret::Secret) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    let info = url
        .expose()
        .into_connection_info()?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info)
}

/// One connection: subscribe, then take messages until it ends.
async fn session(cfg: &RedisConfig, shared: &Shared, state: &Subscriber) -> redis::RedisResult<()> {
    let client = redis_client(&cfg.url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    for ch in &cfg.channels {
        pubsub.subscribe(ch).await?;
    }
    connected("redis", state);
    tracing::info!(channels = ?cfg.channels, "Redis subscriber on");
    let mut messages = pubsub.into_on_message();
    while let Some(msg) = messages.next().await {
        let channel = msg.get_channel_name().to_string();
        let payload: Vec<u8> = msg.get_payload_bytes().to_vec();
        take(shared, state, &channel, &payload).await;
    }
    Ok(())
}

/// One message: parsed, routed and committed, or rejected with a reason.
async fn take(shared: &Shared, state: &Subscriber, channel: &str, payload: &[u8]) {
    state.0.guard().received += 1;
    let source = format!("redis:{channel}");
    let reject = |reason: &'static str, detail: String| {
        state.0.guard().rejected += 1;
        metrics::counter!("klaxon_ingest_rejected_total", "source" => "redis", "reason" => reason)
            .increment(1);
        tracing::warn!(channel = %channel, reason, %detail, "Redis message rejected");
    };
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return reject("invalid_json", format!("not JSON: {e}")),
    };
    let n =
        match from_json::<Envelope>(value, "").and_then(|env| env.into_notification(&source, "")) {
            Ok(n) => n,
            Err(e) => return reject(e.code, format!("`{}`: {}", e.field, e.message)),
        };
    match shared.ingest.submit(n).await {
        Ok(_) => {}
        Err(crate::ingest::IngestError::Input(e)) => {
            reject(e.code, format!("`{}`: {}", e.field, e.message))
        }
        // Pub/sub cannot hand it back: say loudly that it is lost.
        Err(crate::ingest::IngestError::Store(e)) => {
            reject("store_unavailable", format!("the store refused it: {e}"))
        }
    }
}

/// Runs the Redis Streams consumer until `cancel`: a consumer group on `stream.key`, each entry
/// acknowledged only after its notification is committed, entries of a consumer that died
/// before acknowledging taken over after `claim_idle`. An entry's id is its idempotency key, so
/// one read twice (a crash between commit and `XACK`) still makes one notification.
pub async fn redis_stream(
    cfg: RedisConfig,
    shared: Arc<Shared>,
    state: Subscriber,
    cancel: CancellationToken,
) {
    let Some(stream) = cfg.stream.clone() else {
        return;
    };
    state.0.guard().channels = vec![stream.key.clone()];
    keep_connected("redis_stream", &cfg, &state, &cancel, || {
        stream_session(&cfg, &stream, &shared, &state)
    })
    .await;
}

/// Entries read per call.
const STREAM_BATCH: usize = 100;
/// How long one `XREADGROUP` waits for new entries, so claims of dead consumers run too.
const STREAM_BLOCK_MS: usize = 1000;

async fn stream_session(
    cfg: &RedisConfig,
    stream: &klaxon_core::config::RedisStream,
    shared: &Shared,
    state: &Subscriber,
) -> redis::RedisResult<()> {
    use redis::AsyncCommands;
    use redis::streams::{
        StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply,
    };

    let client = redis_client(&cfg.url)?;
    // A blocking read must not be cut short by the client's own answer timeout.
    let mut conn = client
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new().set_response_timeout(Some(
                Duration::from_millis(STREAM_BLOCK_MS as u64) + Duration::from_secs(5),
            )),
        )
        .await?;
    // From the stream's start on first creation: what was published before Klaxon ever ran
    // is not lost either.
    let created: redis::RedisResult<()> = conn
        .xgroup_create_mkstream(&stream.key, &stream.group, "0")
        .await;
    if let Err(e) = created
        && e.code() != Some("BUSYGROUP")
    {
        return Err(e);
    }
    connected("redis_stream", state);
    tracing::info!(stream = %stream.key, group = %stream.group, consumer = %stream.consumer, "Redis stream consumer on");
    // First this consumer's own unacknowledged entries (it crashed before), then new ones.
    let mut own_pending = true;
    loop {
        let claimed: StreamAutoClaimReply = conn
            .xautoclaim_options(
                &stream.key,
                &stream.group,
                &stream.consumer,
                stream.claim_idle.as_millis() as u64,
                "0-0",
                StreamAutoClaimOptions::default().count(STREAM_BATCH),
            )
            .await?;
        for entry in &claimed.claimed {
            stream_entry(&mut conn, stream, shared, state, entry).await?;
        }
        let id = if own_pending { "0" } else { ">" };
        let opts = StreamReadOptions::default()
            .group(&stream.group, &stream.consumer)
            .count(STREAM_BATCH)
            .block(if own_pending { 0 } else { STREAM_BLOCK_MS });
        let reply: Option<StreamReadReply> =
            conn.xread_options(&[&stream.key], &[id], &opts).await?;
        let entries: Vec<_> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
        if own_pending && entries.is_empty() {
            own_pending = false;
        }
        for entry in &entries {
            stream_entry(&mut conn, stream, shared, state, entry).await?;
        }
    }
}

/// One entry: committed (or rejected for good), then acknowledged. A store failure leaves it
/// unacknowledged, so it is read again.
async fn stream_entry(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &klaxon_core::config::RedisStream,
    shared: &Shared,
    state: &Subscriber,
    entry: &redis::streams::StreamId,
) -> redis::RedisResult<()> {
    use redis::AsyncCommands;
    state.0.guard().received += 1;
    let source = format!("redis:{}", stream.key);
    let reject = |reason: &'static str, detail: String| {
        state.0.guard().rejected += 1;
        metrics::counter!("klaxon_ingest_rejected_total", "source" => "redis_stream", "reason" => reason)
            .increment(1);
        tracing::warn!(stream = %stream.key, entry = %entry.id, reason, %detail, "Redis stream entry rejected");
    };
    let payload: Option<Vec<u8>> = entry
        .map
        .get("payload")
        .and_then(|v| redis::from_redis_value(v.clone()).ok());
    let parsed = match payload {
        None => Err(("missing_payload", "no `payload` field".to_string())),
        Some(p) => match serde_json::from_slice::<serde_json::Value>(&p) {
            Err(e) => Err(("invalid_json", format!("not JSON: {e}"))),
            Ok(v) => from_json::<Envelope>(v, "")
                .and_then(|env| env.into_notification(&source, ""))
                .map_err(|e| (e.code, format!("`{}`: {}", e.field, e.message))),
        },
    };
    match parsed {
        Err((reason, detail)) => reject(reason, detail),
        Ok(mut n) => {
            n.idempotency_key = Some(format!("redis-stream:{}:{}", stream.key, entry.id));
            match shared.ingest.submit(n).await {
                Ok(_) => {}
                Err(crate::ingest::IngestError::Input(e)) => {
                    reject(e.code, format!("`{}`: {}", e.field, e.message))
                }
                Err(crate::ingest::IngestError::Store(e)) => {
                    // Not acknowledged: it stays pending and is read again.
                    tracing::error!(stream = %stream.key, entry = %entry.id, error = %e, "the store refused a stream entry; it stays pending");
                    return Ok(());
                }
            }
        }
    }
    let _: i64 = conn.xack(&stream.key, &stream.group, &[&entry.id]).await?;
    Ok(())
}
