//! One module per scenario family, one public function per scenario; each writes its own
//! section of the report.
//!
//! - [`store`]: 1, rows committed per second (Klaxon's store and a raw table).
//! - [`http`]: 2–4, HTTP intake — single, batched, latency at a fixed rate.
//! - [`delivery`]: 5, accept → delivered latency and delivered/s.
//! - [`notifier`]: 6, `Notifier::send` against `mpsc::try_send`.
//! - [`process`]: 7, the `klaxon` binary's start-up time and memory.
//! - [`templates`]: 9, wording a message through a template against no template.

pub mod delivery;
pub mod history;
pub mod http;
pub mod notifier;
pub mod process;
pub mod store;
pub mod templates;
