//! Twilio SMS and WhatsApp bodies (PROVIDERS.md §4).
//!
//! An SMS is paid per segment, and one character outside the GSM-7 alphabet turns the whole
//! message into UCS-2, cutting a segment from 160 to 70 characters. So the SMS line is compact
//! and carries the style emoji only when the text is already UCS-2 (where the emoji costs one
//! or two units, not half the message); otherwise a GSM-7 word (`[CRITICAL]`) says the same.
//! Bodies are cut to the channel's segment budget with [`segments`], which counts exactly as
//! Twilio's `num_segments` does. WhatsApp has no segments: up to 1600 characters, `*bold*`.

use super::{Content, Markup, fields, style, truncate_chars};
use crate::model::{Notification, Severity};

/// Segment sizes (PROVIDERS.md §4): a single GSM-7 message holds 160 septets, each part of a
/// multipart one 153 (7 go to the concatenation header); UCS-2 70 and 67 UTF-16 units.
pub const GSM_SINGLE: usize = 160;
pub const GSM_PART: usize = 153;
pub const UCS2_SINGLE: usize = 70;
pub const UCS2_PART: usize = 67;
/// PROVIDERS.md §4: `Body` ≤ 1600 characters (Twilio error 21617 above). Counted here in UTF-16
/// units, the stricter reading, so an emoji-heavy body is never refused.
pub const BODY_MAX: usize = 1600;

/// The GSM 03.38 basic character set (one septet each); ESC (0x1B) is left out, it only
/// introduces the extension table.
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table: ESC + the character, two septets that must stay in one segment.
const GSM_EXTENSION: &str = "\u{c}^{}\\[~]|€";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// What Twilio will bill for a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    pub encoding: Encoding,
    /// Twilio's `num_segments`: 1 for an empty body.
    pub count: usize,
    /// Septets (GSM-7, extension characters count 2) or UTF-16 code units (UCS-2).
    pub units: usize,
}

