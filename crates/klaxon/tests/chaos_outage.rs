//! A provider outage (issue 7, reliability 2): the webhook answers 503 for the first half of the
//! outage and refuses connections for the second, then comes back. Every notification — those
//! sent as it went down and those sent during it — is delivered after the recovery, none dies;
//! while it is down the requests it sees are bounded by the circuit breaker (the first attempts
//! in flight, then one probe per cool-down), and `/status` shows the open circuit.
//!
//! CI runs a 6 s outage; `KLAXON_CHAOS_OUTAGE_SECS=60 cargo test -p klaxon --test chaos_outage
//! -- --nocapture` runs the issue's full minute.

mod common;

use std::time::Duration;

use common::TestServer;
use klaxon_fakes::FailMode;
use klaxon_fakes::webhook::WebhookSink;
use serde_json::json;

const BURST: usize = 20;
const DURING: usize = 10;
const COOLDOWN: Duration = Duration::from_secs(1);

fn outage() -> Duration {
    let secs = std::env::var("KLAXON_CHAOS_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(6);
    Duration::from_secs(secs.max(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_outage_loses_nothing_and_is_not_hammered() {
    common::crypto();
    let outage = outage();
    let sink = WebhookSink::start().await;
    // Retries wide enough that the probes of a long outage cannot use up one delivery's budget:
    // the circuit, not the retry budget, is what waits out an outage.
    let cfg = format!(
        r#"
[store]
url = "{{db}}"
[delivery]
health_interval = "1h"
[delivery.retry]
retries = 12
base = "200ms"
cap = "2s"
[delivery.breaker]
threshold = 3
cooldown = "{}ms"
[channels.hook]
url = "{}"
"#,
        COOLDOWN.as_millis(),
        common::json_url(&sink)
    );
    let s = TestServer::start(&cfg).await;

    sink.set_fail(FailMode::Status(503));
    let before = sink.requests();
    let started = tokio::time::Instant::now();
    let mut ids = Vec::new();
    for i in 0..BURST {
        ids.push(
            s.send(json!({"message": format!("as it went down {i}")}))
                .await,
        );
    }
    let mut saw_open = false;
    let half = outage / 2;
    while started.elapsed() < half {
        let (_, status) = s.get("/status").await;
        let hook = status["channels"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "hook"))
            .cloned()
            .unwrap_or_default();
        saw_open |= matches!(hook["circuit"].as_str(), Some("open" | "half_open"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answered_503 = sink.requests() - before;

    // Second half: the host is gone (connection refused); more alerts arrive meanwhile.
    sink.stop().await;
    for i in 0..DURING {
        ids.push(s.send(json!({"message": format!("during {i}")})).await);
    }
    tokio::time::sleep(outage - half).await;
    sink.set_fail(FailMode::None);
    sink.restart().await;
    let recovered = tokio::time::Instant::now();

    for id in &ids {
        let n = s.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(n["deliveries"][0]["status"], "delivered", "{n}");
    }
    let caught_up = recovered.elapsed();
    assert!(
        saw_open,
        "/status never showed the circuit open during the outage"
    );
    // The first attempts of the burst may all be in flight when the circuit opens; after that
    // only probes, one per cool-down (and one more at the edge of the window).
    let probes = (half.as_secs_f64() / COOLDOWN.as_secs_f64()).ceil() as usize + 1;
    assert!(
        answered_503 <= BURST + probes,
        "{answered_503} requests during {half:?} of 503s; the breaker allows {BURST} + {probes}"
    );
    assert_eq!(
        sink.distinct_ids().len(),
        BURST + DURING,
        "each delivered once"
    );
    println!(
        "outage {outage:?}: {} notifications, all delivered {caught_up:?} after recovery; \
         {answered_503} requests answered 503 in {half:?} (bound {}), connection-refused half \
         not counted by the sink",
        ids.len(),
        BURST + probes
    );
    s.stop().await;
}
