//! Klaxon's durable store: the source of truth for notifications, deliveries, attempts and
//! channel state.
//!
//! - [`Store`]: the one trait every backend implements; the engine and API speak only to it.
//! - [`sqlite`]: the embedded default (WAL, one writer connection, readers beside it).
//! - [`postgres`]: for several replicas sharing one queue (`FOR UPDATE SKIP LOCKED` claims).
//! - [`group`]: group commit — many submitters, one transaction, nobody answered before it.
//!
//! The queue is the `deliveries` table: a delivery is claimed with a lease and a `not_before`;
//! a retry reschedules the row; a lease that runs out (the worker crashed) makes the row
//! claimable again. So a crash loses nothing and a restart resumes.

pub mod group;
pub mod postgres;
pub mod sqlite;
pub mod testing;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use klaxon_core::digest::Grouping;
use klaxon_core::model::{Attempt, Delivery, DeliveryStatus, Notification};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused the operation; worth retrying later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database's disk is full (SQLite `SQLITE_FULL`, PostgreSQL `disk_full`): nothing
    /// more can be written until space is freed.
    #[error("store disk full: {0}")]
    Full(String),
    /// A stored row could not be read back (corruption or a newer schema).
    #[error("store data invalid: {0}")]
    Corrupt(String),
    #[error("unsupported store URL: {0}")]
    Config(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let full = match &e {
            // SQLITE_FULL (13, or an extended code on top of it) and PostgreSQL's 53100.
            sqlx::Error::Database(d) => d
                .code()
                .is_some_and(|c| c == "53100" || c.parse::<i32>().is_ok_and(|n| n & 0xff == 13)),
            sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        };
        if full {
            StoreError::Full(e.to_string())
        } else {
            StoreError::Unavailable(e.to_string())
        }
    }
}

impl StoreError {
    /// The same error for another waiter (the group committer answers several with one).
    pub fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            StoreError::Full(m) => StoreError::Full(m.clone()),
            StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
            StoreError::Config(m) => StoreError::Config(m.clone()),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A notification to insert, with the deliveries routing chose for it.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub notification: Notification,
    pub deliveries: Vec<NewDelivery>,
    /// Store every delivery `suppressed` with this reason instead of sending it (the source
    /// or its strategy is switched off). Dedup needs no flag: the store decides it from the
    /// notification's `dedup_key` and `dedup_window_secs`.
    pub suppress: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub id: Uuid,
    pub channel: String,
    pub target: Option<String>,
    /// The digest group this delivery waits in; `None`: it is claimable at once.
    pub group: Option<Grouping>,
}

/// A digest group with members waiting: what the engine needs to know when to flush it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingGroup {
    pub key: String,
    pub channel: String,
    /// When the oldest waiting member arrived (or its `send_at`).
    pub oldest: DateTime<Utc>,
    /// Until when the group's last send holds it (`group_interval`).
    pub held_until: Option<DateTime<Utc>>,
    pub wait: std::time::Duration,
}

impl PendingGroup {
    /// When the group may be flushed.
    pub fn due_at(&self) -> DateTime<Utc> {
        klaxon_core::digest::due_at(self.oldest, self.held_until, self.wait)
    }
}

/// The targets a digest for (`channel`, recipient) has on that channel, as the channel renders
/// it; empty when the channel is gone (then the digest goes to the recipient as stored).
pub type DigestTargets<'a> =
    dyn Fn(&str, Option<&str>, &Notification) -> Vec<Option<String>> + Send + Sync + 'a;

/// What flushing a group did.
#[derive(Debug, Clone, PartialEq)]
pub enum Flushed {
    /// Nothing: not due, no members, or another replica is flushing it right now.
    Nothing,
    /// The group held one member; it goes out as itself.
    Released { delivery_id: Uuid },
    /// `members` deliveries became one digest notification; they point at its first delivery
    /// (a long digest has one per part).
    Digest {
        notification_id: Uuid,
        delivery_id: Uuid,
        channel: String,
        members: usize,
    },
}

/// What an insert produced. For a repeated idempotency key, the first notification's ids and
/// `duplicate = true`; nothing new was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Inserted {
    pub notification_id: Uuid,
    pub duplicate: bool,
    pub deliveries: Vec<DeliverySummary>,
    /// A repeat of this notification's dedup key inside its window: stored, with every
    /// delivery `suppressed`.
    pub duplicate_of: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct DeliverySummary {
    pub id: Uuid,
    pub channel: String,
    pub target: Option<String>,
    pub status: DeliveryStatus,
}

