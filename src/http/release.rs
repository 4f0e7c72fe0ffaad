//! A growing media segment sent part by part (HLS draft 6.2.6): no byte of a part leaves before
//! the whole part exists, and then the part goes at the full speed of the link, so that a player
//! measures the link and not the encoder. A Range request (an LL-HLS part, or a preload hint asked
//! for with an open range) is released at the ends of the stream's LL-HLS parts; a plain GET (a
//! DASH player, or Shaka fetching a whole segment) at the ends of its CMAF chunks, which is all a
//! player can use of it anyway.
//!
//! Where the parts end comes from the live index ([`SegmentIndex`]); the bytes come from the store,
//! shared, never copied. Once the segment's upload has ended, whatever is left goes at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::body::ChunkStream;
use crate::live::SegmentIndex;
use crate::store::{Entry, ReadError, Reader};

/// Chunks with the instant each was appended to the store (see [`crate::store::Reader::next_timed`]).
pub(super) type Timed = Result<(Bytes, Option<std::time::Instant>), ReadError>;

/// Longest a response waits for the next part of a growing segment: an upload that stalls longer
/// ends the response with an error (a reset), rather than holding the stream forever.
pub(super) const PART_WAIT: Duration = Duration::from_secs(10);

/// Where a growing segment's bytes may be released.
#[derive(Debug, Clone)]
pub(super) struct Gate {
    /// The segment's chunk index.
    pub index: Arc<SegmentIndex>,
    /// CMAF chunks per release: the stream's LL-HLS chunks per part, or 1.
    pub per_part: usize,
}

impl Gate {
    /// The end of the first whole part that ends after `pos`, waiting for it at most `bound`; None
    /// once the upload has ended (the rest may go at once). Err when no part completed in time.
    pub async fn next_after(&self, pos: u64, bound: Duration) -> Result<Option<u64>, ReadError> {
        let mut progress = self.index.watch();
        let waiting = async {
            loop {
                let ended = progress.borrow_and_update().ended;
                if let Some(end) = self.index.part_end_after(pos, self.per_part) {
                    return Some(end);
                }
                if ended || progress.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(bound, waiting)
            .await
            .map_err(|_| ReadError::Stalled {
                seconds: bound.as_secs(),
            })
    }
}

/// Bytes `start..end` (`end` None: to the end of the upload) of a growing `entry`, released part
/// by part through `gate`; `lag_limit` cuts off a reader that falls that many bytes further behind
/// the upload than it started (as [`Reader::with_lag_limit`] does).
pub(super) fn released(
    entry: Arc<Entry>,
    gate: Gate,
    (start, end): (u64, Option<u64>),
    lag_limit: Option<u64>,
) -> ChunkStream {
    let state = Released {
        lag: lag_limit.map(|limit| (limit, entry.len(), start)),
        entry,
        gate,
        pos: start,
        end,
        current: None,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut state| async move {
        let next = state.next().await?;
        Some((next, state))
    }))
}

struct Released {
    entry: Arc<Entry>,
    gate: Gate,
    /// The first byte not yet handed to a reader.
    pos: u64,
    end: Option<u64>,
    /// The reader of the part being sent.
    current: Option<Reader>,
    /// (limit, entry length, position) when the response started.
    lag: Option<(u64, u64, u64)>,
    done: bool,
}

impl Released {
    async fn next(&mut self) -> Option<Timed> {
        if self.done {
            return None;
        }
        loop {
            if let Some(reader) = &mut self.current {
                match reader.next_timed().await {
                    Some(Ok(chunk)) => return Some(Ok(chunk)),
                    Some(Err(err)) => return Some(self.fail(err)),
                    None => self.current = None,
                }
            }
            if self.end.is_some_and(|end| self.pos >= end) {
                return None;
            }
            if let Some((limit, len_at_start, pos_at_start)) = self.lag {
                let appended = self.entry.len().saturating_sub(len_at_start);
                let taken = self.pos.saturating_sub(pos_at_start);
                if appended.saturating_sub(taken) > limit {
                    return Some(self.fail(ReadError::TooSlow { limit }));
                }
            }
            let release = match self.gate.next_after(self.pos, PART_WAIT).await {
                Ok(release) => release,
                Err(err) => return Some(self.fail(err)),
            };
            let until = match (release, self.end) {
                (Some(release), Some(end)) => Some(release.min(end)),
                (Some(release), None) => Some(release),
                // The upload ended: the rest, to the end asked for or of the file.
                (None, end) => end,
            };
            if let Some(until) = until {
                // The index reads the store, so the bytes of a part it has seen are stored.
                self.entry.wait_for_len(until, PART_WAIT).await;
            }
            self.current = Some(self.entry.reader(self.pos, until));
            match until {
                Some(until) => self.pos = until,
                // The last reader runs to the end of the file.
                None => self.end = Some(self.pos),
            }
        }
    }

    fn fail(&mut self, err: ReadError) -> Timed {
        self.done = true;
        Err(err)
    }
}
