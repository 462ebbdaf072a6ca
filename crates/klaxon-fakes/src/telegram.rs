//! A strict fake of the Telegram Bot API (PROVIDERS.md §1).
//!
//! Serves `/bot<token>/<method>` (method names case-insensitive) for `sendMessage`,
//! `sendPhoto`, `sendDocument` and `getMe`, with parameters from the query string, a JSON body,
//! a form body or a multipart body, like the real API. Files are accepted only as multipart
//! uploads, within the bot upload limits, with `caption` checked like a message's text; they
//! count against the same rate limits as messages and are recorded in [`FakeTelegram::files`].
//! `sendMessage` is validated the way Telegram does it — required `chat_id`/`text`, markup
//! parsed by the strict [`crate::markup`] parsers, length counted after entity parsing — and
//! rate-limited per the bots FAQ with real `429 Too Many Requests: retry after N` answers.
//! Registered chats can answer `chat not found` or `group chat was migrated`.
//!
//! Every answer uses Telegram's envelope: `{"ok":true,"result":…}` or
//! `{"ok":false,"error_code":N,"description":"…","parameters":{…}}`, with `error_code` equal
//! to the HTTP status.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::fault::Intake;
use crate::multipart::{self, FilePart, FormError};
use crate::server::Server;
use crate::{ceil_secs, fnv1a, is_content_type, lock, markup, reason_phrase, status_code};

/// The bot token [`FakeTelegram::start`] accepts; more can be added with
/// [`FakeTelegram::with_token`].
pub const DEFAULT_TOKEN: &str = "123456:TEST-token_abc";

/// Maximum message length after entity parsing (PROVIDERS.md §1: `text` 1–4096 characters).
/// Telegram counts UTF-16 code units, so an emoji outside the BMP counts as two.
pub const MAX_TEXT_UTF16: usize = 4096;

/// `caption` of a file: 0–1024 characters after entity parsing (PROVIDERS.md §1), counted in
/// UTF-16 code units like `text`.
pub const MAX_CAPTION_UTF16: usize = 1024;

/// Upload limits for bots (PROVIDERS.md §1): photos 10 MB, other files 50 MB. Decimal
/// megabytes, the strict reading; larger uploads answer 413 like the Bot API does.
pub const MAX_PHOTO_BYTES: usize = 10_000_000;
pub const MAX_DOCUMENT_BYTES: usize = 50_000_000;

/// Bodies the fake reads at all: the largest upload plus room for the other fields. Anything
/// bigger is refused with 413 before it is buffered.
const BODY_LIMIT: usize = MAX_DOCUMENT_BYTES + 1_000_000;

/// Default per-chat limit: at most 3 messages in any sliding 3 s window. The bots FAQ says
/// "about 1 message per second per chat, short bursts tolerated" (PROVIDERS.md §1); 3 in 3 s
/// keeps the average at 1/s while allowing a burst of 3.
pub const DEFAULT_PER_CHAT: (u32, Duration) = (3, Duration::from_secs(3));

/// Default limit per group chat (negative chat id): 20 messages per minute (bots FAQ,
/// PROVIDERS.md §1).
pub const DEFAULT_PER_GROUP_PER_MINUTE: u32 = 20;

/// Default limit per bot over all chats: 30 messages per second (bots FAQ, PROVIDERS.md §1).
pub const DEFAULT_PER_BOT_PER_SECOND: u32 = 30;

/// Inline button `callback_data` is 1–64 bytes (PROVIDERS.md §1).
pub const MAX_CALLBACK_DATA_BYTES: usize = 64;

/// Inline button fields other than `callback_data` that give a button an action.
const BUTTON_ACTIONS: &[&str] = &[
    "url",
    "login_url",
    "web_app",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
];

/// The sliding window of the per-group limit.
const GROUP_WINDOW: Duration = Duration::from_secs(60);

/// The sliding window of the per-bot limit.
const BOT_WINDOW: Duration = Duration::from_secs(1);

/// The bot id `getMe` reports when the token does not start with a numeric id.
const FALLBACK_BOT_ID: i64 = 123_456;

/// Chat ids at or below this are supergroups/channels (`-100…` prefix); other negative ids
/// are basic groups.
const SUPERGROUP_ID_BASE: i64 = -1_000_000_000_000;