/// Ask for due work.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub now: DateTime<Utc>,
    pub limit: usize,
    pub lease: std::time::Duration,
    pub owner: String,
    /// The channels that may send now. Rows of others (disabled, circuit open, not configured
    /// any more) stay untouched — and unread, however many there are.
    pub channels: Vec<String>,
}

/// A claimed delivery with the notification it carries.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub notification: std::sync::Arc<Notification>,
}

/// The result of one attempt, to record and apply in one step.
#[derive(Debug, Clone)]
pub struct Completion {
    pub attempt: Attempt,
    pub status: DeliveryStatus,
    /// When the next attempt may run (status `retrying`).
    pub not_before: Option<DateTime<Utc>>,
    pub provider_id: Option<String>,
    /// The attempt was answered 429 (counted apart from the retry budget).
    pub throttled: bool,
    /// The delivery died and its notification goes on to this channel, in the same
    /// transaction, so a crash cannot lose the hand-over.
    pub fallback: Option<Fallback>,
}

/// Where a failed delivery's notification goes next (PRODUCT.md §7).
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    pub channel: String,
    /// One per recipient of the fallback channel; each points back at the delivery it replaces.
    pub deliveries: Vec<NewDelivery>,
}

/// A claimed delivery handed to its fallback without an attempt: its channel's circuit has been
/// open too long. It ends `dead` with `reason`.
#[derive(Debug, Clone)]
pub struct FallbackMove {
    pub delivery_id: Uuid,
    pub reason: String,
    pub fallback: Fallback,
}

/// End a claimed delivery without an attempt: `suppressed` (quiet hours, a mute) or `expired`
/// (older than its event type's `max_age`), with the reason kept as its `last_error`.
#[derive(Debug, Clone)]
pub struct Finish {
    pub delivery_id: Uuid,
    pub status: DeliveryStatus,
    pub reason: String,
}

/// Return a claimed delivery to the queue without an attempt (rate-limited, shutting down).
#[derive(Debug, Clone)]
pub struct Deferral {
    pub delivery_id: Uuid,
    pub not_before: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<DeliveryStatus>,
    pub channel: Option<String>,
    pub severity: Option<klaxon_core::Severity>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: usize,
    /// Return notifications older than this id (the last one of the previous page).
    pub cursor: Option<Uuid>,
    /// Only notifications whose title or message contains this (ASCII case-insensitive).
    pub text: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NotificationRecord {
    pub notification: Notification,
    pub deliveries: Vec<DeliveryRecord>,
    /// The original this one repeats (dedup); its deliveries are `suppressed`.
    pub duplicate_of: Option<Uuid>,
    /// How many repeats of this one were suppressed.
    pub repeats: u64,
}

#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub delivery: Delivery,
    pub attempts: Vec<Attempt>,
}

/// Run-time state of a channel kept across restarts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelState {
    pub channel: String,
    /// `None`: as configured.
    pub enabled: Option<bool>,
    pub disabled_reason: Option<String>,
    pub paused_until: Option<DateTime<Utc>>,
    pub muted_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
}

/// A change to a channel's state; `None` fields are left as they are.
#[derive(Debug, Clone, Default)]
pub struct ChannelPatch {
    pub enabled: Option<Option<bool>>,
    pub disabled_reason: Option<Option<String>>,
    pub paused_until: Option<Option<DateTime<Utc>>>,
    pub muted_until: Option<Option<DateTime<Utc>>>,
    pub last_error: Option<(String, DateTime<Utc>)>,
    pub last_success_at: Option<DateTime<Utc>>,
}

/// How many deliveries sit in each (channel, status).
#[derive(Debug, Clone, PartialEq)]
pub struct DepthRow {
    pub channel: String,
    pub status: DeliveryStatus,
    pub count: i64,
}

/// Which deliveries [`Store::depth`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepthScope {
    /// What still needs something: waiting or in flight (`pending`, `sending`, `retrying`) and
    /// the dead letters. Counted from the status index's ranges, so its cost follows the queue,
    /// not the history — cheap enough to run every few seconds whatever the retention.
    Open,
    /// Every status, history included: a walk over every delivery kept.
    All,
}

