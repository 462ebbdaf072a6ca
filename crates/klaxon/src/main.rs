//! The `klaxon` command: serve, send, status, check-config, migrate, prune, health.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use klaxon::app::{Role, install_crypto};
use klaxon_channels::SendContext;
use klaxon_core::channel_url::{self, Options};
use klaxon_core::config::{ChannelSpec, Config, ProcessEnv};
use klaxon_core::model::{Notification, Severity, new_id};
use klaxon_core::verdict::Verdict;

#[derive(Parser)]
#[command(
    name = "klaxon",
    version,
    about = "Notifications for trading systems: durable, rate-limited, observable."
)]
struct Cli {
    /// Configuration file; optional — without it Klaxon runs on environment variables.
    #[arg(
        long,
        short,
        global = true,
        env = "KLAXON_CONFIG",
        default_value = "klaxon.toml"
    )]
    config: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: HTTP API and delivery.
    Serve {
        /// What this replica runs: `api` (HTTP API and ingestion), `worker` (delivery and
        /// retention; serves only /health, /ready, /metrics) or `all`.
        #[arg(long, value_enum, env = "KLAXON_ROLE", default_value_t = Role::All)]
        role: Role,
    },
    /// Remove notifications final for longer than `store.retention` (with their deliveries and
    /// attempts), as the service does every hour; `--dry-run` only counts.
    Prune {
        /// Count what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Use this age instead of `store.retention`, e.g. 7d.
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
    },
    /// Ask the running server whether it is alive (`GET /health`); exit code 0 = yes, 1 = no.
    /// For container health checks: the image needs no HTTP client.
    Health,
    /// Send one message now, straight to a channel (no server needed). Exit code 0 = delivered.
    Send {
        /// A channel name from the configuration.
        #[arg(long, conflicts_with = "to")]
        channel: Option<String>,
        /// A channel URL (tgram://, discord://, slack://, mailto://, mailtos://, twilio://,
        /// ntfy://, ntfys://, pover://, json://, jsons://).
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        title: Option<String>,
        #[arg(long, default_value = "info")]
        severity: String,
        /// A file to attach (repeatable); sent where the channel takes files.
        #[arg(long = "attach", value_name = "FILE")]
        attach: Vec<PathBuf>,
        /// The message text.
        message: String,
    },
    /// Ask a running server for its status.
    Status,
    /// List the running server's channels, or switch one: `channels disable NAME`.
    Channels {
        #[command(subcommand)]
        action: Option<ChannelAction>,
    },
    /// Send a test message through a channel of the running server and print the outcome.
    Test {
        /// The channel's name.
        name: String,
    },
    /// List dead deliveries, or put them back in the queue: `dead-letters retry ID|--all`.
    DeadLetters {
        #[command(subcommand)]
        action: Option<DeadAction>,
    },
    /// Validate the configuration and name every wrong key.
    CheckConfig,
    /// Say which routes a notification matches and why, without sending anything.
    Route {
        /// A JSON file holding a notification or an event envelope, as the API takes them.
        #[arg(long, value_name = "FILE.json")]
        explain: PathBuf,
    },
    /// Apply store migrations and exit.
    Migrate,
    /// Print the API's OpenAPI document (the same as `GET /api/openapi.json`).
    Openapi,
}

#[derive(Subcommand)]
enum ChannelAction {
    /// Switch a channel on; its waiting deliveries go.
    Enable { name: String },
    /// Switch a channel off; its deliveries wait (persisted across restarts).
    Disable { name: String },
    /// Hold non-critical deliveries for a while (critical ones still go).
    Mute {
        name: String,
        /// How long, e.g. 30m, 1h, 8h.
        #[arg(long = "for", default_value = "1h")]
        duration: String,
    },
    /// Lift a mute; what it held goes now.
    Unmute { name: String },
}

