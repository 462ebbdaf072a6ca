//! `klaxon-bench`: Klaxon's throughput, latency and footprint, each figure printed beside the
//! baseline that bounds it — measured in the same run, on the same machine — and the goal it is
//! held to. The report is Markdown, on stdout (and in `--out PATH`); progress goes to stderr.
//!
//! ```sh
//! cargo build --release -p klaxon          # scenario 7 spawns the release binary
//! cargo run --release -p klaxon-bench -- --out report.md
//! cargo run --release -p klaxon-bench -- --quick            # every count ÷ 10: a smoke run
//! cargo run --release -p klaxon-bench -- --only single,batch
//! cargo run --release -p klaxon-bench -- --only soak --soak-secs 600   # on demand only
//! ```
//!
//! Every in-process scenario runs the real service (`klaxon::server::serve`, or
//! `klaxon::Notifier`) on a fresh SQLite file, with one `json://` channel to a local webhook sink
//! from `klaxon-fakes`, and talks to it over loopback HTTP. No log subscriber is installed, so
//! the service logs nothing.
//!
//! - [`report`]: the Markdown tables, goals and the latency histogram.
//! - [`harness`]: starting the service, the sink, the client, closed- and open-loop load.
//! - [`scenarios`]: one function per scenario.

mod harness;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::Command;

use clap::{Parser, ValueEnum};

use crate::report::Report;

#[derive(Parser)]
#[command(about = "Benchmarks Klaxon against same-run baselines and prints a Markdown report.")]
struct Args {
    /// Every count and duration divided by 10: checks the program end to end, not the speed.
    #[arg(long)]
    quick: bool,
    /// Also write the report to this file.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Run only these scenarios (comma-separated); default all but `soak`, which runs only when
    /// named.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// How long the soak (`--only soak`) keeps its steady load on, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 1_800)]
    soak_secs: u32,
    /// Internal: run as the idle baseline process of scenario 7, answering HTTP on PORT.
    #[arg(long, hide = true, value_name = "PORT")]
    idle_child: Option<u16>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// 1: rows committed per second, store and raw table.
    Store,
    /// 2: HTTP accepted/s, one notification a request.
    Single,
    /// 3: HTTP accepted/s, batches of 100.
    Batch,
    /// 4: HTTP submit latency at 1,000 requests/s.
    Rate,
    /// 5: accept → delivered latency and delivered/s.
    Delivery,
    /// 6: `Notifier::send` against `mpsc::try_send`.
    Notifier,
    /// 7: the klaxon binary's start-up time and memory.
    Process,
    /// 8: history queries (dashboard, dead letters, depth) with 100,000 notifications.
    History,
    /// 9: the TradingView hook's answer time.
    Tradingview,
    /// 10: goodput through the fake Telegram's rate limits.
    Goodput,
    /// 11: Klaxon against Apprise, same sink.
    Apprise,
    /// 12: delivered/s of 1, 2 and 3 worker processes on PostgreSQL (KLAXON_TEST_DATABASE_URL).
    Replicas,
    /// 13: wording a message through its template, against no template.
    Templates,
    /// 14: memory of the klaxon binary under a steady load for `--soak-secs` (on demand only).
    Soak,
    /// 15: scenarios 1–3 with the store on PostgreSQL (KLAXON_TEST_DATABASE_URL).
    Postgres,
}

/// Full size, or a tenth of it for `--quick`.
#[derive(Clone, Copy)]
pub struct Scale {
    quick: bool,
}

impl Scale {
    /// A count: `full`, or a tenth of it.
    pub fn n(self, full: usize) -> usize {
        if self.quick { (full / 10).max(1) } else { full }
    }

