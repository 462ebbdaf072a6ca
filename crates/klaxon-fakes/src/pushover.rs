//! A fake Pushover API (PROVIDERS.md §8).
//!
//! `POST /1/messages.json`, form-encoded or multipart (the `attachment` part must be an image
//! of at most 5,242,880 bytes): `token` and `user` must be registered (400 with
//! `{"status":0,"token":"invalid","errors":[…]}` and the like), `message` 1–1024 characters,
//! `title` ≤ 250, `priority` −2…2, and priority 2 needs `retry` ≥ 30 and `expire` ≤ 10800;
//! emergency messages return a `receipt`. `device` names must be the user's. The monthly
//! quota is counted (`X-Limit-App-*` headers) and, once spent, answered with 429.
//! `POST /1/users/validate.json` checks a token and user key without sending. Every error
//! is `{"status":0,"errors":[…],"request":…}`; injected 5xx answers are plain text, as a
//! load balancer in front of Pushover would send.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::fault::Intake;
use crate::server::{Provider, Server};
use crate::{fnv1a, is_content_type, lock, reason_phrase, status_code};

pub const DEFAULT_TOKEN: &str = "KlaxonAppToken0000000000000000";
pub const DEFAULT_USER: &str = "KlaxonUserKey00000000000000000";
/// The default user's devices.
pub const DEFAULT_DEVICES: [&str; 2] = ["phone", "desk"];
pub const MAX_MESSAGE: usize = 1024;
pub const MAX_TITLE: usize = 250;
pub const MAX_ATTACHMENT: usize = 5_242_880;
/// Pushover's free monthly allowance per application (API docs, "Limitations").
pub const DEFAULT_QUOTA: u64 = 10_000;

#[derive(Clone, Debug, PartialEq)]
pub struct PushoverAttachment {
    pub filename: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// One accepted message.
#[derive(Clone, Debug)]
pub struct PushoverMessage {
    /// Every text field as sent (token and user included).
    pub fields: HashMap<String, String>,
    pub multipart: bool,
    pub attachment: Option<PushoverAttachment>,
    pub request: String,
    pub receipt: Option<String>,
}

impl PushoverMessage {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Debug)]
pub struct FakePushover {
    shared: Arc<Shared>,
    server: Server,
}

#[derive(Debug)]
struct Shared {
    intake: Intake,
    next_id: AtomicU64,
    state: Mutex<PushoverState>,
}

#[derive(Debug)]
struct PushoverState {
    tokens: Vec<String>,
    /// User key → device names.
    users: HashMap<String, Vec<String>>,
    quota_remaining: u64,
    messages: Vec<PushoverMessage>,
    validations: usize,
    rejected: Vec<(u16, Value)>,
}

impl FakePushover {
    /// Starts with [`DEFAULT_TOKEN`] and [`DEFAULT_USER`] (devices [`DEFAULT_DEVICES`]).
    ///
    /// # Panics
    /// If the loopback interface cannot be bound.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            intake: Intake::default(),
            next_id: AtomicU64::new(1),
            state: Mutex::new(PushoverState {
                tokens: vec![DEFAULT_TOKEN.to_owned()],
                users: HashMap::from([(
                    DEFAULT_USER.to_owned(),
                    DEFAULT_DEVICES.iter().map(|d| d.to_string()).collect(),
                )]),
                quota_remaining: DEFAULT_QUOTA,
                messages: Vec::new(),
                validations: 0,
                rejected: Vec::new(),
            }),
        });
        let server = Server::start_provider(&shared).await;
        Self { shared, server }
    }

    /// The API base, standing in for `https://api.pushover.net`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    crate::lifecycle_methods!();

    /// Messages left this month; 0 makes every send answer 429.
    pub fn set_quota_remaining(&self, n: u64) {
        lock(&self.shared.state).quota_remaining = n;
    }

    /// How many `users/validate.json` calls were answered.
    pub fn validations(&self) -> usize {
        lock(&self.shared.state).validations
    }

    crate::recorded_methods!(PushoverMessage, Value);
}

/// A parsed request body: text fields and at most one file.
type Parsed = (
    HashMap<String, String>,
    Option<(String, PushoverAttachment)>,
);

