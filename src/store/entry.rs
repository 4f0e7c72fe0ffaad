//! One stored path: an append-only list of `Bytes` chunks with a state, and the readers that follow it.
//!
//! The writer appends under the entry's own short lock and wakes every waiting reader through a
//! `Notify`; readers take a reference-counted slice of the chunks (never a copy) and wait for the next
//! append when they have caught up. A completed entry that has been persisted may drop its chunks from
//! memory (eviction); its readers then continue from the file on disk.
//!
//! Each chunk keeps the instant it was appended (beside its offset, never inside the bytes), so a
//! reader following a growing entry can tell how long a chunk took from the upload to the reader.

use std::io::SeekFrom;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::path::StorePath;
use super::root::RootDir;
use super::StoreError;

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// An upload is appending to it; readers wait for more at the end.
    Growing,
    /// The upload ended cleanly; its length is final.
    Complete,
    /// The upload failed midway; its data was discarded and readers end with an error.
    Aborted,
}

/// Why a reader ended without reaching a clean end.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The upload feeding this entry failed or was replaced before completing.
    #[error("the upload of this file was aborted before it completed")]
    Aborted,
    /// The file behind an entry that was moved out of memory could not be read.
    #[error("the stored file could not be read: {0}")]
    Disk(String),
    /// The entry left memory and has no copy on disk (its persistence failed).
    #[error("the file is neither in memory nor on disk")]
    NoCopy,
    /// The file on disk was replaced by a newer version while this reader was on the old one.
    #[error("the file was replaced by a newer version")]
    Replaced,
    /// A read position fell outside the entry's chunks: an internal inconsistency, not the disk.
    #[error("the read position is outside the file's chunks")]
    OutOfRange,
    /// The whole entry was asked for, and it is larger than the reader takes.
    #[error("the file is larger than the {limit} bytes read whole")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The reader fell further behind the live edge of a growing entry than its lag limit allows
    /// (see [`Reader::with_lag_limit`]).
    #[error("the client fell more than {limit} bytes behind the live upload and was cut off")]
    TooSlow {
        /// The limit, in bytes.
        limit: u64,
    },
    /// A growing entry sent part by part made no whole part for this long: its upload stalled.
    #[error("the upload made no whole part for {seconds} s")]
    Stalled {
        /// How long the response waited.
        seconds: u64,
    },
}

/// Counts the bytes of chunk data held in memory by every entry of one store.
#[derive(Debug, Default)]
pub(crate) struct MemoryGauge {
    bytes: AtomicU64,
}

