//! The built-in templates, per event type × channel kind, as each provider would receive them
//! (insta snapshots under `tests/snapshots/`), and hostile input that must never fail a send.

use chrono::{TimeZone, Utc};
use klaxon_core::model::{Notification, Severity};
use klaxon_core::render::{self, Markup};
use klaxon_core::template::{Templates, UserTemplates};
use serde_json::{Value, json};

/// A notification as ingest makes it from an envelope (PRODUCT.md §3), at a fixed time.
fn event(event_type: &str, severity: Severity, data: Value) -> Notification {
    let data = data.as_object().cloned().unwrap_or_default();
    let (title, message) = klaxon_core::event::summarise(event_type, &data);
    let mut n = Notification::new(message)
        .title(title)
        .event_type(event_type)
        .severity(severity)
        .source("strategy_engine");
    n.data = data;
    n.created_at = Utc.with_ymd_and_hms(2025, 9, 4, 13, 32, 0).unwrap();
    n
}

fn events() -> Vec<(&'static str, Notification)> {
    vec![
        (
            "signal_buy",
            event(
                "signal.generated",
                Severity::Info,
                json!({"strategy_name": "break-and-enter", "action": "BUY", "symbol": "MNQI", "price": 23488.75, "metadata": {}}),
            ),
        ),
        (
            "signal_exit_50",
            event(
                "signal.generated",
                Severity::Info,
                json!({"strategy_name": "break-and-enter", "action": "BUY", "symbol": "MNQI", "price": 23488.75, "comment": "EXIT_50", "metadata": {}}),
            ),
        ),
        (
            "webhook_signal_sell",
            event(
                "webhook.signal",
                Severity::Info,
                json!({"webhook_name": "TV-Bot", "strategy_type": "mean-reversion", "alert_message": "RSI > 70 on 5m", "user_id": "u-42", "action": "SELL", "symbol": "ES", "price": 5012.25}),
            ),
        ),
        (
            "trade_executed",
            event(
                "trade.executed",
                Severity::Info,
                json!({"side": "buy", "quantity": 2, "symbol": "MNQ", "price": 23488.75, "order_id": "A-1001", "fee": 1.24}),
            ),
        ),
        (
            "order_error",
            event(
                "order.error",
                Severity::Error,
                json!({"symbol": "ES", "error": "Insufficient margin", "side": "SELL", "quantity": 3, "price": 5012.25, "order_id": "B-77"}),
            ),
        ),
        (
            "risk_breach",
            event(
                "risk.breach",
                Severity::Critical,
                json!({"rule": "max_drawdown", "metric": "drawdown_pct", "value": 5.2, "limit": 5, "account": "main", "action_taken": "flattened all positions"}),
            ),
        ),
        (
            "auth_failure",
            event(
                "auth.failure",
                Severity::Warning,
                json!({"service": "binance", "reason": "API key rejected", "ip": "203.0.113.7", "attempts": 3}),
            ),
        ),
        (
            "system_health",
            event(
                "system.health",
                Severity::Warning,
                json!({"component": "market-data", "status": "degraded", "message": "Feed lag 2.4 s", "latency_ms": 2400}),
            ),
        ),
        (
            "price_alert",
            event(
                "price.alert",
                Severity::Info,
                json!({"symbol": "BTCUSD", "price": 100250.5, "condition": "crossed above", "level": 100000}),
            ),
        ),
        (
            "tradingview_alert",
            event(
                "tradingview.alert",
                Severity::Info,
                json!({"ticker": "NQ1!", "action": "sell", "price": 21340.5, "position": -2, "message": "Short entry <confirmed> & filled"}),
            ),
        ),
        ("digest", digest()),
        (
            "custom_event",
            event(
                "inventory.low",
                Severity::Warning,
                json!({"item": "margin buffer", "remaining": 12500.5, "site": "NY4"}),
            ),
        ),
    ]
}

