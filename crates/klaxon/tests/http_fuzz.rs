//! The HTTP API fuzzed from its own OpenAPI description (issue 7): schemathesis generates
//! requests for every described operation — valid ones, and ones that break the schema — and
//! sends them to the real `klaxon` binary. Every answer must be a non-5xx that matches what the
//! document promises, and the service must be alive and have logged no panic afterwards.
//!
//! Schemathesis runs from the venv whose Python `KLAXON_TEST_SCHEMATHESIS` names (`.ci/run` makes
//! it from `tests/schemathesis/requirements.txt`); without it the test is skipped with a notice,
//! unless `KLAXON_REQUIRE_SERVICES=1`. The CI form is short: [`DEFAULT_EXAMPLES`] test cases per
//! operation; `KLAXON_HTTP_FUZZ_EXAMPLES=500` runs a long pass, `KLAXON_HTTP_FUZZ_SEED` repeats a
//! run (schemathesis prints its seed).
//!
//! It runs on SQLite and, when `KLAXON_TEST_DATABASE_URL` names a server, on a fresh PostgreSQL
//! database too: PostgreSQL refuses text that SQLite keeps (a NUL), which once made a 503.
//!
//! The service runs with an API token, a TradingView secret, and webhook channels on local
//! sinks — one that takes everything and one that refuses it, so dead letters exist — so the
//! authenticated routes, the hooks and the dead-letter routes do real work.

mod common;

use common::Binary;
use klaxon_fakes::webhook::WebhookSink;
use klaxon_store::testing::PgDb;
use serde_json::json;

/// Test cases per operation in the CI form: about 25 s for one store alone, one to two minutes
/// for both at once on the CI machine.
const DEFAULT_EXAMPLES: u32 = 25;

const TOKEN: &str = "http-fuzz-api-token-0123456789";
const TV_SECRET: &str = "http-fuzz-tradingview-secret-0123";

/// The command that runs schemathesis, or `None` when the test is to be skipped.
fn schemathesis() -> Option<Vec<String>> {
    match std::env::var("KLAXON_TEST_SCHEMATHESIS") {
        // The venv's `st` itself, or its Python.
        Ok(p) if p.ends_with("/st") || p == "st" => Some(vec![p]),
        Ok(p) if !p.is_empty() => Some(vec![p, "-m".into(), "schemathesis.cli".into()]),
        _ => {
            assert!(
                std::env::var("KLAXON_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "KLAXON_REQUIRE_SERVICES=1 but KLAXON_TEST_SCHEMATHESIS is not set: run .ci/run, \
                 or point it at a Python with crates/klaxon/tests/schemathesis/requirements.txt \
                 installed"
            );
            eprintln!(
                "skipped: KLAXON_TEST_SCHEMATHESIS is not set (a Python with \
                 crates/klaxon/tests/schemathesis/requirements.txt; .ci/run makes one)"
            );
            None
        }
    }
}

fn config(store: &str, ok: &WebhookSink, refusing: &WebhookSink) -> String {
    format!(
        r#"
[server]
api_token = "{TOKEN}"
[store]
url = "{store}"
[delivery]
health_interval = "1h"
[delivery.retry]
retries = 0
[tradingview]
secret = "{TV_SECRET}"
allow_ips = []
[channels.hook]
url = "{ok}"
[channels.refused]
url = "{refused}"
[channels.log]
url = "log://"
[[routes]]
to = ["hook"]
"#,
        ok = common::json_url(ok),
        refused = common::json_url(refusing),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_on_sqlite() {
    let Some(st) = schemathesis() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("fuzz.db").display());
    fuzz(&st, &store).await;
}

/// PostgreSQL refuses some text that SQLite keeps (a NUL): the same pass on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_on_postgres() {
    let Some(st) = schemathesis() else { return };
    let Some(db) = PgDb::create().await else {
        return;
    };
    fuzz(&st, &db.url).await;
}

/// Starts the binary on `store`, runs schemathesis against it, and checks that it found
/// nothing and that the service is alive and logged no panic.
async fn fuzz(st: &[String], store: &str) {
    common::crypto();
    let examples: u32 = std::env::var("KLAXON_HTTP_FUZZ_EXAMPLES")
        .ok()
        .map(|v| v.parse().expect("KLAXON_HTTP_FUZZ_EXAMPLES is a number"))
        .unwrap_or(DEFAULT_EXAMPLES);

    let ok = WebhookSink::start().await;
    let refusing = WebhookSink::start().await;
    refusing.set_status_for_all(400);
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("klaxon.toml");
    std::fs::write(&config_path, config(store, &ok, &refusing)).unwrap();
    let log = dir.path().join("klaxon.log");
    let port = common::free_port();
    let mut bin = Binary::serve_logged(&config_path, &[], &[], port, &log).await;
    let base = bin.base.clone();
    let http = reqwest::Client::new();

    // Something to find: a delivered notification and a dead letter.
    for (channel, title) in [("hook", "delivered"), ("refused", "dies")] {
        let r = http
            .post(format!("{base}/api/v1/notifications"))
            .bearer_auth(TOKEN)
            .json(&json!({"title": title, "message": "seed", "channels": [channel]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    }

    let settings = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/schemathesis/schemathesis.toml"
    );
    let mut cmd = tokio::process::Command::new(&st[0]);
    cmd.args(&st[1..])
        .args(["--config-file", settings, "run"])
        .arg(format!("{base}/api/openapi.json"))
        .args(["--max-examples", &examples.to_string()])
        // One worker: hypothesis's lambda descriptions call `ast.parse`, which CPython 3.11
        // breaks ("AST constructor recursion depth mismatch") when threads do it at once.
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        .arg("--no-color")
        .env("KLAXON_FUZZ_TOKEN", TOKEN)
        .env("KLAXON_FUZZ_TV_SECRET", TV_SECRET)
        // Reports and caches go to the scratch directory, not the checkout.
        .current_dir(dir.path())
        .kill_on_drop(true);
    if let Ok(seed) = std::env::var("KLAXON_HTTP_FUZZ_SEED") {
        cmd.args(["--seed", &seed]);
    }
    let out = cmd.output().await.expect("schemathesis starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kind = store.split(':').next().unwrap_or_default();
    println!("schemathesis against klaxon on {kind}, {examples} examples per operation:\n{stdout}");
    if !stderr.trim().is_empty() {
        eprintln!("schemathesis stderr:\n{stderr}");
    }

    // Alive: the process has not exited, and still answers.
    assert!(
        bin.child.try_wait().unwrap().is_none(),
        "klaxon exited during the fuzz run; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let health = http.get(format!("{base}/health")).send().await;
    assert!(
        health.is_ok_and(|r| r.status() == 200),
        "klaxon does not answer /health after the fuzz run"
    );
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !logged.contains("panicked"),
        "klaxon panicked during the fuzz run; its log:\n{logged}"
    );
    assert!(
        out.status.success(),
        "schemathesis found failures (exit {:?}); its report is above",
        out.status.code()
    );
}
