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

/// What the driver does with a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Append it to the open segment `number`.
    Append {
        /// The segment.
        number: u64,
    },
    /// Close the open segment (if any), start segment `number` with it, and delete the segments
    /// `delete` (out of the window).
    Begin {
        /// The new segment.
        number: u64,
        /// The segment it closes.
        closes: Option<u64>,
        /// Segments that left the window.
        delete: Vec<u64>,
        /// The manifest changed (a first bandwidth measured): publish it again.
        republish: bool,
    },
    /// Drop it: it belongs to a segment already closed (a reconnect inside a segment) or comes
    /// before the first segment's sync sample.
    Drop,
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
    /// The segment being written, its bytes so far and its first decode time.
    open: Option<(u64, u64, u64)>,
    /// The newest segment started, open or closed.
    pub(super) newest: Option<u64>,
    /// The oldest segment kept.
    pub(super) oldest: Option<u64>,
    /// The end of the last chunk, in the track's timescale.
    pub(super) end: u64,
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
        let changed = self
            .tracks
            .get(id)
            .is_none_or(|t| t.kind != kind || t.timescale != first.timescale || t.coding != coding);
        let track = self.tracks.entry(id.to_owned()).or_insert_with(|| Track {
            kind,
            timescale: first.timescale,
            coding: coding.clone(),
            bandwidth: None,
            posts: 0,
            open: None,
            newest: None,
            oldest: None,
            end: 0,
        });
        if changed {
            track.kind = kind;
            track.timescale = first.timescale;
            track.bandwidth = coding.bitrate;
            track.coding = coding;
        }
        track.posts += 1;
        changed
    }

    /// Where `chunk` (`len` bytes) of track `id`, received at `now`, goes.
    pub fn place(&mut self, id: &str, chunk: &Chunk, len: u64, now: SystemTime) -> Placement {
        let d = self.options.segment_duration.as_secs_f64();
        let window = self.options.window.max(1);
        let Some(track) = self.tracks.get_mut(id) else {
            return Placement::Drop;
        };
        let scale = f64::from(track.timescale);
        let start = chunk.decode_time as f64 / scale;
        let end = chunk.decode_time.saturating_add(chunk.duration);
        if self.anchor.is_none() {
            let media_end = Duration::try_from_secs_f64(end as f64 / scale).unwrap_or_default();
            self.anchor = Some(now.checked_sub(media_end).unwrap_or(SystemTime::UNIX_EPOCH));
        }
        track.end = track.end.max(end);
        // A chunk belongs to the segment that holds its middle: audio frames rarely land on a
        // boundary, and the one that straddles it starts the segment after it.
        let middle = start + (chunk.duration as f64 / scale / 2.0).min(d / 2.0);
        let number = (middle / d).floor() as u64 + 1;
        let later = track.newest.is_none_or(|newest| number > newest);
        if chunk.independent && later {
            let closes = track.open.take();
            let republish = closes.is_some_and(|(_, bytes, from)| {
                track.bandwidth.is_none() && {
                    let seconds = (chunk.decode_time.saturating_sub(from)) as f64 / scale;
                    track.bandwidth = (seconds > 0.0).then(|| (bytes as f64 * 8.0 / seconds) as u64);
                    track.bandwidth.is_some()
                }
            });
            track.open = Some((number, len, chunk.decode_time));
            track.newest = Some(number);
            let oldest = *track.oldest.get_or_insert(number);
            let keep_from = number.saturating_sub(window - 1).max(oldest);
            track.oldest = Some(keep_from);
            return Placement::Begin {
                number,
                closes: closes.map(|(n, _, _)| n),
                delete: (oldest..keep_from).collect(),
                republish,
            };
        }
        match &mut track.open {
            Some((open, bytes, _)) => {
                *bytes += len;
                Placement::Append { number: *open }
            }
            None => Placement::Drop,
        }
    }

    /// A POST of track `id` ended: the segment it was writing, if any, is closed.
    pub fn track_ended(&mut self, id: &str) -> Option<u64> {
        let track = self.tracks.get_mut(id)?;
        track.posts = track.posts.saturating_sub(1);
        track.open.take().map(|(number, _, _)| number)
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
