//! Strict validators for Telegram message markup (PROVIDERS.md §1), used by the fake Telegram
//! to answer `can't parse entities` and by property tests of Klaxon's escapers.
//!
//! Each parser returns the plain text Telegram would show (markup removed, escapes and HTML
//! entities decoded) or an error worded like Telegram's (the text after
//! `Bad Request: can't parse entities: `). Offsets in errors are byte offsets into the input,
//! as Telegram reports them.
//!
//! The parsers follow Telegram's own algorithm (tdlib's `parse_html` / `parse_markdown_v2`)
//! but are deliberately *stricter* where Telegram silently repairs or drops markup, because a
//! silently repaired message is still a formatting bug in the sender:
//! - HTML: a bare `>` or a bare `&` is an error (Telegram keeps them literally, its docs say to
//!   escape them); unknown attributes, unquoted attribute values and forbidden nesting (anything
//!   inside `code`/`pre` except `<pre><code class="language-x">`, a link in a link, a blockquote
//!   in a blockquote) are errors (Telegram drops them).
//! - MarkdownV2: a `\` that escapes nothing (at the end, or before a non-ASCII character) is an
//!   error; `[text]` must be followed by a non-empty `(url)`; an unescaped `` ` `` inside
//!   `pre` is an error.

/// Characters MarkdownV2 reserves outside `code`/`pre`: each must be escaped with `\` unless it
/// opens or closes an entity (PROVIDERS.md §1, "MarkdownV2 escaping").
const MDV2_RESERVED: &[u8] = b"_*[]()~`>#+-=|{}.!";

/// Characters reserved inside `code` and `pre` (besides `\`, which is always an escape).
const MDV2_RESERVED_IN_CODE: &[u8] = b"`";

/// Longest HTML entity body accepted between `&` and `;` (`#x10FFFF` plus some leading zeros);
/// bounds the search for `;` so a bare `&` is reported where it is.
const MAX_HTML_ENTITY_LEN: usize = 10;

/// Prefix of the only URL a custom emoji (`![👍](tg://emoji?id=…)`) may carry.
const CUSTOM_EMOJI_URL_PREFIX: &str = "tg://emoji?id=";

// ---------------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------------

/// The entity an HTML tag stands for; synonyms (`b`/`strong`, …) share one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HtmlKind {
    Bold,
    Italic,
    Underline,
    Strike,
    Spoiler,
    Link,
    Code,
    Pre,
    Blockquote,
}

/// The tags Telegram's HTML mode supports, exactly (PROVIDERS.md §1).
fn html_kind(name: &str) -> Option<HtmlKind> {
    Some(match name {
        "b" | "strong" => HtmlKind::Bold,
        "i" | "em" => HtmlKind::Italic,
        "u" | "ins" => HtmlKind::Underline,
        "s" | "strike" | "del" => HtmlKind::Strike,
        "tg-spoiler" | "span" => HtmlKind::Spoiler,
        "a" => HtmlKind::Link,
        "code" => HtmlKind::Code,
        "pre" => HtmlKind::Pre,
        "blockquote" => HtmlKind::Blockquote,
        _ => return None,
    })
}

/// A start tag still waiting for its end tag.
#[derive(Debug)]
struct OpenTag {
    /// Lower-cased name as written: the end tag must repeat it (`<b>…</strong>` is unmatched).
    name: String,
    kind: HtmlKind,
}

