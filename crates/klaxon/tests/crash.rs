//! The real binary under load, killed with SIGKILL and restarted three times, then stopped with
//! SIGTERM: every accepted notification is delivered, and a notification delivered twice carries
//! the same `webhook-id`.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use klaxon_fakes::FailMode;
use klaxon_fakes::webhook::WebhookSink;
use serde_json::{Value, json};

mod common;

use common::Binary;

async fn start(db: &str, sink: &str, port: u16) -> Binary {
    Binary::serve(
        &[],
        &[("KLAXON_STORE_URL", db), ("WEBHOOK_URL", sink)],
        port,
    )
    .await
}

/// Posts batches until stopped; returns the ids the server accepted (answered 202).
async fn load(base: String, start: usize, batches: usize) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut accepted = Vec::new();
    for b in 0..batches {
        let items: Vec<Value> = (0..20)
            .map(|i| json!({"message": format!("n{}", start + b * 20 + i)}))
            .collect();
        match http
            .post(format!("{base}/api/v1/notifications/batch"))
            .json(&items)
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 202 => {
                let v: Value = r.json().await.unwrap();
                accepted.extend(
                    v["results"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r["id"].as_str().unwrap().to_string()),
                );
            }
            // Killed mid-request: not acknowledged, so not counted.
            _ => break,
        }
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing() {
    klaxon::app::install_crypto();
    let sink = WebhookSink::start().await;
    // Slow answers keep deliveries in flight when the kill lands.
    sink.set_fail(FailMode::Slow(Duration::from_millis(25)));
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("crash.db").display());
    let hook = sink.url().replacen("http://", "json://", 1) + "/in";
    let port = common::free_port();
    let mut accepted: Vec<String> = Vec::new();
    for round in 0..4 {
        let mut k = start(&db, &hook, port).await;
        let loader = tokio::spawn(load(k.base.clone(), round * 100_000, 50));
        // Stop while requests are being answered and deliveries are in flight.
        tokio::time::sleep(Duration::from_millis(300 + round as u64 * 150)).await;
        if round < 3 {
            k.kill();
        } else {
            // SIGTERM: intake stops, sends in flight finish, the rest is handed back; exit 0.
            let pid = k.child.id().to_string();
            assert!(
                Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap()
                    .success()
            );
            let status = k.child.wait().unwrap();
            assert!(status.success(), "graceful stop exits 0: {status:?}");
        }
        accepted.extend(loader.await.unwrap());
    }
    sink.set_fail(FailMode::None);
    let k = start(&db, &hook, port).await;
    let want: HashSet<String> = accepted.iter().cloned().collect();
    assert!(want.len() > 100, "the load ran: {} accepted", want.len());
    common::wait_delivered(&sink, &want, Duration::from_secs(120)).await;
    // Repeats only with the same webhook-id.
    let received = sink.received();
    let repeats = common::repeats(&received);
    println!(
        "accepted {}, received {}, repeats (same webhook-id) {repeats}",
        want.len(),
        received.len()
    );
    drop(k);
}
