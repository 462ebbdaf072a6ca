//! Rate-limit maths: GCRA (the generic cell rate algorithm) over named keys.
//!
//! Pure: time is a `Duration` since an origin the caller picks (the engine uses a monotonic
//! clock, tests a number). We do not use `governor` because the engine needs *reservations*
//! ("when may this send go, counting the others already planned?") across several keys at once
//! (bot, chat, group), and pauses imposed by a 429; and because the same maths will run as a
//! Redis script for shared limits, so it should be ours and small.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A rate such as `"30/s"`, `"20/min"`, `"1000/h"`, with a burst (default 1; `"1/s burst 3"`).
///
/// Two shapes. A token bucket (the default): `burst` back to back, then one every `per / count`.
/// A sliding window (`Rate::sliding`, for providers that count "N in any window", such as
/// Telegram's 30 messages a second per bot): any `count` at once, and never more than `count` in
/// any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Events allowed per `per`.
    pub count: u32,
    pub per: Duration,
    /// How many may go back to back before the spacing applies.
    pub burst: u32,
    /// Counted in sliding windows of `per` rather than as a token bucket.
    pub sliding: bool,
}

impl Rate {
    pub const fn new(count: u32, per: Duration, burst: u32) -> Self {
        Rate {
            count,
            per,
            burst,
            sliding: false,
        }
    }

    /// At most `count` in any window of `per`, any of them at once.
    pub const fn sliding(count: u32, per: Duration) -> Self {
        Rate {
            count,
            per,
            burst: count,
            sliding: true,
        }
    }

    /// The spacing between events at the steady rate.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }

    /// How far ahead of its steady schedule a key may run as a token bucket: the burst beyond
    /// the first send. A sliding window has none: spaced at its interval, it never holds more
    /// than its count (which is how shared limits, plain GCRA, keep it).
    pub fn tolerance(&self) -> Duration {
        if self.sliding {
            return Duration::ZERO;
        }
        self.interval() * (self.burst.max(1) - 1)
    }

