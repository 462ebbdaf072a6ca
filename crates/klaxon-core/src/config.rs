//! Configuration (PRODUCT.md §6): one optional TOML file with `${VAR}` expansion, channels from
//! well-known environment variables, and errors that name the exact key and line.
//!
//! Pure: the caller hands in the file text and an environment lookup, so every rule here is
//! tested without touching the process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::breaker::BreakerPolicy;
use crate::channel_url::{self, ApiBases, Options, Provider};
use crate::limit::{self, Rate};
use crate::policy::{EventRule, Freshness, QuietHours, WhenMuted, WhenStale};
use crate::retry::RetryPolicy;
use crate::route::{GroupSpec, Pattern, Route, RouteMatch, Routing, SourceSwitch};
use crate::secret::Secret;

/// The resolved configuration the service runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub delivery: DeliveryConfig,
    pub channels: Vec<ChannelSpec>,
    pub routes: Vec<Route>,
    /// `[routing] default`: the channels for a notification no rule matched.
    pub default_route: Option<Vec<String>>,
    /// `[sources.NAME]`: sources (or their strategies) switched off.
    pub sources: Vec<SourceSwitch>,
    /// `POST /hooks/tradingview/{secret}`, when a secret is configured.
    pub tradingview: Option<TradingViewConfig>,
    /// Redis pub/sub ingestion, when `[redis] url` (or `KLAXON_REDIS_URL`) is set.
    pub redis: Option<RedisConfig>,
    /// `[events."glob"]`: freshness per event type, over the built-in defaults for signals.
    pub events: Vec<EventRule>,
    /// The built-in templates and the `[templates]` section, compiled once at load.
    pub templates: std::sync::Arc<crate::template::Templates>,
}

/// Envelopes in from Redis pub/sub (PRODUCT.md §2): one per message.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// May hold a password: a `Secret`.
    pub url: Secret,
    pub channels: Vec<String>,
    /// A durable stream read with a consumer group (entry field `payload` = the envelope).
    pub stream: Option<RedisStream>,
    /// Rate-limit buckets and 429 pauses kept in Redis, shared by every replica (issue 6);
    /// on unless `shared_limits = false`.
    pub shared_limits: bool,
    /// Prefix of every key Klaxon writes (limits, pauses), so deployments can share a Redis.
    pub key_prefix: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisStream {
    pub key: String,
    pub group: String,
    /// This replica's name in the group; stable across restarts so its own pending entries
    /// are read again after a crash.
    pub consumer: String,
    /// Entries another consumer read and did not acknowledge for this long are taken over
    /// (`XAUTOCLAIM`): that consumer died between reading and committing.
    pub claim_idle: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisFile {
    url: Option<String>,
    channels: Option<Vec<String>>,
    stream: Option<String>,
    group: Option<String>,
    consumer: Option<String>,
    #[serde(default, with = "opt_duration")]
    claim_idle: Option<Duration>,
    shared_limits: Option<bool>,
    key_prefix: Option<String>,
}

/// TradingView alerts in (PROVIDERS.md §6): no headers, no signature, so the secret rides in
/// the URL path; the source address can be limited.
#[derive(Debug, Clone, PartialEq)]
pub struct TradingViewConfig {
    pub secret: Secret,
    /// Empty: any source. `"tradingview"` in the file stands for TradingView's four addresses.
    pub allow_ips: Vec<std::net::IpAddr>,
    /// Behind a reverse proxy: the header it sets with the client's address
    /// (`X-Forwarded-For`: its last entry, the one the proxy added). Only set this when the
    /// proxy overwrites or appends it, or anyone could claim TradingView's address.
    pub trusted_proxy_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TradingViewFile {
    secret: Option<String>,
    #[serde(default)]
    allow_ips: Vec<String>,
    trusted_proxy_header: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// Bearer token for `/api/`; required when listening beyond loopback.
    pub api_token: Option<Secret>,
    /// Request bodies over this many bytes get 413.
    pub body_limit: usize,
    /// How long shutdown waits for in-flight sends.
    #[serde(with = "crate::duration")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            api_token: None,
            body_limit: 256 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub url: String,
    /// How long a claimed delivery is ours before another worker may take it over.
    #[serde(with = "crate::duration")]
    pub lease: Duration,
    /// Most API requests folded into one transaction (group commit).
    pub group_commit_max: usize,
    /// Notifications whose deliveries are all final are removed this long after their last
    /// change, with their attempts; `"off"` keeps everything.
    #[serde(deserialize_with = "retention")]
    pub retention: Option<Duration>,
}

/// Default `store.retention`: a month of history (PRODUCT.md §10).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// `"off"` (or 0) or a duration.
fn retention<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Off(String),
        Secs(f64),
    }
    let raw = Raw::deserialize(d)?;
    let d = match raw {
        Raw::Off(t) if t.trim().eq_ignore_ascii_case("off") => return Ok(None),
        Raw::Off(t) => crate::duration::parse(&t).map_err(serde::de::Error::custom)?,
        Raw::Secs(s) => crate::duration::parse(&s.to_string()).map_err(serde::de::Error::custom)?,
    };
    Ok((!d.is_zero()).then_some(d))
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://klaxon.db".into(),
            // Renewed every third of itself while a send runs; after a crash, what the dead
            // process held is claimable again within this time.
            lease: Duration::from_secs(10),
            group_commit_max: 512,
            retention: Some(DEFAULT_RETENTION),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Sends in flight at once, across channels.
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    /// The library's in-process hand-off queue (`Notifier::send`).
    pub queue_capacity: usize,
    /// How often each channel's health check runs (also once at start-up).
    #[serde(with = "crate::duration")]
    pub health_interval: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            concurrency: 64,
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
            queue_capacity: 10_000,
            health_interval: Duration::from_secs(300),
        }
    }
}

/// PRODUCT.md §7: a circuit open this long sends pending deliveries to the fallback.
pub const DEFAULT_FALLBACK_AFTER: Duration = Duration::from_secs(60);

/// A configured channel, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSpec {
    pub name: String,
    pub provider: Provider,
    /// As configured; the store's persisted switch (PATCH) overrides it at run time.
    pub enabled: bool,
    /// Extra limit on top of the provider's built-in ones.
    pub rate_limit: Option<Rate>,
    pub timeout: Duration,
    /// Channels to try, in order, when a delivery here dies or the circuit stays open.
    pub fallback: Vec<String>,
    /// How long the circuit may stay open before pending deliveries go to the fallback.
    pub fallback_after: Duration,
    /// A retry policy of its own, else `[delivery.retry]`.
    pub retry: Option<RetryPolicy>,
    /// Per-user limits, quiet hours and what a mute does.
    pub policy: ChannelPolicy,
}

/// What a channel holds back beyond its provider's limits (issue 4, item 9).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChannelPolicy {
    /// Limits per notification `user_id`; `None`: the provider's built-in ones, an empty list:
    /// none.
    pub per_user: Option<Vec<Rate>>,
    pub quiet_hours: Option<QuietHours>,
    /// Applies to quiet hours and to an operator's mute alike.
    pub when_muted: WhenMuted,
}