fn digest() -> Notification {
    let items: Vec<Value> = [("BUY", 23488.75), ("SELL", 23501.0), ("EXIT_50", 23512.25)]
        .iter()
        .enumerate()
        .map(|(i, (a, p))| {
            json!({"id": format!("0193f0c2-{i}"), "time": format!("2025-09-04T13:3{i}:05Z"), "title": format!("{a} MNQI @ {p}"), "message": "m", "severity": "info", "event_type": "signal.generated", "symbol": "MNQI", "action": a, "price": p})
        })
        .collect();
    let mut n = event(
        "klaxon.digest",
        Severity::Info,
        json!({"count": 5, "window_secs": 10, "group": {"symbol": "MNQI"}, "items": items}),
    );
    n.title = Some("5 notifications".into());
    n.message = "time  action  symbol  price\n…".into();
    n
}

/// Every kind's rendering of `n`, as its channel sends it.
fn kinds(t: &Templates, n: &Notification) -> Vec<(&'static str, String)> {
    let tg = t.render(n, "telegram", "tg", Markup::Html);
    let dc = t.render(n, "discord", "dc", Markup::Discord);
    let sl = t.render(n, "slack", "sl", Markup::Slack);
    let email = render::email::render_content(
        n,
        &t.render(n, "email", "mail", Markup::Plain),
        &t.render(n, "email", "mail", Markup::Html),
    );
    let sms = t.render(n, "sms", "sms", Markup::Plain);
    let wa = t.render(n, "whatsapp", "wa", Markup::Plain);
    let ntfy = t.render(n, "ntfy", "ntfy", Markup::Ntfy);
    let po = t.render(n, "pushover", "po", Markup::Html);
    let wh = t.render(n, "webhook", "wh", Markup::Plain);
    for c in [&tg, &dc, &sl, &sms, &wa, &ntfy, &po, &wh] {
        assert!(c.errors.is_empty(), "{:?}", c.errors);
    }
    let json = |v: Value| serde_json::to_string_pretty(&v).unwrap();
    let mut wh_body = render::webhook::body_content(n, &wh, uuid::Uuid::nil(), 1);
    wh_body["id"] = json!("…");
    let ntfy = render::ntfy::render_content(n, &ntfy, &[]);
    let po = render::pushover::render_content(n, &po);
    vec![
        (
            "telegram",
            render::telegram::render_content(
                n,
                &tg,
                render::telegram::ParseMode::Html,
                render::telegram::MAX_TEXT,
            )
            .join("\n--- next message ---\n"),
        ),
        (
            "discord",
            json(render::discord::render_content(n, &dc, &Default::default())),
        ),
        ("slack", json(render::slack::render_content(n, &sl))),
        (
            "email",
            format!(
                "Subject: {}\n\n{}\n---- html ----\n{}",
                email.subject,
                email.text,
                email.html.split("<h1").nth(1).unwrap_or_default()
            ),
        ),
        ("sms", render::sms::render_content(n, &sms, false, 3)),
        ("whatsapp", render::sms::render_content(n, &wa, true, 3)),
        (
            "ntfy",
            format!(
                "title: {}\npriority: {}\ntags: {:?}\n\n{}",
                ntfy.title, ntfy.priority, ntfy.tags, ntfy.message
            ),
        ),
        ("pushover", format!("title: {}\n\n{}", po.title, po.message)),
        ("webhook", json(wh_body)),
    ]
}

#[test]
fn built_in_templates_per_event_type_and_kind() {
    let t = Templates::defaults();
    for (name, n) in events() {
        for (kind, out) in kinds(&t, &n) {
            insta::assert_snapshot!(format!("{name}__{kind}"), out);
        }
    }
}

fn user(pattern: &str, f: impl FnOnce(&mut UserTemplates)) -> UserTemplates {
    let mut u = UserTemplates {
        pattern: pattern.into(),
        ..Default::default()
    };
    f(&mut u);
    u
}

