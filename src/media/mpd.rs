//! The MPD model and the low-latency rewriter. [`parse`] reads what the server needs of a DASH
//! manifest (periods, adaptation sets, representations and their resolved SegmentTemplates);
//! [`rewrite`] streams a manifest from quick-xml's reader to its writer, keeping every element,
//! attribute, comment and whitespace it does not change, and applies the low-latency rules: a
//! UTCTiming to ldash's clock, availabilityTimeOffset from the observed chunking, a
//! ServiceDescription, and repairs of what ffmpeg writes. No I/O and no clock reads here.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use quick_xml::events::{BytesEnd, BytesStart, Event};
use quick_xml::{Reader, Writer, XmlVersion};

/// Why an MPD could not be parsed or rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MpdError {
    /// Not well-formed XML.
    #[error("not well-formed XML: {0}")]
    Xml(String),
    /// Well-formed, but the root element is not an MPD.
    #[error("the root element is not an MPD")]
    NotAnMpd,
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
    /// The periods, in order.
    pub periods: Vec<Period>,
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

/// SegmentTemplate attributes as written at one level, before inheritance.
#[derive(Debug, Clone, Default, PartialEq)]
struct TemplateAttrs {
    media: Option<String>,
    initialization: Option<String>,
    timescale: Option<u64>,
    duration: Option<u64>,
    start_number: Option<u64>,
    presentation_time_offset: Option<u64>,
    availability_time_offset: Option<f64>,
    availability_time_complete: Option<bool>,
    has_timeline: bool,
}

impl TemplateAttrs {
    fn over(&self, base: &TemplateAttrs) -> TemplateAttrs {
        TemplateAttrs {
            media: self.media.clone().or_else(|| base.media.clone()),
            initialization: self.initialization.clone().or_else(|| base.initialization.clone()),
            timescale: self.timescale.or(base.timescale),
            duration: self.duration.or(base.duration),
            start_number: self.start_number.or(base.start_number),
            presentation_time_offset: self.presentation_time_offset.or(base.presentation_time_offset),
            availability_time_offset: self.availability_time_offset.or(base.availability_time_offset),
            availability_time_complete: self.availability_time_complete.or(base.availability_time_complete),
            has_timeline: self.has_timeline || base.has_timeline,
        }
    }

    fn resolve(&self) -> SegmentTemplate {
        SegmentTemplate {
            media: self.media.clone(),
            initialization: self.initialization.clone(),
            timescale: self.timescale.filter(|t| *t > 0).unwrap_or(1),
            duration: self.duration,
            start_number: self.start_number.unwrap_or(1),
            presentation_time_offset: self.presentation_time_offset.unwrap_or(0),
            availability_time_offset: self.availability_time_offset,
            availability_time_complete: self.availability_time_complete,
            has_timeline: self.has_timeline,
        }
    }
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
        let media = self.media.as_deref()?;
        let (prefix, number_format, suffix) = split_number(&identifiers(media, rep))?;
        Some(format!("{prefix}{}{suffix}", pad(number, number_format)))
    }

    /// The initialization URL.
    pub fn init_path(&self, rep: &Representation) -> Option<String> {
        let init = self.initialization.as_deref()?;
        Some(identifiers(init, rep).replace("$$", "$"))
    }

    /// The segment number of `name` if it matches the media template for `rep`.
    pub fn match_media(&self, rep: &Representation, name: &str) -> Option<u64> {
        let media = self.media.as_deref()?;
        let (prefix, _, suffix) = split_number(&identifiers(media, rep))?;
        let digits = name.strip_prefix(prefix.as_str())?.strip_suffix(suffix.as_str())?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
}

/// Expands $RepresentationID$ and $Bandwidth$ (leaving $Number...$ and $$).
fn identifiers(template: &str, rep: &Representation) -> String {
    template
        .replace("$RepresentationID$", &rep.id)
        .replace("$Bandwidth$", &rep.bandwidth.map(|b| b.to_string()).unwrap_or_default())
}

/// Splits at the `$Number$` / `$Number%0Nd$` identifier: (prefix, width, suffix), with `$$` undone.
fn split_number(template: &str) -> Option<(String, usize, String)> {
    if template.contains("$Time") {
        return None;
    }
    let start = template.find("$Number")?;
    let rest = &template[start + "$Number".len()..];
    let end = rest.find('$')?;
    let format = &rest[..end];
    let width = match format.strip_prefix("%0").and_then(|f| f.strip_suffix('d')) {
        Some(width) => width.parse().ok()?,
        None if format.is_empty() => 0,
        None => return None,
    };
    let prefix = template[..start].replace("$$", "$");
    let suffix = rest[end + 1..].replace("$$", "$");
    Some((prefix, width, suffix))
}

fn pad(number: u64, width: usize) -> String {
    format!("{number:0width$}")
}