/// Parses Telegram HTML strictly and returns the plain text.
///
/// Allowed tags: `b strong i em u ins s strike del tg-spoiler a code pre blockquote span`
/// (`span` only with `class="tg-spoiler"`, `a` with a non-empty `href`, `code` may carry
/// `class="language-x"` directly inside `pre`, `blockquote` may carry `expandable`). Text may
/// contain only the entities `&lt; &gt; &amp; &quot;` and numeric `&#NN;` / `&#xHH;`.
///
/// # Errors
/// A Telegram-like description of the first problem, e.g.
/// `Unsupported start tag "br" at byte offset 3`.
pub fn parse_html(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut plain = String::with_capacity(text.len());
    let mut open: Vec<OpenTag> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'&' => {
                let (ch, next) = html_entity(text, i)?;
                plain.push(ch);
                i = next;
            }
            b'>' => {
                return Err(format!(
                    "Character '>' at byte offset {i} must be escaped as &gt;"
                ));
            }
            b'<' if bytes.get(i + 1) == Some(&b'/') => i = html_end_tag(text, i, &mut open)?,
            b'<' => i = html_start_tag(text, i, &mut open)?,
            _ => {
                // Copy the run of ordinary text up to the next markup byte (all ASCII, so the
                // slice ends on a character boundary).
                let end = bytes[i..]
                    .iter()
                    .position(|b| matches!(b, b'&' | b'<' | b'>'))
                    .map_or(bytes.len(), |p| i + p);
                plain.push_str(&text[i..end]);
                i = end;
            }
        }
    }
    match open.last() {
        Some(tag) => Err(format!(
            "Can't find end tag corresponding to start tag \"{}\"",
            tag.name
        )),
        None => Ok(plain),
    }
}

/// Decodes the entity starting with the `&` at `at`; returns the character and the offset after
/// the `;`.
fn html_entity(text: &str, at: usize) -> Result<(char, usize), String> {
    let bare = || {
        format!(
            "Character '&' at byte offset {at} does not start a supported entity \
             (&lt; &gt; &amp; &quot; &#NN; &#xHH;) and must be escaped as &amp;"
        )
    };
    let body_start = at + 1;
    let semicolon = text.as_bytes()[body_start..]
        .iter()
        .take(MAX_HTML_ENTITY_LEN + 1)
        .position(|&b| b == b';')
        .ok_or_else(bare)?;
    // `&` and `;` are ASCII, so both ends are character boundaries.
    let body = &text[body_start..body_start + semicolon];
    let ch = match body {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        _ => {
            let code = if let Some(hex) = body.strip_prefix("#x").or(body.strip_prefix("#X")) {
                parse_digits(hex, 16)
            } else if let Some(dec) = body.strip_prefix('#') {
                parse_digits(dec, 10)
            } else {
                return Err(bare());
            };
            code.and_then(char::from_u32)
                .filter(|&c| c != '\0')
                .ok_or_else(|| {
                    format!("Invalid character code in the entity at byte offset {at}")
                })?
        }
    };
    Ok((ch, body_start + semicolon + 1))
}

/// Parses a non-empty string of digits only (`u32::from_str_radix` alone would accept `+`).
fn parse_digits(digits: &str, radix: u32) -> Option<u32> {
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// Decodes the entities of an attribute value `text[start..end]`. Raw `<`/`>` are unambiguous
/// inside quotes and accepted; a bare `&` is not.
fn html_attribute_value(text: &str, start: usize, end: usize) -> Result<String, String> {
    // Bound the entity search to the value so a `;` after the closing quote is never used.
    let bounded = &text[..end];
    let mut value = String::with_capacity(end - start);
    let mut i = start;
    while i < end {
        if bounded.as_bytes()[i] == b'&' {
            let (ch, next) = html_entity(bounded, i)?;
            value.push(ch);
            i = next;
        } else {
            let run_end = bounded.as_bytes()[i..]
                .iter()
                .position(|&b| b == b'&')
                .map_or(end, |p| i + p);
            value.push_str(&bounded[i..run_end]);
            i = run_end;
        }
    }
    Ok(value)
}

/// Parses the start tag at `begin` (a `<` not followed by `/`); returns the offset after `>`.
fn html_start_tag(text: &str, begin: usize, open: &mut Vec<OpenTag>) -> Result<usize, String> {
    let bytes = text.as_bytes();
    let unclosed = || format!("Unclosed start tag at byte offset {begin}");

    // Like Telegram, the tag name runs to the first space or `>`: so `a < b` reports the
    // unsupported tag "" rather than being taken as text.
    let mut i = begin + 1;
    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
        i += 1;
    }
    if i >= bytes.len() {
        return Err(unclosed());
    }
    let name = text[begin + 1..i].to_ascii_lowercase();
    let kind = html_kind(&name)
        .ok_or_else(|| format!("Unsupported start tag \"{name}\" at byte offset {begin}"))?;

    let mut attributes: Vec<(String, Option<String>)> = Vec::new();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        match bytes.get(i) {
            None => return Err(unclosed()),
            Some(b'>') => {
                i += 1;
                break;
            }
            Some(_) => {}
        }
        let attr_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() && !matches!(bytes[i], b'=' | b'>')
        {
            i += 1;
        }
        if i == attr_start {
            return Err(format!(
                "Empty attribute name in the tag \"{name}\" at byte offset {begin}"
            ));
        }
        let attr = text[attr_start..i].to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = if bytes.get(i) == Some(&b'=') {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let quote = match bytes.get(i) {
                Some(&q @ (b'"' | b'\'')) => q,
                Some(_) => {
                    return Err(format!(
                        "Value of the attribute \"{attr}\" in the tag \"{name}\" at byte offset \
                         {begin} must be quoted"
                    ));
                }
                None => return Err(unclosed()),
            };
            let value_start = i + 1;
            let value_end = bytes[value_start..]
                .iter()
                .position(|&b| b == quote)
                .map(|p| value_start + p)
                .ok_or_else(unclosed)?;
            i = value_end + 1;
            Some(html_attribute_value(text, value_start, value_end)?)
        } else {
            None
        };
        attributes.push((attr, value));
    }

    check_html_nesting(&name, kind, open, begin)?;
    check_html_attributes(&name, kind, &attributes, open, begin)?;
    open.push(OpenTag { name, kind });
    Ok(i)
}

