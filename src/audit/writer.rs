//! Moves journaled records into the database, chained, in batches.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::journal::Batch;
use super::{GENESIS, Journal, chain_hash, encoding};
use crate::config::{StorageConfig, WriterPriority};
use crate::store::{AuditColumns, ChainHead, Store, StoredAudit};

/// Most bytes of journal turned into one database transaction (about 1,000 records). Kept
/// small because a transaction holds SQLite's write lock, and a writer in the idle
/// scheduling class may get little CPU to finish it while requests keep the CPU busy:
/// key and usage writes wait for that lock.
const BATCH_BYTES: usize = 256 * 1024;
/// How long shutdown waits for an unreachable database before leaving records in the
/// journal for the next start.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Signals {
    pub wake: Notify,
    pub stopping: AtomicBool,
    /// Records written to the database by this process.
    pub stored: AtomicU64,
    /// Where the writer is in the journal: generation and byte offset.
    pub position: Mutex<(u64, u64)>,
    /// Whether the last write to the database failed.
    pub store_down: AtomicBool,
}

/// Starts the writer on a thread of its own, with its own connection to the database.
/// At [`WriterPriority::Low`] the thread (and the database worker threads it starts,
/// which inherit it) runs only on CPU time nothing else wants: when requests keep every
/// core busy, they go first and records wait in the journal until there is room.
pub fn spawn(
    storage: StorageConfig,
    journal: Arc<Journal>,
    signals: Arc<Signals>,
    retention: Option<Duration>,
    priority: WriterPriority,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("audit-writer".into()).spawn(move || {
        if priority == WriterPriority::Low {
            lower_priority();
        }
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!("the audit writer cannot start ({error}); records stay in the journal");
                return;
            }
        };
        runtime.block_on(async move {
            let Some(store) = connect(&storage, &signals).await else { return };
            run(store, journal, signals, retention).await;
        });
    })
}

/// The writer's own database connection; retried while the database is unreachable,
/// and given up on, like a write, [`SHUTDOWN_PATIENCE`] after shutdown begins.
async fn connect(storage: &StorageConfig, signals: &Signals) -> Option<Store> {
    let mut failures = 0u32;
    let mut stop_deadline: Option<Instant> = None;
    loop {
        match Store::open(&storage.database_url, &storage.data_dir).await {
            Ok(store) => return Some(store),
            Err(error) => {
                failures += 1;
                signals.store_down.store(true, Ordering::Relaxed);
                report_outage(failures, &error.to_string());
                if signals.stopping.load(Ordering::SeqCst)
                    && Instant::now() >= *stop_deadline.get_or_insert_with(|| Instant::now() + SHUTDOWN_PATIENCE)
                {
                    tracing::error!("stopping with audit records still in the journal; the next start writes them");
                    return None;
                }
                tokio::time::sleep(pause_after(failures)).await;
            }
        }
    }
}

/// Logged at the 1st, 2nd, 4th, 8th… failure in a row, not at every retry.
fn report_outage(failures: u32, error: &str) {
    if failures.is_power_of_two() {
        tracing::error!(failures, "audit records wait in the journal: {error}");
    }
}

/// The wait before the next attempt: 200 ms, growing by 200 ms per failure up to 2 s.
fn pause_after(failures: u32) -> Duration {
    Duration::from_millis(200 * u64::from(failures.clamp(1, 10)))
}

/// Moves the calling thread into Linux's idle scheduling class (threads it starts
/// inherit it). At nice 19 the writer still took ~3 % of a saturated core from requests;
/// an idle-class thread yields to any normal one. Where the class is refused (some
/// sandboxes), the thread's nice value goes to 19 instead. Never undone: going back would
/// need privileges.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain system calls about the calling thread, with a valid parameter.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
            return;
        }
        let idle_error = std::io::Error::last_os_error();
        // SAFETY: as above.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
            tracing::warn!(
                "the audit writer runs at normal priority: {idle_error}; {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

async fn run(store: Store, journal: Arc<Journal>, signals: Arc<Signals>, retention: Option<Duration>) {
    let mut failures = 0u32;
    let mut stop_deadline: Option<Instant> = None;
    let mut last_retention = Instant::now() - Duration::from_secs(3600);
    let mut head: Option<ChainHead> = None;
    let mut batch = Batch::default();
    loop {
        let stopping = signals.stopping.load(Ordering::SeqCst);
        if stopping && stop_deadline.is_none() {
            stop_deadline = Some(Instant::now() + SHUTDOWN_PATIENCE);
        }
        journal.prepare_ahead();
        let result = step(&store, &journal, &mut head, &mut batch).await;
        signals.store_down.store(result.is_err(), Ordering::Relaxed);
        if let Some(head) = &head {
            let position = (head.journal_generation as u64, head.journal_offset as u64);
            *signals.position.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = position;
        }
        match result {
            Ok(Progress::Wrote(records)) => {
                signals.stored.fetch_add(records, Ordering::Relaxed);
                failures = 0;
                continue;
            }
            Ok(Progress::CaughtUp) => {
                failures = 0;
                if stopping {
                    return;
                }
            }
            Err(error) => {
                failures += 1;
                report_outage(failures, &error);
                if stop_deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    tracing::error!("stopping with audit records still in the journal; the next start writes them");
                    return;
                }
            }
        }
        if let Some(retention) = retention
            && last_retention.elapsed() >= Duration::from_secs(3600)
        {
            last_retention = Instant::now();
            let before = jiff::Timestamp::now().as_millisecond() - retention.as_millis() as i64;
            match store.delete_audit_before(before).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "audit records past retention deleted"),
                Err(error) => tracing::warn!("audit retention failed: {error}"),
            }
        }
        tokio::select! {
            _ = signals.wake.notified(), if failures == 0 => {}
            _ = tokio::time::sleep(pause_after(failures)) => {}
        }
    }
}

