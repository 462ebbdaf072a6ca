//! Scenarios 2–4, the HTTP intake: notifications accepted (202, committed) per second one at a
//! time and in batches, and the submit latency at a fixed 1,000 requests per second. Deliveries
//! to the sink run at the same time, as in the real service. The HTTP baselines are the same
//! requests, from the same client, to a receiver that only parses the JSON and answers 200.

use crate::Scale;
use klaxon_fakes::webhook::WebhookSink;

use crate::harness::{
    Db, Klaxon, Load, batch_of, channel_url, client, post_closed_loop, post_open_loop, sink,
    sink_post_url, small_notification,
};
use crate::report::{Fig, Goal, Report, Row, int};

/// Concurrent clients posting one notification each.
pub const SINGLE_WORKERS: usize = 32;
/// Concurrent clients posting batches.
pub const BATCH_WORKERS: usize = 8;
/// Notifications in one batch.
pub const BATCH_SIZE: usize = 100;
/// The fixed rate of the latency run, requests per second.
const FIXED_RATE: f64 = 1_000.0;

/// Scenario 2: `POST /api/v1/notifications`, 32 clients as fast as they are answered.
pub async fn single(report: &mut Report, scale: Scale) -> anyhow::Result<()> {
    let n = scale.n(20_000);
    report.section(
        "2. HTTP accepted/s, one notification a request",
        &format!(
            "{} × `POST /api/v1/notifications` (~150-byte JSON) from {SINGLE_WORKERS} concurrent \
             clients sharing one keep-alive `reqwest::Client`; every 202 is after the commit. \
             Baseline: the same requests to a receiver that parses the JSON and answers 200; a \
             tenth as many requests first warm up each side.",
            int(n)
        ),
    );
    let http = client();
    let body = small_notification();

    let floor_sink = sink(false).await;
    let floor_url = sink_post_url(&floor_sink);
    post_closed_loop(&http, &floor_url, body.clone(), n / 10, SINGLE_WORKERS, 200).await;
    let floor = post_closed_loop(&http, &floor_url, body.clone(), n, SINGLE_WORKERS, 200).await;
    floor_sink.stop().await;

    let target = sink(false).await;
    let (load, delivered_meanwhile) = single_intake(&http, Db::sqlite()?, &target, n).await?;
    target.stop().await;

    report.row(Row {
        figure: "accepted/s, single",
        value: Fig::rate(load.rate(), "req/s"),
        baseline: Some(("no-op JSON receiver", Fig::rate(floor.rate(), "req/s"))),
        goal: None,
    });
    report.row(Row {
        figure: "latency p50, single",
        value: load.lat.q(0.50),
        baseline: Some(("no-op JSON receiver", floor.lat.q(0.50))),
        goal: None,
    });
    report.row(Row {
        figure: "latency p99, single",
        value: load.lat.q(0.99),
        baseline: Some(("no-op JSON receiver", floor.lat.q(0.99))),
        goal: None,
    });
    report.note(format!(
        "{} of the {} notifications posted (warm-up included) had reached the sink as webhooks \
         by the end of the run: deliveries share the CPU with intake.",
        int(delivered_meanwhile),
        int(n + n / 10)
    ));
    for f in [load.failures("klaxon"), floor.failures("baseline")]
        .into_iter()
        .flatten()
    {
        report.note(f);
    }
    Ok(())
}

/// Scenario 3: `POST /api/v1/notifications/batch` with 100 notifications each, 8 clients.
/// `store_floor` is `Store::insert` of 100 a transaction, measured in scenario 1.
pub async fn batch(
    report: &mut Report,
    scale: Scale,
    store_floor: Option<f64>,
) -> anyhow::Result<()> {
    let batches = scale.n(500);
    report.section(
        "3. HTTP accepted/s, batches of 100",
        &format!(
            "{} × `POST /api/v1/notifications/batch` of {BATCH_SIZE} notifications from \
             {BATCH_WORKERS} concurrent clients. Baseline: `Store::insert` of 100 a transaction \
             (scenario 1), the storage ceiling for the same rows without HTTP, routing or \
             delivery.",
            int(batches)
        ),
    );
    let http = client();
    let target = sink(false).await;
    let load = batch_intake(&http, Db::sqlite()?, &target, batches).await?;
    target.stop().await;

    let per_s = load.rate() * BATCH_SIZE as f64;
    report.row(Row {
        figure: "accepted/s, batches of 100",
        value: Fig::rate(per_s, "notifications/s"),
        baseline: store_floor.map(|f| {
            (
                "store.insert direct, 100/txn",
                Fig::rate(f, "notifications/s"),
            )
        }),
        goal: Some(Goal::AtLeast(40_000.0)),
    });
    report.row(Row {
        figure: "batch latency p99",
        value: load.lat.q(0.99),
        baseline: None,
        goal: None,
    });
    if let Some(f) = load.failures("klaxon") {
        report.note(f);
    }
    Ok(())
}

