//! `stop` refuses connections (including pooled keep-alive ones); `restart` serves the same
//! port again with the recorded state intact.

use klaxon_fakes::discord::FakeDiscord;
use klaxon_fakes::telegram::{DEFAULT_TOKEN, FakeTelegram};
use klaxon_fakes::webhook::WebhookSink;
use serde_json::json;

#[tokio::test]
async fn stop_refuses_and_restart_reuses_the_port() {
    let sink = WebhookSink::start().await;
    let url = sink.url();
    // One client for the whole test: its pooled connection must not survive `stop`.
    let client = crate::client();
    assert_eq!(
        client
            .post(&url)
            .json(&json!({}))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok(),
        Some(200)
    );

    sink.stop().await;
    let err = client
        .post(&url)
        .json(&json!({}))
        .send()
        .await
        .expect_err("stopped");
    assert!(err.is_connect() || err.is_request(), "{err}");
    let fresh = crate::client()
        .post(&url)
        .json(&json!({}))
        .send()
        .await
        .expect_err("refused");
    assert!(fresh.is_connect(), "{fresh}");
    sink.stop().await; // idempotent

    sink.restart().await;
    assert_eq!(sink.url(), url);
    let status = client
        .post(&url)
        .json(&json!({}))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(status.ok(), Some(200));
    assert_eq!(sink.count(), 2, "state survives a restart");
}

#[tokio::test]
async fn telegram_and_discord_restart_too() {
    let telegram = FakeTelegram::start().await;
    let discord = FakeDiscord::start().await;
    telegram.stop().await;
    discord.stop().await;
    let client = crate::client();
    let get_me = format!("{}/bot{DEFAULT_TOKEN}/getMe", telegram.url());
    assert!(client.get(&get_me).send().await.is_err());
    telegram.restart().await;
    discord.restart().await;
    assert_eq!(
        client
            .get(&get_me)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok(),
        Some(200)
    );
    let hook = format!("{}/api/webhooks/123/abc", discord.url());
    let status = client
        .post(&hook)
        .json(&json!({"content": "x"}))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(status.ok(), Some(204));
}