/// Telegram's nesting rules (Bot API "Formatting options"): `pre`/`code` contain no other
/// entity (except the language `code` directly inside `pre`), links and blockquotes do not
/// nest in themselves. Telegram drops such inner entities; we reject them.
fn check_html_nesting(
    name: &str,
    kind: HtmlKind,
    open: &[OpenTag],
    begin: usize,
) -> Result<(), String> {
    let nested_in = |outer: &OpenTag| {
        Err(format!(
            "Tag \"{name}\" can't be nested inside \"{}\" at byte offset {begin}",
            outer.name
        ))
    };
    if let Some(code) = open.iter().find(|t| t.kind == HtmlKind::Code) {
        return nested_in(code);
    }
    if let Some(pre) = open.iter().find(|t| t.kind == HtmlKind::Pre) {
        let language_block =
            kind == HtmlKind::Code && open.last().is_some_and(|t| t.kind == HtmlKind::Pre);
        if !language_block {
            return nested_in(pre);
        }
    }
    if matches!(kind, HtmlKind::Link | HtmlKind::Blockquote)
        && let Some(same) = open.iter().find(|t| t.kind == kind)
    {
        return nested_in(same);
    }
    Ok(())
}

/// Checks the attributes a tag may (or must) carry.
fn check_html_attributes(
    name: &str,
    kind: HtmlKind,
    attributes: &[(String, Option<String>)],
    open: &[OpenTag],
    begin: usize,
) -> Result<(), String> {
    let find = |wanted: &str| {
        attributes
            .iter()
            .find(|(a, _)| a == wanted)
            .map(|(_, v)| v.as_deref())
    };
    // Required attributes first, with Telegram's wording where it has one.
    match (kind, name) {
        (HtmlKind::Link, _) => match find("href") {
            Some(Some(href)) if !href.trim().is_empty() => {}
            Some(_) => {
                return Err(format!("Empty URL in the tag \"a\" at byte offset {begin}"));
            }
            None => {
                return Err(format!(
                    "Tag \"a\" must have attribute \"href\" at byte offset {begin}"
                ));
            }
        },
        (HtmlKind::Spoiler, "span") if find("class") != Some(Some("tg-spoiler")) => {
            return Err(format!(
                "Tag \"span\" must have class \"tg-spoiler\" at byte offset {begin}"
            ));
        }
        _ => {}
    }
    for (attr, value) in attributes {
        let allowed = match (kind, attr.as_str()) {
            (HtmlKind::Link, "href") => true,
            (HtmlKind::Spoiler, "class") => name == "span",
            (HtmlKind::Blockquote, "expandable") => true,
            (HtmlKind::Code, "class") => {
                let in_pre = open.last().is_some_and(|t| t.kind == HtmlKind::Pre);
                let language = value
                    .as_deref()
                    .and_then(|v| v.strip_prefix("language-"))
                    .is_some_and(|lang| !lang.is_empty());
                if !(in_pre && language) {
                    return Err(format!(
                        "Attribute \"class\" of the tag \"code\" at byte offset {begin} must be \
                         \"language-<name>\" and is only allowed directly inside \"pre\""
                    ));
                }
                true
            }
            _ => false,
        };
        if !allowed {
            return Err(format!(
                "Unsupported attribute \"{attr}\" in the tag \"{name}\" at byte offset {begin}"
            ));
        }
    }
    Ok(())
}