/// Parses an xs:duration (`PT1.5S`, `P0Y0M0DT0H0M10.000S`, `PT2M`); years and months count as 365
/// and 30 days.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let rest = text.strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut seconds = 0.0f64;
    let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let factor = units.iter().find(|(u, _)| *u == c)?.1;
            seconds += number.parse::<f64>().ok()? * factor;
            number.clear();
        }
        number.is_empty().then_some(())
    };
    take(
        date,
        &[
            ('Y', 365.0 * 86400.0),
            ('M', 30.0 * 86400.0),
            ('W', 7.0 * 86400.0),
            ('D', 86400.0),
        ],
    )?;
    take(time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// Writes an xs:duration in seconds (`PT1S`, `PT0.2S`).
pub fn format_duration(duration: Duration) -> String {
    let text = format!("{:.3}", duration.as_secs_f64());
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("PT{text}S")
}

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text.trim().trim_end_matches('Z')).ok()
}

/// The attributes of an element as (local name, unescaped value).
fn attributes(element: &BytesStart<'_>) -> Result<HashMap<String, String>, MpdError> {
    let mut map = HashMap::new();
    for attr in element.attributes() {
        let attr = attr.map_err(xml)?;
        let key = attr.key.local_name().as_ref().to_owned();
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(xml)?
            .into_owned();
        map.insert(key, value);
    }
    Ok(map)
}

fn local(element: &BytesStart<'_>) -> String {
    element.local_name().as_ref().to_owned()
}

fn template_attrs(a: &HashMap<String, String>) -> TemplateAttrs {
    TemplateAttrs {
        media: a.get("media").cloned(),
        initialization: a.get("initialization").cloned(),
        timescale: a.get("timescale").and_then(|v| v.trim().parse().ok()),
        duration: a.get("duration").and_then(|v| v.trim().parse().ok()),
        start_number: a.get("startNumber").and_then(|v| v.trim().parse().ok()),
        presentation_time_offset: a.get("presentationTimeOffset").and_then(|v| v.trim().parse().ok()),
        availability_time_offset: a.get("availabilityTimeOffset").and_then(|v| v.trim().parse().ok()),
        availability_time_complete: a.get("availabilityTimeComplete").map(|v| v.trim() == "true"),
        has_timeline: false,
    }
}

/// Where the parser is: the templates written at each level, for inheritance.
#[derive(Default)]
struct Levels {
    period: TemplateAttrs,
    set: TemplateAttrs,
    rep: TemplateAttrs,
    set_defaults: Representation,
    /// Which level the SegmentTemplate being read belongs to: 0 period, 1 set, 2 representation.
    template_level: Option<usize>,
}

