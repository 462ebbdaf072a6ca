//! A fake Twilio Messages API (PROVIDERS.md §4).
//!
//! `POST /2010-04-01/Accounts/{sid}/Messages.json` needs HTTP Basic `sid:token` of a registered
//! account (else 401, code 20003) and a form body (anything else reads as an empty form):
//! `To` (21604 missing, 21211 not E.164 / `whatsapp:+…`), `From` or `MessagingServiceSid`
//! (21603 missing, 21212 malformed), the same channel on both sides (21910), `Body` (21602
//! missing, 21617 over 1600 — counted in UTF-16 units, stricter than Twilio's "characters").
//! A per-account token bucket answers 429 with code 20429 (Twilio sends no `Retry-After`).
//! Success is 201 with a 34-character `SM…` sid and `num_segments`, counted here with GSM-7 /
//! UCS-2 rules written independently of Klaxon's renderer so the two check each other.
//! `GET /2010-04-01/Accounts/{sid}.json` returns the account (Klaxon's health check).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::bucket::Buckets;
use crate::fault::Intake;
use crate::server::{Provider, Server};
use crate::{fnv1a, is_content_type, lock, reason_phrase, status_code};

pub const DEFAULT_ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const DEFAULT_AUTH_TOKEN: &str = "twilio-test-auth-token-0123456789";
/// Twilio's request-concurrency limit is per account and not published as a number; this is
/// generous enough for tests that pace themselves, and `set_limit` tightens it.
pub const DEFAULT_LIMIT: (u32, Duration) = (100, Duration::from_millis(10));
/// PROVIDERS.md §4: `Body` ≤ 1600 characters.
pub const MAX_BODY: usize = 1600;

/// One accepted message.
#[derive(Clone, Debug)]
pub struct TwilioMessage {
    pub sid: String,
    pub account_sid: String,
    pub to: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: String,
    /// What Twilio would bill: GSM-7 / UCS-2 segments.
    pub num_segments: u32,
    /// `"GSM-7"` or `"UCS-2"`.
    pub encoding: &'static str,
    pub at: std::time::Instant,
}

#[derive(Debug)]
pub struct FakeTwilio {
    shared: Arc<Shared>,
    server: Server,
}

#[derive(Debug)]
struct Shared {
    intake: Intake,
    next_sid: AtomicU64,
    state: Mutex<TwilioState>,
}

#[derive(Debug)]
struct Account {
    token: String,
    status: String,
}

#[derive(Debug)]
struct TwilioState {
    accounts: HashMap<String, Account>,
    buckets: Buckets,
    messages: Vec<TwilioMessage>,
    rejected: Vec<(u16, Value)>,
}

impl FakeTwilio {
    /// Starts on `127.0.0.1:0` with [`DEFAULT_ACCOUNT_SID`] / [`DEFAULT_AUTH_TOKEN`] active.
    ///
    /// # Panics
    /// If the loopback interface cannot be bound.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            intake: Intake::default(),
            next_sid: AtomicU64::new(1),
            state: Mutex::new(TwilioState {
                accounts: HashMap::from([(
                    DEFAULT_ACCOUNT_SID.to_owned(),
                    Account {
                        token: DEFAULT_AUTH_TOKEN.to_owned(),
                        status: "active".to_owned(),
                    },
                )]),
                buckets: Buckets::new(DEFAULT_LIMIT),
                messages: Vec::new(),
                rejected: Vec::new(),
            }),
        });
        let server = Server::start_provider(&shared).await;
        Self { shared, server }
    }

    /// The API base (`http://127.0.0.1:PORT`), standing in for `https://api.twilio.com`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    crate::lifecycle_methods!();

    /// Sets an account's status (`active`, `suspended`, `closed`) as the account fetch shows it.
    pub fn set_account_status(&self, sid: &str, status: &str) {
        if let Some(a) = lock(&self.shared.state).accounts.get_mut(sid) {
            a.status = status.to_owned();
        }
    }

    /// Replaces the per-account bucket: `burst` requests back to back, then one per `every`.
    pub fn set_limit(&self, burst: u32, every: Duration) {
        lock(&self.shared.state).buckets.set_limit(burst, every);
    }

    crate::recorded_methods!(TwilioMessage, Value);
}

/// Twilio's error body.
fn error_body(status: u16, code: u32, message: &str) -> Value {
    json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    })
}

/// `+` then 8–15 digits, the first not 0 (E.164).
fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

