//! The MPD model: what the server needs of a DASH manifest (periods, adaptation sets,
//! representations and their resolved SegmentTemplates), and what it observed of a stream's ingest.
//! The rest lives in child modules: `parse` reads the model in one pass of quick-xml and notes on the
//! way where the low-latency rewrite edits the document; `rewrite` serves every GET from those notes
//! ([`Mpd::rewrite`]: a UTCTiming to ldash's clock, availabilityTimeOffset from the observed chunking,
//! a ServiceDescription, repairs of what ffmpeg writes) by splicing the uploaded bytes, without
//! reading the XML again; `xsd` holds the value types (xs:duration, xs:dateTime, SegmentTemplate
//! identifiers). No I/O and no clock reads here.

mod parse;
mod rewrite;
mod view;
mod xsd;

use std::time::{Duration, SystemTime};

pub use parse::parse;
pub use rewrite::{rewrite, Rewrite};
pub use view::{view, ViewError};
pub use xsd::{format_duration, parse_duration};

use xsd::{identifiers, pad, split_number};

/// Why an MPD could not be parsed or rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MpdError {
    /// Not well-formed XML.
    #[error("not well-formed XML: {0}")]
    Xml(String),
    /// Well-formed, but the root element is not an MPD.
    #[error("the root element is not an MPD")]
    NotAnMpd,
    /// [`Mpd::rewrite`] was given bytes other than the ones the model was parsed from (or a model
    /// that was not parsed at all): the positions it recorded do not hold for them.
    #[error("the MPD bytes are not the ones the model was parsed from")]
    NotParsedFrom,
}

fn xml(err: impl std::fmt::Display) -> MpdError {
    MpdError::Xml(err.to_string())
}

/// What the server needs of an MPD.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mpd {
    /// `type="dynamic"` (live).
    pub dynamic: bool,
    /// availabilityStartTime.
    pub availability_start: Option<SystemTime>,
    /// publishTime.
    pub publish_time: Option<SystemTime>,
    /// maxSegmentDuration.
    pub max_segment_duration: Option<Duration>,
    /// minimumUpdatePeriod.
    pub minimum_update_period: Option<Duration>,
    /// timeShiftBufferDepth.
    pub time_shift_buffer_depth: Option<Duration>,
    /// mediaPresentationDuration (an ended stream's, in a static MPD).
    pub media_presentation_duration: Option<Duration>,
    /// The periods, in order.
    pub periods: Vec<Period>,
    /// Where the low-latency rewrite edits the bytes this model was parsed from (None for a model
    /// built any other way).
    edits: Option<rewrite::Edits>,
}

impl Mpd {
    /// Every Representation of every Period, in order.
    pub fn representations(&self) -> impl Iterator<Item = &Representation> {
        self.periods
            .iter()
            .flat_map(|p| &p.adaptation_sets)
            .flat_map(|a| &a.representations)
    }
}

/// A Period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Period {
    /// id.
    pub id: Option<String>,
    /// start.
    pub start: Option<Duration>,
    /// The adaptation sets, in order.
    pub adaptation_sets: Vec<AdaptationSet>,
}

/// An AdaptationSet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdaptationSet {
    /// id.
    pub id: Option<String>,
    /// contentType, else the type part of mimeType (video, audio, text).
    pub content_type: Option<String>,
    /// mimeType.
    pub mime_type: Option<String>,
    /// lang.
    pub lang: Option<String>,
    /// The representations, in order.
    pub representations: Vec<Representation>,
}

/// A Representation, with what it inherits from its AdaptationSet already applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Representation {
    /// id.
    pub id: String,
    /// bandwidth (bits/s).
    pub bandwidth: Option<u64>,
    /// codecs.
    pub codecs: Option<String>,
    /// mimeType.
    pub mime_type: Option<String>,
    /// width.
    pub width: Option<u32>,
    /// height.
    pub height: Option<u32>,
    /// frameRate as written ("30/1", "25").
    pub frame_rate: Option<String>,
    /// audioSamplingRate.
    pub audio_sampling_rate: Option<String>,
    /// AudioChannelConfiguration@value.
    pub audio_channels: Option<String>,
    /// The SegmentTemplate in force: Representation over AdaptationSet over Period.
    pub template: Option<SegmentTemplate>,
}

/// A resolved SegmentTemplate.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentTemplate {
    /// media.
    pub media: Option<String>,
    /// initialization.
    pub initialization: Option<String>,
    /// timescale (default 1).
    pub timescale: u64,
    /// duration, in timescale units.
    pub duration: Option<u64>,
    /// startNumber (default 1).
    pub start_number: u64,
    /// presentationTimeOffset.
    pub presentation_time_offset: u64,
    /// availabilityTimeOffset, seconds.
    pub availability_time_offset: Option<f64>,
    /// availabilityTimeComplete.
    pub availability_time_complete: Option<bool>,
    /// A SegmentTimeline is present.
    pub has_timeline: bool,
}

