//! Scenario 11: Klaxon against Apprise, the tool traders use today, delivering the same number
//! of JSON notifications to the same local sink. Apprise (pinned in `apprise/requirements.txt`)
//! is installed from PyPI by this scenario into `target/apprise-venv` on first use and driven
//! through its Python API the way a bot uses it: one `Apprise` object with one `json://` URL,
//! `notify()` per message, timed inside Python (start-up and import excluded). Klaxon is the
//! scenario-5 *max* runs: the same count posted by 32 clients one a request, then in batches of
//! 100, each accepted durably (committed to SQLite) before it is sent — work Apprise does not do.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::Scale;
use crate::harness::sink;
use crate::report::{Fig, Goal, Report, Row, int};
use crate::scenarios::delivery::{Offer, phase};

fn venv() -> anyhow::Result<PathBuf> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let requirements = crate_dir.join("apprise/requirements.txt");
    let venv = crate_dir.join("../../target/apprise-venv");
    let stamp = venv.join("installed-requirements.txt");
    let wanted = std::fs::read(&requirements).context("apprise/requirements.txt")?;
    if std::fs::read(&stamp).ok().as_deref() != Some(&wanted[..]) {
        let _ = std::fs::remove_dir_all(&venv);
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("python3 -m venv")?
            .success();
        if !ok {
            bail!("python3 -m venv failed");
        }
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements)
            .status()
            .context("pip install apprise")?
            .success();
        if !ok {
            bail!("pip install -r {} failed", requirements.display());
        }
        std::fs::write(&stamp, &wanted)?;
    }
    Ok(venv)
}

pub async fn run(report: &mut Report, scale: Scale) -> anyhow::Result<()> {
    let n = scale.n(2_000);
    report.section(
        "11. Klaxon against Apprise, same sink",
        &format!(
            "{} JSON notifications to the bench's webhook sink. Apprise: its Python API, one \
             `Apprise()` with `json://127.0.0.1:PORT/apprise`, `notify(title, body)` called {} \
             times in a loop after one warm-up call, timed in Python (no start-up, no import); \
             nothing is stored. Klaxon: the same count posted to `POST /api/v1/notifications` by \
             32 clients (then to `/batch` in batches of 100 by 8), each committed to SQLite before \
             its 202, delivered to a `json://` channel; delivered/s from the first POST to the \
             last webhook.",
            int(n),
            int(n)
        ),
    );
    let venv = venv()?;
    let target = sink(false).await;
    let url = target.url().replacen("http://", "json://", 1) + "/apprise";
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("apprise/send.py");
    let out = tokio::process::Command::new(venv.join("bin/python"))
        .arg(&script)
        .arg(&url)
        .arg(n.to_string())
        .output()
        .await
        .context("run apprise/send.py")?;
    target.stop().await;
    if !out.status.success() {
        bail!(
            "apprise/send.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap_or_default(),
    )
    .context("apprise/send.py output")?;
    let sent = v["sent"].as_f64().unwrap_or(0.0);
    let apprise_rate = sent / v["secs"].as_f64().unwrap_or(f64::INFINITY);
    let version = v["version"].as_str().unwrap_or("?").to_string();

    let single = phase(Offer::Max(n)).await?;
    let batches = phase(Offer::Batches(n)).await?;
    for (how, klaxon) in [("", &single), (", batches of 100", &batches)] {
        report.row(Row {
            figure: &format!("delivered/s to the sink{how}"),
            value: Fig::rate(klaxon.delivered_per_s, "notifications/s"),
            baseline: Some(("Apprise", Fig::rate(apprise_rate, "notifications/s"))),
            goal: None,
        });
        report.row(Row {
            figure: &format!("Klaxon ÷ Apprise{how}"),
            value: Fig::ratio(klaxon.delivered_per_s / apprise_rate),
            baseline: None,
            goal: Some(Goal::AtLeast(20.0)),
        });
    }
    report.note(format!(
        "Apprise {version}: {} of {} sent ({} failed). Klaxon: {} of {} accepted were delivered \
         one a request, {} of {} in batches.",
        sent,
        int(n),
        v["failed"],
        single.delivered,
        single.accepted,
        batches.delivered,
        batches.accepted
    ));
    Ok(())
}
