//! What may go out now, decided before a send: quiet hours in the operator's time zone, and the
//! freshness of time-sensitive events (PRODUCT.md §7; issue 4, items 9 and 10).
//!
//! Pure: the instant is an argument. The engine asks [`QuietHours::quiet_until`] and
//! [`Freshness::judge`] at claim time, and judges freshness again at send time, because a
//! BUY signal ten minutes late must not look fresh.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{
    DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::model::Notification;

/// What happens to a non-critical delivery while its channel is muted or in quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WhenMuted {
    /// Held until the quiet ends, then sent.
    #[default]
    Wait,
    /// Ended `suppressed`, with the reason recorded.
    Suppress,
}

/// What happens to a notification older than its event type's `max_age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenStale {
    /// Sent with a STALE marker in its title and `data.stale`.
    #[default]
    Mark,
    /// Ended `expired`, with the reason recorded.
    Expire,
}

/// A daily window of local wall-clock time, `"22:00-07:00"`; it crosses midnight when the end
/// is not after the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl FromStr for Window {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a window like \"22:00-07:00\" (HH:MM-HH:MM)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let time = |t: &str| NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| bad());
        let (start, end) = (time(a)?, time(b)?);
        if start == end {
            return Err(format!(
                "`{s}` is empty: start and end are the same (use \"00:00-23:59\" for all day)"
            ));
        }
        Ok(Window { start, end })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

impl Window {
    /// If local time `t` on `day` is inside, the local date-time when this stretch ends.
    fn end_after(&self, day: NaiveDate, t: NaiveTime) -> Option<NaiveDateTime> {
        if self.start < self.end {
            (self.start <= t && t < self.end).then(|| day.and_time(self.end))
        } else if t >= self.start {
            day.succ_opt().map(|d| d.and_time(self.end))
        } else if t < self.end {
            Some(day.and_time(self.end))
        } else {
            None
        }
    }
}

/// A channel's quiet hours: windows of local time in one IANA zone.
#[derive(Debug, Clone, PartialEq)]
pub struct QuietHours {
    pub windows: Vec<Window>,
    pub tz: Tz,
}

/// Windows can chain (`"22:00-00:00"` then `"00:00-07:00"`); more links than this would need
/// more windows than anyone configures.
const MAX_CHAIN: usize = 64;

impl QuietHours {
    /// Parses a zone name (`"Europe/Berlin"`, `"UTC"`); the error names the value.
    pub fn zone(name: &str) -> Result<Tz, String> {
        name.parse::<Tz>().map_err(|_| {
            format!("`{name}` is not an IANA time zone like \"Europe/Berlin\" or \"UTC\"")
        })
    }

    /// If `now` is inside a window, the first instant after it that is inside none.
    pub fn quiet_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut at = now;
        for _ in 0..MAX_CHAIN {
            let local = at.with_timezone(&self.tz).naive_local();
            let end = self
                .windows
                .iter()
                .filter_map(|w| w.end_after(local.date(), local.time()))
                .max();
            match end {
                Some(end) => at = self.instant(end, at),
                None => break,
            }
        }
        (at > now).then_some(at)
    }

    /// The first instant after `after` whose local wall-clock time is `local`. In the hour a
    /// fall-back repeats, the next of the two; inside a spring-forward gap, the gap's end.
    fn instant(&self, local: NaiveDateTime, after: DateTime<Utc>) -> DateTime<Utc> {
        let mut t = local;
        // Real gaps are an hour or two; a day is far past any of them.
        for _ in 0..(24 * 60) {
            match self.tz.from_local_datetime(&t) {
                LocalResult::Single(d) => return d.with_timezone(&Utc),
                LocalResult::Ambiguous(a, b) => {
                    let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                    let (first, second) = (a.min(b), a.max(b));
                    return if first > after { first } else { second };
                }
                LocalResult::None => t += TimeDelta::minutes(1),
            }
        }
        Utc.from_utc_datetime(&local)
    }

    /// `"22:00-07:00 Europe/Berlin"`: how the reason of a suppressed delivery names it.
    pub fn describe(&self) -> String {
        let w: Vec<String> = self.windows.iter().map(Window::to_string).collect();
        format!("{} {}", w.join(", "), self.tz.name())
    }
}

/// How old an event type's notifications may be when they go out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Freshness {
    pub max_age: Duration,
    pub when_stale: WhenStale,
}

/// `[events."signal.*"]`: a glob over event types and its freshness; `None` switches a
/// built-in default off.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRule {
    pub pattern: String,
    pub freshness: Option<Freshness>,
}

/// Signals lose their worth within minutes (issue 4, item 10): these are marked when older.
pub const SIGNAL_MAX_AGE: Duration = Duration::from_secs(120);
pub const SIGNAL_TYPES: [&str; 3] = ["signal.generated", "webhook.signal", "tradingview.alert"];

