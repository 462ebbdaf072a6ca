//! Email: a one-line subject, a plain-text body and an HTML body for the same notification.
//!
//! The HTML is self-contained (inline styles, no images, fonts or links to fetch) because mail
//! clients block remote content and an alert must read the same offline. Everything that came
//! from the user is escaped here, so no input can inject markup into the operator's inbox.

use std::fmt::Write as _;

use super::{Content, Fence, Markup, cut_markup, fields, style, title, truncate_chars};
use crate::model::{Notification, Severity};

/// RFC 5322 caps a header line at 998 characters; clients show far fewer. 200 keeps the whole
/// subject in a folded header and in every list view worth reading.
pub const SUBJECT_MAX: usize = 200;
/// Email has no hard body limit, but servers commonly refuse 10–25 MB and nobody reads a
/// megabyte of alert: the message is cut well before either.
pub const MESSAGE_MAX: usize = 64_000;
pub const FIELD_NAME_MAX: usize = 200;
pub const FIELD_VALUE_MAX: usize = 2_000;
/// A table of more rows than this is a data dump, not an alert; the rest is counted.
pub const FIELDS_MAX: usize = 100;

/// What an email channel sends for one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailBody {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Escapes text for HTML element content and double- or single-quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Control characters (CR, LF, tabs) become spaces and runs of spaces one: a subject is one
/// header line, whatever the title held.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end().to_string()
}

pub fn subject(n: &Notification) -> String {
    subject_titled(n, &title(n))
}

fn subject_titled(n: &Notification, title: &str) -> String {
    let s = style(n);
    // Severity in brackets from warning up, so inbox rules can file or page on `[CRITICAL]`;
    // below that it is noise in front of every trading signal.
    let tag = if n.severity >= Severity::Warning {
        format!("[{}] ", n.severity.as_str().to_ascii_uppercase())
    } else {
        String::new()
    };
    truncate_chars(&one_line(&format!("{} {tag}{title}", s.emoji)), SUBJECT_MAX)
}

/// The data fields cut to their limits, and how many were left out.
fn shown_fields(n: &Notification) -> (Vec<(String, String)>, usize) {
    let all = fields(n);
    let hidden = all.len().saturating_sub(FIELDS_MAX);
    let shown = all
        .into_iter()
        .take(FIELDS_MAX)
        .map(|(k, v)| {
            (
                truncate_chars(&one_line(&k), FIELD_NAME_MAX),
                truncate_chars(&v, FIELD_VALUE_MAX),
            )
        })
        .collect();
    (shown, hidden)
}

fn footer(n: &Notification) -> String {
    let mut parts = Vec::new();
    if let Some(et) = n.event_type.as_deref() {
        parts.push(et.to_string());
    }
    parts.push(n.source.clone());
    parts.push(n.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string());
    one_line(&truncate_chars(&parts.join(" · "), FIELD_VALUE_MAX))
}

fn meta(n: &Notification) -> String {
    let mut line = format!(
        "Severity: {} · Priority: {}",
        n.severity.as_str(),
        n.priority.as_str()
    );
    if !n.tags.is_empty() {
        let tags = truncate_chars(&one_line(&n.tags.join(", ")), FIELD_VALUE_MAX);
        let _ = write!(line, " · Tags: {tags}");
    }
    line
}

/// The email without templates: the notification's title and message, and every field.
pub fn render(n: &Notification) -> EmailBody {
    render_content(
        n,
        &Content::plain(n, Markup::Plain),
        &Content::plain(n, Markup::Html),
    )
}

/// The email for a template's content, rendered once as plain text (`text`) and once as HTML
/// (`html`, escaped by the template), always with the fields table: an email is the full record
/// an operator files and searches (a risk breach's equity, an order error's payload), and it
/// has the room that a chat message does not.
pub fn render_content(n: &Notification, plain: &Content, html: &Content) -> EmailBody {
    let head = truncate_chars(&one_line(&plain.title), SUBJECT_MAX);
    let message = truncate_chars(&plain.body, MESSAGE_MAX);
    let html_message = cut_markup(&html.body, MESSAGE_MAX * 2, Fence::of(Markup::Html));
    let (rows, hidden) = shown_fields(n);
    let footer = footer(n);
    let meta = meta(n);

    let mut text = format!("{head}\n\n{message}\n");
    if !rows.is_empty() {
        text.push('\n');
        for (k, v) in &rows {
            let _ = writeln!(text, "{k}: {v}");
        }
    }
    if hidden > 0 {
        let _ = writeln!(text, "(+{hidden} more fields)");
    }
    let _ = write!(text, "\n-- \n{footer}\n{meta}\n");

    EmailBody {
        subject: subject_titled(n, &plain.title),
        text,
        html: html_page(n, &head, &html_message, &rows, hidden, &footer, &meta),
    }
}

