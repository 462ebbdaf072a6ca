//! Ingest: validated notifications become stored entries. Routing picks channels, each channel
//! target gets a delivery, the group committer makes it durable, and only then the caller hears
//! "accepted" and the engine is woken.

use std::sync::Arc;

use klaxon_core::input::InputError;
use klaxon_core::model::{Notification, new_id};
use klaxon_core::route::{Route, RouteReason, resolve};
use klaxon_store::group::GroupCommitter;
use klaxon_store::{Inserted, NewDelivery, NewEntry, StoreError};

use crate::deliver::Engine;
use crate::deliver::registry::Registry;

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
    routes: Arc<Vec<Route>>,
    committer: GroupCommitter,
    engine: Arc<Engine>,
}

impl Ingest {
    pub fn new(
        registry: Arc<Registry>,
        routes: Vec<Route>,
        committer: GroupCommitter,
        engine: Arc<Engine>,
    ) -> Self {
        Ingest {
            registry,
            routes: Arc::new(routes),
            committer,
            engine,
        }
    }

    /// Routes one notification into an entry. `field` names it in errors (`channels`,
    /// `[3].channels`).
    pub fn plan(&self, n: Notification, prefix: &str) -> Result<NewEntry, InputError> {
        let names = self.registry.names();
        let (chosen, why) = resolve(&self.routes, &n, &names);
        let field = if prefix.is_empty() {
            "channels".to_string()
        } else {
            format!("{prefix}.channels")
        };
        let mut deliveries = Vec::new();
        for name in &chosen {
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
            for target in rt.channel.targets(&n) {
                deliveries.push(NewDelivery {
                    id: new_id(),
                    channel: name.clone(),
                    target,
                });
            }
        }
        match why {
            RouteReason::Unmatched => {
                tracing::warn!(id = %n.id, "no route matched; stored without deliveries")
            }
            RouteReason::CriticalUnmatched => {
                tracing::warn!(id = %n.id, "no route matched a critical notification; sending it to every channel")
            }
            _ => {}
        }
        Ok(NewEntry {
            notification: n,
            deliveries,
        })
    }

    /// Commits planned entries (one transaction with whatever else is waiting) and wakes the
    /// engine.
    pub async fn commit(&self, entries: Vec<NewEntry>) -> Result<Vec<Inserted>, StoreError> {
        let sources: Vec<String> = entries
            .iter()
            .map(|e| e.notification.source.clone())
            .collect();
        let out = self.committer.submit(entries).await?;
        self.accepted(sources.into_iter().zip(&out));
        Ok(out)
    }

    /// Counts and announces committed notifications (by source) and wakes the engine: what
    /// every way in does once its notifications are in the store.
    pub fn accepted<'a>(&self, committed: impl IntoIterator<Item = (String, &'a Inserted)>) {
        let events = &self.engine.events;
        for (src, r) in committed {
            if !r.duplicate {
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

    pub async fn submit(&self, n: Notification) -> Result<Inserted, IngestError> {
        let entry = self.plan(n, "")?;
        let mut out = self.commit(vec![entry]).await?;
        Ok(out.remove(0))
    }
}
