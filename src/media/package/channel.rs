//! One packaged channel: its tracks on one timeline, where each chunk goes, and the window.
//!
//! The timeline: segment `n` of every track covers media time `[(n - 1) * D, n * D)` of the track's
//! own timescale, `D` being the segment duration, and media time 0 is `availabilityStartTime` (the
//! anchor, fixed by the first chunk the channel receives: its arrival minus its end time). So the
//! tracks of one encoder line up by their decode times, a reconnect that continues the timeline
//! continues the numbering, and `$Number$` addressing in the manifest holds.
//!
//! A reconnect whose timeline does not continue the channel's (a restarted encoder counts from 0
//! again), or whose init segment differs, starts a new run: a new Period of the manifest (and a
//! discontinuity in HLS), anchored anew, with its own init segments and file names. Segment numbers
//! go on across runs (the run's first segment follows the newest of the one before), so HLS media
//! sequence numbers only grow and the window is kept across the boundary.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::media::cmaf::{Chunk, Coding, Init};

/// How channels are packaged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackageOptions {
    /// The segment duration aimed at (`--segment-duration`); a segment starts at the first chunk
    /// that starts with a sync sample at or after its time.
    pub segment_duration: Duration,
    /// Segments kept per track (`--window`); older ones are removed.
    pub window: u64,
}

impl Default for PackageOptions {
    fn default() -> Self {
        PackageOptions {
            segment_duration: Duration::from_secs(1),
            window: 30,
        }
    }
}

/// One thing the driver does for a chunk, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The segment being written is complete: finish its upload (discard it, when `empty`: a
    /// segment opened ahead that never got a chunk).
    Close {
        /// The segment.
        number: u64,
        /// It holds nothing.
        empty: bool,
    },
    /// Start segment `number`'s upload (readable at once, growing).
    Open {
        /// The segment.
        number: u64,
    },
    /// Append the chunk to segment `number`.
    Append {
        /// The segment.
        number: u64,
    },
    /// Remove segment `number`: it left the window.
    Delete {
        /// The segment.
        number: u64,
    },
}

/// What the driver does with a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// The steps, in order; without an [`Step::Append`] the chunk is dropped (it belongs to a
    /// segment already closed, as after a reconnect inside a segment, or precedes a sync sample).
    pub steps: Vec<Step>,
    /// The manifest changed (a first bandwidth measured, a new run): publish it again.
    pub republish: bool,
    /// This chunk started run `n` (a Period): every track's init segment is stored under the run's
    /// name ([`super::init_name`]) before the steps.
    pub run_started: Option<u64>,
}

/// One run of the encoder's timeline: a Period of the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Period@id, and the suffix of the run's file names (none for run 0).
    pub id: u64,
    /// Where the Period starts, after the channel's availabilityStartTime: the start of its first
    /// segment.
    pub start: Duration,
    /// The number of its first segment.
    pub first: u64,
    /// The number the run's own timeline gives its first segment (media time
    /// `(local_first - 1) * D` starts the Period).
    pub local_first: u64,
}

impl Run {
    /// The channel's number of the segment the run's timeline numbers `local`; None before the run.
    fn number(&self, local: u64) -> Option<u64> {
        local
            .checked_sub(self.local_first)
            .map(|d| self.first.saturating_add(d))
    }

    /// The run's timeline's number of the channel's segment `number`.
    pub(super) fn local(&self, number: u64) -> u64 {
        number.saturating_sub(self.first).saturating_add(self.local_first)
    }
}

/// The segment a track is writing.
#[derive(Debug, Clone, Copy)]
struct Open {
    number: u64,
    bytes: u64,
    /// Decode time of its first chunk.
    from: Option<u64>,
}

/// The kind of a track, from its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Video,
    Audio,
    Other,
}