impl SegmentTemplate {
    /// The duration of one segment, when the template has a fixed one.
    pub fn segment_duration(&self) -> Option<Duration> {
        let duration = self.duration? as f64 / self.timescale as f64;
        // try_from: a huge value in an uploaded MPD must not panic (found by fuzzing).
        Duration::try_from_secs_f64(duration).ok().filter(|d| !d.is_zero())
    }

    /// The media URL of segment `number` (None for `$Time$` templates).
    pub fn media_path(&self, rep: &Representation, number: u64) -> Option<String> {
        Some(self.media_names(rep)?.path(number))
    }

    /// The media names of `rep`, resolved once (None for `$Time$` templates): for matching and
    /// writing many of them (a DVR window's thousands of segments per playlist).
    pub fn media_names(&self, rep: &Representation) -> Option<MediaNames> {
        let media = self.media.as_deref()?;
        let (prefix, width, suffix) = split_number(&identifiers(media, rep))?;
        Some(MediaNames { prefix, width, suffix })
    }

    /// The initialization URL.
    pub fn init_path(&self, rep: &Representation) -> Option<String> {
        let init = self.initialization.as_deref()?;
        Some(identifiers(init, rep).replace("$$", "$"))
    }

    /// The segment number of `name` if it matches the media template for `rep`.
    pub fn match_media(&self, rep: &Representation, name: &str) -> Option<u64> {
        self.media_names(rep)?.number(name)
    }
}

/// A representation's media template with its identifiers resolved: `{prefix}{number}{suffix}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaNames {
    prefix: String,
    width: usize,
    suffix: String,
}

impl MediaNames {
    /// The name of segment `number`.
    pub fn path(&self, number: u64) -> String {
        format!("{}{}{}", self.prefix, pad(number, self.width), self.suffix)
    }

    /// The segment number `name` has, if it is one of these names.
    pub fn number(&self, name: &str) -> Option<u64> {
        let digits = name
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.suffix.as_str())?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
}
/// What the server observed of one Representation's ingest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The longest CMAF chunk seen.
    pub chunk_duration: Option<Duration>,
    /// More than one chunk per segment was seen.
    pub chunked: bool,
    /// Measured bits per second.
    pub bandwidth: Option<u64>,
    /// The RFC 6381 codecs string of its init segment's track.
    pub codecs: Option<String>,
}

/// The init segment's full codecs string where the MPD's `declared` one is the sample entry's four
/// characters alone (`avc1`: ffmpeg's DASH muxer writes that when it sees no codec configuration
/// before its header, as behind its tee muxer), which players cannot check against what they
/// decode; None when the declared one is complete or the init segment says nothing more.
pub fn completed_codecs<'a>(declared: &str, from_init: Option<&'a str>) -> Option<&'a str> {
    let from_init = from_init?;
    let needs_parameters = matches!(declared, "avc1" | "avc3" | "hvc1" | "hev1" | "av01" | "vp09" | "mp4a");
    let completes = from_init
        .strip_prefix(declared)
        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'));
    (needs_parameters && completes).then_some(from_init)
}

/// The ServiceDescription's Latency element: the live latency players aim at, and the range they
/// keep to before catching up (or slowing down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// Latency@target.
    pub target: Duration,
    /// Latency@min.
    pub min: Duration,
    /// Latency@max.
    pub max: Duration,
}

impl Latency {
    /// Before any chunk is observed (the encoder's first MPD): a target any chunking holds.
    pub const UNOBSERVED: Latency = Latency {
        target: Duration::from_millis(1500),
        min: Duration::from_millis(1000),
        max: Duration::from_millis(3000),
    };

    /// The latency a stream of `chunk`-long CMAF chunks holds: four chunks (one being encoded, one
    /// in flight, two buffered by the player) plus 200 ms for decoding and jitter; min half that,
    /// max three times. Measured with the glass-to-glass browser tests (docs/play-page.md,
    /// BENCHMARKS.md): with 0.1 s chunks dash.js held a 0.5 s target without a stall on the 2-core
    /// machine, and 0.6 s leaves room for a loaded one.
    pub fn for_chunk(chunk: Duration) -> Latency {
        let target = chunk.saturating_mul(4).saturating_add(Duration::from_millis(200));
        Latency {
            target,
            min: target / 2,
            max: target.saturating_mul(3),
        }
    }
}

/// The ServiceDescription written into live MPDs that lack one.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDefaults {
    /// A fixed latency (`--latency-target-ms`), or None to derive it from the longest chunk
    /// observed in the stream ([`Latency::for_chunk`]).
    pub latency: Option<Latency>,
    /// PlaybackRate@min.
    pub playback_rate_min: f64,
    /// PlaybackRate@max.
    pub playback_rate_max: f64,
}
