//! Aggregation into digests (PRODUCT.md §6–7): which group a delivery waits in, when a group is
//! due, and the digest notification a group becomes. Time and ids are arguments; the store
//! holds the groups and the engine decides when to look.
//!
//! A group is one route, one channel target and the values of the route's `group_by` fields.
//! Its members wait until the oldest has waited `group_wait` and the group's last send is
//! `group_interval` ago; then up to `max_batch` of them become one digest. A group holding a
//! single member at that moment sends that notification as itself: a "1 signal" digest would
//! only say the same thing worse. Either kind of send starts the interval.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::model::{Notification, Severity};
use crate::route::{Route, RouteReason};

/// The event type of a digest notification; templates match on it.
pub const DIGEST_EVENT: &str = "klaxon.digest";
/// The source a digest carries: Klaxon made it.
pub const DIGEST_SOURCE: &str = "klaxon";

/// Where a delivery waits for its digest, and the rules of that group as configured when it
/// joined (stored with the group, so every replica flushes it the same way).
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    /// Route index, channel, group values, the rules below and (after
    /// [`Grouping::for_target`]) the recipient: equal keys share a digest.
    pub key: String,
    pub wait: Duration,
    pub interval: Duration,
    pub max_batch: usize,
    /// The `group_by` fields with this notification's values (`None`: the field is absent).
    pub values: Vec<(String, Option<String>)>,
}

/// The group `n`'s deliveries to `channel` join (one per target: see
/// [`Grouping::for_target`]), or `None` when they go out on their own: critical notifications,
/// explicit channels (no route chose them), and routes without `group_by`. The first matched
/// route that sends to `channel` decides.
pub fn grouping(
    routes: &[Route],
    why: &RouteReason,
    n: &Notification,
    channel: &str,
) -> Option<Grouping> {
    if n.severity == Severity::Critical {
        return None;
    }
    let RouteReason::Rules(matched) = why else {
        return None;
    };
    let (index, route) = matched
        .iter()
        .filter_map(|&i| routes.get(i).map(|r| (i, r)))
        .find(|(_, r)| r.to.iter().any(|c| c == channel))?;
    let spec = route.group.as_ref()?;
    let values: Vec<(String, Option<String>)> = spec
        .by
        .iter()
        .map(|f| (f.clone(), field_value(n, f)))
        .collect();
    let max_batch = spec.max_batch.max(1);
    // JSON keeps the parts apart whatever characters they hold. The rules are part of the
    // key: a changed configuration starts new groups, so a stored group's rules never change
    // and inserting a member never has to lock its group (a flush may hold it).
    let key = json!([
        index,
        channel,
        values,
        spec.wait.as_millis() as u64,
        spec.interval.as_millis() as u64,
        max_batch
    ])
    .to_string();
    Some(Grouping {
        key,
        wait: spec.wait,
        interval: spec.interval,
        max_batch,
        values,
    })
}

impl Grouping {
    /// The group of the delivery to one recipient (`target`) of the channel: recipients get
    /// digests of their own.
    pub fn for_target(&self, target: Option<&str>) -> Grouping {
        Grouping {
            key: format!("{}{}", self.key, json!([target])),
            ..self.clone()
        }
    }
}