/// What the channel keeps of one track.
#[derive(Debug, Clone)]
pub(super) struct Track {
    pub(super) kind: Kind,
    pub(super) timescale: u32,
    pub(super) coding: Coding,
    /// Bits per second: the init segment's `btrt`, else measured over the first complete segment.
    pub(super) bandwidth: Option<u64>,
    /// POSTs of this track in progress.
    posts: u32,
    /// The segment being written.
    open: Option<Open>,
    /// A chunk that does not start with a sync sample came where a segment had to start: the
    /// encoder's keyframes do not line up with the segment duration, so segments are no longer
    /// closed (and the next one opened) as soon as a chunk reaches their end, but when the next
    /// sync sample comes.
    pub(super) misaligned: bool,
    /// The newest segment started, open or closed.
    pub(super) newest: Option<u64>,
    /// The oldest segment kept.
    pub(super) oldest: Option<u64>,
    /// The end of the last chunk of the current run, in the track's timescale (0: none yet).
    pub(super) end: u64,
    /// A POST of the track started and has placed no chunk yet.
    fresh: bool,
    /// The last segment of each ended run that has one of this track's segments.
    pub(super) last_of_run: BTreeMap<u64, u64>,
}

impl Track {
    /// A track with no segment yet, no POST and nothing open.
    pub(super) fn new(kind: Kind, timescale: u32, coding: Coding, bandwidth: Option<u64>) -> Track {
        Track {
            kind,
            timescale,
            coding,
            bandwidth,
            posts: 0,
            open: None,
            misaligned: false,
            newest: None,
            oldest: None,
            end: 0,
            fresh: false,
            last_of_run: BTreeMap::new(),
        }
    }

    /// Closes `open`, which ends at decode time `end`; true when this measured the track's first
    /// bandwidth.
    fn close(&mut self, open: Open, end: u64, steps: &mut Vec<Step>) -> bool {
        let empty = open.bytes == 0;
        steps.push(Step::Close {
            number: open.number,
            empty,
        });
        let (Some(from), None) = (open.from, self.bandwidth) else {
            return false;
        };
        let seconds = end.saturating_sub(from) as f64 / f64::from(self.timescale);
        self.bandwidth = (seconds > 0.0).then(|| (open.bytes as f64 * 8.0 / seconds) as u64);
        self.bandwidth.is_some()
    }

    /// Opens segment `number` and deletes what leaves the window of `window` segments.
    fn open_segment(&mut self, number: u64, window: u64, steps: &mut Vec<Step>) {
        self.open = Some(Open {
            number,
            bytes: 0,
            from: None,
        });
        // Only numbers that were used can be deleted: after a jump forward, at most the window.
        let used_to = self.newest.map_or(number, |newest| newest.saturating_add(1));
        self.newest = Some(number);
        let oldest = *self.oldest.get_or_insert(number);
        let keep_from = number.saturating_sub(window - 1).max(oldest);
        self.oldest = Some(keep_from);
        steps.push(Step::Open { number });
        let gone = keep_from.min(used_to);
        steps.extend((oldest.max(gone.saturating_sub(window))..gone).map(|number| Step::Delete { number }));
    }
}

/// A packaged channel.
#[derive(Debug, Clone)]
pub struct Channel {
    pub(super) options: PackageOptions,
    /// availabilityStartTime: the wall-clock time of media time 0 of the first run.
    pub(super) origin: Option<SystemTime>,
    /// Wall-clock time of media time 0 of the current run; None until its first chunk (after a
    /// restart, the next chunk starts a new run).
    pub(super) anchor: Option<SystemTime>,
    /// The runs whose segments may still be stored, oldest first (never empty once anchored).
    pub(super) runs: Vec<Run>,
    /// Tracks by representation id.
    pub(super) tracks: BTreeMap<String, Track>,
}

impl Channel {
    /// A channel with no track yet.
    pub fn new(options: PackageOptions) -> Channel {
        Channel {
            options,
            origin: None,
            anchor: None,
            runs: Vec::new(),
            tracks: BTreeMap::new(),
        }
    }

    /// A POST of track `id` delivered its init segment. True when the manifest changed (a new
    /// track, or one whose coding changed).
    pub fn track_started(&mut self, id: &str, init: &Init) -> bool {
        let Some(first) = init.tracks.first() else {
            return false;
        };
        let kind = match &first.handler {
            b"vide" => Kind::Video,
            b"soun" => Kind::Audio,
            _ => Kind::Other,
        };
        let coding = first.coding.clone().unwrap_or_default();
        let known = self.tracks.get(id);
        let changed = known.is_none_or(|t| t.kind != kind || t.timescale != first.timescale || t.coding != coding);
        // A track whose init segment changed restarts the channel's timeline: the segments in the
        // window do not decode with the new one.
        if changed && known.is_some_and(|t| t.newest.is_some()) {
            self.restart();
        }
        let track = self
            .tracks
            .entry(id.to_owned())
            .or_insert_with(|| Track::new(kind, first.timescale, coding.clone(), None));
        if changed {
            track.kind = kind;
            track.timescale = first.timescale;
            track.bandwidth = coding.bitrate;
            track.coding = coding;
        }
        // One POST per track: a newer one takes over (the driver ends the older one first).
        track.posts = 1;
        track.fresh = true;
        changed
    }

