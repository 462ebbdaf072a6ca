//! Scenario 7, the `klaxon` process: time from spawn to `/ready` answering 200, and resident
//! memory (VmRSS from `/proc`), first on an empty store, then restarted on a store holding 100k
//! pending deliveries. The in-process scenarios cannot show this: there the service shares the
//! bench's process. The channel points at a closed port, so deliveries stay pending (the
//! circuit opens after a few refused connections). Baseline: a minimal tokio process — this
//! binary in `--idle-child` mode — answering HTTP.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::Scale;
use crate::harness::{batch_of, client, free_port, post_closed_loop};
use crate::report::{Fig, Goal, Report, Row, int};

/// Notifications in one prefill request (the API's maximum).
const PREFILL_BATCH: usize = 1_000;
/// Concurrent prefill requests.
const PREFILL_WORKERS: usize = 4;
/// Let the process settle (engine's first claims, allocator) before reading its RSS.
const SETTLE: Duration = Duration::from_secs(2);
/// Longest wait for a process to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(report: &mut Report, scale: Scale) -> anyhow::Result<()> {
    let n_pending = scale.n(100_000).div_ceil(PREFILL_BATCH) * PREFILL_BATCH;
    report.section(
        "7. The `klaxon` process: start-up and memory",
        &format!(
            "The release `klaxon serve` binary, configured by environment only \
             (`KLAXON_STORE_URL`, `KLAXON_LISTEN`, `WEBHOOK_URL` to a closed port, \
             `RUST_LOG=warn`). Ready = spawn → `GET /ready` answers 200 (polled every 2 ms). RSS = \
             `VmRSS` {} s after ready. Then {} notifications are posted in batches of \
             {}, the process is stopped (SIGTERM) and started again on the same \
             store. Baseline: a minimal tokio process (`klaxon-bench --idle-child`) answering \
             HTTP.",
            SETTLE.as_secs(),
            int(n_pending),
            int(PREFILL_BATCH)
        ),
    );
    let bin = std::env::current_exe()?.with_file_name("klaxon");
    if !bin.exists() {
        report.note("skipped: build with cargo build --release");
        return Ok(());
    }
    let http = client();

    let dir = tempfile::tempdir()?;
    let mut idle = Proc::idle_child(dir.path())?;
    let idle_ready = idle.wait_http(&http, "/").await?;
    tokio::time::sleep(SETTLE).await;
    let idle_mem = idle.memory()?;
    idle.stop().await;

    let dead_port = free_port()?;
    let mut k = Proc::klaxon(&bin, dir.path(), dead_port)?;
    let ready_empty = k.wait_http(&http, "/ready").await?;
    tokio::time::sleep(SETTLE).await;
    let empty = k.memory()?;
    let rss_empty = empty.rss;

    let load = post_closed_loop(
        &http,
        &k.url("/api/v1/notifications/batch"),
        batch_of(PREFILL_BATCH),
        n_pending / PREFILL_BATCH,
        PREFILL_WORKERS,
        202,
    )
    .await;
    if load.failed > 0 {
        bail!("{} prefill batches were refused", load.failed);
    }
    let rss_after_prefill = k.rss_kib()?;
    k.stop().await;

    let mut k = Proc::klaxon(&bin, dir.path(), dead_port)?;
    let ready_full = k.wait_http(&http, "/ready").await?;
    tokio::time::sleep(SETTLE).await;
    let rss_full = k.rss_kib()?;
    let waiting = waiting(&http, &k.url("/status")).await;
    k.stop().await;

    let idle_base = "minimal tokio HTTP process";
    report.row(Row {
        figure: "ready, empty store",
        value: Fig::millis(ready_empty),
        baseline: Some((idle_base, Fig::millis(idle_ready))),
        goal: Some(Goal::Below(1_000.0)),
    });
    report.row(Row {
        figure: "RSS idle, empty store",
        value: Fig::mib(rss_empty),
        baseline: Some((idle_base, Fig::mib(idle_mem.rss))),
        goal: Some(Goal::Below(20.0)),
    });
    // The goal is on all of RSS; the split says how much is the process's own memory and how
    // much the binary's code mapped from the page cache, which the kernel decides (BENCHMARKS.md,
    // *Latest full run*).
    report.row(Row {
        figure: "of it anonymous (heap, stacks)",
        value: Fig::mib(empty.anon),
        baseline: Some((idle_base, Fig::mib(idle_mem.anon))),
        goal: None,
    });
    report.row(Row {
        figure: "of it file-backed (the binary's code)",
        value: Fig::mib(empty.file),
        baseline: Some((idle_base, Fig::mib(idle_mem.file))),
        goal: None,
    });
    report.row(Row {
        figure: &format!("RSS right after accepting {}", int(n_pending)),
        value: Fig::mib(rss_after_prefill),
        baseline: Some(("idle, empty store", Fig::mib(rss_empty))),
        goal: None,
    });
    report.row(Row {
        figure: &format!("ready, {} pending", int(n_pending)),
        value: Fig::millis(ready_full),
        baseline: Some(("empty store", Fig::millis(ready_empty))),
        goal: Some(Goal::Below(1_000.0)),
    });
    report.row(Row {
        figure: &format!("RSS, {} pending", int(n_pending)),
        value: Fig::mib(rss_full),
        baseline: Some(("idle, empty store", Fig::mib(rss_empty))),
        goal: Some(Goal::Below(150.0)),
    });
    report.note(format!(
        "Binary: `{}`. After the restart `/status` counted {} deliveries waiting (pending, \
         retrying or sending). MB = 2^20 bytes.",
        bin.display(),
        waiting.map_or("?".into(), |w| int(usize::try_from(w).unwrap_or(0)))
    ));
    Ok(())
}

