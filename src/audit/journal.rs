//! The local journal: every audit record is appended here (one JSON line, one write)
//! before the response it describes completes. The writer moves records from here to
//! the database; while the database is unreachable they simply stay here. A process that
//! is killed loses nothing that reached the journal: the next start resumes from it.
//!
//! Files are `journal-<generation>.jsonl` in `<data_dir>/audit/`; appends go to the newest
//! and a new generation starts past [`ROTATE_AT`] bytes, so consumed files can be deleted.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::AuditRecord;

/// A generation is closed for appends past this size.
const ROTATE_AT: u64 = 64 * 1024 * 1024;

pub struct Journal {
    dir: PathBuf,
    active: Mutex<Active>,
    /// Records appended by this process.
    pub appended: AtomicU64,
    /// This instance's chain id, kept in `<dir>/instance` across restarts.
    pub chain: String,
}

struct Active {
    generation: u64,
    file: File,
    size: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("audit journal {path}: {source}")]
pub struct JournalError {
    path: String,
    source: std::io::Error,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError { path: path.display().to_string(), source }
}

impl Journal {
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let instance_file = dir.join("instance");
        let chain = match std::fs::read_to_string(&instance_file) {
            Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
            _ => {
                let id = crate::protocol::random_id("chain_");
                std::fs::write(&instance_file, &id).map_err(io_error(&instance_file))?;
                id
            }
        };
        let generation = generations(dir)?.last().copied().unwrap_or(1);
        let path = file_path(dir, generation);
        let mut file = OpenOptions::new().create(true).append(true).read(true).open(&path).map_err(io_error(&path))?;
        let size = file.metadata().map_err(io_error(&path))?.len();
        // A write cut short by a crash leaves a torn last line: end it, so the next
        // record starts on a line of its own (the torn one is skipped when read).
        let mut size = size;
        if size > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(size - 1)).map_err(io_error(&path))?;
            file.read_exact(&mut last).map_err(io_error(&path))?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(io_error(&path))?;
                size += 1;
            }
        }
        Ok(Journal {
            dir: dir.to_owned(),
            active: Mutex::new(Active { generation, file, size }),
            appended: AtomicU64::new(0),
            chain,
        })
    }

    /// Appends a record: one `write` of one line, so it reaches the OS before the caller
    /// goes on (it survives the process being killed; `fsync` is left to the OS).
    pub fn append(&self, record: &AuditRecord) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if active.size >= ROTATE_AT {
            let generation = active.generation + 1;
            let path = file_path(&self.dir, generation);
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_error(&path))?;
            *active = Active { generation, file, size: 0 };
        }
        let path = file_path(&self.dir, active.generation);
        active.file.write_all(&line).map_err(io_error(&path))?;
        active.size += line.len() as u64;
        drop(active);
        self.appended.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes journaled after `offset` of `generation`: records not yet in the database.
    pub fn pending_bytes(&self, generation: u64, offset: u64) -> u64 {
        let Ok(found) = generations(&self.dir) else { return 0 };
        let total: u64 = found
            .into_iter()
            .filter(|g| *g >= generation)
            .filter_map(|g| std::fs::metadata(file_path(&self.dir, g)).ok().map(|m| m.len()))
            .sum();
        total.saturating_sub(offset)
    }

    /// Complete lines of generation `generation` from byte `offset`, at most `limit` bytes;
    /// returns them with the offset just past the last one.
    pub fn read(&self, generation: u64, offset: u64, limit: usize) -> Result<(Vec<String>, u64), JournalError> {
        let path = file_path(&self.dir, generation);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
            Err(error) => return Err(io_error(&path)(error)),
        };
        file.seek(SeekFrom::Start(offset)).map_err(io_error(&path))?;
        let mut bytes = Vec::new();
        file.take(limit as u64).read_to_end(&mut bytes).map_err(io_error(&path))?;
        let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else { return Ok((Vec::new(), offset)) };
        let lines =
            String::from_utf8_lossy(&bytes[..end]).split('\n').filter(|l| !l.is_empty()).map(str::to_owned).collect();
        Ok((lines, offset + end as u64 + 1))
    }

    /// The oldest generation still on disk (where a chain with no head starts reading).
    pub fn oldest_generation(&self) -> u64 {
        generations(&self.dir).ok().and_then(|found| found.first().copied()).unwrap_or(1)
    }

    /// Whether a later generation exists (the one being read is closed for appends).
    pub fn has_after(&self, generation: u64) -> bool {
        self.active.lock().unwrap_or_else(PoisonError::into_inner).generation > generation
    }

    /// Deletes a fully written-out generation.
    pub fn remove(&self, generation: u64) {
        let _ = std::fs::remove_file(file_path(&self.dir, generation));
    }
}

fn file_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal-{generation}.jsonl"))
}

fn generations(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let mut found: Vec<u64> = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_prefix("journal-")?.strip_suffix(".jsonl")?.parse().ok()
        })
        .collect();
    found.sort_unstable();
    Ok(found)
}