impl MemoryGauge {
    pub(crate) fn used(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
    fn sub(&self, n: u64) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Where the persisted copy of a complete entry lives: the entry's path under the root, opened
/// without following links.
#[derive(Debug, Clone)]
struct DiskCopy {
    root: Arc<RootDir>,
    /// Inode of the file this entry wrote, so that a reader never mixes in a newer version that was
    /// renamed over it.
    ino: u64,
}

#[derive(Debug)]
struct Body {
    chunks: Vec<Bytes>,
    /// Start offset of each chunk, for ranges and for readers that resume at a byte offset.
    offsets: Vec<u64>,
    /// When each chunk was appended, for the relay-delay metric.
    appended: Vec<std::time::Instant>,
    len: u64,
    state: EntryState,
    modified: SystemTime,
    disk: Option<DiskCopy>,
    /// True while `chunks` hold the whole content (false once evicted or when loaded from disk).
    in_memory: bool,
}

impl Body {
    /// No chunks in memory: a new upload (`len` 0, no disk copy), or a file found on disk.
    fn empty(state: EntryState, len: u64, modified: SystemTime, disk: Option<DiskCopy>) -> Body {
        Body {
            chunks: Vec::new(),
            offsets: Vec::new(),
            appended: Vec::new(),
            len,
            state,
            modified,
            in_memory: disk.is_none(),
            disk,
        }
    }
}

/// One version of one path.
#[derive(Debug)]
pub struct Entry {
    path: StorePath,
    body: Mutex<Body>,
    notify: Notify,
    gauge: Arc<MemoryGauge>,
    /// Milliseconds since `epoch` of the last read or write, for least-recently-used eviction.
    touched: AtomicU64,
    epoch: Instant,
    /// When the upload arrived, in the server's arrival order (0 for files found on disk): an upload
    /// that arrived earlier never replaces one that arrived later.
    arrival: u64,
}

impl Entry {
    pub(crate) fn growing(path: StorePath, gauge: Arc<MemoryGauge>, epoch: Instant, arrival: u64) -> Arc<Self> {
        let body = Body::empty(EntryState::Growing, 0, SystemTime::now(), None);
        Self::new(path, body, gauge, (epoch, millis_since(epoch)), arrival)
    }

    pub(crate) fn on_disk(
        path: StorePath,
        root: Arc<RootDir>,
        ino: u64,
        len: u64,
        modified: SystemTime,
        gauge: Arc<MemoryGauge>,
        epoch: Instant,
    ) -> Arc<Self> {
        let body = Body::empty(EntryState::Complete, len, modified, Some(DiskCopy { root, ino }));
        // Found on disk at start: touched at the epoch, first in the arrival order.
        Self::new(path, body, gauge, (epoch, 0), 0)
    }

    fn new(
        path: StorePath,
        body: Body,
        gauge: Arc<MemoryGauge>,
        (epoch, touched): (Instant, u64),
        arrival: u64,
    ) -> Arc<Self> {
        Arc::new(Entry {
            path,
            body: Mutex::new(body),
            notify: Notify::new(),
            gauge,
            touched: AtomicU64::new(touched),
            epoch,
            arrival,
        })
    }

    fn body(&self) -> MutexGuard<'_, Body> {
        // A panic while holding this lock cannot leave the body half-updated in a way readers could
        // misread (every update is a push or a field store), so a poisoned lock is still usable.
        self.body.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where the upload stands in the server's arrival order.
    pub fn arrival(&self) -> u64 {
        self.arrival
    }

    /// The path this entry is stored under.
    pub fn path(&self) -> &StorePath {
        &self.path
    }

    /// Bytes stored so far (final once complete).
    pub fn len(&self) -> u64 {
        self.body().len
    }

    /// True when no byte has been stored yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry's state.
    pub fn state(&self) -> EntryState {
        self.body().state
    }

    /// When the entry was last written.
    pub fn modified(&self) -> SystemTime {
        self.body().modified
    }

    /// A strong validator for a complete entry: its length and modification time.
    pub fn etag(&self) -> String {
        let body = self.body();
        let nanos = body
            .modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("\"{:x}-{:x}\"", body.len, nanos)
    }

    /// Waits until the entry holds at least `len` bytes or stops growing, at most `bound`; returns
    /// whether it holds `len` bytes.
    pub async fn wait_for_len(&self, len: u64, bound: std::time::Duration) -> bool {
        let waiting = async {
            loop {
                let notified = self.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                {
                    let body = self.body();
                    if body.len >= len || body.state != EntryState::Growing {
                        return body.len >= len && body.state != EntryState::Aborted;
                    }
                }
                notified.await;
            }
        };
        tokio::time::timeout(bound, waiting).await.unwrap_or(false)
    }

    /// The whole content of a complete (or completing) entry, at most `limit` bytes.
    pub async fn read_whole(self: &Arc<Self>, limit: usize) -> Result<Bytes, ReadError> {
        let mut reader = self.reader(0, None);
        let mut all = Vec::new();
        while let Some(chunk) = reader.next_chunk().await {
            all.extend_from_slice(&chunk?);
            if all.len() > limit {
                return Err(ReadError::TooLarge { limit });
            }
        }
        Ok(all.into())
    }

    /// A reader of bytes `start..end` (`end` None: to the end, following the entry while it grows).
    pub fn reader(self: &Arc<Self>, start: u64, end: Option<u64>) -> Reader {
        self.touch();
        Reader {
            entry: Arc::clone(self),
            pos: start,
            end,
            hint: 0,
            since: std::time::Instant::now(),
            file: None,
            lag: None,
        }
    }

    pub(crate) fn touch(&self) {
        self.touched.store(millis_since(self.epoch), Ordering::Relaxed);
    }

    pub(crate) fn last_touched(&self) -> u64 {
        self.touched.load(Ordering::Relaxed)
    }

    /// Appends a chunk and wakes every waiting reader. `limit` is the largest total length allowed.
    pub(crate) fn append(&self, chunk: Bytes, limit: u64) -> Result<(), StoreError> {
        let n = chunk.len() as u64;
        {
            let mut body = self.body();
            if body.state != EntryState::Growing {
                return Err(StoreError::Superseded);
            }
            if body.len + n > limit {
                return Err(StoreError::TooLarge { limit });
            }
            let start = body.len;
            body.offsets.push(start);
            body.appended.push(std::time::Instant::now());
            body.chunks.push(chunk);
            body.len += n;
            body.modified = SystemTime::now();
            // Counted under the lock, so an abort that frees these bytes always sees them counted.
            self.gauge.add(n);
        }
        self.touch();
        self.notify.notify_waiters();
        Ok(())
    }

    /// Marks a growing entry complete; false if it was no longer growing.
    pub(crate) fn complete(&self) -> bool {
        let done = {
            let mut body = self.body();
            if body.state != EntryState::Growing {
                return false;
            }
            body.state = EntryState::Complete;
            body.modified = SystemTime::now();
            true
        };
        self.notify.notify_waiters();
        done
    }

    /// Marks a growing entry aborted and discards its data; readers end with an error.
    pub(crate) fn abort(&self) {
        let freed = {
            let mut body = self.body();
            if body.state != EntryState::Growing {
                return;
            }
            body.state = EntryState::Aborted;
            body.offsets = Vec::new();
            body.appended = Vec::new();
            let freed: u64 = body.chunks.drain(..).map(|c| c.len() as u64).sum();
            body.in_memory = false;
            freed
        };
        self.gauge.sub(freed);
        self.notify.notify_waiters();
    }

    /// The chunks of a complete entry that still holds its content in memory, for persistence.
    pub(crate) fn complete_chunks(&self) -> Option<Vec<Bytes>> {
        let body = self.body();
        (body.state == EntryState::Complete && body.in_memory).then(|| body.chunks.clone())
    }

    pub(crate) fn set_persisted(&self, root: Arc<RootDir>, ino: u64) {
        self.body().disk = Some(DiskCopy { root, ino });
    }

    /// Bytes this entry holds in memory that eviction could free (complete and persisted only).
    pub(crate) fn evictable_bytes(&self) -> u64 {
        let body = self.body();
        if body.state == EntryState::Complete && body.in_memory && body.disk.is_some() {
            body.len
        } else {
            0
        }
    }

    /// Drops the chunks of a complete, persisted entry; readers continue from disk. Returns the
    /// bytes freed.
    pub(crate) fn evict(&self) -> u64 {
        let freed = {
            let mut body = self.body();
            if body.state != EntryState::Complete || !body.in_memory || body.disk.is_none() {
                return 0;
            }
            body.in_memory = false;
            body.offsets = Vec::new();
            body.appended = Vec::new();
            body.chunks.drain(..).map(|c| c.len() as u64).sum()
        };
        self.gauge.sub(freed);
        freed
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let body = self.body.get_mut().unwrap_or_else(|p| p.into_inner());
        if body.in_memory {
            self.gauge.sub(body.chunks.iter().map(|c| c.len() as u64).sum());
        }
    }
}

fn millis_since(epoch: Instant) -> u64 {
    Instant::now().saturating_duration_since(epoch).as_millis() as u64
}

/// What a reader does next, decided under the entry's lock.
enum Step {
    /// A chunk, with its append instant when the reader follows the writer.
    Chunk(Bytes, Option<std::time::Instant>),
    Disk(DiskCopy, u64),
    Wait,
    End,
    Fail(ReadError),
}

/// Reads one entry from a byte offset: what exists now, then each chunk as it is appended, ending
/// cleanly when the entry completes and with an error when its upload is aborted.
#[derive(Debug)]
pub struct Reader {
    entry: Arc<Entry>,
    pos: u64,
    end: Option<u64>,
    /// Index of the chunk that holds `pos`, tried before a binary search.
    hint: usize,
    /// When the reader was created: a chunk appended later was relayed to it as it arrived, and its
    /// time since the append is relay delay; an older chunk is catch-up (or a complete file).
    since: std::time::Instant,
    file: Option<tokio::fs::File>,
    /// The lag limit, if any: see [`Reader::with_lag_limit`].
    lag: Option<Lag>,
}

/// How far behind the live edge a reader may fall.
#[derive(Debug, Clone, Copy)]
struct Lag {
    limit: u64,
    /// The entry's length and the reader's position when the limit was set: the distance between
    /// them is the reader's starting lag, which is never held against it (a player that joins a
    /// long growing upload at byte 0 catches up at its own speed).
    len_at_start: u64,
    pos_at_start: u64,
}

/// Largest block read from disk at once.
const DISK_BLOCK: u64 = 256 * 1024;

impl Reader {
    /// The entry being read.
    pub fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }

    /// Cuts this reader off with [`ReadError::TooSlow`] once the upload has appended more than
    /// `limit` bytes beyond what the reader took since this call (it fell `limit` bytes further
    /// behind the live edge than it started), also when it next reads after the upload completed. The check is a subtraction at
    /// each read: the writer never waits for readers, and a slow reader holds only references to
    /// the shared chunks, so it costs others nothing until it is cut off.
    pub fn with_lag_limit(mut self, limit: u64) -> Self {
        self.lag = Some(Lag {
            limit,
            len_at_start: self.entry.len(),
            pos_at_start: self.pos,
        });
        self
    }

    /// The next bytes, waiting for the writer when the reader has caught up with a growing entry.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, ReadError>> {
        self.next_timed().await.map(|read| read.map(|(bytes, _)| bytes))
    }

