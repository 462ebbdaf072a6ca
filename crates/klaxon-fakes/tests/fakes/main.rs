//! Black-box tests of the fakes over real HTTP, with the kind of client Klaxon uses.
//!
//! One test binary (modules below) rather than one per file: linking is the slow part of a
//! test build on this machine.

mod discord;
mod lifecycle;
mod ntfy;
mod pushover;
mod slack;
mod telegram;
mod twilio;
mod webhook;

/// A plain-HTTP client; a fresh one per test so no pooled connection crosses tests.
pub fn client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::new()
}

/// In a workspace build reqwest carries Klaxon's `rustls-no-provider` feature, and then a
/// client cannot be built before a crypto provider is installed, even for plain HTTP.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Sends a request and returns status, headers and the body parsed as JSON (`Null` if empty
/// or not JSON). Panics on transport errors: every caller expects an answer.
pub async fn send(
    request: reqwest::RequestBuilder,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let response = request.send().await.expect("the fake answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, body)
}

/// A header as text ("" if absent).
pub fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}
