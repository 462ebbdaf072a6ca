//! Telegram Bot API `sendMessage`, and `sendPhoto`/`sendDocument` for attachments
//! (PROVIDERS.md §1).
//!
//! A notification becomes one delivery per (chat, text part) and one per (chat, attachment):
//! `CHAT`, `CHAT#i/N`, `CHAT#att{i}`. Each file is then rate-limited, retried and recorded on
//! its own, against the same chat and bot limits as text, and a failed upload never makes the
//! text go out twice.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use klaxon_core::channel_url::TelegramSpec;
use klaxon_core::limit::{LimitKey, Rate};
use klaxon_core::render::telegram::{MAX_TEXT, ParseMode, caption, render_content};
use klaxon_core::{Attachment, Notification, Secret, Verdict};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Channel, SendContext, SendReport, http};

/// The bots FAQ (PROVIDERS.md §1): about 1 message/s per chat, at most 20/min per group, about
/// 30/s per bot. Each window is stretched by 3 % so loopback and network jitter cannot push
/// two sends inside the provider's window: zero 429s matters more than the last 3 % of speed.
/// The group and bot limits are counts in a window, not spacings: twenty chats' first messages
/// go at once, as do a group's first twenty.
pub const PER_CHAT: Rate = Rate::new(1, Duration::from_millis(1030), 1);
pub const PER_GROUP: Rate = Rate::sliding(20, Duration::from_millis(61_800));
pub const PER_BOT: Rate = Rate::sliding(30, Duration::from_millis(1030));

/// Upload limits for bots on the public Bot API (PROVIDERS.md §1): 10 MB for `sendPhoto`, 50 MB
/// for other files. Counted in decimal megabytes, the smaller reading of "MB", so a file we
/// send is never refused for size.
pub const PHOTO_MAX: usize = 10_000_000;
pub const DOCUMENT_MAX: usize = 50_000_000;

/// Image types Telegram shows as photos. GIFs are left out: as a photo they would be
/// recompressed to a still, as a document they keep their animation.
const PHOTO_TYPES: &[&str] = &["image/jpeg", "image/jpg", "image/png", "image/webp"];

pub struct Telegram {
    /// Templates for the title and body.
    words: crate::Words,
    name: String,
    spec: TelegramSpec,
    http: reqwest::Client,
    timeout: Duration,
    /// The bot's limit key: a hash of the token, so every channel sharing a bot shares the
    /// limit and the key never carries the token itself.
    bot_key: String,
    /// Groups that Telegram told us became supergroups: old id → new id.
    migrated: Mutex<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    result: Option<Value>,
    description: Option<String>,
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    retry_after: Option<f64>,
    migrate_to_chat_id: Option<i64>,
}

/// A delivery's target: `CHAT`, `CHAT#PART/PARTS` for a message split in several, or
/// `CHAT#attN` for the notification's N-th attachment (1-based, like parts).
struct Target<'a> {
    chat: &'a str,
    what: Share,
}

/// Which share of the notification a delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Share {
    Text { part: usize, of: usize },
    Attachment(usize),
}

impl<'a> Target<'a> {
    fn parse(target: &'a str) -> Self {
        let whole = Target {
            chat: target,
            what: Share::Text { part: 1, of: 1 },
        };
        let Some((chat, frac)) = target.rsplit_once('#') else {
            return whole;
        };
        if let Some(i) = frac.strip_prefix("att") {
            return match i.parse::<usize>() {
                Ok(i) if i >= 1 => Target {
                    chat,
                    what: Share::Attachment(i),
                },
                _ => whole,
            };
        }
        let Some((part, of)) = frac.split_once('/') else {
            return whole;
        };
        match (part.parse::<usize>(), of.parse::<usize>()) {
            (Ok(part), Ok(of)) if part >= 1 && part <= of => Target {
                chat,
                what: Share::Text { part, of },
            },
            _ => whole,
        }
    }
}

/// One attachment, decoded and matched to the method that carries it.
struct Upload {
    /// `sendPhoto` or `sendDocument`.
    method: &'static str,
    /// The multipart field the file travels in: `photo` or `document`.
    field: &'static str,
    filename: String,
    content_type: String,
    bytes: Vec<u8>,
}