/// Parses the end tag at `begin` (`</`); returns the offset after `>`.
fn html_end_tag(text: &str, begin: usize, open: &mut Vec<OpenTag>) -> Result<usize, String> {
    let close = text.as_bytes()[begin + 2..]
        .iter()
        .position(|&b| b == b'>')
        .map(|p| begin + 2 + p)
        .ok_or_else(|| format!("Unclosed end tag at byte offset {begin}"))?;
    let name = text[begin + 2..close].trim_end().to_ascii_lowercase();
    match open.last() {
        None => Err(format!("Unexpected end tag at byte offset {begin}")),
        Some(top) if top.name != name => Err(format!(
            "Unmatched end tag at byte offset {begin}, expected \"</{}>\", found \"</{name}>\"",
            top.name
        )),
        Some(_) => {
            open.pop();
            Ok(close + 1)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MarkdownV2
// ---------------------------------------------------------------------------------------------

/// A MarkdownV2 entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MdKind {
    Bold,
    Italic,
    Underline,
    Strike,
    Spoiler,
    Code,
    Pre,
    Link,
    CustomEmoji,
}

/// An entity whose closing marker has not been seen yet.
#[derive(Debug)]
struct OpenEntity {
    kind: MdKind,
    /// Byte offset of the opening marker, reported when it is never closed.
    offset: usize,
}

fn reserved_error(c: char) -> String {
    format!("Character '{c}' is reserved and must be escaped with the preceding '\\'")
}

/// Whether `b` can follow a `\` as an escaped character (Telegram: "any character with code
/// between 1 and 126").
fn is_escapable(b: u8) -> bool {
    (1..=126).contains(&b)
}

/// Parses Telegram MarkdownV2 strictly and returns the plain text.
///
/// Entities: `*bold*`, `_italic_`, `__underline__`, `~strike~`, `||spoiler||`, `` `code` ``,
/// ```` ```lang\npre``` ````, `[text](url)`, `![emoji](tg://emoji?id=…)`, and `>` blockquotes
/// at line starts (`**>` … `||` for expandable ones). Outside code every character of
/// ``_*[]()~`>#+-=|{}.!`` must be escaped with `\` unless it opens or closes an entity.
///
/// # Errors
/// A Telegram-like description of the first problem, e.g.
/// `Character '.' is reserved and must be escaped with the preceding '\'`.
pub fn parse_markdown_v2(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    // Telegram's parser reads a NUL past the end; so do we, instead of bounds checks everywhere.
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let mut plain = String::with_capacity(text.len());
    let mut open: Vec<OpenEntity> = Vec::new();
    // Inside an expandable blockquote (`**>`), a `||` at a line end closes it.
    let mut expandable_quote = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let top = open.last().map(|e| e.kind);
        let in_code = matches!(top, Some(MdKind::Code | MdKind::Pre));

        if !in_code && (i == 0 || bytes[i - 1] == b'\n') {
            if c == b'>' {
                // Blockquote line marker: not part of the text.
                i += 1;
                continue;
            }
            if c == b'*' && at(i + 1) == b'*' && at(i + 2) == b'>' {
                expandable_quote = true;
                i += 3;
                continue;
            }
            expandable_quote = false;
        }
        if expandable_quote
            && !in_code
            && top != Some(MdKind::Spoiler)
            && c == b'|'
            && at(i + 1) == b'|'
            && matches!(at(i + 2), b'\n' | 0)
        {
            expandable_quote = false;
            i += 2;
            continue;
        }

        if c == b'\\' {
            let next = at(i + 1);
            if is_escapable(next) {
                plain.push(char::from(next));
                i += 2;
                continue;
            }
            // Telegram would keep this `\` literally, but then it escapes nothing: the sender
            // forgot to escape the backslash itself.
            return Err(reserved_error('\\'));
        }

        let reserved = if in_code {
            MDV2_RESERVED_IN_CODE
        } else {
            MDV2_RESERVED
        };
        if !reserved.contains(&c) {
            // `i` is always on a character boundary: every step skips ASCII bytes or whole
            // characters.
            let Some(ch) = text[i..].chars().next() else {
                break;
            };
            plain.push(ch);
            i += ch.len_utf8();
            continue;
        }

        let closes = match top {
            Some(MdKind::Bold) => c == b'*',
            Some(MdKind::Italic) => c == b'_' && at(i + 1) != b'_',
            Some(MdKind::Underline) => c == b'_' && at(i + 1) == b'_',
            Some(MdKind::Strike) => c == b'~',
            Some(MdKind::Spoiler) => c == b'|' && at(i + 1) == b'|',
            Some(MdKind::Code) => c == b'`',
            Some(MdKind::Pre) => c == b'`' && at(i + 1) == b'`' && at(i + 2) == b'`',
            Some(MdKind::Link | MdKind::CustomEmoji) => c == b']',
            None => false,
        };
        let closed = if closes { open.pop() } else { None };
        if let Some(entity) = closed {
            i = match entity.kind {
                MdKind::Underline | MdKind::Spoiler => i + 2,
                MdKind::Pre => i + 3,
                MdKind::Link | MdKind::CustomEmoji => md_link_url(text, i, &entity)?,
                _ => i + 1,
            };
            continue;
        }

        if in_code {
            // The only reserved byte in code is a backtick that does not close it.
            return Err(reserved_error(char::from(c)));
        }
        let offset = i;
        let kind = match c {
            b'*' => {
                i += 1;
                MdKind::Bold
            }
            // `__` is greedily underline (Telegram's documented tie-break).
            b'_' if at(i + 1) == b'_' => {
                i += 2;
                MdKind::Underline
            }
            b'_' => {
                i += 1;
                MdKind::Italic
            }
            b'~' => {
                i += 1;
                MdKind::Strike
            }
            b'|' if at(i + 1) == b'|' => {
                i += 2;
                MdKind::Spoiler
            }
            b'[' => {
                i += 1;
                MdKind::Link
            }
            b'!' if at(i + 1) == b'[' => {
                i += 2;
                MdKind::CustomEmoji
            }
            b'`' if at(i + 1) == b'`' && at(i + 2) == b'`' => {
                i = md_pre_start(bytes, i + 3);
                MdKind::Pre
            }
            b'`' => {
                i += 1;
                MdKind::Code
            }
            _ => return Err(reserved_error(char::from(c))),
        };
        open.push(OpenEntity { kind, offset });
    }
    match open.last() {
        Some(entity) => Err(format!(
            "Can't find end of the entity starting at byte offset {}",
            entity.offset
        )),
        None => Ok(plain),
    }
}

/// After an opening ```` ``` ```` at `i`: skips the optional language (only when followed by
/// whitespace, as Telegram does) and one line break. Returns where the code text starts.
fn md_pre_start(bytes: &[u8], mut i: usize) -> usize {
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let mut language_end = i;
    while language_end < bytes.len()
        && !bytes[language_end].is_ascii_whitespace()
        && bytes[language_end] != b'`'
    {
        language_end += 1;
    }
    if language_end != i && language_end < bytes.len() && bytes[language_end] != b'`' {
        i = language_end;
    }
    match (at(i), at(i + 1)) {
        (b'\n', b'\r') | (b'\r', b'\n') => i + 2,
        (b'\n' | b'\r', _) => i + 1,
        _ => i,
    }
}

/// Parses the `(url)` after the `]` at `close` of a link; returns the offset after `)`.
fn md_link_url(text: &str, close: usize, entity: &OpenEntity) -> Result<usize, String> {
    let bytes = text.as_bytes();
    if bytes.get(close + 1) != Some(&b'(') {
        // Telegram would turn `[text]` into a link to "text" or drop the brackets; either way
        // the sender forgot to escape them.
        return Err(format!(
            "Link text starting at byte offset {} must be followed by \"(url)\"",
            entity.offset
        ));
    }
    let url_start = close + 2;
    let mut url = String::new();
    let mut i = url_start;
    loop {
        match bytes.get(i) {
            None => {
                return Err(format!(
                    "Can't find end of a URL at byte offset {url_start}"
                ));
            }
            Some(b')') => break,
            Some(b'\\') => {
                let next = bytes.get(i + 1).copied().unwrap_or(0);
                if !is_escapable(next) {
                    return Err(reserved_error('\\'));
                }
                url.push(char::from(next));
                i += 2;
            }
            Some(_) => {
                let Some(ch) = text[i..].chars().next() else {
                    break;
                };
                url.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    if url.trim().is_empty() {
        return Err(format!("Empty URL at byte offset {url_start}"));
    }
    if entity.kind == MdKind::CustomEmoji && !url.starts_with(CUSTOM_EMOJI_URL_PREFIX) {
        return Err(format!(
            "Custom emoji entity at byte offset {} must have a URL starting with \
             \"{CUSTOM_EMOJI_URL_PREFIX}\"",
            entity.offset
        ));
    }
    Ok(i + 1)
}

// ---------------------------------------------------------------------------------------------
// Legacy Markdown
// ---------------------------------------------------------------------------------------------

/// Parses Telegram's legacy `Markdown` mode loosely, as Telegram does: `*bold*`, `_italic_`,
/// `` `code` ``, ```` ```pre``` ```` and `[text](url)`, no nesting, only `_ * ` [` escapable.
///
/// # Errors
/// `Can't find end of the entity starting at byte offset N` for an unclosed entity.
pub fn parse_markdown(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let mut plain = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\\' && matches!(at(i + 1), b'_' | b'*' | b'`' | b'[') {
            plain.push(char::from(at(i + 1)));
            i += 2;
            continue;
        }
        if !matches!(c, b'_' | b'*' | b'`' | b'[') {
            let Some(ch) = text[i..].chars().next() else {
                break;
            };
            plain.push(ch);
            i += ch.len_utf8();
            continue;
        }
        let begin = i;
        let end_marker = if c == b'[' { b']' } else { c };
        let is_pre = c == b'`' && at(i + 1) == b'`' && at(i + 2) == b'`';
        i = if is_pre {
            md_pre_start(bytes, i + 3)
        } else {
            i + 1
        };
        loop {
            if i >= bytes.len() {
                return Err(format!(
                    "Can't find end of the entity starting at byte offset {begin}"
                ));
            }
            if bytes[i] == end_marker && (!is_pre || (at(i + 1) == b'`' && at(i + 2) == b'`')) {
                break;
            }
            let Some(ch) = text[i..].chars().next() else {
                break;
            };
            plain.push(ch);
            i += ch.len_utf8();
        }
        i += if is_pre { 3 } else { 1 };
        if c == b'[' && at(i) == b'(' {
            let close = bytes[i..]
                .iter()
                .position(|&b| b == b')')
                .ok_or_else(|| format!("Can't find end of a URL at byte offset {}", i + 1))?;
            i += close + 1;
        }
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html_err(text: &str) -> String {
        parse_html(text).expect_err(text)
    }

    fn md_err(text: &str) -> String {
        parse_markdown_v2(text).expect_err(text)
    }

    #[test]
    fn html_accepts_every_supported_tag() {
        let cases = [
            ("<b>b</b><strong>s</strong>", "bs"),
            ("<i>i</i><em>e</em><u>u</u><ins>n</ins>", "ieun"),
            ("<s>s</s><strike>t</strike><del>d</del>", "std"),
            (
                "<tg-spoiler>x</tg-spoiler><span class=\"tg-spoiler\">y</span>",
                "xy",
            ),
            ("<a href=\"https://e.x/?a=1&amp;b=2\">link</a>", "link"),
            ("<code>let x = 1;</code>", "let x = 1;"),
            (
                "<pre><code class=\"language-rust\">fn main() {}</code></pre>",
                "fn main() {}",
            ),
            ("<pre>raw</pre>", "raw"),
            (
                "<blockquote>q</blockquote><blockquote expandable>e</blockquote>",
                "qe",
            ),
            (
                "<b>bold <i>italic <u>under</u></i></b>",
                "bold italic under",
            ),
            ("<B>upper</B>", "upper"),
            ("<a href='single'>s</a>", "s"),
            ("<b><code>bold code</code></b>", "bold code"),
            ("<a href=\"x\"><b>bold link</b></a>", "bold link"),
        ];
        for (input, plain) in cases {
            assert_eq!(parse_html(input).as_deref(), Ok(plain), "{input}");
        }
    }

    #[test]
    fn html_decodes_entities() {
        assert_eq!(
            parse_html("&lt;x&gt; &amp; &quot;q&quot; &#65;&#x42;&#X43; é 🚨").as_deref(),
            Ok("<x> & \"q\" ABC é 🚨")
        );
    }

    #[test]
    fn html_rejects_bare_markup_characters() {
        assert!(html_err("a < b").starts_with("Unsupported start tag \"\" at byte offset 2"));
        assert!(html_err("a > b").contains("'>' at byte offset 2"));
        assert!(html_err("fish & chips").contains("'&' at byte offset 5"));
        assert!(html_err("&nbsp;").contains("'&' at byte offset 0"));
        assert!(html_err("&amp").contains("'&'"));
        assert!(html_err("&#0;").starts_with("Invalid character code"));
        assert!(html_err("&#xZZ;").starts_with("Invalid character code"));
        assert!(html_err("&#+5;").starts_with("Invalid character code"));
    }

    #[test]
    fn html_rejects_unknown_or_malformed_tags() {
        assert_eq!(
            html_err("x<br>"),
            "Unsupported start tag \"br\" at byte offset 1"
        );
        assert_eq!(html_err("<b"), "Unclosed start tag at byte offset 0");
        assert_eq!(html_err("<b>x</b"), "Unclosed end tag at byte offset 4");
        assert!(html_err("<b class=\"x\">y</b>").starts_with("Unsupported attribute \"class\""));
        assert!(html_err("<a href=x>y</a>").contains("must be quoted"));
        assert!(html_err("<a>y</a>").contains("must have attribute \"href\""));
        assert!(html_err("<a href=\"\">y</a>").starts_with("Empty URL"));
        assert!(html_err("<span>y</span>").contains("must have class \"tg-spoiler\""));
        assert!(html_err("<span class=\"x\">y</span>").contains("tg-spoiler"));
        assert!(html_err("<code class=\"language-x\">y</code>").contains("inside \"pre\""));
        assert!(html_err("<b =\"x\">y</b>").starts_with("Empty attribute name"));
    }

    #[test]
    fn html_rejects_bad_nesting_and_closing() {
        assert_eq!(
            html_err("<b>x"),
            "Can't find end tag corresponding to start tag \"b\""
        );
        assert_eq!(
            html_err("<b>x</i>"),
            "Unmatched end tag at byte offset 4, expected \"</b>\", found \"</i>\""
        );
        assert_eq!(
            html_err("<b>x</strong>"),
            "Unmatched end tag at byte offset 4, expected \"</b>\", found \"</strong>\""
        );
        assert_eq!(html_err("x</b>"), "Unexpected end tag at byte offset 1");
        assert!(html_err("<b><i>x</b></i>").starts_with("Unmatched end tag"));
        assert!(html_err("<code><b>x</b></code>").contains("can't be nested inside \"code\""));
        assert!(html_err("<pre><i>x</i></pre>").contains("can't be nested inside \"pre\""));
        assert!(html_err("<a href=\"1\"><a href=\"2\">x</a></a>").contains("inside \"a\""));
        assert!(
            html_err("<blockquote><blockquote>x</blockquote></blockquote>")
                .contains("inside \"blockquote\"")
        );
    }

    #[test]
    fn markdown_v2_accepts_every_entity() {
        let cases = [
            (
                "*bold* _italic_ __under__ ~strike~ ||spoiler||",
                "bold italic under strike spoiler",
            ),
            ("`code with . and *`", "code with . and *"),
            ("`tick \\` and \\\\`", "tick ` and \\"),
            ("[link](https://e.x/a\\)b?c=1.2)", "link"),
            ("![👍](tg://emoji?id=5368324170671202286)", "👍"),
            ("```rust\nfn main() {}\n```", "fn main() {}\n"),
            ("```\nplain pre\n```", "plain pre\n"),
            ("```inline```", "inline"),
            (
                "*bold _italic bold ~strike~ __under__ ||spoil||_*",
                "bold italic bold strike under spoil",
            ),
            (">quote\n>more\nafter", "quote\nmore\nafter"),
            ("**>expandable\n>quote||", "expandable\nquote"),
            ("a\\.b\\-c\\!d\\#e\\(f\\)\\\\", "a.b-c!d#e(f)\\"),
            ("Тревога 🚨 ok", "Тревога 🚨 ok"),
            ("**", ""),
        ];
        for (input, plain) in cases {
            assert_eq!(parse_markdown_v2(input).as_deref(), Ok(plain), "{input}");
        }
    }

    #[test]
    fn markdown_v2_rejects_unescaped_reserved_characters() {
        for c in "_*[]()~`>#+-=|{}.!".chars() {
            let text = format!("a {c}");
            // Characters that open an entity fail as unclosed entities instead.
            let err = md_err(&text);
            assert!(
                err == reserved_error(c) || err.starts_with("Can't find end of the entity"),
                "{text}: {err}"
            );
        }
        assert_eq!(
            md_err("Disk at 95.5%"),
            "Character '.' is reserved and must be escaped with the preceding '\\'"
        );
        assert_eq!(md_err("x > y"), reserved_error('>'));
        assert_eq!(md_err("a|b"), reserved_error('|'));
        assert_eq!(md_err("end\\"), reserved_error('\\'));
        assert_eq!(md_err("\\é"), reserved_error('\\'));
        assert_eq!(md_err("```\na ` b```"), reserved_error('`'));
    }

    #[test]
    fn markdown_v2_rejects_unclosed_entities() {
        assert_eq!(
            md_err("*bold"),
            "Can't find end of the entity starting at byte offset 0"
        );
        assert_eq!(
            md_err("`a` `b"),
            "Can't find end of the entity starting at byte offset 4"
        );
        assert_eq!(
            md_err("x __u_"),
            "Can't find end of the entity starting at byte offset 5"
        );
        assert_eq!(md_err("||s|"), reserved_error('|'));
        assert_eq!(
            md_err("```pre"),
            "Can't find end of the entity starting at byte offset 0"
        );
        assert!(md_err("[x]").contains("must be followed by \"(url)\""));
        assert!(md_err("[x](").starts_with("Can't find end of a URL"));
        assert!(md_err("[x]()").starts_with("Empty URL"));
        assert!(md_err("![x](https://e.x)").contains("tg://emoji?id="));
    }

    #[test]
    fn legacy_markdown_is_loose_but_needs_closed_entities() {
        assert_eq!(
            parse_markdown("*bold* _it_ `c` [l](http://x) 1.5 - ok!").as_deref(),
            Ok("bold it c l 1.5 - ok!")
        );
        assert_eq!(parse_markdown("```\npre *x*```").as_deref(), Ok("pre *x*"));
        assert_eq!(parse_markdown("a\\_b").as_deref(), Ok("a_b"));
        assert_eq!(
            parse_markdown("snake_case").expect_err("unclosed"),
            "Can't find end of the entity starting at byte offset 5"
        );
    }
}
