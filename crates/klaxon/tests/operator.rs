//! Operator controls over the API: switch a channel off and on (persisted across a restart),
//! mute it, send a test, list and retry dead letters.

mod common;

use std::time::Duration;

use common::TestServer;
use klaxon_fakes::webhook::WebhookSink;
use serde_json::{Value, json};

fn cfg(sink: &WebhookSink) -> String {
    format!(
        r#"
[store]
url = "{{db}}"
[delivery]
health_interval = "1h"
[delivery.retry]
retries = 0
base = "50ms"
jitter = 0.0
[channels.hook]
url = "{}"
"#,
        common::json_url(sink)
    )
}

async fn patch(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let r = s.http.patch(s.url(path)).json(&body).send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

async fn send(s: &TestServer, body: Value) -> String {
    s.send(body).await
}

async fn status_of(s: &TestServer, id: &str) -> String {
    let (_, v) = s.get(&format!("/api/v1/notifications/{id}")).await;
    v["deliveries"][0]["status"].as_str().unwrap().to_string()
}

/// Nothing happens for a while: long enough for a claim round and a send on loopback.
async fn quiet() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

#[tokio::test]
async fn a_channel_switched_off_stays_off_across_a_restart_and_sends_its_backlog_when_on() {
    common::crypto();
    let sink = WebhookSink::start().await;
    let s = TestServer::start(&cfg(&sink)).await;
    let (code, v) = patch(&s, "/api/v1/channels/hook", json!({"enabled": false})).await;
    assert_eq!((code, v["state"].as_str()), (200, Some("disabled")), "{v}");
    let id = send(&s, json!({"message": "while off"})).await;
    quiet().await;
    assert_eq!(sink.count(), 0);
    assert_eq!(status_of(&s, &id).await, "pending");

    let s = s.restart().await;
    let (_, v) = s.get("/api/v1/channels/hook").await;
    assert_eq!(v["enabled"], false, "the switch is persisted: {v}");
    quiet().await;
    assert_eq!(sink.count(), 0);

    let (code, v) = patch(&s, "/api/v1/channels/hook", json!({"enabled": true})).await;
    assert_eq!((code, v["state"].as_str()), (200, Some("ok")), "{v}");
    let v = s.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(v["deliveries"][0]["status"], "delivered");
    assert_eq!(sink.count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn patch_errors_name_the_field() {
    common::crypto();
    let sink = WebhookSink::start().await;
    let s = TestServer::start(&cfg(&sink)).await;
    let (code, v) = patch(&s, "/api/v1/channels/hook", json!({"enabled": "no"})).await;
    assert_eq!((code, v["error"]["field"].as_str()), (400, Some("enabled")));
    let (code, v) = patch(&s, "/api/v1/channels/hook", json!({"muted_until": "soon"})).await;
    assert_eq!(
        (code, v["error"]["field"].as_str()),
        (400, Some("muted_until"))
    );
    let (code, v) = patch(&s, "/api/v1/channels/hook", json!({"colour": "red"})).await;
    assert_eq!((code, v["error"]["field"].as_str()), (400, Some("colour")));
    let (code, _) = patch(&s, "/api/v1/channels/nope", json!({"enabled": false})).await;
    assert_eq!(code, 404);
    s.stop().await;
}

#[tokio::test]
async fn a_muted_channel_holds_all_but_critical_until_unmuted() {
    common::crypto();
    let sink = WebhookSink::start().await;
    let s = TestServer::start(&cfg(&sink)).await;
    let until = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let (code, v) = patch(&s, "/api/v1/channels/hook", json!({"muted_until": until})).await;
    assert_eq!(code, 200, "{v}");
    assert!(v["muted_until"].is_string(), "{v}");
    let info = send(&s, json!({"message": "fyi"})).await;
    let crit = send(
        &s,
        json!({"message": "margin call", "severity": "critical"}),
    )
    .await;
    let v = s.wait_final(&crit, Duration::from_secs(10)).await;
    assert_eq!(v["deliveries"][0]["status"], "delivered");
    quiet().await;
    assert_eq!(status_of(&s, &info).await, "pending");
    assert_eq!(sink.count(), 1);

    let (code, v) = patch(&s, "/api/v1/channels/hook", json!({"muted_until": null})).await;
    assert_eq!((code, &v["muted_until"]), (200, &Value::Null), "{v}");
    // Unmuted early: what was held for the mute's end goes now.
    let v = s.wait_final(&info, Duration::from_secs(10)).await;
    assert_eq!(v["deliveries"][0]["status"], "delivered");
    s.stop().await;
}

#[tokio::test]
async fn send_test_answers_with_the_outcome() {
    common::crypto();
    let sink = WebhookSink::start().await;
    let s = TestServer::start(&cfg(&sink)).await;
    let (code, v) = s.post("/api/v1/channels/hook/test", &json!({})).await;
    assert_eq!(
        (code, v["outcome"].as_str()),
        (200, Some("delivered")),
        "{v}"
    );
    assert_eq!(sink.received()[0].body["title"], "Klaxon test");

    sink.set_status_for_all(400);
    let (code, v) = s.post("/api/v1/channels/hook/test", &json!({})).await;
    assert_eq!((code, v["outcome"].as_str()), (200, Some("failed")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("400"), "{v}");

    patch(&s, "/api/v1/channels/hook", json!({"enabled": false})).await;
    let (code, v) = s.post("/api/v1/channels/hook/test", &json!({})).await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (409, Some("channel_disabled"))
    );
    let (code, _) = s.post("/api/v1/channels/nope/test", &json!({})).await;
    assert_eq!(code, 404);
    s.stop().await;
}

#[tokio::test]
async fn dead_letters_are_listed_and_retried() {
    common::crypto();
    let sink = WebhookSink::start().await;
    sink.set_status_for_all(400);
    let s = TestServer::start(&cfg(&sink)).await;
    let a = send(&s, json!({"title": "A", "message": "first"})).await;
    let b = send(&s, json!({"title": "B", "message": "second"})).await;
    s.wait_final(&a, Duration::from_secs(10)).await;
    s.wait_final(&b, Duration::from_secs(10)).await;
    let (code, v) = s.get("/api/v1/dead-letters").await;
    assert_eq!(code, 200);
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{v:#}");
    assert_eq!(items[0]["notification"]["title"], "B", "newest first");
    assert_eq!(items[0]["status"], "dead");
    assert!(items[0]["last_error"].as_str().unwrap().contains("400"));
    assert_eq!(items[0]["attempts"], 1);

    sink.set_status_for_all(200);
    let delivery = items[1]["id"].as_str().unwrap().to_string();
    let (code, v) = s
        .post(
            &format!("/api/v1/dead-letters/{delivery}/retry"),
            &json!({}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let v = s.wait_final(&a, Duration::from_secs(10)).await;
    assert_eq!(v["deliveries"][0]["status"], "delivered");
    assert_eq!(v["deliveries"][0]["attempts"].as_array().unwrap().len(), 2);
    let (code, _) = s
        .post(
            &format!("/api/v1/dead-letters/{delivery}/retry"),
            &json!({}),
        )
        .await;
    assert_eq!(code, 404, "no longer dead");

    let (code, v) = s.post("/api/v1/dead-letters/retry", &json!({})).await;
    assert_eq!((code, v["error"]["field"].as_str()), (400, Some("all")));
    let (code, v) = s
        .post("/api/v1/dead-letters/retry?all=true", &json!({}))
        .await;
    assert_eq!((code, v["requeued"].as_array().unwrap().len()), (200, 1));
    let v = s.wait_final(&b, Duration::from_secs(10)).await;
    assert_eq!(v["deliveries"][0]["status"], "delivered");
    let (_, v) = s.get("/api/v1/dead-letters").await;
    assert!(v["items"].as_array().unwrap().is_empty());
    assert_eq!(sink.count(), 2);
    s.stop().await;
}
