//! Group commit: API handlers submit entries and wait; one task folds everything waiting into
//! a single transaction, commits, and only then answers each submitter. Throughput is then
//! bounded by transactions per second × batch size, not by one fsync per request, and nothing
//! is acknowledged before its commit.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::{Inserted, NewEntry, Result, Store, StoreError};

type Reply = oneshot::Sender<Result<Vec<Inserted>>>;

#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::Sender<(Vec<NewEntry>, Reply)>,
}

impl GroupCommitter {
    /// Starts the committing task. `max_entries` bounds one transaction.
    pub fn start(store: Arc<dyn Store>, max_entries: usize) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(store, rx, max_entries.max(1)));
        GroupCommitter { tx }
    }

    /// Commits `entries` (in one transaction with whatever else is waiting) and returns their
    /// results once committed.
    pub async fn submit(&self, entries: Vec<NewEntry>) -> Result<Vec<Inserted>> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send((entries, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?;
        wait.await.map_err(|_| {
            StoreError::Unavailable("the store writer stopped before answering".into())
        })?
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<(Vec<NewEntry>, Reply)>, max: usize) {
    let mut waiting: Vec<(usize, Reply)> = Vec::new();
    let mut entries: Vec<NewEntry> = Vec::new();
    while let Some((first, reply)) = rx.recv().await {
        waiting.push((first.len(), reply));
        entries.extend(first);
        // Everything that queued while the last transaction ran joins this one.
        while entries.len() < max {
            match rx.try_recv() {
                Ok((more, reply)) => {
                    waiting.push((more.len(), reply));
                    entries.extend(more);
                }
                Err(_) => break,
            }
        }
        let result = store.insert(std::mem::take(&mut entries)).await;
        match result {
            Ok(mut all) => {
                for (n, reply) in waiting.drain(..) {
                    let rest = all.split_off(n.min(all.len()));
                    let _ = reply.send(Ok(std::mem::replace(&mut all, rest)));
                }
            }
            Err(e) => {
                for (_, reply) in waiting.drain(..) {
                    let _ = reply.send(Err(e.duplicate()));
                }
            }
        }
    }
}