impl DepthScope {
    /// The statuses this scope counts (the query's `IN` list).
    pub fn statuses(self) -> &'static [DeliveryStatus] {
        match self {
            DepthScope::Open => &[
                DeliveryStatus::Pending,
                DeliveryStatus::Sending,
                DeliveryStatus::Retrying,
                DeliveryStatus::Dead,
            ],
            DepthScope::All => &DeliveryStatus::ALL,
        }
    }

    /// The same query on both stores (placeholders are not needed).
    fn sql(self) -> &'static str {
        match self {
            DepthScope::Open => {
                "SELECT channel, status, COUNT(*) AS n FROM deliveries \
                 WHERE status IN ('pending', 'sending', 'retrying', 'dead') GROUP BY status, channel"
            }
            DepthScope::All => {
                "SELECT channel, status, COUNT(*) AS n FROM deliveries GROUP BY status, channel"
            }
        }
    }
}

/// What another process (or this one) committed that a replica should look at now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Deliveries became due (inserted, requeued, handed to a fallback).
    Due,
    /// Rows arrived in the inbox table.
    Inbox,
}

/// What retention removed, or in a dry run would remove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    pub notifications: u64,
    pub deliveries: u64,
    pub attempts: u64,
    /// `false`: another replica holds the prune lock and prunes; this one did nothing.
    pub ran: bool,
}

/// Turns one inbox payload into an entry (routing included), or says why it cannot be one.
pub type InboxPlan =
    dyn Fn(serde_json::Value) -> std::result::Result<NewEntry, String> + Send + Sync;

/// One round of the inbox: what became notifications, and the rows that could not.
#[derive(Debug, Clone, Default)]
pub struct InboxRound {
    /// Rows consumed (turned into notifications or marked bad).
    pub taken: usize,
    /// One per row that became a notification, with the notification's source.
    pub inserted: Vec<(String, Inserted)>,
    /// Rows kept with their error: (inbox id, reason).
    pub rejected: Vec<(i64, String)>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Brings the schema up to date; safe to call at every start.
    async fn migrate(&self) -> Result<()>;
    async fn ping(&self) -> Result<()>;
    /// Inserts in one transaction; returns one result per entry, in order.
    async fn insert(&self, entries: Vec<NewEntry>) -> Result<Vec<Inserted>>;
    /// Claims due deliveries, highest priority first. Also takes back deliveries whose lease ran
    /// out, and marks due deliveries past `expires_at` as `expired`.
    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>>;
    /// Records attempts and their outcome, in one transaction.
    async fn complete(&self, done: Vec<Completion>) -> Result<()>;
    /// Extends the lease of deliveries this owner still holds (sends in progress), so a lease
    /// can be short — a crashed worker's rows come back quickly — while slow sends stay ours.
    async fn renew(&self, owner: &str, ids: &[Uuid], until: DateTime<Utc>) -> Result<()>;
    /// Puts dead deliveries back in the queue with a fresh retry budget (an operator's retry);
    /// `None` = every dead delivery. Returns the ids requeued.
    async fn requeue(&self, ids: Option<Vec<Uuid>>) -> Result<Vec<Uuid>>;
    /// Moves `channel`'s waiting deliveries due exactly at `from` to `to`: what a mute held
    /// for its end goes when the mute is lifted early. Returns how many moved.
    async fn reschedule(
        &self,
        channel: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64>;
    /// Ends claimed deliveries as `dead` and inserts their fallbacks, in one transaction.
    async fn fall_back(&self, moves: Vec<FallbackMove>) -> Result<()>;
    /// Puts claimed deliveries back without counting an attempt.
    async fn defer(&self, items: Vec<Deferral>) -> Result<()>;
    /// Ends claimed deliveries in a final status without an attempt, in one transaction.
    async fn finish(&self, items: Vec<Finish>) -> Result<()>;
    /// The earliest `not_before` among waiting deliveries (the scheduler sleeps until then).
    /// Deliveries waiting in a digest group do not count: they are not claimable.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>>;
    /// Digest groups that have members waiting.
    async fn pending_groups(&self) -> Result<Vec<PendingGroup>>;
    /// Flushes one group if it is due at `now`, in one transaction: its waiting members (at
    /// most `max_batch`, oldest first) become a digest notification with one delivery to the
    /// group's channel target and are marked `aggregated` pointing at it; a lone member is
    /// released to be sent as itself. The group is then held for its interval. `targets`
    /// names the digest's deliveries (a long digest may need several parts).
    async fn flush_group(
        &self,
        key: &str,
        now: DateTime<Utc>,
        targets: &DigestTargets<'_>,
    ) -> Result<Flushed>;
    async fn get(&self, id: Uuid) -> Result<Option<NotificationRecord>>;
    /// Newest first.
    async fn list(&self, filter: ListFilter) -> Result<Vec<NotificationRecord>>;
    async fn depth(&self, scope: DepthScope) -> Result<Vec<DepthRow>>;
    async fn channel_states(&self) -> Result<Vec<ChannelState>>;
    async fn patch_channel(&self, channel: &str, patch: ChannelPatch) -> Result<ChannelState>;
    /// Removes notifications whose deliveries are all final and older than `before` (by their
    /// last change), with their deliveries and attempts, `batch` notifications a transaction so
    /// no write waits long. `dry_run` only counts.
    async fn prune(&self, before: DateTime<Utc>, batch: usize, dry_run: bool) -> Result<Pruned>;
    /// Wake-ups committed by other processes sharing this store (PostgreSQL `LISTEN`), fed by a
    /// task that reconnects by itself and ends when the receiver is dropped. `None`: the store
    /// has a single process, whose own `wake` calls suffice.
    fn wakeups(&self) -> Option<tokio::sync::mpsc::Receiver<Wake>> {
        None
    }
    /// Whether this store has the inbox table (PostgreSQL).
    fn has_inbox(&self) -> bool {
        false
    }
    /// Takes up to `limit` inbox rows and, in one transaction, inserts what `plan` makes of
    /// them, marks the rows it refuses with the reason, and deletes the rest; rows another
    /// replica is taking are skipped.
    async fn take_inbox(&self, _limit: usize, _plan: &InboxPlan) -> Result<InboxRound> {
        Ok(InboxRound::default())
    }
}

/// The notifications retention may remove: created before `cutoff`, and every delivery final
/// and unchanged since before it. The same condition on both backends (`$1`/`?1` = cutoff).
macro_rules! prunable {
    ($p:literal) => {
        concat!(
            "n.created_at < ",
            $p,
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id \
               AND (d.status IN ('pending', 'retrying', 'sending') OR d.updated_at >= ",
            $p,
            "))"
        )
    };
}
pub(crate) use prunable;

/// Opens the store a URL names.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(postgres::PgStore::open(url).await?))
    } else {
        Err(StoreError::Config(format!(
            "`{}…`: the store URL must start with sqlite:, postgres:// or postgresql://",
            url.chars().take(12).collect::<String>()
        )))
    }
}

