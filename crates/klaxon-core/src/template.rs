//! Templates (minijinja): the human content of a message — its title and body — per event type
//! and channel kind. The provider's framing (Discord embed, Slack blocks, Telegram splitting,
//! length limits) stays in [`crate::render`]; a template only says what the words are.
//!
//! - Escaping is automatic: every template is compiled once per target [`Markup`], and a
//!   custom formatter escapes each `{{ value }}` for that markup. Literal template text is the
//!   author's markup and passes as written. Helper functions (`bold`, `italic`, `code`, `pre`)
//!   produce the right markup for the target, so one template serves every channel kind.
//! - A template error never loses a notification: [`Templates::render`] falls back from the
//!   user's template to the built-in one for the event type, then to the generic one, then to
//!   plain Rust, and returns why in [`Content::errors`] for the caller to count and record.
//! - Bounded: a fuel budget and a recursion limit stop a hostile template from hanging a worker.
//!
//! Built-in templates live in `klaxon-core/templates/*.j2`, compiled into the binary; each has
//! a `title` block (plain text) and a `body` block (the target's markup).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use minijinja::value::Value;
use minijinja::{
    AutoEscape, Environment, Error as JinjaError, ErrorKind, State, UndefinedBehavior,
};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::model::{Notification, Severity};
use crate::render;

/// The markup a body is written in; each has its own escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Markup {
    /// Telegram HTML, Pushover HTML, the email's HTML part.
    Html,
    /// Telegram MarkdownV2.
    MarkdownV2,
    /// Discord's markdown.
    Discord,
    /// Slack mrkdwn: only `&`, `<`, `>` need escaping.
    Slack,
    /// ntfy's Markdown.
    Ntfy,
    /// SMS, WhatsApp, the email's text part, webhooks, titles.
    Plain,
}

impl Markup {
    pub const ALL: [Markup; 6] = [
        Markup::Html,
        Markup::MarkdownV2,
        Markup::Discord,
        Markup::Slack,
        Markup::Ntfy,
        Markup::Plain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Markup::Html => "html",
            Markup::MarkdownV2 => "markdownv2",
            Markup::Discord => "discord",
            Markup::Slack => "slack",
            Markup::Ntfy => "ntfy",
            Markup::Plain => "plain",
        }
    }

    fn from_name(name: &str) -> Markup {
        Markup::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .unwrap_or(Markup::Plain)
    }

    /// `text` as it must appear in this markup to show as written.
    pub fn escape(self, text: &str) -> String {
        match self {
            Markup::Html => render::telegram::escape_html(text),
            Markup::MarkdownV2 => render::telegram::escape_markdown_v2(text),
            Markup::Discord => render::discord::escape_markdown(text),
            Markup::Slack => render::slack::escape(text),
            Markup::Ntfy => {
                let mut out = String::with_capacity(text.len() + 8);
                let mut line_start = true;
                for c in text.chars() {
                    render::ntfy::escape_char(c, line_start, &mut out);
                    line_start = c == '\n';
                }
                out
            }
            Markup::Plain => text.to_string(),
        }
    }
}

/// A channel kind, as `Channel::kind` names it; the key of a user template in the config.
pub const KINDS: &[&str] = &[
    "telegram", "discord", "slack", "email", "sms", "whatsapp", "ntfy", "pushover", "webhook",
    "log",
];

/// The event types with a built-in template (PRODUCT.md §3), and the digest (aggregation).
pub const KNOWN: &[(&str, &str)] = &[
    (
        "signal.generated",
        include_str!("../templates/signal.generated.j2"),
    ),
    (
        "webhook.signal",
        include_str!("../templates/webhook.signal.j2"),
    ),
    (
        "trade.executed",
        include_str!("../templates/trade.executed.j2"),
    ),
    ("order.error", include_str!("../templates/order.error.j2")),
    ("risk.breach", include_str!("../templates/risk.breach.j2")),
    ("auth.failure", include_str!("../templates/auth.failure.j2")),
    (
        "system.health",
        include_str!("../templates/system.health.j2"),
    ),
    ("price.alert", include_str!("../templates/price.alert.j2")),
    (
        "tradingview.alert",
        include_str!("../templates/tradingview.alert.j2"),
    ),
    (
        "klaxon.digest",
        include_str!("../templates/klaxon.digest.j2"),
    ),
];
pub const GENERIC: &str = include_str!("../templates/generic.j2");
/// What every built-in extends: empty, so evaluating a built-in renders nothing until its
/// `title` (plain text) or `body` (the target's markup) block is asked for.
const LAYOUT: &str = "{# blocks: title, body #}";

/// Work one render may do: about this many instructions (minijinja's fuel). The built-in
/// templates use a few thousand on a 100-item digest; a loop a user wrote by mistake stops here.
pub const FUEL: u64 = 200_000;
/// Nesting depth of macros, includes and loops.
pub const RECURSION_LIMIT: usize = 64;