/// Line breaks as `<br>`, except inside `<pre>` where they already show.
fn breaks(html: &str) -> String {
    let mut out = String::with_capacity(html.len() + 64);
    let mut in_pre = false;
    for (i, line) in html.split('\n').enumerate() {
        if i > 0 {
            out.push_str(if in_pre { "\n" } else { "<br>\n" });
        }
        out.push_str(line);
        if line.matches("<pre>").count() != line.matches("</pre>").count() {
            in_pre = !in_pre;
        }
    }
    out
}

fn html_page(
    n: &Notification,
    head: &str,
    message: &str,
    rows: &[(String, String)],
    hidden: usize,
    footer: &str,
    meta: &str,
) -> String {
    let s = style(n);
    let color = format!("#{:06x}", s.color & 0xFF_FF_FF);
    let mut out = String::with_capacity(message.len() * 2 + 2048);
    out.push_str(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\n\
         <body style=\"margin:0;padding:16px;background:#f4f5f7;\
         font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#1f2328\">\n",
    );
    // A table, not a div with a border: Outlook's Word renderer ignores most CSS but keeps
    // cell backgrounds, so the severity bar survives everywhere.
    let _ = write!(
        out,
        "<table role=\"presentation\" cellpadding=\"0\" cellspacing=\"0\" width=\"100%\" \
         style=\"max-width:640px;background:#ffffff;border-collapse:collapse\"><tr>\
         <td width=\"6\" style=\"width:6px;background:{color}\"></td>\
         <td style=\"padding:16px 20px\">\n\
         <h1 style=\"margin:0 0 12px;font-size:18px\">{} {}</h1>\n",
        s.emoji,
        escape_html(head)
    );
    if !message.is_empty() {
        let _ = writeln!(
            out,
            // A div, not a p: a template may put a <pre> table in the message.
            "<div style=\"margin:0 0 16px;font-size:15px;line-height:1.45\">{}</div>",
            breaks(message)
        );
    }
    if !rows.is_empty() {
        out.push_str(
            "<table cellpadding=\"0\" cellspacing=\"0\" style=\"border-collapse:collapse;\
             font-size:14px;margin:0 0 16px\">\n",
        );
        for (k, v) in rows {
            let _ = writeln!(
                out,
                "<tr><th align=\"left\" style=\"padding:3px 16px 3px 0;color:#57606a;\
                 font-weight:600;vertical-align:top\">{}</th>\
                 <td style=\"padding:3px 0;font-variant-numeric:tabular-nums\">{}</td></tr>",
                escape_html(k),
                escape_html(v).replace('\n', "<br>")
            );
        }
        out.push_str("</table>\n");
    }
    if hidden > 0 {
        let _ = writeln!(
            out,
            "<p style=\"margin:0 0 16px;font-size:13px;color:#57606a\">+{hidden} more fields</p>"
        );
    }
    let _ = write!(
        out,
        "<p style=\"margin:0;font-size:12px;color:#57606a\">{}<br>{}</p>\n\
         </td></tr></table>\n</body></html>\n",
        escape_html(footer),
        escape_html(meta)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{DARK_RED, GREEN};

    #[test]
    fn subject_carries_emoji_severity_and_title() {
        let n = Notification::new("Drawdown 5.2% > 5%")
            .title("Risk breach")
            .severity(Severity::Critical);
        assert_eq!(subject(&n), "🚨 [CRITICAL] Risk breach");
        let n = Notification::new("filled")
            .title("BUY MNQ")
            .data("action", "BUY");
        assert_eq!(subject(&n), "🟢 BUY MNQ");
    }

    #[test]
    fn subject_is_one_bounded_line() {
        let n = Notification::new("x").title(format!("a\r\nBcc: evil@x.com\t{}", "b".repeat(500)));
        let s = subject(&n);
        assert!(!s.contains(['\r', '\n', '\t']), "{s:?}");
        assert!(s.starts_with("ℹ️ a Bcc: evil@x.com b"));
        assert_eq!(s.chars().count(), SUBJECT_MAX);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn empty_title_falls_back() {
        let n = Notification::new("disk full")
            .title("   ")
            .event_type("system.health")
            .severity(Severity::Warning);
        assert_eq!(subject(&n), "⚠️ [WARNING] system.health");
        let body = render(&n);
        assert!(body.text.starts_with("system.health\n\ndisk full\n"));
        let n = Notification::new("m");
        assert_eq!(subject(&n), "ℹ️ Info");
    }

    #[test]
    fn user_input_is_escaped_in_html() {
        let n = Notification::new("<script>alert(1)</script> & \"q\"")
            .title("<img src=x onerror=alert(1)>")
            .data("<b>key</b>", "<a href='javascript:x'>v</a>");
        let b = render(&n);
        assert!(!b.html.contains("<script>"), "{}", b.html);
        assert!(!b.html.contains("<img"));
        assert!(!b.html.contains("<b>key"));
        assert!(!b.html.contains("<a href"));
        assert!(
            b.html
                .contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot;")
        );
        assert!(
            b.html
                .contains("&lt;a href=&#39;javascript:x&#39;&gt;v&lt;/a&gt;")
        );
        // The plain-text part shows the text exactly as written.
        assert!(b.text.contains("<script>alert(1)</script> & \"q\""));
    }

    #[test]
    fn html_is_self_contained() {
        let n = Notification::new("m")
            .title("t")
            .data("chart", "https://example.com/chart.png");
        let html = render(&n).html.to_ascii_lowercase();
        for remote in ["<img", "<link", "url(", "@import", "<script", "src="] {
            assert!(!html.contains(remote), "{remote} in {html}");
        }
    }

    #[test]
    fn fields_table_numbers_and_colour_bar() {
        let n = Notification::new("Filled")
            .title("BUY MNQ")
            .data("action", "BUY")
            .data("price", 23488.75)
            .data("qty", 1200)
            .data("metadata", serde_json::json!({}))
            .event_type("trade.executed")
            .source("strategy_engine");
        let b = render(&n);
        assert!(b.html.contains(&format!("background:#{GREEN:06x}")));
        assert!(b.html.contains(">price</th><td"));
        assert!(b.html.contains(">23,488.75</td>"));
        assert!(b.text.contains("price: 23,488.75\nqty: 1,200\n"));
        assert!(!b.text.contains("metadata"), "empty objects are skipped");
        let stamp = n.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        assert!(
            b.text
                .contains(&format!("trade.executed · strategy_engine · {stamp}"))
        );
        assert!(b.html.contains("Severity: info · Priority: normal"));
        let n = Notification::new("x").severity(Severity::Critical);
        assert!(render(&n).html.contains(&format!("#{DARK_RED:06x}")));
    }

    #[test]
    fn very_long_input_is_bounded() {
        let mut n = Notification::new("m".repeat(MESSAGE_MAX * 3)).title("t".repeat(5_000));
        for i in 0..(FIELDS_MAX + 7) {
            n = n.data(format!("k{i:03}{}", "n".repeat(500)), "v".repeat(10_000));
        }
        let b = render(&n);
        assert_eq!(b.subject.chars().count(), SUBJECT_MAX);
        assert!(b.text.contains("(+7 more fields)"));
        assert!(b.html.contains("+7 more fields"));
        let longest_value = b
            .text
            .lines()
            .filter_map(|l| l.split_once(": ").map(|(_, v)| v.chars().count()))
            .max()
            .unwrap();
        assert_eq!(longest_value, FIELD_VALUE_MAX);
        let bound = MESSAGE_MAX + FIELDS_MAX * (FIELD_NAME_MAX + FIELD_VALUE_MAX + 4) + 2 * 4096;
        assert!(b.text.chars().count() < bound);
        // Escaping turns one character into at most six (`"` → `&quot;`).
        assert!(b.html.chars().count() < bound * 6 + FIELDS_MAX * 256);
    }
}
