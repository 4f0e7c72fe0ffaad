//! Where the bytes of a growing media segment may be released to a download: at the ends of its
//! LL-HLS parts (or of its CMAF chunks), which only the live index knows. A download may start
//! before the index has seen the segment's first bytes (an early request for the next segment, or
//! a hint of it): it then waits for the index to know it, never streams it unreleased.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::segment::SegmentIndex;
use super::Live;
use crate::store::{Entry, EntryState, StorePath};

/// How far a download of a growing segment may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleasePoint {
    /// Up to this offset: the end of the first whole part past the position asked about.
    Until(u64),
    /// Everything: the upload has ended (or is not a segment the index follows).
    Rest,
    /// No whole part came within the bound: the upload stalled.
    Stalled,
}

/// The release rule of one download of a growing media segment ([`Live::release_of`]).
#[derive(Debug, Clone)]
pub struct Release {
    live: Live,
    path: StorePath,
    per_part: usize,
    index: Option<Arc<SegmentIndex>>,
}

impl Release {
    /// Released whole CMAF chunk by whole chunk instead of LL-HLS part by part.
    pub fn per_chunk(mut self) -> Self {
        self.per_part = 1;
        self
    }

    /// Where the download of `entry` (this segment) that has reached `pos` may go next, waiting for
    /// a whole part past `pos` at most `bound`.
    pub async fn next_after(&mut self, pos: u64, entry: &Entry, bound: Duration) -> ReleasePoint {
        let deadline = Instant::now() + bound;
        let index = match self.index(entry, deadline).await {
            Ok(index) => index,
            Err(point) => return point,
        };
        let mut progress = index.watch();
        loop {
            let ended = progress.borrow_and_update().ended;
            if let Some(end) = index.part_end_after(pos, self.per_part) {
                return ReleasePoint::Until(end);
            }
            if ended {
                return ReleasePoint::Rest;
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return ReleasePoint::Rest,
                Err(_) => return ReleasePoint::Stalled,
            }
        }
    }

    /// The segment's chunk index, waiting (until `deadline`) for the index to see the upload's
    /// first bytes; Err(Rest) when the upload ends unindexed (not a segment: an init segment, say).
    async fn index(&mut self, entry: &Entry, deadline: Instant) -> Result<Arc<SegmentIndex>, ReleasePoint> {
        if let Some(index) = &self.index {
            return Ok(Arc::clone(index));
        }
        let mut changes = self.live.changes(self.path.folder());
        loop {
            if let Some(index) = self.live.segment(&self.path) {
                self.index = Some(Arc::clone(&index));
                return Ok(index);
            }
            if entry.state() != EntryState::Growing {
                return Err(ReleasePoint::Rest);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // The index registers a segment when its first bytes arrive, and bumps the folder.
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(ReleasePoint::Rest);
                    }
                }
                _ = entry.wait_for_len(entry.len() + 1, left) => {}
            }
            if Instant::now() >= deadline {
                return Err(ReleasePoint::Stalled);
            }
        }
    }
}

impl Live {
    /// How a download of the growing media upload at `path` is released: part by LL-HLS part of
    /// its folder's playlists (chunk by chunk until a playlist was made; [`Release::per_chunk`] for
    /// a plain GET). None when `path` is not a media file of a CMAF stream's folder (one with an
    /// init segment): its bytes go as they come.
    pub fn release_of(&self, path: &StorePath) -> Option<Release> {
        if crate::media::kind::FileKind::of(path) != crate::media::kind::FileKind::Media {
            return None;
        }
        let per_part = self.core().state.chunks_per_part(path)?;
        Some(Release {
            live: self.clone(),
            path: path.clone(),
            per_part,
            index: None,
        })
    }
}
