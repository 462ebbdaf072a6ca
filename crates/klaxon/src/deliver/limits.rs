//! The engine's rate limits: the in-process limiter of `klaxon_core::limit`, or — when Redis is
//! configured (`[redis] shared_limits`, on by default) — the same maths in a Redis script, so
//! every replica draws from one set of buckets (a Telegram bot's 30/s is 30/s for all of them
//! together) and a 429 seen by one replica pauses them all (issue 6, item 2).
//!
//! Redis coordinates; it never stops delivery. A call that fails or takes longer than
//! `CALL_TIMEOUT` falls back to the replica's own limiter (which is kept current all along, so
//! a fallback starts from what this replica sent), logged once per outage and counted in
//! `klaxon_shared_limits_fallbacks_total`; Redis is tried again after `RETRY_AFTER`.
//!
//! The clock is Redis's (`TIME` inside the script): replicas' clocks need not agree. Keys are
//! the limit keys the channels declare (bot tokens appear only as a hash), under `key_prefix`.
//! Several keys per call means a single Redis node (or a proxy that keeps them together), not
//! Redis Cluster.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use klaxon_core::limit::{LimitKey, Limiter, Rate, distinct};
use klaxon_core::model::new_id;
use klaxon_core::secret::Secret;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;
use uuid::Uuid;

use super::LATE;
use super::registry::Guard;

/// Longest a limit call may take before the replica goes on with its own limiter.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, Redis is left alone this long (each claim round would otherwise wait
/// `CALL_TIMEOUT` per delivery on a Redis that hangs).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A delivery's slot, atomically: Redis's clock now and the slot, both µs since the epoch. The
/// same maths as `klaxon_core::limit::Limiter`, kept in Redis.
///
/// KEYS[1] is the delivery's booking: a slot reserved for it when it was last deferred, used
/// now by whichever replica claimed it (so a deferred backlog neither loses its place nor
/// reserves twice). Without one, the earliest time that fits under every limit key, then
/// counted under each. Limit key j is KEYS[2j] (its state) and KEYS[2j+1] (its 429 pause, whose
/// time to live holds every send). ARGV[1] is the engine's hold: a slot further off is booked
/// under KEYS[1] for the deferral. ARGV[2] makes this call's calendar entries unique. Then four
/// numbers per key from ARGV[3 + 4(j-1)]: emission interval and burst tolerance (µs), and, for a
/// calendar key, how many may fall in any window and the window (µs); 0 and 0 for a GCRA key.
/// A calendar key is a sorted set of booked sends (score: µs); a GCRA key holds its theoretical
/// arrival time. Both expire once they hold no information. Numbers are written with `%.0f`:
/// Lua 5.1's default conversion keeps 14 digits, too few for µs.
const SLOT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function fmt(x) return string.format('%.0f', x) end
local booked = redis.call('GET', KEYS[1])
if booked then
  redis.call('DEL', KEYS[1])
  return {fmt(now), fmt(math.max(now, tonumber(booked)))}