/// What a template produced for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// Plain text; the framing escapes it where the title goes (a header, a subject, a bold
    /// first line) and puts the emoji in front.
    pub title: String,
    /// In the markup asked for, escaped already.
    pub body: String,
    /// Show the data fields and tags the channel's own way (embed fields, a table, lines):
    /// the generic template leaves them to the framing; a specific template says what matters.
    pub details: bool,
    /// Why a template could not be used and what was used instead; empty when all went well.
    pub errors: Vec<TemplateFailure>,
}

/// One template that failed at send time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFailure {
    /// The template, named as in the config (`templates."signal.generated".telegram`) or
    /// `built-in signal.generated`.
    pub template: String,
    pub reason: String,
}

impl std::fmt::Display for TemplateFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "template `{}` failed: {}", self.template, self.reason)
    }
}

impl Content {
    /// The content without any template: the notification's title and message as written.
    /// The last resort, and what a template-less renderer shows.
    pub fn plain(n: &Notification, markup: Markup) -> Content {
        Content {
            title: render::title(n),
            body: markup.escape(&n.message),
            details: true,
            errors: Vec::new(),
        }
    }

    /// One line for an operator: which templates failed and why.
    pub fn error_note(&self) -> Option<String> {
        if self.errors.is_empty() {
            return None;
        }
        let all: Vec<String> = self.errors.iter().map(|e| e.to_string()).collect();
        Some(format!("{}; sent with the fallback", all.join("; ")))
    }
}

/// A template is invalid: which config key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct TemplateError {
    pub key: String,
    pub message: String,
}

/// User templates for event types matching `pattern` (`*` matches any run of characters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserTemplates {
    pub pattern: String,
    /// Plain-text title for every channel kind.
    pub title: Option<String>,
    /// Body for every channel kind but webhooks (machines read their `message`).
    pub body: Option<String>,
    /// Body per channel kind (`telegram`, `discord`, … `webhook`), before `body`.
    pub kinds: BTreeMap<String, String>,
    /// Body per channel name, before everything else.
    pub channels: BTreeMap<String, String>,
    /// Also show the data fields and tags the channel's own way.
    pub details: bool,
}

/// `[templates."<event type or glob>"]` as written in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateFile {
    title: Option<Spanned<String>>,
    #[serde(alias = "all")]
    body: Option<Spanned<String>>,
    telegram: Option<Spanned<String>>,
    discord: Option<Spanned<String>>,
    slack: Option<Spanned<String>>,
    email: Option<Spanned<String>>,
    sms: Option<Spanned<String>>,
    whatsapp: Option<Spanned<String>>,
    ntfy: Option<Spanned<String>>,
    pushover: Option<Spanned<String>>,
    webhook: Option<Spanned<String>>,
    log: Option<Spanned<String>>,
    #[serde(default)]
    channels: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    details: bool,
}

/// A template the config loader refused: its key, where it starts in the file, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub key: String,
    pub offset: Option<usize>,
    pub message: String,
}

impl Templates {
    /// Compiles the `[templates]` section. Exact event types are tried before globs, longer
    /// globs before shorter, so `"signal.*"` can refine `"*"`. `channels` are the configured
    /// channel names, so a template for a channel that does not exist is reported.
    pub fn from_file(
        file: &BTreeMap<String, TemplateFile>,
        channels: &[&str],
    ) -> Result<Templates, Vec<FileError>> {
        let mut offsets = BTreeMap::new();
        let mut errors = Vec::new();
        let mut user = Vec::new();
        for (pattern, f) in file {
            let base = format!("templates.{}", quote_key(pattern));
            let mut take = |key: String, v: &Option<Spanned<String>>| {
                v.as_ref().map(|v| {
                    offsets.insert(key, v.span().start);
                    v.get_ref().clone()
                })
            };
            let kinds = [
                ("telegram", &f.telegram),
                ("discord", &f.discord),
                ("slack", &f.slack),
                ("email", &f.email),
                ("sms", &f.sms),
                ("whatsapp", &f.whatsapp),
                ("ntfy", &f.ntfy),
                ("pushover", &f.pushover),
                ("webhook", &f.webhook),
                ("log", &f.log),
            ]
            .into_iter()
            .filter_map(|(k, v)| take(format!("{base}.{k}"), v).map(|t| (k.to_string(), t)))
            .collect();
            user.push(UserTemplates {
                pattern: pattern.clone(),
                title: take(format!("{base}.title"), &f.title),
                body: take(format!("{base}.body"), &f.body),
                kinds,
                channels: BTreeMap::new(),
                details: f.details,
            });
            for (c, v) in &f.channels {
                let key = format!("{base}.channels.{}", quote_key(c));
                if !channels.contains(&c.as_str()) {
                    errors.push(FileError {
                        key,
                        offset: Some(v.span().start),
                        message: format!(
                            "no channel named `{c}` (channels: {})",
                            channels.join(", ")
                        ),
                    });
                    continue;
                }
                offsets.insert(key, v.span().start);
                if let Some(u) = user.last_mut() {
                    u.channels.insert(c.clone(), v.get_ref().clone());
                }
            }
        }
        user.sort_by_key(|u| (u.pattern.contains('*'), std::cmp::Reverse(u.pattern.len())));
        match Templates::new(user) {
            Ok(t) if errors.is_empty() => Ok(t),
            Ok(_) => Err(errors),
            Err(bad) => {
                errors.extend(bad.into_iter().map(|e| FileError {
                    offset: offsets.get(&e.key).copied(),
                    key: e.key,
                    message: format!("invalid template: {}", e.message),
                }));
                Err(errors)
            }
        }
    }
}

