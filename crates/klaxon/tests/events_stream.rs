//! The live event stream over real HTTP: `GET /api/v1/events/stream` tells a subscriber about
//! each delivery outcome and each operator change, is behind the API token, and ends when the
//! server stops. (A reader that falls behind is told so: unit test in `src/api/stream.rs`.)

mod common;

use std::time::Duration;

use common::TestServer;
use klaxon_fakes::webhook::WebhookSink;
use serde_json::{Value, json};

fn cfg(sink: &WebhookSink, extra: &str) -> String {
    format!(
        r#"
{extra}
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

/// Reads server-sent events off a streaming response.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(s: &TestServer, token: Option<&str>) -> Sse {
        let mut req = s.http.get(s.url("/api/v1/events/stream"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut sse = Sse {
            resp,
            buf: String::new(),
        };
        let (name, _) = sse.next().await;
        assert_eq!(
            name, "hello",
            "the stream greets first, so the client knows it is on"
        );
        sse
    }

    /// The next event (comments skipped) as (name, JSON data), or a panic after 10 s.
    async fn next(&mut self) -> (String, Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return (name, serde_json::from_str(&data).unwrap());
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream stays open");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Skips events until one named `name` comes.
    async fn until(&mut self, name: &str) -> Value {
        loop {
            let (n, v) = self.next().await;
            if n == name {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn a_subscriber_sees_acceptance_each_delivery_outcome_and_operator_changes() {
    common::crypto();
    let sink = WebhookSink::start().await;
    let s = TestServer::start(&cfg(&sink, "")).await;
    let mut sse = Sse::open(&s, None).await;

    let (code, v) = s
        .post(
            "/api/v1/notifications",
            &json!({"title": "BTC", "message": "crossed 100k", "severity": "warning"}),
        )
        .await;
    assert_eq!(code, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();

    let accepted = sse.until("accepted").await;
    assert_eq!(accepted["notification_id"], id.as_str());
    let d = sse.until("delivery").await;
    assert_eq!(d["type"], "delivery");
    assert_eq!(d["notification_id"], id.as_str());
    assert_eq!(d["channel"], "hook");
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["attempt"], 1);
    assert_eq!(d["title"], "BTC");
    assert_eq!(d["severity"], "warning");
    assert!(
        d["latency_ms"].is_u64() && d["accept_to_outcome_ms"].is_u64(),
        "{d}"
    );
    assert_eq!(d["error"], Value::Null);
    // Its channel's counters follow at once.
    let ch = sse.until("channel").await;
    assert_eq!(
        (ch["name"].as_str(), ch["delivered"].as_u64()),
        (Some("hook"), Some(1))
    );

    // A failure carries its error.
    sink.set_status_for_all(500);
    s.post("/api/v1/notifications", &json!({"message": "doomed"}))
        .await;
    let d = sse.until("delivery").await;
    assert_eq!(d["status"], "dead", "{d}");
    assert!(
        d["error"].as_str().is_some_and(|e| e.contains("500")),
        "{d}"
    );

    // An operator's switch is announced with the channel as the API shows it.
    let r = s
        .http
        .patch(s.url("/api/v1/channels/hook"))
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ch = loop {
        let ch = sse.until("channel").await;
        if ch["enabled"] == false {
            break ch;
        }
    };
    assert_eq!(ch["state"], "disabled");
    s.stop().await;
}

#[tokio::test]
async fn the_stream_needs_the_token_in_a_header_not_the_url() {
    common::crypto();
    let sink = WebhookSink::start().await;
    let s = TestServer::start(&cfg(&sink, "[server]\napi_token = \"s3cret-token\"")).await;
    let r = s
        .http
        .get(s.url("/api/v1/events/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .http
        .get(s.url("/api/v1/events/stream?token=s3cret-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a token in the URL would end up in logs");
    let mut sse = Sse::open(&s, Some("s3cret-token")).await;
    let r = s
        .http
        .post(s.url("/api/v1/notifications"))
        .bearer_auth("s3cret-token")
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(sse.until("delivery").await["status"], "delivered");
    s.stop().await;
}

#[tokio::test]
async fn stopping_the_server_ends_open_streams() {
    common::crypto();
    let sink = WebhookSink::start().await;
    let s = TestServer::start(&cfg(&sink, "")).await;
    let mut sse = Sse::open(&s, None).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), s.stop()).await;
    assert!(stopped.is_ok(), "an open stream held up the graceful stop");
    let end = tokio::time::timeout(Duration::from_secs(5), sse.resp.chunk()).await;
    assert!(matches!(end, Ok(Ok(None)) | Ok(Err(_))), "{end:?}");
}

#[tokio::test]
async fn health_check_results_are_announced() {
    common::crypto();
    let sink = WebhookSink::start().await;
    let s = TestServer::start(&cfg(&sink, "").replace("\"1h\"", "\"200ms\"")).await;
    let mut sse = Sse::open(&s, None).await;
    let (name, v) = sse.next().await;
    assert_eq!(name, "channel", "{v}");
    assert_eq!(v["name"], "hook");
    assert_eq!(v["health"]["state"], "not_checkable", "{v}");
    s.stop().await;
}
