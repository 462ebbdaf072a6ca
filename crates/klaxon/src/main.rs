//! The `klaxon` command: serve, send, status, check-config, migrate.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use klaxon::app::install_crypto;
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
    Serve,
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
    /// Validate the configuration and name every wrong key.
    CheckConfig,
    /// Apply store migrations and exit.
    Migrate,
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
    match cli.command {
        Command::Serve => {
            let config = load_config(&cli.config)?;
            klaxon::server::serve(config, klaxon::server::shutdown_signal(), |_| {}).await?;
            Ok(ExitCode::SUCCESS)
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
                        c.store.url
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
        Command::Migrate => {
            let config = load_config(&cli.config)?;
            let store = klaxon_store::open(&config.store.url).await?;
            store.migrate().await?;
            println!("store {} is up to date", config.store.url);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => status(&cli.config).await,
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
    let channel = klaxon_channels::build(spec, &klaxon_channels::http_client());
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
    let config = load_config(path)?;
    let url = format!(
        "http://{}/status",
        config.server.listen.replace("0.0.0.0", "127.0.0.1")
    );
    let mut req = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(5));
    if let Some(t) = &config.server.api_token {
        req = req.bearer_auth(t.expose());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(_) => {
            eprintln!(
                "no Klaxon answering at {url} (is `klaxon serve` running with this configuration?)"
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let v: serde_json::Value = resp.json().await.context("the status answer is not JSON")?;
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
        println!(
            "  {:<20} {:<13} delivered {:<6} failed {:<6} backlog {:<6} {}",
            c["name"].as_str().unwrap_or(""),
            c["state"].as_str().unwrap_or(""),
            c["delivered"],
            c["failed"],
            c["backlog"],
            c["last_error"]
                .as_str()
                .map(|e| format!("last error: {e}"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
