//! Usage rows are written in batches by one task, off the request path: at full load a
//! row per request would otherwise be a transaction (and an fsync) per request.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Store, UsageRow};

/// Rows waiting in memory; beyond this, settling requests wait briefly for room.
const QUEUE: usize = 65_536;
/// Rows per transaction, and the longest a row waits for its batch.
const BATCH: usize = 512;
const LINGER: Duration = Duration::from_millis(50);

pub struct UsageWriter {
    sender: Mutex<Option<mpsc::Sender<UsageRow>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl UsageWriter {
    pub fn start(store: Store) -> UsageWriter {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_batches(store, receiver));
        UsageWriter { sender: Mutex::new(Some(sender)), task: Mutex::new(Some(task)) }
    }

    /// Queues a row. Never blocks the caller: when the queue is full the row waits in a
    /// task of its own, so nothing is dropped.
    pub fn record(&self, row: UsageRow) {
        let Some(sender) = self.sender.lock().unwrap_or_else(PoisonError::into_inner).clone() else {
            tracing::error!(request_id = %row.request_id, "usage row after shutdown, not recorded");
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(row)) = sender.try_send(row) {
            tokio::spawn(async move {
                if sender.send(row).await.is_err() {
                    tracing::error!("usage writer stopped; a usage row was not recorded");
                }
            });
        }
    }

    /// Writes everything queued, then stops (on shutdown).
    pub async fn flush_and_stop(&self) {
        drop(self.sender.lock().unwrap_or_else(PoisonError::into_inner).take());
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn write_batches(store: Store, mut receiver: mpsc::Receiver<UsageRow>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let Some(first) = receiver.recv().await else { return };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(row)) => batch.push(row),
                Ok(None) | Err(_) => break,
            }
        }
        // A failed batch is retried a few times: the database may be restarting.
        for attempt in 1..=5u32 {
            match store.record_usage_batch(&batch).await {
                Ok(()) => break,
                Err(error) if attempt == 5 => {
                    tracing::error!(rows = batch.len(), "usage rows not recorded: {error}");
                }
                Err(error) => {
                    tracing::warn!(rows = batch.len(), attempt, "usage batch failed, retrying: {error}");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        batch.clear();
    }
}
