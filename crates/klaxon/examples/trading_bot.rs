//! A strategy loop that reports through an embedded `klaxon::Notifier`.
//!
//! Run it with no credentials and the notifications go to the `log` channel:
//!     cargo run --example trading_bot
//! or with a Telegram bot:
//!     TELEGRAM_BOT_TOKEN=123:ABC TELEGRAM_CHAT_ID=42 cargo run --example trading_bot
//!
//! `send` never waits on the network; the loop below would keep its timing with Telegram down.

use std::time::{Duration, Instant};

use klaxon::{Notification, Notifier, SendError, Severity};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("info,sqlx=warn")
        .init();
    // `klaxon.toml` when present, else the well-known environment variables.
    let notifier = Notifier::from_config_file("klaxon.toml").await?;

    let mut price = 23_480.0_f64;
    let mut position = 0i32;
    for tick in 0..20u32 {
        // A stand-in for market data.
        price += ((tick * 7919) % 13) as f64 - 6.0;
        let t0 = Instant::now();

        let signal = match (tick % 5, position) {
            (0, 0) => Some(("BUY", 1)),
            (3, 1) => Some(("EXIT", 0)),
            _ => None,
        };
        if let Some((action, new_position)) = signal {
            position = new_position;
            let n = Notification::new(format!("break-and-enter {action} at tick {tick}"))
                .title(format!("{action} MNQ @ {price:.2}"))
                .event_type("signal.generated")
                .source("trading_bot")
                .data("action", action)
                .data("symbol", "MNQ")
                .data("price", price)
                .data("strategy_name", "break-and-enter");
            match notifier.send(n) {
                Ok(id) => tracing::info!(%id, "signal queued in {:?}", t0.elapsed()),
                // The queue is full (the store is slow): this is the one place the bot decides.
                Err(SendError::Full(_, n)) => {
                    notifier.send_wait(*n).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if tick == 17 {
            // Critical alerts jump the queue and are never batched or muted.
            notifier.send(
                Notification::new("Drawdown 5.2% > 5% limit; trading halted")
                    .title("Risk breach")
                    .severity(Severity::Critical)
                    .event_type("risk.breach")
                    .source("risk_monitor"),
            )?;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everything handed over is committed and given time to go out.
    notifier.shutdown().await;
    Ok(())
}
