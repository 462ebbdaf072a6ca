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

/// Emoji and colour for a notification: the trading action when there is one (BUY green,
/// SELL red, EXIT orange, webhook signals blue), else the severity.
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
    if let Some(action) = n.data.get("action").and_then(|v| v.as_str()) {
        let a = action.to_ascii_uppercase();
        if a == "BUY" || a == "LONG" {
            return Style {
                emoji: "🟢",
                color: GREEN,
            };
        }
        if a == "SELL" || a == "SHORT" {
            return Style {
                emoji: "🔴",
                color: RED,
            };
        }
        if a.starts_with("EXIT") || a == "CLOSE" || a == "FLAT" {
            return Style {
                emoji: "🟠",
                color: ORANGE,
            };
        }
    }
    if n.event_type.as_deref() == Some("webhook.signal") {
        return Style {
            emoji: "🔵",
            color: BLUE,
        };
    }
    match n.severity {
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