    /// [`Reader::next_chunk`], with the instant the chunk was appended when that was after the
    /// reader was created (the reader followed the upload); None for chunks that were already there
    /// (catch-up, complete files) and for reads from disk.
    pub async fn next_timed(&mut self) -> Option<Result<(Bytes, Option<std::time::Instant>), ReadError>> {
        loop {
            if self.end.is_some_and(|end| self.pos >= end) {
                return None;
            }
            let entry = Arc::clone(&self.entry);
            let notified = entry.notify.notified();
            tokio::pin!(notified);
            // Register interest before looking, so an append between the look and the wait wakes us.
            notified.as_mut().enable();
            match self.step() {
                Step::Chunk(bytes, appended) => {
                    self.pos += bytes.len() as u64;
                    return Some(Ok((bytes, appended)));
                }
                Step::Disk(copy, limit) => return Some(self.read_disk(copy, limit).await.map(|bytes| (bytes, None))),
                Step::Wait => notified.await,
                Step::End => return None,
                Step::Fail(err) => return Some(Err(err)),
            }
        }
    }

    fn step(&mut self) -> Step {
        let body = self.entry.body();
        if body.state == EntryState::Aborted {
            return Step::Fail(ReadError::Aborted);
        }
        if let Some(lag) = self.lag {
            let grown = body.len.saturating_sub(lag.len_at_start);
            let taken = self.pos.saturating_sub(lag.pos_at_start);
            // Checked after the upload completes too: a reader that fell behind while the entry grew
            // is often first polled again only then (its connection's buffers were full).
            if grown.saturating_sub(taken) > lag.limit {
                return Step::Fail(ReadError::TooSlow { limit: lag.limit });
            }
        }
        let limit = self.end.map_or(body.len, |end| end.min(body.len));
        if self.pos >= limit {
            return match body.state {
                EntryState::Growing if self.end.is_none_or(|end| self.pos < end) => Step::Wait,
                _ => Step::End,
            };
        }
        if !body.in_memory {
            return match &body.disk {
                Some(copy) => Step::Disk(copy.clone(), limit),
                None => Step::Fail(ReadError::NoCopy),
            };
        }
        let index = match body.offsets.get(self.hint) {
            Some(&start) if start <= self.pos && self.pos - start < body.chunks[self.hint].len() as u64 => self.hint,
            _ => body
                .offsets
                .partition_point(|&start| start <= self.pos)
                .saturating_sub(1),
        };
        let (Some(chunk), Some(&start)) = (body.chunks.get(index), body.offsets.get(index)) else {
            return Step::Fail(ReadError::OutOfRange);
        };
        let from = (self.pos - start) as usize;
        let to = ((limit - start) as usize).min(chunk.len());
        if to == chunk.len() {
            self.hint = index + 1;
        } else {
            self.hint = index;
        }
        let appended = body.appended.get(index).copied().filter(|at| *at >= self.since);
        Step::Chunk(chunk.slice(from..to), appended)
    }

