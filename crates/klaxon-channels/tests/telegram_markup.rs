//! Any text at all, rendered for Telegram, is accepted by a strict HTML and MarkdownV2 entity
//! parser, stays within the length limit, and reads back as the text that went in.

use klaxon_core::Notification;
use klaxon_core::render::telegram::{MAX_TEXT, ParseMode, render, render_text};
use klaxon_fakes::markup::{parse_html, parse_markdown_v2};
use proptest::prelude::*;

/// Text biased towards what breaks markup: every reserved character, entities, tags, escapes,
/// newlines, and arbitrary Unicode (astral emoji count twice in UTF-16).
fn nasty() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<b>".to_string()),
        Just("</i>".to_string()),
        Just("&amp;".to_string()),
        Just("&".to_string()),
        Just("\\".to_string()),
        Just("\n".to_string()),
        Just("🚀".to_string()),
        Just("[x](http://a.b/c)".to_string()),
        "[_*\\[\\]()~`>#+\\-=|{}.!\\\\<>&\"']{1,4}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

fn check(mode: ParseMode, text: &str) -> Result<String, String> {
    match mode {
        ParseMode::Html => parse_html(text),
        ParseMode::MarkdownV2 => parse_markdown_v2(text),
        ParseMode::Plain => Ok(text.to_string()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_rendering_parses(title in nasty(), message in nasty(), key in nasty(), value in nasty(), tag in nasty()) {
        let mut n = Notification::new(message.clone()).title(title).data(key, value).tag(tag);
        n.message = message;
        for mode in [ParseMode::Html, ParseMode::MarkdownV2] {
            for part in render(&n, mode, MAX_TEXT) {
                prop_assert!(part.encode_utf16().count() <= MAX_TEXT);
                let plain = check(mode, &part);
                prop_assert!(plain.is_ok(), "{mode:?} rejected {part:?}: {plain:?}");
                prop_assert!(!plain.unwrap().trim().is_empty(), "empty message");
            }
        }
    }

    #[test]
    fn text_reads_back_unchanged(text in nasty()) {
        let clean: String = text.chars().filter(|&c| c == '\n' || c == '\t' || !c.is_control()).collect();
        for mode in [ParseMode::Html, ParseMode::MarkdownV2] {
            let parts = render_text(&clean, mode, MAX_TEXT);
            let back: Vec<String> = parts.iter().map(|p| check(mode, p).unwrap()).collect();
            // Splitting may move whitespace between parts; every other character arrives in order.
            let words = |s: &str| s.split_whitespace().collect::<String>();
            if !clean.trim().is_empty() {
                prop_assert_eq!(words(&back.join("\n")), words(&clean));
            }
        }
    }

    #[test]
    fn small_limits_still_split_validly(text in nasty(), max in 8usize..200) {
        for mode in [ParseMode::Html, ParseMode::MarkdownV2, ParseMode::Plain] {
            for part in render_text(&text, mode, max) {
                prop_assert!(part.encode_utf16().count() <= max, "{} > {max}", part.encode_utf16().count());
                prop_assert!(check(mode, &part).is_ok(), "{mode:?} {part:?}");
            }
        }
    }
}
