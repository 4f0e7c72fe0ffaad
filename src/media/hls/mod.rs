//! LL-HLS playlists (draft-pantos-hls-rfc8216bis, section 6.2 and appendix B.1) written from the
//! same CMAF chunks that feed LL-DASH: a multivariant playlist from the MPD's representations, and
//! a media playlist per representation whose parts are byte ranges of the very `.m4s` files DASH
//! players fetch. Pure code: the caller passes a snapshot of the stream and the blocking decisions
//! are answered from it.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

mod clip;

pub use clip::{Clip, PlaylistType};

/// One part: a CMAF chunk, addressed as a byte range of its segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// Offset of the part in its segment.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Duration in seconds.
    pub duration: f64,
    /// Starts with a sync sample.
    pub independent: bool,
}

/// One media segment of a rendition, complete or still growing.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Media sequence number (the DASH segment number).
    pub number: u64,
    /// URI relative to the playlist.
    pub uri: String,
    /// Wall-clock time of its first sample (EXT-X-PROGRAM-DATE-TIME).
    pub start: SystemTime,
    /// Its complete parts, in order.
    pub parts: Vec<Part>,
    /// True once the whole segment is uploaded; its duration is then the sum of its parts.
    pub complete: bool,
    /// It starts a new Period of the stream after an earlier segment of the playlist
    /// (EXT-X-DISCONTINUITY before it).
    pub discontinuity: bool,
    /// The init segment it needs, when it differs from the one before it (EXT-X-MAP before it).
    pub map: Option<String>,
}

impl Segment {
    /// Duration of the parts so far, in seconds.
    pub fn duration(&self) -> f64 {
        self.parts.iter().map(|p| p.duration).sum()
    }

    fn end(&self) -> u64 {
        self.parts.last().map_or(0, |p| p.offset + p.len)
    }
}

/// A snapshot of one rendition.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    /// This media playlist's URI, relative to the multivariant playlist.
    pub uri: String,
    /// The init segment's URI of the first segment (EXT-X-MAP; later ones change it).
    pub init_uri: String,
    /// EXT-X-DISCONTINUITY-SEQUENCE: the discontinuities before the first segment.
    pub discontinuity_sequence: u64,
    /// Contiguous segments, oldest first; only the last may be incomplete.
    pub segments: Vec<Segment>,
    /// The last segment's upload has ended (or its chunks, all listed, fill its duration), but the
    /// next has no part yet: the segment is still
    /// listed as growing (no EXTINF) and the hint names the next segment. Encoders finish a segment
    /// by starting the next, and hls.js skipped the whole next segment (a 1 s gap, a stall every 10
    /// to 15 s) when a reload showed the last segment complete with nothing after it.
    pub last_closed: bool,
    /// The URI of the segment after the last one, hinted while `last_closed`.
    pub next_uri: Option<String>,
    /// The ingest has ended: the playlist gets EXT-X-ENDLIST and ignores delivery directives.
    pub ended: bool,
    /// EXT-X-PLAYLIST-TYPE: None for the live playlist (draft 6.2.1: a live playlist has none), set
    /// for a time view of it ([`Rendition::clipped`]).
    pub playlist_type: Option<PlaylistType>,
}

/// Timing that stays fixed for the stream's whole life.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// EXT-X-TARGETDURATION, whole seconds.
    pub target_duration: u64,
    /// PART-TARGET, seconds.
    pub part_target: f64,
    /// CMAF chunks grouped into one part (at least 1).
    pub chunks_per_part: usize,
}

impl Timing {
    /// The timing of a stream whose longest segment and longest CMAF chunk are given (seconds),
    /// with parts as close to `wanted` seconds as whole chunks allow (None or anything up to one
    /// chunk: a part per chunk). PART-TARGET is the longest such part can be (the chunks per part
    /// times the longest chunk, rounded up to the millisecond), so no part is ever longer, and with
    /// chunks of even length every part but a segment's last is at least 85% of it (draft
    /// 4.4.4.9). The grouping is by count from each segment's start, so a part, once listed,
    /// never changes.
    pub fn for_chunks(longest_segment: f64, longest_chunk: f64, wanted: Option<f64>) -> Timing {
        let per_part = match wanted {
            // A quarter of a chunk's slack: 0.3 s wanted of 0.107 s chunks is three chunks a part.
            Some(wanted) if longest_chunk > 0.0 => ((wanted / longest_chunk) + 0.25).floor().max(1.0),
            _ => 1.0,
        };
        // Parts never span segments: a segment of ten chunks has at most ten parts.
        let per_segment = (longest_segment / longest_chunk.max(0.001)).round().max(1.0);
        let per_part = per_part.min(per_segment);
        Timing {
            target_duration: longest_segment.ceil().max(1.0) as u64,
            // Up to the millisecond, past the float noise of the product (3 x 0.1 s is 0.3 s).
            part_target: (per_part * longest_chunk * 1000.0 - 1e-6).ceil() / 1000.0,
            chunks_per_part: per_part as usize,
        }
    }

