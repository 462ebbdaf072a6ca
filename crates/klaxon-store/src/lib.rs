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
use klaxon_core::model::{Attempt, Delivery, DeliveryStatus, Notification};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused the operation; worth retrying later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be read back (corruption or a newer schema).
    #[error("store data invalid: {0}")]
    Corrupt(String),
    #[error("unsupported store URL: {0}")]
    Config(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A notification to insert, with the deliveries routing chose for it.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub notification: Notification,
    pub deliveries: Vec<NewDelivery>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub id: Uuid,
    pub channel: String,
    pub target: Option<String>,
}

/// What an insert produced. For a repeated idempotency key, the first notification's ids and
/// `duplicate = true`; nothing new was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Inserted {
    pub notification_id: Uuid,
    pub duplicate: bool,
    pub deliveries: Vec<DeliverySummary>,
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
    /// The earliest `not_before` among waiting deliveries (the scheduler sleeps until then).
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>>;
    async fn get(&self, id: Uuid) -> Result<Option<NotificationRecord>>;
    /// Newest first.
    async fn list(&self, filter: ListFilter) -> Result<Vec<NotificationRecord>>;
    async fn depth(&self) -> Result<Vec<DepthRow>>;
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

/// What inserting `e` produced, before the commit makes it true.
pub(crate) fn summary(e: &NewEntry) -> Inserted {
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
                status: DeliveryStatus::Pending,
            })
            .collect(),
    }
}

/// A history page: each notification (newest first, as read) with its deliveries.
pub(crate) fn records(
    notifications: Vec<Notification>,
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
    notifications
        .into_iter()
        .map(|n| NotificationRecord {
            deliveries: by_notification.remove(&n.id).unwrap_or_default(),
            notification: n,
        })
        .collect()
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