/// `url` fit to print: a password (`postgres://user:PASSWORD@host/db`) becomes `***`.
pub fn redacted_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

// ---- shared by the backends: what does not depend on the database ----

pub(crate) fn parse_status(s: &str) -> Result<DeliveryStatus> {
    s.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))
}

pub(crate) fn notification_from_body(body: &str) -> Result<Notification> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("notification body: {e}")))
}

/// What inserting `e` produced, before the commit makes it true; `duplicate_of` as the dedup
/// pass decided.
pub(crate) fn summary(e: &NewEntry, duplicate_of: Option<Uuid>) -> Inserted {
    let status = initial_status(e, duplicate_of).0;
    Inserted {
        notification_id: e.notification.id,
        duplicate: false,
        deliveries: e
            .deliveries
            .iter()
            .map(|d| DeliverySummary {
                id: d.id,
                channel: d.channel.clone(),
                target: d.target.clone(),
                status,
            })
            .collect(),
        duplicate_of,
    }
}

/// The status a new entry's deliveries start in, and why when they are not sent.
pub(crate) fn initial_status(
    e: &NewEntry,
    duplicate_of: Option<Uuid>,
) -> (DeliveryStatus, Option<String>) {
    if let Some(reason) = &e.suppress {
        return (DeliveryStatus::Suppressed, Some(reason.clone()));
    }
    match duplicate_of {
        Some(original) => (
            DeliveryStatus::Suppressed,
            Some(format!("duplicate of notification {original} (dedup)")),
        ),
        None => (DeliveryStatus::Pending, None),
    }
}