    /// Advance Part Limit of section 6.2.5.2: 3 / PART-TARGET below one second, else 3.
    pub fn advance_part_limit(&self) -> u64 {
        if self.part_target < 1.0 && self.part_target > 0.0 {
            (3.0 / self.part_target).floor() as u64
        } else {
            3
        }
    }
}

/// Where a rendition's live edge is: the newest segment number and the index of its newest part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// Newest segment that has at least one part (or is complete).
    pub msn: u64,
    /// Index of its newest part, if any.
    pub part: Option<u64>,
}

/// What a blocking request (`_HLS_msn`, `_HLS_part`) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// _HLS_msn.
    pub msn: u64,
    /// _HLS_part.
    pub part: Option<u64>,
}

/// How to answer a blocking request right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// The playlist already has it: answer now.
    Ready,
    /// Hold the request until the rendition changes, then ask again.
    Wait,
    /// Too far ahead: 400 at once.
    TooFar,
}

impl Rendition {
    /// The live edge, if any segment has a part or is complete.
    pub fn edge(&self) -> Option<Edge> {
        let last = self.segments.iter().rev().find(|s| s.complete || !s.parts.is_empty())?;
        Some(Edge {
            msn: last.number,
            part: last.parts.len().checked_sub(1).map(|p| p as u64),
        })
    }

    /// Newest complete segment.
    pub fn last_complete(&self) -> Option<u64> {
        self.segments.iter().rev().find(|s| s.complete).map(|s| s.number)
    }

    /// Whether the playlist holds segment `msn` (complete), or its part `part`. A part index past
    /// the last part of a complete segment means part 0 of the next one.
    pub fn holds(&self, wanted: Wanted) -> bool {
        let Some(part) = wanted.part else {
            return self.last_complete().is_some_and(|last| last >= wanted.msn);
        };
        let first = self.segments.first().map_or(0, |s| s.number);
        if wanted.msn < first {
            return true;
        }
        match self.segments.iter().find(|s| s.number == wanted.msn) {
            Some(seg) if (part as usize) < seg.parts.len() => true,
            Some(seg) if seg.complete => self.holds(Wanted {
                msn: wanted.msn + 1,
                part: Some(0),
            }),
            Some(_) => false,
            // A number the rendition skipped (a new Period's numbers go on from the newest segment
            // of any track): a later segment satisfies it ("M or later").
            None => self.segments.last().is_some_and(|s| s.number > wanted.msn),
        }
    }

    /// How to answer a blocking request (section 6.2.5.2).
    pub fn block(&self, wanted: Wanted, timing: &Timing) -> Block {
        if self.ended || self.holds(wanted) {
            return Block::Ready;
        }
        let Some(edge) = self.edge() else {
            // No part yet (the first segment is on its way, or its first chunks do not make a whole
            // part yet): anything beyond two segments past the first is too far.
            let first = self.segments.first().map_or(0, |s| s.number);
            return if wanted.msn <= first.max(1) + 2 {
                Block::Wait
            } else {
                Block::TooFar
            };
        };
        if wanted.msn > edge.msn + 2 {
            return Block::TooFar;
        }
        if let Some(part) = wanted.part {
            let per_segment = (f64::from(timing.target_duration as u32) / timing.part_target)
                .ceil()
                .max(1.0) as u64;
            let have = edge.msn * per_segment + edge.part.map_or(0, |p| p + 1);
            let want = wanted.msn * per_segment + part;
            // Two whole segments ahead is always accepted (players ask ahead on their first load).
            let limit = timing.advance_part_limit().max(2 * per_segment);
            if want > have + limit {
                return Block::TooFar;
            }
        }
        Block::Wait
    }
}