/// One accepted `sendMessage`, as recorded by the fake.
#[derive(Clone, Debug)]
pub struct TgMessage {
    /// The bot token from the URL.
    pub token: String,
    /// The chat, normalised: a decimal id (`"-100123"`) or `"@username"`.
    pub chat_id: String,
    /// `text` exactly as sent (with markup).
    pub text: String,
    /// The text after entity parsing (markup removed, escapes decoded), before Telegram trims
    /// surrounding whitespace.
    pub plain: String,
    /// `parse_mode` as sent, if any.
    pub parse_mode: Option<String>,
    pub disable_notification: bool,
    pub message_thread_id: Option<i64>,
    /// `link_preview_options.is_disabled` or the legacy `disable_web_page_preview`.
    pub link_preview_disabled: bool,
    pub protect_content: bool,
    /// Every parameter as received (a JSON object; form and query values are strings), for
    /// exact-payload checks of parameters without a field of their own (`reply_markup`, …).
    pub params: Value,
    /// When the fake accepted it.
    pub at: std::time::Instant,
}

/// One accepted `sendPhoto` or `sendDocument`, as recorded by the fake.
#[derive(Clone, Debug)]
pub struct TgFile {
    /// The bot token from the URL.
    pub token: String,
    /// `sendPhoto` or `sendDocument`.
    pub method: String,
    /// The chat, normalised like [`TgMessage::chat_id`].
    pub chat_id: String,
    /// The part's file name, as the multipart header carried it.
    pub filename: Option<String>,
    /// The part's `Content-Type`.
    pub content_type: Option<String>,
    /// The file's bytes, exactly as received.
    pub bytes: Vec<u8>,
    /// `caption` exactly as sent (with markup).
    pub caption: Option<String>,
    /// The caption after entity parsing.
    pub caption_plain: Option<String>,
    pub parse_mode: Option<String>,
    pub disable_notification: bool,
    pub message_thread_id: Option<i64>,
    /// Every text parameter as received.
    pub params: Value,
    /// When the fake accepted it.
    pub at: std::time::Instant,
}

/// A fake Telegram Bot API server on `127.0.0.1`.
#[derive(Debug)]
pub struct FakeTelegram {
    shared: Arc<Shared>,
    server: Server,
}

/// State shared between the handle and the server's request handlers.
#[derive(Debug)]
struct Shared {
    /// Faults, and the request and 429 counts (cheap to read while a test polls them).
    intake: Intake,
    state: Mutex<BotState>,
}

/// Everything the fake remembers; one lock, held only for short synchronous sections.
#[derive(Debug)]
struct BotState {
    tokens: HashSet<String>,
    limits: Limits,
    /// Chat keys (see [`ChatId::key`]) answering `chat not found`.
    missing_chats: HashSet<String>,
    /// Chat keys of groups migrated to a supergroup, with the new id.
    migrated: HashMap<String, i64>,
    /// Sliding windows of accepted messages, per (token, chat key).
    per_chat: HashMap<(String, String), Window>,
    /// Same keys, for group chats only (their own, slower limit).
    per_group: HashMap<(String, String), Window>,
    /// Per token.
    per_bot: HashMap<String, Window>,
    /// Set by `force_429`: the next send answers 429 with this `retry_after`.
    forced_429: Option<u64>,
    /// Formatted messages still to refuse with "can\'t parse entities" (a markup bug on demand).
    refuse_markup: usize,
    /// `sendPhoto` requests still to refuse as `PHOTO_INVALID_DIMENSIONS` (a 1×10000 chart).
    refuse_photos: usize,
    /// While a forced `retry_after` runs: every send before it is a client violation.
    banned_until: Option<Instant>,
    early_requests: usize,
    next_message_id: i64,
    messages: Vec<TgMessage>,
    files: Vec<TgFile>,
    rejected: Vec<(u16, String)>,
}

/// The configurable rate limits (see [`FakeTelegram::set_limits`]).
#[derive(Clone, Copy, Debug)]
struct Limits {
    per_chat: (u32, Duration),
    per_group_per_min: u32,
    per_bot_per_sec: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_chat: DEFAULT_PER_CHAT,
            per_group_per_min: DEFAULT_PER_GROUP_PER_MINUTE,
            per_bot_per_sec: DEFAULT_PER_BOT_PER_SECOND,
        }
    }
}

impl FakeTelegram {
    /// Starts the fake on `127.0.0.1:0`, accepting [`DEFAULT_TOKEN`].
    ///
    /// # Panics
    /// If the loopback interface cannot be bound.
    pub async fn start() -> Self {
        let state = BotState {
            tokens: HashSet::from([DEFAULT_TOKEN.to_owned()]),
            limits: Limits::default(),
            missing_chats: HashSet::new(),
            migrated: HashMap::new(),
            per_chat: HashMap::new(),
            per_group: HashMap::new(),
            per_bot: HashMap::new(),
            forced_429: None,
            refuse_markup: 0,
            refuse_photos: 0,
            banned_until: None,
            early_requests: 0,
            next_message_id: 1,
            messages: Vec::new(),
            files: Vec::new(),
            rejected: Vec::new(),
        };
        let shared = Arc::new(Shared {
            intake: Intake::default(),
            state: Mutex::new(state),
        });
        let router = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(Arc::clone(&shared));
        let server = Server::start(router).await;
        Self { shared, server }
    }

