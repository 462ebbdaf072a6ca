//! Klaxon: a self-hosted notification service and library for trading systems.
//!
//! Data flows ingest → route → store → deliver → channels:
//! - [`api`]: the HTTP API (axum) — notifications, events, history, status, metrics.
//! - [`ingest`]: routes a notification to channels, commits it (group commit), wakes the engine.
//! - [`deliver`]: the engine — leased claims, rate limits, retries, breaker, shutdown.
//! - [`events`]: the live event bus (delivery outcomes, channel changes) behind the SSE stream.
//! - [`control`]: operator actions (switch, mute, test, retry dead letters) shared by API and CLI.
//! - [`app`]: assembles a running service from a [`Config`]; [`server`] serves it over HTTP.
//! - [`Notifier`]: the same pipeline embedded in a Rust program, with a non-blocking `send`.
//!
//! The pure logic (model, config, rendering, retry and rate maths) lives in `klaxon-core`, the
//! store in `klaxon-store`, the providers in `klaxon-channels`.

pub mod api;
pub mod app;
pub mod client;
pub mod control;
pub mod deliver;
pub mod events;
pub mod inbox;
pub mod ingest;
pub mod metrics;
pub mod notifier;
pub mod server;
pub mod sources;

pub use klaxon_core::config::{Config, ConfigErrors};
pub use klaxon_core::model::{Attachment, Notification, Priority, Severity};
pub use notifier::{Notifier, SendError};
