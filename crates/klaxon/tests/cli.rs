//! The `klaxon` command as a user runs it: `check-config` names the bad key and line, `send`
//! delivers straight to a provider and says so in its exit code, `migrate` prepares a store.

use std::process::Command;

use klaxon_fakes::FailMode;
use klaxon_fakes::telegram::FakeTelegram;
use klaxon_fakes::webhook::WebhookSink;

fn klaxon() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_klaxon"));
    for var in [
        "TELEGRAM_BOT_TOKEN",
        "TELEGRAM_CHAT_ID",
        "DISCORD_WEBHOOK_URL",
        "WEBHOOK_URL",
        "NOTIFICATION_CHANNELS",
        "KLAXON_CONFIG",
    ] {
        c.env_remove(var);
    }
    c.env("RUST_LOG", "error");
    c
}

#[test]
fn check_config_names_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("klaxon.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:8080\"\n\n[channels.ops]\nurl = \"tgram://123456:ABCDEF/1\"\nsilnet = true\n").unwrap();
    let out = klaxon()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("line 6") && err.contains("channels.ops.silnet"),
        "{err}"
    );

    std::fs::write(&path, "[channels.ops]\nurl = \"tgram://${TG_TOKEN}/42\"\n").unwrap();
    let out = klaxon()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("TG_TOKEN", "123456:SECRET-VALUE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ops") && text.contains("telegram"), "{text}");
    assert!(!text.contains("SECRET-VALUE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_exit_code_says_delivered_or_not() {
    let tg = FakeTelegram::start().await;
    let url = tg.url();
    let out = tokio::task::spawn_blocking(move || {
        klaxon()
            .args([
                "send",
                "--to",
                "tgram://123456:TEST-token_abc/42",
                "--title",
                "Deploy",
                "bot v2 is <live>",
            ])
            .env("KLAXON_TELEGRAM_API", url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("delivered to 42"));
    assert_eq!(
        tg.messages()[0].plain.lines().nth(1),
        Some("bot v2 is <live>")
    );

    // A permanent refusal: exit code 1 and the provider's reason, no token.
    let sink = WebhookSink::start().await;
    sink.set_fail(FailMode::Status(400));
    let to = sink.url().replacen("http://", "json://", 1) + "/?token=SECRETQ";
    let out = tokio::task::spawn_blocking(move || {
        klaxon()
            .args(["send", "--to", &to, "hello"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("rejected") && err.contains("400") && !err.contains("SECRETQ"),
        "{err}"
    );
}

#[test]
fn migrate_prepares_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("m.db").display());
    let out = klaxon()
        .args(["migrate", "--config", "/nonexistent.toml"])
        .env("KLAXON_STORE_URL", &db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("m.db").exists());
}
