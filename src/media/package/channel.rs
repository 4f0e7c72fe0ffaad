//! One packaged channel: its tracks on one timeline, where each chunk goes, and the window.
//!
//! The timeline: segment `n` of every track covers media time `[(n - 1) * D, n * D)` of the track's
//! own timescale, `D` being the segment duration, and media time 0 is `availabilityStartTime` (the
//! anchor, fixed by the first chunk the channel receives: its arrival minus its end time). So the
//! tracks of one encoder line up by their decode times, a reconnect that continues the timeline
//! continues the numbering, and `$Number$` addressing in the manifest holds.

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
    /// The manifest changed (a first bandwidth measured): publish it again.
    pub republish: bool,
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
    /// The end of the last chunk, in the track's timescale.
    pub(super) end: u64,
    /// A POST of the track started and has placed no chunk yet.
    fresh: bool,
}

impl Track {
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
    /// Wall-clock time of media time 0 (availabilityStartTime).
    pub(super) anchor: Option<SystemTime>,
    /// Tracks by representation id.
    pub(super) tracks: BTreeMap<String, Track>,
}

impl Channel {
    /// A channel with no track yet.
    pub fn new(options: PackageOptions) -> Channel {
        Channel {
            options,
            anchor: None,
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
        let track = self.tracks.entry(id.to_owned()).or_insert_with(|| Track {
            kind,
            timescale: first.timescale,
            coding: coding.clone(),
            bandwidth: None,
            posts: 0,
            open: None,
            misaligned: false,
            newest: None,
            oldest: None,
            end: 0,
            fresh: true,
        });
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
        let mut placement = Placement::default();
        let anchor = self.anchor;
        let Some(track) = self.tracks.get_mut(id) else {
            return placement;
        };
        let fresh = std::mem::take(&mut track.fresh);
        let Some(anchor) = anchor else {
            return self.place_on(id, chunk, len, now, placement);
        };
        // A POST whose timeline is not the channel's (a restarted encoder counts from 0 again)
        // restarts the channel's timeline: it is anchored anew, numbering starts again, and the
        // live index treats segment numbers starting over as a new run of the encoder. One that
        // continues it (its media time where the wall clock says, give or take five segments or
        // ten seconds: an encoder's start-up and buffering) continues the numbering, gaps included.
        let media_end = chunk.decode_time.saturating_add(chunk.duration) as f64 / f64::from(track.timescale);
        let wall = now.duration_since(anchor).map_or(0.0, |t| t.as_secs_f64());
        if fresh && track.newest.is_some() && (media_end - wall).abs() > (5.0 * d).max(10.0) {
            self.restart();
            placement.republish = true;
        }
        self.place_on(id, chunk, len, now, placement)
    }

    /// Forgets the channel's timeline (anchor, numbering, open segments).
    fn restart(&mut self) {
        self.anchor = None;
        for track in self.tracks.values_mut() {
            track.open = None;
            track.newest = None;
            track.oldest = None;
            track.end = 0;
            track.misaligned = false;
        }
    }

    fn place_on(&mut self, id: &str, chunk: &Chunk, len: u64, now: SystemTime, mut placement: Placement) -> Placement {
        let d = self.options.segment_duration.as_secs_f64();
        let window = self.options.window.max(1);
        let Some(track) = self.tracks.get_mut(id) else {
            return placement;
        };
        let scale = f64::from(track.timescale);
        let end = chunk.decode_time.saturating_add(chunk.duration);
        if self.anchor.is_none() {
            let media_end = Duration::try_from_secs_f64(end as f64 / scale).unwrap_or_default();
            self.anchor = Some(now.checked_sub(media_end).unwrap_or(SystemTime::UNIX_EPOCH));
        }
        track.end = track.end.max(end);
        // Times within half a sample of a boundary count as on it (rounding in the encoder's
        // timestamps). A segment starts with the first chunk at or after its time, as ffmpeg's DASH
        // muxer cuts audio (whose frames rarely land on a boundary).
        let half_sample = (chunk.duration as f64 / f64::from(chunk.samples.max(1)) / scale / 2.0).min(d / 2.0);
        // Saturating: decode times are the encoder's (the reader refuses any beyond 2^53 ticks).
        let number = (((chunk.decode_time as f64 / scale + half_sample) / d).floor() as u64).saturating_add(1);
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
        let reaches = (end as f64 / scale + half_sample) / d >= open.number as f64;
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
