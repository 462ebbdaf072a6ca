//! Telegram `sendMessage` text: HTML (default), MarkdownV2, or plain; escaped so that any input
//! is valid, and split on line boundaries into messages of at most `MAX_TEXT` characters.
//!
//! Every line is complete markup on its own (tags open and close on the line), so a message
//! can be cut between any two lines and each part still parses.

use serde::Deserialize;

use super::{
    Content, Fence, Markup, fields, html_text, pack_lines, style, title, truncate_chars, utf16,
};
use crate::model::Notification;

/// `sendMessage.text`: 1–4096 characters after entity parsing (PROVIDERS.md §1). Telegram
/// counts UTF-16 code units; we count the escaped text, which is never shorter, so the parsed
/// text is always within the limit.
pub const MAX_TEXT: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ParseMode {
    #[default]
    #[serde(alias = "html")]
    Html,
    #[serde(alias = "markdownv2", alias = "markdown", alias = "MarkdownV2")]
    MarkdownV2,
    #[serde(alias = "plain", alias = "text", alias = "none")]
    Plain,
}

impl ParseMode {
    /// The markup templates write for this mode.
    pub fn markup(self) -> Markup {
        match self {
            ParseMode::Html => Markup::Html,
            ParseMode::MarkdownV2 => Markup::MarkdownV2,
            ParseMode::Plain => Markup::Plain,
        }
    }

    /// The `parse_mode` parameter; `None` for plain text.
    pub fn api_name(self) -> Option<&'static str> {
        match self {
            ParseMode::Html => Some("HTML"),
            ParseMode::MarkdownV2 => Some("MarkdownV2"),
            ParseMode::Plain => None,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "html" => Some(ParseMode::Html),
            "markdownv2" | "markdown" | "md" => Some(ParseMode::MarkdownV2),
            "plain" | "text" | "none" => Some(ParseMode::Plain),
            _ => None,
        }
    }
}

/// Escapes text for Telegram HTML: only `<`, `>`, `&` and `"` need entities.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The characters MarkdownV2 reserves outside code (PROVIDERS.md §1), plus `\` itself.
const MDV2_RESERVED: &str = "_*[]()~`>#+-=|{}.!\\";

pub fn escape_markdown_v2(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if MDV2_RESERVED.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Removes characters Telegram cannot carry: NUL and other C0 controls but tab and newline
/// (they would make the request or the entity parser fail).
fn clean(text: &str) -> String {
    text.chars()
        .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
        .collect()
}

/// How a line is dressed.
#[derive(Clone, Copy)]
enum Dress {
    Plain,
    Bold,
    /// `key: value`: the key in italics.
    Field,
}

fn dress(mode: ParseMode, how: Dress, text: &str, key: &str) -> String {
    // An empty entity is not "nothing" in MarkdownV2: `__` opens underline. Dress only what
    // has content.
    let how = match how {
        Dress::Bold if text.is_empty() => Dress::Plain,
        Dress::Field if key.is_empty() => {
            return dress(mode, Dress::Plain, &format!(": {text}"), "");
        }
        other => other,
    };
    match (mode, how) {
        (ParseMode::Plain, Dress::Field) => format!("{key}: {text}"),
        (ParseMode::Plain, _) => text.to_string(),
        (ParseMode::Html, Dress::Plain) => escape_html(text),
        (ParseMode::Html, Dress::Bold) => format!("<b>{}</b>", escape_html(text)),
        (ParseMode::Html, Dress::Field) => {
            format!("<i>{}</i>: {}", escape_html(key), escape_html(text))
        }
        (ParseMode::MarkdownV2, Dress::Plain) => escape_markdown_v2(text),
        (ParseMode::MarkdownV2, Dress::Bold) => format!("*{}*", escape_markdown_v2(text)),
        (ParseMode::MarkdownV2, Dress::Field) => {
            format!(
                "_{}_: {}",
                escape_markdown_v2(key),
                escape_markdown_v2(text)
            )
        }
    }
}

/// Renders a notification, without templates, into one or more message texts, each ≤ `max`.
pub fn render(n: &Notification, mode: ParseMode, max: usize) -> Vec<String> {
    render_content(n, &Content::plain(n, mode.markup()), mode, max)
}

/// Renders a template's content: the title in bold with the emoji, the body as the template
/// wrote it (already escaped for `mode`), then — when the content asks — the data fields and
/// tags; split into messages of at most `max` characters on line boundaries.
pub fn render_content(
    n: &Notification,
    content: &Content,
    mode: ParseMode,
    max: usize,
) -> Vec<String> {
    let s = style(n);
    let mut rendered = dress_split(
        mode,
        Dress::Bold,
        &format!("{} {}", s.emoji, clean(&content.title)),
        "",
        max,
    );
    for line in clean(&content.body).split('\n') {
        if units(line) <= max {
            rendered.push(line.to_string());
        } else {
            // Markup cannot be cut just anywhere: a line too long for a message goes out as
            // its text, cut at spaces.
            rendered.extend(dress_split(
                mode,
                Dress::Plain,
                &to_text(mode, line),
                "",
                max,
            ));
        }
    }
    if content.details {
        let fields = fields(n);
        if !fields.is_empty() {
            rendered.push(String::new());
            for (k, v) in fields {
                // One line per field: a value's own newlines would break the line's markup unit.
                rendered.extend(dress_split(
                    mode,
                    Dress::Field,
                    &clean(&v).replace('\n', " "),
                    &clean(&k),
                    max,
                ));
            }
        }
        if !n.tags.is_empty() {
            let tags: Vec<String> = n.tags.iter().map(|t| format!("#{}", clean(t))).collect();
            rendered.extend(dress_split(mode, Dress::Plain, &tags.join(" "), "", max));
        }
    }
    pack(rendered, max, mode)
}

/// The text a line of markup shows: tags dropped and entities decoded (HTML), escapes and
/// entity markers removed (MarkdownV2).
fn to_text(mode: ParseMode, line: &str) -> String {
    match mode {
        ParseMode::Plain => line.to_string(),
        ParseMode::Html => html_text(line),
        ParseMode::MarkdownV2 => {
            let mut out = String::with_capacity(line.len());
            let mut chars = line.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    '*' | '_' | '~' | '`' | '|' => {}
                    c => out.push(c),
                }
            }
            out
        }
    }
}