/// Where a title or body comes from, for the fallback chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    User,
    Known,
    Generic,
}

/// The compiled templates: built-ins and the user's, each once per markup. Cheap to share
/// (`Arc`); rendering takes `&self`.
pub struct Templates {
    env: Environment<'static>,
    user: Vec<UserTemplates>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("user", &self.user.len())
            .finish_non_exhaustive()
    }
}

static DEFAULTS: LazyLock<Arc<Templates>> =
    LazyLock::new(|| Arc::new(Templates::new(Vec::new()).expect("the built-in templates compile")));

fn kind_key(markup: Markup, name: &str) -> String {
    format!("{name}#{}", markup.name())
}

impl Templates {
    /// The built-in templates only.
    pub fn defaults() -> Arc<Templates> {
        DEFAULTS.clone()
    }

    /// Compiles the built-ins and `user`; an error names the config key of the template.
    pub fn new(user: Vec<UserTemplates>) -> Result<Templates, Vec<TemplateError>> {
        let mut env = environment();
        let mut errors = Vec::new();
        // The built-ins extend this empty layout, so rendering one evaluates only the block
        // asked for (`title` or `body`), not both.
        if let Err(e) = env.add_template("klaxon", LAYOUT) {
            errors.push(TemplateError {
                key: "built-in layout".into(),
                message: describe(&e),
            });
        }
        let mut add = |name: String, source: &str, markups: &[Markup]| {
            for &m in markups {
                if let Err(e) = env.add_template_owned(kind_key(m, &name), source.to_string()) {
                    errors.push(TemplateError {
                        key: name.clone(),
                        message: describe(&e),
                    });
                    return;
                }
            }
        };
        for (event, source) in KNOWN {
            add(format!("built-in {event}"), source, &Markup::ALL);
        }
        add("built-in generic".into(), GENERIC, &Markup::ALL);
        for u in &user {
            let base = format!("templates.{}", quote_key(&u.pattern));
            if let Some(t) = &u.title {
                add(format!("{base}.title"), t, &[Markup::Plain]);
            }
            if let Some(b) = &u.body {
                add(format!("{base}.body"), b, &Markup::ALL);
            }
            for (k, b) in &u.kinds {
                add(format!("{base}.{k}"), b, &Markup::ALL);
            }
            for (c, b) in &u.channels {
                add(format!("{base}.channels.{}", quote_key(c)), b, &Markup::ALL);
            }
        }
        if errors.is_empty() {
            Ok(Templates { env, user })
        } else {
            Err(errors)
        }
    }

