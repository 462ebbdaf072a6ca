//! What every scenario shares: the real service started in-process on a fresh SQLite file, the
//! way `crates/klaxon/tests/common` does it; the webhook sink it delivers to; one HTTP client;
//! and the two load shapes — a closed loop (C workers, each sending its next request when the
//! last one is answered) and an open loop (a fixed rate, whatever the answers do).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use klaxon::Config;
use klaxon_fakes::webhook::{SinkOptions, WebhookSink};
use klaxon_store::testing::PgDb;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::report::Lat;

/// Path the channel posts to on the sink (any path is accepted).
const SINK_PATH: &str = "/hook";

/// A webhook receiver; `record` keeps every request with its arrival time (needed to match
/// deliveries to notifications), otherwise it only counts.
pub async fn sink(record: bool) -> WebhookSink {
    WebhookSink::start_with(SinkOptions {
        secret: None,
        record_bodies: record,
    })
    .await
}

/// The sink's address as a Klaxon channel URL (`json://127.0.0.1:PORT/hook`).
pub fn channel_url(sink: &WebhookSink) -> String {
    format!(
        "{}{SINK_PATH}",
        sink.url().replacen("http://", "json://", 1)
    )
}

/// The address requests to the sink itself go to (the baselines).
pub fn sink_post_url(sink: &WebhookSink) -> String {
    format!("{}{SINK_PATH}", sink.url())
}

/// One client for a whole scenario: keep-alive, `TCP_NODELAY`, enough idle connections kept
/// for every worker.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client builds (install_crypto ran first)")
}

/// A configuration with one `json://` channel, `sink`, to `channel`; `extra` is more TOML
/// (a `[delivery]` or `[tradingview]` table).
pub fn config(db_url: &str, channel: &str, extra: &str) -> anyhow::Result<Config> {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "2s"

[store]
url = "{db_url}"

{extra}

[channels.sink]
url = "{channel}"
"#
    );
    // No environment: the bench's own variables must not add channels.
    Config::load(Some(&text), &BTreeMap::<String, String>::new())
        .map_err(|e| anyhow!("benchmark configuration invalid:\n{e}"))
}

/// A fresh temporary directory and the `sqlite://` URL of a database inside it.
pub fn fresh_db() -> anyhow::Result<(tempfile::TempDir, String)> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let url = format!("sqlite://{}", dir.path().join("klaxon.db").display());
    Ok((dir, url))
}

/// A database for one run, removed when dropped: a SQLite file in a temporary directory, or a
/// fresh database on the PostgreSQL server `KLAXON_TEST_DATABASE_URL` names.
pub enum Db {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres(PgDb),
}

impl Db {
    pub fn sqlite() -> anyhow::Result<Db> {
        let (dir, url) = fresh_db()?;
        Ok(Db::Sqlite { _dir: dir, url })
    }

    /// `None` when `KLAXON_TEST_DATABASE_URL` is not set.
    pub async fn postgres() -> anyhow::Result<Option<Db>> {
        if std::env::var("KLAXON_TEST_DATABASE_URL").is_err() {
            return Ok(None);
        }
        let db = PgDb::create()
            .await
            .context("KLAXON_TEST_DATABASE_URL is set but no database was created")?;
        Ok(Some(Db::Postgres(db)))
    }

    pub fn url(&self) -> &str {
        match self {
            Db::Sqlite { url, .. } => url,
            Db::Postgres(db) => &db.url,
        }
    }
}

/// Klaxon serving HTTP in this process, on its own database, delivering to a sink.
pub struct Klaxon {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// Holds the database; removed on drop.
    _db: Db,
}

impl Klaxon {
    /// Starts the service (`klaxon::server::serve`, port 0) with one channel to `sink`.
    pub async fn start(sink: &WebhookSink) -> anyhow::Result<Klaxon> {
        Klaxon::start_with(sink, "").await
    }

    /// The same, with more TOML (`extra`) in the configuration.
    pub async fn start_with(sink: &WebhookSink, extra: &str) -> anyhow::Result<Klaxon> {
        Klaxon::start_channel(&channel_url(sink), extra).await
    }

    /// The service with its one channel, `sink`, at `channel` (any channel URL).
    pub async fn start_channel(channel: &str, extra: &str) -> anyhow::Result<Klaxon> {
        Klaxon::start_on(Db::sqlite()?, channel, extra).await
    }

