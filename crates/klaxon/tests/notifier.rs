//! `klaxon::Notifier` embedded in a program: `send` returns at once even when the provider is
//! down, a full queue gives the notification back, and `shutdown` delivers what was handed over.

use std::collections::BTreeMap;
use std::time::Duration;

use klaxon::{Config, Notification, Notifier, SendError, Severity};
use klaxon_fakes::webhook::WebhookSink;

fn config(hook: &str, dir: &tempfile::TempDir, capacity: usize) -> Config {
    let text = format!(
        "[store]\nurl = \"sqlite://{}\"\n[delivery]\nqueue_capacity = {capacity}\n\
         retry = {{ retries = 10, base = \"100ms\", factor = 1.5 }}\nbreaker = {{ threshold = 1000 }}\n\
         [channels.hook]\nurl = \"{hook}\"\n",
        dir.path().join("n.db").display()
    );
    Config::load(Some(&text), &BTreeMap::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_never_waits_and_shutdown_delivers_everything() {
    let sink = WebhookSink::start().await;
    let hook = sink.url().replacen("http://", "json://", 1) + "/bot";
    let dir = tempfile::tempdir().unwrap();
    let notifier = Notifier::start(config(&hook, &dir, 10_000)).await.unwrap();

    // The provider is down while the bot sends: send still returns immediately.
    sink.stop().await;
    let mut ids = Vec::new();
    for i in 0..200 {
        let n = Notification::new(format!("fill {i}"))
            .title("BUY MNQ")
            .severity(Severity::Info)
            .data("price", 23_488.75);
        ids.push(notifier.send(n).expect("queued"));
    }
    let err = notifier
        .send(Notification::new("x").channel("nope"))
        .unwrap_err();
    assert!(
        matches!(err, SendError::Invalid(_)),
        "unknown channels are refused at once: {err}"
    );
    // Let the engine find the provider down (refused connections, retries scheduled).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.count(), 0);
    sink.restart().await;
    notifier.shutdown().await;

    let got = sink.distinct_ids();
    assert_eq!(
        got.len(),
        200,
        "every notification delivered once it was back"
    );
    let bodies: std::collections::HashSet<String> = sink
        .received()
        .iter()
        .filter_map(|r| r.body["id"].as_str().map(str::to_string))
        .collect();
    for id in ids {
        assert!(bodies.contains(&id.to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_returns_the_notification() {
    let sink = WebhookSink::start().await;
    let hook = sink.url().replacen("http://", "json://", 1) + "/bot";
    let dir = tempfile::tempdir().unwrap();
    let notifier = Notifier::start(config(&hook, &dir, 1)).await.unwrap();
    let mut full = None;
    for i in 0..10_000 {
        match notifier.send(Notification::new(format!("n{i}"))) {
            Ok(_) => {}
            Err(SendError::Full(cap, n)) => {
                assert_eq!(cap, 1);
                full = Some(n);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let n = full.expect("a queue of one fills up");
    // The caller still has it and can wait for room instead.
    tokio::time::timeout(Duration::from_secs(10), notifier.send_wait(*n))
        .await
        .unwrap()
        .unwrap();
    notifier.shutdown().await;
}