    /// The title and body of `n` for a channel of `kind` named `channel`, in `markup`. Never
    /// fails: a failing template falls back and says why in [`Content::errors`].
    pub fn render(&self, n: &Notification, kind: &str, channel: &str, markup: Markup) -> Content {
        let ctx = context(n, kind, channel, markup);
        let event = n.event_type.as_deref().unwrap_or("");
        let known = KNOWN.iter().any(|(e, _)| *e == event);
        let mut errors = Vec::new();

        // Candidates, most specific first: (template name, block or whole, origin).
        let mut bodies: Vec<(String, Option<&str>, Origin)> = Vec::new();
        let mut titles: Vec<(String, Option<&str>, Origin)> = Vec::new();
        let mut details = false;
        if let Some(u) = self.user.iter().find(|u| glob(&u.pattern, event)) {
            let base = format!("templates.{}", quote_key(&u.pattern));
            if u.channels.contains_key(channel) {
                bodies.push((
                    format!("{base}.channels.{}", quote_key(channel)),
                    None,
                    Origin::User,
                ));
            }
            if u.kinds.contains_key(kind) {
                bodies.push((format!("{base}.{kind}"), None, Origin::User));
            }
            if u.body.is_some() && kind != "webhook" {
                bodies.push((format!("{base}.body"), None, Origin::User));
            }
            if u.title.is_some() {
                titles.push((format!("{base}.title"), None, Origin::User));
            }
            details = u.details;
        }
        // Webhook receivers are machines: unless told otherwise they get the notification's
        // own title and message, as PRODUCT.md §7a shows them.
        if kind != "webhook" && known {
            let name = format!("built-in {event}");
            bodies.push((name.clone(), Some("body"), Origin::Known));
            titles.push((name, Some("title"), Origin::Known));
        }
        if kind != "webhook" {
            bodies.push(("built-in generic".into(), Some("body"), Origin::Generic));
        }
        titles.push(("built-in generic".into(), Some("title"), Origin::Generic));

        let mut pick = |cands: &[(String, Option<&str>, Origin)], m: Markup| {
            for (name, block, origin) in cands {
                match self.eval(name, *block, m, &ctx) {
                    Ok(text) => return Some((text, *origin)),
                    Err(reason) => errors.push(TemplateFailure {
                        template: name.clone(),
                        reason,
                    }),
                }
            }
            None
        };
        let title = pick(&titles, Markup::Plain);
        let body = pick(&bodies, markup);
        let plain = Content::plain(n, markup);
        let (body, details) = match body {
            Some((b, Origin::Generic)) => (b, true),
            Some((b, Origin::User)) => (b, details),
            Some((b, Origin::Known)) => (b, false),
            // Webhooks, and the last resort when even the generic template failed.
            None => (plain.body, true),
        };
        let title = title
            .map(|(t, _)| one_line(&t))
            .filter(|t| !t.is_empty())
            .unwrap_or(plain.title);
        // A late signal must not look fresh whatever the template says: the engine's STALE
        // marker (policy::mark_stale) leads every title.
        let title = match n
            .data
            .get("stale")
            .and_then(|s| s.get("text"))
            .and_then(|t| t.as_str())
        {
            Some(mark) if !title.starts_with(mark) => format!("{mark} · {title}"),
            _ => title,
        };
        Content {
            title,
            body: body.trim_matches('\n').to_string(),
            details,
            errors,
        }
    }

    fn eval(
        &self,
        name: &str,
        block: Option<&str>,
        markup: Markup,
        ctx: &Value,
    ) -> Result<String, String> {
        let t = self
            .env
            .get_template(&kind_key(markup, name))
            .map_err(|e| describe(&e))?;
        match block {
            None => t.render(ctx).map_err(|e| describe(&e)),
            Some(b) => {
                let mut captured = t.render_captured(ctx).map_err(|e| describe(&e))?;
                captured
                    .with_state_mut(|s| s.render_block(b))
                    .map_err(|e| describe(&e))
            }
        }
    }

    /// Checks one template source the way the config loader does; for tests and tools.
    pub fn check(source: &str) -> Result<(), String> {
        environment()
            .template_from_str(source)
            .map(|_| ())
            .map_err(|e| describe(&e))
    }
}

/// `a.b` needs quotes as a TOML key; `telegram` does not.
fn quote_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        format!("\"{k}\"")
    }
}

/// `*` matches any run of characters, the rest literally; `*` alone matches everything.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// A template error for an operator: the kind, the message and the line, never the data
/// (which may be anything the sender put in).
fn describe(e: &JinjaError) -> String {
    let what = match e.kind() {
        ErrorKind::OutOfFuel => "too much work (fuel exhausted)".to_string(),
        _ => e
            .detail()
            .map_or_else(|| e.kind().to_string(), |d| d.to_string()),
    };
    match e.line() {
        Some(l) => format!("{what} (line {l})"),
        None => what,
    }
}

/// Control characters (a title goes into a subject or a header) become spaces.
fn one_line(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    // `{% if %}` lines leave no blank lines behind: templates stay readable and output tidy.
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    // The markup is the part after `#` in the template's name (see `kind_key`).
    env.set_auto_escape_callback(|name| {
        let m = name.rsplit('#').next().unwrap_or("plain");
        AutoEscape::Custom(Markup::from_name(m).name().into())
    });
    env.set_formatter(|out, state, value| {
        if value.is_undefined() || value.is_none() {
            return Ok(());
        }
        let text = if value.is_safe() {
            return out
                .write_str(value.as_str().unwrap_or_default())
                .map_err(Into::into);
        } else if let Some(s) = value.as_str() {
            s.to_string()
        } else {
            value.to_string()
        };
        out.write_str(&markup_of(state).escape(&text))
            .map_err(Into::into)
    });
    env.add_filter("price", price);
    env.add_filter("number", price);
    env.add_filter("time", time);
    env.add_filter("emoji", emoji);
    env.add_filter("color", color);
    env.add_filter("action_label", action_label);
    env.add_filter("truncate", truncate);
    env.add_function("bold", |state: &State, v: Value| {
        wrap(state, &v, Wrap::Bold)
    });
    env.add_function("italic", |state: &State, v: Value| {
        wrap(state, &v, Wrap::Italic)
    });
    env.add_function("code", |state: &State, v: Value| {
        wrap(state, &v, Wrap::Code)
    });
    env.add_function("pre", |state: &State, v: Value| wrap(state, &v, Wrap::Pre));
    env.add_function("table", table);
    env
}

