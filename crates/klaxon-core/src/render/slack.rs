//! Slack incoming-webhook payload (PROVIDERS.md §3): Block Kit inside one legacy attachment,
//! because an attachment's `color` is the only colour bar Slack still draws; `text` carries the
//! same words for notifications and clients that do not show blocks.

use serde_json::{Value, json};

use super::{
    Content, Fence, Markup, chars, cut_markup, escape_fit, fields, pack_lines, style,
    truncate_chars,
};
use crate::model::Notification;

/// Block Kit limits (Slack's Block Kit reference; section text also in PROVIDERS.md §3 [3P]).
pub const HEADER_MAX: usize = 150;
pub const SECTION_MAX: usize = 3000;
pub const FIELDS_PER_SECTION: usize = 10;
pub const FIELD_MAX: usize = 2000;
/// Context block: at most 10 elements, each text ≤ 3000 (Block Kit reference).
pub const CONTEXT_MAX: usize = 3000;
/// PROVIDERS.md §3: at most 50 blocks per message.
pub const BLOCKS_MAX: usize = 50;
/// PROVIDERS.md §3: Slack truncates `text` past 40,000 characters; we cut first, visibly.
pub const TEXT_MAX: usize = 40_000;

/// mrkdwn needs only `&`, `<` and `>` escaped (PROVIDERS.md §3): `*`, `_` and `~` in alert text
/// may turn bold, but cannot break the message or form a link or a mention.
pub fn escape_char(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        c => out.push(c),
    }
}

pub fn escape(text: &str) -> String {
    escape_fit(text, usize::MAX, escape_char)
}

/// Escaped and cut to `max` characters, never inside an entity.
fn fit(text: &str, max: usize) -> String {
    escape_fit(text, max, escape_char)
}

/// The payload without templates: the notification's title and message, and every field.
pub fn render(n: &Notification) -> Value {
    render_content(n, &Content::plain(n, Markup::Slack))
}

/// The payload for a template's content: the title as the header, the body (mrkdwn, escaped
/// by the template) in sections of at most `SECTION_MAX`, the fields when the content asks.
pub fn render_content(n: &Notification, content: &Content) -> Value {
    let s = style(n);
    let head = format!("{} {}", s.emoji, content.title);
    let mut blocks = vec![json!({
        "type": "header",
        // plain_text shows characters as written: no escaping, only the length limit.
        "text": {"type": "plain_text", "text": truncate_chars(&head, HEADER_MAX), "emoji": true},
    })];
    // Header and context take two of the 50 blocks, and the fields at least one if any.
    let fields = if content.details {
        fields(n)
    } else {
        Vec::new()
    };
    let fence = Fence::of(Markup::Slack);
    let sections = pack_lines(
        content.body.trim().lines().map(str::to_string),
        SECTION_MAX,
        fence,
        chars,
        &|l, m| cut_markup(l, m, fence),
    );
    let room = BLOCKS_MAX - 2 - usize::from(!fields.is_empty());
    let cut = sections.len() > room;
    for (i, text) in sections.into_iter().take(room).enumerate() {
        let text = if cut && i + 1 == room {
            // The last section that fits says that more was cut.
            cut_markup(&format!("{text}\n…"), SECTION_MAX, fence)
        } else {
            text
        };
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": text},
        }));
    }
    let shown: Vec<Value> = fields
        .into_iter()
        .map(|(k, v)| {
            // `*key*` bold, value below; the key's share is bounded so the value always shows.
            let key = fit(&k, 200);
            let value = fit(&v, FIELD_MAX - key.chars().count() - 3);
            json!({"type": "mrkdwn", "text": format!("*{key}*\n{value}")})
        })
        .collect();
    // Header, message and context take three of the 50 blocks; the rest may hold fields.
    let room = BLOCKS_MAX - blocks.len() - 1;
    for chunk in shown.chunks(FIELDS_PER_SECTION).take(room) {
        blocks.push(json!({"type": "section", "fields": chunk}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context(n)}]}));

    let fallback = format!("{}: {}", escape(&head), content.body);
    json!({
        "text": cut_markup(&fallback, TEXT_MAX, None),
        "attachments": [{"color": format!("#{:06X}", s.color), "blocks": blocks}],
    })
}

