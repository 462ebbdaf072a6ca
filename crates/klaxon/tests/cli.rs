//! The `klaxon` command as a user runs it: `check-config` names the bad key and line, `send`
//! delivers straight to a provider and says so in its exit code, `migrate` prepares a store,
//! `prune` counts and removes old history, `health` answers for a container health check.

mod common;

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

fn explain(config: &std::path::Path, file: &std::path::Path) -> std::process::Output {
    klaxon()
        .arg("route")
        .arg("--config")
        .arg(config)
        .arg("--explain")
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn route_explain_says_rule_by_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("klaxon.toml");
    std::fs::write(
        &path,
        r#"
[channels.ops]
url = "log://"
[channels.signals]
url = "log://"
[channels.fallback]
url = "log://"

[[routes]]
match = { severity = ">=warning" }
to = ["ops"]

[[routes]]
match = { event_type = "signal.*", symbol = "/^MNQ/" }
to = ["signals"]
dedup_window = "5m"
group_by = ["symbol"]
group_wait = "2s"

[routing]
default = ["fallback"]

[sources.webhook_signals.strategies]
"muted-*" = false
"#,
    )
    .unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        r#"{"event_type": "signal.generated", "source": "webhook_signals",
            "data": {"strategy_name": "muted-1", "action": "BUY", "symbol": "MNQZ5", "price": 1}}"#,
    )
    .unwrap();
    let out = explain(&path, &event);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "routes[0]: not matched: severity `info` does not match `>=warning`",
        "routes[1]: matched",
        "channels: signals",
        "reason: matched routes[1]",
        "suppressed: strategy `muted-1` of source `webhook_signals` is switched off",
        "dedup: key auto:",
        "within 5m",
        "group (routes[1]): by [symbol], wait 2s",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }

    // A notification no rule matches goes to the default route.
    std::fs::write(&event, r#"{"message": "hello", "dedup_key": "k"}"#).unwrap();
    let out = explain(&path, &event);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "routes[1]: not matched: event_type is absent (pattern `signal.*`)",
        "channels: fallback",
        "reason: no rule matched: the default route",
        "dedup: key k within 5m",
        "group: off",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }

    // Bad input names the field.
    std::fs::write(&event, r#"{"message": "m", "severity": "loud"}"#).unwrap();
    let out = explain(&path, &event);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("severity"), "{err}");
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

