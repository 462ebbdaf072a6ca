//! Scenario 12, replicas: delivered/s of 1, 2 and 3 `klaxon serve --role worker` processes
//! draining one PostgreSQL queue into the webhook sink. Each run gets a fresh database (on the
//! server `KLAXON_TEST_DATABASE_URL` names), filled first through an `--role api` process so
//! the workers find the whole queue waiting; the clock runs from spawning the workers to the
//! sink's last webhook. Baseline: the one-worker figure of the same run.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use klaxon_store::testing::PgDb;

use super::process::Proc;
use crate::Scale;
use crate::harness::{batch_of, channel_url, client, post_closed_loop, sink};
use crate::report::{Fig, Report, Row, int};

/// Notifications in one prefill request (the API's maximum).
const PREFILL_BATCH: usize = 1_000;
/// Longest a run may take to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn run(report: &mut Report, scale: Scale) -> anyhow::Result<()> {
    let n = scale.n(20_000).div_ceil(PREFILL_BATCH) * PREFILL_BATCH;
    report.section(
        "12. Replicas on PostgreSQL",
        &format!(
            "{} notifications are committed through a `klaxon serve --role api` process, which \
             is then stopped; then 1, 2 or 3 release `klaxon serve --role worker` processes \
             (defaults: 64 sends in flight each, 10 s lease) drain the queue into one webhook \
             sink (`json://`). Delivered/s = notifications ÷ (workers spawned → last webhook). \
             A fresh database per run on the local PostgreSQL. On this 2-core machine the \
             workers, PostgreSQL and the sink share the same two cores, so the ratios say \
             whether replicas get in each other's way, not how far they scale on real hosts.",
            int(n)
        ),
    );
    let bin = std::env::current_exe()?.with_file_name("klaxon");
    if !bin.exists() {
        report.note("skipped: build with cargo build --release");
        return Ok(());
    }
    if std::env::var("KLAXON_TEST_DATABASE_URL").is_err() {
        report.note("skipped: set KLAXON_TEST_DATABASE_URL to a PostgreSQL server");
        return Ok(());
    }
    let sink = sink(false).await;
    let hook = channel_url(&sink);
    let http = client();
    let dir = tempfile::tempdir()?;
    let mut one = None;
    for workers in 1..=3usize {
        let db = PgDb::create()
            .await
            .context("KLAXON_TEST_DATABASE_URL is set but no database was created")?;
        let mut api = Proc::serve(&bin, dir.path(), "api", &["--role", "api"], &db.url, &hook)?;
        api.wait_http(&http, "/ready").await?;
        let url = api.url("/api/v1/notifications/batch");
        let load = post_closed_loop(
            &http,
            &url,
            batch_of(PREFILL_BATCH),
            n / PREFILL_BATCH,
            4,
            202,
        )
        .await;
        if let Some(f) = load.failures("prefill") {
            bail!(f);
        }
        api.stop().await;

        let before = sink.count();
        let start = Instant::now();
        let mut procs = Vec::new();
        for w in 0..workers {
            let name = format!("worker{w}");
            procs.push(Proc::serve(
                &bin,
                dir.path(),
                &name,
                &["--role", "worker"],
                &db.url,
                &hook,
            )?);
        }
        while sink.count() - before < n {
            if start.elapsed() > DRAIN_TIMEOUT {
                bail!(
                    "{} of {n} delivered after {} s",
                    sink.count() - before,
                    DRAIN_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        for p in &mut procs {
            p.stop().await;
        }
        let extra = sink.count() - before - n;
        let figure = format!("{workers} worker(s), delivered/s");
        report.row(Row {
            figure: &figure,
            value: Fig::rate(rate, "notifications/s"),
            baseline: one.map(|r| ("one worker", Fig::rate(r, "notifications/s"))),
            goal: None,
        });
        if extra > 0 {
            report.note(format!(
                "{extra} webhooks more than notifications (repeats)"
            ));
        }
        one.get_or_insert(rate);
    }
    Ok(())
}