    /// As a calendar of booked sends: at most `.0` in any window of `.1`. A sliding window is
    /// one; so is a token bucket without a burst (one per interval, at any spacing ≥ it). A
    /// bucket with a burst has no such window and is kept as GCRA.
    pub fn calendar(&self) -> Option<(usize, Duration)> {
        if self.sliding {
            Some((self.count.max(1) as usize, self.per))
        } else if self.burst <= 1 {
            Some((1, self.interval()))
        } else {
            None
        }
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
        Ok(Rate::new(count, per, burst))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_millis() {
            1_000 => "s",
            60_000 => "min",
            3_600_000 => "h",
            86_400_000 => "d",
            _ if self.sliding => return write!(f, "{} in any {:?}", self.count, self.per),
            _ => return write!(f, "{}/{:?} burst {}", self.count, self.per, self.burst),
        };
        write!(f, "{}/{unit}", self.count)?;
        if self.sliding {
            write!(f, " in any window")?;
        } else if self.burst > 1 {
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

/// Keyed rate-limit state. Keys are channels, their configured recipients, and the users
/// notifications name.
///
/// A key whose rate has a window (see `Rate::calendar`) keeps a calendar of the sends booked
/// under it, and a new send takes the earliest time that fits between them. GCRA keeps only
/// its frontier (the theoretical arrival time), so every send booked behind a far-off one
/// waited for it: a backlog of thirty messages to one Telegram chat, booked out to 30 s, held
/// a message to every other chat of the same bot until then. A bucket with a burst keeps GCRA.
/// Keys that hold no information any more are dropped as the map grows.
#[derive(Debug, Default)]
pub struct Limiter {
    keys: HashMap<String, KeyState>,
    /// The map is swept of spent keys when it grows past this (then twice what is left).
    sweep_at: usize,
}

#[derive(Debug, Default)]
struct KeyState {
    /// GCRA's theoretical arrival time of the next send (a bucket with a burst).
    tat: Duration,
    /// Booked sends, ascending (a calendar key), kept while they still bound a new one.
    booked: VecDeque<Duration>,
    /// The calendar's window, as last booked (how long a booking stays relevant).
    window: Duration,
    /// Nothing under the key goes before this (a provider's 429).
    paused_until: Duration,
}

/// Below this many keys the limiter never sweeps: configuration-sized maps stay untouched.
const SWEEP_MIN: usize = 1024;

/// How many full windows a calendar search steps over before it gives up looking for a gap
/// and queues at the end: bounds the cost of a send to a deep backlog.
const GAP_SEARCH: usize = 256;

/// A key and the rate that applies to it, as a channel declares them for one send.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitKey {
    pub key: String,
    pub rate: Rate,
}

/// Each key once: a channel may name the same key twice (its own limit and a recipient's).
pub fn distinct(keys: &[LimitKey]) -> impl Iterator<Item = &LimitKey> {
    keys.iter()
        .enumerate()
        .filter(|(i, k)| !keys[..*i].iter().any(|p| p.key == k.key))
        .map(|(_, k)| k)
}

impl KeyState {
    /// The earliest time at or after `t` when one more send conforms under this key.
    fn fit(&self, rate: Rate, t: Duration) -> Duration {
        let t = t.max(self.paused_until);
        match rate.calendar() {
            None => t.max(self.tat.saturating_sub(rate.tolerance())),
            Some((most, window)) => fit(&self.booked, most, window, t),
        }
    }

    fn book(&mut self, rate: Rate, at: Duration) {
        match rate.calendar() {
            None => self.tat = self.tat.max(at) + rate.interval(),
            Some((_, window)) => {
                let i = self.booked.partition_point(|&b| b <= at);
                self.booked.insert(i, at);
                self.window = window;
            }
        }
    }

    /// Forgets bookings that no send at or after `now` can be bound by.
    fn prune(&mut self, now: Duration) {
        while self.booked.front().is_some_and(|&b| b + self.window <= now) {
            self.booked.pop_front();
        }
    }

    fn spent(&self, now: Duration) -> bool {
        self.tat <= now
            && self.paused_until <= now
            && self.booked.back().is_none_or(|&b| b + self.window <= now)
    }
}

/// The earliest time at or after `t` that a calendar of `booked` sends (ascending) admits, when
/// at most `most` may fall in any window of `window`.
///
/// A time is refused exactly when it and some `most` bookings would fit in less than a window,
/// and the tightest such bookings are consecutive: each run `booked[i..i + most]` that itself
/// spans less than a window refuses the open interval (`booked[i + most - 1] − window`,
/// `booked[i] + window`). Both ends of those intervals ascend with `i`, so one pass from the
/// first run that still reaches `t` finds the first gap.
fn fit(booked: &VecDeque<Duration>, most: usize, window: Duration, mut t: Duration) -> Duration {
    let n = booked.len();
    if n < most {
        return t;
    }
    // At or after this every run's interval has ended.
    let tail = booked[n - most] + window;
    if t >= tail {
        return t;
    }
    let mut i = booked.partition_point(|&b| b + window <= t);
    let mut stepped = 0;
    while i + most <= n {
        if booked[i] + window <= t {
            i += 1;
            continue;
        }
        if t + window <= booked[i + most - 1] {
            return t;
        }
        if booked[i + most - 1] - booked[i] >= window {
            // Spread over a window or more: with `t` among them they still are.
            i += 1;
            continue;
        }
        stepped += 1;
        if stepped > GAP_SEARCH {
            return tail;
        }
        t = booked[i] + window;
        i += 1;
    }
    t
}

impl Limiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The earliest time at or after `now` when a send under every key conforms.
    pub fn earliest(&self, keys: &[LimitKey], now: Duration) -> Duration {
        let mut t = now;
        // Each key moves `t` to its next fit; a pass in which none moves it fits them all. It
        // ends: every key admits any time past its last booking.
        loop {
            let before = t;
            for k in distinct(keys) {
                if let Some(state) = self.keys.get(&k.key) {
                    t = state.fit(k.rate, t);
                }
            }
            if t == before {
                return t;
            }
        }
    }

    /// Reserves a slot under every key: returns when the send may go (≥ `now`) and counts it,
    /// so the next caller is planned around it.
    pub fn reserve(&mut self, keys: &[LimitKey], now: Duration) -> Duration {
        let at = self.earliest(keys, now);
        self.book(keys, now, at);
        at
    }

    /// Counts a send at `at` under every key, as planned elsewhere (shared limits); `now` is
    /// the present, before which nothing needs remembering.
    pub fn book(&mut self, keys: &[LimitKey], now: Duration, at: Duration) {
        self.sweep(now);
        for k in distinct(keys) {
            let state = self.keys.entry(k.key.clone()).or_default();
            state.prune(now);
            state.book(k.rate, at);
        }
    }

    /// Gives back a calendar slot booked at `at` that will not be used (a send woken too late
    /// for it takes another), so it does not stand empty between its neighbours.
    pub fn unbook(&mut self, keys: &[LimitKey], at: Duration) {
        for k in distinct(keys) {
            if let Some(state) = self.keys.get_mut(&k.key) {
                let i = state.booked.partition_point(|&b| b < at);
                if state.booked.get(i) == Some(&at) {
                    state.booked.remove(i);
                }
            }
        }
    }

    /// Makes nothing under `key` conform before `until` (a provider's 429 `retry_after`).
    pub fn pause(&mut self, key: &str, rate: Rate, until: Duration) {
        let state = self.keys.entry(key.to_string()).or_default();
        state.paused_until = state.paused_until.max(until);
        state.tat = state.tat.max(until + rate.tolerance());
    }

    fn sweep(&mut self, now: Duration) {
        if self.keys.len() >= self.sweep_at.max(SWEEP_MIN) {
            self.keys.retain(|_, state| !state.spent(now));
            self.sweep_at = self.keys.len() * 2;
        }
    }
}

/// The most events of `times` inside any one half-open window of `w` (as providers count
/// their sliding windows): what a schedule must keep at or under a limit's count.
pub fn most_in_window(times: &[Duration], w: Duration) -> usize {
    let mut t = times.to_vec();
    t.sort();
    let mut start = 0;
    let mut most = 0;
    for end in 0..t.len() {
        while t[end] - t[start] >= w {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
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

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Telegram's shape: 30 in any window per bot, one a second per chat.
    fn telegram(chat: &str) -> [LimitKey; 2] {
        [
            LimitKey {
                key: "bot".into(),
                rate: Rate::sliding(30, ms(1000)),
            },
            key(&format!("chat:{chat}"), "1/s"),
        ]
    }

    #[test]
    fn a_sliding_window_admits_its_count_at_once_then_waits_out_the_window() {
        let mut l = Limiter::new();
        let k = [LimitKey {
            key: "bot".into(),
            rate: Rate::sliding(3, ms(1000)),
        }];
        let t0 = Duration::from_secs(100);
        let slots: Vec<_> = (0..7).map(|_| l.reserve(&k, t0) - t0).collect();
        assert_eq!(slots, [0, 0, 0, 1000, 1000, 1000, 2000].map(ms).to_vec());
        assert_eq!(k[0].rate.to_string(), "3/s in any window");
        assert_eq!(
            Rate::sliding(30, ms(1030)).to_string(),
            "30 in any 1.03s",
            "the margin shows"
        );
        assert_eq!(
            k[0].rate.tolerance(),
            Duration::ZERO,
            "shared GCRA spaces it"
        );
    }

    #[test]
    fn twenty_chats_start_at_once_under_the_bots_window() {
        let mut l = Limiter::new();
        let t0 = Duration::from_secs(10);
        let first: Vec<_> = (0..20)
            .map(|c| l.reserve(&telegram(&c.to_string()), t0) - t0)
            .collect();
        assert!(first.iter().all(|d| d.is_zero()), "{first:?}");
        // Ten more chats fill the window; the thirty-first chat waits for it to pass.
        for c in 20..30 {
            assert_eq!(l.reserve(&telegram(&c.to_string()), t0), t0);
        }
        assert_eq!(l.reserve(&telegram("30"), t0) - t0, ms(1000));
        // A second message to chat 0 goes a second after its first.
        assert_eq!(l.reserve(&telegram("0"), t0) - t0, ms(1000));
    }

    #[test]
    fn a_backlog_to_one_chat_does_not_hold_the_bots_other_chats() {
        let mut l = Limiter::new();
        let t0 = Duration::from_secs(10);
        let last = (0..30).map(|_| l.reserve(&telegram("busy"), t0)).max();
        assert_eq!(last, Some(t0 + ms(29_000)));
        // Under one GCRA frontier per key this waited for the bot's frontier, 29 s away.
        assert_eq!(l.reserve(&telegram("quiet"), t0 + ms(5)), t0 + ms(5));
        // And the busy chat's next send still queues behind its own backlog.
        assert_eq!(l.reserve(&telegram("busy"), t0), t0 + ms(30_000));
    }

    #[test]
    fn a_spacing_key_fills_a_gap_and_unbook_gives_a_slot_back() {
        let mut l = Limiter::new();
        let k = [key("chat", "1/s")];
        l.book(&k, ms(10_000), ms(10_000));
        l.book(&k, ms(10_000), ms(15_000));
        assert_eq!(l.reserve(&k, ms(11_000)), ms(11_000), "between the two");
        assert_eq!(l.reserve(&k, ms(12_500)), ms(12_500));
        assert_eq!(l.reserve(&k, ms(14_500)), ms(16_000), "too close to 15 s");
        l.unbook(&k, ms(15_000));
        assert_eq!(l.reserve(&k, ms(14_500)), ms(14_500), "15 s given back");
    }

    #[test]
    fn a_deep_backlog_queues_at_its_end() {
        let mut l = Limiter::new();
        let k = [key("chat", "1/s")];
        for _ in 0..20_000 {
            l.reserve(&k, Duration::ZERO);
        }
        assert_eq!(l.reserve(&k, ms(1)), Duration::from_secs(20_000));
        // Past the search bound the send queues at the end, not in a gap further on.
        l.unbook(&k, Duration::from_secs(10_000));
        assert_eq!(l.reserve(&k, ms(1)), Duration::from_secs(20_001));
        assert_eq!(
            l.reserve(&k, Duration::from_secs(9_999)),
            Duration::from_secs(10_000),
            "a gap within reach is found"
        );
    }

    #[test]
    fn a_pause_holds_a_calendar_key() {
        let mut l = Limiter::new();
        let k = [key("chat", "1/s")];
        l.pause("chat", k[0].rate, ms(7_000));
        assert_eq!(l.reserve(&k, ms(1_000)), ms(7_000));
        assert_eq!(l.reserve(&k, ms(1_000)), ms(8_000));
    }

    proptest::proptest! {
        /// `fit` finds the earliest time whose booking keeps every window within its count,
        /// as a brute-force search over the same calendar does.
        #[test]
        fn fit_is_the_earliest_conforming_time(
            mut booked in proptest::collection::vec(0u64..5_000, 0..40),
            most in 1usize..5,
            window in 1u64..1_500,
            t in 0u64..6_000,
        ) {
            booked.sort();
            let (window, t) = (ms(window), ms(t));
            // A calendar the limiter could have made: each booking kept only if it conforms.
            let mut kept: Vec<Duration> = Vec::new();
            for b in booked {
                kept.push(ms(b));
                if most_in_window(&kept, window) > most {
                    kept.pop();
                }
            }
            let admits = |x: Duration| {
                let mut all = kept.clone();
                all.push(x);
                most_in_window(&all, window) <= most
            };
            let mut candidates: Vec<Duration> =
                kept.iter().map(|&b| b + window).filter(|&c| c > t).collect();
            candidates.push(t);
            candidates.sort();
            let brute = candidates.into_iter().find(|&c| admits(c)).unwrap();
            let cal: VecDeque<Duration> = kept.into_iter().collect();
            proptest::prop_assert_eq!(fit(&cal, most, window, t), brute);
        }

        /// Whatever mix of chats and arrival times, what the limiter hands out keeps the bot's
        /// window and every chat's spacing.
        #[test]
        fn reservations_keep_every_window(
            sends in proptest::collection::vec((0u8..6, 0u64..3_000), 1..120),
        ) {
            let mut l = Limiter::new();
            let mut sends = sends;
            sends.sort_by_key(|s| s.1);
            let mut bot = Vec::new();
            let mut chats: HashMap<u8, Vec<Duration>> = HashMap::new();
            let bot_key = LimitKey { key: "bot".into(), rate: Rate::sliding(4, ms(1000)) };
            for (chat, now) in sends {
                let keys = [bot_key.clone(), key(&format!("chat:{chat}"), "2/s")];
                let at = l.reserve(&keys, ms(now));
                proptest::prop_assert!(at >= ms(now));
                bot.push(at);
                chats.entry(chat).or_default().push(at);
            }
            proptest::prop_assert!(most_in_window(&bot, ms(1000)) <= 4);
            for times in chats.values() {
                proptest::prop_assert!(most_in_window(times, ms(500)) <= 1);
            }
        }
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
        assert!(l.keys.len() < 2 * SWEEP_MIN, "{} keys kept", l.keys.len());
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
