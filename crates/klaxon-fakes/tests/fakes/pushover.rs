//! `FakePushover`: keys, lengths, emergency rules, images, quota, user validation.

use klaxon_fakes::pushover::{DEFAULT_TOKEN, DEFAULT_USER, FakePushover};
use serde_json::Value;

use crate::{client, send};

async fn post(fake: &FakePushover, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    let (status, _, body) = send(
        client()
            .post(format!("{}{path}", fake.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(s.finish()),
    )
    .await;
    (status, body)
}

const KEYS: [(&str, &str); 2] = [("token", DEFAULT_TOKEN), ("user", DEFAULT_USER)];

fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    KEYS.iter().copied().chain(extra.iter().copied()).collect()
}

#[tokio::test]
async fn accepts_and_gives_receipts_for_emergencies() {
    let fake = FakePushover::start().await;
    let (status, body) = post(&fake, "/1/messages.json", &with(&[("message", "hi")])).await;
    assert_eq!((status, body["status"].as_i64()), (200, Some(1)));
    assert!(body.get("receipt").is_none());
    let emergency = with(&[
        ("message", "hi"),
        ("priority", "2"),
        ("retry", "30"),
        ("expire", "10800"),
    ]);
    let (status, body) = post(&fake, "/1/messages.json", &emergency).await;
    assert_eq!(status, 200);
    assert_eq!(body["receipt"].as_str().unwrap().len(), 30);
    assert_eq!(fake.messages().len(), 2);
}

#[tokio::test]
async fn refuses_what_pushover_refuses() {
    let fake = FakePushover::start().await;
    let long = "m".repeat(1025);
    let title = "t".repeat(251);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("token", "nope"), ("user", DEFAULT_USER), ("message", "x")],
            "application token is invalid",
        ),
        (
            vec![("token", DEFAULT_TOKEN), ("user", "nope"), ("message", "x")],
            "user identifier",
        ),
        (with(&[("message", " ")]), "message cannot be blank"),
        (with(&[("message", &long)]), "message cannot be longer"),
        (
            with(&[("message", "x"), ("title", &title)]),
            "title cannot be longer",
        ),
        (
            with(&[("message", "x"), ("priority", "3")]),
            "priority is invalid",
        ),
        (
            with(&[
                ("message", "x"),
                ("priority", "2"),
                ("retry", "29"),
                ("expire", "60"),
            ]),
            "retry is invalid",
        ),
        (
            with(&[
                ("message", "x"),
                ("priority", "2"),
                ("retry", "30"),
                ("expire", "10801"),
            ]),
            "expire is invalid",
        ),
        (
            with(&[("message", "x"), ("device", "toaster")]),
            "device name",
        ),
    ];
    for (pairs, want) in cases {
        let (status, body) = post(&fake, "/1/messages.json", &pairs).await;
        assert_eq!(
            (status, body["status"].as_i64()),
            (400, Some(0)),
            "{pairs:?}"
        );
        let errors = body["errors"].to_string();
        assert!(errors.contains(want), "{errors} should say {want}");
    }
    fake.set_quota_remaining(0);
    let (status, _) = post(&fake, "/1/messages.json", &with(&[("message", "x")])).await;
    assert_eq!(status, 429);
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn validates_users_without_sending() {
    let fake = FakePushover::start().await;
    let (status, body) = post(&fake, "/1/users/validate.json", &KEYS).await;
    assert_eq!((status, body["status"].as_i64()), (200, Some(1)));
    assert_eq!(body["devices"], serde_json::json!(["phone", "desk"]));
    let (status, body) = post(
        &fake,
        "/1/users/validate.json",
        &[("token", DEFAULT_TOKEN), ("user", "nope")],
    )
    .await;
    assert_eq!((status, body["user"].as_str()), (400, Some("invalid")));
    assert!(fake.messages().is_empty());
}
