//! Usage is summed in memory per minute and per (key, team, end user, model), and the
//! sums are added to the database by one task about once a second: the request path
//! only updates a map, and the database sees a handful of rows per second however many
//! requests there are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{Store, UsageCell, UsageRow, UsageSum};

/// How often sums are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Cells held before an early write (a bot with very many end users).
const MAX_CELLS: usize = 20_000;

pub struct UsageWriter {
    pending: Arc<Pending>,
    task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Pending {
    cells: Mutex<HashMap<UsageCell, UsageSum>>,
    /// Wakes the writer early (too many cells) or for the last write (shutdown).
    wake: Notify,
    stopping: std::sync::atomic::AtomicBool,
}

impl UsageWriter {
    pub fn start(store: Store) -> UsageWriter {
        let pending = Arc::new(Pending::default());
        let task = tokio::spawn(write_sums(store, pending.clone()));
        UsageWriter { pending, task: Mutex::new(Some(task)) }
    }

    /// Adds one request's usage to its minute's sums. Never blocks on the database.
    pub fn record(&self, row: UsageRow) {
        let cell = (
            row.at.div_euclid(60) * 60,
            row.key_id.unwrap_or_default(),
            row.team.unwrap_or_default(),
            row.end_user.unwrap_or_default(),
            row.model,
        );
        let mut cells = self.pending.cells.lock().unwrap_or_else(PoisonError::into_inner);
        let sum = cells.entry(cell).or_default();
        sum.requests += 1;
        sum.input_tokens += row.input_tokens;
        sum.output_tokens += row.output_tokens;
        sum.cost_usd += row.cost_usd;
        if cells.len() >= MAX_CELLS {
            self.pending.wake.notify_one();
        }
    }

    /// Writes what is pending, then stops (on shutdown).
    pub async fn flush_and_stop(&self) {
        self.pending.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        self.pending.wake.notify_one();
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn write_sums(store: Store, pending: Arc<Pending>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FLUSH_EVERY) => {}
            _ = pending.wake.notified() => {}
        }
        let cells: Vec<(UsageCell, UsageSum)> =
            std::mem::take(&mut *pending.cells.lock().unwrap_or_else(PoisonError::into_inner)).into_iter().collect();
        if !cells.is_empty() {
            write_with_retries(&store, &pending, cells).await;
        }
        if pending.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
    }
}

/// A failed write is retried (the database may be restarting); while it fails the sums
/// go back into the map, so they are written later rather than lost.
async fn write_with_retries(store: &Store, pending: &Pending, cells: Vec<(UsageCell, UsageSum)>) {
    for attempt in 1..=3u32 {
        match store.add_usage(&cells).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(cells = cells.len(), attempt, "usage write failed: {error}");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
    tracing::error!(cells = cells.len(), "usage write keeps failing; keeping the sums to retry later");
    let mut current = pending.cells.lock().unwrap_or_else(PoisonError::into_inner);
    for (cell, sum) in cells {
        let kept = current.entry(cell).or_default();
        kept.requests += sum.requests;
        kept.input_tokens += sum.input_tokens;
        kept.output_tokens += sum.output_tokens;
        kept.cost_usd += sum.cost_usd;
    }
}
