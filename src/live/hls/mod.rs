//! LL-HLS over the live index: snapshots of each representation for the pure playlist writer in
//! [`crate::media::hls`], and the blocking playlist reload, woken by the folder's change counter.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use tokio::time::Instant;

mod multivariant;

use multivariant::multivariant_of;

use super::state::{lock, numbered, split, Folder, State};
use super::{Live, Progress};
use crate::media::hls::{self, Block, Part, Rendition, Report, Segment, Timing, Wanted};
use crate::media::mpd::{Mpd, Representation};

/// Why a playlist cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlsError {
    /// No such stream or rendition.
    #[error("no live stream or rendition by that name")]
    NotFound,
    /// The delivery directives are invalid or ask too far ahead.
    #[error("{0}")]
    BadRequest(&'static str),
    /// The stream has produced nothing playable in time.
    #[error("the playlist is not available yet; retry shortly")]
    Unavailable,
}

/// Delivery directives of a playlist request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// _HLS_msn.
    pub msn: Option<u64>,
    /// _HLS_part.
    pub part: Option<u64>,
    /// _HLS_skip=YES or v2.
    pub skip: bool,
}

impl Directives {
    /// Parses `_HLS_msn`, `_HLS_part` and `_HLS_skip` from a query string.
    pub fn parse(query: Option<&str>) -> Result<Directives, HlsError> {
        let mut d = Directives::default();
        for pair in query.unwrap_or("").split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "_HLS_msn" => {
                    d.msn = Some(
                        value
                            .parse()
                            .map_err(|_| HlsError::BadRequest("_HLS_msn is not a number"))?,
                    )
                }
                "_HLS_part" => {
                    d.part = Some(
                        value
                            .parse()
                            .map_err(|_| HlsError::BadRequest("_HLS_part is not a number"))?,
                    )
                }
                "_HLS_skip" => d.skip = value == "YES" || value == "v2",
                _ => {}
            }
        }
        if d.part.is_some() && d.msn.is_none() {
            return Err(HlsError::BadRequest("_HLS_part needs _HLS_msn"));
        }
        Ok(d)
    }
}

/// A playlist ready to send.
#[derive(Debug, Clone)]
pub struct Playlist {
    /// The text, shared by every response that sees the same state of the stream.
    pub text: Bytes,
    /// Cache-Control max-age.
    pub max_age: Duration,
    /// The text gzipped, made once by the first response that asks for it and shared with every
    /// other response of the same text (the HTTP layer fills it; None when compression failed).
    pub gzip: SharedGzip,
}

/// A compressed form made at most once and shared (None when compression failed).
pub type SharedGzip = Arc<OnceLock<Option<Bytes>>>;

impl Playlist {
    fn new(text: String, max_age: Duration) -> Playlist {
        Playlist {
            text: text.into(),
            max_age,
            gzip: Arc::default(),
        }
    }
}

/// One rendition, the stream's timing, and the other renditions' reports.
type View = (Rendition, Timing, Vec<Report>);

/// One state of one rendition, shared by every playlist request that wakes on the same change of
/// its folder: when a part completes, hundreds of blocked requests wake at once, and each would
/// otherwise take the index lock, rebuild the same snapshot and write the same text.
#[derive(Debug)]
pub(super) struct Snapshot {
    /// The folder's change counter when the snapshot was taken (its state is at least that new).
    version: u64,
    /// Whether the stream had ended then (which time alone can change).
    ended: bool,
    /// The manifest it was made from.
    mpd: Arc<Mpd>,
    rendition: Rendition,
    timing: Timing,
    reports: Vec<Report>,
    /// The rendered playlist, full and with EXT-X-SKIP.
    rendered: [OnceLock<(Bytes, SharedGzip)>; 2],
}

impl Snapshot {
    fn playlist(&self, skip: bool, max_age: Duration) -> Playlist {
        let (text, gzip) = self.rendered[usize::from(skip)].get_or_init(|| {
            let text = hls::media_playlist(&self.rendition, &self.timing, &self.reports, skip);
            (Bytes::from(text), Arc::default())
        });
        Playlist {
            text: text.clone(),
            max_age,
            gzip: Arc::clone(gzip),
        }
    }
}