impl ChannelPolicy {
    /// The per-user rates that apply on a channel of this provider.
    pub fn per_user_rates(&self, provider: &Provider) -> &[Rate] {
        if let Some(rates) = &self.per_user {
            return rates;
        }
        match provider {
            Provider::Email(_) => &limit::EMAIL_PER_USER,
            // WhatsApp bills and blocks like SMS.
            Provider::Twilio(_) => &limit::SMS_PER_USER,
            Provider::Telegram(_) => &limit::TELEGRAM_PER_USER,
            _ => &[],
        }
    }
}

/// One wrong thing in the configuration: where, which key, what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.key.is_empty()) {
            (Some(l), false) => write!(f, "line {l}: `{}`: {}", self.key, self.message),
            (Some(l), true) => write!(f, "line {l}: {}", self.message),
            (None, false) => write!(f, "`{}`: {}", self.key, self.message),
            (None, true) => f.write_str(&self.message),
        }
    }
}

/// All errors found, so a user fixes them in one go.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

// ---- the file as written ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    server: ServerConfig,
    store: StoreConfig,
    delivery: DeliveryConfig,
    providers: ProvidersConfig,
    channels: BTreeMap<String, Spanned<ChannelConfig>>,
    routes: Vec<Spanned<RouteConfig>>,
    routing: RoutingFile,
    sources: BTreeMap<String, Spanned<SourceFile>>,
    tradingview: Option<TradingViewFile>,
    redis: Option<RedisFile>,
    events: BTreeMap<String, Spanned<EventFile>>,
    templates: BTreeMap<String, crate::template::TemplateFile>,
}

/// `[events."signal.*"]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFile {
    /// A duration, or `"off"` to switch a built-in default off.
    max_age: toml::Value,
    #[serde(default)]
    when_stale: WhenStale,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProvidersConfig {
    telegram_api: Option<String>,
    discord_api: Option<String>,
    slack_api: Option<String>,
    twilio_api: Option<String>,
    ntfy_api: Option<String>,
    pushover_api: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelConfig {
    url: Spanned<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    fallback: Vec<String>,
    #[serde(default, with = "opt_duration")]
    fallback_after: Option<Duration>,
    rate_limit: Option<Rate>,
    #[serde(default, with = "opt_duration")]
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    /// `{ per_minute = 30, per_hour = 1000 }`, `["30/min", "1000/h"]`, or `false`.
    per_user: Option<toml::Value>,
    quiet_hours: Option<StringOrList>,
    timezone: Option<String>,
    when_muted: Option<WhenMuted>,
    // Provider options; the same names work in the URL's query.
    format: Option<String>,
    parse_mode: Option<String>,
    silent: Option<bool>,
    preview: Option<bool>,
    thread: Option<toml::Value>,
    secret: Option<String>,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    username: Option<String>,
    avatar_url: Option<String>,
    mentions: Option<bool>,
    // email
    to: Option<StringOrList>,
    cc: Option<StringOrList>,
    bcc: Option<StringOrList>,
    from: Option<String>,
    name: Option<String>,
    verify: Option<bool>,
    tls: Option<String>,
    // sms / whatsapp
    segments: Option<u32>,
    // ntfy / pushover
    token: Option<String>,
    tags: Option<StringOrList>,
    click: Option<String>,
    sound: Option<String>,
    retry_secs: Option<u32>,
    expire_secs: Option<u32>,
}

/// `to = "a@x.com"` or `to = ["a@x.com", "b@x.com"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn joined(&self) -> String {
        match self {
            StringOrList::One(s) => s.clone(),
            StringOrList::Many(v) => v.join(","),
        }
    }
}

fn yes() -> bool {
    true
}

mod opt_duration {
    use std::time::Duration;

    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        crate::duration::deserialize(d).map(Some)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RoutingFile {
    default: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    strategies: BTreeMap<String, bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteConfig {
    #[serde(rename = "match", default)]
    matcher: RouteMatch,
    to: Vec<String>,
    #[serde(rename = "continue", default)]
    cont: bool,
    #[serde(default, with = "opt_duration")]
    dedup_window: Option<Duration>,
    group_by: Option<Vec<String>>,
    #[serde(default, with = "opt_duration")]
    group_wait: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    group_interval: Option<Duration>,
    max_batch: Option<usize>,
}

impl RouteConfig {
    /// Grouping is on when `group_by` is given (an empty list: one group per channel); the
    /// other keys alone are a mistake worth naming.
    fn group(&self) -> Result<Option<GroupSpec>, (&'static str, String)> {
        let Some(by) = &self.group_by else {
            for (key, set) in [
                ("group_wait", self.group_wait.is_some()),
                ("group_interval", self.group_interval.is_some()),
                ("max_batch", self.max_batch.is_some()),
            ] {
                if set {
                    return Err((key, "only applies with `group_by` (use `group_by = []` for one group per channel)".into()));
                }
            }
            return Ok(None);
        };
        let max_batch = self.max_batch.unwrap_or(GroupSpec::DEFAULT_MAX_BATCH);
        if max_batch < 2 {
            return Err(("max_batch", format!("must be at least 2, got {max_batch}")));
        }
        Ok(Some(GroupSpec {
            by: by.clone(),
            wait: self.group_wait.unwrap_or(GroupSpec::DEFAULT_WAIT),
            interval: self.group_interval.unwrap_or(GroupSpec::DEFAULT_INTERVAL),
            max_batch,
        }))
    }
}

impl ChannelConfig {
    /// The channel's policy keys, checked; an error names the key (below `channels.NAME`).
    fn policy(&self) -> Result<ChannelPolicy, (&'static str, String)> {
        let per_user = self
            .per_user
            .as_ref()
            .map(per_user_rates)
            .transpose()
            .map_err(|m| ("per_user", m))?;
        let tz = self
            .timezone
            .as_deref()
            .map(QuietHours::zone)
            .transpose()
            .map_err(|m| ("timezone", m))?;
        let quiet_hours = match &self.quiet_hours {
            None => None,
            Some(q) => {
                let texts = match q {
                    StringOrList::One(s) => vec![s.clone()],
                    StringOrList::Many(v) => v.clone(),
                };
                if texts.is_empty() {
                    return Err((
                        "quiet_hours",
                        "give at least one window like \"22:00-07:00\"".into(),
                    ));
                }
                let windows = texts
                    .iter()
                    .map(|t| t.parse())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|m| ("quiet_hours", m))?;
                Some(QuietHours {
                    windows,
                    tz: tz.unwrap_or(chrono_tz::UTC),
                })
            }
        };
        Ok(ChannelPolicy {
            per_user,
            quiet_hours,
            when_muted: self.when_muted.unwrap_or_default(),
        })
    }

    fn options(&self) -> Options {
        let mut o = Options::default();
        let text = [
            ("format", &self.format),
            ("parse_mode", &self.parse_mode),
            ("secret", &self.secret),
            ("method", &self.method),
            ("username", &self.username),
            ("avatar_url", &self.avatar_url),
            ("from", &self.from),
            ("name", &self.name),
            ("tls", &self.tls),
            ("token", &self.token),
            ("click", &self.click),
            ("sound", &self.sound),
        ];
        for (k, v) in text {
            if let Some(v) = v {
                o.set(k, v.clone());
            }
        }
        for (k, v) in [
            ("silent", self.silent),
            ("preview", self.preview),
            ("mentions", self.mentions),
            ("verify", self.verify),
        ] {
            if let Some(v) = v {
                o.set(k, v.to_string());
            }
        }
        for (k, v) in [
            ("segments", self.segments),
            ("retry", self.retry_secs),
            ("expire", self.expire_secs),
        ] {
            if let Some(v) = v {
                o.set(k, v.to_string());
            }
        }
        for (k, v) in [
            ("to", &self.to),
            ("cc", &self.cc),
            ("bcc", &self.bcc),
            ("tags", &self.tags),
        ] {
            if let Some(v) = v {
                o.set(k, v.joined());
            }
        }
        match &self.thread {
            Some(toml::Value::Integer(i)) => o.set("thread", i.to_string()),
            Some(toml::Value::String(s)) => o.set("thread", s.clone()),
            _ => {}
        }
        o.headers
            .extend(self.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        o
    }
}

/// `per_user` as written: a table of `per_second`/`per_minute`/`per_hour`/`per_day` counts, a
/// list of rates (`"30/min"`), or `false` for none (switching off the built-in defaults).
fn per_user_rates(v: &toml::Value) -> Result<Vec<Rate>, String> {
    let form = "use { per_minute = 30, per_hour = 1000 }, [\"30/min\", \"1000/h\"] or false";
    match v {
        toml::Value::Boolean(false) => Ok(Vec::new()),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                toml::Value::String(s) => limit::window_rate(s),
                other => Err(format!("`{other}` is not a rate; {form}")),
            })
            .collect(),
        toml::Value::Table(t) => {
            let mut rates = Vec::new();
            for (k, v) in t {
                let per = match k.as_str() {
                    "per_second" => Duration::from_secs(1),
                    "per_minute" => Duration::from_secs(60),
                    "per_hour" => Duration::from_secs(3600),
                    "per_day" => Duration::from_secs(86_400),
                    _ => {
                        return Err(format!(
                            "unknown key `{k}` (use per_second, per_minute, per_hour, per_day)"
                        ));
                    }
                };
                let count = v
                    .as_integer()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("`{k}` must be a whole number above 0, got `{v}`"))?;
                rates.push(limit::window(count, per));
            }
            if rates.is_empty() {
                return Err(format!("no limit given; {form}"));
            }
            Ok(rates)
        }
        other => Err(format!("`{other}` is not a per-user limit; {form}")),
    }
}

