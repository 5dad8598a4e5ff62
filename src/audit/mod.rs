//! The audit log: one record per chat, embeddings and admin action, tamper-evident and
//! never lost.
//!
//! - A request fills in its record as an [`AuditEntry`], already in the journal's compact
//!   binary form ([`encoding`]), and appends it to a local journal ([`journal`]) before
//!   the response it describes completes: a copy into a memory-mapped file, no system
//!   call and no database on the request path.
//! - One task ([`writer`]) moves records from the journal to the database in batches,
//!   chaining each to the one before with SHA-256 (a chain per instance). While the
//!   database is down, records wait in the journal; SIGTERM drains it before exit; after
//!   a crash (even `kill -9`) the next start resumes where the database left off.
//! - [`verify`] recomputes every chain and names the first broken link.

mod encoding;
mod entry;
mod journal;
mod record;
pub mod verify;
mod writer;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

pub use encoding::Field;
pub use entry::AuditEntry;
pub use journal::{Journal, JournalError};
pub use record::{AuditRecord, ContentCapture, FailedAttempt, GENESIS, chain_hash};

use crate::config::{AuditConfig, StorageConfig};

pub struct Auditor {
    enabled: bool,
    /// Content capture for callers whose key and team do not set it.
    pub content: ContentCapture,
    journal: Arc<Journal>,
    signals: Arc<writer::Signals>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The audit log's backlog, for `/metrics`.
pub struct AuditStats {
    /// Records journaled by this process.
    pub journaled: u64,
    /// Records written to the database by this process (earlier backlog included).
    pub stored: u64,
    /// Journal bytes waiting for the database: grows while it is unreachable.
    pub pending_bytes: u64,
    pub store_down: bool,
}

impl Auditor {
    /// Opens the journal under `<data_dir>/audit` and starts the writer. A disabled audit
    /// log still writes out what an earlier run left in the journal.
    pub fn start(storage: &StorageConfig, config: &AuditConfig) -> Result<Auditor, JournalError> {
        let dir = storage.data_dir.join("audit");
        let journal = Arc::new(Journal::open(&dir)?);
        let signals = Arc::new(writer::Signals::default());
        let thread = writer::spawn(storage.clone(), journal.clone(), signals.clone(), config.retention, config.writer)
            .map_err(|source| JournalError::new(&dir, source))?;
        Ok(Auditor {
            enabled: config.enabled,
            content: config.content,
            journal,
            signals,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A new record, or `None` when the audit log is off.
    pub fn begin(
        &self,
        kind: &'static str,
        endpoint: &'static str,
        request_id: &str,
        client_ip: Option<std::net::IpAddr>,
    ) -> Option<AuditEntry> {
        self.enabled.then(|| AuditEntry::new(kind, endpoint, request_id, client_ip))
    }

    /// Content capture for `principal`: its key's setting, else its team's, else the
    /// gateway's.
    pub fn capture_for(&self, principal: &crate::auth::Principal) -> ContentCapture {
        let key = principal.key();
        key.and_then(|key| {
            let team = key.team.as_ref().and_then(|team| team.policy.audit_content);
            key.record.policy.audit_content.or(team)
        })
        .unwrap_or(self.content)
    }

    pub fn stats(&self) -> AuditStats {
        let (generation, offset) = *self.signals.position.lock().unwrap_or_else(PoisonError::into_inner);
        AuditStats {
            journaled: self.journal.appended.load(Ordering::Relaxed),
            stored: self.signals.stored.load(Ordering::Relaxed),
            pending_bytes: self.journal.pending_bytes(generation, offset),
            store_down: self.signals.store_down.load(Ordering::Relaxed),
        }
    }

    /// Journals a record. A journal that cannot be written (a full disk) is an error in
    /// the log with the record itself, so it can still be recovered from there.
    pub fn record(&self, entry: AuditEntry) {
        if !self.enabled {
            return;
        }
        let entry = entry.finish();
        // The writer is not woken per record: it reads the journal every 200 ms, in
        // batches (a wake-up per request cost a fifth of the CPU in context switches).
        if let Err(error) = self.journal.append(&entry) {
            let line = encoding::decode(&entry).map(|record| serde_json::to_string(&record).unwrap_or_default());
            let line = line.unwrap_or_else(|decode_error| format!("undecodable ({decode_error})"));
            tracing::error!(record = %line, "audit record not journaled: {error}");
        }
    }

    /// Writes everything journaled to the database (waiting a few seconds for it if it
    /// is down; what is left stays in the journal for the next start), then stops.
    pub async fn flush_and_stop(&self) {
        self.signals.stopping.store(true, Ordering::SeqCst);
        self.signals.wake.notify_one();
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
