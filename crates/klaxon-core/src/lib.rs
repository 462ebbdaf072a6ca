//! Klaxon's pure core: everything that decides, nothing that does I/O.
//!
//! - [`model`]: notifications, deliveries, attempts and their statuses (PRODUCT.md §1, §5).
//! - [`input`]: the boundary DTOs (notification JSON, event envelope) and validation that names
//!   the bad field; [`event`]: built-in summaries of known event types.
//! - [`config`]: the TOML file, `${VAR}` expansion, well-known environment variables;
//!   [`channel_url`]: `tgram://`, `discord://`, `json://` … into a [`channel_url::Provider`].
//! - [`route`]: which channels a notification goes to; [`digest`]: grouping bursts into digests.
//! - [`render`]: per-provider text and payloads, escaped and within limits.
//! - [`template`]: minijinja templates for the words of a message, escaped per markup.
//! - [`verdict`]: what a send achieved, and the one HTTP-status classifier.
//! - [`retry`], [`limit`], [`breaker`]: backoff schedule, GCRA rate maths, circuit breaker —
//!   all with time passed in, so the engine and the tests drive the clock.
//! - [`policy`]: quiet hours in a time zone and freshness (`max_age`) of time-sensitive events.
//! - [`secret`]: a string that never prints.

pub mod breaker;
pub mod channel_url;
pub mod config;
pub mod dedup;
pub mod digest;
pub mod duration;
pub mod event;
pub mod hooks;
pub mod input;
pub mod limit;
pub mod model;
pub mod policy;
pub mod render;
pub mod retry;
pub mod route;
pub mod secret;
pub mod template;
pub mod verdict;

pub use model::{
    Attachment, Attempt, AttemptOutcome, Delivery, DeliveryStatus, Notification, Priority, Severity,
};
pub use secret::Secret;
pub use verdict::Verdict;
