//! A growing media segment sent part by part (HLS draft 6.2.6): no byte of a part leaves before
//! the whole part exists, and then the part goes at the full speed of the link, so that a player
//! measures the link and not the encoder. A Range request (an LL-HLS part, or a preload hint asked
//! for with an open range) is released at the ends of the stream's LL-HLS parts; a plain GET (a
//! DASH player, or Shaka fetching a whole segment) at the ends of its CMAF chunks, which is all a
//! player can use of it anyway.
//!
//! Where the parts end comes from the live index ([`Release`]); the bytes come from the store,
//! shared, never copied. Once the segment's upload has ended, whatever is left goes at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::body::ChunkStream;
use crate::live::{Release, ReleasePoint};
use crate::store::{Entry, ReadError, Reader};

/// Chunks with the instant each was appended to the store (see [`crate::store::Reader::next_timed`]).
pub(super) type Timed = Result<(Bytes, Option<std::time::Instant>), ReadError>;

/// Longest a response waits for the next part of a growing segment: an upload that stalls longer
/// ends the response with an error (a reset), rather than holding the stream forever.
pub(super) const PART_WAIT: Duration = Duration::from_secs(10);

/// Bytes `start..end` (`end` None: to the end of the upload) of a growing `entry`, released part
/// by part as `release` says; `lag_limit` cuts off a reader that falls that many bytes further behind
/// the upload than it started (as [`Reader::with_lag_limit`] does).
pub(super) fn released(
    entry: Arc<Entry>,
    release: Release,
    (start, end): (u64, Option<u64>),
    lag_limit: Option<u64>,
) -> ChunkStream {
    let state = Released {
        lag: lag_limit.map(|limit| (limit, entry.len(), start)),
        entry,
        release,
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
    release: Release,
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
            let until = match (
                self.release.next_after(self.pos, &self.entry, PART_WAIT).await,
                self.end,
            ) {
                (ReleasePoint::Until(release), Some(end)) => Some(release.min(end)),
                (ReleasePoint::Until(release), None) => Some(release),
                // The upload ended: the rest, to the end asked for or of the file.
                (ReleasePoint::Rest, end) => end,
                (ReleasePoint::Stalled, _) => {
                    let seconds = PART_WAIT.as_secs();
                    return Some(self.fail(ReadError::Stalled { seconds }));
                }
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