/// `n` single notifications from `SINGLE_WORKERS` clients to the service on `db`, after a tenth
/// as many to warm up (connections opened, statements prepared); with the number of webhooks
/// `target` had received when the load ended.
pub async fn single_intake(
    http: &reqwest::Client,
    db: Db,
    target: &WebhookSink,
    n: usize,
) -> anyhow::Result<(Load, usize)> {
    let body = small_notification();
    let klaxon = Klaxon::start_on(db, &channel_url(target), "").await?;
    let url = klaxon.url("/api/v1/notifications");
    post_closed_loop(http, &url, body.clone(), n / 10, SINGLE_WORKERS, 202).await;
    let load = post_closed_loop(http, &url, body, n, SINGLE_WORKERS, 202).await;
    let delivered = target.count();
    klaxon.stop().await;
    Ok((load, delivered))
}

/// `batches` batches of `BATCH_SIZE` from `BATCH_WORKERS` clients to the service on `db`, after
/// a tenth as many to warm up.
pub async fn batch_intake(
    http: &reqwest::Client,
    db: Db,
    target: &WebhookSink,
    batches: usize,
) -> anyhow::Result<Load> {
    let body = batch_of(BATCH_SIZE);
    let klaxon = Klaxon::start_on(db, &channel_url(target), "").await?;
    let url = klaxon.url("/api/v1/notifications/batch");
    post_closed_loop(http, &url, body.clone(), batches / 10, BATCH_WORKERS, 202).await;
    let load = post_closed_loop(http, &url, body, batches, BATCH_WORKERS, 202).await;
    klaxon.stop().await;
    Ok(load)
}

/// Scenario 4: 1,000 requests a second, open loop; latency from the scheduled send time.
pub async fn fixed_rate(report: &mut Report, scale: Scale) -> anyhow::Result<()> {
    let secs = scale.secs(10);
    let total = (FIXED_RATE * secs) as usize;
    report.section(
        "4. HTTP submit latency at 1,000 requests/s",
        &format!(
            "Open loop: a request every 1 ms for {secs} s ({} requests), each in its own \
             task (`MissedTickBehavior::Burst`), latency from its scheduled send time to the 202. \
             Baseline: the same schedule against the no-op JSON receiver.",
            int(total)
        ),
    );
    let http = client();
    let body = small_notification();

    let floor_sink = sink(false).await;
    let floor_url = sink_post_url(&floor_sink);
    let floor = post_open_loop(&http, &floor_url, body.clone(), FIXED_RATE, total, 200).await;
    floor_sink.stop().await;

    let target = sink(false).await;
    let klaxon = Klaxon::start(&target).await?;
    let url = klaxon.url("/api/v1/notifications");
    let load = post_open_loop(&http, &url, body, FIXED_RATE, total, 202).await;
    klaxon.stop().await;
    target.stop().await;

    let base = "no-op JSON receiver";
    report.row(Row {
        figure: "submit p50 @ 1k/s",
        value: load.lat.q(0.50),
        baseline: Some((base, floor.lat.q(0.50))),
        goal: None,
    });
    report.row(Row {
        figure: "submit p99 @ 1k/s",
        value: load.lat.q(0.99),
        baseline: Some((base, floor.lat.q(0.99))),
        goal: Some(Goal::Below(2_000.0)),
    });
    report.row(Row {
        figure: "submit max @ 1k/s",
        value: load.lat.max(),
        baseline: Some((base, floor.lat.max())),
        goal: None,
    });
    for f in [load.failures("klaxon"), floor.failures("baseline")]
        .into_iter()
        .flatten()
    {
        report.note(f);
    }
    Ok(())
}
