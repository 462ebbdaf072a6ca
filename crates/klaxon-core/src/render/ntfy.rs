//! ntfy messages (PROVIDERS.md §8): a title, a Markdown body, a priority from the severity and
//! tags whose emoji shortcodes ntfy shows in front of the title.

use super::{Content, Markup, fields, truncate_chars};
use crate::model::{Notification, Severity};

/// ntfy's default `message-size-limit` (server config docs): a longer body is turned into an
/// attached text file, which a phone shows as "You received a file". Cut first, visibly.
pub const MESSAGE_MAX_BYTES: usize = 4096;
/// ntfy documents no title limit; a title is one line on a phone, and the JSON body limit
/// counts it, so we keep it short.
pub const TITLE_MAX: usize = 250;

/// A rendered ntfy message, before it becomes JSON or headers.
#[derive(Debug, Clone, PartialEq)]
pub struct NtfyMessage {
    pub title: String,
    /// Markdown, every character of the input escaped.
    pub message: String,
    /// 1 (min) … 5 (max).
    pub priority: u8,
    pub tags: Vec<String>,
}

/// ntfy priorities (publish docs): 1 min (no sound, folded), 3 default, 4 high (long
/// vibration), 5 max (very long vibration, pop-over). Errors get 4, not 5, so that 5 stays
/// the one level that means "critical: act now".
pub fn priority(s: Severity) -> u8 {
    match s {
        Severity::Debug => 1,
        Severity::Info => 3,
        Severity::Warning | Severity::Error => 4,
        Severity::Critical => 5,
    }
}

/// The emoji shortcode for the notification's style; ntfy turns a tag that is a known
/// shortcode into that emoji before the title.
pub fn emoji_tag(n: &Notification) -> &'static str {
    if let Some(a) = crate::template::action_of(&n.data) {
        if a == "BUY" || a == "LONG" {
            return "chart_with_upwards_trend";
        }
        if a == "SELL" || a == "SHORT" {
            return "chart_with_downwards_trend";
        }
        if a.starts_with("EXIT") || a == "CLOSE" || a == "FLAT" {
            return "orange_circle";
        }
    }
    if n.event_type.as_deref() == Some("webhook.signal") {
        return "large_blue_circle";
    }
    match n.severity {
        Severity::Debug => "mag",
        Severity::Info => "information_source",
        Severity::Warning => "warning",
        Severity::Error => "x",
        Severity::Critical => "rotating_light",
    }
}

/// Escapes Markdown so text shows as written: every CommonMark-active punctuation mark gets a
/// backslash (CommonMark lets any ASCII punctuation be escaped), and line-leading list and
/// heading marks too.
pub fn escape_char(c: char, line_start: bool, out: &mut String) {
    let special = matches!(
        c,
        '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '&' | '#' | '!'
    ) || (line_start && matches!(c, '-' | '+' | '='));
    if special {
        out.push('\\');
    }
    out.push(c);
}

/// Appends `text` escaped, one character at a time, while it fits `max` bytes (keeping three
/// for `…`); returns false when it had to stop.
fn push_escaped(out: &mut String, text: &str, max: usize) -> bool {
    let mut piece = String::new();
    for c in text.chars() {
        piece.clear();
        let line_start = out.is_empty() || out.ends_with('\n');
        escape_char(c, line_start, &mut piece);
        if out.len() + piece.len() > max - '…'.len_utf8() {
            out.push('…');
            return false;
        }
        out.push_str(&piece);
    }
    true
}

/// Appends markup (not escaped) if it fits.
fn push_raw(out: &mut String, raw: &str, max: usize) -> bool {
    if out.len() + raw.len() > max - '…'.len_utf8() {
        out.push('…');
        return false;
    }
    out.push_str(raw);
    true
}

/// The body: the message, then `**key**: value` lines, within `max` bytes.
pub fn body(n: &Notification, max: usize) -> String {
    body_content(n, &Content::plain(n, Markup::Ntfy), max)
}