    /// Base URL (`http://127.0.0.1:PORT`); requests go to `{url}/bot{token}/{method}`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    crate::lifecycle_methods!();

    /// Accepts one more bot token.
    pub fn with_token(&self, token: &str) -> &Self {
        lock(&self.shared.state).tokens.insert(token.to_owned());
        self
    }

    /// Makes `chat` (an id or `@username`) answer `Bad Request: chat not found`.
    pub fn chat_not_found(&self, chat: impl ToString) {
        let key = chat_key(&chat.to_string());
        lock(&self.shared.state).missing_chats.insert(key);
    }

    /// Marks group `old` as migrated to supergroup `new`: sending to `old` answers 400 with
    /// `parameters.migrate_to_chat_id = new`.
    pub fn migrate(&self, old: i64, new: i64) {
        lock(&self.shared.state)
            .migrated
            .insert(ChatId::Id(old).key(), new);
    }

    /// Replaces the rate limits: per chat at most `per_chat.0` messages in any sliding window of
    /// `per_chat.1`; per group chat `per_group_per_min` per 60 s; per bot `per_bot_per_sec`
    /// per 1 s. A limit of 0 blocks everything.
    pub fn set_limits(
        &self,
        per_chat: (u32, Duration),
        per_group_per_min: u32,
        per_bot_per_sec: u32,
    ) {
        lock(&self.shared.state).limits = Limits {
            per_chat,
            per_group_per_min,
            per_bot_per_sec,
        };
    }

    /// Makes the next send (`sendMessage`, `sendPhoto`, `sendDocument`) answer 429 with
    /// `retry_after = retry_after_secs`, then keeps answering 429 to every send until that
    /// time has elapsed, counting each such
    /// request in [`early_requests`](Self::early_requests): a client that honours
    /// `retry_after` sends none.
    pub fn force_429(&self, retry_after_secs: u64) {
        lock(&self.shared.state).forced_429 = Some(retry_after_secs);
    }

    /// Makes the next `n` formatted (`parse_mode` set) `sendMessage` requests, or file sends
    /// with a caption, fail with "can't parse entities", as Telegram does for a markup bug;
    /// plain-text requests pass.
    pub fn refuse_markup_next(&self, n: usize) {
        lock(&self.shared.state).refuse_markup = n;
    }

    /// Makes the next `n` `sendPhoto` requests fail with `PHOTO_INVALID_DIMENSIONS`, as
    /// Telegram does for an image whose sides or ratio it will not show as a photo.
    pub fn refuse_photos_next(&self, n: usize) {
        lock(&self.shared.state).refuse_photos = n;
    }

    /// How many sends arrived while a forced `retry_after` was still running.
    pub fn early_requests(&self) -> usize {
        lock(&self.shared.state).early_requests
    }

    /// Accepted file uploads (`sendPhoto`, `sendDocument`), in order.
    pub fn files(&self) -> Vec<TgFile> {
        lock(&self.shared.state).files.clone()
    }

    // `count_429` counts rate limits, forced and injected 429s alike; `rejected` holds each
    // refusal's description.
    crate::recorded_methods!(TgMessage, String);
}

/// A failed answer, in Telegram's shape.
#[derive(Debug)]
struct Reject {
    code: u16,
    description: String,
    /// `parameters` (`retry_after`, `migrate_to_chat_id`).
    parameters: Option<Value>,
    /// Also sent as a `Retry-After` header.
    retry_after: Option<u64>,
}

