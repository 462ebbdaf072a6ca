//! Helpers shared by the channel tests: a client like the service's, a send context, and the
//! checks every provider's tests make.
#![allow(dead_code)] // each test binary uses its own share of these

use std::time::Duration;

use klaxon_channels::{Channel, SendContext, SendReport};
use klaxon_core::Verdict;

pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The service's client. reqwest carries `rustls-no-provider`, so a crypto provider must be
/// installed before any client is built, even for plain HTTP.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    klaxon_channels::http_client()
}

pub fn cx(target: Option<&str>) -> SendContext {
    SendContext {
        delivery_id: uuid::Uuid::now_v7(),
        target: target.map(str::to_string),
        attempt: 1,
    }
}

/// Sends to the channel's first target.
pub async fn send(ch: &dyn Channel, n: &klaxon_core::Notification) -> SendReport {
    let target = ch.targets(n).into_iter().next().flatten();
    ch.send(n, &cx(target.as_deref())).await
}

/// No secret of `ch` appears in the verdict, the note, or their `Debug` forms.
pub fn assert_no_secret(ch: &dyn Channel, report: &SendReport) {
    let shown = format!(
        "{} {} {:?}",
        report.verdict.reason().unwrap_or(""),
        report.note.as_deref().unwrap_or(""),
        report
    );
    for s in ch.secrets() {
        assert!(!shown.contains(s.expose()), "a secret leaked into {shown}");
    }
}

pub fn is_delivered(v: &Verdict) -> bool {
    matches!(v, Verdict::Delivered { .. })
}

/// `(throttled, after)` of a retry; panics on any other verdict.
pub fn retry(v: &Verdict) -> (bool, Option<Duration>) {
    match v {
        Verdict::Retry {
            throttled, after, ..
        } => (*throttled, *after),
        other => panic!("expected a retry, got {other:?}"),
    }
}

/// `disable_channel` of a reject; panics on any other verdict.
pub fn reject(v: &Verdict) -> bool {
    match v {
        Verdict::Reject {
            disable_channel, ..
        } => *disable_channel,
        other => panic!("expected a reject, got {other:?}"),
    }
}