    /// Where `chunk` (`len` bytes) of track `id`, received at `now`, goes.
    pub fn place(&mut self, id: &str, chunk: &Chunk, len: u64, now: SystemTime) -> Placement {
        let d = self.options.segment_duration.as_secs_f64();
        let placement = Placement::default();
        let anchor = self.anchor;
        let Some(track) = self.tracks.get_mut(id) else {
            return placement;
        };
        let fresh = std::mem::take(&mut track.fresh);
        let Some(anchor) = anchor else {
            return self.place_on(id, chunk, len, now, placement);
        };
        // A POST whose timeline is not the channel's (a restarted encoder counts from 0 again)
        // starts a new run: a new Period, anchored anew, numbering going on. One that continues it (its media time where the wall clock says, give or take five segments or
        // ten seconds: an encoder's start-up and buffering) continues the numbering, gaps included.
        let media_end = chunk.decode_time.saturating_add(chunk.duration) as f64 / f64::from(track.timescale);
        let wall = now.duration_since(anchor).map_or(0.0, |t| t.as_secs_f64());
        if fresh && track.newest.is_some() && (media_end - wall).abs() > (5.0 * d).max(10.0) {
            self.restart();
        }
        self.place_on(id, chunk, len, now, placement)
    }

    /// Ends the current run: the next chunk placed starts a new one (its segments numbered on
    /// from the newest, the window kept).
    fn restart(&mut self) {
        self.anchor = None;
        let run = self.runs.last().copied();
        for track in self.tracks.values_mut() {
            // A segment opened ahead and still empty is discarded (the driver finds its upload
            // empty), as at the end of a POST.
            if let Some(open) = track.open.take().filter(|open| open.bytes == 0) {
                track.newest = open.number.checked_sub(1).filter(|n| *n > 0);
            }
            if let (Some(run), Some(newest)) = (run, track.newest) {
                if newest >= run.first {
                    track.last_of_run.insert(run.id, newest);
                }
            }
            track.end = 0;
            track.misaligned = false;
        }
    }

    /// Starts a run at `chunk`, which the new timeline (anchored at `anchor`) numbers `local`.
    fn start_run(&mut self, anchor: SystemTime, local: u64) -> u64 {
        let d = self.options.segment_duration;
        self.anchor = Some(anchor);
        let origin = *self.origin.get_or_insert(anchor);
        let begins = anchor
            .checked_add(d.saturating_mul(u32::try_from(local.saturating_sub(1)).unwrap_or(u32::MAX)))
            .unwrap_or(anchor);
        let mut start = begins.duration_since(origin).unwrap_or_default();
        let newest = self.tracks.values().filter_map(|t| t.newest).max();
        let id = match self.runs.last() {
            // A run that got no segment is replaced, so that every run is a Period with media (and
            // run ids count the discontinuities HLS players see).
            Some(last) if newest.is_none_or(|n| n < last.first) => {
                let last = self.runs.pop().map_or(0, |r| r.id);
                if let Some(before) = self.runs.last() {
                    start = start.max(before.start.saturating_add(d));
                }
                last
            }
            Some(last) => {
                // Periods follow each other: one that would start before the previous one (a
                // timeline jumping back) starts a segment after it.
                start = start.max(last.start.saturating_add(d));
                last.id.saturating_add(1)
            }
            None => 0,
        };
        self.runs.push(Run {
            id,
            start,
            first: newest.map_or(local, |n| n.saturating_add(1)),
            local_first: local,
        });
        // Runs whose segments all left every track's window are forgotten.
        let lowest = self.tracks.values().filter_map(|t| t.oldest).min();
        while self.runs.len() > 1 && lowest.is_some_and(|lowest| self.runs[1].first <= lowest) {
            self.runs.remove(0);
        }
        let oldest_run = self.runs.first().map_or(0, |r| r.id);
        for track in self.tracks.values_mut() {
            track.last_of_run.retain(|run, _| *run >= oldest_run);
        }
        id
    }

