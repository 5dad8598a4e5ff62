//! Policy changes while the gateway serves: files edited on disk are picked up by a
//! watcher, `PUT /admin/policies/{name}` writes and applies one. Either way the new set
//! is compiled in full first and swapped in whole; an invalid change is refused with
//! `file:line:col: message` and the old policy keeps serving. Accepted changes are kept
//! in a history (`.history.jsonl` beside the policies).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use super::Router;
use super::policy::{self, Policy};
use crate::audit::{Auditor, Field};
use crate::config::{self, DataFile, Problem};
use crate::providers::Registry;

/// The history file's name inside the policies directory.
const HISTORY_FILE: &str = ".history.jsonl";
/// Changes kept in memory for `GET /admin/policies`.
const HISTORY_IN_MEMORY: usize = 100;

/// One accepted policy change.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub version: u64,
    pub at: String,
    /// Who made it: `master key` for the admin API, `file edit` for the watcher.
    pub by: String,
    /// The file written through the admin API.
    pub file: Option<String>,
    pub digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyChangeError {
    #[error("the policy is invalid; the active policy keeps serving")]
    Invalid(Vec<Problem>),
    #[error("policy names are lowercase letters, digits, `-` or `_` (the file becomes policies/<name>.toml)")]
    BadName,
    #[error("this gateway runs on its built-in policy; start it with a config whose `paths.policies` is a directory")]
    NoDirectory,
    #[error("cannot write the policy file: {0}")]
    Io(#[from] std::io::Error),
}

/// The policies directory and the record of changes to it.
pub struct PolicyStore {
    dir: Option<PathBuf>,
    /// Every accepted change is an audit record too.
    audit: Arc<Auditor>,
    history: Mutex<Vec<Change>>,
    /// One change at a time: a PUT and the watcher must not interleave.
    applying: tokio::sync::Mutex<()>,
    /// The digest of the last invalid set seen on disk, so it is reported once.
    last_rejected: Mutex<Option<String>>,
}

impl PolicyStore {
    pub fn new(dir: Option<PathBuf>, audit: Arc<Auditor>) -> Self {
        PolicyStore {
            dir,
            audit,
            history: Mutex::new(Vec::new()),
            applying: tokio::sync::Mutex::new(()),
            last_rejected: Mutex::new(None),
        }
    }

    pub fn history(&self) -> Vec<Change> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reads the directory and applies it if it changed. `Ok(None)`: nothing changed.
    pub async fn reload_from_disk(&self, router: &Router, registry: &Registry) -> Result<Option<u64>, Vec<Problem>> {
        let Some(dir) = &self.dir else { return Ok(None) };
        let _applying = self.applying.lock().await;
        let mut problems = Vec::new();
        let files = config::read_dir_toml(dir, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        if policy::digest(&files) == router.policy().digest {
            return Ok(None);
        }
        let compiled = policy::compile(&files, registry, &router.health)?;
        Ok(Some(self.apply(router, compiled, "file edit", None)))
    }

    /// Validates `text` as `policies/<name>.toml` together with the other files, writes it
    /// atomically and applies it.
    pub async fn put(
        &self,
        router: &Router,
        registry: &Registry,
        name: &str,
        text: String,
        by: &str,
    ) -> Result<u64, PolicyChangeError> {
        let dir = self.dir.as_ref().ok_or(PolicyChangeError::NoDirectory)?;
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(PolicyChangeError::BadName);
        }
        let _applying = self.applying.lock().await;
        let path = dir.join(format!("{name}.toml"));
        let mut problems = Vec::new();
        let mut files = config::read_dir_toml(dir, &mut problems);
        if !problems.is_empty() {
            return Err(PolicyChangeError::Invalid(problems));
        }
        let display = path.display().to_string();
        files.retain(|file| file.path != display);
        files.push(DataFile { path: display.clone(), text });
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let compiled = policy::compile(&files, registry, &router.health).map_err(PolicyChangeError::Invalid)?;
        let text = &files.iter().find(|file| file.path == display).map(|file| file.text.as_str()).unwrap_or_default();
        write_atomically(&path, text)?;
        Ok(self.apply(router, compiled, by, Some(display)))
    }

    fn apply(&self, router: &Router, mut compiled: Policy, by: &str, file: Option<String>) -> u64 {
        let version = router.policy().version + 1;
        compiled.version = version;
        let change = Change {
            version,
            at: jiff::Timestamp::now().to_string(),
            by: by.to_owned(),
            file,
            digest: compiled.digest.clone(),
        };
        router.swap(compiled);
        tracing::info!(version, by = %change.by, digest = %change.digest, "policy change applied");
        if let Some(mut record) = self.audit.begin("admin", "policies", "", None) {
            record.set(Field::Admin(change.by == "master key"));
            record.set(Field::Action(if change.by == "file edit" { "policy.reload" } else { "policy.put" }));
            record.set(Field::Subject(&format!("version {version}, digest {}", change.digest)));
            record.set(Field::Status(200));
            self.audit.record(record);
        }
        if let Some(dir) = &self.dir
            && let Err(error) = append_history(&dir.join(HISTORY_FILE), &change)
        {
            tracing::warn!("policy history not written to {}: {error}", dir.display());
        }
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        if history.len() == HISTORY_IN_MEMORY {
            history.remove(0);
        }
        history.push(change);
        *self.last_rejected.lock().unwrap_or_else(PoisonError::into_inner) = None;
        version
    }

    /// What the policy directory holds now: its files' digest and any problems reading it.
    fn snapshot(dir: &Path) -> (String, Vec<String>) {
        let mut problems = Vec::new();
        let files = config::read_dir_toml(dir, &mut problems);
        (policy::digest(&files), problems.iter().map(ToString::to_string).collect())
    }

    /// Polls the directory every `interval` until `stop` fires. Problems are logged once
    /// per distinct broken state, with their locations.
    pub async fn watch(
        self: Arc<Self>,
        router: Arc<Router>,
        registry: Arc<Registry>,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let Some(dir) = self.dir.clone() else { return };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous_poll = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            // A file being rewritten in place (truncated, then filled) can be read half
            // way, and an empty policy file is valid: only what reads the same on two
            // polls in a row is applied or reported.
            let seen = Self::snapshot(&dir);
            if previous_poll.as_ref() != Some(&seen) {
                previous_poll = Some(seen);
                continue;
            }
            // Unchanged and readable: nothing to apply, no need to read it again.
            if seen.1.is_empty() && seen.0 == router.policy().digest {
                continue;
            }
            if let Err(problems) = self.reload_from_disk(&router, &registry).await {
                let summary: String = problems.iter().map(|p| format!("\n  {p}")).collect();
                let mut last = self.last_rejected.lock().unwrap_or_else(PoisonError::into_inner);
                if last.as_deref() != Some(summary.as_str()) {
                    tracing::error!("policy change rejected; the previous policy keeps serving:{summary}");
                    *last = Some(summary);
                }
            }
        }
    }
}

/// Write to a temporary file in the same directory, then rename: readers (and the
/// watcher) see the old file or the new one, never half of it.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temporary = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("policy")));
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)
}

fn append_history(path: &Path, change: &Change) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(change).map_err(std::io::Error::other)?;
    line.push(b'\n');
    std::fs::OpenOptions::new().create(true).append(true).open(path)?.write_all(&line)
}
