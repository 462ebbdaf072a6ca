//! `Notifier`: Klaxon inside a Rust trading bot. `send` hands a notification to a bounded
//! in-process queue and returns at once — it never awaits the network or the disk. A pump
//! task commits queued notifications to the same store (group commit) and the same engine
//! delivers them. `shutdown` commits everything handed over and lets deliveries finish.
//!
//! When the queue is full, `send` returns [`SendError::Full`] with the notification, so the
//! caller decides (drop a debug message, or `send_wait` for a critical one). Nothing is ever
//! dropped silently.

use std::path::Path;
use std::time::Duration;

use klaxon_core::config::{Config, ConfigErrors, ProcessEnv};
use klaxon_core::input::InputError;
use klaxon_core::model::Notification;
use klaxon_store::NewEntry;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::app::{Service, StartError};
use crate::ingest::Ingest;

#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Why `send` did not take a notification; the notification comes back where it can be retried.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the notification queue is full ({0} waiting); retry, or use send_wait")]
    Full(usize, Box<Notification>),
    #[error("the notifier is shut down")]
    Closed(Box<Notification>),
    #[error("invalid notification: {0}")]
    Invalid(#[from] InputError),
}

pub struct Notifier {
    queue: mpsc::Sender<NewEntry>,
    ingest: Ingest,
    capacity: usize,
    service: Service,
    pump: tokio::task::JoinHandle<()>,
    grace: Duration,
}

impl Notifier {
    /// Starts with a configuration built by the caller.
    pub async fn start(config: Config) -> Result<Notifier, NotifierError> {
        let capacity = config.delivery.queue_capacity.max(1);
        let grace = config.server.shutdown_grace;
        let service = Service::start(config).await?;
        let ingest = service.shared.ingest.clone();
        let (queue, rx) = mpsc::channel(capacity);
        let pump = tokio::spawn(pump(ingest.clone(), rx));
        Ok(Notifier {
            queue,
            ingest,
            capacity,
            service,
            pump,
            grace,
        })
    }

    /// Reads `path` when it exists, else runs on the environment alone, like `klaxon serve`.
    pub async fn from_config_file(path: impl AsRef<Path>) -> Result<Notifier, NotifierError> {
        let path = path.as_ref();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(NotifierError::Read {
                    path: path.display().to_string(),
                    error,
                });
            }
        };
        Self::start(Config::load(text.as_deref(), &ProcessEnv)?).await
    }

    /// Hands `n` to the pipeline and returns its id. Never waits: a full queue is an error that
    /// gives the notification back.
    pub fn send(&self, n: Notification) -> Result<Uuid, SendError> {
        let id = n.id;
        let entry = self.ingest.plan(n, "")?;
        match self.queue.try_send(entry) {
            Ok(()) => Ok(id),
            Err(mpsc::error::TrySendError::Full(e)) => {
                Err(SendError::Full(self.capacity, Box::new(e.notification)))
            }
            Err(mpsc::error::TrySendError::Closed(e)) => {
                Err(SendError::Closed(Box::new(e.notification)))
            }
        }
    }

    /// Like `send`, but waits for room in the queue (still never for the network).
    pub async fn send_wait(&self, n: Notification) -> Result<Uuid, SendError> {
        let id = n.id;
        let entry = self.ingest.plan(n, "")?;
        self.queue
            .send(entry)
            .await
            .map_err(|e| SendError::Closed(Box::new(e.0.notification)))?;
        Ok(id)
    }

    /// The running service, for status queries.
    pub fn shared(&self) -> &std::sync::Arc<crate::app::Shared> {
        &self.service.shared
    }

    /// Commits everything handed over, waits up to the configured grace period for pending
    /// deliveries to go out, then stops.
    pub async fn shutdown(self) {
        let Notifier {
            queue,
            service,
            pump,
            grace,
            ..
        } = self;
        drop(queue);
        let _ = pump.await;
        let store = service.shared.store.clone();
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            let waiting: i64 = store
                .depth(klaxon_store::DepthScope::Open)
                .await
                .map(|rows| {
                    rows.iter()
                        .filter(|r| !r.status.is_final())
                        .map(|r| r.count)
                        .sum()
                })
                .unwrap_or(0);
            if waiting == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        service.shutdown(grace).await;
    }
}

/// Commits queued entries in groups. A store failure is retried, never dropped.
async fn pump(ingest: Ingest, mut rx: mpsc::Receiver<NewEntry>) {
    let mut batch = Vec::with_capacity(512);
    while rx.recv_many(&mut batch, 512).await > 0 {
        loop {
            match ingest.commit(batch.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, count = batch.len(), "could not store notifications; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        batch.clear();
    }
}
