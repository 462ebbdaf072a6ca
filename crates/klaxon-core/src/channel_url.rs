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
    pub slack: String,
    pub twilio: String,
    /// The server `ntfy://topic` (no host) publishes to.
    pub ntfy: String,
    pub pushover: String,
}

impl Default for ApiBases {
    fn default() -> Self {
        ApiBases {
            telegram: "https://api.telegram.org".into(),
            discord: "https://discord.com".into(),
            slack: "https://hooks.slack.com".into(),
            twilio: "https://api.twilio.com".into(),
            ntfy: "https://ntfy.sh".into(),
            pushover: "https://api.pushover.net".into(),
        }
    }
}

/// A provider and everything needed to talk to it. Secrets are `Secret`s from here on.
#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    Telegram(TelegramSpec),
    Discord(DiscordSpec),
    Webhook(WebhookSpec),
    Slack(SlackSpec),
    Email(EmailSpec),
    /// SMS or WhatsApp through Twilio's Messages API.
    Twilio(TwilioSpec),
    Ntfy(NtfySpec),
    Pushover(PushoverSpec),
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

#[derive(Debug, Clone, PartialEq)]
pub struct SlackSpec {
    pub api_base: String,
    /// `T…/B…/…`: the three path parts after `/services/`; together they are the credential.
    pub token: Secret,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `mailto://`: plain connect, then `STARTTLS` (required, never silently skipped).
    StartTls,
    /// `mailtos://`: TLS from the first byte (port 465).
    Implicit,
    /// `?tls=no`: a local relay on a trusted network only.
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmailSpec {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// `AUTH` credentials; none for an open relay.
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub from: String,
    /// Display name on `From:` (`?name=`).
    pub from_name: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    /// `?verify=no`: accept a self-signed or mismatched certificate. Off by default.
    pub verify: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TwilioSpec {
    pub api_base: String,
    pub account_sid: String,
    pub auth_token: Secret,
    /// E.164 (`+15551234567`), `whatsapp:+…`, or a Messaging Service SID (`MG…`).
    pub from: String,
    /// One delivery each; `whatsapp:+…` when `from` is a WhatsApp sender.
    pub to: Vec<String>,
    /// Messages are cut to fit this many SMS segments (`?segments=`, default 2).
    pub max_segments: u32,
}

impl TwilioSpec {
    pub fn is_whatsapp(&self) -> bool {
        self.from.starts_with("whatsapp:")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum NtfyAuth {
    None,
    /// `?token=tk_…`: sent as `Authorization: Bearer`.
    Token(Secret),
    Basic(String, Secret),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NtfySpec {
    /// `https://ntfy.sh`, or the self-hosted server.
    pub server: String,
    pub topic: String,
    pub auth: NtfyAuth,
    /// Extra tags (`?tags=a,b`), sent beside the notification's own.
    pub tags: Vec<String>,
    /// `?click=URL`: opened when the notification is tapped.
    pub click: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PushoverSpec {
    pub api_base: String,
    pub user: Secret,
    pub token: Secret,
    /// Limit to these devices (`pover://USER@TOKEN/DEVICE…`); all of the user's by default.
    pub devices: Vec<String>,
    pub sound: Option<String>,
    /// Emergency (priority 2) re-alerts every `retry` seconds (≥ 30) until `expire` (≤ 10800).
    pub retry: u32,
    pub expire: u32,
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
        "https" | "http" if is_slack_webhook(&rest) => {
            let path = rest.split_once("/services/").map(|(_, p)| p).unwrap_or("");
            slack(path, apis)
        }
        "json" | "jsons" => webhook(&scheme, &rest, &query, &opts),
        "http" | "https" => webhook(
            if scheme == "http" { "json" } else { "jsons" },
            &rest,
            &query,
            &opts,
        ),
        "slack" => slack(&rest, apis),
        "mailto" | "mailtos" => email(&scheme, &rest, &opts),
        "twilio" => twilio(&rest, &opts, apis),
        "ntfy" | "ntfys" => ntfy(&scheme, &rest, &opts, apis),
        "pover" | "pushover" => pushover(&rest, &opts, apis),
        "log" => Ok(Provider::Log),
        other => Err(format!(
            "unknown scheme `{other}://` (supported: tgram://, discord://, slack://, mailto://, mailtos://, twilio://, ntfy://, ntfys://, pover://, json://, jsons://, https://discord.com/api/webhooks/…, https://hooks.slack.com/services/…, log://)"
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

fn is_slack_webhook(rest: &str) -> bool {
    rest.split('/').next() == Some("hooks.slack.com") && rest.contains("/services/")
}

fn slack(path: &str, apis: &ApiBases) -> Result<Provider, String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let valid = parts.len() == 3
        && parts.iter().all(|p| {
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !valid {
        return Err(
            "a Slack webhook is slack://T…/B…/TOKEN or https://hooks.slack.com/services/T…/B…/TOKEN"
                .into(),
        );
    }
    Ok(Provider::Slack(SlackSpec {
        api_base: trim_base(&apis.slack),
        token: Secret::new(parts.join("/")),
    }))
}

/// Addresses from a comma list (`?to=a@x,b@y`), trimmed, checked for the one `@` every
/// address has; the rest is the SMTP server's business.
fn addresses(list: &str, key: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for a in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let ok = a.matches('@').count() == 1
            && !a.starts_with('@')
            && !a.ends_with('@')
            && !a.contains(char::is_whitespace);
        if !ok {
            return Err(format!("`{key}`: `{a}` is not an email address"));
        }
        out.push(a.to_string());
    }
    Ok(out)
}

fn email(scheme: &str, rest: &str, opts: &Options) -> Result<Provider, String> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    // The password may contain `@`; the host never does.
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (name, pass) = u.split_once(':').unwrap_or((u, ""));
            (
                Some(percent(name)).filter(|n| !n.is_empty()),
                Some(Secret::new(percent(pass))).filter(|p| !p.expose().is_empty()),
            )
        }
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h.to_string(),
            Some(
                p.parse::<u16>()
                    .map_err(|_| format!("SMTP port `{p}` is not a number"))?,
            ),
        ),
        _ => (hostport.to_string(), None),
    };
    let host = match opts.get("smtp") {
        Some(h) => h.to_string(),
        None => host,
    };
    if host.is_empty() {
        return Err(
            "mailto:// needs the SMTP server: mailto://user:password@smtp.example.com".into(),
        );
    }
    let tls = match opts.get("tls").map(str::to_ascii_lowercase).as_deref() {
        None => {
            if scheme == "mailtos" {
                SmtpTls::Implicit
            } else {
                SmtpTls::StartTls
            }
        }
        Some("starttls") => SmtpTls::StartTls,
        Some("implicit" | "ssl" | "yes") => SmtpTls::Implicit,
        Some("no" | "none" | "off") => SmtpTls::None,
        Some(v) => return Err(format!("tls `{v}` must be starttls, implicit or no")),
    };
    let port = match (opts.get("port"), port) {
        (Some(p), _) => p
            .parse()
            .map_err(|_| format!("SMTP port `{p}` is not a number"))?,
        (None, Some(p)) => p,
        (None, None) => match tls {
            SmtpTls::Implicit => 465,
            SmtpTls::StartTls => 587,
            SmtpTls::None => 25,
        },
    };
    let mut to = addresses(&percent(path).replace('/', ","), "to")?;
    if let Some(more) = opts.get("to") {
        to.extend(addresses(more, "to")?);
    }
    let cc = addresses(opts.get("cc").unwrap_or(""), "cc")?;
    let bcc = addresses(opts.get("bcc").unwrap_or(""), "bcc")?;
    let from = match opts.get("from") {
        Some(f) => addresses(f, "from")?.pop().ok_or("`from` is empty")?,
        None => match user.as_deref().filter(|u| u.contains('@')) {
            Some(u) => u.to_string(),
            None => format!("klaxon@{host}"),
        },
    };
    if to.is_empty() {
        // Apprise's convention: with no recipient, mail goes to the sender's own box.
        to.push(from.clone());
    }
    Ok(Provider::Email(EmailSpec {
        host,
        port,
        tls,
        user,
        password,
        from,
        from_name: opts.get("name").map(str::to_string),
        to,
        cc,
        bcc,
        verify: opts.flag("verify")?.unwrap_or(true),
    }))
}

fn phone(p: &str, field: &str) -> Result<String, String> {
    let (prefix, number) = match p.strip_prefix("whatsapp:") {
        Some(n) => ("whatsapp:", n),
        None => ("", p),
    };
    let digits = number.trim_start_matches('+');
    if digits.len() < 7 || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{field} `{p}` is not a phone number in E.164 form (+15551234567)"
        ));
    }
    Ok(format!("{prefix}+{digits}"))
}

fn twilio(rest: &str, opts: &Options, apis: &ApiBases) -> Result<Provider, String> {
    const FORM: &str = "twilio://ACCOUNT_SID:AUTH_TOKEN@FROM/TO[/TO…]";
    let (cred, targets) = rest
        .rsplit_once('@')
        .ok_or(format!("twilio:// needs credentials and a sender: {FORM}"))?;
    let (sid, token) = cred.split_once(':').ok_or(format!(
        "twilio:// needs the auth token after the SID: {FORM}"
    ))?;
    if !(sid.starts_with("AC") && sid.len() == 34 && sid.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err("the Twilio account SID is `AC` followed by 32 characters".into());
    }
    if token.is_empty() {
        return Err(format!("twilio:// needs the auth token: {FORM}"));
    }
    let mut parts = targets.split('/').filter(|p| !p.is_empty()).map(percent);
    let from_raw = parts
        .next()
        .ok_or(format!("twilio:// needs a sender: {FORM}"))?;
    let from = if from_raw.starts_with("MG") && from_raw.len() == 34 {
        from_raw
    } else {
        phone(&from_raw, "the sender")?
    };
    let mut to_raw: Vec<String> = parts.collect();
    if let Some(more) = opts.get("to") {
        to_raw.extend(
            more.split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
        );
    }
    if to_raw.is_empty() {
        return Err(format!("twilio:// needs at least one recipient: {FORM}"));
    }
    let whatsapp = from.starts_with("whatsapp:");
    let mut to = Vec::new();
    for t in to_raw {
        let t = if whatsapp && !t.starts_with("whatsapp:") {
            format!("whatsapp:{t}")
        } else {
            t
        };
        if t.starts_with("whatsapp:") != whatsapp {
            return Err(format!(
                "recipient `{t}`: WhatsApp and SMS cannot be mixed in one channel"
            ));
        }
        to.push(phone(&t, "the recipient")?);
    }
    let max_segments = match opts.get("segments") {
        None => 2,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=10).contains(n))
            .ok_or(format!("segments `{v}` must be a number from 1 to 10"))?,
    };
    Ok(Provider::Twilio(TwilioSpec {
        api_base: trim_base(opts.get("api").unwrap_or(&apis.twilio)),
        account_sid: sid.to_string(),
        auth_token: Secret::new(percent(token)),
        from,
        to,
        max_segments,
    }))
}