end
local SEARCH = 256
local specs = {}
for j = 1, (#KEYS - 1) / 2 do
  local a = 3 + 4 * (j - 1)
  local s = {key = KEYS[2 * j], interval = tonumber(ARGV[a]), tolerance = tonumber(ARGV[a + 1]),
             most = tonumber(ARGV[a + 2]), window = tonumber(ARGV[a + 3]), floor = now}
  local pttl = redis.call('PTTL', KEYS[2 * j + 1])
  if pttl > 0 then s.floor = now + pttl * 1000 end
  if s.most > 0 then
    redis.call('ZREMRANGEBYSCORE', s.key, '-inf', fmt(now - s.window))
  else
    s.tat = tonumber(redis.call('GET', s.key)) or 0
  end
  specs[j] = s
end
-- The earliest time at or after x that key s admits (limit.rs `fit`: each run of `most`
-- consecutive bookings spanning less than a window refuses the open interval
-- (last - window, first + window)).
local function fit(s, x)
  if x < s.floor then x = s.floor end
  if s.most == 0 then return math.max(x, s.tat - s.tolerance) end
  local n = redis.call('ZCARD', s.key)
  if n < s.most then return x end
  local tail = tonumber(redis.call('ZRANGE', s.key, n - s.most, n - s.most, 'WITHSCORES')[2]) + s.window
  if x >= tail then return x end
  local limit = 4 * SEARCH + s.most
  local r = redis.call('ZRANGEBYSCORE', s.key, '(' .. fmt(x - s.window), '+inf', 'WITHSCORES', 'LIMIT', 0, limit)
  local b = {}
  for i = 2, #r, 2 do b[#b + 1] = tonumber(r[i]) end
  local i, stepped = 1, 0
  while i + s.most - 1 <= #b do
    local first, last = b[i], b[i + s.most - 1]
    if first + s.window <= x then
      i = i + 1
    elseif x + s.window <= last then
      return x
    elseif last - first >= s.window then
      i = i + 1
    else
      stepped = stepped + 1
      if stepped > SEARCH then return tail end
      x = first + s.window
      i = i + 1
    end
  end
  if #b == limit then return tail end
  return x
end
local at = now
repeat
  local before = at
  for j = 1, #specs do at = fit(specs[j], at) end
until at == before
for j = 1, #specs do
  local s = specs[j]
  if s.most > 0 then
    redis.call('ZADD', s.key, fmt(at), fmt(at) .. ':' .. ARGV[2])
    local top = tonumber(redis.call('ZRANGE', s.key, -1, -1, 'WITHSCORES')[2])
    redis.call('PEXPIRE', s.key, math.ceil((top + s.window - now) / 1000) + 1000)
  else
    local tat = math.max(s.tat, at) + s.interval
    redis.call('SET', s.key, fmt(tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
  end
end
if at - now > tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], fmt(at), 'PX', math.ceil((at - now) / 1000) + 60000)
end
return {fmt(now), fmt(at)}
";

/// A provider's 429: nothing under KEYS[1] conforms for ARGV[1] µs (its TAT moves past the
/// pause, ARGV[2] being its burst tolerance), and KEYS[2] marks the pause so sends already
/// planned on other replicas hold too.
const PAUSE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = tonumber(ARGV[1])
local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or 0, now + pause + tonumber(ARGV[2]))
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
redis.call('SET', KEYS[2], '1', 'PX', math.max(1, math.ceil(pause / 1000)))
return 1
";

pub struct RateLimits {
    local: Mutex<Local>,
    shared: Option<SharedLimits>,
}

/// This replica's limiter, with the slots it booked for deliveries it deferred.
#[derive(Default)]
struct Local {
    limiter: Limiter,
    booked: HashMap<Uuid, Duration>,
}

/// Past this many local bookings, those more than `BOOKED_KEEP` overdue are dropped (rows
/// another replica sent, or that ended otherwise).
const BOOKED_SWEEP: usize = 10_000;
const BOOKED_KEEP: Duration = Duration::from_secs(60);

struct SharedLimits {
    client: redis::Client,
    prefix: String,
    conn: tokio::sync::Mutex<Link>,
    clock: Mutex<Option<ClockSample>>,
}

/// How Redis's clock maps onto the engine's: the offset seen by the quickest recent call.
/// Slots come back on Redis's clock; converting each by its own call's round trip would move
/// every send by that call's latency — tens of ms on a busy machine, enough to bunch two sends
/// that a provider counting a sliding window then refuses. The quickest call bounds the error
/// by half its round trip (as NTP does).
#[derive(Clone, Copy)]
struct ClockSample {
    /// Redis µs since the epoch minus engine µs, at the sample.
    offset: i128,
    rtt: Duration,
    taken: Instant,
}

/// A sample is replaced by a quicker one, or by any once this old (clocks drift, and the wall
/// clock Redis reads can be stepped).
const CLOCK_KEEP: Duration = Duration::from_secs(5);

/// A Redis-clock instant on the engine's clock.
fn redis_to_engine(redis_us: u64, offset: i128) -> Duration {
    let us = i128::from(redis_us) - offset;
    Duration::from_micros(u64::try_from(us.max(0)).unwrap_or(u64::MAX))
}

#[derive(Default)]
struct Link {
    conn: Option<MultiplexedConnection>,
    /// Set after a failure: Redis is not asked before then.
    resting_until: Option<Instant>,
}

#[derive(Debug, thiserror::Error)]
enum SharedError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {CALL_TIMEOUT:?}")]
    Timeout,
    #[error("resting after a failure")]
    Resting,
    #[error("unexpected answer {0:?}")]
    Answer(String),
}

