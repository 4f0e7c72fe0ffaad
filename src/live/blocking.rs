//! The LL-HLS answers of the live index, and the blocking playlist reload: a media playlist request
//! whose `_HLS_msn`/`_HLS_part` asks for what does not exist yet is held until it does or a bound
//! passes, woken by its folder's change channel (and by the moment the stream ends, which no upload
//! announces). What a playlist lists is a projection of the state ([`State::snapshot`]); the
//! directives are parsed, and the answer cached and sent, by `http/`: a request goes
//! http -> live and back as a return value, never from here to http.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::time::Instant;

use super::state::playlists::has_rendition;
use super::Live;
use crate::media::hls::{Block, Clip, Timing, Wanted};
use crate::store::StorePath;

#[cfg(doc)]
use super::State;

/// Why a playlist cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlsError {
    /// No such stream or rendition.
    #[error("no live stream or rendition by that name")]
    NotFound,
    /// The delivery directives ask too far ahead.
    #[error("{0}")]
    BadRequest(&'static str),
    /// A time view (`?start=`, `?end=`) holds no segment of the stream.
    #[error(
        "the stream has no segment in that interval (what it keeps: the live playlist's EXT-X-PROGRAM-DATE-TIME range)"
    )]
    OutsideWindow,
    /// The stream has produced nothing playable in time.
    #[error("the playlist is not available yet; retry shortly")]
    Unavailable,
}

/// A playlist ready to send.
#[derive(Debug, Clone)]
pub struct Playlist {
    /// The text, shared by every response that sees the same state of the stream.
    pub text: Bytes,
    /// Which playlist it is, for the HTTP layer's caching.
    pub kind: PlaylistKind,
}

/// Which playlist, and what its caching depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PlaylistKind {
    /// The multivariant playlist.
    Multivariant,
    /// A media playlist of a stream with this timing, ended or live.
    Media {
        /// The stream's LL-HLS timing.
        timing: Timing,
        /// The stream has ended (its playlist no longer changes).
        ended: bool,
    },
}

/// Longest a playlist request waits for the index of what was on disk at start.
const RESTORE_WAIT: Duration = Duration::from_secs(5);

/// Longest a blocking request waits for what it asks for: three target durations, at most 8 s.
fn hold(timing: &Timing) -> Duration {
    Duration::from_secs(3 * timing.target_duration).min(Duration::from_secs(8))
}

/// Longest a request waits for a stream's first playlist.
const FIRST_WAIT: Duration = Duration::from_secs(6);

impl Live {
    /// The multivariant playlist of the manifest at `mpd_path`.
    pub async fn hls_multivariant(&self, mpd_path: &StorePath) -> Result<Playlist, HlsError> {
        self.restored(RESTORE_WAIT).await;
        let (mpd, _) = self.manifest(mpd_path).await.ok_or(HlsError::NotFound)?;
        let text = self.core().state.multivariant(mpd_path, &mpd);
        Ok(Playlist {
            text: text.into(),
            kind: PlaylistKind::Multivariant,
        })
    }

    /// The media playlist of representation `rep_id` of the manifest at `mpd_path` (with EXT-X-SKIP
    /// when `skip`), held until it holds `wanted` (blocking reload), at most three target
    /// durations.
    pub async fn hls_media(
        &self,
        mpd_path: &StorePath,
        rep_id: &str,
        wanted: Option<Wanted>,
        skip: bool,
        view: Option<(&Clip, &str)>,
    ) -> Result<Playlist, HlsError> {
        // Right after a restart, the playlist of a stream found on disk waits for its segments to
        // be indexed rather than answering 503 for a moment.
        self.restored(RESTORE_WAIT).await;
        let (mut mpd, _) = self.manifest(mpd_path).await.ok_or(HlsError::NotFound)?;
        if !has_rendition(&mpd, rep_id) {
            return Err(HlsError::NotFound);
        }
        let folder = mpd_path.folder();
        let mut changed = self.changes(folder);
        let started = Instant::now();
        let mut deadline: Option<Instant> = None;
        // Whether the directives were judged against a snapshot yet (they are judged once).
        let mut judged = false;
        loop {
            if judged {
                // The manifest may have changed while the request waited: a packaged channel whose
                // encoder came back with a new timeline has a new Period, and the segment asked for
                // is in it. (Parsed once per version: the same manifest gives the same Arc.)
                if let Some(fresh) = self.current_manifest(mpd_path).await {
                    mpd = fresh;
                }
            }
            // Read before the snapshot is taken, so a snapshot is never older than its version.
            let version = *changed.borrow_and_update();
            let (snapshot, ends_at) = self
                .core()
                .state
                .snapshot(mpd_path, &mpd, rep_id, version, Instant::now());
            match snapshot {
                Some(snapshot) => {
                    let (rendition, timing) = (snapshot.rendition(), snapshot.timing());
                    let first = !std::mem::replace(&mut judged, true);
                    // A time view that never changes again (VOD) is answered at once, whatever
                    // the directives ask; a view is written for its request, once it is answered.
                    let now = SystemTime::now();
                    let fixed = view.is_some_and(|(clip, _)| rendition.is_vod(clip, now));
                    match wanted.filter(|_| !fixed).map(|w| rendition.block(w, timing)) {
                        None | Some(Block::Ready) => {
                            let (ended, text) = match view {
                                Some((clip, query)) => {
                                    let (v, text) =
                                        snapshot.view(clip, query, skip, now).ok_or(HlsError::OutsideWindow)?;
                                    (v.ended, text)
                                }
                                None => (rendition.ended, snapshot.text(skip)),
                            };
                            let kind = PlaylistKind::Media { timing: *timing, ended };
                            return Ok(Playlist { text, kind });
                        }
                        // Judged once, on arrival: a request that was acceptable then is held
                        // until what it asks for exists or the bound, never turned into a 400.
                        // Not judged against a stream restored from disk that no upload has
                        // reached yet: this origin restarted and is behind the encoder (another
                        // origin, or the edge's copy, told the player of a later edge).
                        Some(Block::TooFar) if first && self.core().state.uploaded(folder) => {
                            return Err(HlsError::BadRequest(
                                "_HLS_msn or _HLS_part is too far ahead of the live edge",
                            ))
                        }
                        Some(Block::Wait | Block::TooFar) => {
                            deadline.get_or_insert(started + hold(timing));
                        }
                    }
                }
                None => {
                    deadline.get_or_insert(started + FIRST_WAIT);
                }
            }
            let until = deadline.unwrap_or(started);
            // A stream that ends (its encoder went quiet) while the request waits is answered at
            // once with its ended playlist: the end is a change, though no upload announces it.
            if let Some(end) = ends_at.filter(|end| *end < until) {
                match tokio::time::timeout_at(end, changed.changed()).await {
                    Ok(Ok(())) | Err(_) => continue,
                    Ok(Err(_)) => return Err(HlsError::Unavailable),
                }
            }
            match tokio::time::timeout_at(until, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(HlsError::Unavailable),
            }
        }
    }
}
