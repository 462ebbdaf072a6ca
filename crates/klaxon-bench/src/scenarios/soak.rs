//! Scenario 14, soak (on demand: `--only soak`, never part of a default run, not in CI): the
//! release `klaxon serve` binary, on a fresh SQLite store, takes a steady mixed load — single
//! notifications and batches of ten — for `--soak-secs` (30 minutes by default) and delivers
//! every one to the bench's webhook sink, while its resident memory (`VmRSS` from
//! `/proc/PID/status`, with its anonymous and file-backed parts) is sampled every minute, or
//! every thirtieth of a shorter run.
//!
//! The question is whether memory grows with the work done rather than settling: the report
//! gives every sample, the least-squares slope (MB/h) of the samples after the first window
//! (the first window is when SQLite's page caches fill and the allocator finds its working
//! set), and the mean of the last third of those samples against the first third's. Verdict:
//! **no growth trend** when the slope is under 1 MB/h, or the last third's mean is within 10 %
//! of the first third's (a bounded cache still filling can slope up over a short run but
//! flattens out; a leak keeps the ratio climbing with the run's length).
//!
//! Nothing may be lost: after the load stops the scenario waits for the sink to have received
//! a webhook for every accepted notification (distinct `webhook-id`s), then checks `/status`:
//! every delivery `delivered`, none waiting, dead or suppressed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::process::{Memory, Proc};
use crate::Scale;
use crate::harness::{channel_url, client, post_json, sink};
use crate::report::{Fig, Goal, Lat, Report, Row, int};

/// Notifications offered per second.
const RATE: u64 = 200;
/// Notifications in one batch request.
const BATCH: u64 = 10;
/// Of every `CYCLE` requests, the last is a batch of `BATCH` and the rest single notifications:
/// 100 single requests and 10 batches of 10 a second make `RATE`.
const CYCLE: u64 = 11;
/// Requests per second: each cycle of `CYCLE` requests carries `CYCLE - 1 + BATCH`
/// notifications.
const REQUESTS_PER_S: u64 = RATE / (CYCLE - 1 + BATCH) * CYCLE;
/// Samples across a run shorter than 30 minutes (one a minute for longer ones).
const SAMPLES: u32 = 30;
/// The longest interval between samples.
const SAMPLE_MAX: Duration = Duration::from_secs(60);
/// Longest wait for the last webhook after the load stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Slope under which memory has no growth trend, MB per hour.
const SLOPE_MAX: f64 = 1.0;
/// Last third's mean over the first third's under which memory has no growth trend.
const RATIO_MAX: f64 = 1.10;

/// One sample: seconds since the load started, the memory read then, notifications accepted
/// by then. The verdict is on `mem.rss`; its anonymous and file-backed parts tell the heap from
/// the binary's code pages, and the open descriptors the connections the client keeps.
struct Sample {
    at: f64,
    mem: Memory,
    accepted: u64,
}