/// Resident memory, KiB. `anon` is the heap and stacks (what the allocator holds); `file` is
/// mapped files, here mostly the binary's own code, paged in as code paths are first used.
#[derive(Clone, Copy)]
pub(crate) struct Memory {
    pub(crate) rss: u64,
    pub(crate) anon: u64,
    pub(crate) file: u64,
    /// Open file descriptors: mostly connections, each with its buffers.
    pub(crate) fds: usize,
}

/// A spawned process serving HTTP on a loopback port.
pub(crate) struct Proc {
    child: Child,
    port: u16,
    spawned: Instant,
    /// Where its stderr goes, quoted when it fails to start.
    log: PathBuf,
}

impl Proc {
    /// `klaxon serve` on the store in `dir`, its only channel a webhook to `dead_port`.
    fn klaxon(bin: &Path, dir: &Path, dead_port: u16) -> anyhow::Result<Proc> {
        let store = format!("sqlite://{}", dir.join("klaxon.db").display());
        let hook = format!("json://127.0.0.1:{dead_port}/");
        Proc::serve(bin, dir, "klaxon", &[], &store, &hook)
    }

    /// `klaxon serve ARGS` on `store`, its only channel a webhook to `hook`, logging to
    /// `dir/NAME.log`.
    pub(crate) fn serve(
        bin: &Path,
        dir: &Path,
        name: &str,
        args: &[&str],
        store: &str,
        hook: &str,
    ) -> anyhow::Result<Proc> {
        let port = free_port()?;
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .args(args)
            // Only what is set here: the bench's own environment must not add channels.
            .env_clear()
            .env("KLAXON_CONFIG", dir.join("absent.toml"))
            .env("KLAXON_STORE_URL", store)
            .env("KLAXON_LISTEN", format!("127.0.0.1:{port}"))
            .env("WEBHOOK_URL", hook)
            .env("RUST_LOG", "warn");
        Proc::spawn(cmd, port, log)
    }

    /// This binary in `--idle-child` mode: the baseline process.
    fn idle_child(dir: &Path) -> anyhow::Result<Proc> {
        let port = free_port()?;
        let log = dir.join("idle-child.log");
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--idle-child").arg(port.to_string()).env_clear();
        Proc::spawn(cmd, port, log)
    }

    fn spawn(mut cmd: Command, port: u16, log: PathBuf) -> anyhow::Result<Proc> {
        let stderr = std::fs::File::create(&log).context("process log file")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        let spawned = Instant::now();
        let child = cmd.spawn().context("spawning the process")?;
        Ok(Proc {
            child,
            port,
            spawned,
            log,
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Polls `GET path` until it answers 200; the time since spawn.
    pub(crate) async fn wait_http(
        &mut self,
        http: &reqwest::Client,
        path: &str,
    ) -> anyhow::Result<Duration> {
        let url = self.url(path);
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().as_u16() == 200
            {
                return Ok(self.spawned.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the process exited ({status}): {}", self.log_tail());
            }
            if self.spawned.elapsed() > READY_TIMEOUT {
                bail!(
                    "no 200 from {url} within {} s: {}",
                    READY_TIMEOUT.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// `VmRSS` in KiB.
    pub(crate) fn rss_kib(&self) -> anyhow::Result<u64> {
        Ok(self.memory()?.rss)
    }

    /// Resident memory in KiB from `/proc/PID/status` (all of it, and its two parts), and the
    /// open file descriptors.
    pub(crate) fn memory(&self) -> anyhow::Result<Memory> {
        let pid = self.child.id().context("the process has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in /proc/PID/status"))
        };
        Ok(Memory {
            rss: field("VmRSS:")?,
            anon: field("RssAnon:")?,
            file: field("RssFile:")?,
            fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count(),
        })
    }

    /// SIGTERM, then SIGKILL if it has not exited after 20 s.
    pub(crate) async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

/// Deliveries not yet final, from `/status`.
async fn waiting(http: &reqwest::Client, url: &str) -> Option<i64> {
    let v: Value = http.get(url).send().await.ok()?.json().await.ok()?;
    let q = v.get("queue")?;
    Some(
        ["pending", "retrying", "sending"]
            .iter()
            .filter_map(|s| q.get(*s).and_then(Value::as_i64))
            .sum(),
    )
}

/// The `--idle-child` mode: answers every HTTP request on `port` with 200, forever.
pub async fn idle_child(port: u16) -> anyhow::Result<()> {
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (mut socket, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let mut pending = Vec::new();
            // Requests without bodies: one answer per blank line that ends a header block.
            while let Ok(n) = socket.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    pending.drain(..end + 4);
                    if socket.write_all(ANSWER).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}
