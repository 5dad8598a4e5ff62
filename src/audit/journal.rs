//! The local journal: every audit record is appended here before the response it
//! describes completes. The writer moves records from here to the database; while the
//! database is unreachable they simply stay here. A process that is killed loses nothing
//! that reached the journal: the next start resumes from it.
//!
//! Files are `journal-<generation>.bin` in `<data_dir>/audit/`, each [`SEGMENT`] bytes,
//! allocated up front and memory-mapped: an append is a copy into the page cache, with
//! no system call and no file-size change (a `write` that grew the file cost a fifth of
//! a request's CPU in journaling metadata). The OS owns the mapped pages, so a record
//! survives the process being killed (not a power cut: `fsync` is left to the OS).
//!
//! An entry is a 4-byte little-endian length, then the record in its journal form
//! ([`super::encoding`], as a request wrote it in its [`super::AuditEntry`]). The length
//! is written after the record, so an entry whose length is there is whole; the unused
//! tail of a segment is zeros, so a zero length marks the end. A full segment is closed
//! and the next generation starts; consumed ones are deleted.
//!
//! The first write to each page of a fresh segment faults it into the mapping: on the
//! request path, about a microsecond and a half for every ~24 records. The writer
//! therefore prefaults the pages ahead of the appends ([`Journal::prepare_ahead`]), off
//! the request path, as far ahead as recent appends suggest the next burst will need.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use memmap2::MmapRaw;

/// Size of a journal file.
const SEGMENT: u64 = 64 * 1024 * 1024;
/// Bytes of an entry's length.
const HEADER: usize = 4;
/// Prefaulting ahead of the appends covers twice what was appended since the writer last
/// ran (it runs every 200 ms, or, under saturation, only between bursts), within these
/// bounds: an idle gateway keeps a small window, hence a small resident set.
const AHEAD_MIN: u64 = 256 * 1024;
const AHEAD_MAX: u64 = 16 * 1024 * 1024;
/// Prefaulting works in whole blocks of this size (a multiple of any page size).
const PREFAULT_BLOCK: u64 = 64 * 1024;

pub struct Journal {
    dir: PathBuf,
    active: Mutex<Active>,
    /// Records appended by this process.
    pub appended: AtomicU64,
    /// This instance's chain id, kept in `<dir>/instance` across restarts.
    pub chain: String,
    /// How far the writer has prefaulted; only the writer uses it.
    prefaulted: Mutex<Prefaulted>,
    /// Held for the process's life: a second gateway on the same data directory would
    /// write over this one's records.
    _lock: File,
}

struct Active {
    generation: u64,
    /// Shared with the writer while it prefaults pages ahead of the appends.
    map: Arc<MmapRaw>,
    /// Bytes in use; everything before is whole entries.
    end: u64,
}