/// Septets for `c` in GSM-7, or `None` when it is outside the alphabet.
fn gsm_septets(c: char) -> Option<usize> {
    if GSM_BASIC.contains(c) {
        Some(1)
    } else if GSM_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

pub fn encoding(text: &str) -> Encoding {
    if text.chars().all(|c| gsm_septets(c).is_some()) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

/// Counts segments as Twilio does: a multipart message is packed part by part, and an escape
/// pair (GSM-7) or a surrogate pair (UCS-2) that would straddle a boundary moves whole to the
/// next part.
pub fn segments(text: &str) -> Segments {
    let enc = encoding(text);
    let (single, part) = match enc {
        Encoding::Gsm7 => (GSM_SINGLE, GSM_PART),
        Encoding::Ucs2 => (UCS2_SINGLE, UCS2_PART),
    };
    let width = |c: char| match enc {
        Encoding::Gsm7 => gsm_septets(c).unwrap_or(1),
        Encoding::Ucs2 => c.len_utf16(),
    };
    let units: usize = text.chars().map(width).sum();
    if units <= single {
        return Segments {
            encoding: enc,
            count: 1,
            units,
        };
    }
    let (mut count, mut used) = (1, 0);
    for w in text.chars().map(width) {
        if used + w > part {
            count += 1;
            used = 0;
        }
        used += w;
    }
    Segments {
        encoding: enc,
        count,
        units,
    }
}

/// Cuts `text` so it fits `max` segments, marking the cut with `...` (GSM-7: `…` is not in the
/// alphabet and would switch the whole message to UCS-2) or `…` (UCS-2). Cuts fall between
/// characters, so no escape or surrogate pair is split.
pub fn fit_segments(text: &str, max: usize) -> String {
    let max = max.max(1);
    if segments(text).count <= max {
        return text.to_string();
    }
    // Every character takes at least one unit: anything past this many cannot fit.
    let chars: Vec<char> = text.chars().take(max * GSM_SINGLE + 1).collect();
    let candidate = |n: usize| {
        let mut s: String = chars[..n].iter().collect();
        s.truncate(s.trim_end().len());
        let mark = if encoding(&s) == Encoding::Gsm7 {
            "..."
        } else {
            "…"
        };
        s.push_str(mark);
        s
    };
    // Fitting is monotone in the prefix length (a shorter prefix never needs more segments,
    // and dropping a UCS-2 character only widens the segments), so bisect.
    let (mut lo, mut hi) = (0, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if segments(&candidate(mid)).count <= max {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    candidate(lo)
}

/// Data keys worth a place in a short message, in the order a trader reads them.
const KEY_FIELDS: &[&str] = &[
    "symbol", "ticker", "action", "side", "price", "qty", "quantity", "size", "sl", "tp",
];

/// The compact SMS line: `[WARNING] Title: BTCUSDT BUY price 23,488.75 - message`, within
/// `max_segments`.
pub fn render_sms(n: &Notification, max_segments: usize) -> String {
    render_sms_content(n, &Content::plain(n, Markup::Plain), max_segments)
}

/// The SMS line for a template's content: title, the key fields when the content asks for
/// them, the body, all on one line.
pub fn render_sms_content(n: &Notification, content: &Content, max_segments: usize) -> String {
    let mut all = if content.details {
        fields(n)
    } else {
        Vec::new()
    };
    all.sort_by_key(|(k, _)| {
        KEY_FIELDS
            .iter()
            .position(|f| f.eq_ignore_ascii_case(k))
            .unwrap_or(KEY_FIELDS.len())
    });
    let numbers: Vec<String> = all
        .into_iter()
        .map(|(k, v)| {
            // Symbol and action read by themselves; other values need their name.
            if ["symbol", "ticker", "action", "side"].contains(&k.to_ascii_lowercase().as_str()) {
                v
            } else {
                format!("{k} {v}")
            }
        })
        .collect();
    let mut line = content.title.clone();
    if !numbers.is_empty() {
        line.push_str(": ");
        line.push_str(&numbers.join(" "));
    }
    if !content.body.trim().is_empty() {
        line.push_str(" - ");
        line.push_str(&content.body);
    }
    // One line: whitespace runs cost septets and a phone shows them as nothing useful.
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let prefixed = if encoding(&line) == Encoding::Ucs2 {
        format!("{} {line}", style(n).emoji)
    } else {
        match n.severity {
            Severity::Warning | Severity::Error | Severity::Critical => {
                format!("[{}] {line}", n.severity.as_str().to_ascii_uppercase())
            }
            Severity::Debug | Severity::Info => line,
        }
    };
    fit_segments(&prefixed, max_segments)
}

/// The WhatsApp body: a bold headline, the message, then one line per field.
pub fn render_whatsapp(n: &Notification) -> String {
    render_whatsapp_content(n, &Content::plain(n, Markup::Plain))
}

pub fn render_whatsapp_content(n: &Notification, content: &Content) -> String {
    // WhatsApp has no escape for `*`: inside the bold headline one would end the bold early,
    // so it becomes the look-alike `∗` there; elsewhere text goes as written.
    let head = content.title.replace('*', "∗");
    let mut out = format!("*{} {}*", style(n).emoji, head.trim());
    if !content.body.trim().is_empty() {
        out.push('\n');
        out.push_str(&content.body);
    }
    if content.details {
        for (k, v) in fields(n) {
            out.push_str(&format!("\n{k}: {v}"));
        }
    }
    fit_utf16(&out, BODY_MAX)
}

/// Cuts to `max` UTF-16 units with `…`, between characters.
fn fit_utf16(text: &str, max: usize) -> String {
    if text.encode_utf16().count() <= max {
        return text.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        if used + c.len_utf16() > max - 1 {
            break;
        }
        used += c.len_utf16();
        out.push(c);
    }
    out.push('…');
    out
}

/// Both forms, keeping Twilio's code out of the choice.
pub fn render(n: &Notification, whatsapp: bool, max_segments: usize) -> String {
    render_content(n, &Content::plain(n, Markup::Plain), whatsapp, max_segments)
}

pub fn render_content(
    n: &Notification,
    content: &Content,
    whatsapp: bool,
    max_segments: usize,
) -> String {
    if whatsapp {
        render_whatsapp_content(n, content)
    } else {
        truncate_chars(&render_sms_content(n, content, max_segments), BODY_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_twilio() {
        let s = segments(&"a".repeat(160));
        assert_eq!((s.encoding, s.count, s.units), (Encoding::Gsm7, 1, 160));
        assert_eq!(segments(&"a".repeat(161)).count, 2);
        assert_eq!(segments(&"a".repeat(306)).count, 2);
        assert_eq!(segments(&"a".repeat(307)).count, 3);
        // Extension characters are two septets: 80 `€` fill one segment exactly.
        assert_eq!(segments(&"€".repeat(80)).units, 160);
        assert_eq!(segments(&"€".repeat(80)).count, 1);
        // 152 septets then an escape pair: the pair moves whole to part 2, so 306 septets
        // (two full parts by arithmetic) need three.
        let s = segments(&format!("{}{}{}", "a".repeat(152), "[", "a".repeat(152)));
        assert_eq!((s.units, s.count), (306, 3));
        // One emoji makes it UCS-2 and counts two units.
        let s = segments(&format!("{}🚀", "a".repeat(68)));
        assert_eq!((s.encoding, s.units, s.count), (Encoding::Ucs2, 70, 1));
        let s = segments(&format!("{}🚀", "a".repeat(66)));
        assert_eq!((s.units, s.count), (68, 1));
        // 66 units then a surrogate pair: the pair moves to part 2.
        let s = segments(&format!("{}🚀ж", "ж".repeat(66)));
        assert_eq!((s.units, s.count), (69, 1));
        let s = segments(&format!("{}🚀{}", "ж".repeat(66), "ж".repeat(5)));
        assert_eq!((s.units, s.count), (73, 2));
        assert_eq!(segments("").count, 1);
    }

    #[test]
    fn cut_to_the_segment_budget() {
        let long = "word ".repeat(200);
        for max in 1..=4 {
            let out = fit_segments(&long, max);
            assert_eq!(segments(&out).count, max, "{out}");
            assert!(out.ends_with("..."));
            assert_eq!(encoding(&out), Encoding::Gsm7);
        }
        let emoji = "🚀".repeat(200);
        let out = fit_segments(&emoji, 2);
        assert_eq!(segments(&out).count, 2);
        assert!(out.ends_with('…'));
        assert_eq!(
            out.encode_utf16().count() % 2,
            1,
            "no half surrogate: {out}"
        );
        let esc = "{".repeat(500);
        let out = fit_segments(&esc, 1);
        assert_eq!(out, format!("{}...", "{".repeat(78)));
    }

    #[test]
    fn sms_line_stays_gsm_when_it_can() {
        let n = Notification::new("Filled\n\n at market")
            .title("Signal")
            .severity(Severity::Warning)
            .data("price", 23488.75)
            .data("symbol", "MNQ")
            .data("action", "BUY");
        let out = render_sms(&n, 2);
        assert_eq!(
            out,
            "[WARNING] Signal: MNQ BUY price 23,488.75 - Filled at market"
        );
        assert_eq!(encoding(&out), Encoding::Gsm7);
        // Already UCS-2: the emoji is nearly free, so it goes in.
        let n = Notification::new("Цена выросла").data("action", "BUY");
        let out = render_sms(&n, 2);
        assert!(out.starts_with("🟢 Info: BUY - Цена"), "{out}");
    }

    #[test]
    fn whatsapp_bold_title_and_limit() {
        let n = Notification::new("x".repeat(3000)).title("a*b");
        let out = render_whatsapp(&n);
        assert!(out.starts_with("*ℹ️ a∗b*\nxxx"));
        assert_eq!(out.encode_utf16().count(), BODY_MAX);
        assert!(out.ends_with('…'));
    }
}