/// `sendPhoto`/`sendDocument` `caption`: 0–1024 characters after entity parsing
/// (PROVIDERS.md §1).
pub const MAX_CAPTION: usize = 1024;
/// Shares of the caption: the headline may take this many characters, the file name
/// `CAPTION_FILENAME_MAX`. A character is at most two UTF-16 units, so both lines with their
/// emoji stay under `MAX_CAPTION` units after parsing, whatever the input.
const CAPTION_TITLE_MAX: usize = 380;
const CAPTION_FILENAME_MAX: usize = 120;

/// The caption of an attachment: the notification's headline in bold, then the file's name,
/// so a file arriving on its own still says what it belongs to. Escaped for `mode`.
pub fn caption(n: &Notification, filename: &str, mode: ParseMode) -> String {
    let s = style(n);
    let head = truncate_chars(&clean(&title(n)).replace('\n', " "), CAPTION_TITLE_MAX);
    let name = truncate_chars(&clean(filename).replace('\n', " "), CAPTION_FILENAME_MAX);
    format!(
        "{}\n{}",
        dress(mode, Dress::Bold, &format!("{} {head}", s.emoji), ""),
        dress(mode, Dress::Plain, &format!("📎 {name}"), "")
    )
}

/// Renders a plain text as it would be sent in `mode`, split to the limit: used for the
/// "can't parse entities" resend and by `klaxon send`.
pub fn render_text(text: &str, mode: ParseMode, max: usize) -> Vec<String> {
    let lines = clean(text)
        .split('\n')
        .flat_map(|l| dress_split(mode, Dress::Plain, l, "", max))
        .collect();
    pack(lines, max, ParseMode::Plain)
}

/// What one character costs once escaped for `mode`, without building the text (a long line
/// is measured a character at a time).
fn escaped_units(mode: ParseMode, c: char) -> usize {
    match (mode, c) {
        (ParseMode::Html, '<' | '>') => 4,
        (ParseMode::Html, '&') => 5,
        (ParseMode::Html, '"') => 6,
        (ParseMode::MarkdownV2, c) if MDV2_RESERVED.contains(c) => 2,
        (_, c) => c.len_utf16(),
    }
}

fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Dresses one line; a line too long on its own is cut (preferring spaces) into pieces that
/// each fit once dressed.
fn dress_split(mode: ParseMode, how: Dress, text: &str, key: &str, max: usize) -> Vec<String> {
    let whole = dress(mode, how, text, key);
    if units(&whole) <= max {
        return vec![whole];
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        // Largest end such that the dressed piece fits: grow greedily by chars.
        let mut end = start;
        let mut best = start;
        let mut size = units(&dress(mode, how, "", key));
        while end < chars.len() {
            let c = chars[end];
            size += escaped_units(mode, c);
            if size > max {
                break;
            }
            end += 1;
            if c == ' ' {
                best = end;
            }
        }
        if end == start {
            // A prefix alone is longer than `max`: nothing sensible fits; skip the char.
            start += 1;
            continue;
        }
        let cut = if end < chars.len() && best > start {
            best
        } else {
            end
        };
        let piece: String = chars[start..cut].iter().collect();
        out.push(dress(mode, how, &piece, key));
        start = cut;
    }
    out
}

