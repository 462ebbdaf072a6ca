//! The CLI's operator commands against a running service, as a user runs them: `channels`,
//! `channels disable/enable/mute/unmute`, `test`, `dead-letters`, `dead-letters retry`.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::TestServer;
use klaxon_fakes::webhook::WebhookSink;
use serde_json::json;

const TOKEN: &str = "operator-token-123";

/// Runs `klaxon ARGS` with a config that points at the running test server.
async fn klaxon(cfg: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_klaxon"));
    c.args(args)
        .arg("--config")
        .arg(cfg)
        .env("RUST_LOG", "error");
    let out: Output = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_drive_the_running_service() {
    common::crypto();
    let sink = WebhookSink::start().await;
    let server_cfg = format!(
        r#"
[server]
api_token = "{TOKEN}"
[store]
url = "{{db}}"
[delivery]
health_interval = "1h"
[delivery.retry]
retries = 0
[channels.hook]
url = "{}"
"#,
        common::json_url(&sink)
    );
    let s = TestServer::start(&server_cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("klaxon.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"{}\"\napi_token = \"{TOKEN}\"\n[channels.hook]\nurl = \"log://\"\n",
            s.addr
        ),
    )
    .unwrap();

    let (code, out, err) = klaxon(&cfg, &["channels"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hook") && out.contains("webhook"), "{out}");

    let (code, out, _) = klaxon(&cfg, &["channels", "disable", "hook"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("disabled"), "{out}");
    let (code, _, err) = klaxon(&cfg, &["test", "hook"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("disabled"), "{err}");

    let (code, out, _) = klaxon(&cfg, &["channels", "enable", "hook"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(" ok "), "{out}");
    let (code, out, err) = klaxon(&cfg, &["test", "hook"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("delivered"), "{out}");
    assert_eq!(sink.count(), 1);

    let (code, out, _) = klaxon(&cfg, &["channels", "mute", "hook", "--for", "2h"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("muted until"), "{out}");
    let (code, out, _) = klaxon(&cfg, &["channels", "unmute", "hook"]).await;
    assert_eq!(code, 0);
    assert!(!out.contains("muted until"), "{out}");

    // A dead letter: the receiver refuses, then takes it on the operator's retry.
    sink.set_status_for_all(400);
    let r = s
        .http
        .post(s.url("/api/v1/notifications"))
        .bearer_auth(TOKEN)
        .json(&json!({"title": "Stop hit", "message": "ES stop at 5,980"}))
        .send()
        .await
        .unwrap();
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let delivery = loop {
        let (_, out, _) = klaxon(&cfg, &["dead-letters"]).await;
        if let Some(line) = out.lines().find(|l| l.contains("Stop hit")) {
            break line.split_whitespace().next().unwrap().to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter: {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    sink.set_status_for_all(200);
    let (code, out, _) = klaxon(&cfg, &["dead-letters", "retry", &delivery]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("1 "), "{out}");
    let r = s
        .http
        .get(s.url(&format!("/api/v1/notifications/{id}")))
        .bearer_auth(TOKEN);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value = r
            .try_clone()
            .unwrap()
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["deliveries"][0]["status"] == "delivered" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, out, _) = klaxon(&cfg, &["dead-letters"]).await;
    assert!(out.contains("no dead letters"), "{out}");
    let (code, _, err) = klaxon(&cfg, &["dead-letters", "retry", "--all"]).await;
    assert_eq!(code, 0, "{err}");

    // A wrong token is refused with the API's message.
    std::fs::write(
        &cfg,
        format!("[server]\nlisten = \"{}\"\napi_token = \"wrong\"\n", s.addr),
    )
    .unwrap();
    let (code, _, err) = klaxon(&cfg, &["channels"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("token"), "{err}");
    s.stop().await;
}