/// What freshness asks of one send.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    Fresh,
    /// Send a copy marked STALE ([`mark_stale`]).
    Stale {
        age: Duration,
        max_age: Duration,
    },
    /// End the delivery `expired` with this reason.
    Expire(String),
}

impl Freshness {
    /// The rule for `event_type`: the configured pattern that matches it most specifically (an
    /// exact name before any glob, then the longest pattern), else the built-in default.
    pub fn for_event(rules: &[EventRule], event_type: Option<&str>) -> Option<Freshness> {
        let et = event_type?;
        let configured = rules
            .iter()
            .filter(|r| crate::route::glob(&r.pattern, et))
            .max_by_key(|r| (r.pattern.eq_ignore_ascii_case(et), r.pattern.len()));
        match configured {
            Some(r) => r.freshness,
            None => SIGNAL_TYPES.contains(&et).then_some(Freshness {
                max_age: SIGNAL_MAX_AGE,
                when_stale: WhenStale::Mark,
            }),
        }
    }

    /// Age is the send time minus the notification's `created_at` (the envelope's timestamp).
    pub fn judge(&self, created_at: DateTime<Utc>, now: DateTime<Utc>) -> Judgement {
        let age = (now - created_at).to_std().unwrap_or_default();
        if age <= self.max_age {
            return Judgement::Fresh;
        }
        match self.when_stale {
            WhenStale::Mark => Judgement::Stale {
                age,
                max_age: self.max_age,
            },
            WhenStale::Expire => Judgement::Expire(format!(
                "older than max_age {} (age {})",
                human(self.max_age),
                human(age)
            )),
        }
    }
}

/// A copy of `n` that cannot be mistaken for fresh: the title starts with
/// `⏰ STALE (10m 3s late) · `, and `data.stale` carries the numbers for templates.
pub fn mark_stale(n: &Notification, age: Duration, max_age: Duration) -> Notification {
    let mut m = n.clone();
    let marker = format!("⏰ STALE ({} late)", human(age));
    m.title = Some(format!("{marker} · {}", crate::render::title(n)));
    m.data.insert(
        "stale".into(),
        serde_json::json!({
            "age_secs": age.as_secs(),
            "max_age_secs": max_age.as_secs(),
            "text": marker,
        }),
    );
    m
}