fn ntfy(scheme: &str, rest: &str, opts: &Options, apis: &ApiBases) -> Result<Provider, String> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let parts: Vec<&str> = std::iter::once(host)
        .chain(path.split('/'))
        .filter(|p| !p.is_empty())
        .collect();
    let (server, topic) = match parts.as_slice() {
        [topic] => (trim_base(&apis.ntfy), *topic),
        [host, topic] => (
            format!(
                "{}://{host}",
                if scheme == "ntfys" { "https" } else { "http" }
            ),
            *topic,
        ),
        _ => {
            return Err(
                "ntfy URLs are ntfy://TOPIC (ntfy.sh), ntfy://HOST/TOPIC or ntfys://HOST/TOPIC"
                    .into(),
            );
        }
    };
    if topic.is_empty()
        || topic.len() > 64
        || !topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "ntfy topic `{topic}` must be 1–64 letters, digits, `-` or `_`"
        ));
    }
    let auth = match (opts.get("token"), userinfo) {
        (Some(t), _) => NtfyAuth::Token(Secret::new(t)),
        (None, Some(u)) => {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            NtfyAuth::Basic(percent(user), Secret::new(percent(pass)))
        }
        (None, None) => NtfyAuth::None,
    };
    Ok(Provider::Ntfy(NtfySpec {
        server,
        topic: topic.to_string(),
        auth,
        tags: opts
            .get("tags")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        click: opts.get("click").map(str::to_string),
    }))
}

