//! Scenario 5, accept → delivered: from the moment a client posts a notification to the moment
//! the webhook reaches the sink, at 100/s, at 500/s and as fast as 32 clients can post — one
//! notification a request, then batches of 100 (so that the figure is the delivery pipeline's
//! and not the per-request cost of HTTP intake). Each webhook is matched to its notification by
//! `body.id` (the id the 202 returned).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use klaxon_core::model::{Notification, new_id};
use serde_json::Value;

use crate::Scale;
use crate::harness::{
    Klaxon, batch_of, client, closed_loop, open_loop, post_closed_loop, post_json, sink,
    sink_post_url, small_notification,
};
use crate::report::{Fig, Goal, Lat, Report, Row, int};
use crate::scenarios::http::{BATCH_SIZE, BATCH_WORKERS};

/// Clients posting in the "max" run.
const MAX_WORKERS: usize = 32;
/// Sends in flight to one channel: three quarters of `delivery.concurrency` (64) — the most the
/// engine uses, so the baseline sends to the sink with the same parallelism.
const CHANNEL_SENDS: usize = 48;
/// How long to wait for the last webhook after the last 202.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// How notifications are offered.
#[derive(Clone, Copy)]
pub(crate) enum Offer {
    /// Open loop: this many per second, this many in all.
    Rate(f64, usize),
    /// Closed loop: this many, from `MAX_WORKERS` clients.
    Max(usize),
    /// Closed loop: this many in batches of `BATCH_SIZE`, from `BATCH_WORKERS` clients.
    Batches(usize),
}

/// One run's outcome.
pub(crate) struct Phase {
    pub accepted: u64,
    /// Notifications whose webhook arrived (first arrival counts).
    pub delivered: u64,
    /// Client send (just before the POST) → 202 read.
    accept: Lat,
    /// Client send (just before the POST) → webhook at the sink.
    delivery: Lat,
    /// Delivered notifications per second, first POST to last webhook.
    pub delivered_per_s: f64,
}

pub async fn run(report: &mut Report, scale: Scale) -> anyhow::Result<()> {
    let secs = scale.secs(10);
    let n_max = scale.n(10_000);
    report.section(
        "5. Accept → delivered",
        &format!(
            "A fresh service per run; each notification's send time is taken just before its \
             POST, its delivery time is when the sink accepted the webhook, matched by `body.id`. \
             Fixed rates run {secs} s (open loop); *max* is {} notifications from \
             {MAX_WORKERS} clients, one a request; *max, batches* the same count in batches of \
             {BATCH_SIZE} from {BATCH_WORKERS} clients (each notification's send time is its \
             batch's). Delivered/s = notifications delivered ÷ (last webhook − first \
             POST); its baseline is the offered rate, or for *max* the same number of \
             webhook-sized POSTs straight to a sink, {CHANNEL_SENDS} in flight (the engine's \
             per-channel limit). Latency baseline: the same requests' accept latency, from the \
             same send time to the 202.",
            int(n_max)
        ),
    );
    for rate in [100.0, 500.0] {
        let p = phase(Offer::Rate(rate, (rate * secs) as usize)).await?;
        let name = format!("{rate:.0}/s");
        let offered = ("offered", Fig::rate(rate, "notifications/s"));
        let p99_goal = (rate == 500.0).then_some(Goal::Below(25_000.0));
        rows(report, &name, &p, offered, None, p99_goal);
    }
    let floor = sink_floor(n_max).await;
    let p = phase(Offer::Max(n_max)).await?;
    let direct = ("direct POSTs to a sink", Fig::rate(floor, "POSTs/s"));
    rows(
        report,
        "max",
        &p,
        direct,
        Some(Goal::AtLeast(5_000.0)),
        None,
    );
    let p = phase(Offer::Batches(n_max)).await?;
    rows(
        report,
        "max, batches",
        &p,
        direct,
        Some(Goal::AtLeast(5_000.0)),
        None,
    );
    Ok(())
}

/// The report rows of one run.
fn rows(
    report: &mut Report,
    name: &str,
    p: &Phase,
    rate_baseline: (&str, Fig),
    rate_goal: Option<Goal>,
    p99_goal: Option<Goal>,
) {
    let accept = "202 latency, same requests";
    report.row(Row {
        figure: &format!("delivered/s, {name}"),
        value: Fig::rate(p.delivered_per_s, "notifications/s"),
        baseline: Some(rate_baseline),
        goal: rate_goal,
    });
    for (q, label, goal) in [
        (0.50, "p50", None),
        (0.95, "p95", None),
        (0.99, "p99", p99_goal),
    ] {
        report.row(Row {
            figure: &format!("accept→delivered {label}, {name}"),
            value: p.delivery.q(q),
            baseline: Some((accept, p.accept.q(q))),
            goal,
        });
    }
    if p.delivered < p.accepted {
        report.note(format!(
            "⚠ {name}: only {} of {} accepted notifications were delivered within {} s.",
            p.delivered,
            p.accepted,
            DRAIN_TIMEOUT.as_secs()
        ));
    }
}

