//! Channel URLs (Apprise's schemes where Apprise has one, PRODUCT.md §6) and the options that
//! ride with them, turned into a `Provider` the channel layer can build from.

use std::time::Duration;

use crate::render::discord::DiscordOptions;
use crate::render::telegram::ParseMode;
use crate::secret::Secret;

/// Where each provider's API lives; overridable for self-hosted servers, proxies and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiBases {
    pub telegram: String,
    pub discord: String,
}

impl Default for ApiBases {
    fn default() -> Self {
        ApiBases {
            telegram: "https://api.telegram.org".into(),
            discord: "https://discord.com".into(),
        }
    }
}

/// A provider and everything needed to talk to it. Secrets are `Secret`s from here on.
#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    Telegram(TelegramSpec),
    Discord(DiscordSpec),
    Webhook(WebhookSpec),
    /// Writes the rendered notification to the service log: the zero-credentials channel.
    Log,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TelegramSpec {
    pub api_base: String,
    pub token: Secret,
    /// Chat ids (`-100…`, `12345`) or `@channelname`s; one delivery each.
    pub chats: Vec<String>,
    pub parse_mode: ParseMode,
    /// `disable_notification`: deliver without sound.
    pub silent: bool,
    /// `message_thread_id`, for forum topics.
    pub thread: Option<i64>,
    /// Link previews are off by default: a chart link's preview buries the alert.
    pub preview: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiscordSpec {
    pub api_base: String,
    pub webhook_id: String,
    pub token: Secret,
    pub thread_id: Option<String>,
    pub options: DiscordOptions,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSpec {
    /// The full target URL; a `Secret` because users put tokens in paths and queries.
    pub url: Secret,
    /// `scheme://host[:port]/…` — no credentials, path or query — for display.
    pub display: String,
    pub method: String,
    /// Standard Webhooks `whsec_…` secret; requests are signed when set.
    pub secret: Option<Secret>,
    /// Extra headers; values may be tokens, so they are secrets.
    pub headers: Vec<(String, Secret)>,
    pub basic_auth: Option<(String, Secret)>,
}

/// Options given as TOML keys beside `url` (they win over the same option in the query).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub pairs: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
}

impl Options {
    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_bool(v)
                .map(Some)
                .ok_or_else(|| format!("option `{key}` must be yes/no/true/false, not `{v}`")),
        }
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.pairs.push((key.to_string(), value.into()));
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" | "y" => Some(true),
        "0" | "no" | "false" | "off" | "n" => Some(false),
        _ => None,
    }
}

/// Splits `scheme://rest?query` into its parts, decoding the query. Done by hand because
/// Telegram tokens (`123:ABC`) are not valid URL authorities.
fn split(url: &str) -> Result<(String, String, Options, String), String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        "not a URL: expected `scheme://…` (e.g. tgram://, discord://, json://)".to_string()
    })?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut opts = Options::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        // Apprise's convention: `+Name=value` adds a header. Checked on the raw text because
        // form decoding reads `+` as a space.
        let (header, pair) = match pair.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, pair),
        };
        if let Some((k, v)) = url::form_urlencoded::parse(pair.as_bytes()).next() {
            let entry = (k.into_owned(), v.into_owned());
            if header {
                opts.headers.push(entry);
            } else {
                opts.pairs.push(entry);
            }
        }
    }
    Ok((
        scheme.to_ascii_lowercase(),
        rest.to_string(),
        opts,
        query.to_string(),
    ))
}

