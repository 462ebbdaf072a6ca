//! One module per scenario family, one public function per scenario; each writes its own
//! section of the report.
//!
//! - [`store`]: 1, rows committed per second (Klaxon's store and a raw table).
//! - [`http`]: 2–4, HTTP intake — single, batched, latency at a fixed rate.
//! - [`delivery`]: 5, accept → delivered latency and delivered/s.
//! - [`notifier`]: 6, `Notifier::send` against `mpsc::try_send`.
//! - [`process`]: 7, the `klaxon` binary's start-up time and memory.
//! - [`history`]: 8, history queries with 100,000 notifications.
//! - [`tradingview`]: 9, the TradingView hook's answer time.
//! - [`goodput`]: 10, 600 messages through the fake Telegram's limits.
//! - [`apprise`]: 11, Klaxon against Apprise delivering to the same sink.
//! - [`replicas`]: 12, delivered/s of 1, 2 and 3 worker processes on one PostgreSQL store.
//! - [`templates`]: 13, wording a message through a template against no template.
//! - [`soak`]: 14, the `klaxon` binary's memory under a steady load for 30 minutes (on demand).
//! - [`postgres`]: 15, scenarios 1–3 with the store on PostgreSQL.

pub mod apprise;
pub mod delivery;
pub mod goodput;
pub mod history;
pub mod http;
pub mod notifier;
pub mod postgres;
pub mod process;
pub mod replicas;
pub mod soak;
pub mod store;
pub mod templates;
pub mod tradingview;
