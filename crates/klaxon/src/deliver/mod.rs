//! The delivery engine: claims due deliveries from the store, highest priority first; holds
//! each until its rate-limit slot; sends through the channel; records the attempt and what
//! follows (delivered, rescheduled, dead) in grouped transactions.
//!
//! Invariants:
//! - The store is the queue. Nothing is delivered that was not claimed with a lease, and a
//!   retry is a rescheduled row: no task sleeps through a backoff. Tasks wait at most
//!   `HOLD_MAX` for a rate-limit slot; a longer wait goes back to the store as `not_before`,
//!   `CLAIM_LEAD` ahead of the slot.
//! - A channel's own state (breaker, pause, switch) is decided here from verdicts; channels
//!   only report.
//! - Shutdown stops claiming, lets sends in flight finish within the grace period, and hands
//!   everything else back to the store.

mod aggregate;
pub mod decide;
pub mod fallback;
pub mod health;
pub mod limits;
pub mod registry;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use klaxon_channels::SendContext;
use klaxon_core::breaker::BreakerState;
use klaxon_core::config::DeliveryConfig;
use klaxon_core::limit::LimitKey;
use klaxon_core::model::DeliveryStatus;
use klaxon_core::policy::{EventRule, Freshness};
use klaxon_core::retry::RetryPolicy;
use klaxon_core::verdict::Verdict;
use klaxon_store::{
    ChannelPatch, ClaimRequest, Claimed, Completion, Deferral, Fallback, FallbackMove, Finish,
    NewDelivery, Store,
};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use self::decide::{Effects, Gate, decide, fresh_copy, gate};
use self::limits::RateLimits;
use self::registry::{Guard, Registry, Runtime};
use crate::events::{DeliveryEvent, Event, Events};

/// Longest a claimed delivery waits in memory for its rate-limit slot; beyond it the row goes
/// back to the store with `not_before` `CLAIM_LEAD` ahead of the slot.
const HOLD_MAX: Duration = Duration::from_millis(1500);
/// A delivery deferred to a rate-limit slot comes back this long before the slot (well inside
/// `HOLD_MAX`) and waits for it in memory. Were it due at the slot itself, the claim's own delay
/// — the next poll, a busy writer, a starved CPU — would be added to the send: it would go late,
/// close to the next send of the same chat, and either draw a 429 or, caught by `LATE`, give up
/// its slot for one at the end of the queue.
const CLAIM_LEAD: Duration = Duration::from_millis(500);
/// Most deliveries claimed in one round.
const CLAIM_MAX: usize = 256;
/// The scheduler looks at the store at least this often (expired leases of crashed workers,
/// rows written by another process).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// A send that got its slots, or woke, this much after its planned time asks the limiter
/// again (Telegram's limits leave a 30 ms margin a second; see `klaxon_channels::telegram`).
const LATE: Duration = Duration::from_millis(20);
/// How many times one send asks again for being late before it goes anyway.
const LATE_RETRIES: usize = 2;
/// The first wait after a claim found due rows but could take none (see `schedule`).
const SKIPPED_MIN: Duration = Duration::from_millis(25);
/// How long a busy scheduler waits for more sends to finish before claiming.
const CLAIM_GATHER: Duration = Duration::from_millis(2);
/// Completions written in one transaction.
const COMPLETE_BATCH: usize = 512;
/// How often channels with an open circuit are checked for deliveries to hand to a fallback.
const FALLBACK_SWEEP: Duration = Duration::from_secs(1);
/// A delivery whose circuit is open but which has nowhere to fall back to waits this long
/// before it is looked at again.
const NO_FALLBACK_WAIT: Duration = Duration::from_secs(10);

pub struct Engine {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    cfg: DeliveryConfig,
    /// `[events]`: how old each event type may go out (`max_age`, `when_stale`).
    freshness: Vec<EventRule>,
    lease: Duration,
    owner: String,
    /// This replica's, or shared by all of them through Redis.
    limits: RateLimits,
    origin: Instant,
    wake: Notify,
    /// Wakes the digest flusher (`aggregate.rs`): members of a digest group were committed.
    groups_wake: Notify,
    slots: Arc<Semaphore>,
    completions: mpsc::Sender<Completion>,
    /// Claimed and not yet completed: handed back to the store on shutdown.
    in_flight: Mutex<HashSet<Uuid>>,
    /// Every spawned send, so shutdown can wait for them.
    tasks: TaskTracker,
    /// Where each accounted attempt and channel change is announced (the live stream).
    pub events: Events,
}