/// Text from outside full of every markup's special characters.
const NASTY: &str = "<b>*_[x](y)~`|> # - & \"q\" 'a' <script>alert(1)</script> \\ {{ 7*7 }} ```";

fn hostile_events() -> Vec<Notification> {
    let huge = "<&>*_` ".repeat(5_000);
    let mut out = Vec::new();
    for (_, n) in events() {
        let event_type = n.event_type.clone().unwrap();
        // Every field the templates read, with markup in it.
        let mut nasty = n.clone();
        for v in nasty.data.values_mut() {
            if v.is_string() {
                *v = json!(NASTY);
            }
        }
        nasty.data.insert("action".into(), json!(NASTY));
        nasty.title = Some(NASTY.into());
        nasty.message = NASTY.into();
        out.push(nasty);
        // Very long fields.
        let mut long = n.clone();
        for v in long.data.values_mut() {
            *v = json!(huge.clone());
        }
        long.message = huge.clone();
        long.title = Some(huge.clone());
        out.push(long);
        // Missing fields, and fields of the wrong type.
        out.push(event(&event_type, Severity::Error, json!({})));
        out.push(event(
            &event_type,
            Severity::Error,
            json!({"price": "n/a", "count": "many", "items": "none", "action": 5, "data": null, "window_secs": [], "group": 3, "value": {}, "limit": null}),
        ));
    }
    out
}

/// Hostile input never fails a send: every built-in template renders without error for every
/// kind, every provider limit holds, and no input reaches the target as markup.
#[test]
fn hostile_input_never_fails_a_send() {
    let t = Templates::defaults();
    for n in hostile_events() {
        let what = format!("{:?}", n.event_type);
        for (kind, markup) in [
            ("telegram", Markup::Html),
            ("telegram", Markup::MarkdownV2),
            ("discord", Markup::Discord),
            ("slack", Markup::Slack),
            ("email", Markup::Html),
            ("email", Markup::Plain),
            ("sms", Markup::Plain),
            ("ntfy", Markup::Ntfy),
            ("pushover", Markup::Html),
            ("webhook", Markup::Plain),
        ] {
            let c = t.render(&n, kind, "x", markup);
            assert!(c.errors.is_empty(), "{what} {kind}: {:?}", c.errors);
            assert!(!c.title.contains('\n'), "{what} {kind}: title is one line");
            if markup == Markup::Html {
                assert!(!c.body.contains("<script"), "{what} {kind}: {}", c.body);
                assert!(!c.body.contains("<b>*"), "{what} {kind}");
            }
            if markup == Markup::Slack {
                assert!(!c.body.contains("<script") && !c.body.contains("<b>"));
            }
        }
        let tg = t.render(&n, "telegram", "x", Markup::Html);
        for part in render::telegram::render_content(
            &n,
            &tg,
            render::telegram::ParseMode::Html,
            render::telegram::MAX_TEXT,
        ) {
            assert!(
                part.encode_utf16().count() <= render::telegram::MAX_TEXT,
                "{what}"
            );
            assert_eq!(
                part.matches("<pre>").count(),
                part.matches("</pre>").count()
            );
        }
        let dc = t.render(&n, "discord", "x", Markup::Discord);
        let body = render::discord::render_content(&n, &dc, &Default::default());
        let e = &body["embeds"][0];
        assert!(
            render::discord::embed_size(e) <= render::discord::EMBED_TOTAL_MAX,
            "{what}"
        );
        assert!(
            e["description"].as_str().unwrap_or("").chars().count()
                <= render::discord::DESCRIPTION_MAX
        );
        let sl = t.render(&n, "slack", "x", Markup::Slack);
        let body = render::slack::render_content(&n, &sl);
        let blocks = body["attachments"][0]["blocks"].as_array().unwrap();
        assert!(blocks.len() <= render::slack::BLOCKS_MAX);
        for b in blocks.iter().filter(|b| b["type"] == "section") {
            if let Some(text) = b["text"]["text"].as_str() {
                assert!(text.chars().count() <= render::slack::SECTION_MAX, "{what}");
            }
        }
        let sms = t.render(&n, "sms", "x", Markup::Plain);
        let text = render::sms::render_content(&n, &sms, false, 3);
        assert!(render::sms::segments(&text).count <= 3, "{what}");
    }
}

