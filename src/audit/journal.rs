//! The local journal: every audit record is appended here (one JSON line) before the
//! response it describes completes. The writer moves records from here to the database;
//! while the database is unreachable they simply stay here. A process that is killed
//! loses nothing that reached the journal: the next start resumes from it.
//!
//! Files are `journal-<generation>.jsonl` in `<data_dir>/audit/`, each [`SEGMENT`] bytes,
//! allocated up front and memory-mapped: an append is a copy into the page cache, with
//! no system call and no file-size change (a `write` that grew the file cost a fifth of
//! a request's CPU in journaling metadata). The OS owns the mapped pages, so a record
//! survives the process being killed (not a power cut: `fsync` is left to the OS). The
//! unused tail of a segment is zeros, and JSON lines never contain a zero byte, so the
//! first zero marks the end. A full segment is closed and the next generation starts;
//! consumed ones are deleted.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use memmap2::MmapMut;

use super::AuditRecord;

/// Size of a journal file.
const SEGMENT: u64 = 64 * 1024 * 1024;

pub struct Journal {
    dir: PathBuf,
    active: Mutex<Active>,
    /// Records appended by this process.
    pub appended: AtomicU64,
    /// This instance's chain id, kept in `<dir>/instance` across restarts.
    pub chain: String,
    /// Held for the process's life: a second gateway on the same data directory would
    /// write over this one's records.
    _lock: File,
}

struct Active {
    generation: u64,
    map: MmapMut,
    /// Bytes in use; everything before is complete lines.
    end: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("audit journal {path}: {source}")]
pub struct JournalError {
    path: String,
    source: std::io::Error,
}

impl JournalError {
    pub fn new(path: &Path, source: std::io::Error) -> JournalError {
        JournalError { path: path.display().to_string(), source }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError { path: path.display().to_string(), source }
}

impl Journal {
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(io_error(&lock_path))?;
        lock.try_lock().map_err(|_| {
            io_error(&lock_path)(std::io::Error::other(
                "another switchyard process uses this data directory; give each instance its own",
            ))
        })?;
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
        let active = Active::open(dir, generation)?;
        Ok(Journal { dir: dir.to_owned(), active: Mutex::new(active), appended: AtomicU64::new(0), chain, _lock: lock })
    }

    /// Appends a record as one line, before the caller goes on.
    pub fn append(&self, record: &AuditRecord) -> Result<(), JournalError> {
        thread_local! {
            /// The line being written, kept per thread so its allocation is reused.
            static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        LINE.with_borrow_mut(|line| {
            line.clear();
            // Serializing a record (strings, numbers, lists of strings) cannot fail.
            let _ = serde_json::to_writer(&mut *line, record);
            line.push(b'\n');
            self.append_line(line)
        })
    }

    fn append_line(&self, line: &[u8]) -> Result<(), JournalError> {
        if line.len() as u64 > SEGMENT {
            let path = file_path(&self.dir, 0);
            return Err(io_error(&path)(std::io::Error::other("an audit record larger than a journal segment")));
        }
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if active.end + line.len() as u64 > SEGMENT {
            let next = Active::open(&self.dir, active.generation + 1)?;
            *active = next;
        }
        let start = active.end as usize;
        active.map[start..start + line.len()].copy_from_slice(line);
        active.end += line.len() as u64;
        drop(active);
        self.appended.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Complete lines of generation `generation` from byte `offset`, at most `limit` bytes;
    /// returns them with the offset just past the last one. Only what appends have
    /// finished is read: a line still being copied is left for the next call.
    pub fn read(&self, generation: u64, offset: u64, limit: usize) -> Result<(Vec<String>, u64), JournalError> {
        let committed = {
            let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
            (active.generation == generation).then_some(active.end)
        };
        let limit = committed.map_or(limit as u64, |end| end.saturating_sub(offset).min(limit as u64));
        if limit == 0 {
            return Ok((Vec::new(), offset));
        }
        let path = file_path(&self.dir, generation);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
            Err(error) => return Err(io_error(&path)(error)),
        };
        file.seek(SeekFrom::Start(offset)).map_err(io_error(&path))?;
        let mut bytes = Vec::new();
        file.take(limit).read_to_end(&mut bytes).map_err(io_error(&path))?;
        if let Some(zero) = memchr::memchr(0, &bytes) {
            bytes.truncate(zero);
        }
        let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else { return Ok((Vec::new(), offset)) };
        bytes.truncate(end);
        // Records are written as UTF-8; a torn one may not be, and is then kept lossy (it
        // is skipped as unreadable).
        let text =
            String::from_utf8(bytes).unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned());
        let lines = text.split('\n').filter(|l| !l.is_empty()).map(str::to_owned).collect();
        Ok((lines, offset + end as u64 + 1))
    }