/// `max_age` as written: a duration (`"2m"`, seconds) or `"off"`.
fn max_age(v: &toml::Value) -> Result<Option<Duration>, String> {
    match v {
        toml::Value::String(s) if s.trim().eq_ignore_ascii_case("off") => Ok(None),
        toml::Value::String(s) => crate::duration::parse(s).map(Some),
        toml::Value::Integer(n) => u64::try_from(*n)
            .map(|n| Some(Duration::from_secs(n)))
            .map_err(|_| format!("`{n}` is not a duration")),
        other => Err(format!(
            "`{other}` is not a duration like \"2m\" (or \"off\")"
        )),
    }
}

/// Reads the environment; tests pass a map.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned().filter(|v| !v.is_empty())
    }
}

impl Config {
    /// Builds the configuration from an optional file's text and the environment.
    pub fn load(text: Option<&str>, env: &dyn Env) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let (expanded, values) = match text {
            Some(t) => expand_env(t, env, &mut errors),
            None => (String::new(), Vec::new()),
        };
        let file = match toml::from_str::<FileConfig>(&expanded) {
            Ok(f) => f,
            Err(e) => {
                let at = e.span().map_or(0, |s| s.start);
                // The message may quote a value; values from the environment are secrets
                // until proven otherwise.
                let mut message = e.message().to_string();
                for v in values.iter().filter(|v| v.len() >= 4) {
                    message = message.replace(v.as_str(), "[redacted]");
                }
                errors.push(ConfigError {
                    line: e.span().map(|_| line_of(&expanded, at)),
                    key: key_at(&expanded, at),
                    message,
                });
                return Err(ConfigErrors(errors));
            }
        };
        let line = |offset: usize| Some(line_of(&expanded, offset));

        let mut server = file.server;
        if let Some(l) = env.var("KLAXON_LISTEN") {
            server.listen = l;
        }
        if let Some(t) = env.var("KLAXON_API_TOKEN") {
            server.api_token = Some(Secret::new(t));
        }
        if server.api_token.as_ref().is_some_and(Secret::is_empty) {
            server.api_token = None;
        }
        if server.listen.parse::<SocketAddr>().is_err() {
            errors.push(ConfigError {
                line: None,
                key: "server.listen".into(),
                message: format!("`{}` is not an address like 127.0.0.1:8080", server.listen),
            });
        }
        let tradingview = tradingview_config(file.tradingview, env, &mut errors);
        let redis = redis_config(file.redis, env, &mut errors);
        let mut store = file.store;
        if let Some(u) = env.var("KLAXON_STORE_URL") {
            store.url = u;
        }
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| store.url.starts_with(p))
        {
            errors.push(ConfigError {
                line: None,
                key: "store.url".into(),
                message: "the store URL must start with sqlite:, postgres:// or postgresql:// (e.g. \"sqlite://klaxon.db\")".into(),
            });
        }

        let apis = api_bases(env, &file.providers);

        let mut channels = Vec::new();
        for (name, cfg) in &file.channels {
            let span = cfg.span();
            let cfg = cfg.get_ref();
            if let Err(m) = check_name(name) {
                errors.push(ConfigError {
                    line: line(span.start),
                    key: format!("channels.{name}"),
                    message: m,
                });
                continue;
            }
            let policy = cfg.policy().unwrap_or_else(|(key, message)| {
                errors.push(ConfigError {
                    line: line(span.start),
                    key: format!("channels.{name}.{key}"),
                    message,
                });
                ChannelPolicy::default()
            });
            match channel_url::parse(cfg.url.get_ref(), &cfg.options(), &apis) {
                Ok(provider) => channels.push(ChannelSpec {
                    name: name.clone(),
                    provider,
                    enabled: cfg.enabled,
                    rate_limit: cfg.rate_limit,
                    timeout: cfg.timeout.unwrap_or(channel_url::DEFAULT_TIMEOUT),
                    fallback: cfg.fallback.clone(),
                    fallback_after: cfg.fallback_after.unwrap_or(DEFAULT_FALLBACK_AFTER),
                    retry: cfg.retry.clone(),
                    policy,
                }),
                Err(message) => errors.push(ConfigError {
                    line: line(cfg.url.span().start),
                    key: format!("channels.{name}.url"),
                    message,
                }),
            }
        }
        if file.channels.is_empty() {
            channels = env_channels(env, &apis, &mut errors);
        }
        if channels.is_empty() {
            channels.push(ChannelSpec {
                name: "log".into(),
                provider: Provider::Log,
                enabled: true,
                rate_limit: None,
                timeout: channel_url::DEFAULT_TIMEOUT,
                fallback: Vec::new(),
                fallback_after: DEFAULT_FALLBACK_AFTER,
                retry: None,
                policy: ChannelPolicy::default(),
            });
        }

        let names: Vec<&str> = channels.iter().map(|c| c.name.as_str()).collect();
        for (name, cfg) in &file.channels {
            for f in &cfg.get_ref().fallback {
                if f == name {
                    errors.push(ConfigError {
                        line: line(cfg.span().start),
                        key: format!("channels.{name}.fallback"),
                        message: "a channel cannot fall back to itself".into(),
                    });
                } else if !names.contains(&f.as_str()) {
                    errors.push(ConfigError {
                        line: line(cfg.span().start),
                        key: format!("channels.{name}.fallback"),
                        message: format!("no channel named `{f}`"),
                    });
                }
            }
        }
        let mut routes = Vec::new();
        for (i, r) in file.routes.iter().enumerate() {
            let span = r.span();
            let r = r.get_ref();
            for to in &r.to {
                if !names.contains(&to.as_str()) {
                    errors.push(ConfigError {
                        line: line(span.start),
                        key: format!("routes[{i}].to"),
                        message: format!(
                            "no channel named `{to}` (channels: {})",
                            names.join(", ")
                        ),
                    });
                }
            }
            for (field, message) in r.matcher.validate() {
                errors.push(ConfigError {
                    line: line(span.start),
                    key: format!("routes[{i}].match.{field}"),
                    message,
                });
            }
            let group = r.group().unwrap_or_else(|(key, message)| {
                errors.push(ConfigError {
                    line: line(span.start),
                    key: format!("routes[{i}].{key}"),
                    message,
                });
                None
            });
            routes.push(Route {
                matcher: r.matcher.clone(),
                to: r.to.clone(),
                cont: r.cont,
                dedup_window: r.dedup_window,
                group,
            });
        }

        let mut events = Vec::new();
        for (pattern, e) in &file.events {
            let span = e.span();
            let e = e.get_ref();
            match max_age(&e.max_age) {
                Ok(age) => events.push(EventRule {
                    pattern: pattern.clone(),
                    freshness: age.map(|max_age| Freshness {
                        max_age,
                        when_stale: e.when_stale,
                    }),
                }),
                Err(message) => errors.push(ConfigError {
                    line: line(span.start),
                    key: format!("events.\"{pattern}\".max_age"),
                    message,
                }),
            }
        }
        if let Some(default) = &file.routing.default {
            for to in default {
                if !names.contains(&to.as_str()) {
                    errors.push(ConfigError {
                        line: None,
                        key: "routing.default".into(),
                        message: format!(
                            "no channel named `{to}` (channels: {})",
                            names.join(", ")
                        ),
                    });
                }
            }
        }
        let sources = source_switches(&file.sources, &expanded, &mut errors);
        let templates = match crate::template::Templates::from_file(&file.templates, &names) {
            Ok(t) => std::sync::Arc::new(t),
            Err(bad) => {
                errors.extend(bad.into_iter().map(|e| ConfigError {
                    line: e.offset.map(|o| line_of(&expanded, o)),
                    key: e.key,
                    message: e.message,
                }));
                crate::template::Templates::defaults()
            }
        };

        if errors.is_empty() {
            Ok(Config {
                server,
                store,
                delivery: file.delivery,
                channels,
                routes,
                default_route: file.routing.default,
                sources,
                tradingview,
                redis,
                events,
                templates,
            })
        } else {
            Err(ConfigErrors(errors))
        }
    }

    pub fn channel(&self, name: &str) -> Option<&ChannelSpec> {
        self.channels.iter().find(|c| c.name == name)
    }

    /// Everything routing decides on, for `ingest` and `klaxon route --explain` alike.
    pub fn routing(&self) -> Routing {
        Routing {
            routes: self.routes.clone(),
            default: self.default_route.clone(),
            sources: self.sources.clone(),
        }
    }
}