impl Upload {
    /// Picks the method by type and size; `Err` says why the file cannot go at all.
    fn new(a: &Attachment) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&a.content_base64)
            .map_err(|_| format!("attachment {}: not valid base64", a.filename))?;
        let mime = a
            .content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let photo = PHOTO_TYPES.contains(&mime.as_str()) && bytes.len() <= PHOTO_MAX;
        if !photo && bytes.len() > DOCUMENT_MAX {
            return Err(format!(
                "attachment {} not sent: {} bytes is over Telegram's {} upload limit for bots",
                a.filename,
                bytes.len(),
                http::megabytes(DOCUMENT_MAX),
            ));
        }
        let (method, field) = if photo {
            ("sendPhoto", "photo")
        } else {
            // Large images go too, as files: Telegram does not recompress documents.
            ("sendDocument", "document")
        };
        Ok(Upload {
            method,
            field,
            filename: a.filename.clone(),
            content_type: a.content_type.clone(),
            bytes,
        })
    }
}

/// What one call sends: a text part, or a file with its caption.
enum Payload<'a> {
    Text(&'a str),
    File(&'a Upload, &'a Notification),
}

/// One `sendMessage` outcome, before it becomes a verdict.
enum Sent {
    Ok(Option<String>),
    CantParse(String),
    Migrated(String),
    /// `sendPhoto` refused the image itself (dimensions, format): it can still go as a file.
    NotAPhoto(String),
    Failed(Verdict),
}

impl Telegram {
    pub fn new(name: &str, spec: TelegramSpec, http: reqwest::Client, timeout: Duration) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        spec.token.expose().hash(&mut h);
        Telegram {
            words: crate::Words::defaults(name),
            name: name.to_string(),
            bot_key: format!("telegram-bot:{:016x}", h.finish()),
            spec,
            http,
            timeout,
            migrated: Mutex::new(HashMap::new()),
        }
    }

    /// Words messages with these templates (the built-in ones otherwise).
    pub fn words(mut self, words: crate::Words) -> Self {
        self.words = words;
        self
    }

    fn chat(&self, target: &str) -> String {
        let m = self.migrated.lock().unwrap_or_else(|e| e.into_inner());
        m.get(target).cloned().unwrap_or_else(|| target.to_string())
    }

    /// One Bot API call for `payload` to `chat` in `mode`; `as_document` sends a photo as a
    /// plain file.
    async fn send_one(
        &self,
        chat: &str,
        payload: &Payload<'_>,
        mode: ParseMode,
        as_document: bool,
    ) -> Sent {
        let (method, field) = match payload {
            Payload::Text(_) => ("sendMessage", ""),
            Payload::File(..) if as_document => ("sendDocument", "document"),
            Payload::File(upload, _) => (upload.method, upload.field),
        };
        let url = format!(
            "{}/bot{}/{method}",
            self.spec.api_base,
            self.spec.token.expose()
        );
        let secrets = [&self.spec.token];
        let sent = match payload {
            Payload::Text(text) => {
                let mut body = json!({
                    "chat_id": chat,
                    "text": text,
                    "disable_notification": self.spec.silent,
                    "link_preview_options": {"is_disabled": !self.spec.preview},
                });
                if let Some(p) = mode.api_name() {
                    body["parse_mode"] = json!(p);
                }
                if let Some(t) = self.spec.thread {
                    body["message_thread_id"] = json!(t);
                }
                http::post_json(&self.http, url, self.timeout, &body, &secrets).await
            }
            Payload::File(upload, n) => {
                // Uploads must be multipart; scalar parameters travel as text fields.
                let mut form = reqwest::multipart::Form::new()
                    .text("chat_id", chat.to_string())
                    .text("disable_notification", self.spec.silent.to_string())
                    .text("caption", caption(n, &upload.filename, mode));
                if let Some(p) = mode.api_name() {
                    form = form.text("parse_mode", p);
                }
                if let Some(t) = self.spec.thread {
                    form = form.text("message_thread_id", t.to_string());
                }
                let part =
                    http::file_part(upload.bytes.clone(), &upload.filename, &upload.content_type);
                form = form.part(field, part);
                let timeout = http::upload_timeout(self.timeout, upload.bytes.len());
                http::post_multipart(&self.http, url, timeout, form, &secrets).await
            }
        };
        let resp = match sent {
            Ok(r) => r,
            Err(v) => return Sent::Failed(v),
        };
        let status = resp.status().as_u16();
        let header_wait = http::retry_after(resp.headers());
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => return Sent::Failed(http::transport_error(&e, self.timeout, &secrets)),
        };
        let Ok(answer) = serde_json::from_str::<Answer>(&text) else {
            // Not the Bot API's shape (a proxy's error page): classify by status alone.
            return Sent::Failed(http::classify(
                status,
                header_wait,
                &format!("HTTP {status}: {text}"),
                &secrets,
            ));
        };
        if answer.ok && (200..300).contains(&status) {
            let id = answer
                .result
                .as_ref()
                .and_then(|r| r.get("message_id"))
                .map(|v| v.to_string());
            return Sent::Ok(id);
        }
        let description = answer
            .description
            .unwrap_or_else(|| format!("HTTP {status}"));
        let params = answer.parameters;
        if let Some(new) = params.as_ref().and_then(|p| p.migrate_to_chat_id) {
            return Sent::Migrated(new.to_string());
        }
        if status == 400 && description.contains("can't parse entities") {
            return Sent::CantParse(description);
        }
        // Telegram names image problems `PHOTO_INVALID_DIMENSIONS`, `PHOTO_EXT_INVALID`,
        // `IMAGE_PROCESS_FAILED`, …; only its text tells them apart from other 400s.
        if status == 400
            && method == "sendPhoto"
            && (description.contains("PHOTO_") || description.contains("IMAGE_"))
        {
            return Sent::NotAPhoto(description);
        }
        let wait = params
            .and_then(|p| p.retry_after)
            .and_then(klaxon_core::verdict::wait_secs)
            .or(header_wait);
        Sent::Failed(http::classify(status, wait, &description, &secrets))
    }
}