struct Prefaulted {
    generation: u64,
    /// Pages before this offset are mapped and writable.
    up_to: u64,
    /// Where appends had reached when the writer last looked, across segments.
    appends_seen: u64,
    /// False once the kernel refuses (before Linux 5.14, or not Linux).
    supported: bool,
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
        let prefaulted = Prefaulted {
            generation,
            up_to: active.end,
            appends_seen: active.position(),
            supported: cfg!(target_os = "linux"),
        };
        Ok(Journal {
            dir: dir.to_owned(),
            active: Mutex::new(active),
            appended: AtomicU64::new(0),
            chain,
            prefaulted: Mutex::new(prefaulted),
            _lock: lock,
        })
    }

    /// Appends a record in its journal form, before the caller goes on.
    pub fn append(&self, record: &[u8]) -> Result<(), JournalError> {
        let size = (HEADER + record.len()) as u64;
        if size > SEGMENT {
            let path = file_path(&self.dir, 0);
            return Err(io_error(&path)(std::io::Error::other("an audit record larger than a journal segment")));
        }
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if active.end + size > SEGMENT {
            let next = Active::open(&self.dir, active.generation + 1)?;
            *active = next;
        }
        let start = active.end as usize;
        let length = (record.len() as u32).to_le_bytes();
        // SAFETY: `start + size` is within the mapping (checked above against the segment
        // size, which is the mapping's length); the lock held makes this the only writer
        // of those bytes, and no reference to them exists (readers go through the file).
        unsafe {
            let entry = active.map.as_mut_ptr().add(start);
            std::ptr::copy_nonoverlapping(record.as_ptr(), entry.add(HEADER), record.len());
            // The length goes in last: a process killed mid-copy leaves no length, so no
            // entry, rather than a torn one.
            std::sync::atomic::compiler_fence(Ordering::Release);
            std::ptr::copy_nonoverlapping(length.as_ptr(), entry, HEADER);
        }
        active.end += size;
        drop(active);
        self.appended.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Reads into `batch` the records of generation `generation` from byte `offset`, about
    /// `limit` bytes of them (always at least one whole record, however large, if there
    /// is one). Only finished appends are read.
    pub fn read(&self, generation: u64, offset: u64, limit: usize, batch: &mut Batch) -> Result<(), JournalError> {
        batch.bytes.clear();
        batch.records.clear();
        batch.end = offset;
        let committed = {
            let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
            (active.generation == generation).then_some(active.end)
        };
        // A closed segment ends at its first zero length.
        let committed = committed.unwrap_or(SEGMENT);
        if committed.saturating_sub(offset) < HEADER as u64 {
            return Ok(());
        }
        let path = file_path(&self.dir, generation);
        let file = match open_cached(&mut batch.file, generation, &path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(io_error(&path)(error)),
        };
        let wanted = (committed - offset).min(limit.max(HEADER) as u64);
        read_at(file, offset, wanted as usize, &mut batch.bytes).map_err(io_error(&path))?;
        let mut at = 0;
        while let Some(length) = length_at(&batch.bytes, at) {
            let end = at + HEADER + length;
            if length == 0 || offset + end as u64 > committed {
                break;
            }
            if end > batch.bytes.len() {
                if !batch.records.is_empty() {
                    break;
                }
                // A record larger than `limit` (a long captured prompt): read it whole.
                read_at(file, offset, end, &mut batch.bytes).map_err(io_error(&path))?;
                if end > batch.bytes.len() {
                    break;
                }
            }
            batch.records.push(at + HEADER..end);
            at = end;
        }
        batch.end = offset + at as u64;
        Ok(())
    }

    /// Bytes journaled after `offset` of `generation`: records not yet in the database.
    pub fn pending_bytes(&self, generation: u64, offset: u64) -> u64 {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if generation >= active.generation {
            return active.end.saturating_sub(offset);
        }
        // Closed segments are full but for the last record that did not fit.
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

    /// Maps the active segment's pages ahead of the appends, so that the request path
    /// writes into pages already there. Called by the writer; costs no request any time
    /// beyond a brief look at where appends are.
    pub fn prepare_ahead(&self) {
        let (map, generation, end, position) = {
            let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
            (active.map.clone(), active.generation, active.end, active.position())
        };
        let mut prefaulted = self.prefaulted.lock().unwrap_or_else(PoisonError::into_inner);
        let appended_since = position.saturating_sub(prefaulted.appends_seen);
        prefaulted.appends_seen = position;
        if prefaulted.generation != generation {
            prefaulted.generation = generation;
            prefaulted.up_to = 0;
        }
        if !prefaulted.supported {
            return;
        }
        let window = (2 * appended_since).clamp(AHEAD_MIN, AHEAD_MAX);
        let from = prefaulted.up_to.max(end) / PREFAULT_BLOCK * PREFAULT_BLOCK;
        let to = (end + window).div_ceil(PREFAULT_BLOCK).saturating_mul(PREFAULT_BLOCK).min(SEGMENT);
        if to <= from {
            return;
        }
        match prefault(&map, from, to - from) {
            Ok(()) => prefaulted.up_to = to,
            Err(error) => {
                tracing::debug!("audit journal pages are not prefaulted: {error}");
                prefaulted.supported = false;
            }
        }
    }
}

/// Makes `length` bytes of `map` from `offset` mapped and writable, without changing them.
#[cfg(target_os = "linux")]
fn prefault(map: &MmapRaw, offset: u64, length: u64) -> std::io::Result<()> {
    map.advise_range(memmap2::Advice::PopulateWrite, offset as usize, length as usize)
}

#[cfg(not(target_os = "linux"))]
fn prefault(_: &MmapRaw, _: u64, _: u64) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Records read from the journal. The writer keeps one for its life, so its buffer and
/// open file are reused from batch to batch.
#[derive(Default)]
pub struct Batch {
    /// The file last read, and its generation.
    file: Option<(u64, File)>,
    bytes: Vec<u8>,
    /// Where each record is in `bytes`.
    records: Vec<std::ops::Range<usize>>,
    /// The offset just past the last record read.
    pub end: u64,
}

impl Batch {
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        self.records.iter().map(|range| &self.bytes[range.clone()])
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// The file of `generation`, opened unless `cached` already holds it.
fn open_cached<'a>(cached: &'a mut Option<(u64, File)>, generation: u64, path: &Path) -> std::io::Result<&'a File> {
    if cached.as_ref().is_none_or(|(open, _)| *open != generation) {
        *cached = None;
    }
    match cached {
        Some((_, file)) => Ok(file),
        None => Ok(&cached.insert((generation, File::open(path)?)).1),
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
        // The file is this process's own (the data directory's lock is held), it is never
        // truncated while mapped, and only this mapping writes to it.
        let map = MmapRaw::map_raw(&file).map_err(io_error(&path))?;
        if length == 0 {
            return Ok(Active { generation, map: Arc::new(map), end: 0 });
        }
        // SAFETY: as above; the mapping is not shared yet, so this is its only reference.
        let bytes = unsafe { std::slice::from_raw_parts_mut(map.as_mut_ptr(), map.len()) };
        let end = entries_end(bytes);
        // A copy cut short by a crash leaves bytes of a record with no length before them:
        // clear them, so the next append starts on zeros.
        if let Some(last) = last_nonzero(&bytes[end as usize..]) {
            bytes[end as usize..=end as usize + last].fill(0);
        }
        Ok(Active { generation, map: Arc::new(map), end })
    }

    /// Where appends are, counted across segments.
    fn position(&self) -> u64 {
        self.generation * SEGMENT + self.end
    }
}