    /// A duration in seconds: `full`, or a tenth of it.
    pub fn secs(self, full: u32) -> f64 {
        f64::from(full) / if self.quick { 10.0 } else { 1.0 }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(port) = args.idle_child {
        return scenarios::process::idle_child(port).await;
    }
    klaxon::app::install_crypto();
    let scale = Scale { quick: args.quick };
    // The soak takes half an hour: only when asked for by name.
    let wanted =
        |s: Scenario| args.only.contains(&s) || (args.only.is_empty() && s != Scenario::Soak);

    let mut report = Report::new();
    header(&mut report, args.quick);

    let mut store_floor = None;
    if wanted(Scenario::Store) {
        match scenarios::store::run(&mut report, scale).await {
            Ok(f) => store_floor = Some(f.store_batched),
            Err(e) => failed(&mut report, e),
        }
    }
    if wanted(Scenario::Single) {
        let r = scenarios::http::single(&mut report, scale).await;
        r.unwrap_or_else(|e| failed(&mut report, e));
    }
    if wanted(Scenario::Batch) {
        let r = scenarios::http::batch(&mut report, scale, store_floor).await;
        r.unwrap_or_else(|e| failed(&mut report, e));
    }
    if wanted(Scenario::Rate) {
        let r = scenarios::http::fixed_rate(&mut report, scale).await;
        r.unwrap_or_else(|e| failed(&mut report, e));
    }
    if wanted(Scenario::Delivery) {
        let r = scenarios::delivery::run(&mut report, scale).await;
        r.unwrap_or_else(|e| failed(&mut report, e));
    }
    if wanted(Scenario::Notifier) {
        let r = scenarios::notifier::run(&mut report, scale).await;
        r.unwrap_or_else(|e| failed(&mut report, e));
    }
    if wanted(Scenario::Process) {
        let r = scenarios::process::run(&mut report, scale).await;
        r.unwrap_or_else(|e| failed(&mut report, e));
    }
    if wanted(Scenario::History) {
        let r = scenarios::history::run(&mut report, scale).await;
        r.unwrap_or_else(|e| failed(&mut report, e));
    }
    if wanted(Scenario::Tradingview) {
        let r = scenarios::tradingview::run(&mut report, scale).await;
        r.unwrap_or_else(|e| failed(&mut report, e));
    }
    if wanted(Scenario::Goodput) {
        let r = scenarios::goodput::run(&mut report, scale).await;
        r.unwrap_or_else(|e| failed(&mut report, e));
    }
    if wanted(Scenario::Apprise) {
        let r = scenarios::apprise::run(&mut report, scale).await;
        r.unwrap_or_else(|e| failed(&mut report, e));
    }
    if wanted(Scenario::Replicas) {
        let r = scenarios::replicas::run(&mut report, scale).await;
        r.unwrap_or_else(|e| failed(&mut report, e));
    }
    if wanted(Scenario::Templates) {
        let r = scenarios::templates::run(&mut report, scale).await;
        r.unwrap_or_else(|e| failed(&mut report, e));
    }
    if wanted(Scenario::Postgres) {
        let r = scenarios::postgres::run(&mut report, scale).await;
        r.unwrap_or_else(|e| failed(&mut report, e));
    }
    if wanted(Scenario::Soak) {
        let r = scenarios::soak::run(&mut report, scale, args.soak_secs).await;
        r.unwrap_or_else(|e| failed(&mut report, e));
    }

    let text = report.finish();
    print!("{text}");
    if let Some(path) = &args.out {
        std::fs::write(path, &text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

/// A scenario that could not finish says why in the report; the others still run.
fn failed(report: &mut Report, e: anyhow::Error) {
    report.note(format!("⚠ scenario failed: {e:#}"));
}

/// The command, date, machine and commit the figures belong to.
fn header(report: &mut Report, quick: bool) {
    report.line("# Klaxon benchmark");
    report.line("");
    report.line(format!("- Command: `{}`", command_line()));
    report.line(format!(
        "- Date: {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    ));
    report.line(format!(
        "- nproc: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    report.line(format!("- CPU: {}", cpu_model()));
    report.line(format!("- Commit: {}", commit()));
    if cfg!(debug_assertions) {
        report.line("- ⚠ debug build: figures are not representative; use --release");
    }
    if quick {
        report.line("- ⚠ --quick: a tenth of every count; a smoke run, not a measurement");
    }
}

/// How this run was started: the `cargo run` line when cargo started it, else argv.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let via_cargo = std::env::var("CARGO_PKG_NAME").is_ok_and(|p| p == env!("CARGO_PKG_NAME"));
    if via_cargo {
        let release = if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        };
        let rest = if args.is_empty() {
            String::new()
        } else {
            format!(" -- {}", args.join(" "))
        };
        format!("cargo run{release} -p {}{rest}", env!("CARGO_PKG_NAME"))
    } else {
        std::env::args().collect::<Vec<_>>().join(" ")
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `git rev-parse --short HEAD`, marked when the tree has uncommitted changes.
fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) if git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty()) => {
            format!("{head} (with uncommitted changes)")
        }
        Some(head) => head,
        None => "unknown".into(),
    }
}