impl RateLimits {
    /// This replica's own limiter: one process, or replicas that share no bot.
    pub fn local() -> Self {
        RateLimits {
            local: Mutex::new(Local::default()),
            shared: None,
        }
    }

    /// Buckets in Redis at `url`. Only the URL is checked here; the connection is made on first
    /// use and remade after a failure.
    pub fn shared(url: &Secret, prefix: &str) -> Result<Self, redis::RedisError> {
        Ok(RateLimits {
            local: Mutex::new(Local::default()),
            shared: Some(SharedLimits {
                client: crate::sources::redis_client(url)?,
                prefix: prefix.to_string(),
                conn: tokio::sync::Mutex::new(Link::default()),
                clock: Mutex::new(None),
            }),
        })
    }

    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// When delivery `id` may be sent, on the engine's clock (`now` is its present; ≥ `now`
    /// comes back): the slot booked for it at an earlier deferral, else the next free one
    /// under every key, which is then counted. A slot more than `hold` away is booked for the
    /// delivery, which the engine defers until then.
    pub async fn slot(
        &self,
        id: Uuid,
        keys: &[LimitKey],
        now: Duration,
        hold: Duration,
    ) -> Duration {
        if let Some(shared) = &self.shared {
            let asked = Instant::now();
            match shared.slot(id, keys, hold).await {
                Ok((redis_now, redis_at)) => {
                    let rtt = asked.elapsed();
                    let offset = shared.offset(redis_now, now + rtt / 2, rtt);
                    let at = redis_to_engine(redis_at, offset).max(now);
                    // Kept current, so a fallback starts from what this replica sent.
                    self.local.guard().limiter.book(keys, now, at);
                    return at;
                }
                Err(e) => shared.failed(&e).await,
            }
        }
        let mut local = self.local.guard();
        if let Some(at) = local.booked.remove(&id) {
            if now <= at + LATE {
                return at.max(now);
            }
            // Back after its slot (a busy machine): going now could crowd the next booking
            // of the same chat, so the slot is given back and the send takes the next that fits.
            local.limiter.unbook(keys, at);
        }
        let at = local.limiter.reserve(keys, now);
        if at - now > hold {
            if local.booked.len() >= BOOKED_SWEEP {
                local.booked.retain(|_, t| *t + BOOKED_KEEP > now);
            }
            local.booked.insert(id, at);
        }
        at
    }

    /// A new slot under every key, for a send that missed the one it had at `missed`, which
    /// is given back (here; shared limits keep their frontier).
    pub async fn replan(&self, keys: &[LimitKey], missed: Duration, now: Duration) -> Duration {
        self.local.guard().limiter.unbook(keys, missed);
        self.slot(Uuid::nil(), keys, now, Duration::MAX).await
    }

    /// Holds every send under `key` until `until` on this replica (a persisted pause at start).
    pub fn pause_here(&self, key: &LimitKey, until: Duration) {
        self.local.guard().limiter.pause(&key.key, key.rate, until);
    }

    /// A 429 paused `key` for `wait` from `now`: here, and for every replica when shared.
    pub async fn pause(&self, key: &LimitKey, now: Duration, wait: Duration) {
        self.pause_here(key, now + wait);
        if let Some(shared) = &self.shared
            && let Err(e) = shared.pause(&key.key, key.rate, wait).await
        {
            shared.failed(&e).await;
        }
    }

    /// How long another replica's 429 still pauses `key`, when limits are shared.
    pub async fn paused_elsewhere(&self, key: &str) -> Option<Duration> {
        let shared = self.shared.as_ref()?;
        match shared.paused_for(key).await {
            Ok(left) => left,
            Err(e) => {
                shared.failed(&e).await;
                None
            }
        }
    }
}

impl SharedLimits {
    fn limit_key(&self, key: &str) -> String {
        format!("{}rl:{key}", self.prefix)
    }

    fn calendar_key(&self, key: &str) -> String {
        format!("{}cal:{key}", self.prefix)
    }

    fn pause_key(&self, key: &str) -> String {
        format!("{}pause:{key}", self.prefix)
    }

    fn booking_key(&self, id: Uuid) -> String {
        format!("{}slot:{id}", self.prefix)
    }