fn pushover(rest: &str, opts: &Options, apis: &ApiBases) -> Result<Provider, String> {
    const FORM: &str = "pover://USER_KEY@APP_TOKEN[/DEVICE…]";
    let (user, rest) = rest
        .split_once('@')
        .ok_or(format!("Pushover URLs are {FORM}"))?;
    let mut parts = rest.split('/').filter(|p| !p.is_empty());
    let token = parts.next().unwrap_or("");
    let key_ok = |k: &str| k.len() == 30 && k.chars().all(|c| c.is_ascii_alphanumeric());
    if !key_ok(user) {
        return Err("the Pushover user key is 30 letters and digits".into());
    }
    if !key_ok(token) {
        return Err("the Pushover application token is 30 letters and digits".into());
    }
    let num = |key: &str, default: u32, range: std::ops::RangeInclusive<u32>| match opts.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or(format!(
                "`{key}` must be seconds from {} to {}",
                range.start(),
                range.end()
            )),
    };
    Ok(Provider::Pushover(PushoverSpec {
        api_base: trim_base(opts.get("api").unwrap_or(&apis.pushover)),
        user: Secret::new(user),
        token: Secret::new(token),
        devices: parts.map(str::to_string).collect(),
        sound: opts.get("sound").map(str::to_string),
        retry: num("retry", 60, 30..=10_800)?,
        expire: num("expire", 3600, 30..=10_800)?,
    }))
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

