//! Rendering: a notification becomes the text each provider takes. Pure and provider-aware:
//! escaping for the target markup is done here, never by the caller, so no input can break a
//! send; providers' length limits are named constants in their module.
//!
//! The shared parts — headline, emoji and colour from the action or severity (PRODUCT.md §3),
//! the data fields as lines — live in this file so every channel says the same thing.

pub mod discord;
pub mod email;
pub mod ntfy;
pub mod pushover;
pub mod slack;
pub mod sms;
pub mod telegram;
pub mod webhook;

use crate::model::{Notification, Severity};
pub use crate::template::{Content, Markup};

/// Emoji and colour for a notification: webhook signals blue, else the trading action when
/// there is one (BUY green, SELL red, EXIT orange), else the severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub emoji: &'static str,
    /// 0xRRGGBB, for providers that colour messages (Discord embeds, Slack attachments).
    pub color: u32,
}

pub const GREEN: u32 = 0x2E_CC_71;
pub const RED: u32 = 0xE7_4C_3C;
pub const ORANGE: u32 = 0xE6_7E_22;
pub const BLUE: u32 = 0x34_98_DB;
pub const GREY: u32 = 0x95_A5_A6;
pub const AMBER: u32 = 0xF1_C4_0F;
pub const DARK_RED: u32 = 0x99_1B_1B;

pub fn style(n: &Notification) -> Style {
    // Webhook signals are blue whatever their action, so they stand apart from the strategy's
    // own signals in the same channel; the template shows the action's emoji in the text.
    if n.event_type.as_deref() == Some("webhook.signal") {
        return Style {
            emoji: "🔵",
            color: BLUE,
        };
    }
    if let Some(s) = crate::template::action_of(&n.data).and_then(|a| action_style(&a)) {
        return s;
    }
    severity_style(n.severity)
}

/// The style of a trading action (`BUY`, `sell`, `EXIT_50` …), if it is one.
pub fn action_style(action: &str) -> Option<Style> {
    let a = action.trim().to_ascii_uppercase();
    if a == "BUY" || a == "LONG" {
        return Some(Style {
            emoji: "🟢",
            color: GREEN,
        });
    }
    if a == "SELL" || a == "SHORT" {
        return Some(Style {
            emoji: "🔴",
            color: RED,
        });
    }
    if a.starts_with("EXIT") || a == "CLOSE" || a == "FLAT" {
        return Some(Style {
            emoji: "🟠",
            color: ORANGE,
        });
    }
    None
}

pub fn severity_style(severity: Severity) -> Style {
    match severity {
        Severity::Debug => Style {
            emoji: "🔍",
            color: GREY,
        },
        Severity::Info => Style {
            emoji: "ℹ️",
            color: BLUE,
        },
        Severity::Warning => Style {
            emoji: "⚠️",
            color: AMBER,
        },
        Severity::Error => Style {
            emoji: "❌",
            color: RED,
        },
        Severity::Critical => Style {
            emoji: "🚨",
            color: DARK_RED,
        },
    }
}

/// The title a message shows: the notification's own, else one made from the event type or
/// severity, so no message goes out without a first line.
pub fn title(n: &Notification) -> String {
    if let Some(t) = n.title.as_deref().filter(|t| !t.trim().is_empty()) {
        return t.to_string();
    }
    match n.event_type.as_deref() {
        Some(et) => et.to_string(),
        None => {
            let s = n.severity.as_str();
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        }
    }
}

/// `data` as (key, value) lines for display; nested objects are shown as compact JSON and
/// empty ones skipped. Numbers get thousands separators (traders read 23,488.75 faster).
pub fn fields(n: &Notification) -> Vec<(String, String)> {
    // A digest's message is already the table of its items; its `data` (every item in full)
    // is for templates and webhooks, and as lines it would only repeat the table at length.
    if n.event_type.as_deref() == Some(crate::digest::DIGEST_EVENT) {
        return Vec::new();
    }
    n.data
        .iter()
        .filter(|(_, v)| !is_empty_value(v))
        .map(|(k, v)| (k.clone(), display_value(v)))
        .collect()
}

