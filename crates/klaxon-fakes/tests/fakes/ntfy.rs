//! `FakeNtfy`: JSON and header publishing, ntfy's error codes, auth, the visitor bucket.

use std::time::Duration;

use klaxon_fakes::ntfy::FakeNtfy;
use serde_json::json;

use crate::{client, send};

#[tokio::test]
async fn publishes_by_json_and_by_headers() {
    let fake = FakeNtfy::start().await;
    let (status, _, body) = send(client().post(format!("{}/", fake.url())).json(&json!({
        "topic": "alerts", "message": "hi", "title": "T", "priority": 5, "tags": ["warning"],
        "markdown": true,
    })))
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["event"], "message");
    assert_eq!(body["priority"], 5);
    let (status, _, _) = send(
        client()
            .put(format!("{}/alerts", fake.url()))
            .header("Title", "=?UTF-8?B?0KbQtdC90LA=?=")
            .header("X-Priority", "high")
            .header("Tags", "a, b")
            .header("Filename", "x.bin")
            .header("Message", "see file")
            .body(vec![0u8, 159, 146, 150]),
    )
    .await;
    assert_eq!(status, 200);
    let m = fake.messages();
    assert!(m[0].json && m[0].markdown);
    assert_eq!(m[1].title.as_deref(), Some("Цена"));
    assert_eq!(
        (m[1].priority, m[1].tags.clone()),
        (4, vec!["a".to_string(), "b".to_string()])
    );
    assert_eq!(m[1].message, "see file");
    assert_eq!(
        m[1].attachment.as_ref().unwrap().bytes,
        [0u8, 159, 146, 150]
    );
}

#[tokio::test]
async fn refuses_with_ntfys_codes() {
    let fake = FakeNtfy::start().await;
    let root = format!("{}/", fake.url());
    let cases = [
        (
            client().post(&root).json(&json!({"message": "x"})),
            400,
            40009,
        ),
        (client().post(&root).body("not json"), 400, 40017),
        (
            client()
                .post(&root)
                .json(&json!({"topic": "t", "priority": 7})),
            400,
            40007,
        ),
        (
            client().post(format!("{}/bad$topic", fake.url())).body("x"),
            400,
            40009,
        ),
        (
            client()
                .post(format!("{}/t", fake.url()))
                .header("Priority", "loud")
                .body("x"),
            400,
            40007,
        ),
    ];
    for (request, want_status, want_code) in cases {
        let (status, _, body) = send(request).await;
        assert_eq!(
            (status, body["code"].as_u64()),
            (want_status, Some(want_code))
        );
        assert_eq!(body["http"], want_status);
    }
    fake.require_token("tk_abc");
    let (status, _, body) = send(client().post(format!("{}/t", fake.url())).body("x")).await;
    assert_eq!((status, body["code"].as_u64()), (403, Some(40301)));
    let (status, _, body) = send(
        client()
            .post(format!("{}/t", fake.url()))
            .bearer_auth("tk_nope")
            .body("x"),
    )
    .await;
    assert_eq!((status, body["code"].as_u64()), (401, Some(40101)));
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn oversized_text_becomes_a_file_and_the_visitor_limit_bites() {
    let fake = FakeNtfy::start().await;
    fake.set_limit(1, Duration::from_secs(10));
    let (status, _, body) = send(
        client()
            .post(format!("{}/t", fake.url()))
            .body("y".repeat(5000)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["attachment"]["name"], "attachment.txt");
    let (status, _, body) = send(client().post(format!("{}/t", fake.url())).body("x")).await;
    assert_eq!((status, body["code"].as_u64()), (429, Some(42901)));
    let (status, _, body) = send(client().get(format!("{}/v1/health", fake.url()))).await;
    assert_eq!((status, body), (200, json!({"healthy": true})));
}
