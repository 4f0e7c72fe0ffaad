//! One media segment as the live index sees it while it is uploaded: its CMAF chunks so far and
//! its progress, shared between the task that reads the upload and every playlist or MPD request
//! that looks at it. And the folder's last-upload time, moved on with every chunk. It imports
//! nothing from the rest of the live index: the state keeps these, the driver feeds them (and wakes
//! the folder's waiters after each push, see [`super::wake`]), downloads follow their progress.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::media::cmaf::Chunk;

/// How far one media segment's upload has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// CMAF chunks complete so far.
    pub chunks: usize,
    /// The upload ended (cleanly or not).
    pub ended: bool,
    /// The upload was aborted or its bytes could not be read as CMAF.
    pub failed: bool,
}

/// The CMAF chunks of one media segment, growing with its upload.
#[derive(Debug)]
pub struct SegmentIndex {
    chunks: Mutex<Vec<Chunk>>,
    progress: watch::Sender<Progress>,
    /// The folder's last upload, moved on with every chunk.
    activity: Arc<Activity>,
    /// The upload's place in the server's arrival order, to tell an earlier run's segments from
    /// the current run's.
    pub(super) arrival: u64,
    /// When its upload started (for one found on disk at start: when it was written), for the
    /// DVR window's age.
    pub(super) started: Instant,
}

impl SegmentIndex {
    pub(super) fn new(activity: Arc<Activity>, arrival: u64, started: Instant) -> Self {
        SegmentIndex {
            started,
            chunks: Mutex::new(Vec::new()),
            progress: watch::channel(Progress::default()).0,
            activity,
            arrival,
        }
    }

    /// The chunks found so far.
    pub fn chunks(&self) -> Vec<Chunk> {
        self.lock().clone()
    }

    /// The end offset of the first whole part of `per_part` chunks (counted from the segment's
    /// start, as LL-HLS parts are) that ends after byte `pos`, if that part is complete.
    pub fn part_end_after(&self, pos: u64, per_part: usize) -> Option<u64> {
        let chunks = self.lock();
        let end = crate::media::hls::part_ends(chunks.iter().map(|c| c.end), per_part).find(|end| *end > pos);
        end
    }

    /// Progress, and a way to wait for the next change.
    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Progress now.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Chunks found at `now`: readers waiting on the segment wake (the driver then wakes the
    /// folder's).
    pub(super) fn push(&self, found: Vec<Chunk>, now: Instant) {
        let count = {
            let mut chunks = self.lock();
            chunks.extend(found);
            chunks.len()
        };
        self.activity.touch(now);
        self.progress.send_modify(|p| p.chunks = count);
    }

    /// The upload ended; `failed` when it was aborted or is not CMAF.
    pub(super) fn end(&self, failed: bool) {
        self.progress.send_modify(|p| {
            p.ended = true;
            p.failed = failed;
        });
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Chunk>> {
        // Every update is one extend: a poisoned lock still holds whole chunks.
        self.chunks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// When a folder last received an upload: an atomic, so following a chunk takes no lock.
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch`.
    last: AtomicU64,
}

impl Activity {
    pub(super) fn new(now: Instant) -> Self {
        Activity {
            epoch: now,
            last: AtomicU64::new(0),
        }
    }

    pub(super) fn touch(&self, now: Instant) {
        let millis = now.saturating_duration_since(self.epoch).as_millis();
        self.last
            .fetch_max(u64::try_from(millis).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(super) fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}
