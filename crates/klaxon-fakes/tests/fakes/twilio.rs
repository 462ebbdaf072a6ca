//! `FakeTwilio`: Basic auth, form bodies, Twilio's error codes, 201 with sid and segments.

use std::time::Duration;

use klaxon_fakes::twilio::{DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilio};
use serde_json::Value;

use crate::{client, send};

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

async fn post(fake: &FakeTwilio, token: Option<&str>, pairs: &[(&str, &str)]) -> (u16, Value) {
    let url = format!(
        "{}/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json",
        fake.url()
    );
    let mut request = client()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(pairs));
    if let Some(token) = token {
        request = request.basic_auth(DEFAULT_ACCOUNT_SID, Some(token));
    }
    let (status, _, body) = send(request).await;
    (status, body)
}

#[tokio::test]
async fn creates_messages_with_sid_and_segments() {
    let fake = FakeTwilio::start().await;
    let text = "a".repeat(200);
    let (status, body) = post(
        &fake,
        Some(DEFAULT_AUTH_TOKEN),
        &[
            ("To", "+15550002222"),
            ("From", "+15550001111"),
            ("Body", &text),
        ],
    )
    .await;
    assert_eq!(status, 201);
    let sid = body["sid"].as_str().unwrap();
    assert!(sid.starts_with("SM") && sid.len() == 34);
    assert_eq!(body["num_segments"], "2");
    assert_eq!(body["status"], "queued");
    assert_eq!(fake.messages()[0].encoding, "GSM-7");
}

/// Credentials, form pairs, then the status and Twilio code expected.
type Case<'a> = (Option<&'a str>, Vec<(&'a str, &'a str)>, u16, u64);

#[tokio::test]
async fn refuses_with_twilios_codes() {
    let fake = FakeTwilio::start().await;
    let t = Some(DEFAULT_AUTH_TOKEN);
    let long = "x".repeat(1601);
    let cases: Vec<Case> = vec![
        (None, vec![("To", "+15550002222")], 401, 20003),
        (Some("wrong"), vec![("To", "+15550002222")], 401, 20003),
        (t, vec![("From", "+15550001111"), ("Body", "x")], 400, 21604),
        (
            t,
            vec![
                ("To", "5550002222"),
                ("From", "+15550001111"),
                ("Body", "x"),
            ],
            400,
            21211,
        ),
        (t, vec![("To", "+15550002222"), ("Body", "x")], 400, 21603),
        (
            t,
            vec![("To", "+15550002222"), ("From", "+15550001111")],
            400,
            21602,
        ),
        (
            t,
            vec![
                ("To", "+15550002222"),
                ("From", "+15550001111"),
                ("Body", &long),
            ],
            400,
            21617,
        ),
        (
            t,
            vec![
                ("To", "whatsapp:+15550002222"),
                ("From", "+15550001111"),
                ("Body", "x"),
            ],
            400,
            21910,
        ),
    ];
    for (token, pairs, want_status, want_code) in cases {
        let (status, body) = post(&fake, token, &pairs).await;
        assert_eq!(
            (status, body["code"].as_u64()),
            (want_status, Some(want_code)),
            "{pairs:?}"
        );
        assert_eq!(body["status"], want_status);
        assert!(
            body["more_info"]
                .as_str()
                .unwrap()
                .ends_with(&want_code.to_string())
        );
    }
    // A JSON body is not a form: Twilio sees no parameters at all.
    let (status, _, body) = send(
        client()
            .post(format!(
                "{}/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json",
                fake.url()
            ))
            .basic_auth(DEFAULT_ACCOUNT_SID, Some(DEFAULT_AUTH_TOKEN))
            .json(&serde_json::json!({"To": "+15550002222", "From": "+15550001111", "Body": "x"})),
    )
    .await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(21604)));
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn too_many_requests_is_20429() {
    let fake = FakeTwilio::start().await;
    fake.set_limit(1, Duration::from_secs(10));
    let ok = [
        ("To", "+15550002222"),
        ("From", "+15550001111"),
        ("Body", "x"),
    ];
    assert_eq!(post(&fake, Some(DEFAULT_AUTH_TOKEN), &ok).await.0, 201);
    let (status, body) = post(&fake, Some(DEFAULT_AUTH_TOKEN), &ok).await;
    assert_eq!((status, body["code"].as_u64()), (429, Some(20429)));
    assert_eq!(fake.count_429(), 1);
}

#[tokio::test]
async fn account_fetch_needs_the_right_credentials() {
    let fake = FakeTwilio::start().await;
    let url = format!(
        "{}/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}.json",
        fake.url()
    );
    let (status, _, body) = send(
        client()
            .get(&url)
            .basic_auth(DEFAULT_ACCOUNT_SID, Some(DEFAULT_AUTH_TOKEN)),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("active")));
    let (status, _, body) = send(client().get(&url)).await;
    assert_eq!((status, body["code"].as_u64()), (401, Some(20003)));
}