#[test]
fn user_templates_are_escaped_for_each_target() {
    let t = Templates::new(vec![user("signal.generated", |u| {
        u.title = Some("{{ action }} {{ data.symbol }} <{{ data.price | price }}>".into());
        u.body = Some("{{ bold(data.symbol) }} at <b>{{ data.price | price(2) }}</b>".into());
        u.kinds.insert(
            "discord".into(),
            "**{{ data.symbol }}** {{ data.note }}".into(),
        );
    })])
    .unwrap();
    let mut n = event(
        "signal.generated",
        Severity::Info,
        json!({"action": "BUY", "symbol": "<MNQ>", "price": 23488.7, "note": "*not bold*"}),
    );
    n.title = None;
    let tg = t.render(&n, "telegram", "tg", Markup::Html);
    assert!(tg.errors.is_empty());
    assert_eq!(tg.title, "BUY <MNQ> <23,488.7>", "titles are plain text");
    assert_eq!(tg.body, "<b>&lt;MNQ&gt;</b> at <b>23,488.70</b>");
    assert!(!tg.details);
    let md = t.render(&n, "telegram", "tg", Markup::MarkdownV2);
    assert_eq!(md.body, "*<MNQ\\>* at <b>23,488\\.70</b>");
    let dc = t.render(&n, "discord", "dc", Markup::Discord);
    assert_eq!(dc.body, "**<MNQ>** \\*not bold\\*");
    let sms = t.render(&n, "sms", "sms", Markup::Plain);
    assert_eq!(sms.body, "<MNQ> at <b>23,488.70</b>");
    // Webhooks keep the notification's own message unless a webhook template is given.
    let wh = t.render(&n, "webhook", "wh", Markup::Plain);
    assert_eq!(wh.body, n.message);
    assert_eq!(wh.title, "BUY <MNQ> <23,488.7>");
}

#[test]
fn most_specific_user_template_wins() {
    let t = Templates::new(vec![
        user("*", |u| u.body = Some("any".into())),
        user("signal.*", |u| {
            u.body = Some("signals".into());
            u.channels.insert("vip".into(), "vip {{ channel }}".into());
        }),
        user("signal.generated", |u| {
            u.kinds
                .insert("sms".into(), "exact sms".into())
                .map(drop)
                .unwrap_or(())
        }),
    ])
    .unwrap();
    let n = event("signal.generated", Severity::Info, json!({"action": "BUY"}));
    // `new` keeps the order given; the config loader sorts by specificity.
    assert_eq!(t.render(&n, "telegram", "x", Markup::Plain).body, "any");
    let config = klaxon_core::config::Config::load(
        Some(
            r#"
[channels.vip]
url = "log://"
[channels.x]
url = "log://"
[templates."*"]
body = "any"
[templates."signal.*"]
body = "signals"
channels = { vip = "vip {{ channel }}" }
[templates."signal.generated"]
sms = "exact sms"
"#,
        ),
        &std::collections::BTreeMap::<String, String>::new(),
    )
    .unwrap();
    let t = config.templates;
    assert_eq!(t.render(&n, "sms", "x", Markup::Plain).body, "exact sms");
    // The exact pattern has no telegram body: the next match is not consulted, its built-in is.
    assert!(
        t.render(&n, "telegram", "x", Markup::Plain)
            .body
            .starts_with("Time:")
    );
    let other = event("signal.closed", Severity::Info, json!({}));
    assert_eq!(
        t.render(&other, "telegram", "x", Markup::Plain).body,
        "signals"
    );
    assert_eq!(
        t.render(&other, "telegram", "vip", Markup::Plain).body,
        "vip vip"
    );
    let misc = event("risk.breach", Severity::Info, json!({}));
    assert_eq!(t.render(&misc, "slack", "x", Markup::Slack).body, "any");
}

