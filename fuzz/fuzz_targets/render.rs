//! Any notification the API accepts, worded by the built-in templates and framed for Telegram
//! (HTML and MarkdownV2), Discord and Slack: never a panic, and every provider limit holds (a
//! message over a limit is one the provider refuses, i.e. an alert lost).
#![no_main]

use klaxon_core::input::{Envelope, NotificationRequest, from_json};
use klaxon_core::render::{discord, slack, telegram};
use klaxon_core::template::{Markup, Templates};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let n = match from_json::<NotificationRequest>(value.clone(), "") {
        Ok(r) => r.into_notification("fuzz", ""),
        Err(_) => match from_json::<Envelope>(value, "") {
            Ok(e) => e.into_notification("fuzz", ""),
            Err(_) => return,
        },
    };
    let Ok(n) = n else { return };
    let t = Templates::defaults();
    for (mode, markup) in [
        (telegram::ParseMode::Html, Markup::Html),
        (telegram::ParseMode::MarkdownV2, Markup::MarkdownV2),
    ] {
        let c = t.render(&n, "telegram", "fuzz", markup);
        for part in telegram::render_content(&n, &c, mode, telegram::MAX_TEXT) {
            assert!(part.chars().count() <= telegram::MAX_TEXT, "telegram part too long");
        }
    }
    let c = t.render(&n, "discord", "fuzz", Markup::Discord);
    let body = discord::render_content(&n, &c, &discord::DiscordOptions::default());
    for embed in body["embeds"].as_array().into_iter().flatten() {
        assert!(
            discord::embed_size(embed) <= discord::EMBED_TOTAL_MAX,
            "discord embed too large"
        );
    }
    let c = t.render(&n, "slack", "fuzz", Markup::Slack);
    let _ = slack::render_content(&n, &c);
});
