//! Test harness: a real Klaxon service in-process on an ephemeral port with its own SQLite file,
//! and a plain HTTP client to talk to it like a user would.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use klaxon::Config;
use serde_json::Value;
use tokio::sync::oneshot;

pub struct TestServer {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
    config: Config,
}

/// Builds a config from TOML text (with `{db}` replaced by a fresh database path) and env pairs.
pub fn config(toml: &str, env: &[(&str, &str)], dir: &tempfile::TempDir) -> Config {
    let db = dir.path().join("klaxon.db");
    let text = toml.replace("{db}", &format!("sqlite://{}", db.display()));
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load(Some(&text), &env).unwrap_or_else(|e| panic!("test config invalid:\n{e}"))
}

impl TestServer {
    pub async fn start(toml: &str) -> Self {
        Self::start_env(toml, &[]).await
    }

    pub async fn start_env(toml: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(toml, env, &dir);
        Self::start_config(cfg, dir).await
    }

    pub async fn start_config(mut cfg: Config, dir: tempfile::TempDir) -> Self {
        cfg.server.listen = "127.0.0.1:0".into();
        let config = cfg.clone();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = stop_rx.await;
            };
            klaxon::server::serve(cfg, stop, move |a| {
                let _ = addr_tx.send(a);
            })
            .await
            .expect("server runs");
        });
        let addr = tokio::time::timeout(Duration::from_secs(20), addr_rx)
            .await
            .expect("server starts")
            .unwrap();
        TestServer {
            addr,
            http: reqwest::Client::new(),
            stop: Some(stop_tx),
            task: Some(task),
            dir,
            config,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The `/metrics` page as text.
    pub async fn metrics(&self) -> String {
        let r = self.http.get(self.url("/metrics")).send().await.unwrap();
        r.text().await.unwrap()
    }

    /// Submits a notification, expects `202`, returns its id.
    pub async fn send(&self, body: Value) -> String {
        let (code, v) = self.post("/api/v1/notifications", &body).await;
        assert_eq!(code, 202, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// Polls a notification until every delivery is final, or panics after `timeout`.
    pub async fn wait_final(&self, id: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (_, v) = self.get(&format!("/api/v1/notifications/{id}")).await;
            let done = v["deliveries"].as_array().is_some_and(|d| {
                d.iter().all(|d| {
                    matches!(
                        d["status"].as_str(),
                        Some("delivered" | "dead" | "expired" | "suppressed")
                    )
                })
            });
            if done {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not final in {timeout:?}: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops gracefully and starts again on the same database.
    pub async fn restart(mut self) -> TestServer {
        self.shutdown().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        TestServer::start_config(self.config.clone(), dir).await
    }

    async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
    }
}

/// A `json://` channel URL for a webhook sink (the sink speaks plain HTTP on loopback).
pub fn json_url(sink: &klaxon_fakes::webhook::WebhookSink) -> String {
    sink.url().replacen("http://", "json://", 1)
}

/// Waits until `sink` has received at least `n` requests, or panics after 10 s.
pub async fn wait_received(sink: &klaxon_fakes::webhook::WebhookSink, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sink.count() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} received",
            sink.count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Redis to test against (`KLAXON_TEST_REDIS_URL`); `None`, with a notice, when unset,
/// unless `KLAXON_REQUIRE_SERVICES=1` makes that a failure.
pub fn redis_url() -> Option<String> {
    match std::env::var("KLAXON_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("KLAXON_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "KLAXON_REQUIRE_SERVICES=1 but KLAXON_TEST_REDIS_URL is not set"
            );
            eprintln!("skipped: KLAXON_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379)");
            None
        }
    }
}

/// Publishes until at least one subscriber got it (a resubscribing Klaxon may not be on yet);
/// returns how many tries it took.
pub async fn publish_until_heard(
    conn: &mut redis::aio::MultiplexedConnection,
    channel: &str,
    payload: &str,
) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut tries = 0;
    loop {
        tries += 1;
        let heard: i64 = redis::AsyncCommands::publish(conn, channel, payload)
            .await
            .unwrap();
        if heard > 0 {
            return tries;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nobody subscribed to {channel}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one rustls provider, also for test clients.
pub fn crypto() {
    klaxon::app::install_crypto();
}

/// The real `klaxon` binary as a child process: `serve` on a port of its own, configured from
/// the environment only (plus `env`), with every well-known channel variable cleared.
pub struct Binary {
    pub child: std::process::Child,
    pub base: String,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Binary {
    /// Starts `klaxon serve ARGS…` and waits until `/ready` answers 200.
    pub async fn serve(args: &[&str], env: &[(&str, &str)], port: u16) -> Binary {
        let none = std::path::Path::new("/nonexistent/klaxon.toml");
        Binary::serve_with_config(none, args, env, port).await
    }

    /// The same with a configuration file (`KLAXON_LISTEN` still sets the port).
    pub async fn serve_with_config(
        config: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
        port: u16,
    ) -> Binary {
        Binary::start(config, args, env, port, std::process::Stdio::null()).await
    }

    /// The same with the service's log (stderr: warnings, errors, panics) written to `log`, for
    /// a test that reads it afterwards.
    pub async fn serve_logged(
        config: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
        port: u16,
        log: &std::path::Path,
    ) -> Binary {
        let file = std::fs::File::create(log).expect("the log file can be created");
        Binary::start(config, args, env, port, file.into()).await
    }

    async fn start(
        config: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
        port: u16,
        stderr: std::process::Stdio,
    ) -> Binary {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_klaxon"));
        cmd.arg("serve")
            .args(args)
            .arg("--config")
            .arg(config)
            .env("KLAXON_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .env_remove("TELEGRAM_BOT_TOKEN")
            .env_remove("DISCORD_WEBHOOK_URL")
            .env_remove("NOTIFICATION_CHANNELS")
            .env_remove("KLAXON_ROLE")
            .stdout(std::process::Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the klaxon binary starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..400 {
            if http
                .get(format!("{base}/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Binary { child, base };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("klaxon did not become ready");
    }

    /// SIGKILL: no shutdown at all, as in a crash.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that each notification (body `id`) arrived under exactly one `webhook-id` (its
/// delivery's id, stable across retries and take-overs); returns how many requests repeated
/// one already received.
pub fn repeats(received: &[klaxon_fakes::webhook::WebhookRequest]) -> usize {
    let mut ids: std::collections::HashMap<String, std::collections::HashSet<String>> =
        Default::default();
    for r in received {
        ids.entry(r.body["id"].as_str().unwrap_or_default().to_string())
            .or_default()
            .insert(r.webhook_id.clone().unwrap_or_default());
    }
    for (nid, w) in &ids {
        assert_eq!(
            w.len(),
            1,
            "notification {nid} arrived under several webhook-ids: {w:?}"
        );
    }
    received.len() - ids.len()
}

/// Waits until every notification in `want` (ids the API returned) reached `sink`, matched by
/// the webhook body's `id`, or fails after `timeout` saying how many are missing.
pub async fn wait_delivered(
    sink: &klaxon_fakes::webhook::WebhookSink,
    want: &std::collections::HashSet<String>,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got: std::collections::HashSet<String> = sink
            .received()
            .iter()
            .filter_map(|r| r.body["id"].as_str().map(str::to_string))
            .collect();
        let missing = want.difference(&got).count();
        if missing == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} of {} accepted notifications never delivered",
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