/// Handle to the engine's background work, to stop it.
pub struct EngineHandle {
    pub engine: Arc<Engine>,
    cancel: CancellationToken,
    scheduler: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    stop_writer: CancellationToken,
}

impl Engine {
    pub fn start(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        cfg: DeliveryConfig,
        freshness: Vec<EventRule>,
        lease: Duration,
        limits: RateLimits,
    ) -> EngineHandle {
        Self::launch(store, registry, cfg, freshness, lease, limits, true)
    }

    /// The engine of an API-only replica (`serve --role api`): what intake and the API share
    /// with it (event bus, `wake`, counters) without claiming, sending or health checks, so
    /// that delivery scales apart on worker replicas.
    pub fn start_without_delivery(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        cfg: DeliveryConfig,
        freshness: Vec<EventRule>,
        lease: Duration,
        limits: RateLimits,
    ) -> EngineHandle {
        Self::launch(store, registry, cfg, freshness, lease, limits, false)
    }

    fn launch(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        cfg: DeliveryConfig,
        freshness: Vec<EventRule>,
        lease: Duration,
        limits: RateLimits,
        deliver: bool,
    ) -> EngineHandle {
        let (tx, rx) = mpsc::channel(COMPLETE_BATCH * 8);
        let engine = Arc::new(Engine {
            store: store.clone(),
            registry,
            slots: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            cfg,
            freshness,
            lease,
            owner: format!("{}-{}", hostname(), klaxon_core::model::new_id()),
            limits,
            origin: Instant::now(),
            wake: Notify::new(),
            groups_wake: Notify::new(),
            completions: tx,
            in_flight: Mutex::new(HashSet::new()),
            tasks: TaskTracker::new(),
            events: Events::new(),
        });
        // Pauses persisted by an earlier run (a 429's retry_after) still hold.
        for rt in engine.registry.all() {
            let paused = rt.state.guard().paused_until;
            if let Some(until) = paused.filter(|t| *t > Utc::now()) {
                let wait = (until - Utc::now()).to_std().unwrap_or_default();
                engine
                    .limits
                    .pause_here(&rt.channel_key(), engine.mono() + wait);
            }
        }
        let cancel = CancellationToken::new();
        let stop_writer = CancellationToken::new();
        let writer = tokio::spawn(write_completions(store, rx, stop_writer.clone()));
        if !deliver {
            return EngineHandle {
                engine,
                cancel,
                scheduler: tokio::spawn(async {}),
                writer,
                stop_writer,
            };
        }
        let scheduler = tokio::spawn(engine.clone().schedule(cancel.clone()));
        tokio::spawn(aggregate::run(engine.clone(), cancel.clone()));
        tokio::spawn(health::run(
            engine.registry.clone(),
            engine.events.clone(),
            engine.cfg.health_interval,
            cancel.clone(),
        ));
        // Renewal runs until the sends have finished, i.e. past the intake's cancellation.
        tokio::spawn(engine.clone().renew_leases(stop_writer.clone()));
        EngineHandle {
            engine,
            cancel,
            scheduler,
            writer,
            stop_writer,
        }
    }

    /// New work was committed: look now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Deliveries waiting in digest groups were committed: the flusher reckons when the next
    /// group is due.
    pub fn wake_groups(&self) {
        self.groups_wake.notify_one();
    }

    fn mono(&self) -> Duration {
        self.origin.elapsed()
    }

    fn freshness(&self, c: &Claimed) -> Option<Freshness> {
        Freshness::for_event(&self.freshness, c.notification.event_type.as_deref())
    }

    fn policy(&self, rt: &Runtime) -> RetryPolicy {
        rt.spec
            .retry
            .clone()
            .unwrap_or_else(|| self.cfg.retry.clone())
    }

    /// Claimed deliveries the engine may hold at once (sending, or waiting for a send slot or
    /// a rate-limit slot): twice the send slots, so the next work is at hand when a send ends
    /// and claims come in groups rather than one transaction per freed slot.
    fn room(&self) -> usize {
        (self.cfg.concurrency.max(1) * 2)
            .saturating_sub(self.in_flight())
            .min(CLAIM_MAX)
    }