/// `[sources.NAME]` tables → switches; a name or strategy that is an invalid `/regex/` is named.
fn source_switches(
    file: &BTreeMap<String, Spanned<SourceFile>>,
    text: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<SourceSwitch> {
    let mut out = Vec::new();
    for (name, cfg) in file {
        let line = Some(line_of(text, cfg.span().start));
        let cfg = cfg.get_ref();
        let pattern = Pattern::new(name.as_str());
        if let Some(e) = pattern.error() {
            errors.push(ConfigError {
                line,
                key: format!("sources.{name}"),
                message: format!("`{name}` is not a valid regex: {e}"),
            });
        }
        let mut strategies = Vec::new();
        for (s, on) in &cfg.strategies {
            let p = Pattern::new(s.as_str());
            if let Some(e) = p.error() {
                errors.push(ConfigError {
                    line,
                    key: format!("sources.{name}.strategies.{s}"),
                    message: format!("`{s}` is not a valid regex: {e}"),
                });
            }
            strategies.push((p, *on));
        }
        out.push(SourceSwitch {
            name: pattern,
            enabled: cfg.enabled,
            strategies,
        });
    }
    out
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err("channel names use letters, digits, `-` and `_` (at most 64)".into())
    }
}

/// Channels from well-known variables (PRODUCT.md §6). `NOTIFICATION_CHANNELS` picks which of
/// the available ones are active. Each provider adds one entry to `WELL_KNOWN`.
fn env_channels(env: &dyn Env, apis: &ApiBases, errors: &mut Vec<ConfigError>) -> Vec<ChannelSpec> {
    type Builder = fn(&dyn Env) -> Option<String>;
    const WELL_KNOWN: &[(&str, &str, Builder)] = &[
        ("telegram", "TELEGRAM_BOT_TOKEN + TELEGRAM_CHAT_ID", |env| {
            let token = env.var("TELEGRAM_BOT_TOKEN")?;
            let chats = env.var("TELEGRAM_CHAT_ID")?;
            Some(format!("tgram://{token}/{}", chats.replace(',', "/")))
        }),
        ("discord", "DISCORD_WEBHOOK_URL", |env| {
            env.var("DISCORD_WEBHOOK_URL")
        }),
        ("slack", "SLACK_WEBHOOK_URL", |env| {
            env.var("SLACK_WEBHOOK_URL")
        }),
        ("email", "SMTP_HOST + EMAIL_TO", |env| {
            let host = env.var("SMTP_HOST")?;
            let to = env.var("EMAIL_TO")?;
            let port = env.var("SMTP_PORT");
            let scheme = if port.as_deref() == Some("465") {
                "mailtos"
            } else {
                "mailto"
            };
            let cred = match (env.var("SMTP_USER"), env.var("SMTP_PASSWORD")) {
                (Some(u), Some(p)) => format!("{}:{}@", enc(&u), enc(&p)),
                (Some(u), None) => format!("{}@", enc(&u)),
                _ => String::new(),
            };
            let mut url = format!(
                "{scheme}://{cred}{host}{}?to={}",
                port.map(|p| format!(":{p}")).unwrap_or_default(),
                enc(&to)
            );
            for (var, key) in [
                ("EMAIL_FROM", "from"),
                ("EMAIL_CC", "cc"),
                ("EMAIL_BCC", "bcc"),
                ("SMTP_TLS", "tls"),
                ("SMTP_VERIFY", "verify"),
            ] {
                if let Some(v) = env.var(var) {
                    url.push_str(&format!("&{key}={}", enc(&v)));
                }
            }
            Some(url)
        }),
        (
            "sms",
            "TWILIO_ACCOUNT_SID + TWILIO_AUTH_TOKEN + TWILIO_FROM + SMS_TO",
            |env| twilio_url(env, "TWILIO_FROM", "SMS_TO"),
        ),
        (
            "whatsapp",
            "TWILIO_ACCOUNT_SID + TWILIO_AUTH_TOKEN + WHATSAPP_FROM + WHATSAPP_TO",
            |env| twilio_url(env, "WHATSAPP_FROM", "WHATSAPP_TO"),
        ),
        ("webhook", "WEBHOOK_URL", |env| {
            let url = env.var("WEBHOOK_URL")?;
            let secret = env.var("WEBHOOK_SECRET");
            let url = url
                .replacen("https://", "jsons://", 1)
                .replacen("http://", "json://", 1);
            Some(match secret {
                Some(s) => format!(
                    "{url}{}secret={s}",
                    if url.contains('?') { '&' } else { '?' }
                ),
                None => url,
            })
        }),
    ];
    let selected: Option<Vec<String>> = env.var("NOTIFICATION_CHANNELS").map(|v| {
        v.split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    });
    let mut out = Vec::new();
    for (name, vars, build) in WELL_KNOWN {
        if selected
            .as_ref()
            .is_some_and(|s| !s.iter().any(|n| n == name))
        {
            continue;
        }
        let Some(url) = build(env) else {
            if selected.is_some() {
                errors.push(ConfigError {
                    line: None,
                    key: "NOTIFICATION_CHANNELS".into(),
                    message: format!("`{name}` is selected but {vars} is not set"),
                });
            }
            continue;
        };
        match channel_url::parse(&url, &Options::default(), apis) {
            Ok(provider) => out.push(ChannelSpec {
                name: name.to_string(),
                provider,
                enabled: true,
                rate_limit: None,
                timeout: channel_url::DEFAULT_TIMEOUT,
                fallback: Vec::new(),
                fallback_after: DEFAULT_FALLBACK_AFTER,
                retry: None,
                policy: ChannelPolicy::default(),
            }),
            Err(message) => errors.push(ConfigError {
                line: None,
                key: vars.to_string(),
                message,
            }),
        }
    }
    out
}