impl Reject {
    fn new(code: u16, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            parameters: None,
            retry_after: None,
        }
    }

    fn bad_request(detail: impl std::fmt::Display) -> Self {
        Self::new(400, format!("Bad Request: {detail}"))
    }

    fn not_found() -> Self {
        Self::new(404, "Not Found")
    }

    fn too_many_requests(retry_after: u64) -> Self {
        Self {
            code: 429,
            description: format!("Too Many Requests: retry after {retry_after}"),
            parameters: Some(json!({ "retry_after": retry_after })),
            retry_after: Some(retry_after),
        }
    }

    /// An injected failure: the reason phrase, except that a 429 carries a `retry_after` so a
    /// client's flood-wait handling can be exercised too.
    fn injected(code: u16) -> Self {
        if code == 429 {
            Self::too_many_requests(1)
        } else {
            Self::new(code, reason_phrase(code))
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    if let Some(code) = shared.intake.admit().await {
        return shared.answer_rejection(Reject::injected(code));
    }
    let uri = req.uri().clone();
    let form = read_form(req).await;
    match shared.serve(&uri, form) {
        Ok(result) => axum::Json(json!({ "ok": true, "result": result })).into_response(),
        Err(reject) => shared.answer_rejection(reject),
    }
}

/// A request's parameters (query and body merged) and its uploaded files by field name.
#[derive(Debug, Default)]
struct Form {
    params: Map<String, Value>,
    files: HashMap<String, FilePart>,
}

/// Reads the query and the body, whatever their encoding.
async fn read_form(req: Request) -> Result<Form, Reject> {
    let uri = req.uri().clone();
    let headers = req.headers().clone();
    let too_large = || Reject::new(413, "Request Entity Too Large");
    if is_content_type(&headers, "multipart/form-data") {
        let mut params = collect_params(&uri, &headers, &[])?;
        let data = multipart::read(req).await.map_err(|e| match e {
            FormError::TooLarge => too_large(),
            // Wording approximated: Telegram does not document its text for a broken body.
            FormError::Malformed(_) => Reject::bad_request("can't parse multipart/form-data"),
        })?;
        for (name, value) in data.text {
            params.insert(name, Value::String(value));
        }
        let files = data.files.into_iter().collect();
        return Ok(Form { params, files });
    }
    // On a request that arrived whole, reading fails only past the body limit.
    let body = Bytes::from_request(req, &())
        .await
        .map_err(|_| too_large())?;
    let params = collect_params(&uri, &headers, &body)?;
    Ok(Form {
        params,
        files: HashMap::new(),
    })
}

/// The two upload methods.
#[derive(Clone, Copy, Debug)]
enum FileMethod {
    Photo,
    Document,
}

impl FileMethod {
    fn name(self) -> &'static str {
        match self {
            Self::Photo => "sendPhoto",
            Self::Document => "sendDocument",
        }
    }

    /// The parameter holding the file.
    fn field(self) -> &'static str {
        match self {
            Self::Photo => "photo",
            Self::Document => "document",
        }
    }

    fn max_bytes(self) -> usize {
        match self {
            Self::Photo => MAX_PHOTO_BYTES,
            Self::Document => MAX_DOCUMENT_BYTES,
        }
    }
}

impl Shared {
    /// Routes and serves one request (no failure injection).
    fn serve(&self, uri: &Uri, form: Result<Form, Reject>) -> Result<Value, Reject> {
        let (token, method) = uri
            .path()
            .strip_prefix("/bot")
            .and_then(|rest| rest.split_once('/'))
            .ok_or_else(Reject::not_found)?;
        let method = method.to_ascii_lowercase();

        let mut state = lock(&self.state);
        // A body error is reported only after the token check, like Telegram.
        if !state.tokens.contains(token) {
            return Err(Reject::new(401, "Unauthorized"));
        }
        match method.as_str() {
            "getme" => Ok(bot_user(token)),
            "sendmessage" => state.send_message(token, form?.params),
            "sendphoto" => state.send_file(token, FileMethod::Photo, form?),
            "senddocument" => state.send_file(token, FileMethod::Document, form?),
            _ => Err(Reject::not_found()),
        }
    }

    /// Records a rejection and renders it.
    fn answer_rejection(&self, reject: Reject) -> Response {
        self.intake.answered(reject.code);
        lock(&self.state)
            .rejected
            .push((reject.code, reject.description.clone()));
        let mut body = json!({
            "ok": false,
            "error_code": reject.code,
            "description": reject.description,
        });
        if let Some(parameters) = reject.parameters {
            body["parameters"] = parameters;
        }
        let mut response = (status_code(reject.code), axum::Json(body)).into_response();
        if let Some(secs) = reject.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// `getMe`'s bot user; the id is the token's numeric prefix, as for real tokens.
fn bot_user(token: &str) -> Value {
    let id = token
        .split_once(':')
        .and_then(|(id, _)| id.parse::<i64>().ok())
        .unwrap_or(FALLBACK_BOT_ID);
    json!({
        "id": id,
        "is_bot": true,
        "first_name": "Fake",
        "username": "fake_bot",
        "can_join_groups": true,
        "can_read_all_group_messages": false,
        "supports_inline_queries": false,
    })
}

/// Merges the query string and the body into one parameter object, as Telegram does. Body
/// values override query values.
fn collect_params(
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Map<String, Value>, Reject> {
    let mut params = Map::new();
    if let Some(query) = uri.query() {
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            params.insert(key.into_owned(), Value::String(value.into_owned()));
        }
    }
    if body.is_empty() {
        return Ok(params);
    }
    if is_content_type(headers, "application/json") {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(object)) => params.extend(object),
            // Wording approximated: the exact text for a broken JSON body is not documented.
            _ => return Err(Reject::bad_request("can't parse JSON object")),
        }
    } else if is_content_type(headers, "application/x-www-form-urlencoded") {
        for (key, value) in form_urlencoded::parse(body) {
            params.insert(key.into_owned(), Value::String(value.into_owned()));
        }
    }
    // Any other content type: Telegram ignores the body, so do we.
    Ok(params)
}