/// Parses `multipart/form-data`: each part's `name` (and `filename`, `Content-Type`).
fn parse_multipart(headers: &HeaderMap, body: &[u8]) -> Option<Parsed> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let boundary = ct
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}").into_bytes();
    let mut fields = HashMap::new();
    let mut file = None;
    let mut rest = body;
    // Skip the preamble up to the first delimiter.
    let start = find(rest, &delimiter)?;
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            return Some((fields, file));
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&rest[..head_end]).ok()?;
        let content_start = head_end + 4;
        let next = find(
            &rest[content_start..],
            &[b"\r\n", delimiter.as_slice()].concat(),
        )?;
        let content = &rest[content_start..content_start + next];
        let mut name = None;
        let mut filename = None;
        let mut content_type = String::new();
        for line in head.split("\r\n") {
            let (k, v) = line.split_once(':')?;
            if k.eq_ignore_ascii_case("content-disposition") {
                for p in v.split(';') {
                    let p = p.trim();
                    if let Some(n) = p.strip_prefix("name=") {
                        name = Some(n.trim_matches('"').to_owned());
                    } else if let Some(f) = p.strip_prefix("filename=") {
                        filename = Some(f.trim_matches('"').to_owned());
                    }
                }
            } else if k.eq_ignore_ascii_case("content-type") {
                content_type = v.trim().to_owned();
            }
        }
        let name = name?;
        match filename {
            Some(filename) => {
                file = Some((
                    name,
                    PushoverAttachment {
                        filename,
                        content_type,
                        bytes: content.to_vec(),
                    },
                ));
            }
            None => {
                fields.insert(name, String::from_utf8(content.to_vec()).ok()?);
            }
        }
        rest = &rest[content_start + next + 2 + delimiter.len()..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Pushover's 30-character random identifiers (receipts).
fn token_like(seed: u64) -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut h = fnv1a(&seed.to_be_bytes());
    (0..30)
        .map(|_| {
            h = h.wrapping_mul(0x0100_0000_01b3) ^ 0x9e37_79b9;
            alphabet[(h >> 33) as usize % alphabet.len()] as char
        })
        .collect()
}

impl Shared {
    fn request_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        let h = fnv1a(&n.to_be_bytes());
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            h >> 32,
            (h >> 16) & 0xffff,
            h & 0xfff,
            n & 0xfff,
            n
        )
    }
}

impl Provider for Shared {
    /// An image up to [`MAX_ATTACHMENT`] plus the form fields must reach the fake's checks.
    const BODY_LIMIT: usize = MAX_ATTACHMENT + 1024 * 1024;

    fn intake(&self) -> &Intake {
        &self.intake
    }

