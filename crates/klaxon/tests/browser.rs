//! The dashboard in a real headless Chromium, driven by Playwright (`tests/browser/drive.mjs`,
//! `playwright-core` from npm, run by node) against the real service with fake providers: the
//! cards, the switch (and that it stops deliveries and survives a restart), "Send test", retry
//! of a dead letter, live updates, and the token prompt.
//!
//! Needs Chromium (`KLAXON_TEST_CHROMIUM`, else `/usr/bin/chromium`), node, and `npm ci` run in
//! `tests/browser/`. Without them the tests say so and pass, unless `KLAXON_REQUIRE_SERVICES=1`
//! (as in `.ci/run`, which installs them). The screenshot in `docs/dashboard.png` is made by
//! `cargo test -p klaxon --test browser -- --ignored screenshot`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::TestServer;
use klaxon_fakes::telegram::FakeTelegram;
use klaxon_fakes::webhook::WebhookSink;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

const TG_TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
const API_TOKEN: &str = "dash-test-token-7f3a9c";

/// One browser at a time: two cores are shared, and Chromium is heavy.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn driver_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The browser to use, or `None` (with a notice) when this machine has none and the run does
/// not require one.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("KLAXON_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let driver = driver_dir().join("node_modules/playwright-core");
    let missing = if !path.exists() {
        Some(format!("no Chromium at {}", path.display()))
    } else if !driver.exists() {
        Some(format!(
            "no playwright-core in {} (run `npm ci` there)",
            driver_dir().display()
        ))
    } else {
        None
    };
    match missing {
        None => Some(path),
        Some(why) if std::env::var("KLAXON_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("browser tests required but {why}")
        }
        Some(why) => {
            eprintln!("SKIPPED browser test: {why}");
            None
        }
    }
}

/// A running scenario of `drive.mjs`.
struct Drive {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    scenario: String,
}

impl Drive {
    fn start(
        chromium: &Path,
        scenario: &str,
        s: &TestServer,
        arg: &str,
        env: &[(&str, &str)],
    ) -> Drive {
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg("drive.mjs")
            .arg(scenario)
            .arg(format!("http://{}", s.addr))
            .arg(arg)
            .current_dir(driver_dir())
            .env("KLAXON_TEST_CHROMIUM", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("node runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Drive {
            child,
            stdin,
            stdout,
            scenario: scenario.into(),
        }
    }

    /// Waits for the page to reach step `name`.
    async fn step(&mut self, name: &str) {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
                .await
                .unwrap_or_else(|_| panic!("{}: no step `{name}` within 60 s", self.scenario))
                .unwrap();
            match line {
                Some(l) if l == format!("STEP {name}") => return,
                Some(l) => eprintln!("{}: {l}", self.scenario),
                None => panic!("{}: ended before step `{name}`", self.scenario),
            }
        }
    }

    /// Lets the page go on past its step, telling it `reply`.
    async fn go(&mut self, reply: &str) {
        self.stdin
            .write_all(format!("{reply}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn finish(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{}: still running after 120 s", self.scenario))
            .unwrap();
        while let Ok(Some(l)) = self.stdout.next_line().await {
            eprintln!("{}: {l}", self.scenario);
        }
        assert!(
            status.success(),
            "browser scenario `{}` failed",
            self.scenario
        );
    }
}

async fn run(chromium: &Path, scenario: &str, s: &TestServer, arg: &str, env: &[(&str, &str)]) {
    Drive::start(chromium, scenario, s, arg, env).finish().await;
}

struct World {
    server: TestServer,
    alerts: WebhookSink,
    backup: WebhookSink,
    _tg: FakeTelegram,
}

fn cfg(alerts: &WebhookSink, backup: &WebhookSink, extra: &str) -> String {
    format!(
        r#"
{extra}
[store]
url = "{{db}}"
[delivery]
health_interval = "1h"
[delivery.retry]
retries = 0
base = "50ms"
jitter = 0.0
[channels.alerts]
url = "{}"
[channels.backup]
url = "{}"
[channels.desk]
url = "tgram://{TG_TOKEN}/-100222333"
"#,
        common::json_url(alerts),
        common::json_url(backup),
    )
}

async fn world(extra: &str) -> World {
    common::crypto();
    let alerts = WebhookSink::start().await;
    let backup = WebhookSink::start().await;
    let tg = FakeTelegram::start().await;
    tg.with_token(TG_TOKEN);
    let server = TestServer::start_env(
        &cfg(&alerts, &backup, extra),
        &[("KLAXON_TELEGRAM_API", &tg.url())],
    )
    .await;
    World {
        server,
        alerts,
        backup,
        _tg: tg,
    }
}

async fn send(s: &TestServer, body: Value) -> String {
    s.send(body).await
}

/// Some history for the cards, the table and the charts: deliveries everywhere, one dead letter.
async fn history(w: &World) {
    for (i, sev) in ["info", "warning", "critical"].iter().enumerate() {
        let id = send(
            &w.server,
            json!({"title": format!("BTC-USD fill #{i}"), "message": "Bought 0.5 BTC at 97,120", "severity": sev}),
        )
        .await;
        w.server.wait_final(&id, Duration::from_secs(10)).await;
    }
    w.backup.set_status_for_all(500);
    let id = send(
        &w.server,
        json!({"title": "Margin call", "message": "Account 7 below maintenance", "severity": "error", "channels": ["backup"]}),
    )
    .await;
    let v = w.server.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(v["deliveries"][0]["status"], "dead", "{v}");
}