fn markup_of(state: &State) -> Markup {
    match state.auto_escape() {
        AutoEscape::Custom(name) => Markup::from_name(name),
        _ => Markup::Plain,
    }
}

fn text_of(v: &Value) -> String {
    if v.is_undefined() || v.is_none() {
        String::new()
    } else if let Some(s) = v.as_str() {
        s.to_string()
    } else {
        v.to_string()
    }
}

#[derive(Clone, Copy)]
enum Wrap {
    Bold,
    Italic,
    Code,
    Pre,
}

/// `bold(x)`, `italic(x)`, `code(x)`, `pre(x)`: `x` escaped (unless already safe markup) and
/// dressed for the target. Empty stays empty (an empty MarkdownV2 entity is a syntax error).
fn wrap(state: &State, v: &Value, how: Wrap) -> Value {
    let m = markup_of(state);
    let raw = text_of(v);
    if raw.is_empty() {
        return Value::from_safe_string(String::new());
    }
    let safe = v.is_safe();
    let inner = |esc: &dyn Fn(&str) -> String| if safe { raw.clone() } else { esc(&raw) };
    let out = match (m, how) {
        (Markup::Plain, _) => raw.clone(),
        (Markup::Html, Wrap::Bold) => format!("<b>{}</b>", inner(&|t| m.escape(t))),
        (Markup::Html, Wrap::Italic) => format!("<i>{}</i>", inner(&|t| m.escape(t))),
        (Markup::Html, Wrap::Code) => format!("<code>{}</code>", inner(&|t| m.escape(t))),
        (Markup::Html, Wrap::Pre) => format!("<pre>{}</pre>", inner(&|t| m.escape(t))),
        (Markup::MarkdownV2, Wrap::Bold) => format!("*{}*", inner(&|t| m.escape(t))),
        (Markup::MarkdownV2, Wrap::Italic) => format!("_{}_", inner(&|t| m.escape(t))),
        // Inside code only `` ` `` and `\` are special (PROVIDERS.md §1).
        (Markup::MarkdownV2, Wrap::Code) => format!("`{}`", inner(&md2_code)),
        (Markup::MarkdownV2, Wrap::Pre) => format!("```\n{}\n```", inner(&md2_code)),
        (Markup::Discord | Markup::Ntfy, Wrap::Bold) => {
            format!("**{}**", inner(&|t| m.escape(t)))
        }
        (Markup::Discord | Markup::Ntfy, Wrap::Italic) => {
            format!("*{}*", inner(&|t| m.escape(t)))
        }
        (Markup::Slack, Wrap::Bold) => format!("*{}*", inner(&|t| m.escape(t))),
        (Markup::Slack, Wrap::Italic) => format!("_{}_", inner(&|t| m.escape(t))),
        // Code spans cannot escape a backtick in Discord, Slack or ntfy: show a look-alike.
        (Markup::Discord | Markup::Ntfy, Wrap::Code) => {
            format!("`{}`", raw.replace('`', "ˋ"))
        }
        (Markup::Discord | Markup::Ntfy, Wrap::Pre) => {
            format!("```\n{}\n```", raw.replace("```", "ˋˋˋ"))
        }
        (Markup::Slack, Wrap::Code) => format!("`{}`", inner(&|t| m.escape(t)).replace('`', "ˋ")),
        (Markup::Slack, Wrap::Pre) => {
            format!(
                "```\n{}\n```",
                inner(&|t| m.escape(t)).replace("```", "ˋˋˋ")
            )
        }
    };
    Value::from_safe_string(out)
}

/// Widest a table cell gets; the last column (a title) may take twice this.
pub const TABLE_CELL_MAX: usize = 24;