/// The message for a template's content: the body (escaped by the template), then the
/// fields when the content asks, within `max` bytes.
pub fn body_content(n: &Notification, content: &Content, max: usize) -> String {
    let mut out = String::new();
    let text = content.body.trim_end();
    if !push_raw(&mut out, text, max) {
        // Too long: as much as fits, never ending on a lone escaping backslash.
        let room = max - '…'.len_utf8();
        let mut end = 0;
        for (i, c) in text.char_indices() {
            if i + c.len_utf8() > room {
                break;
            }
            end = i + c.len_utf8();
        }
        out = text[..end].to_string();
        if out.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1 {
            out.pop();
        }
        out.push('…');
        return out;
    }
    let all = if content.details {
        fields(n)
    } else {
        Vec::new()
    };
    if !all.is_empty() && !text.trim().is_empty() && !push_raw(&mut out, "\n", max) {
        return out;
    }
    for (k, v) in all {
        let ok = push_raw(&mut out, "\n**", max)
            && push_escaped(&mut out, &k, max)
            && push_raw(&mut out, "**: ", max)
            && push_escaped(&mut out, &v, max);
        if !ok {
            return out;
        }
    }
    // A leading newline from the fields when there was no message.
    out.trim_start_matches('\n').to_string()
}

pub fn render(n: &Notification, extra_tags: &[String]) -> NtfyMessage {
    render_content(n, &Content::plain(n, Markup::Ntfy), extra_tags)
}

pub fn render_content(n: &Notification, content: &Content, extra_tags: &[String]) -> NtfyMessage {
    let mut tags = vec![emoji_tag(n).to_string()];
    for t in extra_tags.iter().chain(&n.tags) {
        // Tags travel as a comma list in headers: a comma inside one would split it.
        let t = t.replace(',', " ").trim().to_string();
        if !t.is_empty() && !tags.contains(&t) {
            tags.push(t);
        }
    }
    NtfyMessage {
        title: truncate_chars(&content.title, TITLE_MAX),
        message: body_content(n, content, MESSAGE_MAX_BYTES),
        priority: priority(n.severity),
        tags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_tags_and_markdown() {
        let n = Notification::new("Use *care* with [links](x) & <b>")
            .title("SELL MNQ")
            .severity(Severity::Error)
            .data("action", "SELL")
            .data("price", 23488.75)
            .tag("risk,desk");
        let m = render(&n, &["bot".into()]);
        assert_eq!(m.priority, 4);
        assert_eq!(m.tags, ["chart_with_downwards_trend", "bot", "risk desk"]);
        assert_eq!(m.title, "SELL MNQ");
        assert_eq!(
            m.message,
            "Use \\*care\\* with \\[links\\](x) \\& \\<b\\>\n\n**action**: SELL\n**price**: 23,488.75"
        );
        assert_eq!(priority(Severity::Critical), 5);
        assert_eq!(priority(Severity::Debug), 1);
        assert_eq!(
            emoji_tag(&Notification::new("x").severity(Severity::Warning)),
            "warning"
        );
    }

    #[test]
    fn line_start_marks_are_escaped() {
        let n = Notification::new("- a\n# b\n=c d-e");
        assert_eq!(render(&n, &[]).message, "\\- a\n\\# b\n\\=c d-e");
    }

    proptest::proptest! {
        /// Any text: within ntfy's size limit, and no escape left dangling at the cut.
        #[test]
        fn any_text_fits(msg in ".{0,3000}", k in ".{0,40}", v in ".{0,2000}") {
            let m = render(&Notification::new(msg).data(k, v), &[]);
            proptest::prop_assert!(m.message.len() <= MESSAGE_MAX_BYTES);
            let before = m.message.trim_end_matches('…');
            proptest::prop_assert_eq!(before.chars().rev().take_while(|&c| c == '\\').count() % 2, 0);
        }
    }

    #[test]
    fn long_bodies_fit_the_size_limit_without_a_dangling_escape() {
        let mut n = Notification::new("*🚀".repeat(5000)).title("t".repeat(1000));
        n = n.data("k", "v".repeat(100));
        let m = render(&n, &[]);
        assert!(m.message.len() <= MESSAGE_MAX_BYTES);
        assert!(m.message.ends_with('…'));
        let before = m.message.trim_end_matches('…');
        assert_eq!(
            before.chars().rev().take_while(|&c| c == '\\').count() % 2,
            0
        );
        assert_eq!(m.title.chars().count(), TITLE_MAX);
    }
}
