//! Discord webhook payload: one embed coloured and titled by the action (PRODUCT.md §3), every
//! embed limit respected by truncation, mentions off unless asked for.

use serde_json::{Value, json};

use super::{Content, Fence, Markup, cut_markup, fields, style, truncate_chars};
use crate::model::Notification;

/// Embed limits, PROVIDERS.md §2 (Discord answers 400 when one is exceeded).
pub const TITLE_MAX: usize = 256;
pub const DESCRIPTION_MAX: usize = 4096;
pub const FIELDS_MAX: usize = 25;
pub const FIELD_NAME_MAX: usize = 256;
pub const FIELD_VALUE_MAX: usize = 1024;
pub const FOOTER_MAX: usize = 2048;
/// Sum of title, description, field names and values, footer and author over all embeds.
pub const EMBED_TOTAL_MAX: usize = 6000;

/// Options a Discord channel carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiscordOptions {
    pub username: Option<String>,
    pub avatar_url: Option<String>,
    /// Let `@everyone`, roles and users in the text ping people. Off by default: an alert text
    /// that quotes a user name must not page a whole server.
    pub mentions: bool,
}

/// Escapes Discord markdown so text shows as written.
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut line_start = true;
    for c in text.chars() {
        let special = matches!(c, '\\' | '*' | '_' | '~' | '`' | '|')
            || (line_start && matches!(c, '>' | '#' | '-'));
        if special {
            out.push('\\');
        }
        out.push(c);
        line_start = c == '\n';
    }
    out
}

/// Escapes then truncates to `max` characters without leaving a dangling escape.
fn fit(text: &str, max: usize) -> String {
    let escaped = escape_markdown(text);
    let mut out = truncate_chars(&escaped, max);
    if out.ends_with('…') {
        let body = &out[..out.len() - '…'.len_utf8()];
        let trailing = body.chars().rev().take_while(|&c| c == '\\').count();
        if trailing % 2 == 1 {
            out = format!("{}…", &body[..body.len() - 1]);
        }
    }
    out
}

/// The payload without templates: the notification's title and message, and every field.
pub fn render(n: &Notification, opts: &DiscordOptions) -> Value {
    render_content(n, &Content::plain(n, Markup::Discord), opts)
}

/// The payload for a template's content: the title (escaped here) with the emoji, the body
/// (escaped by the template) as the description, the data fields as embed fields when the
/// content asks for them, coloured by the action or severity.
pub fn render_content(n: &Notification, content: &Content, opts: &DiscordOptions) -> Value {
    let s = style(n);
    let head = fit(&format!("{} {}", s.emoji, content.title), TITLE_MAX);
    let footer = match n.event_type.as_deref() {
        Some(et) => format!("{} · {}", n.source, et),
        None => n.source.clone(),
    };
    let footer = truncate_chars(&footer, FOOTER_MAX);
    let mut budget = EMBED_TOTAL_MAX
        .saturating_sub(head.chars().count())
        .saturating_sub(footer.chars().count());

    let mut embed_fields = Vec::new();
    let all_fields = if content.details {
        fields(n)
    } else {
        Vec::new()
    };
    // Fields first take what the description leaves; the description is the message and gets
    // priority, so reserve its size up to a point.
    let description_want = content.body.chars().count().min(DESCRIPTION_MAX);
    let mut field_budget = budget.saturating_sub(description_want);
    for (k, v) in all_fields.into_iter().take(FIELDS_MAX) {
        let name = fit(&k, FIELD_NAME_MAX);
        let value = fit(&v, FIELD_VALUE_MAX);
        let size = name.chars().count() + value.chars().count();
        if size > field_budget {
            break;
        }
        field_budget -= size;
        budget -= size;
        embed_fields.push(json!({"name": name, "value": value, "inline": true}));
    }
    let description = describe(&content.body, DESCRIPTION_MAX.min(budget));

    let mut embed = json!({
        "title": head,
        "color": s.color,
        "timestamp": n.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "footer": {"text": footer},
    });
    if !description.is_empty() {
        embed["description"] = json!(description);
    }
    if !embed_fields.is_empty() {
        embed["fields"] = Value::Array(embed_fields);
    }
    let mut body = json!({
        "embeds": [embed],
        "allowed_mentions": if opts.mentions {
            json!({"parse": ["everyone", "roles", "users"]})
        } else {
            json!({"parse": []})
        },
    });
    if let Some(u) = &opts.username {
        body["username"] = json!(truncate_chars(u, 80));
    }
    if let Some(a) = &opts.avatar_url {
        body["avatar_url"] = json!(a);
    }
    body
}

/// The body within `max` characters, `…` at the cut, a code block closed if the cut falls
/// inside it.
fn describe(body: &str, max: usize) -> String {
    cut_markup(body, max, Fence::of(Markup::Discord))
}

/// Characters counted against `EMBED_TOTAL_MAX` for one embed (used by tests and fakes).
pub fn embed_size(embed: &Value) -> usize {
    let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    let mut n = len(&embed["title"]) + len(&embed["description"]) + len(&embed["footer"]["text"]);
    n += len(&embed["author"]["name"]);
    if let Some(fields) = embed["fields"].as_array() {
        for f in fields {
            n += len(&f["name"]) + len(&f["value"]);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;

    #[test]
    fn colour_and_title_by_action() {
        let n = Notification::new("Filled at market")
            .title("SELL MNQ")
            .data("action", "SELL")
            .severity(Severity::Info);
        let b = render(&n, &DiscordOptions::default());
        assert_eq!(b["embeds"][0]["color"], json!(super::super::RED));
        assert_eq!(b["embeds"][0]["title"], json!("🔴 SELL MNQ"));
        assert_eq!(b["allowed_mentions"], json!({"parse": []}));
    }

    #[test]
    fn every_limit_holds_for_huge_input() {
        let mut n = Notification::new("x".repeat(10_000)).title("t".repeat(1000));
        for i in 0..40 {
            n = n.data(format!("k{i}{}", "n".repeat(300)), "v".repeat(2000));
        }
        let b = render(&n, &DiscordOptions::default());
        let e = &b["embeds"][0];
        assert!(e["title"].as_str().unwrap().chars().count() <= TITLE_MAX);
        assert!(e["description"].as_str().unwrap().chars().count() <= DESCRIPTION_MAX);
        let fields = e["fields"].as_array().map_or(0, |f| f.len());
        assert!(fields <= FIELDS_MAX);
        assert!(embed_size(e) <= EMBED_TOTAL_MAX, "{}", embed_size(e));
    }

    #[test]
    fn markdown_escaped_without_dangling_backslash() {
        assert_eq!(escape_markdown("# a*b_c"), "\\# a\\*b\\_c");
        let out = fit(&"*".repeat(100), 11);
        assert!(out.chars().count() <= 11);
        let body = out.trim_end_matches('…');
        assert_eq!(body.chars().rev().take_while(|&c| c == '\\').count() % 2, 0);
    }
}
