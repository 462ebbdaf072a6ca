//! Rate-limit maths: GCRA (the generic cell rate algorithm) over named keys.
//!
//! Pure: time is a `Duration` since an origin the caller picks (the engine uses a monotonic
//! clock, tests a number). We do not use `governor` because the engine needs *reservations*
//! ("when may this send go, counting the others already planned?") across several keys at once
//! (bot, chat, group), and pauses imposed by a 429; and because the same maths will run as a
//! Redis script for shared limits, so it should be ours and small.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A rate such as `"30/s"`, `"20/min"`, `"1000/h"`, with a burst (default 1; `"1/s burst 3"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Events allowed per `per`.
    pub count: u32,
    pub per: Duration,
    /// How many may go back to back before the spacing applies.
    pub burst: u32,
}

impl Rate {
    pub const fn new(count: u32, per: Duration, burst: u32) -> Self {
        Rate { count, per, burst }
    }

    /// The spacing between events at the steady rate.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }

    /// How far ahead of its steady schedule a key may run: the burst beyond the first send.
    pub fn tolerance(&self) -> Duration {
        self.interval() * (self.burst.max(1) - 1)
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("`{s}` is not a rate like \"30/s\", \"20/min\", \"1000/h\" or \"1/s burst 3\"")
        };
        let (rate, burst) = match s.split_once("burst") {
            Some((r, b)) => (r.trim(), b.trim().parse::<u32>().map_err(|_| bad())?),
            None => (s.trim(), 1),
        };
        let (count, unit) = rate.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        if count == 0 || burst == 0 {
            return Err(bad());
        }
        Ok(Rate { count, per, burst })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            86_400 => "d",
            _ => return write!(f, "{}/{:?} burst {}", self.count, self.per, self.burst),
        };
        write!(f, "{}/{unit}", self.count)?;
        if self.burst > 1 {
            write!(f, " burst {}", self.burst)?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Keyed GCRA state: per key, the theoretical arrival time (TAT) of the next event. Keys are
/// channels, their configured recipients, and the users notifications name; a key whose TAT has
/// passed holds no information, so those are dropped as the map grows.
#[derive(Debug, Default)]
pub struct Limiter {
    tat: HashMap<String, Duration>,
    /// The map is swept of spent keys when it grows past this (then twice what is left).
    sweep_at: usize,
}

/// Below this many keys the limiter never sweeps: configuration-sized maps stay untouched.
const SWEEP_MIN: usize = 1024;

/// A key and the rate that applies to it, as a channel declares them for one send.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitKey {
    pub key: String,
    pub rate: Rate,
}

impl Limiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The earliest time at or after `now` when a send under every key conforms.
    pub fn earliest(&self, keys: &[LimitKey], now: Duration) -> Duration {
        keys.iter()
            .map(|k| {
                let tat = self.tat.get(&k.key).copied().unwrap_or(Duration::ZERO);
                tat.saturating_sub(k.rate.tolerance())
            })
            .fold(now, Duration::max)
    }

    /// Reserves a slot under every key: returns when the send may go (≥ `now`) and counts it,
    /// so the next caller is planned after it.
    pub fn reserve(&mut self, keys: &[LimitKey], now: Duration) -> Duration {
        if self.tat.len() >= self.sweep_at.max(SWEEP_MIN) {
            self.tat.retain(|_, tat| *tat > now);
            self.sweep_at = self.tat.len() * 2;
        }
        let at = self.earliest(keys, now);
        for k in keys {
            let tat = self.tat.entry(k.key.clone()).or_insert(Duration::ZERO);
            *tat = (*tat).max(at) + k.rate.interval();
        }
        at
    }

    /// Makes nothing under `key` conform before `until` (a provider's 429 `retry_after`).
    pub fn pause(&mut self, key: &str, rate: Rate, until: Duration) {
        let tat = self.tat.entry(key.to_string()).or_insert(Duration::ZERO);
        *tat = (*tat).max(until + rate.tolerance());
    }
}

/// Per-user limits of a channel (issue 4, item 9): each rate is a window that admits its whole
/// count at once, then refills at the steady rate, so `60/min` lets a burst of alerts through
/// while `1000/h` alongside it does not space every send 3.6 s apart.
pub fn user_keys(channel: &str, user: &str, rates: &[Rate]) -> Vec<LimitKey> {
    rates
        .iter()
        .map(|r| LimitKey {
            key: format!("user:{channel}:{}:{user}", r.per.as_secs()),
            rate: *r,
        })
        .collect()
}

