//! The LL-HLS projections of the live state: each rendition of a stream as the pure playlist
//! writer in [`crate::media::hls`] lists it (its segments over the Periods, as parts), the stream's
//! timing, and the snapshot of one rendition shared by the requests that wake on the same change
//! ([`State::snapshot`]). Pure: no channel, no clock (the time is an argument), no HTTP; the
//! blocking reload that waits on these is [`crate::live::blocking`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::snapshot::{Snapshot, View};
use super::{numbered, Folder, State};
use crate::live::segment::Progress;
use crate::media::hls::{self, Part, Rendition, Report, Segment, Timing};
use crate::media::mpd::{Mpd, Representation};
use crate::store::StorePath;

/// The media playlist name of a representation: `{manifest name}.{representation id}.m3u8`.
pub fn media_name(mpd_name: &str, rep: &Representation) -> String {
    let stem = mpd_name.strip_suffix(".mpd").unwrap_or(mpd_name);
    format!("{stem}.{}.m3u8", rep.id)
}

/// The representations of the newest Period (what a live stream is now): the renditions of the
/// playlists. A rendition's segments come from every Period with a representation of its id.
pub(super) fn reps(mpd: &Mpd) -> impl Iterator<Item = (Option<&str>, &Representation)> {
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

pub(super) fn is_audio(kind: Option<&str>, rep: &Representation) -> bool {
    kind == Some("audio") || rep.mime_type.as_deref().is_some_and(|m| m.starts_with("audio"))
}

/// Whether `mpd`'s newest Period has a representation `rep_id` (a rendition of its playlists).
pub fn has_rendition(mpd: &Mpd, rep_id: &str) -> bool {
    reps(mpd).any(|(_, rep)| rep.id == rep_id)
}

impl State {
    /// A snapshot of one rendition with the stream's timing and the other renditions' reports (the
    /// shared one when it was taken at `version` or later, from the same manifest, in the same
    /// ended state), and when the live stream ends if nothing more is uploaded.
    pub fn snapshot(
        &mut self,
        mpd_path: &StorePath,
        mpd: &Arc<Mpd>,
        rep_id: &str,
        version: u64,
        now: Instant,
    ) -> (Option<Arc<Snapshot>>, Option<Instant>) {
        let (folder, mpd_name) = (mpd_path.folder(), mpd_path.name());
        let options = self.options;
        let Some(f) = self.folders.get_mut(folder) else {
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
        let Some(view) = f.snapshot_of(options.part_target, mpd_name, mpd, rep_id, ended) else {
            return (None, ends_at);
        };
        let snapshot = Arc::new(Snapshot::new(version, ended, Arc::clone(mpd), view));
        f.snapshots.insert(key, Arc::clone(&snapshot));
        (Some(snapshot), ends_at)
    }
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

/// One Period's segments of a representation, as listed (see [`rendition`]).
struct PeriodSegments {
    segments: Vec<Segment>,
    /// An incomplete segment was followed by a newer one: nothing after it is listed yet.
    stopped: bool,
    /// The last segment grows, but its chunks fill its duration and are all listed.
    full: bool,
}

impl Folder {
    fn snapshot_of(
        &mut self,
        part_target: Option<f64>,
        mpd_name: &str,
        mpd: &Mpd,
        rep_id: &str,
        ended: bool,
    ) -> Option<View> {
        let timing = match self.hls_timing.get(mpd_name) {
            Some(timing) => *timing,
            None => match self.stream_timing(mpd, part_target) {
                Some(timing) => {
                    // Fixed for the stream's life: players reject a PART-TARGET that changes.
                    self.hls_timing.insert(mpd_name.to_owned(), timing);
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
            let Some(rendition) = self.rendition(mpd, mpd_name, &rep.id, ended, timing.chunks_per_part) else {
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
    pub(super) fn stream_timing(&self, mpd: &Mpd, wanted: Option<f64>) -> Option<Timing> {
        let mut longest_segment = 0.0f64;
        let mut longest_part = 0.0f64;
        for (_, rep) in reps(mpd) {
            let template = rep.template.as_ref()?;
            longest_segment = longest_segment.max(template.segment_duration()?.as_secs_f64());
            let timescale = self.timescale(rep)?;
            let longest = numbered(self, rep, template)
                .flat_map(|(_, index)| index.chunks())
                .map(|c| c.duration)
                .max()?;
            longest_part = longest_part.max(longest as f64 / timescale as f64);
        }
        (longest_part > 0.0).then(|| Timing::for_chunks(longest_segment, longest_part, wanted))
    }

    fn timescale(&self, rep: &Representation) -> Option<u64> {
        let template = rep.template.as_ref()?;
        let init = self.inits.get(&template.init_path(rep)?)?;
        init.tracks.first().map(|t| u64::from(t.timescale)).filter(|t| *t > 0)
    }

    /// The contiguous run of segments of one Period's representation ending at its newest, as parts.
    fn period_segments(
        &self,
        mpd: &Mpd,
        period_start: Duration,
        rep: &Representation,
        per_part: usize,
    ) -> Option<PeriodSegments> {
        let template = rep.template.as_ref()?;
        // None for a SegmentTimeline: each segment's start then comes from its first chunk.
        let duration = template.segment_duration();
        // Without its init segment (deleted with an ended stream) a rendition lists no segments.
        let timescale = self.timescale(rep).map(|t| t as f64);
        // checked_add: times come from an uploaded MPD and must not overflow into a panic.
        let start = mpd
            .availability_start
            .unwrap_or(SystemTime::UNIX_EPOCH)
            .checked_add(period_start)?;
        let mut numbered: Vec<(u64, Vec<crate::media::cmaf::Chunk>, Progress)> = numbered(self, rep, template)
            .map(|(n, index)| (n, index.chunks(), index.progress()))
            .collect();
        numbered.sort_by_key(|(n, _, _)| *n);
        let names = template.media_names(rep)?;
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
                uri: names.path(n),
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
    pub(super) fn rendition(
        &self,
        mpd: &Mpd,
        mpd_name: &str,
        rep_id: &str,
        ended: bool,
        per_part: usize,
    ) -> Option<Rendition> {
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
            }) = self.period_segments(mpd, period.start.unwrap_or_default(), rep, per_part)
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
            playlist_type: None,
        })
    }
}

#[cfg(test)]
mod tests;