    /// Bytes journaled after `offset` of `generation`: records not yet in the database.
    pub fn pending_bytes(&self, generation: u64, offset: u64) -> u64 {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if generation >= active.generation {
            return active.end.saturating_sub(offset);
        }
        // Closed segments are full but for the last line that did not fit.
        (SEGMENT - offset) + (active.generation - generation - 1) * SEGMENT + active.end
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

impl Active {
    /// Maps generation `generation`, creating and allocating it if needed, and finds
    /// where its records end.
    fn open(dir: &Path, generation: u64) -> Result<Active, JournalError> {
        let path = file_path(dir, generation);
        let file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path);
        let file = file.map_err(io_error(&path))?;
        let length = file.metadata().map_err(io_error(&path))?.len();
        if length < SEGMENT {
            allocate(&file, SEGMENT).map_err(io_error(&path))?;
        }
        // SAFETY: the file is this process's own (the data directory's lock is held), it
        // is never truncated while mapped, and only this mapping writes to it.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io_error(&path))?;
        if length == 0 {
            return Ok(Active { generation, map, end: 0 });
        }
        let mut end = memchr::memchr(0, &map).unwrap_or(map.len()) as u64;
        // A copy cut short by a crash can leave a torn line, and bytes of it past the
        // first zero: clear those, and end the torn line so the next record starts on a
        // line of its own (the torn one is skipped when read).
        let last = last_nonzero(&map[end as usize..]).map(|at| end as usize + at);
        if let Some(last) = last {
            map[end as usize..=last].fill(0);
        }
        if end > 0 && map[end as usize - 1] != b'\n' {
            map[end as usize] = b'\n';
            end += 1;
        }
        Ok(Active { generation, map, end })
    }
}

/// The position of the last byte that is not zero, a word at a time.
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    let mut chunks = bytes.rchunks(8);
    let mut end = bytes.len();
    for chunk in chunks.by_ref() {
        let start = end - chunk.len();
        let word = chunk.iter().fold(0u64, |word, byte| (word << 8) | u64::from(*byte));
        if word != 0 {
            return chunk.iter().rposition(|b| *b != 0).map(|at| start + at);
        }
        end = start;
    }
    None
}

/// Reserves the file's blocks now, so a full disk is an error at rotation rather than a
/// fault when a mapped page is first written.
#[cfg(target_os = "linux")]
fn allocate(file: &File, size: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a plain system call on a file descriptor this function borrows.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) } {
        0 => Ok(()),
        code => Err(std::io::Error::from_raw_os_error(code)),
    }
}

#[cfg(not(target_os = "linux"))]
fn allocate(file: &File, size: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = file;
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(length))?;
    let zeros = vec![0u8; 1024 * 1024];
    let mut left = size.saturating_sub(length);
    while left > 0 {
        let chunk = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..chunk])?;
        left -= chunk as u64;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> AuditRecord {
        AuditRecord {
            id: id.into(),
            kind: "chat".into(),
            endpoint: "/v1/chat/completions".into(),
            ..Default::default()
        }
    }

    #[test]
    fn appends_are_read_back_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.append(&record("a")).unwrap();
        journal.append(&record("b")).unwrap();
        let (lines, offset) = journal.read(1, 0, 1 << 20).unwrap();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].contains("\"id\":\"b\""));
        assert!(Journal::open(dir.path()).is_err(), "a second process on the same directory is refused");
        drop(journal);
        let journal = Journal::open(dir.path()).unwrap();
        journal.append(&record("c")).unwrap();
        let (lines, _) = journal.read(1, offset, 1 << 20).unwrap();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("\"id\":\"c\""));
        assert_eq!(journal.pending_bytes(1, offset), lines[0].len() as u64 + 1);
    }

    #[test]
    fn a_torn_line_is_cut_off_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.append(&record("a")).unwrap();
        let (_, end) = journal.read(1, 0, 1 << 20).unwrap();
        drop(journal);
        // A crash mid-copy: the head of a line, a gap, and some of its tail.
        let path = file_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[end as usize..end as usize + 5].copy_from_slice(b"{\"id\"");
        bytes[end as usize + 40..end as usize + 45].copy_from_slice(b"tail}");
        std::fs::write(&path, &bytes).unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.append(&record("b")).unwrap();
        let (lines, _) = journal.read(1, 0, 1 << 20).unwrap();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[1], "{\"id\"");
        assert!(lines[2].contains("\"id\":\"b\"") && !lines[2].contains("tail"));
    }
}