/// Runs one offer against a fresh service and matches every webhook to its send time.
pub(crate) async fn phase(offer: Offer) -> anyhow::Result<Phase> {
    let target = sink(true).await;
    let klaxon = Klaxon::start(&target).await?;
    let http = client();
    let (path, body) = match offer {
        Offer::Batches(_) => ("/api/v1/notifications/batch", batch_of(BATCH_SIZE)),
        _ => ("/api/v1/notifications", small_notification()),
    };
    let url: Arc<str> = klaxon.url(path).into();
    // (notification id, client send time, time to the 202), filled as the 202s come back.
    let sent: Arc<Mutex<Vec<(String, Instant, Duration)>>> = Arc::default();
    let op = {
        let sent = sent.clone();
        move |_| {
            let (http, url, body, sent) = (http.clone(), url.clone(), body.clone(), sent.clone());
            async move {
                let at = Instant::now();
                let Ok((202, answer)) = post_json(&http, &url, body).await else {
                    return false;
                };
                let took = at.elapsed();
                let Ok(answer) = serde_json::from_slice::<Value>(&answer) else {
                    return false;
                };
                // One notification's answer, or a batch's `results`.
                let ids: Vec<String> = match answer["results"].as_array() {
                    Some(results) => results
                        .iter()
                        .filter_map(|r| r["id"].as_str().map(str::to_owned))
                        .collect(),
                    None => answer["id"]
                        .as_str()
                        .map(str::to_owned)
                        .into_iter()
                        .collect(),
                };
                if ids.is_empty() {
                    return false;
                }
                let mut sent = sent.lock().expect("not poisoned");
                sent.extend(ids.into_iter().map(|id| (id, at, took)));
                true
            }
        }
    };
    let first_post = Instant::now();
    match offer {
        Offer::Rate(rate, total) => open_loop(rate, total, op).await,
        Offer::Max(n) => closed_loop(n, MAX_WORKERS, op).await,
        Offer::Batches(n) => closed_loop(n.div_ceil(BATCH_SIZE), BATCH_WORKERS, op).await,
    };
    let accepted = sent.lock().expect("not poisoned").len();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while target.count() < accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let received = target.received();
    klaxon.stop().await;
    target.stop().await;

    let sent = std::mem::take(&mut *sent.lock().expect("not poisoned"));
    let mut accept = Lat::micros();
    for (_, _, took) in &sent {
        accept.record(*took);
    }
    let sent: HashMap<String, Instant> = sent.into_iter().map(|(id, at, _)| (id, at)).collect();
    // A retried delivery arrives twice; the first arrival is when it was delivered.
    let mut arrived: HashMap<&str, Instant> = HashMap::new();
    for r in &received {
        if let Some(id) = r.body["id"].as_str() {
            let first = arrived.entry(id).or_insert(r.at);
            *first = (*first).min(r.at);
        }
    }
    let mut delivery = Lat::micros();
    let mut last = first_post;
    for (id, at) in &arrived {
        if let Some(sent_at) = sent.get(*id) {
            delivery.record(at.saturating_duration_since(*sent_at));
            last = last.max(*at);
        }
    }
    let delivered = delivery.count();
    Ok(Phase {
        accepted: accepted as u64,
        delivered,
        accept,
        delivery,
        delivered_per_s: delivered as f64 / (last - first_post).as_secs_f64().max(1e-9),
    })
}

/// POSTs per second one client reaches against a sink with webhook-sized bodies and the
/// engine's per-channel parallelism: the most any sender could deliver to it.
async fn sink_floor(n: usize) -> f64 {
    let floor = sink(false).await;
    let n0 = Notification::new("filled 2 MNQ @ 23,488.75 (strategy break-and-enter)")
        .title("BUY MNQ")
        .data("symbol", "MNQ")
        .data("qty", 2)
        .data("price", 23488.75);
    let body = klaxon_core::render::webhook::body(&n0, new_id(), 1);
    let body = Bytes::from(serde_json::to_vec(&body).expect("serialises"));
    let http = client();
    let url = sink_post_url(&floor);
    post_closed_loop(&http, &url, body.clone(), n / 10, CHANNEL_SENDS, 200).await;
    let load = post_closed_loop(&http, &url, body, n, CHANNEL_SENDS, 200).await;
    floor.stop().await;
    load.rate()
}