/// `[redis]`, or `KLAXON_REDIS_URL` alone; the default channels are `signals` and
/// `webhook_signals` (PRODUCT.md §6).
fn redis_config(
    file: Option<RedisFile>,
    env: &dyn Env,
    errors: &mut Vec<ConfigError>,
) -> Option<RedisConfig> {
    let file = file.unwrap_or_default();
    let url = env
        .var("KLAXON_REDIS_URL")
        .or(file.url)
        .filter(|u| !u.is_empty())?;
    if !(url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://"))
    {
        errors.push(ConfigError {
            line: None,
            key: "redis.url".into(),
            message: "must start with redis:// (or rediss://, redis+unix://)".into(),
        });
        return None;
    }
    let channels = file
        .channels
        .unwrap_or_else(|| vec!["signals".into(), "webhook_signals".into()]);
    // `channels = []` subscribes to nothing: Redis then serves streams or shared limits only.
    if channels.iter().any(|c| c.trim().is_empty()) {
        errors.push(ConfigError {
            line: None,
            key: "redis.channels".into(),
            message: "a channel name is empty".into(),
        });
        return None;
    }
    let stream = file
        .stream
        .filter(|s| !s.is_empty())
        .map(|key| RedisStream {
            key,
            group: file.group.unwrap_or_else(|| "klaxon".into()),
            consumer: file.consumer.unwrap_or_else(|| {
                format!(
                    "klaxon-{}",
                    env.var("HOSTNAME").unwrap_or_else(|| "local".into())
                )
            }),
            claim_idle: file.claim_idle.unwrap_or(Duration::from_secs(30)),
        });
    let key_prefix = file.key_prefix.unwrap_or_else(|| "klaxon:".into());
    if key_prefix.chars().any(char::is_whitespace) {
        errors.push(ConfigError {
            line: None,
            key: "redis.key_prefix".into(),
            message: "must not contain spaces".into(),
        });
        return None;
    }
    Some(RedisConfig {
        url: Secret::new(url),
        channels,
        stream,
        shared_limits: file.shared_limits.unwrap_or(true),
        key_prefix,
    })
}

/// `[tradingview]`, or `TRADINGVIEW_SECRET` alone. A secret too short to resist guessing is
/// refused: it is the only thing between the internet and a trader's channels.
fn tradingview_config(
    file: Option<TradingViewFile>,
    env: &dyn Env,
    errors: &mut Vec<ConfigError>,
) -> Option<TradingViewConfig> {
    let file = file.unwrap_or_default();
    let secret = file
        .secret
        .filter(|s| !s.is_empty())
        .or_else(|| env.var("TRADINGVIEW_SECRET").filter(|s| !s.is_empty()))?;
    let err = |key: &str, message: String| ConfigError {
        line: None,
        key: format!("tradingview.{key}"),
        message,
    };
    if secret.len() < 16
        || !secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        errors.push(err(
            "secret",
            "must be at least 16 letters, digits, `-` or `_` (it is a URL path part)".into(),
        ));
        return None;
    }
    let mut allow_ips = Vec::new();
    for ip in &file.allow_ips {
        if ip.eq_ignore_ascii_case("tradingview") {
            allow_ips.extend(
                crate::hooks::TRADINGVIEW_IPS
                    .iter()
                    .filter_map(|a| a.parse::<std::net::IpAddr>().ok()),
            );
        } else {
            match ip.parse() {
                Ok(a) => allow_ips.push(a),
                Err(_) => errors.push(err(
                    "allow_ips",
                    format!("`{ip}` is not an IP address (or \"tradingview\" for TradingView's)"),
                )),
            }
        }
    }
    let trusted_proxy_header = file.trusted_proxy_header.filter(|h| !h.trim().is_empty());
    if let Some(h) = &trusted_proxy_header
        && http_header_name_invalid(h)
    {
        errors.push(err(
            "trusted_proxy_header",
            format!("`{h}` is not a header name"),
        ));
    }
    Some(TradingViewConfig {
        secret: Secret::new(secret),
        allow_ips,
        trusted_proxy_header,
    })
}

