//! Digests (PRODUCT.md §7): flushes each digest group when it is due — its oldest member has
//! waited `group_wait` and its last send is `group_interval` ago — into one digest delivery,
//! or, when it holds a single member, lets that one go out as itself.
//!
//! The store keeps the groups and does each flush in one transaction (on PostgreSQL under the
//! group row's lock, `SKIP LOCKED`), so every replica runs this loop beside the others with no
//! leader, and a crash between deciding and writing loses nothing. The loop sleeps until the
//! next group is due; ingest wakes it when members arrive, and it looks at least every
//! `GROUP_POLL` for groups another replica filled.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use klaxon_core::model::Notification;
use klaxon_store::{Flushed, StoreError};
use tokio_util::sync::CancellationToken;

use super::Engine;

/// The longest the loop sleeps without looking: members inserted by another replica do not
/// wake this one.
const GROUP_POLL: Duration = Duration::from_secs(2);
/// A due group that another replica is flushing right now is looked at again after this.
const CONTENDED: Duration = Duration::from_millis(100);
/// After a failing store call.
const STORE_RETRY: Duration = Duration::from_secs(1);

pub(super) async fn run(engine: Arc<Engine>, cancel: CancellationToken) {
    loop {
        let wait = match flush_due(&engine, Utc::now()).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::error!(error = %e, "flushing digest groups failed; retrying in 1 s");
                STORE_RETRY
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = engine.groups_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Flushes the groups due at `now`; returns how long until the next look.
async fn flush_due(engine: &Engine, now: DateTime<Utc>) -> Result<Duration, StoreError> {
    let mut next = GROUP_POLL;
    let mut sent = false;
    // A digest goes to every part its channel needs for the group's recipient.
    let targets = |channel: &str, recipient: Option<&str>, digest: &Notification| {
        engine.registry.get(channel).map_or_else(Vec::new, |rt| {
            rt.channel
                .targets(digest)
                .into_iter()
                .filter(|t| rt.channel.addresses(t.as_deref(), recipient))
                .collect()
        })
    };
    for g in engine.store.pending_groups().await? {
        let due = g.due_at();
        if due > now {
            next = next.min((due - now).to_std().unwrap_or_default());
            continue;
        }
        match engine.store.flush_group(&g.key, now, &targets).await? {
            Flushed::Nothing => next = next.min(CONTENDED),
            Flushed::Released { delivery_id } => {
                tracing::debug!(channel = %g.channel, delivery = %delivery_id, "digest group held one notification; sending it as itself");
                sent = true;
            }
            Flushed::Digest {
                notification_id,
                channel,
                members,
                ..
            } => {
                tracing::info!(channel = %channel, digest = %notification_id, members, "digest made");
                metrics::counter!("klaxon_digests_total", "channel" => channel.clone())
                    .increment(1);
                metrics::counter!("klaxon_aggregated_total", "channel" => channel)
                    .increment(members as u64);
                sent = true;
            }
        }
    }
    if sent {
        // The sends are claimable now; and a full batch may have left members due at once.
        engine.wake();
        next = Duration::ZERO;
    }
    Ok(next)
}
