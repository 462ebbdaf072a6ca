//! TradingView and Alertmanager webhooks in, over real HTTP: JSON or text whatever the
//! Content-Type says, the secret in the path, the source allow-list (also behind a proxy),
//! answered after the commit; Alertmanager's alerts one notification each, behind the token.

mod common;

use common::TestServer;
use klaxon_fakes::webhook::WebhookSink;
use serde_json::{Value, json};

const SECRET: &str = "tv-secret-0123456789abcdef";
const TOKEN: &str = "hooks-api-token-42";

fn cfg(sink: &WebhookSink, tradingview: &str) -> String {
    format!(
        r#"
[server]
api_token = "{TOKEN}"
[store]
url = "{{db}}"
[delivery]
health_interval = "1h"
[tradingview]
secret = "{SECRET}"
{tradingview}
[channels.hook]
url = "{}"
"#,
        common::json_url(sink)
    )
}

async fn post(
    s: &TestServer,
    path: &str,
    content_type: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut r = s
        .http
        .post(s.url(path))
        .header("content-type", content_type)
        .body(body.to_string());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

async fn get(s: &TestServer, path: &str) -> Value {
    s.http
        .get(s.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn tradingview_alerts_in_any_content_type_answered_after_the_commit() {
    common::crypto();
    let sink = WebhookSink::start().await;
    let s = TestServer::start(&cfg(&sink, "")).await;
    let path = format!("/hooks/tradingview/{SECRET}");
    // JSON sent as text/plain, as TradingView does when it cannot tell.
    let (code, v) = post(
        &s,
        &path,
        "text/plain; charset=utf-8",
        r#"{"ticker": "NQ1!", "strategy.order.action": "buy", "close": "21340.25", "strategy.market_position": "long", "comment": "break-and-enter"}"#,
        &[],
    )
    .await;
    assert_eq!(code, 202, "{v}");
    // Committed before the answer: it is there at once.
    let id = v["id"].as_str().unwrap();
    let n = get(&s, &format!("/api/v1/notifications/{id}")).await;
    assert_eq!(n["event_type"], "tradingview.alert");
    assert_eq!(n["data"]["ticker"], "NQ1!");
    assert_eq!(n["data"]["action"], "BUY");
    assert_eq!(n["data"]["position"], "long");
    // Plain text, and JSON broken by an empty placeholder: both kept as text.
    let (code, _) = post(&s, &path, "text/plain", "ES crossed VWAP", &[]).await;
    assert_eq!(code, 202);
    let (code, _) = post(&s, &path, "application/json", r#"{"price": }"#, &[]).await;
    assert_eq!(code, 202);
    common::wait_received(&sink, 3).await;
    let titles: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.body["title"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        titles
            .iter()
            .any(|t| t == "TradingView: BUY NQ1! @ 21,340.25"),
        "{titles:?}"
    );
    // A wrong secret looks like no route at all; an empty alert says what is wrong.
    let (code, _) = post(
        &s,
        "/hooks/tradingview/wrong-secret-000000000",
        "text/plain",
        "x",
        &[],
    )
    .await;
    assert_eq!(code, 404);
    let (code, v) = post(&s, &path, "text/plain", "  ", &[]).await;
    assert_eq!((code, v["error"]["field"].as_str()), (400, Some("body")));
    s.stop().await;
}

#[tokio::test]
async fn tradingview_allow_list_direct_and_behind_a_proxy() {
    common::crypto();
    let sink = WebhookSink::start().await;
    let path = format!("/hooks/tradingview/{SECRET}");
    // Only TradingView's addresses: a local caller is refused.
    let s = TestServer::start(&cfg(&sink, "allow_ips = [\"tradingview\"]")).await;
    let (code, v) = post(&s, &path, "text/plain", "hi", &[]).await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    // Without a trusted proxy configured, a forwarded header proves nothing.
    let (code, _) = post(
        &s,
        &path,
        "text/plain",
        "hi",
        &[("x-forwarded-for", "52.89.214.238")],
    )
    .await;
    assert_eq!(code, 403);
    s.stop().await;

    let s = TestServer::start(&cfg(
        &sink,
        "allow_ips = [\"tradingview\"]\ntrusted_proxy_header = \"X-Forwarded-For\"",
    ))
    .await;
    // The proxy appended TradingView's address: accepted. A spoofed first entry is not.
    let (code, v) = post(
        &s,
        &path,
        "text/plain",
        "hi",
        &[("x-forwarded-for", "10.0.0.9, 52.89.214.238")],
    )
    .await;
    assert_eq!(code, 202, "{v}");
    let (code, _) = post(
        &s,
        &path,
        "text/plain",
        "hi",
        &[("x-forwarded-for", "52.89.214.238, 10.0.0.9")],
    )
    .await;
    assert_eq!(code, 403);
    s.stop().await;
}

#[tokio::test]
async fn alertmanager_alerts_become_notifications_behind_the_token() {
    common::crypto();
    let sink = WebhookSink::start().await;
    let s = TestServer::start(&cfg(&sink, "")).await;
    let payload = json!({
        "version": "4", "receiver": "klaxon", "status": "firing", "groupKey": "{}:{}", "truncatedAlerts": 0,
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "BotDown", "severity": "critical", "instance": "bot-1"},
             "annotations": {"summary": "Trading bot bot-1 stopped sending heartbeats"},
             "startsAt": "2026-12-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "http://prom:9090/graph", "fingerprint": "f1"},
            {"status": "resolved", "labels": {"alertname": "FeedLag", "severity": "warning"},
             "annotations": {"description": "Market data lag back under 1 s"},
             "startsAt": "2026-12-01T09:00:00Z", "endsAt": "2026-12-01T09:30:00Z", "fingerprint": "f2"}
        ]
    });
    let (code, _) = post(
        &s,
        "/hooks/alertmanager",
        "application/json",
        &payload.to_string(),
        &[],
    )
    .await;
    assert_eq!(code, 401, "behind the API token like the API");
    let auth = format!("Bearer {TOKEN}");
    let (code, v) = post(
        &s,
        "/hooks/alertmanager",
        "application/json",
        &payload.to_string(),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(code, 202, "{v}");
    let ids = v["notifications"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    let first = get(
        &s,
        &format!("/api/v1/notifications/{}", ids[0].as_str().unwrap()),
    )
    .await;
    assert_eq!(first["title"], "[FIRING] BotDown on bot-1");
    assert_eq!(first["severity"], "critical");
    assert_eq!(
        first["message"],
        "Trading bot bot-1 stopped sending heartbeats"
    );
    let second = get(
        &s,
        &format!("/api/v1/notifications/{}", ids[1].as_str().unwrap()),
    )
    .await;
    assert_eq!(second["title"], "[RESOLVED] FeedLag");
    assert_eq!(second["severity"], "info");
    let (code, v) = post(
        &s,
        "/hooks/alertmanager",
        "application/json",
        &json!({"version": "4", "alerts": [{"status": "pending"}]}).to_string(),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(
        (code, v["error"]["field"].as_str()),
        (400, Some("alerts[0].status"))
    );
    s.stop().await;
}

/// A NUL in an alert is dropped, not refused: schemathesis sent this exact body (a NUL amid
/// bytes that are not UTF-8), which PostgreSQL could not store (503) and, once NULs were
/// refused, became a 400 — and TradingView does not resend a refused alert.
#[tokio::test]
async fn a_nul_in_an_alert_is_dropped_on_every_store() {
    let sink = WebhookSink::start().await;
    let pg = klaxon_store::testing::PgDb::create().await;
    let mut stores = vec!["{db}".to_string()];
    stores.extend(pg.as_ref().map(|db| db.url.clone()));
    for store in stores {
        let s = TestServer::start(
            &cfg(&sink, "allow_ips = []").replace("url = \"{db}\"", &format!("url = \"{store}\"")),
        )
        .await;
        let body = b"\xf2\xb6\xa5\x84a\xc3\xab@\t\xc3\xafh\xc2\xb3?\xc2\x85\x00\xc2\x89|".to_vec();
        let r = s
            .http
            .post(s.url(&format!("/hooks/tradingview/{SECRET}")))
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(code, 202, "{store}: {v}");
        let stored = get(
            &s,
            &format!("/api/v1/notifications/{}", v["id"].as_str().unwrap()),
        )
        .await;
        let message = stored["message"].as_str().unwrap();
        assert!(
            message.contains("a\u{eb}@") && !message.contains('\0'),
            "{message:?}"
        );
        s.stop().await;
    }
}
