//! The MPD parser: one pass of quick-xml's reader over the manifest builds the model, resolving
//! SegmentTemplate inheritance (Period, AdaptationSet, Representation) and the attributes a
//! Representation takes from its AdaptationSet. The same pass feeds the rewriter's [`Recorder`],
//! which notes the byte positions the low-latency rewrite edits, so serving the MPD never reads the
//! XML again. What the rewrite changes is decided there, not here.

use std::collections::HashMap;
use std::ops::Range;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use super::rewrite::Recorder;
use super::xsd::{parse_duration, parse_time};
use super::{xml, AdaptationSet, Mpd, MpdError, Period, Representation, SegmentTemplate};

/// The UTF-8 byte order mark, which quick-xml skips without counting it in its positions.
const BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

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

/// The attributes of an element as (local name, unescaped value).
pub(crate) fn attributes(element: &BytesStart<'_>) -> Result<HashMap<String, String>, MpdError> {
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

pub(crate) fn local(element: &BytesStart<'_>) -> String {
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

/// Reads the model of an MPD, with the positions its low-latency rewrite edits.
pub fn parse(mpd: &[u8]) -> Result<Mpd, MpdError> {
    let (mut model, mut recorder) = read(mpd, None)?;
    if recorder.dynamic() != model.dynamic {
        // A later root element changed the type (not a valid MPD, yet readable, and the rewrite has
        // always treated the whole document by the type the model ends with): record again.
        (model, recorder) = read(mpd, Some(model.dynamic))?;
    }
    model.edits = Some(recorder.finish(&model));
    Ok(model)
}

/// One pass over `mpd`: the model, and the rewrite's positions recorded as if the MPD were `dynamic`
/// (or as its first root element says, when None).
fn read(mpd: &[u8], dynamic: Option<bool>) -> Result<(Mpd, Recorder<'_>), MpdError> {
    let mut reader = Reader::from_reader(mpd);
    let bom = if mpd.starts_with(BOM) { BOM.len() } else { 0 };
    let mut recorder = Recorder::new(mpd, bom, dynamic);
    let mut model = Mpd::default();
    let mut stack: Vec<String> = Vec::new();
    let mut levels = Levels::default();
    let mut root_seen = false;
    loop {
        let start = offset(&reader, bom);
        let event = reader.read_event().map_err(xml)?;
        let span = start..offset(&reader, bom);
        let (element, empty) = match &event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                if let Some(name) = stack.pop() {
                    end_element(&name, &mut model, &mut levels);
                    recorder.end(&name, stack.len(), &event, span);
                }
                continue;
            }
            Event::Eof => break,
            _ => {
                recorder.other(&event, span);
                continue;
            }
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
        let read = Element {
            start: element,
            name: &name,
            attrs: &attrs,
            span,
            empty,
        };
        recorder.element(&read, &stack, model.dynamic);
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
    Ok((model, recorder))
}

/// Where the reader is in the input: its own position counts from after a byte order mark.
fn offset(reader: &Reader<&[u8]>, bom: usize) -> usize {
    usize::try_from(reader.buffer_position()).map_or(usize::MAX, |at| at.saturating_add(bom))
}

/// An element's start tag as the parser read it, for the rewrite's [`Recorder`].
pub(crate) struct Element<'t> {
    /// The tag as quick-xml read it.
    pub start: &'t BytesStart<'t>,
    /// Local name.
    pub name: &'t str,
    /// Attributes by local name, values unescaped.
    pub attrs: &'t HashMap<String, String>,
    /// The tag's bytes in the input, `<` to `>`.
    pub span: Range<usize>,
    /// `<.../>`: the element ends with its start tag.
    pub empty: bool,
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
            model.media_presentation_duration = a.get("mediaPresentationDuration").and_then(|d| parse_duration(d));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const FIRST: &[u8] = include_bytes!("../../../tests/fixtures/ffmpeg/first.mpd");
    const STEADY: &[u8] = include_bytes!("../../../tests/fixtures/ffmpeg/steady.mpd");
    const FINAL: &[u8] = include_bytes!("../../../tests/fixtures/ffmpeg/final.mpd");

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
}