/// Packs dressed lines into messages of at most `max` units, never cutting a line; a `<pre>`
/// or ```` ``` ```` block that spans two messages is closed and reopened.
fn pack(lines: Vec<String>, max: usize, mode: ParseMode) -> Vec<String> {
    let fence = Fence::of(mode.markup());
    let mut messages = pack_lines(lines, max, fence, utf16, &|line, room| {
        dress_split(mode, Dress::Plain, &to_text(mode, line), "", room)
            .into_iter()
            .next()
            .unwrap_or_default()
    });
    // Telegram rejects a message that is empty after parsing; drop blank parts.
    messages.retain(|m| !m.trim().is_empty());
    if messages.is_empty() {
        // No reserved character in any mode, so it needs no escaping.
        messages.push("no text".to_string());
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_and_bolds_title() {
        let n = Notification::new("P&L < 0 > -5% \"x\"").title("Risk <b>");
        let out = render(&n, ParseMode::Html, MAX_TEXT);
        assert_eq!(out.len(), 1);
        assert!(
            out[0].starts_with("<b>ℹ️ Risk &lt;b&gt;</b>\n"),
            "{}",
            out[0]
        );
        assert!(out[0].contains("P&amp;L &lt; 0 &gt; -5% &quot;x&quot;"));
    }

    #[test]
    fn markdown_v2_escapes_every_reserved_char() {
        assert_eq!(
            escape_markdown_v2("a_b*c[d]e(f)g~h`i>j#k+l-m=n|o{p}q.r!s\\t"),
            "a\\_b\\*c\\[d\\]e\\(f\\)g\\~h\\`i\\>j\\#k\\+l\\-m\\=n\\|o\\{p\\}q\\.r\\!s\\\\t"
        );
    }

    #[test]
    fn long_messages_split_on_lines_within_limit() {
        let body: Vec<String> = (0..400)
            .map(|i| format!("line {i} with <some> & text"))
            .collect();
        let n = Notification::new(body.join("\n"));
        for mode in [ParseMode::Html, ParseMode::MarkdownV2, ParseMode::Plain] {
            let parts = render(&n, mode, MAX_TEXT);
            assert!(parts.len() > 1);
            for p in &parts {
                assert!(units(p) <= MAX_TEXT);
            }
            // Every line of the body is whole in some part.
            assert!(
                parts
                    .iter()
                    .any(|p| p.lines().any(|l| l.starts_with("line 399")))
            );
        }
    }

    #[test]
    fn one_huge_line_is_cut_at_spaces() {
        let n = Notification::new("word ".repeat(3000));
        let parts = render(&n, ParseMode::Html, 100);
        assert!(parts.iter().all(|p| units(p) <= 100));
        assert!(parts[1..].iter().all(|p| p.starts_with("word")));
    }

    #[test]
    fn caption_names_the_notification_and_file_escaped() {
        let n = Notification::new("m").title("Disk <full> & *hot*");
        assert_eq!(
            caption(&n, "a<b>_1.log", ParseMode::Html),
            "<b>ℹ️ Disk &lt;full&gt; &amp; *hot*</b>\n📎 a&lt;b&gt;_1.log"
        );
        assert_eq!(
            caption(&n, "a_1.log", ParseMode::MarkdownV2),
            "*ℹ️ Disk <full\\> & \\*hot\\**\n📎 a\\_1\\.log"
        );
        let huge = Notification::new("m").title("🚀".repeat(5000));
        let c = caption(&huge, &"😀".repeat(5000), ParseMode::Plain);
        assert!(units(&c) <= MAX_CAPTION, "{}", units(&c));
    }

    #[test]
    fn fields_and_tags_render() {
        let n = Notification::new("Filled")
            .title("BUY MNQ")
            .data("action", "BUY")
            .data("price", 23488.75)
            .tag("signals");
        let out = render(&n, ParseMode::Html, MAX_TEXT).join("\n");
        assert!(out.starts_with("<b>🟢 BUY MNQ</b>"));
        assert!(out.contains("<i>price</i>: 23,488.75"));
        assert!(out.ends_with("#signals"));
    }
}