/// The dedup key of `n` and the span of creation times (Unix ms, `(from, to]`) an original
/// must fall in, when `n` is deduplicated at all.
pub(crate) fn dedup_span(n: &Notification) -> Option<(&str, i64, i64)> {
    let key = n.dedup_key.as_deref()?;
    let window = n.dedup_window_secs.filter(|w| *w > 0)?;
    let to = ms(n.created_at);
    let span = i64::try_from(window.saturating_mul(1000)).unwrap_or(i64::MAX);
    Some((key, to.saturating_sub(span), to))
}

/// Dedup inside one insert: originals stored earlier in the same transaction count like ones
/// already in the table, so a burst folded into one group commit is deduplicated too.
#[derive(Default)]
pub(crate) struct DedupPass<'a> {
    originals: std::collections::HashMap<&'a str, Vec<(i64, Uuid)>>,
}

impl<'a> DedupPass<'a> {
    /// Settles whether `n` repeats an original: `stored` is the newest one in the table inside
    /// `n`'s span. Returns the original's id; else `n` becomes an original itself.
    pub(crate) fn decide(
        &mut self,
        n: &'a Notification,
        stored: Option<(i64, Uuid)>,
    ) -> Option<Uuid> {
        let (key, from, to) = dedup_span(n)?;
        let in_batch = self
            .originals
            .get(key)
            .into_iter()
            .flatten()
            .filter(|(t, _)| *t > from && *t <= to)
            .max()
            .copied();
        match stored.into_iter().chain(in_batch).max() {
            Some((_, original)) => Some(original),
            None => {
                self.originals
                    .entry(key)
                    .or_default()
                    .push((ms(n.created_at), n.id));
                None
            }
        }
    }
}

/// A stored notification's head, before its deliveries are attached.
pub(crate) fn head(
    body: &str,
    duplicate_of: Option<Uuid>,
    repeats: i64,
) -> Result<NotificationRecord> {
    Ok(NotificationRecord {
        notification: notification_from_body(body)?,
        deliveries: Vec::new(),
        duplicate_of,
        repeats: u64::try_from(repeats).unwrap_or(0),
    })
}

/// A history page: each notification (newest first, as read) with its deliveries.
pub(crate) fn records(
    heads: Vec<NotificationRecord>,
    deliveries: Vec<Delivery>,
) -> Vec<NotificationRecord> {
    let mut by_notification: std::collections::HashMap<Uuid, Vec<DeliveryRecord>> =
        std::collections::HashMap::new();
    for d in deliveries {
        by_notification
            .entry(d.notification_id)
            .or_default()
            .push(DeliveryRecord {
                delivery: d,
                attempts: Vec::new(),
            });
    }
    heads
        .into_iter()
        .map(|h| NotificationRecord {
            deliveries: by_notification
                .remove(&h.notification.id)
                .unwrap_or_default(),
            ..h
        })
        .collect()
}

/// A digest group's stored row, as both backends read it.
pub(crate) struct GroupRow {
    pub channel: String,
    pub target: Option<String>,
    pub wait_ms: i64,
    pub interval_ms: i64,
    pub max_batch: i64,
    pub label: String,
    pub held_until: Option<i64>,
}

impl GroupRow {
    /// Reads a `delivery_groups` row; both backends store the same columns.
    pub(crate) fn from_row<'r, R>(r: &'r R) -> Result<Self>
    where
        R: sqlx::Row,
        &'static str: sqlx::ColumnIndex<R>,
        String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Ok(GroupRow {
            channel: r.try_get("channel")?,
            target: r.try_get("target")?,
            wait_ms: r.try_get("wait_ms")?,
            interval_ms: r.try_get("interval_ms")?,
            max_batch: r.try_get("max_batch")?,
            label: r.try_get("label")?,
            held_until: r.try_get("held_until")?,
        })
    }
}

/// Digest groups with members waiting, and the oldest member's arrival: the same text on both
/// backends (it has no parameters).
pub(crate) const PENDING_GROUPS: &str = "SELECT g.group_key, g.channel, g.wait_ms, g.held_until, m.oldest FROM \
       (SELECT group_key, MIN(not_before) AS oldest FROM deliveries \
        WHERE status = 'pending' AND group_key IS NOT NULL GROUP BY group_key) m \
     JOIN delivery_groups g ON g.group_key = m.group_key";