/// `"2m"`, `"10m 3s"`, `"1h 5m"`: a duration as people read it, to the second.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let parts = [
        (s / 86_400, "d"),
        (s / 3600 % 24, "h"),
        (s / 60 % 60, "m"),
        (s % 60, "s"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if text.is_empty() {
        "0s".into()
    } else {
        text.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn quiet(windows: &[&str], tz: &str) -> QuietHours {
        QuietHours {
            windows: windows.iter().map(|w| w.parse().unwrap()).collect(),
            tz: QuietHours::zone(tz).unwrap(),
        }
    }

    #[test]
    fn windows_parse_and_name_bad_input() {
        let w: Window = "22:00-07:00".parse().unwrap();
        assert_eq!(w.to_string(), "22:00-07:00");
        for bad in ["22-7", "25:00-07:00", "22:00", "07:00-07:00", ""] {
            let e = bad.parse::<Window>().unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
        assert!(
            QuietHours::zone("Mars/Olympus")
                .unwrap_err()
                .contains("Mars/Olympus")
        );
    }

    #[test]
    fn quiet_until_table() {
        let berlin = quiet(&["22:00-07:00"], "Europe/Berlin");
        let day = quiet(&["12:00-13:30"], "UTC");
        let chained = quiet(&["22:00-00:00", "00:00-07:00", "06:30-08:00"], "UTC");
        let cases: &[(&QuietHours, &str, Option<&str>)] = &[
            // Winter, CET = UTC+1: 23:00 local, the window crosses midnight.
            (
                &berlin,
                "2026-01-15T22:00:00Z",
                Some("2026-01-16T06:00:00Z"),
            ),
            // 01:00 local, after midnight: ends the same morning.
            (
                &berlin,
                "2026-01-16T00:00:00Z",
                Some("2026-01-16T06:00:00Z"),
            ),
            // 07:00 local sharp: the end is outside.
            (&berlin, "2026-01-16T06:00:00Z", None),
            // 21:59 local: not yet.
            (&berlin, "2026-01-15T20:59:00Z", None),
            // Summer, CEST = UTC+2: the same window is an hour earlier in UTC.
            (
                &berlin,
                "2026-07-15T21:00:00Z",
                Some("2026-07-16T05:00:00Z"),
            ),
            // Spring forward (29 March 2026, 02:00 → 03:00): the night is an hour shorter.
            (
                &berlin,
                "2026-03-28T22:00:00Z",
                Some("2026-03-29T05:00:00Z"),
            ),
            // Fall back (25 October 2026, 03:00 → 02:00): an hour longer.
            (
                &berlin,
                "2026-10-24T21:00:00Z",
                Some("2026-10-25T06:00:00Z"),
            ),
            (&day, "2026-05-01T12:00:00Z", Some("2026-05-01T13:30:00Z")),
            (&day, "2026-05-01T13:30:00Z", None),
            (&day, "2026-05-01T11:59:59Z", None),
            // Windows that touch or overlap make one stretch of quiet.
            (
                &chained,
                "2026-05-01T23:00:00Z",
                Some("2026-05-02T08:00:00Z"),
            ),
        ];
        for (q, now, want) in cases {
            assert_eq!(
                q.quiet_until(utc(now)),
                want.map(utc),
                "{} at {now}",
                q.describe()
            );
        }
    }

    #[test]
    fn a_window_ending_in_a_dst_gap_ends_when_the_gap_does() {
        // 02:30 does not exist in Berlin on 29 March 2026: the clock goes 01:59 → 03:00.
        let q = quiet(&["01:00-02:30"], "Europe/Berlin");
        assert_eq!(
            q.quiet_until(utc("2026-03-29T00:30:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
        // 02:30 happens twice on 25 October: quiet ends at the first, and the repeated hour
        // (02:00 again, as CET) is quiet once more.
        let q = quiet(&["02:00-02:30"], "Europe/Berlin");
        assert_eq!(
            q.quiet_until(utc("2026-10-25T00:10:00Z")),
            Some(utc("2026-10-25T00:30:00Z"))
        );
        assert_eq!(
            q.quiet_until(utc("2026-10-25T01:10:00Z")),
            Some(utc("2026-10-25T01:30:00Z"))
        );
    }

    #[test]
    fn freshness_rules_and_defaults() {
        let rules = vec![
            EventRule {
                pattern: "signal.*".into(),
                freshness: Some(Freshness {
                    max_age: Duration::from_secs(60),
                    when_stale: WhenStale::Expire,
                }),
            },
            EventRule {
                pattern: "tradingview.alert".into(),
                freshness: None,
            },
        ];
        let f = |et| Freshness::for_event(&rules, et);
        assert_eq!(
            f(Some("signal.generated")).unwrap().max_age,
            Duration::from_secs(60)
        );
        assert_eq!(f(Some("tradingview.alert")), None, "switched off");
        let builtin = f(Some("webhook.signal")).unwrap();
        assert_eq!(
            (builtin.max_age, builtin.when_stale),
            (SIGNAL_MAX_AGE, WhenStale::Mark)
        );
        assert_eq!(f(Some("trade.executed")), None);
        assert_eq!(f(None), None);
    }

    #[test]
    fn judge_table() {
        let created = utc("2026-05-01T12:00:00Z");
        let mark = Freshness {
            max_age: SIGNAL_MAX_AGE,
            when_stale: WhenStale::Mark,
        };
        let expire = Freshness {
            when_stale: WhenStale::Expire,
            ..mark
        };
        assert_eq!(
            mark.judge(created, utc("2026-05-01T12:02:00Z")),
            Judgement::Fresh
        );
        // A timestamp from a clock running ahead is fresh, not negative.
        assert_eq!(
            mark.judge(created, utc("2026-05-01T11:59:00Z")),
            Judgement::Fresh
        );
        assert_eq!(
            mark.judge(created, utc("2026-05-01T12:10:03Z")),
            Judgement::Stale {
                age: Duration::from_secs(603),
                max_age: SIGNAL_MAX_AGE
            }
        );
        assert_eq!(
            expire.judge(created, utc("2026-05-01T12:10:03Z")),
            Judgement::Expire("older than max_age 2m (age 10m 3s)".into())
        );
    }

    #[test]
    fn marked_copy_says_stale_in_title_and_data() {
        let n = Notification::new("BUY MNQ @ 23488.75").title("🟢 BUY MNQ");
        let m = mark_stale(&n, Duration::from_secs(603), SIGNAL_MAX_AGE);
        assert_eq!(
            m.title.as_deref(),
            Some("⏰ STALE (10m 3s late) · 🟢 BUY MNQ")
        );
        assert_eq!(m.message, n.message);
        assert_eq!(m.data["stale"]["age_secs"], 603);
        assert_eq!(m.data["stale"]["max_age_secs"], 120);
        let untitled = Notification::new("x").event_type("signal.generated");
        let m = mark_stale(&untitled, Duration::from_secs(180), SIGNAL_MAX_AGE);
        assert_eq!(
            m.title.as_deref(),
            Some("⏰ STALE (3m late) · signal.generated")
        );
        assert_eq!(human(Duration::from_secs(3725)), "1h 2m 5s");
        assert_eq!(human(Duration::ZERO), "0s");
    }
}
