//! Scenario 13, templates: what wording a message through minijinja costs a send — the
//! built-in template for a `signal.generated` event and for a 100-item digest, rendered and
//! framed for Telegram HTML — against the floor of the same framing with no template (the
//! notification's own title and message escaped in Rust).

use std::time::Instant;

use klaxon_core::model::Notification;
use klaxon_core::render::telegram::{MAX_TEXT, ParseMode, render, render_content};
use klaxon_core::template::{Markup, Templates};
use serde_json::json;

use crate::Scale;
use crate::report::{Goal, Lat, Report, Row, int};

pub async fn run(report: &mut Report, scale: Scale) -> anyhow::Result<()> {
    let n = scale.n(20_000);
    report.section(
        "13. Templates: wording one message",
        &format!(
            "{} renders each, on one core, of a `signal.generated` event and of a 100-item \
             `klaxon.digest` through their built-in templates (compiled once, shared in an \
             `Arc`) and the Telegram HTML framing, against the same framing of the same \
             notification without a template. Each render is timed on its own.",
            int(n)
        ),
    );
    let templates = Templates::defaults();
    let signal = {
        let mut s = Notification::new("Strategy break-and-enter")
            .title("BUY MNQI @ 23,488.75")
            .event_type("signal.generated");
        s.data = json!({"strategy_name": "break-and-enter", "action": "BUY", "symbol": "MNQI",
            "price": 23488.75, "comment": "EXIT_50", "metadata": {}})
        .as_object()
        .cloned()
        .unwrap_or_default();
        s
    };
    let digest = {
        let items: Vec<_> = (0..100)
            .map(|i| json!({"id": i.to_string(), "time": "2025-09-04T13:32:00Z", "title": "BUY MNQI",
                "message": "m", "severity": "info", "event_type": "signal.generated",
                "symbol": "MNQI", "action": if i % 2 == 0 { "BUY" } else { "SELL" }, "price": 23488.75 + f64::from(i)}))
            .collect();
        let mut d = Notification::new("100 notifications").event_type("klaxon.digest");
        d.data =
            json!({"count": 100, "window_secs": 10, "group": {"symbol": "MNQI"}, "items": items})
                .as_object()
                .cloned()
                .unwrap_or_default();
        d
    };
    for (p50, p99, note) in [
        ("signal p50", "signal p99", &signal),
        ("digest p50", "digest p99", &digest),
    ] {
        let mut plain = Lat::nanos();
        let mut worded = Lat::nanos();
        let mut parts = 0;
        for _ in 0..n {
            let t = Instant::now();
            parts += render(note, ParseMode::Html, MAX_TEXT).len();
            plain.record(t.elapsed());
            let t = Instant::now();
            let c = templates.render(note, "telegram", "bench", Markup::Html);
            parts += render_content(note, &c, ParseMode::Html, MAX_TEXT).len();
            worded.record(t.elapsed());
        }
        anyhow::ensure!(parts >= 2 * n, "every render makes a message");
        let base = "no template";
        report.row(Row {
            figure: p50,
            value: worded.q(0.50),
            baseline: Some((base, plain.q(0.50))),
            goal: None,
        });
        report.row(Row {
            figure: p99,
            value: worded.q(0.99),
            baseline: Some((base, plain.q(0.99))),
            // A send is a network call of tens of milliseconds; its wording must stay well
            // under one.
            goal: Some(Goal::Below(1_000_000.0)),
        });
    }
    Ok(())
}