/// `table(items, ["time", "action", "symbol", "price", "title"])`: the items (objects) as
/// aligned plain-text columns, for `pre(…)`. `time` shows as `HH:MM:SS`, numbers with thousands
/// separators, `emoji` is the row's action or severity emoji; a column no item has is left out. Plain text: `pre` escapes it for the target.
fn table(items: Value, columns: Value) -> Result<String, JinjaError> {
    let cols: Vec<String> = columns.try_iter()?.map(|c| text_of(&c)).collect();
    let rows: Vec<Vec<String>> = items
        .try_iter()?
        .map(|item| {
            cols.iter()
                .enumerate()
                .map(|(i, c)| {
                    let v = item.get_attr(c).unwrap_or_default();
                    let text = if c == "emoji" {
                        let a = text_of(&item.get_attr("action").unwrap_or_default());
                        let sev = severity_named(&item.get_attr("severity").unwrap_or_default());
                        render::action_style(&a)
                            .or_else(|| sev.map(render::severity_style))
                            .map_or(String::new(), |s| s.emoji.to_string())
                    } else if c == "time" {
                        text_of(&time_fmt(&v, "%H:%M:%S"))
                    } else if v.as_str().is_none() && f64::try_from(v.clone()).is_ok() {
                        text_of(&price(v, None))
                    } else {
                        text_of(&v)
                    };
                    let max = if i + 1 == cols.len() {
                        TABLE_CELL_MAX * 2
                    } else {
                        TABLE_CELL_MAX
                    };
                    render::truncate_chars(&one_line(&text), max)
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..cols.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .filter(|(_, w)| **w > 0)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    Ok(out.trim_end_matches('\n').to_string())
}

fn md2_code(t: &str) -> String {
    t.replace('\\', "\\\\").replace('`', "\\`")
}

/// `{{ data.price | price }}` → `23,488.75`; a numeric string too; anything else unchanged.
/// `price(2)` fixes the decimals.
fn price(v: Value, decimals: Option<u32>) -> Value {
    let f = match v.as_str() {
        Some(s) => s.trim().replace(',', "").parse::<f64>().ok(),
        None => f64::try_from(v.clone()).ok(),
    };
    match (f, decimals) {
        (Some(f), Some(d)) if f.is_finite() => {
            let text = format!("{f:.*}", d.min(12) as usize);
            let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
            let int = render::format_number(int.parse::<f64>().unwrap_or(0.0));
            let int = if f < 0.0 && !int.starts_with('-') {
                format!("-{int}")
            } else {
                int
            };
            Value::from(if frac.is_empty() {
                int
            } else {
                format!("{int}.{frac}")
            })
        }
        (Some(f), _) if v.as_str().is_none() => Value::from(match i64::try_from(v.clone()) {
            Ok(i) => render::display_value(&serde_json::json!(i)),
            Err(_) => render::format_number(f),
        }),
        (Some(f), _) => Value::from(render::format_number(f)),
        (None, _) => v,
    }
}

/// An RFC 3339 string or Unix seconds (milliseconds when that large) → `2025-09-04 13:32:00 UTC`,
/// or `time("%H:%M")`. Anything else is shown as it is.
fn time(v: Value, fmt: Option<String>) -> Result<Value, JinjaError> {
    let fmt = fmt.unwrap_or_else(|| "%Y-%m-%d %H:%M:%S UTC".into());
    // Checked first: chrono panics on a bad format string when the result is displayed.
    if chrono::format::StrftimeItems::new(&fmt).any(|i| matches!(i, chrono::format::Item::Error)) {
        return Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            "time: invalid format string",
        ));
    }
    Ok(time_fmt(&v, &fmt))
}

fn time_fmt(v: &Value, fmt: &str) -> Value {
    let at = if let Some(s) = v.as_str() {
        chrono::DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|d| d.with_timezone(&chrono::Utc))
    } else if let Ok(n) = i64::try_from(v.clone()) {
        let secs = if n.abs() > 100_000_000_000 {
            n / 1000
        } else {
            n
        };
        chrono::DateTime::from_timestamp(secs, 0)
    } else {
        None
    };
    match at {
        Some(at) => Value::from(at.format(fmt).to_string()),
        None => v.clone(),
    }
}

/// The trading action of a signal, upper-case: `action`, unless `comment` (or `signal`) says
/// it is an exit (`EXIT_50` on a BUY is the partial close of a long).
pub fn action_of(data: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let get = |k: &str| {
        data.get(k)
            .and_then(|v| v.as_str())
            .map(|s| s.trim().to_ascii_uppercase())
            .filter(|s| !s.is_empty())
    };
    ["comment", "signal"]
        .iter()
        .filter_map(|k| get(k))
        .find(|s| s.starts_with("EXIT"))
        .or_else(|| get("action"))
}

/// `{{ text | truncate(80) }}`: at most that many characters, ending in `…` (or `end`) when
/// cut; like Jinja's, it cuts at a space unless `killwords` is true.
fn truncate(
    v: Value,
    length: Option<usize>,
    killwords: Option<bool>,
    end: Option<String>,
) -> Value {
    let text = text_of(&v);
    let max = length.unwrap_or(255);
    if text.chars().count() <= max {
        return v;
    }
    let end = end.unwrap_or_else(|| "…".into());
    let keep = max.saturating_sub(end.chars().count());
    let mut out: String = text.chars().take(keep).collect();
    if !killwords.unwrap_or(false)
        && let Some(space) = out.rfind(' ')
        && space > 0
    {
        out.truncate(space);
    }
    out.push_str(&end);
    Value::from(out)
}

/// `{{ "EXIT_50" | action_label }}` → `EXIT 50% (partial)`.
fn action_label(v: Value) -> Value {
    let a = text_of(&v).trim().to_ascii_uppercase();
    let label = match a.as_str() {
        "EXIT_50" => "EXIT 50% (partial)".to_string(),
        "EXIT_FINAL" => "EXIT (final)".to_string(),
        _ => match a.strip_prefix("EXIT_").and_then(|p| p.parse::<u32>().ok()) {
            Some(p) => format!("EXIT {p}% (partial)"),
            None => a.replace('_', " "),
        },
    };
    Value::from(label)
}

fn style_of_action(v: &Value) -> Option<render::Style> {
    render::action_style(&text_of(v))
}

/// `{{ data.action | emoji }}` → 🟢; a severity name works too.
fn emoji(v: Value) -> Value {
    let s = style_of_action(&v).or_else(|| severity_named(&v).map(render::severity_style));
    Value::from(s.map_or("", |s| s.emoji))
}

/// `{{ data.action | color }}` → `#2ECC71`.
fn color(v: Value) -> Value {
    let s = style_of_action(&v).or_else(|| severity_named(&v).map(render::severity_style));
    Value::from(s.map_or(String::new(), |s| format!("#{:06X}", s.color)))
}

fn severity_named(v: &Value) -> Option<Severity> {
    let t = text_of(v);
    Severity::ALL
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(t.trim()))
}