/// A `group_by` field's value: the notification's own fields by name, else a `data` key
/// (`strategy` also finds `strategy_name`, as routes do).
pub fn field_value(n: &Notification, field: &str) -> Option<String> {
    match field {
        "source" => Some(n.source.clone()),
        "event_type" => n.event_type.clone(),
        "severity" => Some(n.severity.as_str().to_string()),
        "priority" => Some(n.priority.as_str().to_string()),
        "user_id" => n.user_id.clone(),
        _ => n
            .data
            .get(field)
            .or_else(|| (field == "strategy").then(|| n.data.get("strategy_name"))?)
            .and_then(scalar_text),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(x) => Some(x.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// When a group may be flushed: its oldest member has waited `wait`, and the group is not
/// held by its last send (`held_until` = that send + `interval`).
pub fn due_at(
    oldest: DateTime<Utc>,
    held_until: Option<DateTime<Utc>>,
    wait: Duration,
) -> DateTime<Utc> {
    let first = oldest + delta(wait);
    held_until.map_or(first, |h| first.max(h))
}

/// What a flush does with the members that are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPlan {
    /// Nothing to send yet.
    Wait,
    /// One member: it goes out as itself.
    Release,
    /// This many members (at most `max_batch`) become one digest.
    Digest(usize),
}

/// The flush decision at `now` for a group whose `members` eligible members' oldest arrived at
/// `oldest`.
pub fn plan(
    now: DateTime<Utc>,
    oldest: Option<DateTime<Utc>>,
    held_until: Option<DateTime<Utc>>,
    wait: Duration,
    members: usize,
    max_batch: usize,
) -> FlushPlan {
    let Some(oldest) = oldest else {
        return FlushPlan::Wait;
    };
    if members == 0 || now < due_at(oldest, held_until, wait) {
        return FlushPlan::Wait;
    }
    match members.min(max_batch.max(1)) {
        1 => FlushPlan::Release,
        n => FlushPlan::Digest(n),
    }
}

/// Until when a send at `now` holds the group: a full batch that left members behind does
/// not hold them for another interval (they have waited already, and a backlog must not grow
/// without bound); otherwise for the interval.
pub fn held_after(now: DateTime<Utc>, interval: Duration, left_behind: bool) -> DateTime<Utc> {
    if left_behind {
        now
    } else {
        now + delta(interval)
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// The digest of `members` (oldest first) for `channel`: highest severity and priority of
/// its members, a one-line title, a compact plain-text table as the message, and `data` in
/// the shape the `klaxon.digest` template reads:
/// `{"count", "window_secs", "group": {field: value}, "items": [{"id", "time", "title",
/// "message", "severity", "event_type", "symbol", "action", "price"}]}`.
pub fn digest(
    id: Uuid,
    now: DateTime<Utc>,
    channel: &str,
    values: &[(String, Option<String>)],
    members: &[Notification],
) -> Notification {
    let count = members.len();
    let first = members.iter().map(|m| m.created_at).min().unwrap_or(now);
    let last = members.iter().map(|m| m.created_at).max().unwrap_or(now);
    let window_secs = window_secs(first, last);
    let noun = if !members.is_empty()
        && members.iter().all(|m| {
            m.event_type
                .as_deref()
                .is_some_and(|t| t.starts_with("signal"))
        }) {
        "signals"
    } else {
        "notifications"
    };
    let label: Vec<&str> = values.iter().filter_map(|(_, v)| v.as_deref()).collect();
    let mut title = format!("{count} {noun} in {window_secs} s");
    if !label.is_empty() {
        title.push_str(" · ");
        title.push_str(&label.join(" · "));
    }
    let severity = members.iter().map(|m| m.severity).max().unwrap_or_default();
    let priority = members
        .iter()
        .map(|m| m.priority)
        .max()
        .unwrap_or(severity.default_priority());
    let group: Map<String, Value> = values
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
        .collect();
    let items: Vec<Value> = members
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "time": m.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "title": m.title,
                "message": m.message,
                "severity": m.severity,
                "event_type": m.event_type,
                "symbol": m.data.get("symbol").cloned().unwrap_or(Value::Null),
                "action": m.data.get("action").cloned().unwrap_or(Value::Null),
                "price": m.data.get("price").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    let mut data = Map::new();
    data.insert("count".into(), json!(count));
    data.insert("window_secs".into(), json!(window_secs));
    data.insert("group".into(), Value::Object(group));
    data.insert("items".into(), Value::Array(items));
    // Recipients keyed by user (rate limits, targets) still see whose digest it is.
    let user_id = members
        .first()
        .and_then(|m| m.user_id.clone())
        .filter(|u| members.iter().all(|m| m.user_id.as_deref() == Some(u)));
    Notification {
        id,
        created_at: now,
        message: table(members),
        title: Some(title),
        severity,
        priority,
        event_type: Some(DIGEST_EVENT.into()),
        source: DIGEST_SOURCE.into(),
        user_id,
        channels: Some(vec![channel.to_string()]),
        tags: vec!["digest".into()],
        data,
        idempotency_key: None,
        dedup_key: None,
        dedup_window_secs: None,
        send_at: None,
        expires_at: None,
        attachments: Vec::new(),
    }
}

/// Whole seconds from the first member to the last, at least 1 so a burst reads
/// "in 1 s" rather than "in 0 s".
fn window_secs(first: DateTime<Utc>, last: DateTime<Utc>) -> i64 {
    let ms = (last - first).num_milliseconds().max(0);
    ((ms + 999) / 1000).max(1)
}

/// One line per member: time, symbol, action, price, title — columns padded to their widest
/// cell, empty columns left out.
fn table(members: &[Notification]) -> String {
    let cell = |m: &Notification, k: &str| m.data.get(k).map(text_of).unwrap_or_default();
    let rows: Vec<[String; 5]> = members
        .iter()
        .map(|m| {
            [
                m.created_at.format("%H:%M:%S").to_string(),
                cell(m, "symbol"),
                cell(m, "action"),
                cell(m, "price"),
                m.title.clone().unwrap_or_else(|| first_line(&m.message)),
            ]
        })
        .collect();
    let mut widths = [0usize; 5];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if widths[i] == 0 {
                continue;
            }
            if !line.is_empty() {
                line.push_str("  ");
            }
            line.push_str(c);
            if i + 1 < r.len() {
                let pad = widths[i] - c.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.pop();
    out
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{GroupSpec, RouteMatch};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_600_000 + secs, 0).unwrap()
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// now, oldest, held until (seconds), members, max_batch → the plan.
    type Case = (i64, Option<i64>, Option<i64>, usize, usize, FlushPlan);

    #[test]
    fn due_and_flush_decisions() {
        // With wait 2 s.
        let table: &[Case] = &[
            (0, None, None, 0, 100, FlushPlan::Wait),
            (1, Some(0), None, 5, 100, FlushPlan::Wait),
            (2, Some(0), None, 5, 100, FlushPlan::Digest(5)),
            (2, Some(0), None, 1, 100, FlushPlan::Release),
            (3, Some(0), None, 250, 100, FlushPlan::Digest(100)),
            (3, Some(0), None, 0, 100, FlushPlan::Wait),
            // A send holds the group until its interval is over …
            (7, Some(5), Some(12), 3, 100, FlushPlan::Wait),
            (12, Some(5), Some(12), 3, 100, FlushPlan::Digest(3)),
            // … and a late member still waits its own `wait` after that.
            (12, Some(11), Some(12), 3, 100, FlushPlan::Wait),
            (13, Some(11), Some(12), 3, 100, FlushPlan::Digest(3)),
            (13, Some(11), Some(12), 3, 1, FlushPlan::Release),
        ];
        for &(now, oldest, held, members, max, want) in table {
            let got = plan(at(now), oldest.map(at), held.map(at), S(2), members, max);
            assert_eq!(
                got, want,
                "now {now}, oldest {oldest:?}, held {held:?}, {members} members"
            );
        }
        assert_eq!(due_at(at(5), Some(at(12)), S(2)), at(12));
        assert_eq!(due_at(at(11), Some(at(12)), S(2)), at(13));
        assert_eq!(held_after(at(3), S(10), false), at(13));
        assert_eq!(held_after(at(3), S(10), true), at(3));
    }

    fn signal(secs: i64, symbol: &str, action: &str, price: f64) -> Notification {
        let mut n = Notification::new(format!("{action} {symbol} @ {price}"))
            .title(format!("{action} {symbol}"))
            .event_type("signal.generated")
            .data("symbol", symbol)
            .data("action", action)
            .data("price", price);
        n.created_at = at(secs);
        n
    }

    #[test]
    fn digest_text_and_data() {
        let members = vec![
            signal(0, "MNQI", "BUY", 21050.25),
            signal(12, "MNQI", "SELL", 21062.5).severity(Severity::Warning),
            signal(29, "MNQI", "BUY", 21040.0),
        ];
        let values = vec![("symbol".to_string(), Some("MNQI".to_string()))];
        let id = Uuid::nil();
        let d = digest(id, at(40), "signals", &values, &members);
        assert_eq!(d.title.as_deref(), Some("3 signals in 29 s · MNQI"));
        assert_eq!(
            d.message,
            "14:40:00  MNQI  BUY   21050.25  BUY MNQI\n\
             14:40:12  MNQI  SELL  21062.5   SELL MNQI\n\
             14:40:29  MNQI  BUY   21040.0   BUY MNQI"
        );
        assert_eq!(d.severity, Severity::Warning);
        assert_eq!(d.event_type.as_deref(), Some(DIGEST_EVENT));
        assert_eq!(d.source, DIGEST_SOURCE);
        assert_eq!(d.channels, Some(vec!["signals".to_string()]));
        assert_eq!(d.created_at, at(40));
        let data = Value::Object(d.data.clone());
        assert_eq!(data["count"], 3);
        assert_eq!(data["window_secs"], 29);
        assert_eq!(data["group"], json!({"symbol": "MNQI"}));
        assert_eq!(
            data["items"][1],
            json!({
                "id": members[1].id,
                "time": "2025-12-01T14:40:12.000Z",
                "title": "SELL MNQI",
                "message": "SELL MNQI @ 21062.5",
                "severity": "warning",
                "event_type": "signal.generated",
                "symbol": "MNQI",
                "action": "SELL",
                "price": 21062.5,
            })
        );
    }

    #[test]
    fn digest_of_plain_notifications_leaves_out_empty_columns() {
        let mut a = Notification::new("disk 91%\nhost a");
        a.created_at = at(0);
        let mut b = Notification::new("disk 95%").title("Disk");
        b.created_at = at(0);
        let d = digest(Uuid::nil(), at(5), "ops", &[], &[a, b]);
        assert_eq!(d.title.as_deref(), Some("2 notifications in 1 s"));
        assert_eq!(d.message, "14:40:00  disk 91%\n14:40:00  Disk");
        assert_eq!(Value::Object(d.data)["group"], json!({}));
    }

    #[test]
    fn grouping_follows_the_matched_route() {
        let grouped = Route {
            matcher: RouteMatch::default(),
            to: vec!["dc".into(), "tg".into()],
            group: Some(GroupSpec {
                by: vec!["symbol".into(), "strategy".into()],
                wait: S(2),
                interval: S(10),
                max_batch: 50,
            }),
            ..Default::default()
        };
        let plain = Route {
            to: vec!["log".into()],
            ..Default::default()
        };
        let routes = vec![plain, grouped];
        let why = RouteReason::Rules(vec![0, 1]);
        let n = signal(0, "MNQI", "BUY", 1.0).data("strategy_name", "bae");
        let g = grouping(&routes, &why, &n, "dc")
            .expect("grouped")
            .for_target(None);
        assert_eq!(
            g.values,
            vec![
                ("symbol".into(), Some("MNQI".into())),
                ("strategy".into(), Some("bae".into()))
            ]
        );
        assert_eq!((g.wait, g.interval, g.max_batch), (S(2), S(10), 50));
        // Same group for the same values, another for another channel, target or symbol.
        let key = |n: &Notification, channel: &str, target: Option<&str>| {
            grouping(&routes, &why, n, channel).map(|g| g.for_target(target).key)
        };
        assert_eq!(key(&n, "dc", None), Some(g.key.clone()));
        let other = [
            key(&n, "tg", None),
            key(&n, "dc", Some("chat")),
            key(&signal(0, "ES", "BUY", 1.0), "dc", None),
        ];
        for o in other {
            assert_ne!(o.expect("grouped"), g.key);
        }
        // Not grouped: a route without group_by, critical, explicit channels.
        assert_eq!(grouping(&routes, &why, &n, "log"), None);
        let crit = n.clone().severity(Severity::Critical);
        assert_eq!(grouping(&routes, &why, &crit, "dc"), None);
        assert_eq!(grouping(&routes, &RouteReason::Explicit, &n, "dc"), None);
    }
}