/// An address: E.164 or `whatsapp:` + E.164; `Some(true)` for WhatsApp.
fn address(s: &str) -> Option<bool> {
    match s.strip_prefix("whatsapp:") {
        Some(n) => is_e164(n).then_some(true),
        None => is_e164(s).then_some(false),
    }
}

impl Provider for Shared {
    /// Forms only: media go by URL (`MediaUrl`), never in the body.
    const BODY_LIMIT: usize = 2 * 1024 * 1024;

    fn intake(&self) -> &Intake {
        &self.intake
    }

    fn serve(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
        let Some(rest) = uri.path().strip_prefix("/2010-04-01/Accounts/") else {
            return self.reject(404, 20404, "The requested resource was not found");
        };
        let (sid, messages) = match rest.strip_suffix("/Messages.json") {
            Some(sid) => (sid, true),
            None => match rest.strip_suffix(".json") {
                Some(sid) if !sid.contains('/') => (sid, false),
                _ => return self.reject(404, 20404, "The requested resource was not found"),
            },
        };
        if !self.authenticated(sid, headers) {
            return self.reject(401, 20003, "Authenticate");
        }
        if !messages {
            if method != Method::GET {
                return self.reject(405, 20004, "Method not allowed");
            }
            let state = lock(&self.state);
            let status = state.accounts.get(sid).map(|a| a.status.clone());
            drop(state);
            return axum::Json(json!({
                "sid": sid,
                "friendly_name": "Klaxon test account",
                "status": status,
                "type": "Full",
            }))
            .into_response();
        }
        if method != Method::POST {
            return self.reject(405, 20004, "Method not allowed");
        }
        {
            let taken = lock(&self.state).buckets.take(sid);
            if taken.is_err() {
                return self.reject(429, 20429, "Too Many Requests");
            }
        }
        let form: HashMap<String, String> =
            if is_content_type(headers, "application/x-www-form-urlencoded") {
                form_urlencoded::parse(body).into_owned().collect()
            } else {
                HashMap::new()
            };
        let get = |k: &str| form.get(k).filter(|v| !v.is_empty());
        let Some(to) = get("To") else {
            return self.reject(400, 21604, "A 'To' phone number is required.");
        };
        let Some(to_whatsapp) = address(to) else {
            return self.reject(400, 21211, &format!("Invalid 'To' Phone Number: {to}"));
        };
        let from = get("From");
        let service = get("MessagingServiceSid");
        if from.is_none() && service.is_none() {
            return self.reject(400, 21603, "A 'From' phone number is required.");
        }
        if let Some(from) = from {
            match address(from) {
                None => {
                    return self.reject(400, 21212, &format!("Invalid From Number: {from}"));
                }
                Some(w) if w != to_whatsapp => {
                    return self.reject(
                        400,
                        21910,
                        "Invalid From and To pair. From and To should be of the same channel",
                    );
                }
                Some(_) => {}
            }
        }
        let Some(text) = get("Body") else {
            return self.reject(400, 21602, "Message body is required.");
        };
        if text.encode_utf16().count() > MAX_BODY {
            return self.reject(
                400,
                21617,
                "The concatenated message body exceeds the 1600 character limit.",
            );
        }
        let (encoding, num_segments) = count_segments(text);
        let n = self.next_sid.fetch_add(1, Ordering::SeqCst);
        let sid_hash = fnv1a(format!("{sid}/{n}").as_bytes());
        let message_sid = format!("SM{sid_hash:016x}{n:016x}");
        let queued = if service.is_some() {
            "accepted"
        } else {
            "queued"
        };
        let now = chrono::Utc::now().to_rfc2822();
        let reply = json!({
            "sid": message_sid,
            "account_sid": sid,
            "to": to,
            "from": from,
            "messaging_service_sid": service,
            "body": text,
            "status": queued,
            "num_segments": num_segments.to_string(),
            "num_media": "0",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "date_sent": null,
            "error_code": null,
            "error_message": null,
            "price": null,
            "uri": format!("/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json"),
        });
        lock(&self.state).messages.push(TwilioMessage {
            sid: message_sid,
            account_sid: sid.to_owned(),
            to: to.clone(),
            from: from.cloned(),
            messaging_service_sid: service.cloned(),
            body: text.clone(),
            num_segments,
            encoding,
            at: std::time::Instant::now(),
        });
        (status_code(201), axum::Json(reply)).into_response()
    }