#[derive(Serialize)]
struct Ctx<'a> {
    id: String,
    title: String,
    message: &'a str,
    severity: &'a str,
    priority: &'a str,
    event_type: Option<&'a str>,
    source: &'a str,
    user_id: Option<&'a str>,
    tags: &'a [String],
    data: &'a serde_json::Map<String, serde_json::Value>,
    created_at: String,
    /// The channel kind and name, and the markup the body is written in.
    kind: &'a str,
    channel: &'a str,
    markup: &'static str,
    /// From the action or severity (PRODUCT.md §3).
    emoji: &'static str,
    color: String,
    action: Option<String>,
    /// `data` as `[key, shown value]` pairs, empty ones left out, numbers grouped.
    fields: Vec<(String, String)>,
}

fn context(n: &Notification, kind: &str, channel: &str, markup: Markup) -> Value {
    let s = render::style(n);
    Value::from(minijinja::value::Serde(Ctx {
        id: n.id.to_string(),
        title: render::title(n),
        message: &n.message,
        severity: n.severity.as_str(),
        priority: n.priority.as_str(),
        event_type: n.event_type.as_deref(),
        source: &n.source,
        user_id: n.user_id.as_deref(),
        tags: &n.tags,
        data: &n.data,
        created_at: n
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        kind,
        channel,
        markup: markup.name(),
        emoji: s.emoji,
        color: format!("#{:06X}", s.color),
        action: action_of(&n.data),
        fields: render::fields(n),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(source: &str, markup: Markup, n: &Notification) -> String {
        let t = Templates::new(vec![UserTemplates {
            pattern: "*".into(),
            body: Some(source.into()),
            ..Default::default()
        }])
        .unwrap();
        let c = t.render(n, "telegram", "t", markup);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        c.body
    }

    #[test]
    fn a_stale_signal_says_so_whatever_its_template_titles_it() {
        let n = Notification::new("m")
            .event_type("signal.generated")
            .data("action", "BUY")
            .data("symbol", "MNQ")
            .data("price", 23488.75);
        let late = crate::policy::mark_stale(
            &n,
            std::time::Duration::from_secs(603),
            std::time::Duration::from_secs(120),
        );
        for markup in [Markup::Html, Markup::Discord, Markup::Plain] {
            let c = Templates::defaults().render(&late, "telegram", "t", markup);
            assert!(
                c.title.starts_with("⏰ STALE (10m 3s late) · ") && c.title.contains("MNQ"),
                "{}",
                c.title
            );
        }
        let fresh = Templates::defaults().render(&n, "telegram", "t", Markup::Plain);
        assert!(!fresh.title.contains("STALE"), "{}", fresh.title);
    }

    #[test]
    fn filters_format_prices_times_and_actions() {
        let n = Notification::new("m")
            .data("price", 23488.75)
            .data("big", 1234567)
            .data("text", "5012.5")
            .data("at", "2025-09-04T13:32:00Z")
            .data("secs", 1756992720);
        let p = Markup::Plain;
        assert_eq!(eval("{{ data.price | price }}", p, &n), "23,488.75");
        assert_eq!(eval("{{ data.big | number }}", p, &n), "1,234,567");
        assert_eq!(eval("{{ data.text | price(2) }}", p, &n), "5,012.50");
        assert_eq!(eval("{{ -1234.5 | price(1) }}", p, &n), "-1,234.5");
        assert_eq!(eval("{{ 'n/a' | price }}", p, &n), "n/a");
        assert_eq!(
            eval("{{ data.at | time }}", p, &n),
            "2025-09-04 13:32:00 UTC"
        );
        assert_eq!(eval("{{ data.secs | time('%H:%M') }}", p, &n), "13:32");
        assert_eq!(eval("{{ 'soon' | time }}", p, &n), "soon");
        assert_eq!(
            eval(
                "{{ 'EXIT_50' | action_label }} {{ 'exit_final' | action_label }} {{ 'EXIT_25' | action_label }}",
                p,
                &n
            ),
            "EXIT 50% (partial) EXIT (final) EXIT 25% (partial)"
        );
        assert_eq!(
            eval(
                "{{ 'BUY' | emoji }}{{ 'sell' | emoji }}{{ 'EXIT' | emoji }}{{ 'critical' | emoji }}",
                p,
                &n
            ),
            "🟢🔴🟠🚨"
        );
        assert_eq!(eval("{{ 'BUY' | color }}", p, &n), "#2ECC71");
        assert_eq!(
            eval(
                "{{ 'abcdef' | upper | truncate(4, true) }} {{ 'one two three' | truncate(9) }}",
                p,
                &n
            ),
            "ABC… one two…"
        );
    }

    #[test]
    fn helpers_dress_for_the_target_and_escape_inside() {
        let n = Notification::new("m").data("x", "a<b>*c_");
        let src = "{{ bold(data.x) }} {{ italic('k') }} {{ code(data.x) }}";
        assert_eq!(
            eval(src, Markup::Html, &n),
            "<b>a&lt;b&gt;*c_</b> <i>k</i> <code>a&lt;b&gt;*c_</code>"
        );
        assert_eq!(
            eval(src, Markup::MarkdownV2, &n),
            "*a<b\\>\\*c\\_* _k_ `a<b>*c_`"
        );
        assert_eq!(
            eval(src, Markup::Discord, &n),
            "**a<b>\\*c\\_** *k* `a<b>*c_`"
        );
        assert_eq!(
            eval(src, Markup::Slack, &n),
            "*a&lt;b&gt;*c_* _k_ `a&lt;b&gt;*c_`"
        );
        assert_eq!(eval(src, Markup::Plain, &n), "a<b>*c_ k a<b>*c_");
        // An empty value makes no empty entity.
        assert_eq!(
            eval("{{ bold(data.missing) }}|", Markup::MarkdownV2, &n),
            "|"
        );
    }

    #[test]
    fn the_effective_action_reads_exits_from_the_comment() {
        let data = |v: serde_json::Value| v.as_object().cloned().unwrap();
        assert_eq!(
            action_of(&data(
                serde_json::json!({"action": "BUY", "comment": "EXIT_50"})
            )),
            Some("EXIT_50".into())
        );
        assert_eq!(
            action_of(&data(
                serde_json::json!({"action": "sell", "comment": "breakout"})
            )),
            Some("SELL".into())
        );
        assert_eq!(action_of(&data(serde_json::json!({"price": 1}))), None);
    }

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("signal.*", "signal.generated"));
        assert!(!glob("signal.*", "webhook.signal"));
        assert!(glob("*.signal", "webhook.signal"));
        assert!(glob("a*b*c", "a-b-c"));
        assert!(!glob("a*b*c", "a-c"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn table_aligns_columns_and_leaves_out_empty_ones() {
        let n = Notification::new("m").data(
            "items",
            serde_json::json!([
                {"time": "2025-09-04T13:30:05Z", "action": "BUY", "symbol": "MNQ", "price": 23488.75},
                {"time": "2025-09-04T13:31:05Z", "action": "EXIT_50", "symbol": "ES", "price": 5012}
            ]),
        );
        assert_eq!(
            eval(
                "{{ table(data['items'], ['emoji', 'time', 'action', 'title', 'price']) }}",
                Markup::Plain,
                &n
            ),
            "🟢  13:30:05  BUY      23,488.75\n🟠  13:31:05  EXIT_50  5,012"
        );
    }

    #[test]
    fn a_syntax_error_names_the_template() {
        let e = Templates::new(vec![UserTemplates {
            pattern: "risk.*".into(),
            kinds: [("slack".to_string(), "{% if %}".to_string())].into(),
            ..Default::default()
        }])
        .unwrap_err();
        assert_eq!(e[0].key, "templates.\"risk.*\".slack");
        assert!(e[0].message.contains("line 1"), "{}", e[0].message);
        assert!(Templates::check("{{ x").is_err());
        assert!(Templates::check("{{ x }}").is_ok());
    }
}