/// A `chat_id` parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ChatId {
    Id(i64),
    /// A channel or supergroup username, without the `@`.
    Username(String),
}

impl ChatId {
    /// Parses the string form (`"42"`, `"-100123"`, `"@name"`).
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if let Ok(id) = text.parse::<i64>() {
            return Some(Self::Id(id));
        }
        match text.strip_prefix('@') {
            Some(name) if !name.is_empty() => Some(Self::Username(name.to_owned())),
            _ => None,
        }
    }

    /// The key rate windows and chat registrations use: usernames are case-insensitive.
    fn key(&self) -> String {
        match self {
            Self::Id(id) => id.to_string(),
            Self::Username(name) => format!("@{}", name.to_ascii_lowercase()),
        }
    }

    /// The chat as recorded: a decimal id or `@username` as sent.
    fn recorded(&self) -> String {
        match self {
            Self::Id(id) => id.to_string(),
            Self::Username(name) => format!("@{name}"),
        }
    }

    /// Whether the bots FAQ group limit applies.
    fn is_group(&self) -> bool {
        matches!(self, Self::Id(id) if *id < 0)
    }

    /// The `chat` object of a sent message.
    fn to_json(&self) -> Value {
        match self {
            Self::Id(id) => {
                let kind = if *id > 0 {
                    "private"
                } else if *id <= SUPERGROUP_ID_BASE {
                    "supergroup"
                } else {
                    "group"
                };
                json!({ "id": id, "type": kind })
            }
            Self::Username(name) => {
                // A stable made-up channel id, so repeated sends report the same chat.
                let hash = fnv1a(name.to_ascii_lowercase().as_bytes());
                let id = SUPERGROUP_ID_BASE - (hash % 10_000_000_000) as i64;
                json!({ "id": id, "type": "channel", "username": name })
            }
        }
    }
}

/// The registration key for a chat given as text; unparseable text is kept as is.
fn chat_key(chat: &str) -> String {
    ChatId::parse(chat).map_or_else(|| chat.to_owned(), |c| c.key())
}

/// Reads `chat_id`: an integer, or a string holding an integer or `@username`.
fn parse_chat_id(value: Option<&Value>) -> Result<ChatId, Reject> {
    let empty = || Reject::bad_request("chat_id is empty");
    match value {
        None | Some(Value::Null) => Err(empty()),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(ChatId::Id)
            .ok_or_else(|| Reject::bad_request("chat not found")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(empty()),
        Some(Value::String(s)) => {
            ChatId::parse(s).ok_or_else(|| Reject::bad_request("chat not found"))
        }
        Some(_) => Err(Reject::bad_request("chat not found")),
    }
}

/// Reads a string parameter; numbers and booleans are taken as their text, like Telegram.
fn string_param(value: Option<&Value>, name: &str) -> Result<Option<String>, Reject> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
        Some(_) => Err(Reject::bad_request(format!(
            "field \"{name}\" must be of type String"
        ))),
    }
}

/// Reads a boolean flag leniently (`true`, `"true"`, `1`, `"1"`); anything else is false.
fn flag(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true") || s == "1",
        _ => false,
    }
}

/// Reads an optional integer parameter given as a number or a numeric string.
fn int_param(value: Option<&Value>, name: &str) -> Result<Option<i64>, Reject> {
    let invalid = || Reject::bad_request(format!("invalid {name} specified"));
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(invalid),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| invalid()),
        Some(_) => Err(invalid()),
    }
}

/// Object-valued parameters arrive as objects in JSON bodies and as JSON strings in form and
/// query ones (PROVIDERS.md §1); `None` when absent, `Err(())` when not an object.
fn object_param(value: Option<&Value>) -> Result<Option<Map<String, Value>>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o.clone())),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => Ok(Some(o)),
            _ => Err(()),
        },
        Some(_) => Err(()),
    }
}