/// A per-user rate as written: `"30/min"` without a burst admits all 30 at once.
pub fn window_rate(text: &str) -> Result<Rate, String> {
    let mut r: Rate = text.parse()?;
    if !text.contains("burst") {
        r.burst = r.count;
    }
    Ok(r)
}

/// `count` per `per`, all of it admissible at once.
pub const fn window(count: u32, per: Duration) -> Rate {
    Rate::new(count, per, count)
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
/// Built-in per-user limits (issue 4, item 9), applied when a notification names a user and the
/// channel configures none. Providers that bill or block per message get tight ones.
pub const EMAIL_PER_USER: [Rate; 2] = [window(60, MINUTE), window(1000, HOUR)];
pub const SMS_PER_USER: [Rate; 2] = [window(10, MINUTE), window(100, HOUR)];
pub const TELEGRAM_PER_USER: [Rate; 2] = [window(30, MINUTE), window(1000, HOUR)];

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str, rate: &str) -> LimitKey {
        LimitKey {
            key: k.into(),
            rate: rate.parse().unwrap(),
        }
    }

    #[test]
    fn parses_rates() {
        let r: Rate = "20/min".parse().unwrap();
        assert_eq!(r.interval(), Duration::from_secs(3));
        let r: Rate = "1/s burst 3".parse().unwrap();
        assert_eq!((r.count, r.burst), (1, 3));
        assert_eq!(r.to_string(), "1/s burst 3");
        assert!("fast".parse::<Rate>().is_err());
        assert!("0/s".parse::<Rate>().is_err());
    }

    #[test]
    fn burst_then_spacing() {
        let mut l = Limiter::new();
        let k = [key("chat", "1/s burst 3")];
        let t0 = Duration::from_secs(100);
        let slots: Vec<_> = (0..5).map(|_| l.reserve(&k, t0) - t0).collect();
        assert_eq!(
            slots,
            [0, 0, 0, 1, 2].map(Duration::from_secs).to_vec(),
            "three back to back, then one a second"
        );
    }

    #[test]
    fn several_keys_take_the_strictest() {
        let mut l = Limiter::new();
        let t0 = Duration::from_secs(10);
        // 40 sends over 20 chats: per chat 1/s, per bot 30/s.
        let mut max_at = Duration::ZERO;
        for i in 0..40 {
            let keys = [key("bot", "30/s"), key(&format!("chat{}", i % 20), "1/s")];
            max_at = max_at.max(l.reserve(&keys, t0));
        }
        // Round two per chat starts a second after round one, then the bot limit spaces the
        // twenty at 1/30 s: the last goes at 1 s + 19/30 s.
        let last = max_at - t0;
        assert!(
            last >= Duration::from_millis(1633) && last < Duration::from_millis(1634),
            "{last:?}"
        );
    }

    #[test]
    fn per_user_window_admits_a_burst_then_waits() {
        let mut l = Limiter::new();
        let t0 = Duration::from_secs(1000);
        let rates = [window_rate("3/min").unwrap(), window_rate("5/h").unwrap()];
        let chan = key("channel:mail", "100/s burst 100");
        let mut slots = Vec::new();
        for _ in 0..6 {
            let mut keys = user_keys("mail", "alice", &rates);
            keys.push(chan.clone());
            slots.push(l.reserve(&keys, t0) - t0);
        }
        // Three at once, then one per 20 s (3/min); the sixth waits for 5/h.
        assert_eq!(
            slots,
            [0, 0, 0, 20, 40, 720].map(Duration::from_secs).to_vec()
        );
        // Another user, same channel: not held by alice's sends.
        let bob = user_keys("mail", "bob", &rates);
        assert_eq!(l.reserve(&bob, t0), t0);
        assert_eq!(window_rate("2/s burst 1").unwrap().burst, 1);
        assert!(window_rate("often").is_err());
    }

    #[test]
    fn spent_keys_are_swept_as_the_map_grows() {
        let mut l = Limiter::new();
        let rate: Rate = "1/s".parse().unwrap();
        for u in 0..5000 {
            let t = Duration::from_secs(u);
            l.reserve(&user_keys("c", &u.to_string(), &[rate]), t);
        }
        assert!(l.tat.len() < 2 * SWEEP_MIN, "{} keys kept", l.tat.len());
    }

    #[test]
    fn pause_holds_until() {
        let mut l = Limiter::new();
        let k = key("webhook", "5/s burst 5");
        l.pause(&k.key, k.rate, Duration::from_secs(30));
        assert_eq!(
            l.earliest(std::slice::from_ref(&k), Duration::from_secs(1)),
            Duration::from_secs(30)
        );
        assert_eq!(
            l.earliest(&[k], Duration::from_secs(31)),
            Duration::from_secs(31)
        );
    }
}