/// The media playlist name of a representation: `{manifest name}.{representation id}.m3u8`.
pub fn media_name(mpd_name: &str, rep: &Representation) -> String {
    let stem = mpd_name.strip_suffix(".mpd").unwrap_or(mpd_name);
    format!("{stem}.{}.m3u8", rep.id)
}

/// The representations of the newest Period (what a live stream is now): the renditions of the
/// playlists. A rendition's segments come from every Period with a representation of its id.
fn reps(mpd: &Mpd) -> impl Iterator<Item = (Option<&str>, &Representation)> {
    mpd.periods
        .iter()
        .rev()
        .take(1)
        .flat_map(|p| &p.adaptation_sets)
        .flat_map(|a| {
            let kind = a.content_type.as_deref();
            a.representations.iter().map(move |r| (kind, r))
        })
}

fn is_audio(kind: Option<&str>, rep: &Representation) -> bool {
    kind == Some("audio") || rep.mime_type.as_deref().is_some_and(|m| m.starts_with("audio"))
}

/// Longest a playlist request waits for the index of what was on disk at start.
const RESTORE_WAIT: Duration = Duration::from_secs(5);

impl Live {
    /// The multivariant playlist of the manifest at `mpd_path`.
    pub async fn hls_multivariant(&self, mpd_path: &str) -> Result<Playlist, HlsError> {
        self.restored(RESTORE_WAIT).await;
        let (mpd, _) = self.manifest(mpd_path).await.ok_or(HlsError::NotFound)?;
        let (folder, mpd_name) = split(mpd_path);
        let init_codecs: HashMap<String, String> = lock(&self.state)
            .observe(folder, &mpd)
            .into_iter()
            .filter_map(|((_, _, rep), seen)| Some((rep, seen.codecs?)))
            .collect();
        Ok(Playlist::new(
            multivariant_of(&mpd, mpd_name, &init_codecs),
            Duration::from_secs(1),
        ))
    }