/// Runs `klaxon send` with extra environment and returns (exit code, stdout, stderr).
async fn send_cli(args: Vec<String>, env: Vec<(&'static str, String)>) -> (i32, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        let mut c = klaxon();
        c.arg("send").args(&args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `klaxon send --to` works with every scheme, files included where the provider takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_every_new_scheme() {
    use klaxon_fakes::{ntfy::FakeNtfy, pushover, slack, twilio};
    klaxon::app::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("chart.png");
    std::fs::write(&chart, b"\x89PNG\r\n\x1a\n fake chart bytes").unwrap();
    let attach = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(["--attach".into(), chart.display().to_string()]);
        v.push("ES stopped out at 5,980".into());
        v
    };

    let sl = slack::FakeSlack::start().await;
    let (code, out, err) = send_cli(
        attach(&[
            "--to",
            &format!("slack://{}", slack::DEFAULT_WEBHOOK),
            "--title",
            "Stop",
        ]),
        vec![("KLAXON_SLACK_API", sl.url())],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sl.messages().len(), 1);
    assert!(
        err.contains("cannot carry files"),
        "a note says the file stayed behind: {err}"
    );

    let tw = twilio::FakeTwilio::start().await;
    let to = format!(
        "twilio://{}:{}@+15550001111/+15550002222/+15550003333",
        twilio::DEFAULT_ACCOUNT_SID,
        twilio::DEFAULT_AUTH_TOKEN
    );
    let (code, out, err) = send_cli(
        vec![
            "--to".into(),
            to,
            "--title".into(),
            "Stop".into(),
            "ES stopped out".into(),
        ],
        vec![("KLAXON_TWILIO_API", tw.url())],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let sms = tw.messages();
    assert_eq!(sms.len(), 2, "one SMS per number");
    assert!(
        sms.iter()
            .all(|m| m.num_segments == 1 && m.body.contains("ES stopped out"))
    );

    let nt = FakeNtfy::start().await;
    let (code, out, err) = send_cli(
        attach(&[
            "--to",
            &format!("{}/alerts", nt.url().replacen("http://", "ntfy://", 1)),
        ]),
        vec![],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let m = &nt.messages()[0];
    assert_eq!(m.topic, "alerts");
    assert_eq!(
        m.attachment.as_ref().map(|a| a.name.as_str()),
        Some("chart.png")
    );

    let po = pushover::FakePushover::start().await;
    let (code, out, err) = send_cli(
        attach(&[
            "--to",
            &format!(
                "pover://{}@{}",
                pushover::DEFAULT_USER,
                pushover::DEFAULT_TOKEN
            ),
            "--severity",
            "critical",
        ]),
        vec![("KLAXON_PUSHOVER_API", po.url())],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let m = &po.messages()[0];
    assert_eq!(m.field("priority"), Some("2"));
    assert!(m.attachment.is_some());

    // Email through a real SMTP server, the file as a MIME part.
    let Some(py) = klaxon_fakes::smtp::python() else {
        return;
    };
    let smtp = klaxon_fakes::smtp::SmtpServer::start(
        &py,
        klaxon_fakes::smtp::SmtpMode::StartTls,
        "bot",
        "pw-cli-7",
    );
    let to = format!(
        "mailto://bot:pw-cli-7@127.0.0.1:{}?to=ops@example.com&from=alerts@example.com&verify=no",
        smtp.port()
    );
    let (code, out, err) = send_cli(attach(&["--to", &to, "--title", "Stop"]), vec![]).await;
    assert_eq!(code, 0, "{out}{err}");
    let mail = smtp.wait_for(1, std::time::Duration::from_secs(5)).await;
    let raw = String::from_utf8_lossy(&mail[0].bytes()).into_owned();
    assert!(
        raw.contains("chart.png") && raw.contains("image/png"),
        "{raw}"
    );
    assert!(!out.contains("pw-cli-7") && !err.contains("pw-cli-7"));
}

/// `klaxon health` exits 0 while a server answers and 1 once it is gone; `klaxon prune
/// --dry-run` counts what `klaxon prune` then removes, and nothing is younger than the default
/// retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_and_health() {
    common::crypto();
    let sink = WebhookSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("k.db").display());
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = common::Binary::serve(
        &[],
        &[
            ("KLAXON_STORE_URL", &db),
            ("WEBHOOK_URL", &common::json_url(&sink)),
        ],
        port,
    )
    .await;
    let http = reqwest::Client::new();
    for i in 0..3 {
        let r = http
            .post(format!("{}/api/v1/notifications", server.base))
            .json(&serde_json::json!({"message": format!("m{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    common::wait_received(&sink, 3).await;

    let run = |args: &'static [&'static str]| {
        let (db, listen) = (db.clone(), listen.clone());
        tokio::task::spawn_blocking(move || {
            let out = klaxon()
                .args(args)
                .args(["--config", "/nonexistent/klaxon.toml"])
                .env("KLAXON_STORE_URL", db)
                .env("KLAXON_LISTEN", listen)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        })
    };
    assert_eq!(run(&["health"]).await.unwrap(), (Some(0), "ok\n".into()));
    server.kill();
    assert_eq!(run(&["health"]).await.unwrap().0, Some(1));

    // Recorded a moment ago: nothing is 30 days old.
    let (code, out) = run(&["prune", "--dry-run"]).await.unwrap();
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("would remove 0 notification(s), 0 delivery(ies), 0 attempt(s)"),
        "{out}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (_, out) = run(&["prune", "--dry-run", "--older-than", "0s"])
        .await
        .unwrap();
    assert!(
        out.starts_with("would remove 3 notification(s), 3 delivery(ies), 3 attempt(s)"),
        "{out}"
    );
    let (code, out) = run(&["prune", "--older-than", "0s"]).await.unwrap();
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("removed 3 notification(s), 3 delivery(ies), 3 attempt(s)"),
        "{out}"
    );
    let (_, out) = run(&["prune", "--dry-run", "--older-than", "0s"])
        .await
        .unwrap();
    assert!(out.starts_with("would remove 0 notification(s)"), "{out}");
}