fn is_empty_value(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Object(o) => o.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::String(s) => s.is_empty(),
        _ => false,
    }
}

pub fn display_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(num) => match (num.as_i64(), num.as_f64()) {
            (Some(i), _) => group_thousands(&i.to_string()),
            (None, Some(f)) => format_number(f),
            _ => num.to_string(),
        },
        other => other.to_string(),
    }
}

/// `23488.75` → `23,488.75`; keeps the decimals as given (up to 8), trims trailing zeros.
pub fn format_number(f: f64) -> String {
    if !f.is_finite() {
        return f.to_string();
    }
    let text = format!("{f:.8}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let mut out = group_thousands(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

fn group_thousands(int: &str) -> String {
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// Cuts `text` to at most `max` characters (Unicode scalar values), marking the cut with `…`.
pub fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Escapes `text` one character at a time with `escape` and keeps the result within `max`
/// characters, ending with `…` when cut. The cut falls between two escaped characters, so an
/// entity (`&amp;`) or an escape (`\\*`) is never split in half.
pub fn escape_fit(text: &str, max: usize, escape: impl Fn(char, &mut String)) -> String {
    let mut out = String::with_capacity(text.len().min(max.saturating_mul(4)));
    let mut piece = String::new();
    let mut count = 0;
    // The byte length of `out` at the last point where a `…` could still be added.
    let mut safe = 0;
    for c in text.chars() {
        piece.clear();
        escape(c, &mut piece);
        count += piece.chars().count();
        out.push_str(&piece);
        if count < max {
            safe = out.len();
        }
        if count > max {
            out.truncate(safe);
            out.push('…');
            return out;
        }
    }
    out
}

/// A multi-line code block's markers in a markup, so a split can close it at the end of one
/// part and open it again at the start of the next.
#[derive(Debug, Clone, Copy)]
pub struct Fence {
    pub open: &'static str,
    pub close: &'static str,
}

impl Fence {
    /// `<pre>` for HTML; ```` ``` ```` for the Markdowns; none for plain text.
    pub fn of(markup: Markup) -> Option<Fence> {
        match markup {
            Markup::Html => Some(Fence {
                open: "<pre>",
                close: "</pre>",
            }),
            Markup::Plain => None,
            _ => Some(Fence {
                open: "```",
                close: "```",
            }),
        }
    }

    /// Whether a line leaves a block open that was closed before it (or the reverse).
    fn toggles(&self, line: &str) -> bool {
        if self.open == self.close {
            line.matches(self.open).count() % 2 == 1
        } else {
            line.matches(self.open).count() != line.matches(self.close).count()
        }
    }

    /// What ends a part inside the block, and what starts the next.
    fn suffix(&self) -> String {
        if self.open == self.close {
            format!("\n{}", self.close)
        } else {
            self.close.to_string()
        }
    }

    fn prefix(&self) -> String {
        if self.open == self.close {
            format!("{}\n", self.open)
        } else {
            self.open.to_string()
        }
    }
}

/// Packs lines into parts of at most `max` (as `measure` counts), never cutting a line; a code
/// block cut between two parts is closed and opened again so each part is valid on its own.
/// A line that cannot fit on its own is cut with `cut` (which must keep the markup valid).
pub fn pack_lines(
    lines: impl IntoIterator<Item = String>,
    max: usize,
    fence: Option<Fence>,
    measure: fn(&str) -> usize,
    cut: &dyn Fn(&str, usize) -> String,
) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    // `measure(&cur)`, kept as lines are added rather than counted again each time.
    let mut size = 0;
    let mut inside = false;
    let (suffix, prefix) =
        fence.map_or((String::new(), String::new()), |f| (f.suffix(), f.prefix()));
    let (suffix_size, prefix_size) = (measure(&suffix), measure(&prefix));
    for line in lines {
        let reserve = if inside { suffix_size } else { 0 };
        let mut line_size = measure(&line);
        let line = if line_size + prefix_size + suffix_size > max {
            let l = cut(&line, max.saturating_sub(prefix_size + suffix_size));
            line_size = measure(&l);
            l
        } else {
            line
        };
        let sep = usize::from(!cur.is_empty());
        if !cur.is_empty() && size + sep + line_size + reserve > max {
            if inside {
                cur.push_str(&suffix);
            }
            parts.push(std::mem::take(&mut cur));
            size = 0;
            if inside {
                cur.push_str(&prefix);
                size = prefix_size;
            }
        }
        // A part that starts by reopening a block goes straight on with the line.
        if !(cur.is_empty() || inside && cur == prefix) {
            cur.push('\n');
            size += 1;
        }
        cur.push_str(&line);
        size += line_size;
        if fence.is_some_and(|f| f.toggles(&line)) {
            inside = !inside;
        }
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

/// The text HTML markup shows: tags dropped, the entities our escaping makes decoded. For a
/// line that must be cut where its tags cannot follow.
pub fn html_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Characters, as most providers count.
pub fn chars(s: &str) -> usize {
    s.chars().count()
}

/// UTF-16 code units, as Telegram counts.
pub fn utf16(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Cuts markup text to `max` characters with `…`, never inside an HTML entity or after a
/// lone escaping backslash, and closes a code block the cut left open.
pub fn cut_markup(text: &str, max: usize, fence: Option<Fence>) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let close = fence.map(|f| f.suffix()).unwrap_or_default();
    let room = max.saturating_sub(close.chars().count());
    let mut out: String = text.chars().take(room.saturating_sub(1)).collect();
    // An entity cut in half (`&am`) would show as garbage or be refused.
    if let Some(amp) = out.rfind('&')
        && !out[amp..].contains(';')
        && out.len() - amp <= 8
    {
        out.truncate(amp);
    }
    // A tag cut in half (`<b`).
    if let Some(lt) = out.rfind('<')
        && !out[lt..].contains('>')
    {
        out.truncate(lt);
    }
    let trailing = out.chars().rev().take_while(|&c| c == '\\').count();
    if trailing % 2 == 1 {
        out.pop();
    }
    out.push('…');
    if let Some(f) = fence {
        let open = out.lines().filter(|l| f.toggles(l)).count() % 2 == 1;
        if open {
            out.push_str(&close);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_prices() {
        assert_eq!(format_number(23488.75), "23,488.75");
        assert_eq!(format_number(-1234567.0), "-1,234,567");
        assert_eq!(format_number(0.000123), "0.000123");
        assert_eq!(format_number(999.5), "999.5");
        assert_eq!(display_value(&serde_json::json!(1000000)), "1,000,000");
    }

    #[test]
    fn action_sets_style() {
        let n = Notification::new("x").data("action", "BUY");
        assert_eq!(style(&n).color, GREEN);
        let n = Notification::new("x").data("action", "EXIT_50");
        assert_eq!(style(&n).emoji, "🟠");
        let n = Notification::new("x").severity(Severity::Critical);
        assert_eq!(style(&n).emoji, "🚨");
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate_chars("abcdef", 4), "abc…");
        assert_eq!(truncate_chars("abc", 4), "abc");
    }

    #[test]
    fn escaped_cut_never_splits_an_entity() {
        let amp = |c: char, out: &mut String| match c {
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        };
        assert_eq!(escape_fit("a&b", 7, amp), "a&amp;b");
        assert_eq!(escape_fit("a&b", 6, amp), "a…");
        assert_eq!(escape_fit("abc&", 5, amp), "abc…");
        assert_eq!(escape_fit("", 3, amp), "");
    }
}