/// Parses a channel URL plus its TOML options. Error messages never quote the URL (it holds
/// secrets); they say which part is wrong.
pub fn parse(url: &str, extra: &Options, apis: &ApiBases) -> Result<Provider, String> {
    let (scheme, rest, mut opts, query) = split(url.trim())?;
    opts.pairs.extend(extra.pairs.iter().cloned());
    opts.headers.extend(extra.headers.iter().cloned());
    match scheme.as_str() {
        "tgram" | "telegram" => telegram(&rest, &opts, apis),
        "discord" => {
            let mut parts = rest.trim_matches('/').split('/');
            let (id, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            discord(id, token, &opts, apis)
        }
        "https" | "http" if is_discord_webhook(&rest) => {
            let path = rest
                .split_once("/api/webhooks/")
                .map(|(_, p)| p)
                .unwrap_or("");
            let mut parts = path.trim_matches('/').split('/');
            let (id, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            discord(id, token, &opts, apis)
        }
        "json" | "jsons" => webhook(&scheme, &rest, &query, &opts),
        "http" | "https" => webhook(
            if scheme == "http" { "json" } else { "jsons" },
            &rest,
            &query,
            &opts,
        ),
        "log" => Ok(Provider::Log),
        other => Err(format!(
            "unknown scheme `{other}://` (supported: tgram://, discord://, https://discord.com/api/webhooks/…, json://, jsons://, log://)"
        )),
    }
}

fn is_discord_webhook(rest: &str) -> bool {
    let host = rest.split('/').next().unwrap_or("");
    matches!(
        host,
        "discord.com" | "discordapp.com" | "ptb.discord.com" | "canary.discord.com"
    ) && rest.contains("/api/webhooks/")
}

fn telegram(rest: &str, opts: &Options, apis: &ApiBases) -> Result<Provider, String> {
    let mut parts = rest.split('/').filter(|p| !p.is_empty());
    let token = parts
        .next()
        .ok_or("tgram:// needs a bot token: tgram://TOKEN/CHAT_ID")?;
    if !token.contains(':') || token.len() < 10 {
        return Err("the bot token does not look like `123456:ABC…` (ask @BotFather)".into());
    }
    let mut chats: Vec<String> = parts.map(str::to_string).collect();
    if let Some(more) = opts.get("to").or(opts.get("chat")) {
        chats.extend(
            more.split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty()),
        );
    }
    if chats.is_empty() {
        return Err("tgram:// needs at least one chat: tgram://TOKEN/CHAT_ID[/CHAT_ID…]".into());
    }
    for c in &chats {
        let ok = c.parse::<i64>().is_ok()
            || (c.starts_with('@')
                && c.len() > 1
                && c[1..]
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_'));
        if !ok {
            return Err(format!(
                "chat `{c}` is neither a numeric chat id nor an @channel name"
            ));
        }
    }
    let parse_mode = match opts.get("format").or(opts.get("parse_mode")) {
        None => ParseMode::Html,
        Some(v) => ParseMode::parse(v)
            .ok_or_else(|| format!("format `{v}` must be html, markdown (MarkdownV2) or text"))?,
    };
    let thread = match opts.get("thread").or(opts.get("topic")) {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| format!("thread `{v}` must be a number"))?,
        ),
    };
    Ok(Provider::Telegram(TelegramSpec {
        api_base: trim_base(opts.get("api").unwrap_or(&apis.telegram)),
        token: Secret::new(token),
        chats,
        parse_mode,
        silent: opts.flag("silent")?.unwrap_or(false),
        thread,
        preview: opts.flag("preview")?.unwrap_or(false),
    }))
}

fn discord(id: &str, token: &str, opts: &Options, apis: &ApiBases) -> Result<Provider, String> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err("the Discord webhook id must be the number in …/api/webhooks/ID/TOKEN".into());
    }
    if token.is_empty() {
        return Err("the Discord webhook URL lacks its token: …/api/webhooks/ID/TOKEN".into());
    }
    Ok(Provider::Discord(DiscordSpec {
        api_base: trim_base(opts.get("api").unwrap_or(&apis.discord)),
        webhook_id: id.to_string(),
        token: Secret::new(token),
        thread_id: opts.get("thread").map(str::to_string),
        options: DiscordOptions {
            username: opts
                .get("username")
                .or(opts.get("botname"))
                .map(str::to_string),
            avatar_url: opts.get("avatar_url").map(str::to_string),
            mentions: opts.flag("mentions")?.unwrap_or(false),
        },
    }))
}