    /// The run segment `number` belongs to (0 before any).
    pub fn run_of(&self, number: u64) -> u64 {
        self.runs
            .iter()
            .rev()
            .find(|r| r.first <= number)
            .or(self.runs.first())
            .map_or(0, |r| r.id)
    }

    /// The current run (0 before any).
    pub fn current_run(&self) -> u64 {
        self.runs.last().map_or(0, |r| r.id)
    }

    fn place_on(&mut self, id: &str, chunk: &Chunk, len: u64, now: SystemTime, mut placement: Placement) -> Placement {
        let d = self.options.segment_duration.as_secs_f64();
        let window = self.options.window.max(1);
        let Some(scale) = self.tracks.get(id).map(|t| f64::from(t.timescale)) else {
            return placement;
        };
        let end = chunk.decode_time.saturating_add(chunk.duration);
        // Times within half a sample of a boundary count as on it (rounding in the encoder's
        // timestamps). A segment starts with the first chunk at or after its time, as ffmpeg's DASH
        // muxer cuts audio (whose frames rarely land on a boundary).
        let half_sample = (chunk.duration as f64 / f64::from(chunk.samples.max(1)) / scale / 2.0).min(d / 2.0);
        // Saturating: decode times are the encoder's (the reader refuses any beyond 2^53 ticks).
        let local = (((chunk.decode_time as f64 / scale + half_sample) / d).floor() as u64).saturating_add(1);
        if self.anchor.is_none() {
            let media_end = Duration::try_from_secs_f64(end as f64 / scale).unwrap_or_default();
            let anchor = now.checked_sub(media_end).unwrap_or(SystemTime::UNIX_EPOCH);
            placement.run_started = Some(self.start_run(anchor, local));
            placement.republish = true;
        }
        let Some(run) = self.runs.last().copied() else {
            return placement;
        };
        let Some(track) = self.tracks.get_mut(id) else {
            return placement;
        };
        // A chunk before the run's first segment (another track's, starting a moment earlier) is
        // dropped.
        let Some(number) = run.number(local) else {
            return placement;
        };
        track.end = track.end.max(end);
        let steps = &mut placement.steps;
        if chunk.independent && track.newest.is_none_or(|newest| number > newest) {
            if let Some(open) = track.open.take() {
                placement.republish |= track.close(open, chunk.decode_time, steps);
            }
            track.open_segment(number, window, steps);
        }
        let Some(open) = track.open.as_mut() else {
            return placement;
        };
        if open.bytes == 0 && !chunk.independent {
            // A segment opened ahead must start with a sync sample.
            track.misaligned = true;
            return placement;
        }
        open.bytes += len;
        open.from.get_or_insert(chunk.decode_time);
        steps.push(Step::Append { number: open.number });
        // The chunk reaches the segment's end: close it now and open the next, so that players
        // asking for what comes next are pointed at it at once.
        let reaches = (end as f64 / scale + half_sample) / d >= run.local(open.number) as f64;
        if reaches && !track.misaligned {
            let (open, next) = (*open, open.number.saturating_add(1));
            track.open = None;
            placement.republish |= track.close(open, end, steps);
            track.open_segment(next, window, steps);
        }
        placement
    }

    /// A POST of track `id` ended: the segment it was writing, if any, is closed (number, and
    /// whether it is empty).
    pub fn track_ended(&mut self, id: &str) -> Option<(u64, bool)> {
        let track = self.tracks.get_mut(id)?;
        track.posts = track.posts.saturating_sub(1);
        let open = track.open.take()?;
        let empty = open.bytes == 0;
        if empty {
            // Opened ahead and discarded: the next POST may start it.
            track.newest = open.number.checked_sub(1).filter(|n| *n > 0);
        }
        Some((open.number, empty))
    }

    /// Whether any POST of the channel is in progress.
    pub fn receiving(&self) -> bool {
        self.tracks.values().any(|t| t.posts > 0)
    }

    /// The segment duration.
    pub fn segment_duration(&self) -> Duration {
        self.options.segment_duration
    }
}