/// A segment's CMAF chunks (each as a part of its own, in order) grouped into its LL-HLS parts of
/// `per_part` chunks each, counted from the segment's start. A trailing group with fewer chunks is a
/// part only once the segment is `complete` (its last part); until then it is still being made.
pub fn group_parts(chunks: &[Part], per_part: usize, complete: bool) -> Vec<Part> {
    let per_part = per_part.max(1);
    chunks
        .chunks(per_part)
        .filter(|group| complete || group.len() == per_part)
        .filter_map(|group| {
            let (first, last) = (group.first()?, group.last()?);
            Some(Part {
                offset: first.offset,
                len: (last.offset + last.len).saturating_sub(first.offset),
                duration: group.iter().map(|c| c.duration).sum(),
                independent: first.independent,
            })
        })
        .collect()
}

/// Where a growing segment's bytes may be released (draft 6.2.6: no byte of a part leaves before
/// the whole part can): the end offsets of its complete parts of `per_part` chunks, given its
/// chunks' end offsets so far. Once the segment is complete, everything may go.
pub fn part_ends(chunk_ends: impl Iterator<Item = u64>, per_part: usize) -> impl Iterator<Item = u64> {
    chunk_ends.skip(per_part.max(1) - 1).step_by(per_part.max(1))
}

/// An EXT-X-RENDITION-REPORT for another rendition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The other rendition's playlist URI.
    pub uri: String,
    /// Its edge.
    pub edge: Edge,
}

fn seconds(value: f64) -> String {
    format!("{value:.3}")
}

/// Writes a media playlist. With `skip`, segments older than the skip boundary (six target
/// durations from the end) are replaced by EXT-X-SKIP (a delta update).
pub fn media_playlist(rendition: &Rendition, timing: &Timing, reports: &[Report], skip: bool) -> String {
    let mut out = String::with_capacity(4096);
    let td = timing.target_duration;
    let skip_until = 6 * td;
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:9");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{td}");
    if let Some(kind) = rendition.playlist_type {
        let _ = writeln!(out, "#EXT-X-PLAYLIST-TYPE:{}", kind.as_str());
    }
    // A VOD playlist never changes: nothing to block on, skip or hold back from.
    if rendition.playlist_type != Some(PlaylistType::Vod) {
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={},PART-HOLD-BACK={},HOLD-BACK={}",
            seconds(skip_until as f64),
            seconds(3.0 * timing.part_target),
            seconds(3.0 * td as f64)
        );
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={}", seconds(timing.part_target));
    }
    let first = rendition.segments.first().map_or(0, |s| s.number);
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first}");
    if rendition.discontinuity_sequence > 0 {
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            rendition.discontinuity_sequence
        );
    }
    let listed: Vec<&Segment> = rendition
        .segments
        .iter()
        .filter(|s| s.complete || !s.parts.is_empty())
        .collect();
    let total: f64 = listed.iter().filter(|s| s.complete).map(|s| s.duration()).sum();
    let skipped = if skip && !rendition.ended {
        // Skip whole complete segments that end more than CAN-SKIP-UNTIL before the playlist's end.
        let mut elapsed = 0.0;
        listed
            .iter()
            .take_while(|s| {
                elapsed += s.duration();
                s.complete && total - elapsed >= skip_until as f64
            })
            .count()
    } else {
        0
    };
    if skipped > 0 {
        let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    }
    // The init segment in force at the first segment written (a delta update skips the EXT-X-MAP
    // of the segments it skips).
    let map = listed[..(skipped + 1).min(listed.len())]
        .iter()
        .rev()
        .find_map(|s| s.map.as_deref())
        .unwrap_or(&rendition.init_uri);
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{map}\"");
    // Parts are listed for the segments that start in the last three target durations of the
    // playlist, the growing segment's parts included (draft 6.2.2: a part further than that from
    // the end SHOULD be removed), counted from the start of the whole playlist (skipped segments
    // included: a delta update lists the same parts as the full playlist, or hls.js loses the parts
    // it is loading and falls back to whole segments).
    let end: f64 = listed.iter().map(|s| s.duration()).sum();
    let parts_from = end - 3.0 * td as f64;
    let mut elapsed: f64 = listed.iter().take(skipped).map(|s| s.duration()).sum();
    for (i, segment) in listed.iter().enumerate().skip(skipped) {
        // The first segment of the playlist is counted by EXT-X-DISCONTINUITY-SEQUENCE.
        if segment.discontinuity && i > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
        }
        if let Some(map) = segment.map.as_deref().filter(|_| i > skipped) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{map}\"");
        }
        let _ = writeln!(
            out,
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            // Times outside 1970..9999 cannot be printed: such a PDT line is left empty, not a panic.
            humantime::format_rfc3339_millis(segment.start.max(std::time::UNIX_EPOCH))
        );
        // A millisecond's slack: the parts' durations are rounded.
        let with_parts = !rendition.ended && (!segment.complete || elapsed + 0.001 >= parts_from);
        elapsed += if segment.complete { segment.duration() } else { 0.0 };
        if with_parts {
            for part in &segment.parts {
                let _ = write!(
                    out,
                    "#EXT-X-PART:DURATION={},URI=\"{}\",BYTERANGE=\"{}@{}\"",
                    seconds(part.duration),
                    segment.uri,
                    part.len,
                    part.offset
                );
                let _ = writeln!(out, "{}", if part.independent { ",INDEPENDENT=YES" } else { "" });
            }
        }
        if segment.complete {
            let _ = writeln!(out, "#EXTINF:{},", seconds(segment.duration()));
            let _ = writeln!(out, "{}", segment.uri);
        }
    }
    if rendition.ended {
        let _ = writeln!(out, "#EXT-X-ENDLIST");
        return out;
    }
    if let Some(hint) = preload_hint(rendition) {
        let _ = writeln!(out, "{hint}");
    }
    for report in reports {
        let _ = write!(
            out,
            "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}",
            report.uri, report.edge.msn
        );
        match report.edge.part {
            Some(part) => {
                let _ = writeln!(out, ",LAST-PART={part}");
            }
            None => {
                let _ = writeln!(out);
            }
        }
    }
    out
}

