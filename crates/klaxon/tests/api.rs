//! The HTTP API as a user meets it: bad input gets a 4xx naming the field, never a 5xx, and
//! never disturbs what was already accepted.

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::json;

const CONFIG: &str = r#"
[store]
url = "{db}"
[server]
body_limit = 4096
[channels.log]
url = "log://"
"#;

#[tokio::test]
async fn bad_input_is_a_4xx_naming_the_field_and_loses_nothing() {
    let s = TestServer::start(CONFIG).await;
    let (code, ok) = s
        .post(
            "/api/v1/notifications",
            &json!({"message": "first", "idempotency_key": "k"}),
        )
        .await;
    assert_eq!(code, 202, "{ok}");
    let id = ok["id"].as_str().unwrap().to_string();

    let cases: Vec<(&str, reqwest::Body, u16, Option<&str>)> = vec![
        ("invalid JSON", "{\"message\": ".into(), 400, None),
        ("not an object", "[1,2]".into(), 400, None),
        (
            "wrong type",
            json!({"message": 42}).to_string().into(),
            400,
            Some("message"),
        ),
        (
            "missing message",
            json!({"title": "t"}).to_string().into(),
            400,
            Some("message"),
        ),
        (
            "empty message",
            json!({"message": "  "}).to_string().into(),
            400,
            Some("message"),
        ),
        (
            "bad severity",
            json!({"message": "m", "severity": "loud"})
                .to_string()
                .into(),
            400,
            Some("severity"),
        ),
        (
            "unknown field",
            json!({"message": "m", "chanels": ["log"]})
                .to_string()
                .into(),
            400,
            Some("chanels"),
        ),
        (
            "unknown channel",
            json!({"message": "m", "channels": ["nope"]})
                .to_string()
                .into(),
            422,
            Some("channels"),
        ),
        (
            "bad time",
            json!({"message": "m", "send_at": "soon"})
                .to_string()
                .into(),
            400,
            Some("send_at"),
        ),
        (
            "oversized",
            json!({"message": "x".repeat(10_000)}).to_string().into(),
            413,
            None,
        ),
    ];
    for (what, body, want, field) in cases {
        let (code, v) = s.post_raw("/api/v1/notifications", body).await;
        assert_eq!(code, want, "{what}: {v}");
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{what}: {v}"
        );
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], json!(f), "{what}: {v}");
        }
    }

    // Batch: per-item answers, good items committed together, bad ones named by index.
    let (code, v) = s
        .post(
            "/api/v1/notifications/batch",
            &json!([{"message": "a"}, {"message": 1}, {"message": "c", "channels": ["x"]}]),
        )
        .await;
    assert_eq!(code, 202, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(v["results"][1]["error"]["field"], json!("[1].message"));
    assert_eq!(v["results"][2]["error"]["field"], json!("[2].channels"));
    let (code, _) = s
        .post(
            "/api/v1/notifications/batch",
            &json!(vec![json!({"message": "m"}); 1001]),
        )
        .await;
    assert_eq!(code, 413);

    // A repeat of the idempotency key returns the first notification.
    let (code, again) = s
        .post(
            "/api/v1/notifications",
            &json!({"message": "second", "idempotency_key": "k"}),
        )
        .await;
    assert_eq!(
        (code, again["id"].as_str(), again["status"].as_str()),
        (200, Some(id.as_str()), Some("duplicate"))
    );

    // Bad paths and queries.
    assert_eq!(s.get("/api/v1/notifications/not-a-uuid").await.0, 400);
    assert_eq!(
        s.get(&format!("/api/v1/notifications/{}", uuid::Uuid::now_v7()))
            .await
            .0,
        404
    );
    let (code, v) = s.get("/api/v1/notifications?severity=loud").await;
    assert_eq!(
        (code, v["error"]["field"].as_str()),
        (400, Some("severity"))
    );
    assert_eq!(s.get("/api/v1/notifications?limit=0").await.0, 400);
    assert_eq!(s.get("/nowhere").await.0, 404);

    // The first notification is untouched and delivered.
    let v = s.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(v["message"], json!("first"));
    assert_eq!(v["deliveries"][0]["status"], json!("delivered"));
    assert_eq!(
        v["deliveries"][0]["attempts"][0]["outcome"],
        json!("delivered")
    );
    s.stop().await;
}