    fn serve(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
        let validate = match uri.path() {
            "/1/messages.json" => false,
            "/1/users/validate.json" => true,
            _ => return self.reject(404, Map::new(), &["not found"]),
        };
        if method != Method::POST {
            return self.reject(405, Map::new(), &["method not allowed"]);
        }
        let (fields, file) = if is_content_type(headers, "multipart/form-data") {
            match parse_multipart(headers, body) {
                Some(p) => p,
                None => return self.reject(400, Map::new(), &["invalid multipart body"]),
            }
        } else if is_content_type(headers, "application/x-www-form-urlencoded") {
            (form_urlencoded::parse(body).into_owned().collect(), None)
        } else {
            (HashMap::new(), None)
        };
        let multipart = is_content_type(headers, "multipart/form-data");
        let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
        let mut marks = Map::new();
        let state = lock(&self.state);
        if !state.tokens.iter().any(|t| t == get("token")) {
            drop(state);
            marks.insert("token".into(), json!("invalid"));
            return self.reject(400, marks, &["application token is invalid"]);
        }
        let Some(devices) = state.users.get(get("user")).cloned() else {
            drop(state);
            marks.insert("user".into(), json!("invalid"));
            return self.reject(
                400,
                marks,
                &["user identifier is not a valid user, group, or subscribed user key"],
            );
        };
        drop(state);
        let wanted: Vec<&str> = get("device").split(',').filter(|d| !d.is_empty()).collect();
        if let Some(bad) = wanted.iter().find(|d| !devices.iter().any(|x| x == *d)) {
            marks.insert("device".into(), json!("invalid"));
            let msg = format!("device name '{bad}' is not valid for user");
            return self.reject(400, marks, &[msg.as_str()]);
        }
        if validate {
            lock(&self.state).validations += 1;
            let request = self.request_id();
            return axum::Json(json!({
                "status": 1,
                "group": 0,
                "devices": devices,
                "licenses": ["Android", "iOS"],
                "request": request,
            }))
            .into_response();
        }
        let mut errors: Vec<String> = Vec::new();
        let message = get("message");
        if message.trim().is_empty() {
            errors.push("message cannot be blank".into());
        } else if message.chars().count() > MAX_MESSAGE {
            errors.push(format!(
                "message cannot be longer than {MAX_MESSAGE} characters"
            ));
        }
        if get("title").chars().count() > MAX_TITLE {
            errors.push(format!(
                "title cannot be longer than {MAX_TITLE} characters"
            ));
        }
        let priority = match get("priority") {
            "" => Some(0),
            p => p.parse::<i8>().ok().filter(|p| (-2..=2).contains(p)),
        };
        match priority {
            None => errors.push("priority is invalid".into()),
            Some(2) => {
                match get("retry").parse::<u32>() {
                    Ok(r) if r >= 30 => {}
                    _ => errors.push("retry is invalid, must be at least 30 seconds".into()),
                }
                match get("expire").parse::<u32>() {
                    Ok(e) if e <= 10_800 => {}
                    _ => errors.push("expire is invalid, must be at most 10800 seconds".into()),
                }
            }
            Some(_) => {}
        }
        if !matches!(get("html"), "" | "0" | "1") {
            errors.push("html is invalid".into());
        }
        let attachment = match file {
            None => None,
            Some((name, _)) if name != "attachment" => {
                errors.push(format!("unknown file field {name}"));
                None
            }
            Some((_, a)) => {
                if a.bytes.len() > MAX_ATTACHMENT {
                    errors.push(format!(
                        "attachment cannot be larger than {MAX_ATTACHMENT} bytes"
                    ));
                }
                if !a.content_type.starts_with("image/") {
                    errors.push("attachment must be an image".into());
                }
                Some(a)
            }
        };
        if !errors.is_empty() {
            let refs: Vec<&str> = errors.iter().map(String::as_str).collect();
            return self.reject(400, Map::new(), &refs);
        }
        let mut state = lock(&self.state);
        if state.quota_remaining == 0 {
            drop(state);
            return self.reject(
                429,
                Map::new(),
                &["application is over its monthly message quota"],
            );
        }
        state.quota_remaining -= 1;
        let remaining = state.quota_remaining;
        drop(state);
        let request = self.request_id();
        let receipt =
            (priority == Some(2)).then(|| token_like(self.next_id.load(Ordering::SeqCst)));
        let mut reply = json!({"status": 1, "request": request});
        if let Some(r) = &receipt {
            reply["receipt"] = json!(r);
        }
        lock(&self.state).messages.push(PushoverMessage {
            fields,
            multipart,
            attachment,
            request,
            receipt,
        });
        let mut response = axum::Json(reply).into_response();
        let h = response.headers_mut();
        h.insert("x-limit-app-limit", HeaderValue::from(DEFAULT_QUOTA));
        h.insert("x-limit-app-remaining", HeaderValue::from(remaining));
        response
    }

    /// An injected failure: Pushover's JSON error for a 4xx, a load balancer's plain text
    /// for a 5xx.
    fn injected(&self, status: u16) -> Response {
        if status >= 500 {
            self.intake.answered(status);
            lock(&self.state)
                .rejected
                .push((status, json!(reason_phrase(status))));
            return (status_code(status), reason_phrase(status)).into_response();
        }
        let error = match status {
            429 => "application is over its monthly message quota",
            400 => "message cannot be blank",
            401 | 403 => "application token is invalid",
            _ => reason_phrase(status),
        };
        self.reject(status, Map::new(), &[error])
    }
}

impl Shared {
    fn reject(&self, status: u16, mut marks: Map<String, Value>, errors: &[&str]) -> Response {
        self.intake.answered(status);
        marks.insert("status".into(), json!(0));
        marks.insert("errors".into(), json!(errors));
        marks.insert("request".into(), json!(self.request_id()));
        let body = Value::Object(marks);
        lock(&self.state).rejected.push((status, body.clone()));
        (status_code(status), axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_fields_and_file() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\nabc\r\n--XyZ\r\nContent-Disposition: form-data; name=\"attachment\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x00\r\n--XyZ--\r\n";
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
        );
        let (fields, file) = parse_multipart(&headers, body).unwrap();
        assert_eq!(fields["token"], "abc");
        let (name, a) = file.unwrap();
        assert_eq!(name, "attachment");
        assert_eq!(a.filename, "a.png");
        assert_eq!(a.content_type, "image/png");
        assert_eq!(a.bytes, b"\x89PNG\r\n\x00");
    }

    #[test]
    fn receipts_look_like_pushovers() {
        let r = token_like(7);
        assert_eq!(r.len(), 30);
        assert!(r.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(r, token_like(8));
    }
}
