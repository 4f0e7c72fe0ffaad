//! Time views of a rendition (`?start=` and `?end=` on a playlist, docs/dvr.md): start-over, a
//! playlist that starts at a time in the DVR window and follows the live edge (an EVENT playlist),
//! and catch-up, one that ends at a past time (a VOD playlist with EXT-X-ENDLIST). Cut at segment
//! boundaries: the first segment is the one playing at the start, the last the one playing just
//! before the end. Pure: the times are arguments.

use std::time::{Duration, SystemTime};

use super::Rendition;

/// EXT-X-PLAYLIST-TYPE (draft 4.4.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistType {
    /// Segments are only appended: a start-over view of a live stream.
    Event,
    /// The playlist never changes: a past interval, or a stream that has ended.
    Vod,
}

impl PlaylistType {
    /// The tag's value.
    pub fn as_str(self) -> &'static str {
        match self {
            PlaylistType::Event => "EVENT",
            PlaylistType::Vod => "VOD",
        }
    }
}

/// An interval of a stream's wall-clock time (its EXT-X-PROGRAM-DATE-TIME).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clip {
    /// The first segment is the one playing at this time (or the oldest one kept, when older).
    pub from: SystemTime,
    /// The last segment is the one playing just before this time; None: up to the live edge.
    pub to: Option<SystemTime>,
}

impl Rendition {
    /// Whether the view `clip` at `now` is video on demand: its end is past by three of the
    /// rendition's longest segments and the rendition has reached it. Cheap (no copy), for the
    /// blocking reload to decide before writing. A view asked for while its end is still to come
    /// stays EVENT (with EXT-X-ENDLIST once reached): a playlist never turns from EVENT into VOD
    /// (draft 6.2.1), and with the slack a client that saw EVENT has its ENDLIST before a VOD form
    /// exists.
    pub fn is_vod(&self, clip: &Clip, now: SystemTime) -> bool {
        let longest = self.segments.iter().map(|s| s.duration()).fold(1.0, f64::max);
        let slack = Duration::try_from_secs_f64(3.0 * longest).unwrap_or(Duration::from_secs(3));
        let Some(to) = clip.to.filter(|to| to.checked_add(slack).is_some_and(|t| t <= now)) else {
            return false;
        };
        self.ended || self.segments.iter().any(|s| s.complete && end(s) >= to)
    }

    /// The part of the rendition that `clip` covers at `now`: EVENT while it follows a live
    /// stream, with EXT-X-ENDLIST once its end (or the stream's) is reached; VOD for an interval
    /// already past ([`Rendition::is_vod`]). None when no segment of the rendition falls in it.
    pub fn clipped(&self, clip: &Clip, now: SystemTime) -> Option<Rendition> {
        // Complete segments that ended by the clip's start go; the live edge never does.
        let first = self.segments.iter().position(|s| !s.complete || end(s) > clip.from)?;
        let reached = self.ended
            || clip
                .to
                .is_some_and(|to| self.segments.iter().any(|s| s.complete && end(s) >= to));
        let mut segments: Vec<_> = self.segments[first..]
            .iter()
            .filter(|s| clip.to.is_none_or(|to| s.start < to))
            .filter(|s| s.complete || !reached)
            .cloned()
            .collect();
        if segments.is_empty() {
            return None;
        }
        // The discontinuities of the segments cut off (and the one that now starts the playlist)
        // are before the first segment now; its init segment is the one in force there.
        let cut = &self.segments[..=first];
        let discontinuity_sequence = self
            .discontinuity_sequence
            .saturating_add(cut.iter().skip(1).filter(|s| s.discontinuity).count() as u64);
        let init_uri = cut
            .iter()
            .rev()
            .find_map(|s| s.map.clone())
            .unwrap_or_else(|| self.init_uri.clone());
        if let Some(head) = segments.first_mut() {
            head.map = None;
            head.discontinuity = false;
        }
        Some(Rendition {
            uri: self.uri.clone(),
            init_uri,
            discontinuity_sequence,
            last_closed: self.last_closed && !reached,
            next_uri: self.next_uri.clone().filter(|_| !reached),
            ended: reached,
            playlist_type: Some(if reached && self.is_vod(clip, now) {
                PlaylistType::Vod
            } else {
                PlaylistType::Event
            }),
            segments,
        })
    }
}

/// Where segment `s` ends. Durations come from uploaded media: a NaN or an overflow is taken as no
/// duration.
fn end(s: &super::Segment) -> SystemTime {
    let duration = Duration::try_from_secs_f64(s.duration().max(0.0)).unwrap_or_default();
    s.start.checked_add(duration).unwrap_or(s.start)
}