/// Validates an inline keyboard in `reply_markup`: every button needs an action, and
/// `callback_data` is 1–64 bytes (PROVIDERS.md §1). Other markup kinds are accepted as is.
fn check_reply_markup(value: Option<&Value>) -> Result<(), Reject> {
    let invalid = || Reject::bad_request("can't parse reply keyboard markup JSON object");
    let Some(markup) = object_param(value).map_err(|()| invalid())? else {
        return Ok(());
    };
    let Some(keyboard) = markup.get("inline_keyboard") else {
        return Ok(());
    };
    let rows = keyboard.as_array().ok_or_else(invalid)?;
    for row in rows {
        for button in row.as_array().ok_or_else(invalid)? {
            let button = button.as_object().ok_or_else(invalid)?;
            if !button.get("text").is_some_and(Value::is_string) {
                return Err(invalid());
            }
            match button.get("callback_data") {
                Some(Value::String(data))
                    if (1..=MAX_CALLBACK_DATA_BYTES).contains(&data.len()) => {}
                Some(_) => return Err(Reject::bad_request("BUTTON_DATA_INVALID")),
                None if BUTTON_ACTIONS.iter().any(|a| button.contains_key(*a)) => {}
                None => {
                    return Err(Reject::bad_request(
                        "text buttons are unallowed in the inline keyboard",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Reads `link_preview_options`: an object in JSON bodies, a JSON string in form/query ones.
fn link_preview_disabled(value: Option<&Value>) -> Result<bool, Reject> {
    let options = object_param(value)
        .map_err(|()| Reject::bad_request("can't parse link preview options JSON object"))?;
    Ok(options.is_some_and(|o| flag(o.get("is_disabled"))))
}

/// How a message's text is marked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ParseMode {
    Html,
    MarkdownV2,
    Markdown,
}

/// Reads `parse_mode` (case-insensitive; empty means none).
fn parse_mode(raw: Option<&str>) -> Result<Option<ParseMode>, Reject> {
    let Some(raw) = raw.filter(|m| !m.is_empty()) else {
        return Ok(None);
    };
    match raw.to_ascii_lowercase().as_str() {
        "html" => Ok(Some(ParseMode::Html)),
        "markdownv2" => Ok(Some(ParseMode::MarkdownV2)),
        "markdown" => Ok(Some(ParseMode::Markdown)),
        _ => Err(Reject::bad_request("unsupported parse_mode")),
    }
}

impl BotState {
    /// Validates, rate-limits and records one `sendMessage`.
    fn send_message(&mut self, token: &str, params: Map<String, Value>) -> Result<Value, Reject> {
        let now = Instant::now();
        self.flood_gate(now)?;

        let chat = parse_chat_id(params.get("chat_id"))?;
        let text = string_param(params.get("text"), "text")?.unwrap_or_default();
        if text.is_empty() {
            return Err(Reject::bad_request("message text is empty"));
        }
        let raw_mode = string_param(params.get("parse_mode"), "parse_mode")?;
        if raw_mode.as_deref().is_some_and(|m| !m.is_empty()) && self.refuse_markup > 0 {
            self.refuse_markup -= 1;
            return Err(Reject::bad_request(
                "can't parse entities: Can't find end of the entity starting at byte offset 0",
            ));
        }
        let plain = match parse_mode(raw_mode.as_deref())? {
            None => Ok(text.clone()),
            Some(ParseMode::Html) => markup::parse_html(&text),
            Some(ParseMode::MarkdownV2) => markup::parse_markdown_v2(&text),
            Some(ParseMode::Markdown) => markup::parse_markdown(&text),
        }
        .map_err(|detail| Reject::bad_request(format!("can't parse entities: {detail}")))?;
        // Telegram trims surrounding whitespace before checking emptiness and length.
        let visible = plain.trim();
        if visible.is_empty() {
            return Err(Reject::bad_request("message text is empty"));
        }
        if visible.encode_utf16().count() > MAX_TEXT_UTF16 {
            return Err(Reject::bad_request("message is too long"));
        }
        let message_thread_id = int_param(params.get("message_thread_id"), "message_thread_id")?;
        let link_preview_disabled = link_preview_disabled(params.get("link_preview_options"))?
            || flag(params.get("disable_web_page_preview"));
        check_reply_markup(params.get("reply_markup"))?;

        self.check_chat(&chat)?;
        self.check_rate_limits(token, &chat, now)?;

        let message_id = self.next_message_id;
        self.next_message_id += 1;
        let mut result = json!({
            "message_id": message_id,
            "date": chrono::Utc::now().timestamp(),
            "chat": chat.to_json(),
            "text": visible,
        });
        if let Some(thread) = message_thread_id {
            result["message_thread_id"] = json!(thread);
            result["is_topic_message"] = json!(true);
        }
        self.messages.push(TgMessage {
            token: token.to_owned(),
            chat_id: chat.recorded(),
            disable_notification: flag(params.get("disable_notification")),
            protect_content: flag(params.get("protect_content")),
            params: Value::Object(params),
            text,
            plain,
            parse_mode: raw_mode,
            message_thread_id,
            link_preview_disabled,
            at: now.into_std(),
        });
        Ok(result)
    }

    /// Validates, rate-limits and records one `sendPhoto` or `sendDocument`: the file must be
    /// a multipart upload within the method's limit; the caption obeys the rules of `text`
    /// with its own length limit.
    fn send_file(&mut self, token: &str, method: FileMethod, form: Form) -> Result<Value, Reject> {
        let now = Instant::now();
        self.flood_gate(now)?;

        let Form { params, mut files } = form;
        let chat = parse_chat_id(params.get("chat_id"))?;
        let field = method.field();
        let Some(file) = files.remove(field) else {
            // A text value would be a file_id or URL to fetch: this fake knows none.
            return Err(if params.contains_key(field) {
                Reject::bad_request("wrong file identifier/HTTP URL specified")
            } else {
                Reject::bad_request(format!("there is no {field} in the request"))
            });
        };
        if file.bytes.is_empty() {
            return Err(Reject::bad_request("file must be non-empty"));
        }
        if file.bytes.len() > method.max_bytes() {
            return Err(Reject::new(413, "Request Entity Too Large"));
        }
        if matches!(method, FileMethod::Photo) && self.refuse_photos > 0 {
            self.refuse_photos -= 1;
            return Err(Reject::bad_request("PHOTO_INVALID_DIMENSIONS"));
        }
        let caption = string_param(params.get("caption"), "caption")?.filter(|c| !c.is_empty());
        let raw_mode = string_param(params.get("parse_mode"), "parse_mode")?;
        let mode = parse_mode(raw_mode.as_deref())?;
        let caption_plain = match &caption {
            None => None,
            Some(caption) => {
                if mode.is_some() && self.refuse_markup > 0 {
                    self.refuse_markup -= 1;
                    return Err(Reject::bad_request(
                        "can't parse entities: Can't find end of the entity starting at byte offset 0",
                    ));
                }
                let plain = match mode {
                    None => Ok(caption.clone()),
                    Some(ParseMode::Html) => markup::parse_html(caption),
                    Some(ParseMode::MarkdownV2) => markup::parse_markdown_v2(caption),
                    Some(ParseMode::Markdown) => markup::parse_markdown(caption),
                }
                .map_err(|detail| Reject::bad_request(format!("can't parse entities: {detail}")))?;
                if plain.trim().encode_utf16().count() > MAX_CAPTION_UTF16 {
                    return Err(Reject::bad_request("message caption is too long"));
                }
                Some(plain)
            }
        };
        let message_thread_id = int_param(params.get("message_thread_id"), "message_thread_id")?;
        check_reply_markup(params.get("reply_markup"))?;
        self.check_chat(&chat)?;
        self.check_rate_limits(token, &chat, now)?;

        let message_id = self.next_message_id;
        self.next_message_id += 1;
        let size = file.bytes.len();
        let file_id = format!("fake-file-{message_id}");
        let mut result = json!({
            "message_id": message_id,
            "date": chrono::Utc::now().timestamp(),
            "chat": chat.to_json(),
        });
        match method {
            FileMethod::Photo => {
                result["photo"] = json!([{
                    "file_id": file_id, "file_unique_id": file_id,
                    "width": 1, "height": 1, "file_size": size,
                }]);
            }
            FileMethod::Document => {
                let mut document = json!({
                    "file_id": file_id, "file_unique_id": file_id, "file_size": size,
                });
                if let Some(name) = &file.filename {
                    document["file_name"] = json!(name);
                }
                if let Some(mime) = &file.content_type {
                    document["mime_type"] = json!(mime);
                }
                result["document"] = document;
            }
        }
        if let Some(plain) = &caption_plain {
            result["caption"] = json!(plain.trim());
        }
        if let Some(thread) = message_thread_id {
            result["message_thread_id"] = json!(thread);
            result["is_topic_message"] = json!(true);
        }
        self.files.push(TgFile {
            token: token.to_owned(),
            method: method.name().to_owned(),
            chat_id: chat.recorded(),
            filename: file.filename,
            content_type: file.content_type,
            bytes: file.bytes.to_vec(),
            caption,
            caption_plain,
            parse_mode: raw_mode,
            disable_notification: flag(params.get("disable_notification")),
            message_thread_id,
            params: Value::Object(params),
            at: now.into_std(),
        });
        Ok(result)
    }

    /// A running flood-wait answers before the request is even looked at; a forced 429
    /// starts one.
    fn flood_gate(&mut self, now: Instant) -> Result<(), Reject> {
        if let Some(until) = self.banned_until {
            if now < until {
                self.early_requests += 1;
                return Err(Reject::too_many_requests(ceil_secs(until - now)));
            }
            self.banned_until = None;
        }
        if let Some(secs) = self.forced_429.take() {
            self.banned_until = Some(now + Duration::from_secs(secs));
            return Err(Reject::too_many_requests(secs));
        }
        Ok(())
    }

    /// Registered chat states: gone, or migrated to a supergroup.
    fn check_chat(&self, chat: &ChatId) -> Result<(), Reject> {
        let key = chat.key();
        if self.missing_chats.contains(&key) {
            return Err(Reject::bad_request("chat not found"));
        }
        if let Some(&new_id) = self.migrated.get(&key) {
            let mut reject = Reject::bad_request("group chat was migrated to a supergroup chat");
            reject.parameters = Some(json!({ "migrate_to_chat_id": new_id }));
            return Err(reject);
        }
        Ok(())
    }

    /// Checks the three bots-FAQ limits and, if all allow it, counts the message in each.
    fn check_rate_limits(
        &mut self,
        token: &str,
        chat: &ChatId,
        now: Instant,
    ) -> Result<(), Reject> {
        let limits = self.limits;
        let chat_key = (token.to_owned(), chat.key());
        let mut wait = self.per_chat.entry(chat_key.clone()).or_default().wait(
            now,
            limits.per_chat.0,
            limits.per_chat.1,
        );
        if chat.is_group() {
            let group = self.per_group.entry(chat_key.clone()).or_default().wait(
                now,
                limits.per_group_per_min,
                GROUP_WINDOW,
            );
            wait = wait.max(group);
        }
        let bot = self.per_bot.entry(token.to_owned()).or_default().wait(
            now,
            limits.per_bot_per_sec,
            BOT_WINDOW,
        );
        wait = wait.max(bot);
        if let Some(wait) = wait {
            return Err(Reject::too_many_requests(ceil_secs(wait)));
        }

        if chat.is_group() {
            self.per_group.entry(chat_key.clone()).or_default().hit(now);
        }
        self.per_chat.entry(chat_key).or_default().hit(now);
        self.per_bot.entry(token.to_owned()).or_default().hit(now);
        Ok(())
    }
}

/// A sliding-window counter: the instants of recent accepted messages.
#[derive(Debug, Default)]
struct Window {
    hits: VecDeque<Instant>,
}

impl Window {
    /// How long until one more message fits within `limit` per `window`; `None` if it fits now.
    fn wait(&mut self, now: Instant, limit: u32, window: Duration) -> Option<Duration> {
        while self
            .hits
            .front()
            .is_some_and(|&oldest| now.duration_since(oldest) >= window)
        {
            self.hits.pop_front();
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        if self.hits.len() < limit {
            return None;
        }
        // The hit whose expiry brings the count below the limit (the oldest, unless the limit
        // was lowered while the window was full).
        let freeing = self.hits.len() - limit;
        let wait = self
            .hits
            .get(freeing)
            .map_or(window, |&hit| (hit + window).saturating_duration_since(now));
        Some(wait)
    }

    fn hit(&mut self, now: Instant) {
        self.hits.push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_sliding() {
        let start = Instant::now();
        let mut window = Window::default();
        let span = Duration::from_secs(3);
        for i in 0..3 {
            assert_eq!(window.wait(start + Duration::from_secs(i), 3, span), None);
            window.hit(start + Duration::from_secs(i));
        }
        // Full until the first hit is 3 s old.
        assert_eq!(
            window.wait(start + Duration::from_millis(2500), 3, span),
            Some(Duration::from_millis(500))
        );
        assert_eq!(window.wait(start + span, 3, span), None);
        assert_eq!(window.wait(start, 0, span), Some(span));
    }

    #[test]
    fn chat_ids_normalise() {
        assert_eq!(ChatId::parse(" -100123 "), Some(ChatId::Id(-100_123)));
        assert_eq!(chat_key("@MyChannel"), "@mychannel");
        assert_eq!(ChatId::parse("@"), None);
        assert_eq!(ChatId::parse("abc"), None);
        assert!(ChatId::Id(-5).is_group());
        assert!(!ChatId::Username("x".into()).is_group());
        assert_eq!(
            ChatId::Id(-1_001_234_567_890).to_json()["type"],
            "supergroup"
        );
    }

    #[test]
    fn flags_and_params_are_lenient_like_telegram() {
        assert!(flag(Some(&json!(true))));
        assert!(flag(Some(&json!("True"))));
        assert!(flag(Some(&json!(1))));
        assert!(!flag(Some(&json!("no"))));
        assert_eq!(int_param(Some(&json!("42")), "x").ok(), Some(Some(42)));
        assert!(int_param(Some(&json!("4x")), "x").is_err());
        assert_eq!(
            link_preview_disabled(Some(&json!("{\"is_disabled\":true}"))).ok(),
            Some(true)
        );
        assert!(link_preview_disabled(Some(&json!("{nope"))).is_err());
        assert_eq!(
            parse_mode(Some("markdownV2")).ok(),
            Some(Some(ParseMode::MarkdownV2))
        );
        assert!(parse_mode(Some("rst")).is_err());
    }
}