#[derive(Subcommand)]
enum DeadAction {
    /// Put dead deliveries back in the queue with a fresh retry budget.
    Retry {
        /// A delivery id from `klaxon dead-letters`.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every dead delivery.
        #[arg(long)]
        all: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// How often the service hands memory it has freed back to the operating system.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Every [`TRIM_EVERY`], returns the memory glibc keeps free in its per-thread arenas.
///
/// Why: a burst (a flood of alerts, a retry storm, a history page of 500) grows the arenas of
/// the threads that served it, and glibc keeps that memory once freed, so a long-running
/// service's RSS ratchets up burst by burst (BENCHMARKS.md §14: 14 of 43 MB free in the arenas,
/// 8 MB returned by one trim). `malloc_trim(0)` gives free pages back with `madvise`. The binary
/// owns the process's allocator, so this lives here and not in the library, which may be
/// embedded in a bot with its own views on memory.
async fn return_freed_memory() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: nothing to return yet
    loop {
        tick.tick().await;
        trim();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks and locks glibc's own arenas; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl, macOS) return memory by themselves or offer no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// Reads the configuration file if present (a missing default file is fine).
fn load_config(path: &PathBuf) -> anyhow::Result<Config> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    };
    Config::load(text.as_deref(), &ProcessEnv)
        .map_err(|e| anyhow::anyhow!("{} is not valid:\n{e}", path.display()))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Every command may make an HTTPS call (send, the operator commands).
    install_crypto();
    match cli.command {
        Command::Serve { role } => {
            let config = load_config(&cli.config)?;
            tracing::info!(?role, "starting");
            tokio::spawn(return_freed_memory());
            klaxon::server::serve_as(config, role, klaxon::server::shutdown_signal(), |_| {})
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Prune {
            dry_run,
            older_than,
        } => prune(&cli.config, dry_run, older_than.as_deref()).await,
        Command::Health => {
            let remote = klaxon::client::Remote::for_config(&load_config(&cli.config)?);
            match remote.get("/health").await {
                Ok(_) => {
                    println!("ok");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::CheckConfig => {
            let text = match std::fs::read_to_string(&cli.config) {
                Ok(t) => Some(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!(
                        "{} not found: checking the environment-only configuration",
                        cli.config.display()
                    );
                    None
                }
                Err(e) => bail!("cannot read {}: {e}", cli.config.display()),
            };
            match Config::load(text.as_deref(), &ProcessEnv) {
                Ok(c) => {
                    println!(
                        "OK: {} channel(s), {} route(s), store {}",
                        c.channels.len(),
                        c.routes.len(),
                        klaxon_store::redacted_url(&c.store.url)
                    );
                    for ch in &c.channels {
                        println!(
                            "  {:<20} {}{}",
                            ch.name,
                            channel_url::describe(&ch.provider),
                            if ch.enabled { "" } else { " (disabled)" }
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    for e in &errors.0 {
                        eprintln!("{}: {e}", cli.config.display());
                    }
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Route { explain } => {
            let config = load_config(&cli.config)?;
            let text = std::fs::read_to_string(&explain)
                .with_context(|| format!("cannot read {}", explain.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", explain.display()))?;
            let n = klaxon_core::input::notification_or_envelope(value, "api")
                .map_err(|e| anyhow::anyhow!("{}: {e}", explain.display()))?;
            let names: Vec<&str> = config.channels.iter().map(|c| c.name.as_str()).collect();
            println!(
                "notification: event_type {}, source {}, severity {}, title {:?}",
                n.event_type.as_deref().unwrap_or("(none)"),
                n.source,
                n.severity,
                klaxon_core::render::title(&n)
            );
            print!("{}", config.routing().explain(&n, &names));
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let config = load_config(&cli.config)?;
            let store = klaxon_store::open(&config.store.url).await?;
            store.migrate().await?;
            println!(
                "store {} is up to date",
                klaxon_store::redacted_url(&config.store.url)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => status(&cli.config).await,
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(&klaxon::api::openapi())
                    .context("the OpenAPI document does not serialise")?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Channels { action } => {
            let remote = klaxon::client::Remote::for_config(&load_config(&cli.config)?);
            remote_result(channels(&remote, action).await)
        }
        Command::Test { name } => {
            let remote = klaxon::client::Remote::for_config(&load_config(&cli.config)?);
            remote_result(test(&remote, &name).await)
        }
        Command::DeadLetters { action } => {
            let remote = klaxon::client::Remote::for_config(&load_config(&cli.config)?);
            remote_result(dead_letters(&remote, action).await)
        }
        Command::Send {
            channel,
            to,
            title,
            severity,
            attach,
            message,
        } => {
            let config = load_config(&cli.config)?;
            let spec = match (channel, to) {
                (Some(name), _) => config.channel(&name).cloned().with_context(|| {
                    format!("no channel named `{name}` (have: {})", names(&config))
                })?,
                (None, Some(url)) => {
                    let apis = klaxon_core::config::api_bases_from_env(&ProcessEnv);
                    let provider = channel_url::parse(&url, &Options::default(), &apis)
                        .map_err(|e| anyhow::anyhow!("--to: {e}"))?;
                    ChannelSpec {
                        name: "cli".into(),
                        provider,
                        enabled: true,
                        rate_limit: None,
                        timeout: channel_url::DEFAULT_TIMEOUT,
                        fallback: vec![],
                        fallback_after: klaxon_core::config::DEFAULT_FALLBACK_AFTER,
                        retry: None,
                        policy: Default::default(),
                    }
                }
                (None, None) => bail!("say where: --channel NAME or --to URL"),
            };
            let severity: Severity = severity
                .parse()
                .map_err(|e| anyhow::anyhow!("--severity: {e}"))?;
            let mut n = Notification::new(message).severity(severity).source("cli");
            n.title = title;
            for path in &attach {
                n.attachments.push(attachment(path)?);
            }
            send_now(&config, &spec, n).await
        }
    }
}

async fn prune(
    path: &PathBuf,
    dry_run: bool,
    older_than: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let age = match older_than {
        Some(t) => {
            klaxon_core::duration::parse(t).map_err(|e| anyhow::anyhow!("--older-than: {e}"))?
        }
        None => match config.store.retention {
            Some(r) => r,
            None => {
                println!(
                    "store.retention is off: nothing is pruned (use --older-than to prune anyway)"
                );
                return Ok(ExitCode::SUCCESS);
            }
        },
    };
    let store = klaxon_store::open(&config.store.url).await?;
    store.migrate().await?;
    let before = chrono::Utc::now()
        - chrono::TimeDelta::from_std(age).context("--older-than is too long")?;
    let p = store
        .prune(before, klaxon::app::PRUNE_BATCH, dry_run)
        .await?;
    let what = format!(
        "{} notification(s), {} delivery(ies), {} attempt(s) final before {}",
        p.notifications,
        p.deliveries,
        p.attempts,
        before.format("%Y-%m-%d %H:%M:%S UTC")
    );
    if dry_run {
        println!("would remove {what}");
    } else if p.ran {
        println!("removed {what}");
    } else {
        println!("another replica is pruning right now; nothing removed here");
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a file for `--attach`; the content type comes from the extension, which is what
/// providers look at to choose photo or document.
fn attachment(path: &std::path::Path) -> anyhow::Result<klaxon::Attachment> {
    use base64::Engine as _;
    let bytes =
        std::fs::read(path).with_context(|| format!("--attach: cannot read {}", path.display()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let content_type = match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "csv" => "text/csv",
        "txt" | "log" => "text/plain",
        "json" => "application/json",
        "html" | "htm" => "text/html",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    };
    Ok(klaxon::Attachment {
        filename: path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "attachment".into()),
        content_type: content_type.into(),
        content_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
    })
}

fn names(c: &Config) -> String {
    c.channels
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A direct send with the configured retry schedule, waiting in between (a CLI may sleep).
async fn send_now(
    config: &Config,
    spec: &ChannelSpec,
    n: Notification,
) -> anyhow::Result<ExitCode> {
    install_crypto();
    let channel = klaxon_channels::build_with(
        spec,
        &klaxon_channels::http_client(),
        config.templates.clone(),
    );
    let policy = spec
        .retry
        .clone()
        .unwrap_or_else(|| config.delivery.retry.clone());
    let mut all_ok = true;
    for target in channel.targets(&n) {
        let id = new_id();
        let label = target.clone().unwrap_or_else(|| spec.name.clone());
        let mut attempt = 1;
        loop {
            let cx = SendContext {
                delivery_id: id,
                target: target.clone(),
                attempt,
            };
            let report = channel.send(&n, &cx).await;
            if let Some(note) = &report.note {
                eprintln!("note: {note}");
            }
            match report.verdict {
                Verdict::Delivered { provider_id } => {
                    println!(
                        "delivered to {label}{}",
                        provider_id
                            .map(|p| format!(" (id {p})"))
                            .unwrap_or_default()
                    );
                    break;
                }
                Verdict::Reject { reason, .. } => {
                    eprintln!("rejected by {label}: {reason}");
                    all_ok = false;
                    break;
                }
                Verdict::Retry { reason, after, .. } => {
                    match policy.delay(attempt, klaxon_core::retry::mix(attempt.into())) {
                        Some(d) => {
                            let wait = d.max(after.unwrap_or_default());
                            eprintln!(
                                "attempt {attempt} to {label} failed: {reason}; retrying in {:.1}s",
                                wait.as_secs_f32()
                            );
                            tokio::time::sleep(wait).await;
                            attempt += 1;
                        }
                        None => {
                            eprintln!("giving up on {label} after {attempt} attempts: {reason}");
                            all_ok = false;
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn status(path: &PathBuf) -> anyhow::Result<ExitCode> {
    install_crypto();
    let remote = klaxon::client::Remote::for_config(&load_config(path)?);
    let v = match remote.get("/status").await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };

    println!(
        "Klaxon {} — up {}s — store {} {}",
        v["version"].as_str().unwrap_or("?"),
        v["uptime_secs"],
        v["store"]["kind"].as_str().unwrap_or("?"),
        if v["store"]["ok"] == serde_json::json!(true) {
            "ok"
        } else {
            "UNAVAILABLE"
        }
    );
    if let Some(q) = v["queue"].as_object() {
        let parts: Vec<String> = q
            .iter()
            .filter(|(_, n)| n.as_i64() != Some(0))
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!(
            "queue: {}",
            if parts.is_empty() {
                "empty".into()
            } else {
                parts.join(", ")
            }
        );
    }
    for c in v["channels"].as_array().into_iter().flatten() {
        print_channel(c);
    }
    Ok(ExitCode::SUCCESS)
}

/// A remote command's error is the API's own message, on stderr, with exit code 1.
fn remote_result(r: Result<ExitCode, klaxon::client::ClientError>) -> anyhow::Result<ExitCode> {
    match r {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn path_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn print_channel(c: &serde_json::Value) {
    let health = &c["health"];
    println!(
        "  {:<20} {:<8} {:<13} delivered {:<6} failed {:<6} backlog {:<6} health {}{}",
        c["name"].as_str().unwrap_or(""),
        c["kind"].as_str().unwrap_or(""),
        c["state"].as_str().unwrap_or(""),
        c["delivered"],
        c["failed"],
        c["backlog"],
        health["state"].as_str().unwrap_or("pending"),
        health["detail"]
            .as_str()
            .filter(|d| !d.is_empty())
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    );
    if let Some(t) = c["muted_until"].as_str() {
        println!("  {:<20} muted until {t}", "");
    }
    if let (Some(q), Some(t)) = (c["quiet_hours"].as_str(), c["quiet_until"].as_str()) {
        println!("  {:<20} quiet hours ({q}) until {t}", "");
    }
    if let Some(e) = c["last_error"].as_str() {
        println!("  {:<20} last error: {e}", "");
    }
}

async fn channels(
    remote: &klaxon::client::Remote,
    action: Option<ChannelAction>,
) -> Result<ExitCode, klaxon::client::ClientError> {
    let (name, body) = match action {
        None => {
            let v = remote.get("/api/v1/channels").await?;
            for c in v["channels"].as_array().into_iter().flatten() {
                print_channel(c);
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(ChannelAction::Enable { name }) => (name, serde_json::json!({"enabled": true})),
        Some(ChannelAction::Disable { name }) => (name, serde_json::json!({"enabled": false})),
        Some(ChannelAction::Mute { name, duration }) => {
            let d = klaxon_core::duration::parse(&duration).map_err(|e| {
                klaxon::client::ClientError::Api(format!("--for `{duration}`: {e}"))
            })?;
            let until = chrono::Utc::now() + chrono::TimeDelta::from_std(d).unwrap_or_default();
            (name, serde_json::json!({"muted_until": until.to_rfc3339()}))
        }
        Some(ChannelAction::Unmute { name }) => (name, serde_json::json!({"muted_until": null})),
    };
    let v = remote
        .patch(&format!("/api/v1/channels/{}", path_segment(&name)), body)
        .await?;
    print_channel(&v);
    Ok(ExitCode::SUCCESS)
}

async fn test(
    remote: &klaxon::client::Remote,
    name: &str,
) -> Result<ExitCode, klaxon::client::ClientError> {
    let v = remote
        .post(&format!("/api/v1/channels/{}/test", path_segment(name)))
        .await?;
    match v["outcome"].as_str() {
        Some("delivered") => {
            println!("test message delivered through `{name}`");
            Ok(ExitCode::SUCCESS)
        }
        Some("pending") => {
            println!(
                "test message sent to `{name}` but not delivered yet (notification {})",
                v["notification"]["id"].as_str().unwrap_or("?")
            );
            Ok(ExitCode::FAILURE)
        }
        _ => {
            println!(
                "test message through `{name}` failed: {}",
                v["error"].as_str().unwrap_or("no reason given")
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn dead_letters(
    remote: &klaxon::client::Remote,
    action: Option<DeadAction>,
) -> Result<ExitCode, klaxon::client::ClientError> {
    match action {
        None => {
            let v = remote.get("/api/v1/dead-letters?limit=1000").await?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                println!("no dead letters");
            }
            for d in &items {
                println!(
                    "{}  {:<16} {}  {}",
                    d["id"].as_str().unwrap_or(""),
                    d["channel"].as_str().unwrap_or(""),
                    d["notification"]["title"]
                        .as_str()
                        .or(d["notification"]["message"].as_str())
                        .unwrap_or(""),
                    d["last_error"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(DeadAction::Retry { id, all }) => {
            let v = match (id, all) {
                (_, true) => remote.post("/api/v1/dead-letters/retry?all=true").await?,
                (Some(id), false) => {
                    remote
                        .post(&format!("/api/v1/dead-letters/{}/retry", path_segment(&id)))
                        .await?
                }
                (None, false) => {
                    return Err(klaxon::client::ClientError::Api(
                        "say which: a delivery ID, or --all".into(),
                    ));
                }
            };
            let n = v["requeued"].as_array().map_or(0, Vec::len);
            println!("{n} delivery(ies) back in the queue");
            Ok(ExitCode::SUCCESS)
        }
    }
}