    /// Takes a sample (Redis read `redis_now` when the engine's clock read about `engine_mid`,
    /// in a call of round trip `rtt`) and answers the offset to use.
    fn offset(&self, redis_now: u64, engine_mid: Duration, rtt: Duration) -> i128 {
        let sample = ClockSample {
            offset: i128::from(redis_now) - engine_mid.as_micros() as i128,
            rtt,
            taken: Instant::now(),
        };
        let mut clock = self.clock.guard();
        let best = match *clock {
            Some(b) if b.rtt < rtt && b.taken.elapsed() < CLOCK_KEEP => b,
            _ => sample,
        };
        *clock = Some(best);
        best.offset
    }

    /// The connection, made when there is none, unless Redis is resting after a failure.
    async fn connection(&self) -> Result<MultiplexedConnection, SharedError> {
        let mut link = self.conn.lock().await;
        if let Some(conn) = &link.conn {
            return Ok(conn.clone());
        }
        if link.resting_until.is_some_and(|t| Instant::now() < t) {
            return Err(SharedError::Resting);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        if link.resting_until.take().is_some() {
            tracing::info!("shared rate limits: Redis answers again; limits are shared");
            metrics::gauge!("klaxon_shared_limits_up").set(1.0);
        }
        link.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Runs one command with the call's deadline.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, SharedError> {
        let mut conn = self.connection().await?;
        tokio::time::timeout(CALL_TIMEOUT, cmd.query_async(&mut conn))
            .await
            .map_err(|_| SharedError::Timeout)?
            .map_err(SharedError::from)
    }

    async fn slot(
        &self,
        id: Uuid,
        keys: &[LimitKey],
        hold: Duration,
    ) -> Result<(u64, u64), SharedError> {
        let keys: Vec<&LimitKey> = distinct(keys).collect();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SLOT)
            .arg(2 * keys.len() + 1)
            .arg(self.booking_key(id));
        for k in &keys {
            let state = match k.rate.calendar() {
                Some(_) => self.calendar_key(&k.key),
                None => self.limit_key(&k.key),
            };
            cmd.arg(state).arg(self.pause_key(&k.key));
        }
        cmd.arg(micros(hold)).arg(new_id().simple().to_string());
        for k in &keys {
            let (most, window) = k.rate.calendar().unwrap_or((0, Duration::ZERO));
            cmd.arg(micros(k.rate.interval()))
                .arg(micros(k.rate.tolerance()))
                .arg(most)
                .arg(micros(window));
        }
        let answer: Vec<String> = self.query(&cmd).await?;
        match answer.as_slice() {
            [now, at] => match (now.parse::<u64>(), at.parse::<u64>()) {
                (Ok(now), Ok(at)) => Ok((now, at)),
                _ => Err(SharedError::Answer(answer.join(" "))),
            },
            _ => Err(SharedError::Answer(answer.join(" "))),
        }
    }

    async fn pause(&self, key: &str, rate: Rate, wait: Duration) -> Result<(), SharedError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(PAUSE)
            .arg(2)
            .arg(self.limit_key(key))
            .arg(self.pause_key(key))
            .arg(micros(wait))
            .arg(micros(rate.tolerance()));
        let _: i64 = self.query(&cmd).await?;
        Ok(())
    }

    async fn paused_for(&self, key: &str) -> Result<Option<Duration>, SharedError> {
        let ms: i64 = self
            .query(redis::cmd("PTTL").arg(self.pause_key(key)))
            .await?;
        // -2: no pause; -1 cannot happen (always written with an expiry).
        Ok((ms > 0).then(|| Duration::from_millis(ms.unsigned_abs())))
    }

    /// Drops the connection and rests; the first failure of an outage is logged.
    async fn failed(&self, e: &SharedError) {
        metrics::counter!("klaxon_shared_limits_fallbacks_total").increment(1);
        if matches!(e, SharedError::Resting) {
            return;
        }
        let mut link = self.conn.lock().await;
        link.conn = None;
        if link.resting_until.is_none() {
            metrics::gauge!("klaxon_shared_limits_up").set(0.0);
            // The URL may hold a password: the error is Redis's own, which never repeats it.
            tracing::warn!(error = %e, "shared rate limits: Redis failed; this replica limits on its own until it answers");
        }
        link.resting_until = Some(Instant::now() + RETRY_AFTER);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