#[async_trait]
impl Channel for Telegram {
    fn kind(&self) -> &'static str {
        "telegram"
    }

    fn targets(&self, n: &Notification) -> Vec<Option<String>> {
        let content = self
            .words
            .quiet(n, "telegram", self.spec.parse_mode.markup());
        let parts = render_content(n, &content, self.spec.parse_mode, MAX_TEXT).len();
        let files = n.attachments.len();
        let mut out = Vec::with_capacity(self.spec.chats.len() * (parts + files));
        for chat in &self.spec.chats {
            if parts == 1 {
                out.push(Some(chat.clone()));
            } else {
                out.extend((1..=parts).map(|i| Some(format!("{chat}#{i}/{parts}"))));
            }
            // Created after the text: the chat's limit spaces sends in creation order, so a
            // file normally lands after the message it belongs to.
            out.extend((1..=files).map(|i| Some(format!("{chat}#att{i}"))));
        }
        out
    }

    fn addresses(&self, target: Option<&str>, recipient: Option<&str>) -> bool {
        match (target, recipient) {
            (Some(t), Some(r)) => Target::parse(t).chat == r,
            (t, r) => t == r,
        }
    }

    fn limits(&self, target: Option<&str>) -> Vec<LimitKey> {
        let mut keys = vec![LimitKey {
            key: self.bot_key.clone(),
            rate: PER_BOT,
        }];
        if let Some(target) = target {
            let chat = self.chat(Target::parse(target).chat);
            keys.push(LimitKey {
                key: format!("{}:chat:{chat}", self.bot_key),
                rate: PER_CHAT,
            });
            if chat.starts_with('-') {
                keys.push(LimitKey {
                    key: format!("{}:group:{chat}", self.bot_key),
                    rate: PER_GROUP,
                });
            }
        }
        keys
    }

    async fn send(&self, n: &Notification, cx: &SendContext) -> SendReport {
        let Some(target) = cx.target.as_deref().map(Target::parse) else {
            return Verdict::reject("telegram delivery without a chat").into();
        };
        let (part, of) = match target.what {
            Share::Text { part, of } => (part, of),
            Share::Attachment(i) => {
                let Some(a) = n.attachments.get(i - 1) else {
                    return Verdict::reject(format!("the notification has no attachment {i}"))
                        .into();
                };
                return match Upload::new(a) {
                    Ok(upload) => self.deliver(target.chat, &Payload::File(&upload, n)).await,
                    Err(why) => {
                        tracing::warn!(channel = %self.name, "{why}");
                        Verdict::reject(why).into()
                    }
                };
            }
        };
        let (content, note) = self
            .words
            .content(n, "telegram", self.spec.parse_mode.markup());
        let parts = render_content(n, &content, self.spec.parse_mode, MAX_TEXT);
        if parts.len() != of {
            // The rendering changed since the notification was accepted (a new format in the
            // configuration): this delivery carries a whole share of it rather than none.
            tracing::warn!(channel = %self.name, "message parts changed since acceptance");
        }
        let text = if parts.len() == of {
            parts[part - 1].clone()
        } else if part == 1 {
            parts.join("\n")
        } else {
            return SendReport {
                verdict: http::delivered(None),
                note: Some("part folded into part 1".into()),
                hold: None,
            };
        };
        self.deliver(target.chat, &Payload::Text(&text))
            .await
            .also(note)
    }

    fn secrets(&self) -> Vec<&Secret> {
        vec![&self.spec.token]
    }

    /// `getMe`: proves the token without sending anything (PROVIDERS.md §1).
    async fn check(&self) -> crate::Health {
        let url = format!(
            "{}/bot{}/getMe",
            self.spec.api_base,
            self.spec.token.expose()
        );
        let secrets = [&self.spec.token];
        let (status, text) = match http::get_text(&self.http, url, self.timeout, &secrets).await {
            Ok(r) => r,
            Err(v) => return crate::Health::from_verdict(&v, ""),
        };
        let answer = serde_json::from_str::<Answer>(&text).ok();
        match answer {
            Some(a) if a.ok && status == 200 => {
                let name = a
                    .result
                    .as_ref()
                    .and_then(|r| r.get("username"))
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                crate::Health::ok(format!("bot @{name}"))
            }
            Some(a) => http::check_failed(
                status,
                a.description.as_deref().unwrap_or("not ok"),
                &secrets,
            ),
            None => http::check_failed(status, &text, &secrets),
        }
    }
}

