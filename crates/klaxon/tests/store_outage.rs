//! The store goes away under a running service (issue 7, reliability 4): Klaxon on the real
//! PostgreSQL, reached through a TCP proxy the test cuts. While the line is down the API answers
//! 503 `store_unavailable` — it never accepts what it cannot keep — and `/ready` says so; when
//! the line comes back Klaxon recovers by itself: new notifications are accepted and everything
//! accepted is delivered. The store holds exactly the notifications that were answered 202.

mod common;

use std::time::Duration;

use common::TestServer;
use klaxon_fakes::proxy::TcpProxy;
use klaxon_fakes::webhook::WebhookSink;
use klaxon_store::testing::PgDb;
use serde_json::json;
use sqlx::Connection;

/// The PostgreSQL server's `host:port` from its URL.
fn server_addr(url: &str) -> std::net::SocketAddr {
    let u = url::Url::parse(url).expect("KLAXON_TEST_DATABASE_URL is a URL");
    let host = u.host_str().unwrap_or("127.0.0.1");
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{}", u.port().unwrap_or(5432))
        .parse()
        .expect("the test database is on an IP address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_answers_503_and_recovers_by_itself() {
    common::crypto();
    let Some(db) = PgDb::create().await else {
        return;
    };
    let proxy = TcpProxy::start(server_addr(&db.url)).await;
    let sink = WebhookSink::start().await;
    let cfg = format!(
        r#"
[store]
url = "{}"
[delivery]
health_interval = "1h"
[channels.hook]
url = "{}"
"#,
        db.url_via(&proxy.addr().to_string()),
        common::json_url(&sink)
    );
    let s = TestServer::start(&cfg).await;
    let mut accepted = vec![s.send(json!({"message": "before"})).await];
    common::wait_received(&sink, 1).await;

    proxy.cut();
    // Every request while the line is down is refused with the reason; none is accepted.
    let mut refused = 0;
    for i in 0..3 {
        let (code, body) = s
            .post(
                "/api/v1/notifications",
                &json!({"message": format!("during {i}")}),
            )
            .await;
        assert_eq!(code, 503, "{body}");
        assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
        refused += 1;
    }
    let (code, ready) = s.get("/ready").await;
    assert_eq!(code, 503, "{ready}");
    assert_eq!(ready["status"], "not_ready", "{ready}");
    assert_eq!(s.get("/health").await.0, 200, "alive, just not ready");
    assert!(
        !ready.to_string().contains(db.url.as_str()),
        "no database URL in /ready: {ready}"
    );

    proxy.restore();
    // Recovers without a restart: the pool reconnects on its own.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = s
            .post("/api/v1/notifications", &json!({"message": "after"}))
            .await;
        if code == 202 {
            accepted.push(body["id"].as_str().unwrap().to_string());
            break;
        }
        assert_eq!(code, 503, "{body}");
        refused += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service did not recover within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s.get("/ready").await.0, 200);
    for id in &accepted {
        let n = s.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(n["deliveries"][0]["status"], "delivered", "{n}");
    }
    // Nothing half-accepted: the store holds exactly what was answered 202.
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let (stored,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM notifications")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(stored as usize, accepted.len());
    c.close().await.ok();
    println!(
        "accepted {}, refused with 503 {refused}, connections refused by the cut line {}",
        accepted.len(),
        proxy.refused()
    );
    s.stop().await;
}
