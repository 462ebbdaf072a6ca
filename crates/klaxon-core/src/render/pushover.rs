//! Pushover messages (PROVIDERS.md §8): HTML mode, so the message is escaped and the data
//! fields are bold; the priority follows the severity.

use super::{Content, Markup, escape_fit, fields, html_text, style, truncate_chars};
use crate::model::{Notification, Severity};

/// PROVIDERS.md §8: `message` ≤ 1024 and `title` ≤ 250 characters (Pushover answers 400 past
/// either).
pub const MESSAGE_MAX: usize = 1024;
pub const TITLE_MAX: usize = 250;

#[derive(Debug, Clone, PartialEq)]
pub struct PushoverMessage {
    pub title: String,
    /// HTML (`html=1`).
    pub message: String,
    pub priority: i8,
    /// Unix seconds: the phone shows when it happened, not when it arrived.
    pub timestamp: i64,
}

/// Pushover priorities (API docs): −2 no notification at all, −1 quiet (no sound or
/// vibration), 0 normal, 1 high (bypasses quiet hours), 2 emergency (repeats until
/// acknowledged). Debug is −1, not −2, so it can still be found on the phone; a warning does
/// not wake anyone (0); an error does (1); only critical repeats (2).
pub fn priority(s: Severity) -> i8 {
    match s {
        Severity::Debug => -1,
        Severity::Info | Severity::Warning => 0,
        Severity::Error => 1,
        Severity::Critical => 2,
    }
}

/// Pushover's HTML needs `&`, `<` and `>` escaped (and `"` is harmless to escape too).
pub fn escape_char(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        c => out.push(c),
    }
}

fn escape(text: &str) -> String {
    escape_fit(text, usize::MAX, escape_char)
}

/// The message escaped, then one `<b>key</b>: value` line per field while whole lines fit, so
/// no tag is ever left open; `…` marks anything left out.
pub fn message(n: &Notification, max: usize) -> String {
    message_content(n, &Content::plain(n, Markup::Html), max)
}

/// The message for a template's content: the body (HTML, escaped by the template), then the
/// fields when the content asks for them.
pub fn message_content(n: &Notification, content: &Content, max: usize) -> String {
    let mut out = content.body.trim_end().to_string();
    let mut count = out.chars().count();
    if count > max {
        // The message alone is too long: it gets the whole space, the fields none, and goes
        // as its text so no tag is cut open.
        return escape_fit(html_text(&out).trim_end(), max, escape_char);
    }
    let mut first = out.trim().is_empty();
    let fields = if content.details {
        fields(n)
    } else {
        Vec::new()
    };
    for (k, v) in fields {
        let sep = if first { "" } else { "\n" };
        let line = format!("{sep}<b>{}</b>: {}", escape(&k), escape(&v));
        let len = line.chars().count();
        // Keep room for a final `\n…` if this line does not fit.
        if count + len > max {
            if count + 2 <= max {
                out.push_str("\n…");
            }
            break;
        }
        out.push_str(&line);
        count += len;
        first = false;
    }
    out.trim_start().to_string()
}

pub fn render(n: &Notification) -> PushoverMessage {
    render_content(n, &Content::plain(n, Markup::Html))
}

pub fn render_content(n: &Notification, content: &Content) -> PushoverMessage {
    PushoverMessage {
        title: truncate_chars(&format!("{} {}", style(n).emoji, content.title), TITLE_MAX),
        message: message_content(n, content, MESSAGE_MAX),
        priority: priority(n.severity),
        timestamp: n.created_at.timestamp(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escaped_fields_bold() {
        let n = Notification::new("P&L <b>down</b> \"a lot\"")
            .title("Risk")
            .severity(Severity::Error)
            .data("symbol", "<MNQ>")
            .data("price", 23488.75);
        let m = render(&n);
        assert_eq!(m.priority, 1);
        assert_eq!(m.title, "❌ Risk");
        assert_eq!(
            m.message,
            "P&amp;L &lt;b&gt;down&lt;/b&gt; &quot;a lot&quot;\n<b>price</b>: 23,488.75\n<b>symbol</b>: &lt;MNQ&gt;"
        );
        assert_eq!(priority(Severity::Critical), 2);
        assert_eq!(priority(Severity::Debug), -1);
    }

    proptest::proptest! {
        /// Any text: within Pushover's limits, every `<b>` closed, no raw `<` from the input.
        #[test]
        fn any_text_fits(msg in ".{0,1500}", t in ".{0,300}", k in "[a-z<&]{1,20}", v in ".{0,400}") {
            let n = Notification::new(msg).title(t).data(k, v);
            let m = render(&n);
            proptest::prop_assert!(m.message.chars().count() <= MESSAGE_MAX);
            proptest::prop_assert!(m.title.chars().count() <= TITLE_MAX);
            proptest::prop_assert_eq!(m.message.matches("<b>").count(), m.message.matches("</b>").count());
            let stripped = m.message.replace("<b>", "").replace("</b>", "");
            proptest::prop_assert!(!stripped.contains('<') && !stripped.contains('>'));
        }
    }

    #[test]
    fn limits_hold_and_no_tag_is_left_open() {
        let mut n = Notification::new("&".repeat(2000)).title("🚨".repeat(400));
        let m = render(&n);
        assert!(m.message.chars().count() <= MESSAGE_MAX);
        assert!(m.message.ends_with("&amp;…"));
        assert_eq!(m.title.chars().count(), TITLE_MAX);

        n.message = "short".into();
        for i in 0..100 {
            n = n.data(format!("key{i:03}"), "v".repeat(30));
        }
        let m = message(&n, MESSAGE_MAX);
        assert!(m.chars().count() <= MESSAGE_MAX);
        assert!(m.ends_with("\n…"), "{m}");
        assert_eq!(m.matches("<b>").count(), m.matches("</b>").count());
    }
}