#[tokio::test]
async fn cards_show_every_channel_without_secrets_and_fit_a_phone() {
    let Some(chromium) = chromium() else { return };
    let _one = ONE_BROWSER.lock().await;
    let w = world("").await;
    history(&w).await;
    let secrets = TG_TOKEN.to_string();
    run(
        &chromium,
        "cards",
        &w.server,
        "alerts,backup,desk",
        &[("KLAXON_TEST_SECRETS", &secrets)],
    )
    .await;
    w.server.stop().await;
}

#[tokio::test]
async fn the_toggle_stops_deliveries_and_the_switch_survives_a_restart() {
    let Some(chromium) = chromium() else { return };
    let _one = ONE_BROWSER.lock().await;
    let w = world("").await;
    run(&chromium, "disable", &w.server, "alerts", &[]).await;
    let id = send(
        &w.server,
        json!({"message": "while off", "channels": ["alerts"]}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(w.alerts.count(), 0, "a switched-off channel sends nothing");
    let (_, v) = w.server.get(&format!("/api/v1/notifications/{id}")).await;
    assert_eq!(v["deliveries"][0]["status"], "pending", "{v}");
    let server = w.server.restart().await;
    run(&chromium, "expect-disabled", &server, "alerts", &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.alerts.count(), 0);
    server.stop().await;
}

#[tokio::test]
async fn send_test_shows_its_outcome_on_the_card() {
    let Some(chromium) = chromium() else { return };
    let _one = ONE_BROWSER.lock().await;
    let w = world("").await;
    run(&chromium, "send-test", &w.server, "alerts", &[]).await;
    assert_eq!(
        w.alerts.count(),
        1,
        "the test went through the real channel"
    );
    w.server.stop().await;
}

#[tokio::test]
async fn dead_letters_retried_one_by_one_and_all_at_once_are_delivered() {
    let Some(chromium) = chromium() else { return };
    let _one = ONE_BROWSER.lock().await;
    let w = world("").await;
    history(&w).await;
    let mut d = Drive::start(&chromium, "retry-dead", &w.server, "", &[]);
    d.step("dead-letter-listed").await;
    let before = w.backup.count();
    w.backup.set_status_for_all(200);
    d.go("").await;
    d.step("another-dead").await;
    assert_eq!(
        w.backup.count(),
        before + 1,
        "the retry reached the provider once"
    );
    w.backup.set_status_for_all(500);
    let id = send(
        &w.server,
        json!({"message": "second failure", "channels": ["backup"]}),
    )
    .await;
    w.server.wait_final(&id, Duration::from_secs(10)).await;
    w.backup.set_status_for_all(200);
    d.go("").await;
    d.finish().await;
    let v = w.server.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(
        v["deliveries"][0]["status"], "delivered",
        "retried by Retry all: {v}"
    );
    w.server.stop().await;
}

#[tokio::test]
async fn a_new_delivery_appears_live_without_a_reload() {
    let Some(chromium) = chromium() else { return };
    let _one = ONE_BROWSER.lock().await;
    let w = world("").await;
    let mut d = Drive::start(&chromium, "live", &w.server, "", &[]);
    d.step("send").await;
    let marker = "live-marker-4711";
    send(
        &w.server,
        json!({"title": "ETH alert", "message": format!("ETH crossed 4k {marker}"), "channels": ["alerts"]}),
    )
    .await;
    d.go(marker).await;
    d.finish().await;
    w.server.stop().await;
}

#[tokio::test]
async fn with_a_token_the_page_asks_for_it_and_then_works() {
    let Some(chromium) = chromium() else { return };
    let _one = ONE_BROWSER.lock().await;
    let w = world(&format!("[server]\napi_token = \"{API_TOKEN}\"")).await;
    run(
        &chromium,
        "token",
        &w.server,
        "alerts",
        &[("KLAXON_TEST_TOKEN", API_TOKEN)],
    )
    .await;
    w.server.stop().await;
}

/// Regenerates `docs/dashboard.png`:
/// `cargo test -p klaxon --test browser -- --ignored screenshot`.
#[tokio::test]
#[ignore = "writes docs/dashboard.png; run on purpose"]
async fn screenshot() {
    let Some(chromium) = chromium() else { return };
    let _one = ONE_BROWSER.lock().await;
    let w = world("").await;
    history(&w).await;
    w.backup.set_status_for_all(200);
    for i in 0..12 {
        let sev = ["info", "warning", "info", "error"][i % 4];
        send(
            &w.server,
            json!({"title": format!("Signal {i}"), "message": format!("RSI crossed {} on ES1!", 30 + i), "severity": sev}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    w.backup.set_status_for_all(500);
    send(
        &w.server,
        json!({"title": "Stop loss hit", "message": "NQ position closed at 21,340", "severity": "critical", "channels": ["backup"]}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let out = out.display().to_string();
    run(
        &chromium,
        "screenshot",
        &w.server,
        "",
        &[("KLAXON_SCREENSHOT", &out)],
    )
    .await;
    w.server.stop().await;
}