    /// The media playlist of representation `rep_id` of the manifest at `mpd_path`, held as the
    /// directives ask (blocking reload), at most three target durations.
    pub async fn hls_media(&self, mpd_path: &str, rep_id: &str, directives: Directives) -> Result<Playlist, HlsError> {
        // Right after a restart, the playlist of a stream found on disk waits for its segments to
        // be indexed rather than answering 503 for a moment.
        self.restored(RESTORE_WAIT).await;
        let (mut mpd, _) = self.manifest(mpd_path).await.ok_or(HlsError::NotFound)?;
        if !reps(&mpd).any(|(_, r)| r.id == rep_id) {
            return Err(HlsError::NotFound);
        }
        let (folder, mpd_name) = split(mpd_path);
        let mut changed = { lock(&self.state).changes(folder, Instant::now()) };
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
            let (snapshot, ends_at) = snapshot(
                &mut lock(&self.state),
                (folder, mpd_name),
                &mpd,
                rep_id,
                version,
                Instant::now(),
            );
            let hold = |timing: &Timing| Duration::from_secs(3 * timing.target_duration).min(Duration::from_secs(8));
            match snapshot {
                Some(snapshot) => {
                    let wanted = directives.msn.map(|msn| Wanted {
                        msn,
                        part: directives.part,
                    });
                    let (rendition, timing) = (&snapshot.rendition, &snapshot.timing);
                    let first = !std::mem::replace(&mut judged, true);
                    match wanted.map(|w| rendition.block(w, timing)) {
                        None | Some(Block::Ready) => {
                            let max_age = hls::playlist_max_age(timing, wanted.is_some() && !rendition.ended);
                            return Ok(snapshot.playlist(directives.skip, max_age));
                        }
                        // Judged once, on arrival: a request that was acceptable then is held
                        // until what it asks for exists or the bound, never turned into a 400.
                        // Not judged against a stream restored from disk that no upload has
                        // reached yet: this origin restarted and is behind the encoder (another
                        // origin, or the edge's copy, told the player of a later edge).
                        Some(Block::TooFar) if first && lock(&self.state).uploaded(folder) => {
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
                    deadline.get_or_insert(started + Duration::from_secs(6));
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

/// A snapshot of one rendition with the stream's timing and the other renditions' reports (the
/// shared one when it was taken at `version` or later, from the same manifest, in the same
/// ended state), and when the live stream ends if nothing more is uploaded.
fn snapshot(
    state: &mut State,
    (folder, mpd_name): (&str, &str),
    mpd: &Arc<Mpd>,
    rep_id: &str,
    version: u64,
    now: Instant,
) -> (Option<Arc<Snapshot>>, Option<Instant>) {
    let options = state.options;
    let Some(f) = state.folders.get_mut(folder) else {
        return (None, None);
    };
    let ended = options.has_ended(f, mpd, now);
    let ends_at = if ended { None } else { options.ends_at(f, mpd) };
    let key = (mpd_name.to_owned(), rep_id.to_owned());
    if let Some(shared) = f.snapshots.get(&key) {
        if shared.version >= version && shared.ended == ended && Arc::ptr_eq(&shared.mpd, mpd) {
            return (Some(Arc::clone(shared)), ends_at);
        }
    }
    let Some((rendition, timing, reports)) = snapshot_of(f, options.part_target, mpd_name, mpd, rep_id, ended) else {
        return (None, ends_at);
    };
    let snapshot = Arc::new(Snapshot {
        version,
        ended,
        mpd: Arc::clone(mpd),
        rendition,
        timing,
        reports,
        rendered: Default::default(),
    });
    f.snapshots.insert(key, Arc::clone(&snapshot));
    (Some(snapshot), ends_at)
}

fn snapshot_of(
    f: &mut Folder,
    part_target: Option<f64>,
    mpd_name: &str,
    mpd: &Mpd,
    rep_id: &str,
    ended: bool,
) -> Option<View> {
    let timing = match f.hls_timing.get(mpd_name) {
        Some(timing) => *timing,
        None => match stream_timing(f, mpd, part_target) {
            Some(timing) => {
                // Fixed for the stream's life: players reject a PART-TARGET that changes.
                f.hls_timing.insert(mpd_name.to_owned(), timing);
                timing
            }
            // An ended stream whose chunks are gone still gets its (empty, ended) playlist;
            // this timing is not kept, so a stream that resumes gets its real one.
            None if ended => ended_timing(mpd),
            None => return None,
        },
    };
    let mut this = None;
    let mut reports = Vec::new();
    for (_, rep) in reps(mpd) {
        let Some(rendition) = rendition(f, mpd, mpd_name, &rep.id, ended, timing.chunks_per_part) else {
            continue;
        };
        if rep.id == rep_id {
            this = Some(rendition);
        } else if let Some(edge) = rendition.edge() {
            reports.push(Report {
                uri: rendition.uri.clone(),
                edge,
            });
        }
    }
    Some((this?, timing, reports))
}

/// TARGETDURATION from the templates, the parts from the longest chunk seen so far in any
/// representation and the part duration `wanted` ([`Timing::for_chunks`]); None until every
/// representation has a chunk.
pub(super) fn stream_timing(f: &Folder, mpd: &Mpd, wanted: Option<f64>) -> Option<Timing> {
    let mut longest_segment = 0.0f64;
    let mut longest_part = 0.0f64;
    for (_, rep) in reps(mpd) {
        let template = rep.template.as_ref()?;
        longest_segment = longest_segment.max(template.segment_duration()?.as_secs_f64());
        let timescale = timescale(f, rep)?;
        let longest = numbered(f, rep, template)
            .flat_map(|(_, index)| index.chunks())
            .map(|c| c.duration)
            .max()?;
        longest_part = longest_part.max(longest as f64 / timescale as f64);
    }
    (longest_part > 0.0).then(|| Timing::for_chunks(longest_segment, longest_part, wanted))
}

/// Timing for a stream that ended before any playlist was made: whole segments as the only part.
fn ended_timing(mpd: &Mpd) -> Timing {
    let longest = reps(mpd)
        .filter_map(|(_, rep)| rep.template.as_ref()?.segment_duration())
        .map(|d| d.as_secs_f64())
        .fold(1.0f64, f64::max);
    Timing {
        target_duration: longest.ceil() as u64,
        part_target: longest,
        chunks_per_part: 1,
    }
}

fn timescale(f: &Folder, rep: &Representation) -> Option<u64> {
    let template = rep.template.as_ref()?;
    let init = f.inits.get(&template.init_path(rep)?)?;
    init.tracks.first().map(|t| u64::from(t.timescale)).filter(|t| *t > 0)
}

/// One Period's segments of a representation, as listed (see [`rendition`]).
struct PeriodSegments {
    segments: Vec<Segment>,
    /// An incomplete segment was followed by a newer one: nothing after it is listed yet.
    stopped: bool,
    /// The last segment grows, but its chunks fill its duration and are all listed.
    full: bool,
}

/// The contiguous run of segments of one Period's representation ending at its newest, as parts.
fn period_segments(
    f: &Folder,
    mpd: &Mpd,
    period_start: Duration,
    rep: &Representation,
    per_part: usize,
) -> Option<PeriodSegments> {
    let template = rep.template.as_ref()?;
    // None for a SegmentTimeline: each segment's start then comes from its first chunk.
    let duration = template.segment_duration();
    // Without its init segment (deleted with an ended stream) a rendition lists no segments.
    let timescale = timescale(f, rep).map(|t| t as f64);
    // checked_add: times come from an uploaded MPD and must not overflow into a panic.
    let start = mpd
        .availability_start
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .checked_add(period_start)?;
    let mut numbered: Vec<(u64, Vec<crate::media::cmaf::Chunk>, Progress)> = numbered(f, rep, template)
        .map(|(n, index)| (n, index.chunks(), index.progress()))
        .collect();
    numbered.sort_by_key(|(n, _, _)| *n);
    let mut segments: Vec<Segment> = Vec::new();
    // A failed upload (an aborted segment) is a gap: the run starts again after it.
    let mut gap = false;
    let mut stopped = false;
    let mut full = false;
    for (n, chunks, progress) in numbered {
        let Some(timescale) = timescale else { break };
        if progress.failed {
            gap = true;
            continue;
        }
        // The encoder opens the next segment's upload a moment before it finishes the previous
        // one: until the older segment completes, the newer one is not listed (only the last
        // segment of a playlist may grow, and the run must not restart at it).
        if !gap && segments.last().is_some_and(|s| !s.complete && s.number + 1 == n) {
            stopped = true;
            break;
        }
        let contiguous = !gap && segments.last().is_none_or(|s| s.complete && s.number + 1 == n);
        if !contiguous {
            segments.clear();
        }
        gap = false;
        // Where the segment starts on the Period's timeline: its first chunk's decode time, so that
        // PROGRAM-DATE-TIME matches the media (draft 6.2.4; an audio track's segments start on its
        // own frames, off the template's whole seconds by up to a frame or a fragment), else the
        // template's.
        let offset = n.saturating_sub(template.start_number);
        let since_start = match (chunks.first(), duration) {
            (Some(first), _) => {
                let pto = template.presentation_time_offset as f64 / template.timescale.max(1) as f64;
                Duration::try_from_secs_f64(first.decode_time as f64 / timescale - pto).unwrap_or_default()
            }
            (None, Some(duration)) => duration.saturating_mul(offset.min(u64::from(u32::MAX)) as u32),
            (None, None) => Duration::ZERO,
        };
        // A growing segment whose chunks already fill its duration, all of them listed as parts:
        // its next part is the next segment's first (ffmpeg ends a segment's upload only when it
        // starts the next one, and a hint of this segment's rest would name bytes that never come).
        let seconds: f64 = chunks.iter().map(|c| c.duration as f64).sum::<f64>() / timescale;
        let longest = chunks.iter().map(|c| c.duration).max().unwrap_or(0) as f64 / timescale;
        full = !progress.ended
            && chunks.len() % per_part.max(1) == 0
            && duration.is_some_and(|d| seconds >= d.as_secs_f64() - longest / 2.0);
        segments.push(Segment {
            number: n,
            uri: template.media_path(rep, n)?,
            start: start.checked_add(since_start)?,
            parts: hls::group_parts(
                &chunks
                    .iter()
                    .map(|c| Part {
                        offset: c.start,
                        len: c.end - c.start,
                        duration: c.duration as f64 / timescale,
                        independent: c.independent,
                    })
                    .collect::<Vec<_>>(),
                per_part,
                progress.ended,
            ),
            complete: progress.ended,
            discontinuity: false,
            map: None,
        });
    }
    Some(PeriodSegments {
        segments,
        stopped,
        full,
    })
}

/// The contiguous run of segments of representation `rep_id` ending at the newest, as parts, over
/// the Periods that have it: a Period after the first starts with a discontinuity (and its own init
/// segment), and its segment numbers must go on from the Period before (else the list starts again
/// there, so that media sequence numbers only grow).
fn rendition(f: &Folder, mpd: &Mpd, mpd_name: &str, rep_id: &str, ended: bool, per_part: usize) -> Option<Rendition> {
    let mut segments: Vec<Segment> = Vec::new();
    // The init segment and the discontinuity sequence of the first segment listed, and the
    // template of the newest Period.
    let mut first: Option<(String, u64)> = None;
    let mut newest: Option<&Representation> = None;
    let mut last_full = false;
    for (p, period) in mpd.periods.iter().enumerate() {
        let Some(rep) = period
            .adaptation_sets
            .iter()
            .flat_map(|a| &a.representations)
            .find(|r| r.id == rep_id)
        else {
            continue;
        };
        newest = Some(rep);
        let init_uri = rep.template.as_ref()?.init_path(rep)?;
        // Period@id counts the discontinuities when it is a number (ldash's packaged channels);
        // else the Period's position does.
        let sequence = period.id.as_deref().and_then(|id| id.parse().ok()).unwrap_or(p as u64);
        let Some(PeriodSegments {
            segments: mut these,
            stopped,
            full,
        }) = period_segments(f, mpd, period.start.unwrap_or_default(), rep, per_part)
        else {
            continue;
        };
        if !these.is_empty() {
            last_full = full;
        }
        if let Some(head) = these.first_mut() {
            let follows = segments.last().is_some_and(|s| s.complete && s.number < head.number);
            if follows {
                head.discontinuity = true;
                head.map = Some(init_uri);
            } else {
                segments.clear();
                first = Some((init_uri, sequence));
            }
            segments.append(&mut these);
        } else if segments.is_empty() {
            first = Some((init_uri, sequence));
        }
        if stopped {
            break;
        }
        // Only the newest segment may grow: a growing one ends the list until it completes.
        if segments.last().is_some_and(|s| !s.complete) {
            break;
        }
    }
    let rep = newest?;
    let template = rep.template.as_ref()?;
    let (init_uri, discontinuity_sequence) = match first {
        Some(first) => first,
        None => (template.init_path(rep)?, 0),
    };
    // A live stream's newest segment is published complete only once the next one has started.
    let last_closed = !ended && segments.last().is_some_and(|s| s.complete);
    if let Some(last) = segments.last_mut().filter(|_| last_closed) {
        last.complete = false;
    }
    let last_closed = last_closed || (!ended && last_full);
    let next_uri = segments.last().and_then(|s| template.media_path(rep, s.number + 1));
    Some(Rendition {
        uri: media_name(mpd_name, rep),
        init_uri,
        discontinuity_sequence,
        segments,
        last_closed,
        next_uri,
        ended,
    })
}

#[cfg(test)]
mod tests;