/// Percent-decodes a URL part. A `+` stays a `+` (it is one in paths and userinfo: phone
/// numbers, passwords); only the query is form-encoded.
fn percent(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
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
        Provider::Slack(_) => "slack webhook".into(),
        Provider::Email(e) => format!(
            "email via {}:{} → {} recipient(s)",
            e.host,
            e.port,
            e.to.len() + e.cc.len() + e.bcc.len()
        ),
        Provider::Twilio(t) => format!(
            "{} via Twilio → {} number(s)",
            if t.is_whatsapp() { "whatsapp" } else { "sms" },
            t.to.len()
        ),
        Provider::Ntfy(n) => format!("ntfy {}/{}", n.server, n.topic),
        Provider::Pushover(p) => format!(
            "pushover → {}",
            if p.devices.is_empty() {
                "all devices".to_string()
            } else {
                format!("{} device(s)", p.devices.len())
            }
        ),
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
    fn slack_forms() {
        for url in [
            "slack://T000/B000/XXXX",
            "https://hooks.slack.com/services/T000/B000/XXXX",
        ] {
            let Provider::Slack(s) = p(url).unwrap() else {
                panic!("{url}")
            };
            assert_eq!(s.token.expose(), "T000/B000/XXXX");
            assert_eq!(s.api_base, "https://hooks.slack.com");
        }
        assert!(p("slack://T000/B000").unwrap_err().contains("slack://"));
    }

    #[test]
    fn email_forms() {
        let Provider::Email(e) = p(
            "mailto://bot%40x.com:p%40ss@smtp.x.com?to=a@x.com,b@x.com&cc=c@x.com&bcc=d@x.com&name=Klaxon",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("smtp.x.com", 587, SmtpTls::StartTls)
        );
        assert_eq!(e.user.as_deref(), Some("bot@x.com"));
        assert_eq!(e.password.as_ref().unwrap().expose(), "p@ss");
        assert_eq!(e.from, "bot@x.com");
        assert_eq!(e.to, ["a@x.com", "b@x.com"]);
        assert_eq!((e.cc.len(), e.bcc.len()), (1, 1));
        assert!(e.verify);
        let Provider::Email(e) =
            p("mailtos://u:pw@mail.x.com:2465/ops@x.com?verify=no&from=alerts@x.com").unwrap()
        else {
            panic!()
        };
        assert_eq!((e.port, e.tls, e.verify), (2465, SmtpTls::Implicit, false));
        assert_eq!(
            (e.from.as_str(), e.to[0].as_str()),
            ("alerts@x.com", "ops@x.com")
        );
        // No recipient: mail goes to the sender's own box.
        let Provider::Email(e) = p("mailto://me@x.com:pw@smtp.x.com").unwrap() else {
            panic!()
        };
        assert_eq!(e.to, ["me@x.com"]);
        assert!(
            p("mailto://u:p@smtp.x.com?to=nobody")
                .unwrap_err()
                .contains("`to`")
        );
        assert!(
            p("mailto://u:p@smtp.x.com:abc")
                .unwrap_err()
                .contains("port")
        );
    }

    #[test]
    fn twilio_forms() {
        let sid = format!("AC{}", "a".repeat(32));
        let Provider::Twilio(t) = p(&format!(
            "twilio://{sid}:tok@+15550001111/15550002222/+15550003333"
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(t.auth_token.expose(), "tok");
        assert_eq!(t.from, "+15550001111");
        assert_eq!(t.to, ["+15550002222", "+15550003333"]);
        assert!(!t.is_whatsapp());
        assert_eq!(t.max_segments, 2);
        let Provider::Twilio(w) = p(&format!(
            "twilio://{sid}:tok@whatsapp:+15550001111/+15550002222?segments=3"
        ))
        .unwrap() else {
            panic!()
        };
        assert!(w.is_whatsapp());
        assert_eq!(w.to, ["whatsapp:+15550002222"]);
        assert_eq!(w.max_segments, 3);
        assert!(
            p(&format!("twilio://{sid}:tok@+15550001111/12"))
                .unwrap_err()
                .contains("E.164")
        );
        assert!(
            p("twilio://ACshort:tok@+15550001111/+15550002222")
                .unwrap_err()
                .contains("SID")
        );
        assert!(
            p(&format!("twilio://{sid}:tok@+15550001111"))
                .unwrap_err()
                .contains("recipient")
        );
    }

    #[test]
    fn ntfy_forms() {
        let Provider::Ntfy(n) = p("ntfy://alerts?tags=chart,bot&click=https://x.com").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (n.server.as_str(), n.topic.as_str()),
            ("https://ntfy.sh", "alerts")
        );
        assert_eq!(n.tags, ["chart", "bot"]);
        assert_eq!(n.auth, NtfyAuth::None);
        let Provider::Ntfy(n) = p("ntfys://me:pw@ntfy.x.com/ops").unwrap() else {
            panic!()
        };
        assert_eq!(n.server, "https://ntfy.x.com");
        assert_eq!(n.auth, NtfyAuth::Basic("me".into(), Secret::new("pw")));
        let Provider::Ntfy(n) = p("ntfy://127.0.0.1:9000/ops?token=tk_abc").unwrap() else {
            panic!()
        };
        assert_eq!(n.server, "http://127.0.0.1:9000");
        assert_eq!(n.auth, NtfyAuth::Token(Secret::new("tk_abc")));
        assert!(p("ntfy://host/a/b").is_err());
        assert!(p("ntfy://bad$topic").unwrap_err().contains("topic"));
    }

    #[test]
    fn pushover_forms() {
        let (u, t) = ("u".repeat(30), "a".repeat(30));
        let Provider::Pushover(o) =
            p(&format!("pover://{u}@{t}/phone?sound=siren&retry=120")).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (o.user.expose(), o.token.expose()),
            (u.as_str(), t.as_str())
        );
        assert_eq!(o.devices, ["phone"]);
        assert_eq!((o.retry, o.expire), (120, 3600));
        assert!(
            p(&format!("pover://{u}@short"))
                .unwrap_err()
                .contains("token")
        );
        assert!(
            p(&format!("pover://{u}@{t}?retry=5"))
                .unwrap_err()
                .contains("retry")
        );
    }

    #[test]
    fn unknown_scheme_lists_supported() {
        assert!(p("smoke://x").unwrap_err().contains("tgram://"));
        assert!(p("no-scheme").is_err());
    }
}