/// A NUL (U+0000) in a text the store keeps in a column is a 400 naming the field, on every
/// store: schemathesis found that PostgreSQL (which cannot keep one) made it a 503
/// `store_unavailable` — an answer that tells the sender to retry the same request forever —
/// and the same for a text filter, which now matches nothing.
#[tokio::test]
async fn a_nul_in_text_is_a_400_naming_the_field_on_every_store() {
    let pg = klaxon_store::testing::PgDb::create().await;
    let mut stores = vec!["{db}".to_string()];
    stores.extend(pg.as_ref().map(|db| db.url.clone()));
    for store in stores {
        let s = TestServer::start(&CONFIG.replace("{db}", &store)).await;
        let cases = [
            (
                "/api/v1/notifications",
                json!({"message": "a\0b"}),
                "message",
            ),
            (
                "/api/v1/notifications",
                json!({"message": "m", "idempotency_key": "k\0"}),
                "idempotency_key",
            ),
            (
                "/api/v1/events",
                json!({"event_type": "x\0", "data": {}}),
                "event_type",
            ),
            (
                "/api/v1/events",
                json!({"event_type": "x", "data": {"message": "\0"}}),
                "data",
            ),
        ];
        for (path, body, field) in cases {
            let (code, v) = s.post(path, &body).await;
            assert_eq!(code, 400, "{store}: {body}: {v}");
            assert_eq!(v["error"]["field"], json!(field), "{v}");
        }
        let (code, v) = s
            .post(
                "/api/v1/notifications/batch",
                &json!([{"message": "ok"}, {"title": "\0", "message": "m"}]),
            )
            .await;
        assert_eq!(code, 202, "{v}");
        assert_eq!(v["results"][1]["error"]["field"], json!("[1].title"));
        // A filter with a NUL matches nothing (no stored text has one) instead of failing.
        for query in [
            "/api/v1/notifications?q=%00",
            "/api/v1/notifications?channel=%00",
            "/api/v1/dead-letters?channel=%00",
        ] {
            let (code, v) = s.get(query).await;
            assert_eq!((code, &v["items"]), (200, &json!([])), "{query}: {v}");
        }
        // `data` is kept as JSON, where a NUL is escaped: accepted.
        let (code, v) = s
            .post(
                "/api/v1/notifications",
                &json!({"message": "m", "data": {"k": "\0"}}),
            )
            .await;
        assert_eq!(code, 202, "{v}");
        s.stop().await;
    }
}

#[tokio::test]
async fn events_history_status_and_metrics() {
    let s = TestServer::start(CONFIG).await;
    let envelope = json!({
        "event_type": "signal.generated", "source": "strategy_engine",
        "data": {"strategy_name": "break-and-enter", "action": "BUY", "symbol": "MNQI", "price": 23488.75, "comment": "EXIT_50", "metadata": {}}
    });
    let (code, v) = s.post("/api/v1/events", &envelope).await;
    assert_eq!(code, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let n = s.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(n["title"], json!("BUY MNQI @ 23,488.75"));
    assert_eq!(n["source"], json!("strategy_engine"));

    let (code, v) = s
        .post("/api/v1/events", &json!([envelope, {"event_type": "x"}]))
        .await;
    assert_eq!(code, 202);
    assert_eq!(v["results"][1]["error"]["field"], json!("[1].data"));

    for i in 0..3 {
        s.post(
            "/api/v1/notifications",
            &json!({"message": format!("m{i}"), "severity": "error"}),
        )
        .await;
    }
    let (_, page) = s.get("/api/v1/notifications?limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page2) = s
        .get(&format!("/api/v1/notifications?limit=10&cursor={cursor}"))
        .await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 3);
    let (_, errs) = s.get("/api/v1/notifications?severity=error").await;
    assert_eq!(errs["items"].as_array().unwrap().len(), 3);

    let (code, st) = s.get("/status").await;
    assert_eq!(code, 200);
    assert_eq!(st["store"]["ok"], json!(true));
    assert_eq!(st["channels"][0]["name"], json!("log"));
    assert_eq!(s.get("/health").await.0, 200);
    assert_eq!(s.get("/ready").await.0, 200);
    let text = s.metrics().await;
    for name in [
        "klaxon_notifications_received_total",
        "klaxon_deliveries_total",
        "klaxon_delivery_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    s.stop().await;
}

#[tokio::test]
async fn api_token_is_required_when_set() {
    let s = TestServer::start_env(
        &format!("{CONFIG}\n"),
        &[("KLAXON_API_TOKEN", "s3cret-token-value")],
    )
    .await;
    let (code, v) = s
        .post("/api/v1/notifications", &json!({"message": "m"}))
        .await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let r = s
        .http
        .post(s.url("/api/v1/notifications"))
        .bearer_auth("s3cret-token-value")
        .json(&json!({"message": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // Liveness stays open for health checkers.
    assert_eq!(s.get("/health").await.0, 200);
    s.stop().await;
}

#[test]
fn refuses_public_listen_without_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(CONFIG, &[], &dir);
    cfg.server.listen = "0.0.0.0:8080".into();
    let err = klaxon::server::listen_addr(&cfg).unwrap_err();
    assert!(err.to_string().contains("api_token"), "{err}");
    cfg.server.api_token = Some(klaxon_core::Secret::new("t"));
    assert!(klaxon::server::listen_addr(&cfg).is_ok());
}
