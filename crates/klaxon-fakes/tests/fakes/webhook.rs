//! `WebhookSink`: recording, JSON validation, Standard Webhooks verification, forced statuses.

use klaxon_fakes::webhook::{SinkOptions, WebhookSink, sign};
use serde_json::json;

use crate::{client, send};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn signed(url: &str, id: &str, ts: i64, body: &str, signature: &str) -> reqwest::RequestBuilder {
    client()
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(body.to_owned())
}

#[tokio::test]
async fn records_unsigned_requests() {
    let sink = WebhookSink::start().await;
    let url = format!("{}/hooks/a?x=1", sink.url());
    let (status, _, body) = send(
        client()
            .post(&url)
            .header("webhook-id", "msg_1")
            .json(&json!({"n": 1})),
    )
    .await;
    assert_eq!((status, body), (200, json!({"ok": true})));
    let (status, _, _) = send(
        client()
            .put(&url)
            .header("content-type", "text/plain")
            .body("plain"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(send(client().get(&url)).await.0, 405);
    let (status, _, _) = send(
        client()
            .post(&url)
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    assert_eq!(status, 400);

    assert_eq!(sink.count(), 2);
    assert_eq!(sink.requests(), 4);
    let received = sink.received();
    assert_eq!(received[0].method, "POST");
    assert_eq!(received[0].path, "/hooks/a");
    assert_eq!(received[0].query.as_deref(), Some("x=1"));
    assert_eq!(received[0].body, json!({"n": 1}));
    assert_eq!(received[0].webhook_id.as_deref(), Some("msg_1"));
    assert!(
        received[0]
            .headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/json")
    );
    assert_eq!(received[1].method, "PUT");
    assert_eq!(received[1].body, json!("plain"));
    assert_eq!(
        sink.distinct_ids().into_iter().collect::<Vec<_>>(),
        vec!["msg_1".to_owned()]
    );
}

#[tokio::test]
async fn verifies_standard_webhooks_signatures() {
    let sink = WebhookSink::start_signed(SECRET).await;
    let url = format!("{}/in", sink.url());
    let now = chrono::Utc::now().timestamp();
    let body = r#"{"event":"alert"}"#;
    let good = sign(SECRET, "msg_1", now, body.as_bytes());
    assert_eq!(send(signed(&url, "msg_1", now, body, &good)).await.0, 200);
    // A retry carries the same id (and a new timestamp and signature).
    let retry = sign(SECRET, "msg_1", now + 1, body.as_bytes());
    assert_eq!(
        send(signed(
            &url,
            "msg_1",
            now + 1,
            body,
            &format!("v1,bm9wZQ== {retry}")
        ))
        .await
        .0,
        200
    );

    let other_secret = sign(
        "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0",
        "msg_2",
        now,
        body.as_bytes(),
    );
    let tampered = r#"{"event":"other"}"#;
    let stale = now - 301;
    let rejected = [
        signed(&url, "msg_2", now, body, &other_secret),
        signed(&url, "msg_1", now, tampered, &good),
        signed(
            &url,
            "msg_1",
            stale,
            body,
            &sign(SECRET, "msg_1", stale, body.as_bytes()),
        ),
        client().post(&url).json(&json!({})),
    ];
    for request in rejected {
        let (status, _, body) = send(request).await;
        assert_eq!(status, 401, "{body}");
    }
    assert_eq!(sink.bad_signatures(), 4);
    assert_eq!(sink.count(), 2);
    assert_eq!(sink.distinct_ids().len(), 1);
}

#[tokio::test]
async fn forced_status_and_failures() {
    let sink = WebhookSink::start().await;
    sink.set_status_for_all(410);
    assert_eq!(
        send(client().post(sink.url()).json(&json!({}))).await.0,
        410
    );
    sink.set_status_for_all(200);
    sink.fail_next(1, 503);
    assert_eq!(
        send(client().post(sink.url()).json(&json!({}))).await.0,
        503
    );
    assert_eq!(
        send(client().post(sink.url()).json(&json!({}))).await.0,
        200
    );
    assert_eq!((sink.count(), sink.requests()), (1, 3));
}

#[tokio::test]
async fn counting_only_mode_keeps_ids() {
    let sink = WebhookSink::start_with(SinkOptions {
        record_bodies: false,
        ..SinkOptions::default()
    })
    .await;
    for i in 0..20 {
        let id = format!("msg_{}", i % 5);
        assert_eq!(
            send(
                client()
                    .post(sink.url())
                    .header("webhook-id", id)
                    .json(&json!({"i": i}))
            )
            .await
            .0,
            200
        );
    }
    let (status, _, _) = send(
        client()
            .post(sink.url())
            .header("content-type", "application/json")
            .body("[1,"),
    )
    .await;
    assert_eq!(status, 400, "JSON is still validated");
    assert_eq!(sink.count(), 20);
    assert_eq!(sink.distinct_ids().len(), 5);
    assert!(sink.received().is_empty());
}