    /// Opens the file now when the next bytes come from disk, so that a file that cannot be read
    /// (removed or replaced behind ldash's back, or behind a symbolic link since it left memory)
    /// is an error before anything is sent rather than a broken body.
    pub async fn ready(&mut self) -> Result<(), ReadError> {
        if self.file.is_none() {
            if let Step::Disk(copy, _) = self.step() {
                self.open_disk(copy).await?;
            }
        }
        Ok(())
    }

    async fn open_disk(&mut self, copy: DiskCopy) -> Result<(), ReadError> {
        let disk = |e: std::io::Error| ReadError::Disk(e.to_string());
        let (ino, path) = (copy.ino, self.entry.path.clone());
        let opened = tokio::task::spawn_blocking(move || copy.root.open_file(&path)).await;
        let file = opened.map_err(|e| ReadError::Disk(e.to_string()))?.map_err(disk)?;
        let mut file = tokio::fs::File::from_std(file);
        let meta = file.metadata().await.map_err(disk)?;
        if inode(&meta) != ino {
            return Err(ReadError::Replaced);
        }
        file.seek(SeekFrom::Start(self.pos)).await.map_err(disk)?;
        self.file = Some(file);
        Ok(())
    }

    async fn read_disk(&mut self, copy: DiskCopy, limit: u64) -> Result<Bytes, ReadError> {
        let disk = |e: std::io::Error| ReadError::Disk(e.to_string());
        if self.file.is_none() {
            self.open_disk(copy).await?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(ReadError::Disk("file not open".into()));
        };
        let want = (limit - self.pos).min(DISK_BLOCK) as usize;
        let mut buf = BytesMut::zeroed(want);
        let mut filled = 0;
        while filled < want {
            let n = file.read(&mut buf[filled..]).await.map_err(disk)?;
            if n == 0 {
                return Err(ReadError::Disk("the file is shorter than recorded".into()));
            }
            filled += n;
        }
        self.pos += want as u64;
        Ok(buf.freeze())
    }
}

/// The inode of a file (0 where the platform has none).
pub(crate) fn inode(meta: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        std::os::unix::fs::MetadataExt::ino(meta)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        0
    }
}