/// Reads the model of an MPD.
pub fn parse(mpd: &[u8]) -> Result<Mpd, MpdError> {
    let mut reader = Reader::from_reader(mpd);
    let mut model = Mpd::default();
    let mut stack: Vec<String> = Vec::new();
    let mut levels = Levels::default();
    let mut root_seen = false;
    loop {
        let event = reader.read_event().map_err(xml)?;
        let (element, empty) = match &event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                if let Some(name) = stack.pop() {
                    end_element(&name, &mut model, &mut levels);
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = local(element);
        if !root_seen {
            if name != "MPD" {
                return Err(MpdError::NotAnMpd);
            }
            root_seen = true;
        }
        let attrs = attributes(element)?;
        start_element(&name, &attrs, &stack, &mut model, &mut levels);
        if empty {
            end_element(&name, &mut model, &mut levels);
        } else {
            stack.push(name);
        }
    }
    if !root_seen {
        return Err(MpdError::NotAnMpd);
    }
    if !stack.is_empty() {
        return Err(MpdError::Xml("the document ends inside an element".into()));
    }
    Ok(model)
}

fn start_element(name: &str, a: &HashMap<String, String>, stack: &[String], model: &mut Mpd, levels: &mut Levels) {
    let parent = stack.last().map(String::as_str);
    match name {
        "MPD" if stack.is_empty() => {
            model.dynamic = a.get("type").is_some_and(|t| t == "dynamic");
            model.availability_start = a.get("availabilityStartTime").and_then(|t| parse_time(t));
            model.publish_time = a.get("publishTime").and_then(|t| parse_time(t));
            model.max_segment_duration = a.get("maxSegmentDuration").and_then(|d| parse_duration(d));
            model.minimum_update_period = a.get("minimumUpdatePeriod").and_then(|d| parse_duration(d));
            model.time_shift_buffer_depth = a.get("timeShiftBufferDepth").and_then(|d| parse_duration(d));
        }
        "Period" if parent == Some("MPD") => {
            model.periods.push(Period {
                id: a.get("id").cloned(),
                start: a.get("start").and_then(|d| parse_duration(d)),
                adaptation_sets: Vec::new(),
            });
            levels.period = TemplateAttrs::default();
        }
        "AdaptationSet" if parent == Some("Period") => {
            let mime_type = a.get("mimeType").cloned();
            let content_type = a.get("contentType").cloned().or_else(|| {
                mime_type
                    .as_deref()
                    .and_then(|m| m.split('/').next())
                    .map(str::to_owned)
            });
            if let Some(period) = model.periods.last_mut() {
                period.adaptation_sets.push(AdaptationSet {
                    id: a.get("id").cloned(),
                    content_type,
                    mime_type,
                    lang: a.get("lang").cloned(),
                    representations: Vec::new(),
                });
            }
            levels.set = TemplateAttrs::default();
            levels.set_defaults = representation_attrs(a, &Representation::default());
        }
        "Representation" if parent == Some("AdaptationSet") => {
            let rep = representation_attrs(a, &levels.set_defaults);
            levels.rep = TemplateAttrs::default();
            if let Some(set) = model.periods.last_mut().and_then(|p| p.adaptation_sets.last_mut()) {
                set.representations.push(rep);
            }
        }
        "SegmentTemplate" => {
            let attrs = template_attrs(a);
            levels.template_level = match parent {
                Some("Period") => Some(0),
                Some("AdaptationSet") => Some(1),
                Some("Representation") => Some(2),
                _ => None,
            };
            match levels.template_level {
                Some(0) => levels.period = attrs,
                Some(1) => levels.set = attrs,
                Some(2) => levels.rep = attrs,
                _ => {}
            }
        }
        "SegmentTimeline" if parent == Some("SegmentTemplate") => match levels.template_level {
            Some(0) => levels.period.has_timeline = true,
            Some(1) => levels.set.has_timeline = true,
            Some(2) => levels.rep.has_timeline = true,
            _ => {}
        },
        "AudioChannelConfiguration" => {
            let value = a.get("value").cloned();
            match parent {
                Some("AdaptationSet") => levels.set_defaults.audio_channels = value,
                Some("Representation") => {
                    if let Some(rep) = current_rep(model) {
                        rep.audio_channels = value;
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
}

fn end_element(name: &str, model: &mut Mpd, levels: &mut Levels) {
    if name == "Representation" {
        let resolved = levels.rep.over(&levels.set.over(&levels.period));
        let has_template = resolved != TemplateAttrs::default();
        let channels = levels.set_defaults.audio_channels.clone();
        if let Some(rep) = current_rep(model) {
            rep.template = has_template.then(|| resolved.resolve());
            if rep.audio_channels.is_none() {
                rep.audio_channels = channels;
            }
        }
        levels.rep = TemplateAttrs::default();
    }
}

fn current_rep(model: &mut Mpd) -> Option<&mut Representation> {
    model
        .periods
        .last_mut()?
        .adaptation_sets
        .last_mut()?
        .representations
        .last_mut()
}

fn representation_attrs(a: &HashMap<String, String>, base: &Representation) -> Representation {
    Representation {
        id: a.get("id").cloned().unwrap_or_else(|| base.id.clone()),
        bandwidth: a
            .get("bandwidth")
            .and_then(|v| v.trim().parse().ok())
            .or(base.bandwidth),
        codecs: a.get("codecs").cloned().or_else(|| base.codecs.clone()),
        mime_type: a.get("mimeType").cloned().or_else(|| base.mime_type.clone()),
        width: a.get("width").and_then(|v| v.trim().parse().ok()).or(base.width),
        height: a.get("height").and_then(|v| v.trim().parse().ok()).or(base.height),
        frame_rate: a.get("frameRate").cloned().or_else(|| base.frame_rate.clone()),
        audio_sampling_rate: a
            .get("audioSamplingRate")
            .cloned()
            .or_else(|| base.audio_sampling_rate.clone()),
        audio_channels: base.audio_channels.clone(),
        template: None,
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
    /// max three times. Measured with the glass-to-glass browser tests (README, BENCHMARKS.md): with
    /// 0.1 s chunks dash.js held a 0.5 s target without a stall on the 2-core machine, and 0.6 s
    /// leaves room for a loaded one.
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

/// The inputs of a rewrite.
#[derive(Debug, Clone)]
pub struct Rewrite<'a> {
    /// Absolute URL of the server clock (http-iso).
    pub clock_url: &'a str,
    /// ServiceDescription values.
    pub service: &'a ServiceDefaults,
    /// Observations keyed by (period index, adaptation set index, representation id).
    pub observed: &'a HashMap<(usize, usize, String), Observed>,
    /// The live stream has ended without a final MPD (its encoder went quiet): the presentation's
    /// duration so far, written as `mediaPresentationDuration` so players stop at its end instead
    /// of waiting for segments that will never come.
    pub ended: Option<Duration>,
}

/// Children of MPD that come before ServiceDescription in the schema.
const BEFORE_SERVICE: [&str; 5] = [
    "ProgramInformation",
    "BaseURL",
    "Location",
    "PatchLocation",
    "ServiceDescription",
];
/// Children of ServiceDescription that come before Latency.
const BEFORE_LATENCY: [&str; 1] = ["Scope"];

/// What the rewrite pass must do, decided from the parsed model first.
struct Plan<'a> {
    model: Mpd,
    rewrite: &'a Rewrite<'a>,
    longest_segment: Option<Duration>,
}

impl Plan<'_> {
    fn observed(&self, period: usize, set: usize, rep: &str) -> Option<&Observed> {
        self.rewrite.observed.get(&(period, set, rep.to_owned()))
    }

    /// The ATO for a template at (period, set, rep or every rep of the set).
    fn ato(&self, period: usize, set: usize, rep: Option<&str>) -> Option<f64> {
        let set_model = self.model.periods.get(period)?.adaptation_sets.get(set)?;
        let mut best: Option<f64> = None;
        for r in set_model
            .representations
            .iter()
            .filter(|r| rep.is_none_or(|id| id == r.id))
        {
            let template = r.template.as_ref()?;
            let segment = template.segment_duration()?;
            let seen = self.observed(period, set, &r.id)?;
            if !seen.chunked {
                return None;
            }
            let chunk = seen.chunk_duration?;
            let ato = segment.saturating_sub(chunk).as_secs_f64();
            best = Some(best.map_or(ato, |b| b.min(ato)));
        }
        best
    }

    fn chunked(&self, period: usize, set: usize, rep: Option<&str>) -> bool {
        let Some(set_model) = self.model.periods.get(period).and_then(|p| p.adaptation_sets.get(set)) else {
            return false;
        };
        set_model
            .representations
            .iter()
            .filter(|r| rep.is_none_or(|id| id == r.id))
            .any(|r| self.observed(period, set, &r.id).is_some_and(|o| o.chunked))
    }
}

/// Where the rewrite pass is.
#[derive(Default)]
struct Cursor {
    stack: Vec<String>,
    period: Option<usize>,
    set: Option<usize>,
    rep: Option<String>,
    /// Inside a UTCTiming being dropped (depth of its start).
    dropping: Option<usize>,
    service_written: bool,
    utc_written: bool,
    /// Inside an existing ServiceDescription that lacks a Latency (ours not yet written).
    filling_service: bool,
    changed: bool,
}

/// Rewrites an MPD for low latency. Returns the input unchanged when nothing needed changing.
pub fn rewrite<'m>(mpd: &'m [u8], rewrite: &Rewrite<'_>) -> Result<Cow<'m, [u8]>, MpdError> {
    let model = parse(mpd)?;
    let longest_segment = model
        .periods
        .iter()
        .flat_map(|p| &p.adaptation_sets)
        .flat_map(|a| &a.representations)
        .filter_map(|r| r.template.as_ref().and_then(SegmentTemplate::segment_duration))
        .max();
    let plan = Plan {
        model,
        rewrite,
        longest_segment,
    };
    let has_service = service_state(mpd)?;
    let mut reader = Reader::from_reader(mpd);
    let mut writer = Writer::new(Vec::with_capacity(mpd.len() + 512));
    let mut cursor = Cursor {
        service_written: has_service.is_some(),
        ..Cursor::default()
    };
    loop {
        let event = reader.read_event().map_err(xml)?;
        if matches!(event, Event::Eof) {
            break;
        }
        step(event, &plan, has_service, &mut cursor, &mut writer)?;
    }
    if !cursor.changed {
        return Ok(Cow::Borrowed(mpd));
    }
    Ok(Cow::Owned(writer.into_inner()))
}

/// Whether the MPD has a ServiceDescription (Some) and whether it has a Latency (the bool).
fn service_state(mpd: &[u8]) -> Result<Option<bool>, MpdError> {
    let mut reader = Reader::from_reader(mpd);
    let mut depth = 0usize;
    let mut state = None;
    let mut in_service = false;
    loop {
        match reader.read_event().map_err(xml)? {
            Event::Start(e) => {
                let name = local(&e);
                if depth == 1 && name == "ServiceDescription" && state.is_none() {
                    state = Some(false);
                    in_service = true;
                } else if in_service && depth == 2 && name == "Latency" {
                    state = Some(true);
                }
                depth += 1;
            }
            Event::Empty(e) => {
                let name = local(&e);
                if depth == 1 && name == "ServiceDescription" && state.is_none() {
                    state = Some(false);
                } else if in_service && depth == 2 && name == "Latency" {
                    state = Some(true);
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 1 {
                    in_service = false;
                }
            }
            Event::Eof => return Ok(state),
            _ => {}
        }
    }
}

type Out = Writer<Vec<u8>>;

fn write(writer: &mut Out, event: Event<'_>) -> Result<(), MpdError> {
    writer.write_event(event).map_err(xml)
}

fn step(
    event: Event<'_>,
    plan: &Plan<'_>,
    service: Option<bool>,
    cursor: &mut Cursor,
    writer: &mut Out,
) -> Result<(), MpdError> {
    let dynamic = plan.model.dynamic;
    if let Some(depth) = cursor.dropping {
        match &event {
            Event::Start(_) => cursor.stack.push(String::new()),
            Event::End(_) => {
                cursor.stack.pop();
                if cursor.stack.len() == depth {
                    cursor.dropping = None;
                }
            }
            _ => {}
        }
        return Ok(());
    }
    match event {
        Event::Start(e) => {
            let name = local(&e);
            let depth = cursor.stack.len();
            if dynamic && depth == 1 && name == "UTCTiming" {
                cursor.changed = true;
                cursor.dropping = Some(depth);
                cursor.stack.push(name);
                return Ok(());
            }
            before_child(&name, depth, plan, service, cursor, writer)?;
            let e = adjust(e, &name, plan, cursor)?;
            enter(&name, cursor);
            cursor.stack.push(name.clone());
            write(writer, Event::Start(e))?;
            if dynamic && name == "ServiceDescription" && depth == 1 && service == Some(false) {
                cursor.filling_service = true;
            }
        }
        Event::Empty(e) => {
            let name = local(&e);
            let depth = cursor.stack.len();
            if dynamic && depth == 1 && name == "UTCTiming" {
                cursor.changed = true;
                return Ok(());
            }
            before_child(&name, depth, plan, service, cursor, writer)?;
            let e = adjust(e, &name, plan, cursor)?;
            enter(&name, cursor);
            if dynamic && name == "ServiceDescription" && depth == 1 && service == Some(false) {
                // `<ServiceDescription id="0"/>`: open it, add ours, close it.
                let end = BytesEnd::new(e.name().as_ref().to_owned());
                write(writer, Event::Start(e))?;
                write_service_children(plan, writer)?;
                write(writer, Event::End(end))?;
                cursor.changed = true;
            } else {
                write(writer, Event::Empty(e))?;
            }
            leave(&name, cursor);
        }
        Event::End(e) => {
            let name = cursor.stack.pop().unwrap_or_default();
            let depth = cursor.stack.len();
            if cursor.filling_service && depth == 1 && name == "ServiceDescription" {
                write_service_children(plan, writer)?;
                cursor.filling_service = false;
                cursor.changed = true;
            }
            if dynamic && depth == 0 && name == "MPD" {
                write_utc(plan, cursor, writer)?;
            }
            leave(&name, cursor);
            write(writer, Event::End(e))?;
        }
        other => write(writer, other)?,
    }
    Ok(())
}

/// Insertions that go before a child element: ServiceDescription, Latency, UTCTiming.
fn before_child(
    name: &str,
    depth: usize,
    plan: &Plan<'_>,
    service: Option<bool>,
    cursor: &mut Cursor,
    writer: &mut Out,
) -> Result<(), MpdError> {
    if !plan.model.dynamic {
        return Ok(());
    }
    if depth == 1 && service.is_none() && !cursor.service_written && !BEFORE_SERVICE.contains(&name) {
        let mut start = BytesStart::new("ServiceDescription");
        start.push_attribute(("id", "0"));
        write(writer, Event::Start(start))?;
        write_service_children(plan, writer)?;
        write(writer, Event::End(BytesEnd::new("ServiceDescription")))?;
        cursor.service_written = true;
        cursor.changed = true;
    }
    if depth == 2 && cursor.filling_service && !BEFORE_LATENCY.contains(&name) {
        write_service_children(plan, writer)?;
        cursor.filling_service = false;
        cursor.changed = true;
    }
    if depth == 1 && name == "LeapSecondInformation" {
        write_utc(plan, cursor, writer)?;
    }
    Ok(())
}

fn write_service_children(plan: &Plan<'_>, writer: &mut Out) -> Result<(), MpdError> {
    let s = plan.rewrite.service;
    let l = s.latency.unwrap_or_else(|| {
        let longest = plan.rewrite.observed.values().filter_map(|o| o.chunk_duration).max();
        longest.map_or(Latency::UNOBSERVED, Latency::for_chunk)
    });
    let mut latency = BytesStart::new("Latency");
    latency.push_attribute(("target", l.target.as_millis().to_string().as_str()));
    latency.push_attribute(("min", l.min.as_millis().to_string().as_str()));
    latency.push_attribute(("max", l.max.as_millis().to_string().as_str()));
    write(writer, Event::Empty(latency))?;
    let mut rate = BytesStart::new("PlaybackRate");
    rate.push_attribute(("min", format!("{:.2}", s.playback_rate_min).as_str()));
    rate.push_attribute(("max", format!("{:.2}", s.playback_rate_max).as_str()));
    write(writer, Event::Empty(rate))
}

fn write_utc(plan: &Plan<'_>, cursor: &mut Cursor, writer: &mut Out) -> Result<(), MpdError> {
    if cursor.utc_written {
        return Ok(());
    }
    let mut utc = BytesStart::new("UTCTiming");
    utc.push_attribute(("schemeIdUri", "urn:mpeg:dash:utc:http-iso:2014"));
    utc.push_attribute(("value", plan.rewrite.clock_url));
    write(writer, Event::Empty(utc))?;
    cursor.utc_written = true;
    cursor.changed = true;
    Ok(())
}

fn enter(name: &str, cursor: &mut Cursor) {
    match (name, cursor.stack.last().map(String::as_str)) {
        ("Period", Some("MPD")) => {
            cursor.period = Some(cursor.period.map_or(0, |p| p + 1));
            cursor.set = None;
        }
        ("AdaptationSet", Some("Period")) => cursor.set = Some(cursor.set.map_or(0, |s| s + 1)),
        _ => {}
    }
}

fn leave(name: &str, cursor: &mut Cursor) {
    if name == "Representation" {
        cursor.rep = None;
    }
}

/// Attribute changes on MPD, Representation and SegmentTemplate.
fn adjust<'e>(e: BytesStart<'e>, name: &str, plan: &Plan<'_>, cursor: &mut Cursor) -> Result<BytesStart<'e>, MpdError> {
    let parent = cursor.stack.last().cloned();
    let mut changes: Vec<(&'static str, String)> = Vec::new();
    let attrs = attributes(&e)?;
    match name {
        "MPD" if cursor.stack.is_empty() && plan.model.dynamic => mpd_repairs(&attrs, plan, &mut changes),
        "Representation" if parent.as_deref() == Some("AdaptationSet") => {
            let id = attrs.get("id").cloned().unwrap_or_default();
            cursor.rep = Some(id.clone());
            if !attrs.contains_key("bandwidth") {
                let (p, s) = (cursor.period.unwrap_or(0), cursor.set.unwrap_or(0));
                let measured = plan.observed(p, s, &id).and_then(|o| o.bandwidth).filter(|b| *b > 0);
                changes.push(("bandwidth", measured.unwrap_or(1_000_000).to_string()));
            }
        }
        "SegmentTemplate" if plan.model.dynamic => {
            let (p, s) = (cursor.period.unwrap_or(0), cursor.set.unwrap_or(0));
            let rep = match parent.as_deref() {
                Some("Representation") => Some(cursor.rep.clone().unwrap_or_default()),
                Some("AdaptationSet") => None,
                _ => return Ok(e),
            };
            if plan.chunked(p, s, rep.as_deref()) {
                if !attrs.contains_key("availabilityTimeOffset") {
                    if let Some(ato) = plan.ato(p, s, rep.as_deref()) {
                        changes.push(("availabilityTimeOffset", format!("{ato:.3}")));
                    }
                }
                let has_ato = attrs.contains_key("availabilityTimeOffset") || !changes.is_empty();
                if has_ato && !attrs.contains_key("availabilityTimeComplete") {
                    changes.push(("availabilityTimeComplete", "false".into()));
                }
            }
        }
        _ => {}
    }
    if changes.is_empty() {
        return Ok(e);
    }
    cursor.changed = true;
    Ok(with_changes(&e, &changes))
}

fn mpd_repairs(attrs: &HashMap<String, String>, plan: &Plan<'_>, changes: &mut Vec<(&'static str, String)>) {
    let segment = plan.longest_segment;
    if let Some(duration) = plan.rewrite.ended {
        changes.push(("mediaPresentationDuration", format_duration(duration)));
    }
    let mup = attrs.get("minimumUpdatePeriod").and_then(|d| parse_duration(d));
    if mup.is_some_and(|d| d > Duration::from_secs(30)) {
        let value = segment
            .or(plan.model.max_segment_duration)
            .unwrap_or(Duration::from_secs(2));
        changes.push(("minimumUpdatePeriod", format_duration(value)));
    }
    let tsbd = attrs.get("timeShiftBufferDepth").and_then(|d| parse_duration(d));
    if tsbd.is_none_or(|d| d.is_zero()) {
        let value = segment.map_or(Duration::from_secs(30), |s| s.saturating_mul(10));
        changes.push(("timeShiftBufferDepth", format_duration(value)));
    }
    let mbt = attrs.get("minBufferTime").and_then(|d| parse_duration(d));
    if mbt.is_some_and(|d| d.is_zero()) {
        changes.push((
            "minBufferTime",
            format_duration(segment.unwrap_or(Duration::from_secs(1))),
        ));
    }
}

/// A copy of `e` with attributes replaced or added, every other attribute kept byte for byte.
fn with_changes(e: &BytesStart<'_>, changes: &[(&'static str, String)]) -> BytesStart<'static> {
    let mut out = BytesStart::new(e.name().as_ref().to_owned());
    let mut pending: Vec<&(&str, String)> = changes.iter().collect();
    for attr in e.attributes().flatten() {
        if let Some(at) = pending.iter().position(|(k, _)| *k == attr.key.as_ref()) {
            let (k, v) = pending.remove(at);
            out.push_attribute((*k, v.as_str()));
        } else {
            // Kept exactly as written (the value is still escaped).
            out.push_attribute(attr);
        }
    }
    for (k, v) in pending {
        out.push_attribute((*k, v.as_str()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg/first.mpd");
    const STEADY: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg/steady.mpd");
    const FINAL: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg/final.mpd");

    fn service() -> ServiceDefaults {
        ServiceDefaults {
            latency: Some(Latency::UNOBSERVED),
            playback_rate_min: 0.92,
            playback_rate_max: 1.08,
        }
    }

    fn chunked() -> HashMap<(usize, usize, String), Observed> {
        let seen = Observed {
            chunk_duration: Some(Duration::from_millis(200)),
            chunked: true,
            bandwidth: Some(434_000),
        };
        [((0, 0, "0".to_string()), seen.clone()), ((0, 1, "1".to_string()), seen)]
            .into_iter()
            .collect()
    }

    fn run(mpd: &[u8], observed: &HashMap<(usize, usize, String), Observed>) -> String {
        let service = service();
        let r = Rewrite {
            clock_url: "https://example.com:8443/ldash/time",
            service: &service,
            observed,
            ended: None,
        };
        String::from_utf8(rewrite(mpd, &r).expect("rewrite").into_owned()).expect("utf-8")
    }

    #[test]
    fn an_ended_live_stream_gets_its_presentation_duration() {
        let service = service();
        let observed = chunked();
        let r = Rewrite {
            clock_url: "x",
            service: &service,
            observed: &observed,
            ended: Some(Duration::from_millis(12_400)),
        };
        let out = String::from_utf8(rewrite(STEADY, &r).expect("rewrite").into_owned()).expect("utf-8");
        assert!(out.contains("mediaPresentationDuration=\"PT12.4S\""), "{out}");
        assert!(out.contains("type=\"dynamic\""), "it stays a live MPD: {out}");
        assert!(
            matches!(rewrite(FINAL, &r), Ok(Cow::Borrowed(_))),
            "a static MPD is left as it is"
        );
    }

    #[test]
    fn ffmpeg_mpds_parse_into_the_model() {
        let first = parse(FIRST).expect("first");
        assert!(first.dynamic);
        assert_eq!(first.minimum_update_period, Some(Duration::from_secs(500)));
        assert!(first.availability_start.is_some());
        let sets = &first.periods[0].adaptation_sets;
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].content_type.as_deref(), Some("video"));
        let video = &sets[0].representations[0];
        assert_eq!(
            (video.id.as_str(), video.width, video.height, video.bandwidth),
            ("0", Some(320), Some(180), None)
        );
        assert_eq!(
            video.frame_rate.as_deref(),
            Some("30/1"),
            "frameRate is inherited from the AdaptationSet"
        );
        let template = video.template.as_ref().expect("template");
        assert_eq!(template.segment_duration(), Some(Duration::from_secs(1)));
        assert_eq!(
            template.media_path(video, 7).as_deref(),
            Some("chunk-stream0-00007.m4s")
        );
        assert_eq!(template.init_path(video).as_deref(), Some("init-stream0.m4s"));
        assert_eq!(template.match_media(video, "chunk-stream0-00007.m4s"), Some(7));
        assert_eq!(template.match_media(video, "chunk-stream1-00007.m4s"), None);
        assert_eq!(template.match_media(video, "chunk-stream0-0000x.m4s"), None);
        let audio = &sets[1].representations[0];
        assert_eq!(audio.audio_channels.as_deref(), Some("1"));
        assert_eq!(
            audio.template.as_ref().and_then(|t| t.availability_time_offset),
            Some(0.8)
        );
        assert!(!parse(FINAL).expect("final").dynamic);
        assert!(parse(STEADY).is_ok());
    }

    #[test]
    fn first_ffmpeg_mpd_is_rewritten_for_low_latency() {
        let out = run(FIRST, &chunked());
        assert!(out.contains("<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"https://example.com:8443/ldash/time\"/>"), "{out}");
        assert!(
            out.contains(
                "<Latency target=\"1500\" min=\"1000\" max=\"3000\"/><PlaybackRate min=\"0.92\" max=\"1.08\"/>"
            ),
            "{out}"
        );
        assert!(
            out.contains("bandwidth=\"434000\""),
            "a measured bandwidth where ffmpeg wrote none: {out}"
        );
        assert!(out.contains("minimumUpdatePeriod=\"PT1S\""), "{out}");
        assert!(out.contains("timeShiftBufferDepth=\"PT10S\""), "{out}");
        assert!(out.contains("minBufferTime=\"PT1S\""), "{out}");
        assert!(
            out.contains("availabilityTimeOffset=\"0.800\" availabilityTimeComplete=\"false\""),
            "{out}"
        );
        assert_eq!(
            out.matches("availabilityTimeOffset=\"0.800\"").count(),
            2,
            "ffmpeg's own ATO kept, ours added: {out}"
        );
        let again = parse(out.as_bytes()).expect("the rewrite parses");
        assert!(again.dynamic);
        assert_eq!(run(out.as_bytes(), &chunked()), out, "rewriting twice is stable");
    }

    #[test]
    fn without_chunked_ingest_no_ato_is_invented() {
        let out = run(FIRST, &HashMap::new());
        assert_eq!(
            out.matches("availabilityTimeOffset").count(),
            1,
            "only ffmpeg's own: {out}"
        );
        assert!(
            out.contains("bandwidth=\"1000000\""),
            "a placeholder keeps the schema happy: {out}"
        );
    }

    #[test]
    fn static_mpd_is_left_as_it_is() {
        assert_eq!(run(FINAL, &chunked()).as_bytes(), FINAL);
        let service = service();
        let observed = chunked();
        let r = Rewrite {
            clock_url: "x",
            service: &service,
            observed: &observed,
            ended: None,
        };
        assert!(
            matches!(rewrite(FINAL, &r), Ok(Cow::Borrowed(_))),
            "nothing to repair: the same bytes"
        );
    }

    #[test]
    fn existing_utc_timing_and_service_description_are_handled() {
        let mpd = br#"<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="2026-01-01T00:00:00Z" minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-live:2011"><ServiceDescription id="1"><Latency target="900"/></ServiceDescription><Period id="p"><AdaptationSet><SegmentTemplate duration="2" media="$Number$.m4s"/><Representation id="a" bandwidth="1"/></AdaptationSet></Period><UTCTiming schemeIdUri="urn:mpeg:dash:utc:direct:2014" value="x"/><UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-xsdate:2014" value="y"></UTCTiming></MPD>"#;
        let out = run(mpd, &HashMap::new());
        assert_eq!(out.matches("<UTCTiming").count(), 1, "{out}");
        assert!(
            out.contains("<Latency target=\"900\"/>") && !out.contains("1500"),
            "an existing Latency is kept: {out}"
        );
        assert!(out.ends_with("<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"https://example.com:8443/ldash/time\"/></MPD>"), "{out}");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"not xml",
            b"<MPD",
            b"<Period/>",
            b"<MPD><Period></MPD>",
            b"<?xml version=\"1.0\"?>",
            b"<MPD a=\"1\" a=\"2\"/>",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
            let service = service();
            let observed = HashMap::new();
            let r = Rewrite {
                clock_url: "x",
                service: &service,
                observed: &observed,
                ended: None,
            };
            assert!(rewrite(bad, &r).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        for cut in 0..FIRST.len() {
            let _ = parse(&FIRST[..cut]);
        }
    }

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("PT1.5S"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("P0Y0M0DT0H1M0.000S"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("PT500S"), Some(Duration::from_secs(500)));
        assert_eq!(parse_duration("P1D"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1S"), None);
        assert_eq!(parse_duration("PTxS"), None);
        assert_eq!(
            parse_duration(&format!("PT{}S", "9".repeat(80))),
            None,
            "too large for a Duration: no panic"
        );
        assert_eq!(format_duration(Duration::from_millis(200)), "PT0.2S");
        assert_eq!(format_duration(Duration::from_secs(10)), "PT10S");
    }

    #[test]
    fn the_latency_target_follows_the_observed_chunk_duration() {
        let derived = ServiceDefaults {
            latency: None,
            ..service()
        };
        let text = |observed: &HashMap<(usize, usize, String), Observed>| {
            let r = Rewrite {
                clock_url: "x",
                service: &derived,
                observed,
                ended: None,
            };
            String::from_utf8(rewrite(STEADY, &r).expect("rewrite").into_owned()).expect("utf-8")
        };
        // 0.2 s chunks: four chunks and 200 ms.
        let out = text(&chunked());
        assert!(
            out.contains("<Latency target=\"1000\" min=\"500\" max=\"3000\"/>"),
            "{out}"
        );
        let out = text(&HashMap::new());
        assert!(
            out.contains("<Latency target=\"1500\" min=\"1000\" max=\"3000\"/>"),
            "{out}"
        );
        assert_eq!(
            Latency::for_chunk(Duration::from_millis(100)),
            Latency {
                target: Duration::from_millis(600),
                min: Duration::from_millis(300),
                max: Duration::from_millis(1800)
            }
        );
    }
}