/// Journal records as database rows: stored as JSON, each chained to the one before
/// from `head` on.
fn chain<'a>(
    records: impl Iterator<Item = &'a [u8]>,
    head: ChainHead,
) -> (Vec<(StoredAudit, AuditColumns)>, ChainHead) {
    let mut next = head;
    let mut rows = Vec::new();
    for bytes in records {
        let mut record = match encoding::decode(bytes) {
            Ok(record) => record,
            Err(error) => {
                // Only a power cut can leave a record like this (a killed process leaves
                // none half-written); its response may not have been sent.
                tracing::warn!("skipping an unreadable journal record: {error}");
                continue;
            }
        };
        next.seq += 1;
        record.id = record_id(&next.chain, next.seq);
        // Serializing a record (strings, numbers, lists of strings, JSON) cannot fail.
        let json = serde_json::to_string(&record).unwrap_or_default();
        let hash = chain_hash(&next.hash, &json);
        let stored = StoredAudit {
            chain: next.chain.clone(),
            seq: next.seq,
            at_ms: record.at_ms,
            record: json,
            prev_hash: std::mem::replace(&mut next.hash, hash.clone()),
            hash,
        };
        let columns = AuditColumns {
            id: record.id,
            kind: record.kind.into_owned(),
            key_id: record.key_id,
            team: record.team,
            end_user: record.end_user,
            model: record.requested_model,
            target: record.target,
            status: i64::from(record.status),
        };
        rows.push((stored, columns));
    }
    (rows, next)
}

/// A record's id: where it is, its chain and place in it (`aud_<chain>_<seq>`), unique
/// across instances as chains are. Given here rather than on the request path, where a
/// random id cost a fifth of the audit log's instructions.
fn record_id(chain: &str, seq: i64) -> String {
    format!("aud_{}_{seq}", chain.strip_prefix("chain_").unwrap_or(chain))
}

enum Progress {
    /// This many records (none when moving to the next journal file).
    Wrote(u64),
    CaughtUp,
}

/// Writes the next batch from the journal, or moves to the next journal file.
async fn step(
    store: &Store,
    journal: &Journal,
    head: &mut Option<ChainHead>,
    batch: &mut Batch,
) -> Result<Progress, String> {
    let current = match head {
        Some(head) => head.clone(),
        None => {
            let found = store.chain_head(&journal.chain).await.map_err(|e| e.to_string())?;
            let start = found.unwrap_or_else(|| ChainHead {
                chain: journal.chain.clone(),
                seq: 0,
                hash: GENESIS.to_owned(),
                journal_generation: journal.oldest_generation() as i64,
                journal_offset: 0,
            });
            head.insert(start).clone()
        }
    };
    let generation = current.journal_generation as u64;
    journal.read(generation, current.journal_offset as u64, BATCH_BYTES, batch).map_err(|e| e.to_string())?;
    if batch.is_empty() {
        if !journal.has_after(generation) {
            return Ok(Progress::CaughtUp);
        }
        // This generation is closed and fully written out: go on to the next.
        let next = ChainHead { journal_generation: current.journal_generation + 1, journal_offset: 0, ..current };
        store.append_audit(&[], &next).await.map_err(|e| e.to_string())?;
        journal.remove(generation);
        *head = Some(next);
        return Ok(Progress::Wrote(0));
    }
    let (rows, mut next) = chain(batch.records(), current);
    next.journal_offset = batch.end as i64;
    store.append_audit(&rows, &next).await.map_err(|e| e.to_string())?;
    *head = Some(next);
    Ok(Progress::Wrote(rows.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEntry;

    #[test]
    fn records_are_chained_in_order_and_named_by_their_place() {
        let entries: Vec<Vec<u8>> =
            (0..3).map(|_| AuditEntry::new("chat", "/v1/chat/completions", "req_1", None).finish()).collect();
        let head = ChainHead {
            chain: "chain_abc".into(),
            seq: 41,
            hash: GENESIS.into(),
            journal_generation: 1,
            journal_offset: 0,
        };
        let (rows, next) = chain(entries.iter().map(Vec::as_slice), head);
        let ids: Vec<&str> = rows.iter().map(|(_, columns)| columns.id.as_str()).collect();
        assert_eq!(ids, ["aud_abc_42", "aud_abc_43", "aud_abc_44"]);
        assert_eq!(rows[0].0.prev_hash, GENESIS);
        for pair in rows.windows(2) {
            assert_eq!(pair[1].0.prev_hash, pair[0].0.hash);
        }
        for (stored, columns) in &rows {
            assert_eq!(stored.hash, chain_hash(&stored.prev_hash, &stored.record));
            assert!(stored.record.contains(&format!("\"id\":\"{}\"", columns.id)), "the id is in the hashed JSON");
        }
        assert_eq!((next.seq, next.hash.as_str()), (44, rows[2].0.hash.as_str()));
    }
}
