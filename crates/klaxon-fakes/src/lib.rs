//! Strict fake providers for Klaxon's integration tests and benchmarks.
//!
//! Each fake is a real HTTP server on `127.0.0.1`, port 0, that speaks one provider's documented
//! protocol *strictly* (see `/work/shared/PROVIDERS.md`): malformed requests get the provider's
//! real error shapes, rate limits are enforced with real 429 answers, and failures can be
//! injected at runtime. A client that passes against these fakes should pass against the real
//! provider; a fake that is lenient where the provider is strict would hide bugs.
//!
//! Module map:
//! - [`telegram`] — [`telegram::FakeTelegram`], the Bot API (`sendMessage`, `sendPhoto`,
//!   `sendDocument`, `getMe`), §1.
//! - [`discord`] — [`discord::FakeDiscord`], execute-webhook with embed limits and buckets, §2.
//! - [`webhook`] — [`webhook::WebhookSink`], a fast receiver verifying Standard Webhooks, §5.
//! - [`slack`] — [`slack::FakeSlack`], incoming webhooks with Block Kit limits, §3.
//! - [`twilio`] — [`twilio::FakeTwilio`], the Messages API with Twilio's codes and segment counts, §4.
//! - [`ntfy`] — [`ntfy::FakeNtfy`], JSON and header publishing, auth, visitor limit, files, §8.
//! - [`pushover`] — [`pushover::FakePushover`], messages (form or multipart) and user validation, §8.
//! - [`markup`] — strict Telegram HTML / MarkdownV2 validators, also used by property tests.
//! - [`proxy`] — [`proxy::TcpProxy`], a TCP proxy whose line can be cut (a database going away).
//!
//! Every fake shares the same lifecycle (`start`, `url`, `stop`, `restart`) and the same failure
//! injection ([`FailMode`], `fail_next`). Recorded requests live in memory behind a
//! `std::sync::Mutex` (never held across an `.await`); accessors clone them out.

pub mod discord;
pub mod markup;
pub mod ntfy;
pub mod proxy;
pub mod pushover;
pub mod slack;
pub mod smtp;
pub mod telegram;
pub mod twilio;
pub mod webhook;

mod bucket;
mod fault;
mod multipart;
mod server;

/// What the fake does with the next requests, switchable at runtime (shared by all three fakes).
#[derive(Clone, Debug, PartialEq)]
pub enum FailMode {
    /// Behave normally.
    None,
    /// Answer every request with this status and a provider-shaped error body. A value that is
    /// not a valid HTTP status (outside 100..=999) is answered as 500.
    Status(u16),
    /// Wait this long, then answer normally (for client timeout tests).
    Slow(std::time::Duration),
}

/// The lifecycle, failure-injection and request-count methods every fake shares; each fake
/// struct has a `server: Server` and a `shared` with `intake: Intake`.
#[macro_export]
#[doc(hidden)]
macro_rules! lifecycle_methods {
    () => {
        /// Switches the standing failure mode.
        pub fn set_fail(&self, mode: $crate::FailMode) {
            self.shared.intake.faults.set(mode);
        }

        /// Makes the next `n` requests fail with `status`, then behaves normally again.
        pub fn fail_next(&self, n: usize, status: u16) {
            self.shared.intake.faults.fail_next(n, status);
        }

        /// Stops serving: the port refuses connections until [`restart`](Self::restart).
        pub async fn stop(&self) {
            self.server.stop().await;
        }

        /// Serves again on the same port, keeping all recorded state.
        ///
        /// # Panics
        /// If the port cannot be re-bound within a few seconds.
        pub async fn restart(&self) {
            if let Err(err) = self.server.try_restart().await {
                panic!("klaxon-fakes: cannot re-bind {}: {err}", self.url());
            }
        }

        /// Total requests received, whatever the answer.
        pub fn requests(&self) -> usize {
            self.shared
                .intake
                .requests
                .load(std::sync::atomic::Ordering::SeqCst)
        }
    };
}

/// The accessors of a fake that records what it accepted and what it refused: its `shared`
/// has an `intake: Intake` and a `state` mutex with `messages` and `rejected` vectors.
#[macro_export]
#[doc(hidden)]
macro_rules! recorded_methods {
    ($message:ty, $rejected:ty) => {
        /// Accepted messages, in order.
        pub fn messages(&self) -> Vec<$message> {
            $crate::lock(&self.shared.state).messages.clone()
        }

        /// Status and body of every non-2xx answer, in order.
        pub fn rejected(&self) -> Vec<(u16, $rejected)> {
            $crate::lock(&self.shared.state).rejected.clone()
        }

        /// How many 429s were answered (rate limits and injected failures alike).
        pub fn count_429(&self) -> usize {
            self.shared
                .intake
                .count_429
                .load(std::sync::atomic::Ordering::SeqCst)
        }
    };
}

/// Locks a mutex, ignoring poisoning: a panicking test thread must not turn every later request
/// into a second panic inside the fake.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The HTTP status for a numeric code, falling back to 500 for values `http` cannot represent.
pub(crate) fn status_code(code: u16) -> http::StatusCode {
    http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR)
}

/// The canonical reason phrase ("Bad Gateway") used in injected error bodies.
pub(crate) fn reason_phrase(code: u16) -> &'static str {
    status_code(code)
        .canonical_reason()
        .unwrap_or("Unknown Error")
}

/// Seconds since the Unix epoch, as a float (Discord's `X-RateLimit-Reset` format).
pub(crate) fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Whole seconds to wait for `wait`, rounded up and at least 1: providers never tell a client
/// to retry after 0 s, and rounding down would invite a request that is still too early.
pub(crate) fn ceil_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

/// Whether a `Content-Type` header value names `mime` (ignoring case and parameters such as
/// `; charset=utf-8`).
pub(crate) fn is_content_type(headers: &http::HeaderMap, mime: &str) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(mime))
}

/// FNV-1a, for stable made-up identifiers (Discord bucket ids, Telegram channel ids): unlike
/// `DefaultHasher` its output is specified and never changes between Rust versions.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