/// Source, event type, tags and the time. `<!date^…>` shows the time in each reader's own
/// zone; the text after `|` is what clients that cannot format dates show instead.
fn context(n: &Notification) -> String {
    let mut parts = vec![n.source.clone()];
    parts.extend(n.event_type.clone());
    if !n.tags.is_empty() {
        parts.push(n.tags.join(", "));
    }
    let date = format!(
        "<!date^{}^{{date_short_pretty}} {{time}}|{}>",
        n.created_at.timestamp(),
        n.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    // The date token must survive whole, so the escaped words get what it leaves.
    let words = fit(&parts.join(" · "), CONTEXT_MAX - date.chars().count() - 3);
    format!("{words} · {date}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;

    fn blocks(b: &Value) -> &Vec<Value> {
        b["attachments"][0]["blocks"].as_array().unwrap()
    }

    #[test]
    fn colour_header_and_escaped_sections() {
        let n = Notification::new("a <@U123> & <!channel> > b *bold*")
            .title("SELL <MNQ>")
            .data("action", "SELL")
            .data("price", 23488.75);
        let b = render(&n);
        assert_eq!(b["attachments"][0]["color"], json!("#E74C3C"));
        let bl = blocks(&b);
        assert_eq!(bl[0]["text"]["text"], json!("🔴 SELL <MNQ>"));
        assert_eq!(
            bl[1]["text"]["text"],
            json!("a &lt;@U123&gt; &amp; &lt;!channel&gt; &gt; b *bold*")
        );
        assert_eq!(bl[2]["fields"][1]["text"], json!("*price*\n23,488.75"));
        let ctx = bl[3]["elements"][0]["text"].as_str().unwrap();
        assert!(ctx.contains(&format!(
            "<!date^{}^{{date_short_pretty}} {{time}}|{}>",
            n.created_at.timestamp(),
            n.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )));
        assert!(
            b["text"]
                .as_str()
                .unwrap()
                .starts_with("🔴 SELL &lt;MNQ&gt;: a &lt;@U123")
        );
    }

    #[test]
    fn every_limit_holds_for_hostile_input() {
        let mut n = Notification::new("<&>".repeat(20_000))
            .title("🚨".repeat(400))
            .severity(Severity::Critical);
        for i in 0..600 {
            n = n.data(format!("k{i}"), "&".repeat(3000));
        }
        n.tags = vec!["<t>".repeat(2000)];
        let b = render(&n);
        let bl = blocks(&b);
        assert!(bl.len() <= BLOCKS_MAX);
        assert!(bl[0]["text"]["text"].as_str().unwrap().chars().count() <= HEADER_MAX);
        let section = bl[1]["text"]["text"].as_str().unwrap();
        assert!(section.chars().count() <= SECTION_MAX);
        assert!(
            section.ends_with("&gt;…") || section.ends_with("&amp;…") || section.ends_with("&lt;…")
        );
        for section in &bl[2..bl.len() - 1] {
            let f = section["fields"].as_array().unwrap();
            assert!(f.len() <= FIELDS_PER_SECTION);
            for field in f {
                assert!(field["text"].as_str().unwrap().chars().count() <= FIELD_MAX);
            }
        }
        let ctx = bl.last().unwrap()["elements"][0]["text"].as_str().unwrap();
        assert!(ctx.chars().count() <= CONTEXT_MAX);
        assert!(ctx.ends_with("Z>"), "{ctx}");
        assert!(b["text"].as_str().unwrap().chars().count() <= TEXT_MAX);
    }

    proptest::proptest! {
        /// Any text: every Block Kit limit holds and no raw `<`, `>` or bare `&` reaches
        /// mrkdwn (which would open a link, a mention or an entity).
        #[test]
        fn any_text_stays_within_limits(msg in ".{0,4000}", t in ".{0,300}", k in ".{0,50}", v in ".{0,3000}") {
            let n = Notification::new(msg).title(t).data(k, v);
            let b = render(&n);
            let bl = blocks(&b);
            proptest::prop_assert!(bl.len() <= BLOCKS_MAX);
            proptest::prop_assert!(bl[0]["text"]["text"].as_str().unwrap().chars().count() <= HEADER_MAX);
            for block in &bl[1..bl.len() - 1] {
                let texts: Vec<&str> = match block["fields"].as_array() {
                    Some(f) => f.iter().map(|x| x["text"].as_str().unwrap()).collect(),
                    None => vec![block["text"]["text"].as_str().unwrap()],
                };
                for text in texts {
                    proptest::prop_assert!(text.chars().count() <= SECTION_MAX);
                    proptest::prop_assert!(!text.contains('<') && !text.contains('>'));
                    let bare = text.match_indices('&').any(|(i, _)| {
                        !["&amp;", "&lt;", "&gt;"].iter().any(|e| text[i..].starts_with(e))
                    });
                    proptest::prop_assert!(!bare, "bare & in {text:?}");
                }
            }
        }
    }

    #[test]
    fn empty_message_has_no_empty_section() {
        let b = render(&Notification::new("  "));
        let types: Vec<&str> = blocks(&b)
            .iter()
            .map(|b| b["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["header", "context"]);
    }
}