fn http_header_name_invalid(h: &str) -> bool {
    h.is_empty()
        || !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Provider API bases: the environment (`KLAXON_TELEGRAM_API`, …) wins over `[providers]`.
fn api_bases(env: &dyn Env, file: &ProvidersConfig) -> ApiBases {
    let d = ApiBases::default();
    let pick = |var: &str, file: &Option<String>, default: String| {
        env.var(var).or(file.clone()).unwrap_or(default)
    };
    ApiBases {
        telegram: pick("KLAXON_TELEGRAM_API", &file.telegram_api, d.telegram),
        discord: pick("KLAXON_DISCORD_API", &file.discord_api, d.discord),
        slack: pick("KLAXON_SLACK_API", &file.slack_api, d.slack),
        twilio: pick("KLAXON_TWILIO_API", &file.twilio_api, d.twilio),
        ntfy: pick("KLAXON_NTFY_API", &file.ntfy_api, d.ntfy),
        pushover: pick("KLAXON_PUSHOVER_API", &file.pushover_api, d.pushover),
    }
}

/// The API bases a bare channel URL (`klaxon send --to`) uses: the environment's overrides.
pub fn api_bases_from_env(env: &dyn Env) -> ApiBases {
    api_bases(env, &ProvidersConfig::default())
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn twilio_url(env: &dyn Env, from_var: &str, to_var: &str) -> Option<String> {
    let sid = env.var("TWILIO_ACCOUNT_SID")?;
    let token = env.var("TWILIO_AUTH_TOKEN")?;
    let mut from = env.var(from_var)?;
    let to = env.var(to_var)?;
    if from_var.starts_with("WHATSAPP") && !from.starts_with("whatsapp:") {
        from = format!("whatsapp:{from}");
    }
    let to: Vec<String> = to
        .split(',')
        .map(|t| enc(t.trim()))
        .filter(|t| !t.is_empty())
        .collect();
    Some(format!(
        "twilio://{sid}:{}@{}/{}",
        enc(&token),
        enc(&from),
        to.join("/")
    ))
}

/// Replaces `${VAR}` and `${VAR:-default}` outside comments. Values are escaped for a TOML
/// basic string (where `${…}` normally stands) so a `"` or newline in a secret cannot change
/// the document's structure. Returns the text and the substituted values (for redaction).
fn expand_env(text: &str, env: &dyn Env, errors: &mut Vec<ConfigError>) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut values = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let code_end = comment_start(line).unwrap_or(line.len());
        let (code, comment) = line.split_at(code_end);
        let mut rest = code;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let Some(len) = rest[start..].find('}') else {
                errors.push(ConfigError {
                    line: Some(i + 1),
                    key: String::new(),
                    message: "`${` without a closing `}`".into(),
                });
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let inner = &rest[start + 2..start + len];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match env.var(name).or(default.map(str::to_string)) {
                Some(v) => {
                    out.push_str(&v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"));
                    values.push(v);
                }
                None => errors.push(ConfigError {
                    line: Some(i + 1),
                    key: key_at(text, offset_of_line(text, i)),
                    message: format!("environment variable `{name}` is not set (use `${{{name}:-default}}` for a default)"),
                }),
            }
            rest = &rest[start + len + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    (out, values)
}

fn offset_of_line(text: &str, line: usize) -> usize {
    text.split_inclusive('\n').take(line).map(str::len).sum()
}

/// Where a `#` comment starts on a line, ignoring `#` inside quoted strings.
fn comment_start(line: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) => {
                if q == '"' && c == '\\' && !escaped {
                    escaped = true;
                    continue;
                }
                if c == q && !escaped {
                    quote = None;
                }
                escaped = false;
            }
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return Some(i),
            None => {}
        }
    }
    None
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The dotted key at a byte offset: the nearest `[table]` header above it plus the key on
/// the offset's line, for messages like "`channels.ops.url`".
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    if line.starts_with('[') {
        return line
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_string();
    }
    let key = line
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"');
    match (table, key.is_empty()) {
        (Some(t), false) => format!("{t}.{key}"),
        (Some(t), true) => t,
        (None, false) => key.to_string(),
        (None, true) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn zero_config_is_log_channel() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.store.url, "sqlite://klaxon.db");
        assert_eq!(c.channels.len(), 1);
        assert_eq!(c.channels[0].provider, Provider::Log);
    }

    #[test]
    fn store_url_names_a_supported_database() {
        for url in [
            "sqlite://k.db",
            "postgres://klaxon@db:5432/klaxon",
            "postgresql://klaxon@db/klaxon",
        ] {
            let c = Config::load(None, &env(&[("KLAXON_STORE_URL", url)])).unwrap();
            assert_eq!(c.store.url, url);
        }
        let e = Config::load(None, &env(&[("KLAXON_STORE_URL", "mysql://db/k")])).unwrap_err();
        assert!(format!("{e:?}").contains("store.url"), "{e:?}");
    }

    #[test]
    fn redis_shares_limits_unless_told_not_to() {
        let c = Config::load(
            None,
            &env(&[("KLAXON_REDIS_URL", "redis://127.0.0.1:6379")]),
        )
        .unwrap();
        let r = c.redis.unwrap();
        assert!(r.shared_limits);
        assert_eq!(r.key_prefix, "klaxon:");
        assert_eq!(r.channels, ["signals", "webhook_signals"]);
        let text = "[redis]\nurl = \"redis://r:6379\"\nchannels = []\nshared_limits = false\nkey_prefix = \"desk-2:\"\n";
        let r = Config::load(Some(text), &env(&[])).unwrap().redis.unwrap();
        assert!(!r.shared_limits && r.channels.is_empty());
        assert_eq!(r.key_prefix, "desk-2:");
        let text = "[redis]\nurl = \"redis://r:6379\"\nkey_prefix = \"a b\"\n";
        let e = Config::load(Some(text), &env(&[])).unwrap_err();
        assert!(format!("{e:?}").contains("redis.key_prefix"), "{e:?}");
        let text = "[redis]\nurl = \"redis://r:6379\"\nchannels = [\" \"]\n";
        let e = Config::load(Some(text), &env(&[])).unwrap_err();
        assert!(format!("{e:?}").contains("redis.channels"), "{e:?}");
    }

    #[test]
    fn well_known_env_builds_channels() {
        let e = env(&[
            ("TELEGRAM_BOT_TOKEN", "123456:ABCDEFGH"),
            ("TELEGRAM_CHAT_ID", "-1001,42"),
            (
                "DISCORD_WEBHOOK_URL",
                "https://discord.com/api/webhooks/1/t",
            ),
            ("KLAXON_TELEGRAM_API", "http://127.0.0.1:9"),
        ]);
        let c = Config::load(None, &e).unwrap();
        let names: Vec<_> = c.channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["telegram", "discord"]);
        let Provider::Telegram(t) = &c.channels[0].provider else {
            panic!()
        };
        assert_eq!(t.chats, ["-1001", "42"]);
        assert_eq!(t.api_base, "http://127.0.0.1:9");

        let e2 = env(&[
            ("NOTIFICATION_CHANNELS", "discord"),
            ("TELEGRAM_BOT_TOKEN", "123456:ABCDEFGH"),
            ("TELEGRAM_CHAT_ID", "1"),
            ("DISCORD_WEBHOOK_URL", "discord://1/t"),
        ]);
        let c = Config::load(None, &e2).unwrap();
        assert_eq!(c.channels.len(), 1);
        let err = Config::load(None, &env(&[("NOTIFICATION_CHANNELS", "telegram")])).unwrap_err();
        assert!(err.to_string().contains("TELEGRAM_BOT_TOKEN"), "{err}");
    }

    #[test]
    fn well_known_env_builds_email_sms_whatsapp_slack() {
        let sid = format!("AC{}", "0".repeat(32));
        let e = env(&[
            (
                "SLACK_WEBHOOK_URL",
                "https://hooks.slack.com/services/T1/B2/x3",
            ),
            ("SMTP_HOST", "smtp.x.com"),
            ("SMTP_PORT", "465"),
            ("SMTP_USER", "bot@x.com"),
            ("SMTP_PASSWORD", "p@ss/w+rd&"),
            ("EMAIL_TO", "a@x.com,b@x.com"),
            ("EMAIL_FROM", "alerts@x.com"),
            ("TWILIO_ACCOUNT_SID", &sid),
            ("TWILIO_AUTH_TOKEN", "tok/en"),
            ("TWILIO_FROM", "+15550001111"),
            ("SMS_TO", "+15550002222, +15550003333"),
            ("WHATSAPP_FROM", "+15550004444"),
            ("WHATSAPP_TO", "+15550005555"),
            ("KLAXON_TWILIO_API", "http://127.0.0.1:9"),
        ]);
        let c = Config::load(None, &e).unwrap();
        let names: Vec<_> = c.channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["slack", "email", "sms", "whatsapp"]);
        let Provider::Email(m) = &c.channels[1].provider else {
            panic!()
        };
        assert_eq!(m.password.as_ref().unwrap().expose(), "p@ss/w+rd&");
        assert_eq!(
            (m.port, m.tls),
            (465, crate::channel_url::SmtpTls::Implicit)
        );
        assert_eq!((m.from.as_str(), m.to.len()), ("alerts@x.com", 2));
        let Provider::Twilio(t) = &c.channels[2].provider else {
            panic!()
        };
        assert_eq!(t.auth_token.expose(), "tok/en");
        assert_eq!(t.to, ["+15550002222", "+15550003333"]);
        assert_eq!(t.api_base, "http://127.0.0.1:9");
        let Provider::Twilio(w) = &c.channels[3].provider else {
            panic!()
        };
        assert_eq!(
            (w.from.as_str(), w.to[0].as_str()),
            ("whatsapp:+15550004444", "whatsapp:+15550005555")
        );
    }

    #[test]
    fn tradingview_section_and_env() {
        let c = Config::load(
            Some("[tradingview]\nsecret = \"abcdefghijklmnop\"\nallow_ips = [\"tradingview\", \"10.0.0.1\"]\n"),
            &env(&[]),
        )
        .unwrap();
        let tv = c.tradingview.unwrap();
        assert_eq!(tv.allow_ips.len(), 5);
        assert_eq!(tv.secret.expose(), "abcdefghijklmnop");
        let c = Config::load(
            None,
            &env(&[("TRADINGVIEW_SECRET", "env-secret-0123456789")]),
        )
        .unwrap();
        assert!(c.tradingview.is_some());
        assert!(Config::load(None, &env(&[])).unwrap().tradingview.is_none());
        let err = Config::load(Some("[tradingview]\nsecret = \"short\"\n"), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("tradingview.secret"), "{err}");
        assert!(
            !err.to_string().contains("short\""),
            "the secret is not quoted: {err}"
        );
        let err = Config::load(
            Some("[tradingview]\nsecret = \"abcdefghijklmnop\"\nallow_ips = [\"nope\"]\n"),
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("tradingview.allow_ips"), "{err}");
    }

    #[test]
    fn channel_options_as_toml_keys() {
        let text = r#"
[channels.mail]
url = "mailto://u:p@smtp.x.com"
to = ["a@x.com", "b@x.com"]
cc = "c@x.com"
verify = false
fallback_after = "30s"

[channels.push]
url = "ntfy://alerts"
tags = ["bot"]
token = "tk_1"
fallback = ["mail"]
"#;
        let c = Config::load(Some(text), &env(&[])).unwrap();
        let Provider::Email(m) = &c.channel("mail").unwrap().provider else {
            panic!()
        };
        assert_eq!((m.to.len(), m.cc.len(), m.verify), (2, 1, false));
        assert_eq!(
            c.channel("mail").unwrap().fallback_after,
            Duration::from_secs(30)
        );
        assert_eq!(c.channel("push").unwrap().fallback, ["mail"]);
        let err = Config::load(
            Some("[channels.a]\nurl = \"log://\"\nfallback = [\"a\"]\n"),
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("channels.a.fallback"), "{err}");
    }

    #[test]
    fn expands_env_and_keeps_secrets_out_of_errors() {
        let text = r#"
[server]
listen = "127.0.0.1:9999"   # ${NOT_EXPANDED_IN_COMMENTS}

[channels.ops]
url = "tgram://${TOKEN}/${CHAT:-42}"
silent = true
"#;
        let c = Config::load(Some(text), &env(&[("TOKEN", "123456:SECRETSECRET")])).unwrap();
        let Provider::Telegram(t) = &c.channels[0].provider else {
            panic!()
        };
        assert_eq!(t.token.expose(), "123456:SECRETSECRET");
        assert_eq!(t.chats, ["42"]);
        assert!(t.silent);
        assert!(!format!("{c:?}").contains("SECRETSECRET"));
    }

    #[test]
    fn errors_name_key_and_line() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\n\n[channels.ops]\nurl = \"tgram://123456:ABCDEFG/1\"\nsilnet = true\n";
        let err = Config::load(Some(text), &env(&[])).unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.line, Some(6), "{err}");
        assert!(e.message.contains("silnet"), "{err}");
        assert_eq!(e.key, "channels.ops.silnet");

        let text = "[channels.ops]\n\nurl = \"smtp://x\"\n";
        let err = Config::load(Some(text), &env(&[])).unwrap_err();
        assert_eq!(err.0[0].line, Some(3));
        assert_eq!(err.0[0].key, "channels.ops.url");

        let text = "[channels.ops]\nurl = \"tgram://${MISSING}/1\"\n";
        let err = Config::load(Some(text), &env(&[])).unwrap_err();
        assert_eq!(err.0[0].line, Some(2));
        assert!(err.0[0].message.contains("MISSING"));

        let text = "[delivery.retry]\nretries = \"three\"\n";
        let err = Config::load(Some(text), &env(&[])).unwrap_err();
        assert_eq!(err.0[0].line, Some(2), "{err}");
        assert_eq!(err.0[0].key, "delivery.retry.retries");
    }

    #[test]
    fn routes_checked_against_channels() {
        let text = "[channels.a]\nurl = \"log://\"\n\n[[routes]]\nmatch = { severity = \">=warning\" }\nto = [\"a\", \"b\"]\n";
        let err = Config::load(Some(text), &env(&[])).unwrap_err();
        assert_eq!(err.0[0].key, "routes[0].to");
        assert!(err.0[0].message.contains("`b`"));
    }

    #[test]
    fn routing_default_sources_and_regex() {
        let text = r#"
[channels.a]
url = "log://"

[channels.log]
url = "log://"

[[routes]]
match = { symbol = "/^MNQ/", tags = "risk-*" }
to = ["a"]

[routing]
default = ["log"]

[sources.webhook_signals]
enabled = false

[sources.strategy_engine.strategies]
"my-strat" = false
"/^keep-/" = true
"#;
        let c = Config::load(Some(text), &env(&[])).unwrap();
        assert_eq!(c.default_route.as_deref(), Some(&["log".to_string()][..]));
        let routing = c.routing();
        assert_eq!(routing.sources.len(), 2);
        let n = crate::model::Notification::new("m")
            .data("symbol", "MNQI")
            .tag("risk-high");
        assert_eq!(routing.decide(&n, &["a", "log"]).channels, ["a"]);
        let off = crate::model::Notification::new("m")
            .source("strategy_engine")
            .data("strategy_name", "my-strat");
        assert!(routing.decide(&off, &["a", "log"]).switched_off.is_some());

        // Every mistake named by its exact key.
        let text = r#"
[channels.a]
url = "log://"

[[routes]]
match = { symbol = "/^(MNQ/", event_type = "/[/i" }
to = ["a"]

[routing]
default = ["nope"]

[sources."/(/"]
enabled = false

[sources.x.strategies]
"/)/" = false
"#;
        let err = Config::load(Some(text), &env(&[])).unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "routes[0].match.event_type",
                "routes[0].match.symbol",
                "routing.default",
                "sources./(/",
                "sources.x.strategies./)/"
            ]
        );
        assert!(err.0[1].message.contains("not a valid regex"));
        assert_eq!(err.0[1].line, Some(5));
        // A typo inside a source table is named too.
        let err = Config::load(Some("[sources.x]\nenabeld = false\n"), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("enabeld"), "{err}");
    }

    #[test]
    fn route_grouping_and_dedup() {
        let text = "[channels.a]\nurl = \"log://\"\n\n[[routes]]\nto = [\"a\"]\ngroup_by = [\"symbol\"]\ngroup_wait = \"2s\"\ndedup_window = \"5m\"\n";
        let c = Config::load(Some(text), &env(&[])).unwrap();
        let r = &c.routes[0];
        assert_eq!(r.dedup_window, Some(Duration::from_secs(300)));
        let g = r.group.as_ref().unwrap();
        assert_eq!(g.by, ["symbol"]);
        assert_eq!(g.wait, Duration::from_secs(2));
        assert_eq!(g.interval, GroupSpec::DEFAULT_INTERVAL);

        let text =
            "[channels.a]\nurl = \"log://\"\n\n[[routes]]\nto = [\"a\"]\ngroup_wait = \"2s\"\n";
        let err = Config::load(Some(text), &env(&[])).unwrap_err();
        assert_eq!(err.0[0].key, "routes[0].group_wait");
        let text = "[channels.a]\nurl = \"log://\"\n\n[[routes]]\nto = [\"a\"]\ngroup_by = []\nmax_batch = 1\n";
        let err = Config::load(Some(text), &env(&[])).unwrap_err();
        assert_eq!(err.0[0].key, "routes[0].max_batch");
    }

    #[test]
    fn store_retention_is_a_month_by_default_and_can_be_off() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.store.retention, Some(DEFAULT_RETENTION));
        let c = Config::load(Some("[store]\nretention = \"7d\"\n"), &env(&[])).unwrap();
        assert_eq!(c.store.retention, Some(Duration::from_secs(7 * 86_400)));
        for off in ["\"off\"", "0"] {
            let text = format!("[store]\nretention = {off}\n");
            assert_eq!(
                Config::load(Some(&text), &env(&[]))
                    .unwrap()
                    .store
                    .retention,
                None
            );
        }
        let e = Config::load(Some("[store]\nretention = \"soon\"\n"), &env(&[])).unwrap_err();
        assert!(e.to_string().contains("store.retention"), "{e}");
    }
}

