//! The assembled service: configuration in, store opened and migrated, channels built, engine
//! and group committer running. The HTTP API, the CLI and the library all start from here.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use klaxon_core::config::Config;
use klaxon_store::group::GroupCommitter;
use klaxon_store::{DepthScope, Store};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::deliver::limits::RateLimits;
use crate::deliver::registry::{Guard, Registry};
use crate::deliver::{Engine, EngineHandle};
use crate::ingest::Ingest;

/// What every part of a running service shares.
pub struct Shared {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub ingest: Ingest,
    pub engine: Arc<Engine>,
    pub started_at: DateTime<Utc>,
    pub metrics: PrometheusHandle,
    /// The Redis subscriber's state, when `[redis]` is configured.
    pub redis: Option<crate::sources::Subscriber>,
    /// The Redis Streams consumer's state, when `[redis] stream` is configured.
    pub redis_stream: Option<crate::sources::Subscriber>,
    /// The live event bus (the engine's own; operator changes and ingest publish to it too).
    pub events: crate::events::Events,
}

/// Which parts of the service a replica runs (`klaxon serve --role`), so intake and delivery
/// scale apart on a shared PostgreSQL store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// The HTTP API and the ingestion sources (Redis, the inbox table); no delivery.
    Api,
    /// The delivery engine and retention, with only `/health`, `/ready` and `/metrics` served.
    Worker,
    /// Both (one process, or identical replicas).
    #[default]
    All,
}

impl Role {
    /// Takes notifications in (API, Redis, inbox).
    pub fn intake(self) -> bool {
        self != Role::Worker
    }
    /// Claims and sends deliveries, and prunes.
    pub fn delivers(self) -> bool {
        self != Role::Api
    }
}

/// How often retention runs (the first run a minute after start, off the start-up path).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const PRUNE_FIRST: Duration = Duration::from_secs(60);
/// Notifications removed per transaction.
pub const PRUNE_BATCH: usize = 500;