    /// An injected failure with the Twilio code a real one of that status carries.
    fn injected(&self, status: u16) -> Response {
        let (code, message) = match status {
            400 => (21211, "Invalid 'To' Phone Number"),
            401 => (20003, "Authenticate"),
            404 => (20404, "The requested resource was not found"),
            429 => (20429, "Too Many Requests"),
            500..=599 => (20500, "An internal server error has occurred"),
            _ => (20001, reason_phrase(status)),
        };
        self.reject(status, code, message)
    }
}

impl Shared {
    /// Basic credentials of a registered account, and that account is the one in the path.
    fn authenticated(&self, path_sid: &str, headers: &HeaderMap) -> bool {
        let Some(encoded) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
        else {
            return false;
        };
        let Some(decoded) = BASE64
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return false;
        };
        let Some((user, pass)) = decoded.split_once(':') else {
            return false;
        };
        user == path_sid
            && lock(&self.state)
                .accounts
                .get(user)
                .is_some_and(|a| a.token == pass)
    }

    fn reject(&self, status: u16, code: u32, message: &str) -> Response {
        self.intake.answered(status);
        let body = error_body(status, code, message);
        lock(&self.state).rejected.push((status, body.clone()));
        (status_code(status), axum::Json(body)).into_response()
    }
}

/// `(encoding, segments)` as Twilio bills them. Written apart from Klaxon's renderer on
/// purpose: the extension table by code point, the basic set as the 03.38 table rows.
pub fn count_segments(text: &str) -> (&'static str, u32) {
    // GSM 03.38 default alphabet, row by row (0x1B, the escape, omitted).
    const BASIC: [&str; 8] = [
        "@£$¥èéùìòÇ\nØø\rÅå",
        "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ",
        " !\"#¤%&'()*+,-./",
        "0123456789:;<=>?",
        "¡ABCDEFGHIJKLMNO",
        "PQRSTUVWXYZÄÖÑÜ§",
        "¿abcdefghijklmno",
        "pqrstuvwxyzäöñüà",
    ];
    let septets = |c: char| -> Option<u32> {
        match c {
            '\u{0C}' | '^' | '{' | '}' | '\\' | '[' | '~' | ']' | '|' | '\u{20AC}' => Some(2),
            c if BASIC.iter().any(|row| row.contains(c)) => Some(1),
            _ => None,
        }
    };
    let gsm: Option<Vec<u32>> = text.chars().map(septets).collect();
    let (name, sizes, single, per_part) = match gsm {
        Some(sizes) => ("GSM-7", sizes, 160, 153),
        None => (
            "UCS-2",
            text.chars().map(|c| c.len_utf16() as u32).collect(),
            70,
            67,
        ),
    };
    if sizes.iter().sum::<u32>() <= single {
        return (name, 1);
    }
    // Multipart: a character (escape pair, surrogate pair) never straddles two parts.
    let mut parts = 1;
    let mut room = per_part;
    for size in sizes {
        if size > room {
            parts += 1;
            room = per_part;
        }
        room -= size;
    }
    (name, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_by_twilios_rules() {
        assert_eq!(count_segments("hello"), ("GSM-7", 1));
        assert_eq!(count_segments(&"x".repeat(160)), ("GSM-7", 1));
        assert_eq!(count_segments(&"x".repeat(161)), ("GSM-7", 2));
        assert_eq!(count_segments(&"€".repeat(80)), ("GSM-7", 1));
        assert_eq!(count_segments(&"€".repeat(81)), ("GSM-7", 2));
        assert_eq!(count_segments(&"é".repeat(70)), ("GSM-7", 1));
        assert_eq!(count_segments(&"ж".repeat(70)), ("UCS-2", 1));
        assert_eq!(count_segments(&"ж".repeat(71)), ("UCS-2", 2));
        assert_eq!(count_segments(&"🚀".repeat(35)), ("UCS-2", 1));
        assert_eq!(count_segments(&"🚀".repeat(36)), ("UCS-2", 2));
        assert_eq!(count_segments(&"🚀".repeat(67)), ("UCS-2", 3));
    }

    #[test]
    fn addresses() {
        assert_eq!(address("+15551234567"), Some(false));
        assert_eq!(address("whatsapp:+15551234567"), Some(true));
        assert_eq!(address("15551234567"), None);
        assert_eq!(address("+1555"), None);
    }
}
