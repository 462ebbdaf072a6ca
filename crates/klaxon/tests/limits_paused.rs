//! Rate limits in virtual time (`start_paused`): the engine's way of holding sends for their
//! limiter slot, replayed against the same sliding windows the fake Telegram enforces. Nothing
//! sleeps for real; tokio's clock jumps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use klaxon_channels::Channel;
use klaxon_core::Notification;
use klaxon_core::channel_url::{ApiBases, Options, Provider, parse};
use klaxon_core::limit::{Limiter, most_in_window};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn six_hundred_messages_to_twenty_chats_respect_every_window() {
    klaxon::app::install_crypto();
    let chats: Vec<String> = (1..=20).map(|c| c.to_string()).collect();
    let url = format!("tgram://123456:TEST-token_abc/{}", chats.join("/"));
    let Provider::Telegram(spec) = parse(&url, &Options::default(), &ApiBases::default()).unwrap()
    else {
        panic!()
    };
    let channel = klaxon_channels::telegram::Telegram::new(
        "tg",
        spec,
        reqwest::Client::new(),
        Duration::from_secs(1),
    );
    let n = Notification::new("m");
    let targets = channel.targets(&n);
    assert_eq!(targets.len(), 20);

    let limiter = Arc::new(Mutex::new(Limiter::new()));
    let origin = Instant::now();
    let sent: Arc<Mutex<HashMap<String, Vec<Duration>>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..600 {
        let target = targets[i % 20].clone();
        let keys = channel.limits(target.as_deref());
        let (limiter, sent) = (limiter.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            // As the engine does: reserve a slot, wait for it, send.
            let at = limiter.lock().unwrap().reserve(&keys, origin.elapsed());
            tokio::time::sleep_until(origin + at).await;
            let now = origin.elapsed();
            let mut s = sent.lock().unwrap();
            s.entry(target.unwrap()).or_default().push(now);
            s.entry("bot".into()).or_default().push(now);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sent = sent.lock().unwrap();
    let bot = &sent["bot"];
    assert_eq!(bot.len(), 600);
    assert!(
        most_in_window(bot, Duration::from_secs(1)) <= 30,
        "per bot ≤ 30/s"
    );
    for chat in &chats {
        assert!(
            most_in_window(&sent[chat], Duration::from_secs(3)) <= 3,
            "per chat ≤ 3 in 3 s"
        );
        assert!(
            most_in_window(&sent[chat], Duration::from_secs(1)) <= 1,
            "per chat ≤ 1/s"
        );
    }
    // The floor: 30 messages per chat at 1/s is 29 s after the chat's first; the bot's 30 in
    // any second lets all twenty first messages go at once. We keep within 5 % of it (the
    // limits carry a 3 % safety margin against jitter).
    let floor = 29.0;
    let last = bot.iter().max().unwrap().as_secs_f64();
    assert!(
        (floor..=floor * 1.05).contains(&last),
        "all sent by {last:.2} s, floor {floor:.2} s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pause_holds_every_target_until_it_ends() {
    let mut l = Limiter::new();
    let chan = klaxon_core::limit::LimitKey {
        key: "channel:tg".into(),
        rate: "1000/s".parse().unwrap(),
    };
    let origin = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A 429 with retry_after = 7 s at t = 5 s.
    l.pause(
        &chan.key,
        chan.rate,
        origin.elapsed() + Duration::from_secs(7),
    );
    let at = l.reserve(std::slice::from_ref(&chan), origin.elapsed());
    assert_eq!(at, Duration::from_secs(12));
    tokio::time::sleep_until(origin + at).await;
    assert_eq!(origin.elapsed(), Duration::from_secs(12));
}