pub struct Service {
    pub shared: Arc<Shared>,
    engine: EngineHandle,
    gauges: tokio::task::JoinHandle<()>,
    /// Ingestion beside HTTP (Redis); stopped first on shutdown, like the HTTP intake.
    sources: Vec<tokio::task::JoinHandle<()>>,
    sources_stop: tokio_util::sync::CancellationToken,
    /// Store wake-ups and retention: aborted on shutdown (neither holds work of its own).
    background: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store: {0}")]
    Store(#[from] klaxon_store::StoreError),
    #[error("redis.url: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Shared through Redis when `[redis]` is configured (and `shared_limits` not switched off),
/// else this process's own.
fn rate_limits(config: &Config) -> Result<RateLimits, StartError> {
    match &config.redis {
        Some(r) if r.shared_limits => {
            tracing::info!(prefix = %r.key_prefix, "rate limits shared through Redis");
            Ok(RateLimits::shared(&r.url, &r.key_prefix)?)
        }
        _ => Ok(RateLimits::local()),
    }
}

/// rustls needs one process-wide crypto provider; ring keeps the build free of aws-lc.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Service {
    pub async fn start(config: Config) -> Result<Service, StartError> {
        Self::start_as(config, Role::All).await
    }

    pub async fn start_as(config: Config, role: Role) -> Result<Service, StartError> {
        install_crypto();
        let metrics = crate::metrics::handle();
        let store = klaxon_store::open(&config.store.url).await?;
        store.migrate().await?;
        let persisted = store.channel_states().await?;
        let http = klaxon_channels::http_client();
        let registry = Arc::new(Registry::new(
            &config.channels,
            &http,
            &config.delivery.breaker,
            &persisted,
            config.delivery.concurrency,
            &config.templates,
        ));
        let start_engine = if role.delivers() {
            Engine::start
        } else {
            Engine::start_without_delivery
        };
        let engine = start_engine(
            store.clone(),
            registry.clone(),
            config.delivery.clone(),
            config.events.clone(),
            config.store.lease,
            rate_limits(&config)?,
        );
        let committer = GroupCommitter::start(store.clone(), config.store.group_commit_max);
        let ingest = Ingest::new(
            registry.clone(),
            config.routing(),
            committer,
            engine.engine.clone(),
        );
        let events = engine.engine.events.clone();
        let shared = Arc::new(Shared {
            store: store.clone(),
            registry: registry.clone(),
            ingest,
            engine: engine.engine.clone(),
            started_at: Utc::now(),
            metrics,
            events,
            redis: config
                .redis
                .as_ref()
                .filter(|r| !r.channels.is_empty())
                .map(|_| crate::sources::Subscriber::default()),
            redis_stream: config
                .redis
                .as_ref()
                .and_then(|r| r.stream.as_ref())
                .map(|_| crate::sources::Subscriber::default()),
            config,
        });
        let sources_stop = tokio_util::sync::CancellationToken::new();
        let mut sources = Vec::new();
        let mut background = Vec::new();
        let inbox_wake = Arc::new(tokio::sync::Notify::new());
        if let Some(mut wakeups) = store.wakeups() {
            let (engine, inbox_wake) = (shared.engine.clone(), inbox_wake.clone());
            background.push(tokio::spawn(async move {
                while let Some(w) = wakeups.recv().await {
                    match w {
                        klaxon_store::Wake::Due => engine.wake(),
                        klaxon_store::Wake::Inbox => inbox_wake.notify_one(),
                    }
                }
            }));
        }
        if role.intake() && store.has_inbox() {
            sources.push(tokio::spawn(crate::inbox::run(
                shared.clone(),
                inbox_wake,
                sources_stop.clone(),
            )));
        }
        if role.delivers()
            && let Some(retention) = shared.config.store.retention
        {
            background.push(tokio::spawn(prune_every(store.clone(), retention)));
        }
        let redis = if role.intake() {
            shared.config.redis.as_ref()
        } else {
            None
        };
        if let (Some(cfg), Some(state)) = (redis, &shared.redis) {
            sources.push(tokio::spawn(crate::sources::redis(
                cfg.clone(),
                shared.clone(),
                state.clone(),
                sources_stop.clone(),
            )));
        }
        if let (Some(cfg), Some(state)) = (redis, &shared.redis_stream) {
            sources.push(tokio::spawn(crate::sources::redis_stream(
                cfg.clone(),
                shared.clone(),
                state.clone(),
                sources_stop.clone(),
            )));
        }
        let gauges = tokio::spawn(refresh_gauges(store, registry));
        for rt in shared.registry.all() {
            tracing::info!(
                channel = %rt.spec.name,
                destination = %klaxon_core::channel_url::describe(&rt.spec.provider),
                enabled = rt.enabled(),
                "channel ready"
            );
        }
        Ok(Service {
            shared,
            engine,
            gauges,
            sources,
            sources_stop,
            background,
        })
    }

    /// Stops delivery: in-flight sends get `grace` to finish, the rest go back to the store.
    pub async fn shutdown(self, grace: Duration) {
        self.sources_stop.cancel();
        for t in self.sources {
            let _ = t.await;
        }
        self.gauges.abort();
        for t in self.background {
            t.abort();
        }
        self.engine.shutdown(grace).await;
    }
}

/// Retention: removes what has been final for longer than `retention`, every `PRUNE_EVERY`.
/// On PostgreSQL only the replica holding the prune lock does the work in a round.
async fn prune_every(store: Arc<dyn Store>, retention: Duration) {
    tokio::time::sleep(PRUNE_FIRST).await;
    loop {
        let before = Utc::now() - chrono::TimeDelta::from_std(retention).unwrap_or_default();
        match store.prune(before, PRUNE_BATCH, false).await {
            Ok(p) if p.ran && p.notifications > 0 => tracing::info!(
                notifications = p.notifications,
                deliveries = p.deliveries,
                attempts = p.attempts,
                "retention removed old records"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention failed; trying again next round"),
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}

/// Keeps `klaxon_queue_depth` and `klaxon_channel_up` current. Only the open statuses: counting
/// the whole history every 5 s cost a walk over every delivery kept — time that grew with the
/// retention, and SQLite page cache filled with the history in every reader connection (the
/// soak's memory growth, BENCHMARKS.md §14). Final outcomes are `klaxon_deliveries_total`.
async fn refresh_gauges(store: Arc<dyn Store>, registry: Arc<Registry>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        if let Ok(rows) = store.depth(DepthScope::Open).await {
            for rt in registry.all() {
                for &status in DepthScope::Open.statuses() {
                    let n = rows
                        .iter()
                        .find(|r| r.channel == rt.spec.name && r.status == status)
                        .map_or(0, |r| r.count);
                    metrics::gauge!("klaxon_queue_depth", "channel" => rt.spec.name.clone(), "status" => status.as_str()).set(n as f64);
                }
            }
        }
        for rt in registry.all() {
            let up = rt.enabled() && rt.breaker.guard().is_closed();
            metrics::gauge!("klaxon_channel_up", "channel" => rt.spec.name.clone()).set(if up {
                1.0
            } else {
                0.0
            });
        }
    }
}