    async fn schedule(self: Arc<Self>, cancel: CancellationToken) {
        let mut last_sweep = Instant::now();
        let mut skipped = SKIPPED_MIN;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            if last_sweep.elapsed() >= FALLBACK_SWEEP {
                last_sweep = Instant::now();
                if let Err(e) = self.sweep_open_circuits().await {
                    tracing::warn!(error = %e, "handing deliveries of open circuits to their fallbacks failed");
                }
            }
            let mut room = self.room();
            if room > 0 && room < self.cfg.concurrency / 4 {
                // Under load: let a few more sends finish so one claim takes a group.
                tokio::time::sleep(CLAIM_GATHER).await;
                room = self.room();
            }
            let claimed = if room == 0 {
                0
            } else {
                match self.claim_round(room, &cancel).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(error = %e, "claiming deliveries failed; retrying in 1 s");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        continue;
                    }
                }
            };
            if claimed > 0 && claimed == room {
                // Probably more due: go again at once (after giving senders a turn).
                tokio::task::yield_now().await;
                continue;
            }
            let wait = if room == 0 {
                IDLE_POLL
            } else {
                match self.store.next_due().await {
                    Ok(Some(t)) => (t - Utc::now())
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .min(IDLE_POLL),
                    _ => IDLE_POLL,
                }
            };
            // Due rows that were all skipped must not make us spin: a blocked channel's, or
            // rows another replica is claiming at this moment (with several replicas that is
            // common: all wake at the same due time). The wait doubles from 25 ms to the poll
            // while nothing can be claimed, so a replica that lost a race is back within ms,
            // not after a whole poll with its share of the slots gone by.
            let wait = if wait.is_zero() && claimed == 0 {
                let w = skipped;
                skipped = (skipped * 2).min(IDLE_POLL);
                w
            } else {
                skipped = SKIPPED_MIN;
                wait
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Keeps the leases of deliveries in progress alive, so a slow send is never claimed twice
    /// while the lease itself stays short.
    async fn renew_leases(self: Arc<Self>, cancel: CancellationToken) {
        let every = self.lease / 3;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let ids = self.in_flight_ids();
            let until = Utc::now() + TimeDelta::from_std(self.lease).unwrap_or_default();
            if let Err(e) = self.store.renew(&self.owner, &ids, until).await {
                tracing::warn!(error = %e, "could not renew delivery leases");
            }
        }
    }

    /// Channels that may send now: enabled, circuit not open, and not already holding twice
    /// their cap of claimed work.
    fn open_channels(&self, now: Duration) -> Vec<String> {
        self.registry
            .all()
            .filter(|rt| {
                rt.enabled()
                    && rt.busy.load(Ordering::Relaxed) < 2 * rt.cap
                    && rt
                        .breaker
                        .guard()
                        .blocked_until()
                        .is_none_or(|until| until <= now)
            })
            .map(|rt| rt.spec.name.clone())
            .collect()
    }

    async fn claim_round(
        self: &Arc<Self>,
        limit: usize,
        cancel: &CancellationToken,
    ) -> Result<usize, klaxon_store::StoreError> {
        let now_mono = self.mono();
        let claimed = self
            .store
            .claim(ClaimRequest {
                now: Utc::now(),
                limit,
                lease: self.lease,
                owner: self.owner.clone(),
                channels: self.open_channels(now_mono),
            })
            .await?;
        let n = claimed.len();
        let mut deferrals = Vec::new();
        let mut finished = Vec::new();
        for c in claimed {
            let Some(rt) = self.registry.get(&c.delivery.channel).cloned() else {
                // Only configured channels are claimed; should another process's row slip in,
                // it goes back untouched.
                deferrals.push(Deferral {
                    delivery_id: c.delivery.id,
                    not_before: Utc::now() + TimeDelta::seconds(1),
                });
                continue;
            };
            // Too old to act on, muted or in quiet hours: it waits or ends here, unsent.
            let now = Utc::now();
            match gate(
                &c.notification,
                self.freshness(&c),
                rt.hold(now),
                rt.spec.policy.when_muted,
                now,
            ) {
                Gate::Go => {}
                Gate::Wait(until) => {
                    deferrals.push(Deferral {
                        delivery_id: c.delivery.id,
                        not_before: until,
                    });
                    continue;
                }
                Gate::End(status, reason) => {
                    self.ended_unsent(&rt, &c, status, &reason);
                    finished.push(Finish {
                        delivery_id: c.delivery.id,
                        status,
                        reason,
                    });
                    continue;
                }
            }
            // The circuit may have opened since the claim, or this may be the half-open probe.
            // Asked only for a delivery that will otherwise go: a probe must end in a result.
            let (allowed, probe) = {
                let mut b = rt.breaker.guard();
                let was_open = matches!(b.state(), BreakerState::Open { .. });
                let allowed = b.allow(now_mono);
                (allowed, was_open && allowed)
            };
            if !allowed {
                deferrals.push(Deferral {
                    delivery_id: c.delivery.id,
                    not_before: Utc::now() + TimeDelta::seconds(1),
                });
                continue;
            }
            let mut keys = rt.channel.limits(c.delivery.target.as_deref());
            keys.push(rt.channel_key());
            keys.extend(rt.user_keys(c.notification.user_id.as_deref()));
            // Its own slot, booked when it was deferred; else the next free one, booked now
            // however far off it is, so the deliveries behind it queue after it.
            let now_mono = self.mono();
            let at = self
                .limits
                .slot(c.delivery.id, &keys, now_mono, HOLD_MAX)
                .await;
            if at.saturating_sub(now_mono) > HOLD_MAX {
                if probe {
                    rt.breaker.guard().abandon_probe(now_mono);
                }
                let back_in = (at - now_mono).saturating_sub(CLAIM_LEAD);
                deferrals.push(Deferral {
                    delivery_id: c.delivery.id,
                    not_before: Utc::now() + TimeDelta::from_std(back_in).unwrap_or_default(),
                });
                continue;
            }
            self.in_flight.guard().insert(c.delivery.id);
            let engine = self.clone();
            let cancel = cancel.clone();
            let deadline = self.origin + at;
            let busy = Busy::new(rt.clone(), self.clone());
            let slots = self.slots.clone();
            self.tasks.spawn(async move {
                // Dropped in reverse order: the slots are free before `busy` wakes the scheduler.
                let _busy = busy;
                tokio::select! {
                    permits = async {
                        // A place under the channel's cap, a send slot, then the rate-limit
                        // slot. Slots are held through the (≤ HOLD_MAX) wait for the clock so
                        // a send never goes later than planned and bunches with the next one;
                        // if the slots themselves came late, the limiter plans anew.
                        let mine = rt.slots.clone().acquire_owned().await;
                        let all = slots.acquire_owned().await;
                        let mut deadline = deadline;
                        if Instant::now() > deadline + LATE {
                            deadline = engine.replan(&keys, deadline).await;
                        }
                        // Another replica's 429 is looked up while waiting, not after: a Redis
                        // round trip between the slot and the send would move the send by it.
                        // Found, it pauses this replica too (checked below).
                        tokio::join!(
                            tokio::time::sleep_until(deadline),
                            engine.paused_elsewhere(&rt)
                        );
                        // Woken late (a busy machine): going now would bunch this send with the
                        // next slot's, which a provider counting a sliding window (Telegram's
                        // 30 in any second) refuses. It takes a new slot, a bounded number of
                        // times, so an overloaded machine still sends.
                        for _ in 0..LATE_RETRIES {
                            if Instant::now() <= deadline + LATE {
                                break;
                            }
                            metrics::counter!("klaxon_late_sends_total", "channel" => rt.spec.name.clone()).increment(1);
                            deadline = engine.replan(&keys, deadline).await;
                            tokio::time::sleep_until(deadline).await;
                        }
                        (all, mine)
                    } => {
                        let _permits = permits;
                        // A 429 may have paused the channel while this one waited for its slot.
                        match engine.paused_here(&rt) {
                            Some(wait) => {
                                if probe {
                                    rt.breaker.guard().abandon_probe(engine.mono());
                                }
                                engine.defer_one(c.delivery.id, wait).await
                            }
                            None => engine.dispatch(rt, c, probe).await,
                        }
                    }
                    _ = cancel.cancelled() => {
                        // Shutting down before its slot came: back to the store, untried.
                        if probe {
                            rt.breaker.guard().abandon_probe(engine.mono());
                        }
                        engine.release(vec![c.delivery.id]).await;
                    }
                }
            });
        }
        if !deferrals.is_empty() {
            self.store.defer(deferrals).await?;
        }
        if !finished.is_empty() {
            self.store.finish(finished).await?;
        }
        Ok(n)
    }

    /// Counts, logs and announces a delivery that ends without a send (suppressed by quiet
    /// hours or a mute, expired as too old).
    fn ended_unsent(&self, rt: &Runtime, c: &Claimed, status: DeliveryStatus, reason: &str) {
        metrics::counter!("klaxon_deliveries_total", "channel" => rt.spec.name.clone(), "outcome" => status.as_str())
            .increment(1);
        tracing::info!(channel = %rt.spec.name, delivery = %c.delivery.id, status = status.as_str(), %reason, "delivery ended unsent");
        let outcome = Outcome {
            status,
            attempt: c.delivery.attempts,
            error: Some(reason.to_string()),
            latency_ms: 0,
        };
        self.announce(rt, c, outcome, Utc::now());
    }

    /// Sends one claimed delivery. `probe`: it is the half-open circuit's probe, whose failure
    /// says the outage goes on, not that this message is undeliverable.
    async fn dispatch(self: Arc<Self>, rt: Arc<Runtime>, c: Claimed, probe: bool) {
        // Judged at the send itself: age is send time minus the event's own timestamp.
        let notification = match fresh_copy(&c.notification, self.freshness(&c), Utc::now()) {
            Ok(n) => n,
            Err(reason) => {
                let status = DeliveryStatus::Expired;
                self.ended_unsent(&rt, &c, status, &reason);
                self.in_flight.guard().remove(&c.delivery.id);
                let item = Finish {
                    delivery_id: c.delivery.id,
                    status,
                    reason,
                };
                if let Err(e) = self.store.finish(vec![item]).await {
                    tracing::warn!(error = %e, "could not end an expired delivery; its lease will expire");
                }
                if probe {
                    rt.breaker.guard().abandon_probe(self.mono());
                }
                return;
            }
        };
        let cx = SendContext {
            delivery_id: c.delivery.id,
            target: c.delivery.target.clone(),
            attempt: c.delivery.attempts + 1,
        };
        let started_at = Utc::now();
        let t0 = Instant::now();
        // Channels time out each request; this bounds a multi-part send as a whole.
        let report = match tokio::time::timeout(
            rt.spec.timeout * 4 + Duration::from_secs(5),
            rt.channel.send(&notification, &cx),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Verdict::retry(format!(
                "send did not finish within {:?}",
                rt.spec.timeout * 4
            ))
            .into(),
        };
        let latency = t0.elapsed();
        let now = Utc::now();
        let (mut completion, effects) = decide(
            &c.delivery,
            &report.verdict,
            &self.policy(&rt),
            started_at,
            latency,
            now,
            probe,
        );
        if let Some(note) = &report.note {
            tracing::warn!(channel = %rt.spec.name, delivery = %c.delivery.id, "{note}");
            // Kept with the attempt (and so as the delivery's last error) even on success, so
            // GET /api/v1/notifications/{id} shows why a message looks different (a template
            // that failed and fell back, a file left out).
            if completion.attempt.error.is_none() {
                completion.attempt.error = Some(note.clone());
            }
        }
        if completion.status == DeliveryStatus::Dead {
            completion.fallback = self.plan_fallback(&c).await;
        }
        if let Some(hold) = report.hold {
            self.pause(&rt, hold).await;
        }
        self.account(&rt, &c, &completion, &effects, now).await;
        self.in_flight.guard().remove(&c.delivery.id);
        if self.completions.send(completion).await.is_err() {
            tracing::error!(delivery = %c.delivery.id, "completion writer stopped; the lease will expire and the delivery be retried");
        }
    }

    /// Where `c`'s notification goes if `c` has failed for good: the next usable channel of its
    /// chain, with one delivery per recipient there. `None` when there is no chain or it is
    /// used up.
    async fn plan_fallback(&self, c: &Claimed) -> Option<Fallback> {
        let rt = self.registry.get(&c.delivery.channel)?;
        if rt.spec.fallback.is_empty() && c.delivery.fallback_of.is_none() {
            return None;
        }
        let siblings: Vec<_> = match self.store.get(c.delivery.notification_id).await {
            Ok(Some(rec)) => rec.deliveries.into_iter().map(|d| d.delivery).collect(),
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(delivery = %c.delivery.id, error = %e, "could not read the notification's deliveries to pick a fallback");
                return None;
            }
        };
        let empty: &[String] = &[];
        let next = fallback::next_channel(
            &c.delivery,
            &siblings,
            |name| {
                self.registry
                    .get(name)
                    .map_or(empty, |r| r.spec.fallback.as_slice())
            },
            |name| self.registry.get(name).is_some_and(|r| r.enabled()),
        )?;
        let (next, deliveries) = match next {
            fallback::Next::Covered(name) => (name, Vec::new()),
            fallback::Next::New(name) => {
                let target_rt = self.registry.get(&name)?;
                let deliveries = target_rt
                    .channel
                    .targets(&c.notification)
                    .into_iter()
                    .map(|target| NewDelivery {
                        id: klaxon_core::model::new_id(),
                        channel: name.clone(),
                        target,
                        group: None,
                    })
                    .collect();
                (name, deliveries)
            }
        };
        tracing::warn!(
            channel = %c.delivery.channel,
            delivery = %c.delivery.id,
            fallback = %next,
            "delivery failed; handing the notification to the fallback channel"
        );
        metrics::counter!("klaxon_fallbacks_total", "channel" => c.delivery.channel.clone(), "to" => next.clone())
            .increment(1);
        Some(Fallback {
            channel: next,
            deliveries,
        })
    }

    /// Channels whose circuit has been open longer than their `fallback_after`, or that the
    /// provider switched off (a deleted webhook): their due deliveries go to the fallback now
    /// instead of waiting for a provider that is not coming back soon.
    async fn sweep_open_circuits(&self) -> Result<(), klaxon_store::StoreError> {
        let now = self.mono();
        for rt in self.registry.all() {
            if rt.spec.fallback.is_empty() {
                continue;
            }
            let why = {
                let s = rt.state.guard();
                let b = rt.breaker.guard();
                match (&s.disabled_reason, s.enabled, b.opened_at()) {
                    (Some(reason), Some(false), _) => format!("channel disabled ({reason})"),
                    (_, Some(false), _) => continue,
                    (_, _, Some(t))
                        if !b.is_closed() && now.saturating_sub(t) >= rt.spec.fallback_after =>
                    {
                        format!("circuit open for {} s", now.saturating_sub(t).as_secs())
                    }
                    _ => continue,
                }
            };
            let claimed = self
                .store
                .claim(ClaimRequest {
                    now: Utc::now(),
                    limit: CLAIM_MAX,
                    lease: self.lease,
                    owner: self.owner.clone(),
                    channels: vec![rt.spec.name.clone()],
                })
                .await?;
            let mut moves = Vec::new();
            let mut waits = Vec::new();
            for c in claimed {
                match self.plan_fallback(&c).await {
                    Some(fallback) => moves.push(FallbackMove {
                        delivery_id: c.delivery.id,
                        reason: format!("{why}; handed to `{}`", fallback.channel),
                        fallback,
                    }),
                    None => waits.push(Deferral {
                        delivery_id: c.delivery.id,
                        not_before: Utc::now()
                            + TimeDelta::from_std(NO_FALLBACK_WAIT).unwrap_or_default(),
                    }),
                }
            }
            if !moves.is_empty() {
                rt.failed.fetch_add(moves.len() as u64, Ordering::Relaxed);
                self.store.fall_back(moves).await?;
                self.wake();
            }
            self.store.defer(waits).await?;
        }
        Ok(())
    }

    /// Metrics, counters, breaker, pauses and persisted channel state after an attempt.
    async fn account(
        &self,
        rt: &Runtime,
        c: &Claimed,
        done: &Completion,
        effects: &Effects,
        now: DateTime<Utc>,
    ) {
        let name = rt.spec.name.clone();
        let outcome = done.status.as_str();
        metrics::counter!("klaxon_deliveries_total", "channel" => name.clone(), "outcome" => outcome).increment(1);
        match done.status {
            DeliveryStatus::Delivered => {
                rt.delivered
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let secs = (now - c.notification.created_at)
                    .to_std()
                    .unwrap_or_default()
                    .as_secs_f64();
                metrics::histogram!("klaxon_delivery_seconds", "channel" => name.clone())
                    .record(secs);
                rt.breaker.guard().on_success();
                let mut s = rt.state.guard();
                s.last_success_at = Some(now);
            }
            DeliveryStatus::Retrying => {
                rt.retried
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                metrics::counter!("klaxon_retries_total", "channel" => name.clone()).increment(1);
            }
            _ => {
                rt.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let mut patch = ChannelPatch::default();
        if let Some(err) = &done.attempt.error {
            let mut s = rt.state.guard();
            s.last_error = Some(err.clone());
            s.last_error_at = Some(now);
            patch.last_error = Some((err.clone(), now));
        }
        if effects.failure {
            let opened = rt.breaker.guard().on_failure(self.mono());
            if opened {
                tracing::warn!(channel = %name, cooldown = ?self.cfg.breaker.cooldown, "circuit opened after repeated failures");
            }
        }
        if let Some(pause) = effects.pause {
            rt.throttled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("klaxon_rate_limited_total", "channel" => name.clone()).increment(1);
            tracing::warn!(channel = %name, retry_after = ?pause, "provider rate-limited us; pausing the channel");
            self.pause(rt, pause).await;
            patch.paused_until = Some(Some(now + TimeDelta::from_std(pause).unwrap_or_default()));
        }
        if let Some(reason) = &effects.disable {
            tracing::error!(channel = %name, %reason, "disabling channel");
            let mut s = rt.state.guard();
            s.enabled = Some(false);
            s.disabled_reason = Some(reason.clone());
            patch.enabled = Some(Some(false));
            patch.disabled_reason = Some(Some(reason.clone()));
        }
        let changed =
            patch.last_error.is_some() || patch.paused_until.is_some() || patch.enabled.is_some();
        if changed && let Err(e) = self.store.patch_channel(&name, patch).await {
            tracing::warn!(channel = %name, error = %e, "could not persist channel state");
        }
        let outcome = Outcome {
            status: done.status,
            attempt: done.attempt.number,
            error: done.attempt.error.clone(),
            latency_ms: done.attempt.latency_ms,
        };
        self.announce(rt, c, outcome, now);
    }

    /// Tells the live stream what this attempt came to, and how its channel looks now.
    fn announce(&self, rt: &Runtime, c: &Claimed, done: Outcome, now: DateTime<Utc>) {
        if !self.events.watched() {
            return;
        }
        let since_accept = (now - c.notification.created_at).num_milliseconds().max(0);
        self.events.publish(Event::Delivery(DeliveryEvent {
            delivery_id: c.delivery.id,
            notification_id: c.notification.id,
            channel: rt.spec.name.clone(),
            target: c.delivery.target.clone(),
            status: done.status,
            attempt: done.attempt,
            error: done.error,
            latency_ms: done.latency_ms,
            accept_to_outcome_ms: since_accept as u64,
            title: c.notification.title.clone(),
            summary: c
                .notification
                .message
                .chars()
                .take(crate::events::SUMMARY_CHARS)
                .collect(),
            severity: c.notification.severity,
            at: now,
        }));
        self.events.publish(Event::Channel(rt.view(now)));
    }

    /// Holds every send on the channel for `d` (all its targets).
    /// With shared limits, every replica holds too.
    async fn pause(&self, rt: &Runtime, d: Duration) {
        self.mark_paused(rt, d);
        let key: LimitKey = rt.channel_key();
        self.limits.pause(&key, self.mono(), d).await;
    }

    fn mark_paused(&self, rt: &Runtime, d: Duration) {
        let mut s = rt.state.guard();
        let until = Utc::now() + TimeDelta::from_std(d).unwrap_or_default();
        s.paused_until = Some(s.paused_until.map_or(until, |t| t.max(until)));
    }

    /// How long the channel is still paused by a 429, as this replica knows.
    fn paused_here(&self, rt: &Runtime) -> Option<Duration> {
        let until = rt.state.guard().paused_until?;
        (until - Utc::now()).to_std().ok().filter(|d| !d.is_zero())
    }

    /// How long another replica's 429 still pauses the channel, when limits are shared; taken
    /// on here too (shown in /status, kept by this replica's limiter).
    async fn paused_elsewhere(&self, rt: &Runtime) -> Option<Duration> {
        if !self.limits.is_shared() || self.paused_here(rt).is_some() {
            return None;
        }
        let key = rt.channel_key();
        let left = self.limits.paused_elsewhere(&key.key).await?;
        // Shown in /status like a pause of its own, and kept by this replica's limiter.
        self.mark_paused(rt, left);
        self.limits.pause_here(&key, self.mono() + left);
        Some(left)
    }

    /// A new send time for a send that missed the one planned for `missed`, which it gives back.
    async fn replan(&self, keys: &[LimitKey], missed: Instant) -> Instant {
        let at = self
            .limits
            .replan(keys, missed - self.origin, self.mono())
            .await;
        self.origin + at
    }

    async fn defer_one(&self, id: Uuid, wait: Duration) {
        self.in_flight.guard().remove(&id);
        let item = Deferral {
            delivery_id: id,
            not_before: Utc::now() + TimeDelta::from_std(wait).unwrap_or_default(),
        };
        if let Err(e) = self.store.defer(vec![item]).await {
            tracing::warn!(error = %e, "could not reschedule a paused delivery; its lease will expire");
        }
    }

    async fn release(&self, ids: Vec<Uuid>) {
        {
            let mut f = self.in_flight.guard();
            for id in &ids {
                f.remove(id);
            }
        }
        let items = ids
            .into_iter()
            .map(|id| Deferral {
                delivery_id: id,
                not_before: Utc::now(),
            })
            .collect();
        if let Err(e) = self.store.defer(items).await {
            tracing::warn!(error = %e, "could not hand deliveries back; their leases will expire");
        }
    }

    fn in_flight_ids(&self) -> Vec<Uuid> {
        self.in_flight.guard().iter().copied().collect()
    }

    /// Deliveries claimed and not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.guard().len()
    }
}