pub async fn run(report: &mut Report, scale: Scale, soak_secs: u32) -> anyhow::Result<()> {
    let secs = scale.secs(soak_secs).max(30.0);
    let duration = Duration::from_secs_f64(secs);
    let every = (duration / SAMPLES).min(SAMPLE_MAX);
    report.section(
        "14. Soak: memory under a steady load",
        &format!(
            "On demand, not in CI (`--only soak`, `--soak-secs N`; default 1,800). The release \
             `klaxon serve` binary (configured by environment as in section 7, its only channel \
             a `json://` webhook to the bench's sink) on a fresh SQLite store takes {RATE} \
             notifications/s for {} — each second 100 `POST /api/v1/notifications` (every \
             fifth with an idempotency key) and 10 `POST /api/v1/notifications/batch` of {BATCH}, \
             open loop, every notification different — and delivers each to the sink. `VmRSS` \
             is read from `/proc/PID/status` before the load and every {} s during it. Slope: \
             least squares over the samples after the first window; thirds: the means of the \
             first and last third of those samples. Verdict: no growth trend when the slope is \
             under {SLOPE_MAX} MB/h or the last third's mean is at most {RATIO_MAX}× the first \
             third's. After the load, every accepted notification must reach the sink and \
             `/status` must count every delivery `delivered`.",
            human(secs),
            every.as_secs_f64().round()
        ),
    );
    let bin = std::env::current_exe()?.with_file_name("klaxon");
    if !bin.exists() {
        report.note("skipped: build with cargo build --release");
        return Ok(());
    }
    let http = client();
    let target = sink(false).await;
    let dir = tempfile::tempdir()?;
    let store = format!("sqlite://{}", dir.path().join("klaxon.db").display());
    let mut k = Proc::serve(&bin, dir.path(), "soak", &[], &store, &channel_url(&target))?;
    k.wait_http(&http, "/ready").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_memory = k.memory()?;

    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // Latency of each 202, per third of the run: does answering slow down as the store grows?
    let lat: Arc<Mutex<[Lat; 3]>> =
        Arc::new(Mutex::new([Lat::micros(), Lat::micros(), Lat::micros()]));
    let single = Arc::<str>::from(k.url("/api/v1/notifications"));
    let batch = Arc::<str>::from(k.url("/api/v1/notifications/batch"));

    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / REQUESTS_PER_S as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next_sample = start + every;
    let mut samples = vec![Sample {
        at: 0.0,
        mem: idle_memory,
        accepted: 0,
    }];
    let mut tasks = JoinSet::new();
    let mut seq: u64 = 0;
    let mut req: u64 = 0;
    eprintln!(
        "   soak: {} at {RATE}/s, RSS every {} s",
        human(secs),
        every.as_secs()
    );
    while start.elapsed() < duration {
        let due = tick.tick().await.into_std();
        if Instant::now() >= next_sample {
            let s = Sample {
                at: start.elapsed().as_secs_f64(),
                mem: k.memory()?,
                accepted: accepted.load(Ordering::Relaxed),
            };
            eprintln!(
                "   soak: {:>6.0} s  RSS {:>6.1} MB (anon {:.1}, file {:.1})  fds {}  accepted {}",
                s.at,
                s.mem.rss as f64 / 1024.0,
                s.mem.anon as f64 / 1024.0,
                s.mem.file as f64 / 1024.0,
                s.mem.fds,
                int(s.accepted as usize)
            );
            samples.push(s);
            next_sample += every;
        }
        let (url, body, n) = if req % CYCLE == CYCLE - 1 {
            let items: Vec<Value> = (0..BATCH).map(|i| notification(seq + i)).collect();
            (batch.clone(), json!(items), BATCH)
        } else {
            (single.clone(), notification(seq), 1)
        };
        seq += n;
        req += 1;
        let third = ((due - start).as_secs_f64() / secs * 3.0).min(2.0) as usize;
        let (http, accepted, failed, lat) =
            (http.clone(), accepted.clone(), failed.clone(), lat.clone());
        let body = Bytes::from(serde_json::to_vec(&body).expect("serialises"));
        tasks.spawn(async move {
            match post_json(&http, &url, body).await {
                Ok((202, _)) => {
                    let took = due.elapsed();
                    accepted.fetch_add(n, Ordering::Relaxed);
                    lat.lock().expect("not poisoned")[third].record(took);
                }
                _ => {
                    failed.fetch_add(n, Ordering::Relaxed);
                }
            }
        });
        // Finished requests are reaped as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    // The last sample: the end of the load (the loop may have stopped just short of it).
    if samples.len() <= SAMPLES as usize {
        samples.push(Sample {
            at: elapsed.as_secs_f64(),
            mem: k.memory()?,
            accepted: accepted.load(Ordering::Relaxed),
        });
    }
    let accepted = accepted.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);

    // Nothing lost: a webhook for every accepted notification, then every delivery final.
    let drain = Instant::now();
    while (target.distinct_ids().len() as u64) < accepted {
        if drain.elapsed() > DRAIN_TIMEOUT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered = target.distinct_ids().len() as u64;
    let webhooks = target.count() as u64;
    let queue = queue(&http, &k.url("/status")).await?;
    let db_bytes = db_size(dir.path());
    k.stop().await;
    target.stop().await;

    let after: Vec<&Sample> = samples.iter().skip(1).collect();
    if after.len() < 3 {
        bail!("too few RSS samples ({}) for a trend", samples.len());
    }
    let slope = slope_mib_per_hour(&after);
    let third = after.len() / 3;
    let mean = |s: &[&Sample]| s.iter().map(|s| s.mem.rss as f64).sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&after[..third]), mean(&after[after.len() - third..]));
    let ratio = last / first;

    report.row(Row {
        figure: "soak accepted/s",
        value: Fig::rate(accepted as f64 / elapsed.as_secs_f64(), "notifications/s"),
        baseline: Some(("offered", Fig::rate(RATE as f64, "notifications/s"))),
        goal: None,
    });
    let lat = lat.lock().expect("not poisoned");
    report.row(Row {
        figure: "soak 202 p99, last third",
        value: lat[2].q(0.99),
        baseline: Some(("first third", lat[0].q(0.99))),
        goal: None,
    });
    report.row(Row {
        figure: "soak RSS, end of load",
        value: Fig::mib(samples.last().map_or(0, |s| s.mem.rss)),
        baseline: Some(("idle, before the load", Fig::mib(idle_memory.rss))),
        goal: None,
    });
    report.row(Row {
        figure: "soak RSS slope after the first window",
        value: Fig::mib_per_hour(slope),
        baseline: None,
        goal: None,
    });
    report.row(Row {
        figure: "soak RSS, last third ÷ first third",
        value: Fig::growth(ratio),
        baseline: None,
        goal: Some(Goal::AtMost(RATIO_MAX)),
    });
    let trend = if slope < SLOPE_MAX || ratio <= RATIO_MAX {
        "**no growth trend**"
    } else {
        "**memory grows** (slope and ratio both over their thresholds)"
    };
    report.note(format!(
        "Verdict: {trend} — slope {slope:.2} MB/h (threshold {SLOPE_MAX} MB/h), last third \
         {:.1} MB against first third {:.1} MB ({ratio:.3}×, threshold {RATIO_MAX}×).",
        last / 1024.0,
        first / 1024.0
    ));
    let waiting: i64 = ["pending", "retrying", "sending"]
        .iter()
        .filter_map(|s| queue.get(*s).and_then(Value::as_i64))
        .sum();
    let in_store = |s: &str| queue.get(s).and_then(Value::as_i64).unwrap_or(0);
    let complete = delivered == accepted
        && u64::try_from(in_store("delivered")).ok() == Some(accepted)
        && waiting == 0;
    report.note(format!(
        "{}Nothing lost: {} notifications accepted ({} refused or failed), {} delivered \
         (distinct webhook ids at the sink; {} webhooks in all, so {} repeats); `/status`: {} \
         delivered, {waiting} waiting, {} dead, {} suppressed. Store at the end: {:.0} MB \
         (database and WAL).",
        if complete { "" } else { "⚠ " },
        int(accepted as usize),
        int(failed as usize),
        int(delivered as usize),
        int(webhooks as usize),
        int(webhooks.saturating_sub(delivered) as usize),
        int(usize::try_from(in_store("delivered")).unwrap_or(0)),
        in_store("dead"),
        in_store("suppressed"),
        db_bytes as f64 / f64::from(1u32 << 20)
    ));
    report.line("");
    report.line(
        "| t (s) | RSS (MB) | of it anonymous | of it file-backed | open fds | accepted by then |",
    );
    report.line("|---:|---:|---:|---:|---:|---:|");
    for s in &samples {
        report.line(format!(
            "| {:.0} | {:.1} | {:.1} | {:.1} | {} | {} |",
            s.at,
            s.mem.rss as f64 / 1024.0,
            s.mem.anon as f64 / 1024.0,
            s.mem.file as f64 / 1024.0,
            s.mem.fds,
            int(s.accepted as usize)
        ));
    }
    if !complete {
        bail!("not every accepted notification was delivered");
    }
    Ok(())
}

