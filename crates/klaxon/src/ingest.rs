//! Ingest: validated notifications become stored entries. Routing picks channels, each channel
//! target gets a delivery, the group committer makes it durable, and only then the caller hears
//! "accepted" and the engine is woken.
//!
//! Planning also fixes the notification's effective dedup key and window (the store decides,
//! inside the insert transaction, whether it repeats an original) and whether a source switch
//! keeps it from being sent: then every delivery is stored `suppressed` with the reason.

use std::sync::Arc;

use klaxon_core::digest::{Grouping, grouping};
use klaxon_core::input::InputError;
use klaxon_core::model::{DeliveryStatus, Notification, new_id};
use klaxon_core::route::{Route, RouteReason, Routing};
use klaxon_store::group::GroupCommitter;
use klaxon_store::{Inserted, NewDelivery, NewEntry, StoreError};

use crate::deliver::Engine;
use crate::deliver::registry::{Registry, Runtime};

/// The digest group `n`'s deliveries on `rt` wait in, if its route groups. A digest carries
/// neither files nor the parts of a long text: a notification that needs them on this channel
/// (its targets are more than the channel's recipients) goes out as itself.
fn digest_group(
    routes: &[Route],
    why: &RouteReason,
    n: &Notification,
    rt: &Runtime,
    targets: &[Option<String>],
) -> Option<Grouping> {
    let group = grouping(routes, why, n, &rt.spec.name)?;
    (targets == rt.channel.targets(&Notification::new("")).as_slice()).then_some(group)
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Ingest {
    registry: Arc<Registry>,
    routing: Arc<Routing>,
    committer: GroupCommitter,
    engine: Arc<Engine>,
}

impl Ingest {
    pub fn new(
        registry: Arc<Registry>,
        routing: Routing,
        committer: GroupCommitter,
        engine: Arc<Engine>,
    ) -> Self {
        Ingest {
            registry,
            routing: Arc::new(routing),
            committer,
            engine,
        }
    }

    /// Routes one notification into an entry. `field` names it in errors (`channels`,
    /// `[3].channels`).
    pub fn plan(&self, mut n: Notification, prefix: &str) -> Result<NewEntry, InputError> {
        klaxon_core::input::check_nul(&n, prefix)?;
        let names = self.registry.names();
        let decision = self.routing.decide(&n, &names);
        let (chosen, why) = (&decision.channels, &decision.reason);
        let field = if prefix.is_empty() {
            "channels".to_string()
        } else {
            format!("{prefix}.channels")
        };
        let mut deliveries = Vec::new();
        for name in chosen {
            let Some(rt) = self.registry.get(name) else {
                return Err(InputError::new(
                    field,
                    "unknown_channel",
                    format!(
                        "no channel named `{name}` (configured: {})",
                        names.join(", ")
                    ),
                ));
            };
            let targets = rt.channel.targets(&n);
            let group = digest_group(&self.routing.routes, why, &n, rt, &targets);
            for target in targets {
                deliveries.push(NewDelivery {
                    id: new_id(),
                    channel: name.clone(),
                    group: group.as_ref().map(|g| g.for_target(target.as_deref())),
                    target,
                });
            }
        }
        match why {
            _ if decision.switched_off.is_some() => {
                tracing::info!(id = %n.id, reason = decision.switched_off.as_deref().unwrap_or(""), "source switched off; stored with its deliveries suppressed")
            }
            RouteReason::Unmatched => {
                tracing::warn!(id = %n.id, "no route matched; stored without deliveries")
            }
            RouteReason::CriticalUnmatched => {
                tracing::warn!(id = %n.id, "no route matched a critical notification; sending it to every channel")
            }
            _ => {}
        }
        // Stored on the notification: the store decides repeats from these alone.
        if let Some(d) = &decision.dedup {
            n.dedup_key = Some(d.key.clone());
            // The stored window is in seconds; a sub-second route window still dedups.
            n.dedup_window_secs = Some(d.window.as_secs().max(1));
        }
        Ok(NewEntry {
            notification: n,
            deliveries,
            suppress: decision.switched_off,
        })
    }

    /// Commits planned entries (one transaction with whatever else is waiting) and wakes the
    /// engine.
    pub async fn commit(&self, entries: Vec<NewEntry>) -> Result<Vec<Inserted>, StoreError> {
        let sources: Vec<String> = entries
            .iter()
            .map(|e| e.notification.source.clone())
            .collect();
        let grouped = entries
            .iter()
            .any(|e| e.deliveries.iter().any(|d| d.group.is_some()));
        let out = self.committer.submit(entries).await?;
        self.accepted(sources.into_iter().zip(&out));
        if grouped {
            self.engine.wake_groups();
        }
        Ok(out)
    }

    /// Counts and announces committed notifications (by source) and wakes the engine: what
    /// every way in does once its notifications are in the store.
    pub fn accepted<'a>(&self, committed: impl IntoIterator<Item = (String, &'a Inserted)>) {
        let events = &self.engine.events;
        for (src, r) in committed {
            if !r.duplicate {
                // Why nothing was sent is worth a graph: a noisy repeat or a muted source (the
                // only other way every delivery starts suppressed).
                let suppressed = if r.duplicate_of.is_some() {
                    Some("dedup")
                } else if !r.deliveries.is_empty()
                    && r.deliveries
                        .iter()
                        .all(|d| d.status == DeliveryStatus::Suppressed)
                {
                    Some("switched_off")
                } else {
                    None
                };
                if let Some(reason) = suppressed {
                    metrics::counter!("klaxon_notifications_suppressed_total", "source" => src.clone(), "reason" => reason)
                        .increment(1);
                }
                metrics::counter!("klaxon_notifications_received_total", "source" => src)
                    .increment(1);
                events.publish(crate::events::Event::Accepted(
                    crate::events::AcceptedEvent {
                        notification_id: r.notification_id,
                        deliveries: r.deliveries.len(),
                        at: chrono::Utc::now(),
                    },
                ));
            }
        }
        self.engine.wake();
    }

    /// Wakes the digest flusher: new members may have joined groups.
    pub fn wake_groups(&self) {
        self.engine.wake_groups();
    }

    pub async fn submit(&self, n: Notification) -> Result<Inserted, IngestError> {
        let entry = self.plan(n, "")?;
        let mut out = self.commit(vec![entry]).await?;
        Ok(out.remove(0))
    }
}