impl Telegram {
    /// Sends `payload` to `target_chat` with the recoveries Telegram asks for: a markup error
    /// resends once as plain text, a migrated group once to its new id.
    async fn deliver(&self, target_chat: &str, payload: &Payload<'_>) -> SendReport {
        let mut chat = self.chat(target_chat);
        let mut mode = self.spec.parse_mode;
        let mut notes = Vec::new();
        // Each recovery (plain text, migrated chat, photo as a file) is allowed once per
        // attempt.
        let (mut plain_retry, mut migrate_retry) = (true, true);
        let mut as_document = false;
        loop {
            match self.send_one(&chat, payload, mode, as_document).await {
                Sent::Ok(id) => {
                    return SendReport::noted(http::delivered(id), &notes);
                }
                Sent::CantParse(why) if plain_retry && mode != ParseMode::Plain => {
                    // Our escaping should make this impossible; if Telegram disagrees, the
                    // operator still gets every character, markup and all, as plain text.
                    plain_retry = false;
                    tracing::warn!(channel = %self.name, reason = %why, "Telegram rejected the markup; resending as plain text");
                    notes.push(format!(
                        "sent as plain text: Telegram said \"{}\"",
                        http::short(&why)
                    ));
                    mode = ParseMode::Plain;
                }
                Sent::Migrated(new) if migrate_retry => {
                    migrate_retry = false;
                    let msg = format!(
                        "chat {chat} migrated to supergroup {new}: update this channel's chat id"
                    );
                    tracing::warn!(channel = %self.name, "{msg}");
                    notes.push(msg);
                    self.migrated
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(target_chat.to_string(), new.clone());
                    chat = new;
                }
                Sent::NotAPhoto(why) if !as_document => {
                    // A chart too long or too wide for a photo still reaches the chat, as a
                    // file, rather than not at all.
                    as_document = true;
                    notes.push(format!(
                        "sent as a file: Telegram refused it as a photo (\"{}\")",
                        http::short(&why)
                    ));
                }
                Sent::CantParse(why) | Sent::NotAPhoto(why) => {
                    return Verdict::reject(http::short(&why)).into();
                }
                Sent::Migrated(new) => {
                    return Verdict::reject(format!("chat migrated twice (now {new})")).into();
                }
                Sent::Failed(v) => {
                    return SendReport::noted(v, &notes);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_text_parts_and_attachments() {
        let t = Target::parse("-100222#att2");
        assert_eq!((t.chat, t.what), ("-100222", Share::Attachment(2)));
        let t = Target::parse("111#2/3");
        assert_eq!((t.chat, t.what), ("111", Share::Text { part: 2, of: 3 }));
        // Anything else is a whole chat id, never a panic or a wrong index.
        for odd in ["111#att0", "111#attx", "111#4/3", "@chan"] {
            let t = Target::parse(odd);
            assert_eq!((t.chat, t.what), (odd, Share::Text { part: 1, of: 1 }));
        }
    }
}