impl EngineHandle {
    /// Stops claiming, waits up to `grace` for sends in flight, hands the rest back to the
    /// store, and flushes recorded attempts.
    pub async fn shutdown(self, grace: Duration) {
        self.cancel.cancel();
        let _ = self.scheduler.await;
        self.engine.tasks.close();
        if tokio::time::timeout(grace, self.engine.tasks.wait())
            .await
            .is_err()
        {
            let left = self.engine.in_flight_ids();
            tracing::warn!(
                count = left.len(),
                "sends still running at the end of the grace period; handing them back"
            );
            self.engine.release(left).await;
        }
        // Every send has finished or been handed back: write what they recorded, then stop.
        self.stop_writer.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.writer).await;
    }
}

async fn write_completions(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Completion>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(COMPLETE_BATCH);
    loop {
        let stopping = tokio::select! {
            n = rx.recv_many(&mut batch, COMPLETE_BATCH) => {
                if n == 0 {
                    return;
                }
                false
            }
            _ = stop.cancelled() => {
                while let Ok(c) = rx.try_recv() {
                    batch.push(c);
                }
                true
            }
        };
        while !batch.is_empty() {
            match store.complete(batch.clone()).await {
                Ok(()) => {}
                Err(e) => {
                    // Keep the batch: a delivered message must be recorded, or it is resent.
                    tracing::error!(error = %e, count = batch.len(), "recording attempts failed; retrying in 1 s");
                    if stopping {
                        // On the way out: the leases will expire and these be resent.
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            batch.clear();
        }
        if stopping {
            return;
        }
    }
}

/// What the live stream is told about a delivery's latest step: an attempt, or an end unsent.
struct Outcome {
    status: DeliveryStatus,
    attempt: u32,
    error: Option<String>,
    latency_ms: u64,
}

/// Counts a send against its channel's cap for as long as it lives; when it ends, the
/// scheduler is woken, since a slot and a place under the cap just came free.
struct Busy(Arc<Runtime>, Arc<Engine>);

impl Busy {
    fn new(rt: Arc<Runtime>, engine: Arc<Engine>) -> Self {
        rt.busy.fetch_add(1, Ordering::Relaxed);
        Busy(rt, engine)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.1.wake();
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "klaxon".into())
}