/// The next part to come: the rest of the growing segment or, between segments, the start of the
/// next one.
fn preload_hint(rendition: &Rendition) -> Option<String> {
    let last = rendition.segments.last()?;
    if last.complete {
        return None;
    }
    if rendition.last_closed {
        let next = rendition.next_uri.as_ref()?;
        return Some(format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{next}\""));
    }
    Some(format!(
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\",BYTERANGE-START={}",
        last.uri,
        last.end()
    ))
}

/// A video variant of the multivariant playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Media playlist URI.
    pub uri: String,
    /// Peak bits per second, audio included.
    pub bandwidth: u64,
    /// RFC 6381 codecs of the video and of the audio it plays with.
    pub codecs: String,
    /// WIDTHxHEIGHT.
    pub resolution: Option<(u32, u32)>,
    /// Frames per second.
    pub frame_rate: Option<f64>,
}

/// An audio rendition (EXT-X-MEDIA TYPE=AUDIO).
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// Media playlist URI.
    pub uri: String,
    /// NAME.
    pub name: String,
    /// LANGUAGE.
    pub language: Option<String>,
    /// Channel count.
    pub channels: Option<String>,
}

/// Writes the multivariant playlist. Audio-only streams list their audio as variants.
pub fn multivariant(variants: &[Variant], audio: &[Audio]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for (i, a) in audio.iter().enumerate() {
        let _ = write!(
            out,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"{}\"",
            quoted(&a.name)
        );
        if let Some(lang) = &a.language {
            let _ = write!(out, ",LANGUAGE=\"{}\"", quoted(lang));
        }
        if let Some(channels) = &a.channels {
            let _ = write!(out, ",CHANNELS=\"{}\"", quoted(channels));
        }
        let default = if i == 0 { "YES" } else { "NO" };
        let _ = writeln!(out, ",DEFAULT={default},AUTOSELECT=YES,URI=\"{}\"", a.uri);
    }
    for v in variants {
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},CODECS=\"{}\"",
            v.bandwidth,
            quoted(&v.codecs)
        );
        if let Some((w, h)) = v.resolution {
            let _ = write!(out, ",RESOLUTION={w}x{h}");
        }
        if let Some(rate) = v.frame_rate {
            let _ = write!(out, ",FRAME-RATE={rate:.3}");
        }
        if !audio.is_empty() {
            let _ = write!(out, ",AUDIO=\"audio\"");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", v.uri);
    }
    out
}

/// Attribute values may not contain quotes or line breaks.
fn quoted(value: &str) -> String {
    value
        .chars()
        .filter(|c| *c != '"' && *c != '\n' && *c != '\r')
        .collect()
}

/// Cache-Control max-age (seconds) for a playlist response, as appendix B.1 suggests: blocking
/// responses may be cached for six target durations, others for half of one.
pub fn playlist_max_age(timing: &Timing, blocking: bool) -> Duration {
    if blocking {
        Duration::from_secs(6 * timing.target_duration)
    } else {
        Duration::from_millis(timing.target_duration * 500)
    }
}

#[cfg(test)]
mod tests;