#[cfg(test)]
mod policy_keys {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigErrors> {
        Config::load(Some(text), &BTreeMap::new())
    }

    fn one_error(text: &str) -> ConfigError {
        let e = load(text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        e.0[0].clone()
    }

    #[test]
    fn channel_policy_keys() {
        let c = load(
            "[channels.a]\nurl = \"log://\"\nper_user = { per_minute = 30, per_hour = 1000 }\nquiet_hours = [\"22:00-07:00\", \"12:00-13:00\"]\ntimezone = \"Europe/Berlin\"\nwhen_muted = \"suppress\"\n",
        )
        .unwrap();
        let p = &c.channels[0].policy;
        assert_eq!(
            p.per_user,
            Some(vec![
                limit::window(1000, Duration::from_secs(3600)),
                limit::window(30, Duration::from_secs(60)),
            ])
        );
        let q = p.quiet_hours.as_ref().unwrap();
        assert_eq!(q.describe(), "22:00-07:00, 12:00-13:00 Europe/Berlin");
        assert_eq!(p.when_muted, WhenMuted::Suppress);

        let c = load(
            "[channels.a]\nurl = \"log://\"\nper_user = [\"2/s\"]\nquiet_hours = \"01:00-02:00\"\n",
        )
        .unwrap();
        let p = &c.channels[0].policy;
        assert_eq!(p.per_user.as_ref().unwrap()[0].burst, 2);
        assert_eq!(p.quiet_hours.as_ref().unwrap().tz, chrono_tz::UTC);
        assert_eq!(p.when_muted, WhenMuted::Wait);
    }

    #[test]
    fn built_in_per_user_limits_follow_the_provider() {
        let c = load("[channels.mail]\nurl = \"mailto://u:p@smtp.example.com?to=a@example.com\"\n[channels.tg]\nurl = \"tgram://123456:TEST-token_abc/5\"\n[channels.tg-off]\nurl = \"tgram://123456:TEST-token_abc/5\"\nper_user = false\n[channels.hook]\nurl = \"json://example.com/h\"\n").unwrap();
        let rates = |n: &str| {
            let s = c.channel(n).unwrap();
            s.policy.per_user_rates(&s.provider).to_vec()
        };
        assert_eq!(rates("mail"), limit::EMAIL_PER_USER);
        assert_eq!(rates("tg"), limit::TELEGRAM_PER_USER);
        assert_eq!(rates("tg-off"), []);
        assert_eq!(rates("hook"), []);
    }

    #[test]
    fn bad_policy_keys_are_named() {
        let cases = [
            (
                "timezone = \"Mars/Base\"",
                "channels.a.timezone",
                "Mars/Base",
            ),
            (
                "quiet_hours = \"22:00-7\"",
                "channels.a.quiet_hours",
                "22:00-7",
            ),
            ("quiet_hours = []", "channels.a.quiet_hours", "at least one"),
            (
                "per_user = { per_week = 3 }",
                "channels.a.per_user",
                "per_week",
            ),
            (
                "per_user = { per_minute = 0 }",
                "channels.a.per_user",
                "above 0",
            ),
            ("per_user = [\"lots\"]", "channels.a.per_user", "lots"),
            ("per_user = 5", "channels.a.per_user", "per_minute"),
        ];
        for (line, key, says) in cases {
            let e = one_error(&format!("[channels.a]\nurl = \"log://\"\n{line}\n"));
            assert_eq!(e.key, key, "{line}: {e}");
            assert!(e.message.contains(says), "{line}: {e}");
            assert_eq!(e.line, Some(1), "{line}");
        }
        let e = one_error("[channels.a]\nurl = \"log://\"\nwhen_muted = \"later\"\n");
        assert_eq!(e.key, "channels.a.when_muted", "{e}");
    }

    #[test]
    fn events_section() {
        let c = load("[events.\"signal.*\"]\nmax_age = \"2m\"\nwhen_stale = \"expire\"\n[events.\"tradingview.alert\"]\nmax_age = \"off\"\n").unwrap();
        assert_eq!(
            c.events,
            [
                EventRule {
                    pattern: "signal.*".into(),
                    freshness: Some(Freshness {
                        max_age: Duration::from_secs(120),
                        when_stale: WhenStale::Expire
                    }),
                },
                EventRule {
                    pattern: "tradingview.alert".into(),
                    freshness: None,
                },
            ]
        );
        let e = one_error("[events.\"signal.*\"]\nmax_age = \"soon\"\n");
        assert_eq!(e.key, "events.\"signal.*\".max_age", "{e}");
        let e = one_error("[events.\"signal.*\"]\nmax_age = \"2m\"\nwhen_stale = \"drop\"\n");
        assert!(e.key.contains("when_stale"), "{e}");
    }
}

#[cfg(test)]
mod example {
    /// The annotated example in the repository root stays valid.
    #[test]
    fn example_file_loads() {
        let text = include_str!("../../../klaxon.example.toml");
        let c = super::Config::load(Some(text), &std::collections::BTreeMap::new()).unwrap();
        assert_eq!(c.channels.len(), 9);
        assert_eq!(
            c.channel("ops-telegram").unwrap().fallback,
            ["ops-email", "oncall-sms"]
        );
        assert_eq!(c.routes.len(), 3);
    }
}