fn webhook(scheme: &str, rest: &str, query: &str, opts: &Options) -> Result<Provider, String> {
    let http_scheme = if scheme == "jsons" { "https" } else { "http" };
    // Options we consumed must not be forwarded to the receiver as query parameters.
    let consumed = ["method", "secret"];
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| {
            let key = p.split('=').next().unwrap_or("");
            !p.is_empty() && !key.starts_with('+') && !consumed.contains(&key)
        })
        .collect();
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    let mut url = url::Url::parse(&format!("{http_scheme}://{rest}{query}"))
        .map_err(|e| format!("the webhook address is not valid: {e}"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the webhook URL needs a host".into());
    }
    let basic_auth = (!url.username().is_empty()).then(|| {
        let user = percent(url.username());
        let pass = Secret::new(url.password().map(percent).unwrap_or_default());
        (user, pass)
    });
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let method = opts.get("method").unwrap_or("POST").to_ascii_uppercase();
    if !["POST", "PUT", "PATCH"].contains(&method.as_str()) {
        return Err(format!("method `{method}` must be POST, PUT or PATCH"));
    }
    let secret = opts.get("secret").map(Secret::new);
    if let Some(s) = &secret {
        crate::render::webhook::decode_secret(s).map_err(|e| format!("option `secret`: {e}"))?;
    }
    let mut headers = Vec::new();
    for (k, v) in &opts.headers {
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(format!("header name `{k}` is not a valid HTTP header name"));
        }
        headers.push((k.clone(), Secret::new(v.clone())));
    }
    // Hook URLs often carry their token in the path (`/hooks/T0/B0/XXXX`), so the path is not
    // shown either: the host says where it goes.
    let display = format!(
        "{}://{}{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default(),
        if url.path().len() > 1 { "/…" } else { "/" }
    );
    Ok(Provider::Webhook(WebhookSpec {
        url: Secret::new(url.to_string()),
        display,
        method,
        secret,
        headers,
        basic_auth,
    }))
}

fn percent(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn trim_base(base: &str) -> String {
    base.trim_end_matches('/').to_string()
}

/// A short, secret-free description of where a channel sends, for status and logs.
pub fn describe(p: &Provider) -> String {
    match p {
        Provider::Telegram(t) => format!("telegram → {} chat(s)", t.chats.len()),
        Provider::Discord(d) => format!("discord webhook {}", d.webhook_id),
        Provider::Webhook(w) => format!("webhook {} {}", w.method, w.display),
        Provider::Log => "service log".into(),
    }
}

/// The per-attempt HTTP timeout default; webhooks get the Standard Webhooks guidance (≤ 30 s),
/// chat APIs answer fast or not at all.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;

    fn p(url: &str) -> Result<Provider, String> {
        parse(url, &Options::default(), &ApiBases::default())
    }

    #[test]
    fn telegram_forms() {
        let Provider::Telegram(t) =
            p("tgram://123456:ABC-def_ghi/-100200/@ops?silent=yes&format=markdown&thread=7")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(t.token.expose(), "123456:ABC-def_ghi");
        assert_eq!(t.chats, ["-100200", "@ops"]);
        assert_eq!(t.parse_mode, ParseMode::MarkdownV2);
        assert!(t.silent && !t.preview);
        assert_eq!(t.thread, Some(7));
        assert!(
            p("tgram://123456:ABC-def_ghi")
                .unwrap_err()
                .contains("chat")
        );
        assert!(p("tgram://nocolon/1").unwrap_err().contains("token"));
    }

    #[test]
    fn discord_forms() {
        for url in [
            "discord://123/abc",
            "https://discord.com/api/webhooks/123/abc",
            "https://discordapp.com/api/webhooks/123/abc/",
        ] {
            let Provider::Discord(d) = p(url).unwrap() else {
                panic!("{url}")
            };
            assert_eq!((d.webhook_id.as_str(), d.token.expose()), ("123", "abc"));
        }
        assert!(p("discord://abc/def").is_err());
    }

    #[test]
    fn webhook_forms() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let Provider::Webhook(w) = p(&format!(
            "jsons://user:pa%20ss@example.com:8443/hook?x=1&+X-Token=abc&secret={secret}&method=put"
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(w.url.expose(), "https://example.com:8443/hook?x=1");
        assert_eq!(w.display, "https://example.com:8443/…");
        assert_eq!(w.method, "PUT");
        assert_eq!(w.headers[0].0, "X-Token");
        assert_eq!(w.basic_auth.as_ref().unwrap().1.expose(), "pa ss");
        assert!(w.secret.is_some());
        assert!(
            p("json://example.com/h?secret=whsec_short")
                .unwrap_err()
                .contains("secret")
        );
        assert!(p("json://example.com/h?method=DELETE").is_err());
    }

    #[test]
    fn unknown_scheme_lists_supported() {
        assert!(p("smoke://x").unwrap_err().contains("tgram://"));
        assert!(p("no-scheme").is_err());
    }
}