/// Notification `seq`: different words and data each time, an idempotency key on every fifth.
fn notification(seq: u64) -> Value {
    let severity = ["info", "info", "warning", "info", "error"][(seq % 5) as usize];
    let mut n = json!({
        "title": format!("BUY MNQ #{seq}"),
        "message": format!("filled {} MNQ @ {:.2} (strategy break-and-enter, order {seq})",
            1 + seq % 4, 23_000.0 + (seq % 1_000) as f64 * 0.25),
        "severity": severity,
        "data": {"symbol": "MNQ", "qty": 1 + seq % 4, "seq": seq},
    });
    if seq.is_multiple_of(5) {
        n["idempotency_key"] = json!(format!("soak-{seq}"));
    }
    n
}

/// Least-squares slope of RSS against time, in MB per hour.
fn slope_mib_per_hour(samples: &[&Sample]) -> f64 {
    let n = samples.len() as f64;
    let mx = samples.iter().map(|s| s.at).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.mem.rss as f64).sum::<f64>() / n;
    let sxy: f64 = samples
        .iter()
        .map(|s| (s.at - mx) * (s.mem.rss as f64 - my))
        .sum();
    let sxx: f64 = samples.iter().map(|s| (s.at - mx).powi(2)).sum();
    if sxx == 0.0 {
        return 0.0;
    }
    // KiB per second → MiB per hour.
    sxy / sxx * 3_600.0 / 1_024.0
}

/// The queue counts of `/status`.
async fn queue(
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let v: Value = http
        .get(url)
        .send()
        .await
        .context("GET /status")?
        .json()
        .await
        .context("/status is not JSON")?;
    v.get("queue")
        .and_then(Value::as_object)
        .cloned()
        .context("/status has no queue")
}

/// Bytes of the database and its WAL.
fn db_size(dir: &std::path::Path) -> u64 {
    ["klaxon.db", "klaxon.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// `1800.0` → `30 min`, `45.0` → `45 s`.
fn human(secs: f64) -> String {
    if secs >= 120.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{secs:.0} s")
    }
}