    /// The same on the database `db`.
    pub async fn start_on(db: Db, channel: &str, extra: &str) -> anyhow::Result<Klaxon> {
        let config = config(db.url(), channel, extra)?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = stop_rx.await;
            };
            let served = klaxon::server::serve(config, stop, move |a| {
                let _ = addr_tx.send(a);
            })
            .await;
            if let Err(e) = served {
                eprintln!("klaxon-bench: the service stopped: {e}");
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(30), addr_rx)
            .await
            .context("the service did not start within 30 s")?
            .context("the service failed to start")?;
        Ok(Klaxon {
            addr,
            stop: Some(stop_tx),
            task,
            _db: db,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Graceful stop: intake closes, sends in flight get the 2 s grace.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
    }
}

/// `POST url` with a JSON body; the status and the answer's body. Reading the body to the end
/// lets the connection be reused.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
) -> reqwest::Result<(u16, Bytes)> {
    let r = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.bytes().await?))
}

/// A small notification, the shape a trading bot sends (≈ 150 bytes of JSON).
pub fn small_notification() -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "title": "BUY MNQ",
            "message": "filled 2 MNQ @ 23,488.75 (strategy break-and-enter)",
            "severity": "info",
            "data": {"symbol": "MNQ", "qty": 2, "price": 23488.75},
        }))
        .expect("serialises"),
    )
}

/// A JSON array of `n` small notifications, for `/api/v1/notifications/batch`.
pub fn batch_of(n: usize) -> Bytes {
    let one: serde_json::Value = serde_json::from_slice(&small_notification()).expect("valid JSON");
    Bytes::from(serde_json::to_vec(&vec![one; n]).expect("serialises"))
}

/// What a load run produced. Latencies are in µs.
pub struct Load {
    /// From the first request to the last answer.
    pub elapsed: Duration,
    pub ok: u64,
    pub failed: u64,
    /// Latency of the successful requests.
    pub lat: Lat,
}

impl Load {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// A line for the report when some requests failed.
    pub fn failures(&self, what: &str) -> Option<String> {
        (self.failed > 0).then(|| {
            format!(
                "⚠ {what}: {} of {} requests failed (not counted).",
                self.failed,
                self.failed + self.ok
            )
        })
    }
}

/// `n` requests from `workers` concurrent workers, each sending its next request as soon as
/// the last one is answered. `op(i)` sends request `i` and says whether it succeeded; each
/// latency is measured around it.
pub async fn closed_loop<F, Fut>(n: usize, workers: usize, op: F) -> Load
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let (op, next) = (op.clone(), next.clone());
        set.spawn(async move {
            let mut lat = Lat::micros();
            let mut failed = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                if op(i).await {
                    lat.record(t.elapsed());
                } else {
                    failed += 1;
                }
            }
            (lat, failed)
        });
    }
    let mut lat = Lat::micros();
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        let (l, f) = r.expect("load worker panicked");
        lat.merge(&l);
        failed += f;
    }
    Load {
        elapsed: start.elapsed(),
        ok: lat.count(),
        failed,
        lat,
    }
}

/// `total` requests at a fixed `rate` per second, each in its own task, whether or not the
/// earlier ones were answered (ticks missed under load are sent at once, in a burst). Latency
/// runs from the *scheduled* send time, so a stalled server cannot hide its stall by slowing
/// the client down (no coordinated omission).
pub async fn open_loop<F, Fut>(rate: f64, total: usize, op: F) -> Load
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let op = Arc::new(op);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..total {
        let due = tick.tick().await.into_std();
        let op = op.clone();
        set.spawn(async move { op(i).await.then(|| due.elapsed()) });
    }
    let mut lat = Lat::micros();
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        match r.expect("request task panicked") {
            Some(d) => lat.record(d),
            None => failed += 1,
        }
    }
    Load {
        elapsed: start.elapsed(),
        ok: lat.count(),
        failed,
        lat,
    }
}

/// Closed-loop POSTs of `body` to `url`, expecting `status`.
pub async fn post_closed_loop(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
    n: usize,
    workers: usize,
    status: u16,
) -> Load {
    let (client, url) = (client.clone(), Arc::<str>::from(url));
    closed_loop(n, workers, move |_| {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        async move { matches!(post_json(&client, &url, body).await, Ok((s, _)) if s == status) }
    })
    .await
}

/// Open-loop POSTs of `body` to `url` at `rate`/s, expecting `status`.
pub async fn post_open_loop(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
    rate: f64,
    total: usize,
    status: u16,
) -> Load {
    let (client, url) = (client.clone(), Arc::<str>::from(url));
    open_loop(rate, total, move |_| {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        async move { matches!(post_json(&client, &url, body).await, Ok((s, _)) if s == status) }
    })
    .await
}

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
