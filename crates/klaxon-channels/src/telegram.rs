//! Telegram Bot API `sendMessage` (PROVIDERS.md §1).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use klaxon_core::channel_url::TelegramSpec;
use klaxon_core::limit::{LimitKey, Rate};
use klaxon_core::render::telegram::{MAX_TEXT, ParseMode, render};
use klaxon_core::{Notification, Secret, Verdict};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Channel, SendContext, SendReport, http};

/// The bots FAQ (PROVIDERS.md §1): about 1 message/s per chat, at most 20/min per group, about
/// 30/s per bot. Each interval is stretched by 3 % so loopback and network jitter cannot push
/// two sends inside the provider's window: zero 429s matters more than the last 3 % of speed.
pub const PER_CHAT: Rate = Rate::new(1, Duration::from_millis(1030), 1);
pub const PER_GROUP: Rate = Rate::new(20, Duration::from_millis(61_800), 1);
pub const PER_BOT: Rate = Rate::new(30, Duration::from_millis(1030), 1);

pub struct Telegram {
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

/// A delivery's target: `CHAT` or, for a message split in several, `CHAT#PART/PARTS`.
struct Target<'a> {
    chat: &'a str,
    part: usize,
    of: usize,
}

impl<'a> Target<'a> {
    fn parse(target: &'a str) -> Self {
        let whole = Target {
            chat: target,
            part: 1,
            of: 1,
        };
        let Some((chat, frac)) = target.rsplit_once('#') else {
            return whole;
        };
        let Some((part, of)) = frac.split_once('/') else {
            return whole;
        };
        match (part.parse::<usize>(), of.parse::<usize>()) {
            (Ok(part), Ok(of)) if part >= 1 && part <= of => Target { chat, part, of },
            _ => whole,
        }
    }
}

/// One `sendMessage` outcome, before it becomes a verdict.
enum Sent {
    Ok(Option<String>),
    CantParse(String),
    Migrated(String),
    Failed(Verdict),
}

impl Telegram {
    pub fn new(name: &str, spec: TelegramSpec, http: reqwest::Client, timeout: Duration) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        spec.token.expose().hash(&mut h);
        Telegram {
            name: name.to_string(),
            bot_key: format!("telegram-bot:{:016x}", h.finish()),
            spec,
            http,
            timeout,
            migrated: Mutex::new(HashMap::new()),
        }
    }

    fn chat(&self, target: &str) -> String {
        let m = self.migrated.lock().unwrap_or_else(|e| e.into_inner());
        m.get(target).cloned().unwrap_or_else(|| target.to_string())
    }

    async fn send_one(&self, chat: &str, text: &str, mode: ParseMode) -> Sent {
        let url = format!(
            "{}/bot{}/sendMessage",
            self.spec.api_base,
            self.spec.token.expose()
        );
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
        let secrets = [&self.spec.token];
        let resp = match http::post_json(&self.http, url, self.timeout, &body, &secrets).await {
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
        let wait = params
            .and_then(|p| p.retry_after)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
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
        let parts = render(n, self.spec.parse_mode, MAX_TEXT).len();
        let mut out = Vec::with_capacity(self.spec.chats.len() * parts);
        for chat in &self.spec.chats {
            if parts == 1 {
                out.push(Some(chat.clone()));
            } else {
                out.extend((1..=parts).map(|i| Some(format!("{chat}#{i}/{parts}"))));
            }
        }
        out
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
        let parts = render(n, self.spec.parse_mode, MAX_TEXT);
        if parts.len() != target.of {
            // The rendering changed since the notification was accepted (a new format in the
            // configuration): this delivery carries a whole share of it rather than none.
            tracing::warn!(channel = %self.name, "message parts changed since acceptance");
        }
        let text = if parts.len() == target.of {
            parts[target.part - 1].clone()
        } else if target.part == 1 {
            parts.join("\n")
        } else {
            return SendReport {
                verdict: http::delivered(None),
                note: Some("part folded into part 1".into()),
                hold: None,
            };
        };
        let mut chat = self.chat(target.chat);
        let mut mode = self.spec.parse_mode;
        let mut notes = Vec::new();
        // Each recovery (plain text, migrated chat) is allowed once per attempt.
        let (mut plain_retry, mut migrate_retry) = (true, true);
        loop {
            match self.send_one(&chat, &text, mode).await {
                Sent::Ok(id) => {
                    return SendReport {
                        verdict: http::delivered(id),
                        note: (!notes.is_empty()).then(|| notes.join("; ")),
                        hold: None,
                    };
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
                        .insert(target.chat.to_string(), new.clone());
                    chat = new;
                }
                Sent::CantParse(why) => return Verdict::reject(http::short(&why)).into(),
                Sent::Migrated(new) => {
                    return Verdict::reject(format!("chat migrated twice (now {new})")).into();
                }
                Sent::Failed(v) => {
                    return SendReport {
                        verdict: v,
                        note: (!notes.is_empty()).then(|| notes.join("; ")),
                        hold: None,
                    };
                }
            }
        }
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