/// Where the whole entries at the start of `map` end: at the first zero length, or one
/// that runs past the segment.
fn entries_end(map: &[u8]) -> u64 {
    let mut at = 0;
    while let Some(length) = length_at(map, at) {
        if length == 0 || at + HEADER + length > map.len() {
            break;
        }
        at += HEADER + length;
    }
    at as u64
}

/// The length of the entry at `at`, if `bytes` reach past its header.
fn length_at(bytes: &[u8], at: usize) -> Option<usize> {
    let header = bytes.get(at..at + HEADER)?;
    Some(u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize)
}

/// Up to `length` bytes of `file` from `offset` (fewer at its end), into `bytes`.
fn read_at(file: &File, offset: u64, length: usize, bytes: &mut Vec<u8>) -> std::io::Result<()> {
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    bytes.clear();
    bytes.reserve(length);
    file.take(length as u64).read_to_end(bytes)?;
    Ok(())
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
    dir.join(format!("journal-{generation}.bin"))
}

fn generations(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let mut found: Vec<u64> = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_prefix("journal-")?.strip_suffix(".bin")?.parse().ok()
        })
        .collect();
    found.sort_unstable();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditRecord, encoding};

    fn append(journal: &Journal, record: &AuditRecord) {
        let mut bytes = Vec::new();
        encoding::encode(record, &mut bytes);
        journal.append(&bytes).unwrap();
    }

    fn record(id: &str) -> AuditRecord {
        AuditRecord {
            id: id.into(),
            kind: "chat".into(),
            endpoint: "/v1/chat/completions".into(),
            ..Default::default()
        }
    }

    /// The ids of the records `read` gives from `offset`, and the offset after them.
    fn read_ids(journal: &Journal, generation: u64, offset: u64, limit: usize) -> (Vec<String>, u64) {
        let mut batch = Batch::default();
        journal.read(generation, offset, limit, &mut batch).unwrap();
        (batch.records().map(|bytes| encoding::decode(bytes).unwrap().id).collect(), batch.end)
    }

    #[test]
    fn appends_are_read_back_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        append(&journal, &record("a"));
        append(&journal, &record("b"));
        let (records, offset) = read_ids(&journal, 1, 0, 1 << 20);
        assert_eq!(records, ["a", "b"]);
        assert!(Journal::open(dir.path()).is_err(), "a second process on the same directory is refused");
        drop(journal);
        let journal = Journal::open(dir.path()).unwrap();
        append(&journal, &record("c"));
        let (records, end) = read_ids(&journal, 1, offset, 1 << 20);
        assert_eq!(records, ["c"]);
        assert_eq!(journal.pending_bytes(1, offset), end - offset);
        assert_eq!(journal.pending_bytes(1, end), 0);
    }

    #[test]
    fn a_batch_is_whole_records_and_holds_at_least_one_however_large() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let large = AuditRecord { response: Some("x".repeat(10_000)), ..record("large") };
        for id in ["a", "b"] {
            append(&journal, &record(id));
        }
        append(&journal, &large);
        append(&journal, &record("c"));
        let mut small = Vec::new();
        encoding::encode(&record("a"), &mut small);
        let limit = 2 * (HEADER + small.len()) + HEADER + 1;
        let (first, offset) = read_ids(&journal, 1, 0, limit);
        assert_eq!(first, ["a", "b"], "a limit cuts between records");
        let (second, offset) = read_ids(&journal, 1, offset, limit);
        assert_eq!(second, ["large"], "a record larger than the limit is read whole, alone");
        let (third, end) = read_ids(&journal, 1, offset, limit);
        assert_eq!(third, ["c"]);
        assert_eq!(read_ids(&journal, 1, end, limit), (vec![], end));
    }

    #[test]
    fn a_record_cut_short_by_a_crash_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        append(&journal, &record("a"));
        let (_, end) = read_ids(&journal, 1, 0, 1 << 20);
        drop(journal);
        // A crash mid-copy: bytes of a long record, and no length before them. Left in
        // place, they would read as entries once a shorter record is written over their
        // start: here, 1-byte entries.
        let path = file_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = end as usize + HEADER;
        for (index, byte) in bytes[at..at + 500].iter_mut().enumerate() {
            *byte = [1, 0, 0, 0, 7][index % 5];
        }
        std::fs::write(&path, &bytes).unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        append(&journal, &record("b"));
        drop(journal);
        let journal = Journal::open(dir.path()).unwrap();
        append(&journal, &record("c"));
        assert_eq!(read_ids(&journal, 1, 0, 1 << 20).0, ["a", "b", "c"]);
    }

    /// Which of the pages of `length` bytes from `offset` of the active segment are
    /// mapped into this process (the kernel's page map: bit 63 of each page's entry).
    #[cfg(target_os = "linux")]
    fn mapped_pages(journal: &Journal, offset: u64, length: u64) -> Vec<bool> {
        let page = 4096;
        let address = journal.active.lock().unwrap().map.as_ptr() as u64 + offset;
        let mut entries = Vec::new();
        let pagemap = File::open("/proc/self/pagemap").unwrap();
        read_at(&pagemap, address / page * 8, (length / page * 8) as usize, &mut entries).unwrap();
        entries.chunks(8).map(|entry| entry[7] & 0x80 != 0).collect()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_writer_prefaults_pages_ahead_of_appends_without_changing_them() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        append(&journal, &record("a"));
        let ahead = PREFAULT_BLOCK..AHEAD_MIN;
        assert!(mapped_pages(&journal, ahead.start, ahead.end - ahead.start).iter().all(|mapped| !mapped));
        journal.prepare_ahead();
        assert!(mapped_pages(&journal, ahead.start, ahead.end - ahead.start).iter().all(|mapped| *mapped));
        assert!(!mapped_pages(&journal, AHEAD_MAX, PREFAULT_BLOCK)[0], "an idle journal keeps a small window");
        // A burst between two runs of the writer widens the window to twice the burst.
        let burst = AuditRecord { response: Some("x".repeat(1 << 20)), ..record("burst") };
        append(&journal, &burst);
        journal.prepare_ahead();
        assert!(mapped_pages(&journal, 3 << 20, PREFAULT_BLOCK).iter().all(|mapped| *mapped));
        append(&journal, &record("b"));
        assert_eq!(read_ids(&journal, 1, 0, 4 << 20).0, ["a", "burst", "b"]);
    }
}
