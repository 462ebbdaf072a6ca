//! Scenario 6, the embedded library: what one `Notifier::send` costs the calling bot, against
//! the floor of any bounded hand-off — `tokio::sync::mpsc::Sender::try_send` of the entry
//! `send` enqueues. Each call is timed on its own with `Instant` (whose own ~20–40 ns are in
//! both figures).

use std::time::Instant;

use klaxon::{Notification, Notifier};
use klaxon_store::NewEntry;
use tokio::sync::mpsc;

use crate::Scale;
use crate::harness::{channel_url, config, fresh_db, sink};
use crate::report::{Goal, Lat, Report, Row, int};
use crate::scenarios::store::entry;

/// Room for every send, so none meets a full queue.
const QUEUE_CAPACITY: usize = 200_000;

pub async fn run(report: &mut Report, scale: Scale) -> anyhow::Result<()> {
    let n = scale.n(100_000);
    report.section(
        "6. In-process `Notifier::send`",
        &format!(
            "{} calls of `Notifier::send` (routing, one delivery planned, `try_send` on the \
             bounded queue) on a running notifier — its pump commits and its engine delivers to \
             the sink meanwhile — against as many `mpsc::Sender::try_send` of a prebuilt \
             `NewEntry` (the same struct `send` enqueues) to a channel drained by another task. \
             `delivery.queue_capacity = {QUEUE_CAPACITY}`; notifications are built outside the \
             timed call.",
            int(n)
        ),
    );
    let floor = try_send_floor(n).await;

    let target = sink(false).await;
    let (_dir, db) = fresh_db()?;
    let cfg = config(
        &db,
        &channel_url(&target),
        &format!("[delivery]\nqueue_capacity = {QUEUE_CAPACITY}"),
    )?;
    let notifier = Notifier::start(cfg).await?;
    let mut lat = Lat::nanos();
    let mut refused = 0;
    for i in 0..n {
        let note = Notification::new("filled 2 MNQ @ 23,488.75")
            .title("BUY MNQ")
            .data("seq", i);
        let t = Instant::now();
        let r = notifier.send(note);
        let dt = t.elapsed();
        match r {
            Ok(_) => lat.record(dt),
            Err(_) => refused += 1,
        }
    }
    notifier.shutdown().await;
    target.stop().await;

    let base = "mpsc try_send";
    report.row(Row {
        figure: "Notifier::send p50",
        value: lat.q(0.50),
        baseline: Some((base, floor.q(0.50))),
        goal: None,
    });
    report.row(Row {
        figure: "Notifier::send p99",
        value: lat.q(0.99),
        baseline: Some((base, floor.q(0.99))),
        goal: Some(Goal::Below(10_000.0)),
    });
    report.row(Row {
        figure: "Notifier::send max",
        value: lat.max(),
        baseline: Some((base, floor.max())),
        goal: None,
    });
    if refused > 0 {
        report.note(format!(
            "⚠ {refused} sends were refused (queue full or invalid)."
        ));
    }
    Ok(())
}

/// Per-call latency of `try_send` of a `NewEntry` on a bounded channel being drained.
async fn try_send_floor(n: usize) -> Lat {
    let (tx, mut rx) = mpsc::channel::<NewEntry>(QUEUE_CAPACITY);
    let drain = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(512);
        while rx.recv_many(&mut batch, 512).await > 0 {
            batch.clear();
        }
    });
    let mut lat = Lat::nanos();
    for _ in 0..n {
        let e = entry("filled 2 MNQ @ 23,488.75");
        let t = Instant::now();
        let r = tx.try_send(e);
        let dt = t.elapsed();
        if r.is_ok() {
            lat.record(dt);
        }
    }
    drop(tx);
    let _ = drain.await;
    lat
}
