//! The audit log: one record per chat, embeddings and admin action, tamper-evident and
//! never lost.
//!
//! - A record is appended to a local journal ([`journal`]) before the response it
//!   describes completes: one `write`, no database on the request path.
//! - One task ([`writer`]) moves records from the journal to the database in batches,
//!   chaining each to the one before with SHA-256 (a chain per instance). While the
//!   database is down, records wait in the journal; SIGTERM drains it before exit; after
//!   a crash (even `kill -9`) the next start resumes where the database left off.
//! - [`verify`] recomputes every chain and names the first broken link.

mod journal;
mod record;
pub mod verify;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

pub use journal::{Journal, JournalError};
pub use record::{AuditRecord, GENESIS, chain_hash};

use crate::store::Store;

impl AuditRecord {
    /// A record for a request that has just arrived; the pipeline fills in the rest.
    pub fn begin(kind: &str, endpoint: &str, request_id: &str, client_ip: Option<std::net::IpAddr>) -> AuditRecord {
        AuditRecord {
            id: crate::protocol::random_id("aud_"),
            at_ms: jiff::Timestamp::now().as_millisecond(),
            kind: kind.to_owned(),
            request_id: Some(request_id.to_owned()).filter(|id| !id.is_empty()),
            client_ip: client_ip.map(|ip| ip.to_string()),
            endpoint: endpoint.to_owned(),
            ..AuditRecord::default()
        }
    }

    /// Who asked.
    pub fn set_principal(&mut self, principal: &crate::auth::Principal) {
        self.admin = principal.is_admin();
        if let Some(key) = principal.key() {
            self.key_id = Some(key.record.id.clone());
            self.team = key.record.team.clone();
        }
    }
}

pub struct Auditor {
    journal: Arc<Journal>,
    signals: Arc<writer::Signals>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Auditor {
    /// Opens the journal under `dir` and starts the writer. `retention`: records older
    /// than this are deleted from the database (`None`: kept forever).
    pub fn start(store: Store, dir: &Path, retention: Option<Duration>) -> Result<Auditor, JournalError> {
        let journal = Arc::new(Journal::open(dir)?);
        let signals = Arc::new(writer::Signals::default());
        let task = tokio::spawn(writer::run(store, journal.clone(), signals.clone(), retention));
        Ok(Auditor { journal, signals, task: Mutex::new(Some(task)) })
    }

    /// Journals a record. A journal that cannot be written (a full disk) is an error in
    /// the log with the record itself, so it can still be recovered from there.
    pub fn record(&self, record: &AuditRecord) {
        // The writer is not woken per record: it reads the journal every 200 ms, in
        // batches (a wake-up per request cost a fifth of the CPU in context switches).
        match self.journal.append(record) {
            Ok(()) => {}
            Err(error) => {
                let line = serde_json::to_string(record).unwrap_or_default();
                tracing::error!(record = %line, "audit record not journaled: {error}");
            }
        }
    }

    /// Writes everything journaled to the database (waiting a few seconds for it if it
    /// is down; what is left stays in the journal for the next start), then stops.
    pub async fn flush_and_stop(&self) {
        self.signals.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        self.signals.wake.notify_one();
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
