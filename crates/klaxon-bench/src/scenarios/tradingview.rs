//! Scenario 9: the TradingView hook's answer time. TradingView gives up on a webhook after 3 s
//! and a trader expects the alert to be safe long before that; the goal is p99 < 50 ms with the
//! answer sent only after the commit. Baseline: the same open-loop schedule posting a plain
//! notification to `POST /api/v1/notifications` of the same service.

use bytes::Bytes;

use crate::Scale;
use crate::harness::{Klaxon, client, post_open_loop, sink, small_notification};
use crate::report::{Goal, Report, Row, int};

/// Alerts per second: a busy TradingView account (hundreds of alerts firing together on a
/// candle close), well above what one trader's alerts send on average.
const RATE: f64 = 200.0;
const SECRET: &str = "bench-secret-0123456789";

pub async fn run(report: &mut Report, scale: Scale) -> anyhow::Result<()> {
    let secs = scale.secs(10);
    let total = (RATE * secs) as usize;
    report.section(
        "9. TradingView hook answer time",
        &format!(
            "Open loop: {} × `POST /hooks/tradingview/{{secret}}` at {RATE} a second for {secs} s, \
             a JSON alert body (ticker, action, price, message) as TradingView sends it; latency \
             from the scheduled send time to the 202, which is answered after the commit. \
             Baseline: the same schedule posting a notification to `POST /api/v1/notifications` \
             of the same service.",
            int(total)
        ),
    );
    let http = client();
    let alert = Bytes::from_static(
        br#"{"ticker":"MNQ1!","action":"buy","price":23488.75,"position":"long","message":"break-and-enter BUY MNQ1! @ 23488.75"}"#,
    );
    let target = sink(false).await;
    let klaxon =
        Klaxon::start_with(&target, &format!("[tradingview]\nsecret = \"{SECRET}\"\n")).await?;
    let hook = klaxon.url(&format!("/hooks/tradingview/{SECRET}"));
    let api = klaxon.url("/api/v1/notifications");
    // Warm-up: connections open, statements prepared.
    post_open_loop(&http, &hook, alert.clone(), RATE, total / 10, 202).await;
    let base = post_open_loop(&http, &api, small_notification(), RATE, total, 202).await;
    let load = post_open_loop(&http, &hook, alert, RATE, total, 202).await;
    klaxon.stop().await;
    target.stop().await;

    let b = "POST /api/v1/notifications";
    report.row(Row {
        figure: "TradingView answer p50",
        value: load.lat.q(0.50),
        baseline: Some((b, base.lat.q(0.50))),
        goal: None,
    });
    report.row(Row {
        figure: "TradingView answer p99",
        value: load.lat.q(0.99),
        baseline: Some((b, base.lat.q(0.99))),
        goal: Some(Goal::Below(50_000.0)),
    });
    report.row(Row {
        figure: "TradingView answer max",
        value: load.lat.max(),
        baseline: Some((b, base.lat.max())),
        goal: None,
    });
    for f in [load.failures("tradingview"), base.failures("api")]
        .into_iter()
        .flatten()
    {
        report.note(f);
    }
    Ok(())
}
