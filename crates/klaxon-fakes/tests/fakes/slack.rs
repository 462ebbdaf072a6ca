//! `FakeSlack`: plain-text answers, path tokens, Block Kit limits, the per-webhook bucket.

use std::time::Duration;

use klaxon_fakes::slack::{DEFAULT_WEBHOOK, FakeSlack};
use serde_json::{Value, json};

use crate::{client, header};

/// Posts `body` (JSON unless it is a string) and returns status, headers and the text answer.
async fn post(
    fake: &FakeSlack,
    path: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, String) {
    let url = format!("{}/services/{path}", fake.url());
    let request = match body {
        Value::String(raw) => client().post(url).body(raw),
        json => client().post(url).json(&json),
    };
    let response = request.send().await.expect("the fake answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

#[tokio::test]
async fn ok_is_plain_text_and_recorded() {
    let fake = FakeSlack::start().await;
    let (status, headers, text) = post(&fake, DEFAULT_WEBHOOK, json!({"text": "hi"})).await;
    assert_eq!((status, text.as_str()), (200, "ok"));
    assert!(header(&headers, "content-type").starts_with("text/plain"));
    assert_eq!(fake.messages()[0].body, json!({"text": "hi"}));
}

#[tokio::test]
async fn refuses_what_slack_refuses() {
    let fake = FakeSlack::start().await;
    fake.set_limit(100, Duration::from_millis(1));
    let cases = [
        ("T1/B1/nope", json!({"text": "x"}), 404, "no_service"),
        (
            DEFAULT_WEBHOOK,
            json!("text=not json"),
            400,
            "invalid_payload",
        ),
        (DEFAULT_WEBHOOK, json!({"username": "x"}), 400, "no_text"),
        (
            DEFAULT_WEBHOOK,
            json!({"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "y".repeat(3001)}}]}),
            400,
            "invalid_blocks",
        ),
    ];
    for (path, body, want_status, want_word) in cases {
        let (status, _, text) = post(&fake, path, body).await;
        assert_eq!((status, text.as_str()), (want_status, want_word));
    }
    fake.archive(DEFAULT_WEBHOOK);
    let (status, _, text) = post(&fake, DEFAULT_WEBHOOK, json!({"text": "x"})).await;
    assert_eq!((status, text.as_str()), (410, "channel_is_archived"));
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn one_per_second_after_a_short_burst() {
    let fake = FakeSlack::start().await;
    for _ in 0..3 {
        assert_eq!(
            post(&fake, DEFAULT_WEBHOOK, json!({"text": "x"})).await.0,
            200
        );
    }
    let (status, headers, text) = post(&fake, DEFAULT_WEBHOOK, json!({"text": "x"})).await;
    assert_eq!((status, text.as_str()), (429, "rate_limited"));
    assert_eq!(header(&headers, "retry-after"), "1");
    assert_eq!(fake.count_429(), 1);
}
