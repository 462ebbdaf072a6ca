//! Scenario 10: goodput under a provider's limits. 600 messages to 20 Telegram chats through the
//! fake Telegram enforcing 1 message per chat in any 1 s window and 30 per second per bot, with
//! real 429 answers. The physical limit is the per-chat one: 30 messages to a chat take at least
//! 29 s (the first goes at once). Goal: ≥ 95 % of that limit and not a single 429.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use klaxon_fakes::telegram::{
    DEFAULT_PER_GROUP_PER_MINUTE, DEFAULT_TOKEN, FakeTelegram, TgMessage,
};
use serde_json::json;

use crate::Scale;
use crate::harness::{Klaxon, client, post_json};
use crate::report::{Fig, Goal, Report, Row, int};

const CHATS: usize = 20;
const PER_CHAT: usize = 30;

pub async fn run(report: &mut Report, scale: Scale) -> anyhow::Result<()> {
    // --quick: 3 a chat (2 s minimum) checks the scenario end to end.
    let per_chat = if scale.n(10) < 10 { 3 } else { PER_CHAT };
    let total = CHATS * per_chat;
    report.section(
        "10. Goodput under Telegram's limits",
        &format!(
            "{} messages: {per_chat} notifications to one `tgram://` channel with {CHATS} chats, \
             posted at once in one batch, through the fake Telegram enforcing 1 message per chat \
             in any 1 s window and 30/s per bot (it answers 429 with `retry_after` beyond that). \
             Time from the POST to the last message accepted by the fake, against the \
             theoretical minimum of {} s set by the per-chat limit.",
            int(total),
            per_chat - 1
        ),
    );
    let tg = FakeTelegram::start().await;
    tg.set_limits(
        (1, Duration::from_secs(1)),
        DEFAULT_PER_GROUP_PER_MINUTE,
        30,
    );
    let chats: Vec<String> = (1..=CHATS).map(|c| (1000 + c).to_string()).collect();
    let channel = format!("tgram://{DEFAULT_TOKEN}/{}", chats.join("/"));
    let extra = format!("[providers]\ntelegram_api = \"{}\"\n", tg.url());
    let klaxon = Klaxon::start_channel(&channel, &extra).await?;
    let items: Vec<_> = (0..per_chat)
        .map(|i| json!({"title": "Fill", "message": format!("MNQI filled #{i}")}))
        .collect();
    let http = client();
    let started = Instant::now();
    let (status, _) = post_json(
        &http,
        &klaxon.url("/api/v1/notifications/batch"),
        serde_json::to_vec(&items)?.into(),
    )
    .await?;
    anyhow::ensure!(status == 202, "the batch was answered {status}");
    let deadline = started + Duration::from_secs(per_chat as u64 * 4 + 30);
    while tg.messages().len() < total {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {total} messages arrived",
            tg.messages().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = tg.messages().iter().map(|m| m.at).max().unwrap_or(started);
    let elapsed = last.duration_since(started).as_secs_f64();
    let too_many = tg.count_429();
    let (first_round, skipped) = spacing(&tg.messages(), started);
    klaxon.stop().await;

    let minimum = (per_chat - 1) as f64;
    report.row(Row {
        figure: "time to deliver all",
        value: Fig::secs(elapsed),
        baseline: Some(("per-chat limit's minimum", Fig::secs(minimum))),
        goal: None,
    });
    report.row(Row {
        figure: "goodput, % of the limit",
        value: Fig::percent(100.0 * minimum / elapsed),
        baseline: None,
        goal: Some(Goal::AtLeast(95.0)),
    });
    report.row(Row {
        figure: "first message to the last chat",
        value: Fig::secs(first_round),
        baseline: None,
        goal: None,
    });
    report.row(Row {
        figure: "slots skipped (a chat's gap ≥ 1.5 s)",
        value: Fig::count(skipped as f64),
        baseline: None,
        goal: None,
    });
    report.row(Row {
        figure: "429 answers received",
        value: Fig::count(too_many as f64),
        baseline: None,
        goal: Some(Goal::AtMost(0.0)),
    });
    Ok(())
}

/// Where the time beyond the minimum went: how long after the POST the last chat got its first
/// message (the bot's 30/s spaces the first round), and how many times a chat waited 1.5 s or
/// more between two messages — a send that missed its slot, or a pause after a 429.
fn spacing(messages: &[TgMessage], started: Instant) -> (f64, usize) {
    let mut by_chat: HashMap<&str, Vec<Instant>> = HashMap::new();
    for m in messages {
        by_chat.entry(&m.chat_id).or_default().push(m.at);
    }
    let mut first_round = Duration::ZERO;
    let mut skipped = 0;
    for times in by_chat.values_mut() {
        times.sort();
        first_round = first_round.max(times[0].duration_since(started));
        skipped += times
            .windows(2)
            .filter(|w| w[1] - w[0] >= Duration::from_millis(1500))
            .count();
    }
    (first_round.as_secs_f64(), skipped)
}
