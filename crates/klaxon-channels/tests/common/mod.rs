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

/// An attachment as the API receives it: the bytes in base64.
pub fn file(name: &str, content_type: &str, bytes: &[u8]) -> klaxon_core::model::Attachment {
    use base64::Engine as _;
    klaxon_core::model::Attachment {
        filename: name.into(),
        content_type: content_type.into(),
        content_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
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

/// A server that answers every request with `status` and a plain-text page quoting the whole
/// request (line, headers, body), like a misconfigured proxy or a debug endpoint: whatever
/// credential a channel sends comes back in the answer. Returns its base URL.
pub async fn echo_server(status: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let Ok(n) = sock.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let page = String::from_utf8_lossy(&request).into_owned();
                let answer = format!(
                    "HTTP/1.1 {status} Echo\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
            });
        }
    });
    url
}