/// Reads a row of `PENDING_GROUPS`.
pub(crate) fn pending_group<'r, R>(r: &'r R) -> Result<PendingGroup>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(PendingGroup {
        key: r.try_get("group_key")?,
        channel: r.try_get("channel")?,
        oldest: from_ms(r.try_get("oldest")?),
        held_until: r.try_get::<Option<i64>, _>("held_until")?.map(from_ms),
        wait: std::time::Duration::from_millis(r.try_get::<i64, _>("wait_ms")?.max(0) as u64),
    })
}

/// A waiting member as read for a flush: delivery id, `not_before`, notification body.
pub(crate) type Member = (Uuid, i64, String);

/// What a flush writes, decided the same way on both backends.
pub(crate) enum FlushStep {
    Nothing,
    Release {
        id: Uuid,
        held_until: i64,
    },
    Digest {
        entry: Box<NewEntry>,
        members: Vec<Uuid>,
        held_until: i64,
    },
}

/// Decides a flush from the group's row and its eligible members (oldest first; at most
/// `max_batch + 1`, so a full batch knows it leaves some behind).
pub(crate) fn flush_step(
    g: &GroupRow,
    members: Vec<Member>,
    now: DateTime<Utc>,
    targets: &DigestTargets<'_>,
) -> Result<FlushStep> {
    use klaxon_core::digest::{FlushPlan, digest, held_after, plan};
    let max_batch = g.max_batch.max(1) as usize;
    let wait = std::time::Duration::from_millis(g.wait_ms.max(0) as u64);
    let interval = std::time::Duration::from_millis(g.interval_ms.max(0) as u64);
    let oldest = members.first().map(|m| from_ms(m.1));
    let step = plan(
        now,
        oldest,
        g.held_until.map(from_ms),
        wait,
        members.len(),
        max_batch,
    );
    let held_until = ms(held_after(now, interval, members.len() > max_batch));
    Ok(match step {
        FlushPlan::Wait => FlushStep::Nothing,
        FlushPlan::Release => FlushStep::Release {
            id: members[0].0,
            held_until,
        },
        FlushPlan::Digest(n) => {
            let values: Vec<(String, Option<String>)> = serde_json::from_str(&g.label)
                .map_err(|e| StoreError::Corrupt(format!("digest group label: {e}")))?;
            let taken = &members[..n];
            let notes = taken
                .iter()
                .map(|m| notification_from_body(&m.2))
                .collect::<Result<Vec<_>>>()?;
            let id = klaxon_core::model::new_id();
            let notification = digest(id, now, &g.channel, &values, &notes);
            let mut to = targets(&g.channel, g.target.as_deref(), &notification);
            if to.is_empty() {
                to.push(g.target.clone());
            }
            FlushStep::Digest {
                entry: Box::new(NewEntry {
                    deliveries: to
                        .into_iter()
                        .map(|target| NewDelivery {
                            id: klaxon_core::model::new_id(),
                            channel: g.channel.clone(),
                            target,
                            group: None,
                        })
                        .collect(),
                    notification,
                    suppress: None,
                }),
                members: taken.iter().map(|m| m.0).collect(),
                held_until,
            }
        }
    })
}

/// The distinct groups `entries`' deliveries join, each once: what to make sure has a row.
pub(crate) fn new_groups<'a>(
    entries: impl Iterator<Item = &'a NewEntry>,
) -> Vec<(&'a NewDelivery, &'a Grouping)> {
    let mut seen = std::collections::HashSet::new();
    entries
        .flat_map(|e| e.deliveries.iter())
        .filter_map(|d| d.group.as_ref().map(|g| (d, g)))
        .filter(|(_, g)| seen.insert(g.key.as_str()))
        .collect()
}

/// A group's `group_by` values as stored.
pub(crate) fn label(g: &Grouping) -> String {
    serde_json::to_string(&g.values).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacted_url_hides_only_the_password() {
        use super::redacted_url as r;
        assert_eq!(
            r("postgres://k:s3cret@db:5432/k"),
            "postgres://k:***@db:5432/k"
        );
        assert_eq!(r("postgresql://k@db/k?x=1"), "postgresql://k@db/k?x=1");
        assert_eq!(r("sqlite://klaxon.db"), "sqlite://klaxon.db");
        assert_eq!(r("postgres://k:p@ss@db/k"), "postgres://k:***@db/k");
    }
}