#[test]
fn a_failing_template_falls_back_and_says_why() {
    let t = Templates::new(vec![
        user("signal.generated", |u| {
            // Runs out of fuel: a worker is never held by a template.
            u.body = Some(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
                    .into(),
            );
            u.title = Some("{{ data.price | time(\"%Q\") }}".into());
        }),
        user("risk.breach", |u| {
            u.body = Some("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}".into());
        }),
        user("order.error", |u| u.body = Some("{{ 1 // 0 }}".into())),
    ])
    .unwrap();
    let n = event(
        "signal.generated",
        Severity::Info,
        json!({"action": "SELL", "symbol": "ES", "price": 5012.25, "strategy_name": "s"}),
    );
    let started = std::time::Instant::now();
    let c = t.render(&n, "telegram", "tg", Markup::Html);
    assert_eq!(c.errors.len(), 2, "{:?}", c.errors);
    assert_eq!(c.errors[0].template, "templates.\"signal.generated\".title");
    assert!(c.errors[0].reason.contains("format"), "{:?}", c.errors);
    assert_eq!(c.errors[1].template, "templates.\"signal.generated\".body");
    assert!(c.errors[1].reason.contains("fuel"), "{:?}", c.errors);
    // The built-in template took over, and the note says so.
    assert_eq!(c.title, "SELL ES @ 5,012.25");
    assert!(c.body.contains("<i>Strategy</i>: s"));
    let note = c.error_note().unwrap();
    assert!(note.contains("sent with the fallback"), "{note}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    let r = event("risk.breach", Severity::Critical, json!({"rule": "dd"}));
    let c = t.render(&r, "slack", "sl", Markup::Slack);
    assert_eq!(c.errors.len(), 1, "{:?}", c.errors);
    assert_eq!(c.title, "Risk breach: dd");
    let o = event("order.error", Severity::Error, json!({"error": "x"}));
    let c = t.render(&o, "discord", "dc", Markup::Discord);
    assert_eq!(c.errors.len(), 1);
    assert!(c.body.starts_with("**x**"), "{}", c.body);
}

#[test]
fn config_names_the_key_of_a_broken_template() {
    let text = r#"
[templates."signal.generated"]
title = "{{ data.symbol }}"
telegram = """
{% if data.action %}
  {{ data.action
"""

[templates."*"]
channels = { nowhere = "x" }
"#;
    let e = klaxon_core::config::Config::load(
        Some(text),
        &std::collections::BTreeMap::<String, String>::new(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("line 4: `templates.\"signal.generated\".telegram`: invalid template"),
        "{msg}"
    );
    assert!(
        msg.contains("`templates.\"*\".channels.nowhere`: no channel named `nowhere`"),
        "{msg}"
    );
    let e = klaxon_core::config::Config::load(
        Some("[templates.x]\ntelegarm = \"{{ x }}\"\n"),
        &std::collections::BTreeMap::<String, String>::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("telegarm"), "{e}");
    let ok = klaxon_core::config::Config::load(
        Some("[templates.\"signal.*\"]\nall = \"{{ bold(data.symbol) }}\"\ndetails = true\n"),
        &std::collections::BTreeMap::<String, String>::new(),
    )
    .unwrap();
    let n = event("signal.generated", Severity::Info, json!({"symbol": "ES"}));
    let c = ok.templates.render(&n, "discord", "log", Markup::Discord);
    assert_eq!(c.body, "**ES**");
    assert!(c.details);
}
