//! Time views of an MPD (`?start=` and `?end=`, docs/dvr.md), cut at segment boundaries:
//! start-over, a live MPD whose first Period starts at the segment playing at the start and that
//! follows the live edge, and catch-up, a static (video-on-demand) MPD of a past interval.
//!
//! The served MPD is streamed through once more: Periods wholly outside the interval are dropped,
//! the first one kept starts at its first segment in the interval (`startNumber` and
//! `presentationTimeOffset` moved on by the segments cut off), and the presentation is re-based to
//! start there (availabilityStartTime moved by as much), so a player's timeline starts at the view's
//! start. Works on `$Number$` templates with a `duration` (ffmpeg's `-use_timeline 0`, the
//! packager's live run); a Period with a SegmentTimeline is kept or dropped whole, never cut. Pure:
//! the times are arguments.

use std::time::{Duration, SystemTime};

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, Writer};

use super::parse::{attributes, local};
use super::{format_duration, xml, Mpd, MpdError, SegmentTemplate};
use crate::media::hls::Clip;

/// Why a view cannot be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// No segment of the stream falls in the interval.
    #[error("the stream has no segment in that interval")]
    Empty,
    /// The MPD does not say where its segments are in time.
    #[error("{0}")]
    Unsupported(&'static str),
    /// The MPD could not be read.
    #[error(transparent)]
    Mpd(#[from] MpdError),
}

/// What happens to one Period.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PeriodPlan {
    /// Dropped whole.
    dropped: bool,
    /// Its new start, on the view's timeline.
    start: Duration,
    /// Time cut off its beginning (whole segments).
    cut: Duration,
    /// A static view: where it ends, from the Period's start (a timeline's segments past it go).
    end: Option<Duration>,
}

/// What the view does, decided from the model.
#[derive(Debug)]
struct Plan {
    periods: Vec<PeriodPlan>,
    /// availabilityStartTime of the view.
    start: SystemTime,
    /// Static: the view's duration (a past interval, or an ended stream).
    static_duration: Option<Duration>,
    /// Dynamic: how far back the view reaches now.
    depth: Option<Duration>,
}

/// The view `clip` of the MPD `bytes` (as served), whose model is `mpd`, at `now`; `kept`: when
/// the oldest segment still stored starts (a view reaches no further back; None: what the MPD lists).
pub fn view(
    bytes: &[u8],
    mpd: &Mpd,
    clip: &Clip,
    kept: Option<SystemTime>,
    now: SystemTime,
) -> Result<Vec<u8>, ViewError> {
    let timelines = timelines(bytes)?;
    let clip = Clip {
        from: kept.map_or(clip.from, |kept| clip.from.max(kept)),
        to: clip.to,
    };
    if clip.to.is_some_and(|to| to <= clip.from) {
        return Err(ViewError::Empty);
    }
    let plan = plan(mpd, &timelines, &clip, now)?;
    write(bytes, mpd, &plan, &timelines)
}

/// The last time an MPD can write (xs:dateTime up to the year 9999).
const LAST_TIME: Duration = Duration::from_secs(253_402_300_799);

/// Most segments a SegmentTimeline may expand to (an uploaded MPD's `r` must not make a view
/// allocate without bound): a day of 0.1 s segments.
const MAX_TIMELINE: usize = 864_000;

/// One S element: t, d, r.
type S = (Option<u64>, u64, i64);

/// The SegmentTimeline of one SegmentTemplate element (in document order), with its Period.
#[derive(Debug, Default)]
struct Timeline {
    period: Option<usize>,
    entries: Vec<S>,
}

impl Timeline {
    /// Its segments as (media time, duration), at most [`MAX_TIMELINE`].
    fn segments(&self) -> Result<Vec<(u64, u64)>, ViewError> {
        let mut out = Vec::new();
        let mut t = 0u64;
        for &(start, d, r) in &self.entries {
            t = start.unwrap_or(t);
            // r = -1 (up to the next S or the Period's end) is taken as once: the packager and
            // ffmpeg write counts.
            for _ in 0..=r.max(0) {
                if out.len() >= MAX_TIMELINE {
                    return Err(ViewError::Unsupported("a SegmentTimeline lists too many segments"));
                }
                out.push((t, d));
                t = t.saturating_add(d);
            }
        }
        Ok(out)
    }
}

/// Every SegmentTemplate's timeline, in document order (empty for a template without one).
fn timelines(bytes: &[u8]) -> Result<Vec<Timeline>, MpdError> {
    let mut reader = Reader::from_reader(bytes);
    let mut out: Vec<Timeline> = Vec::new();
    let (mut depth, mut periods) = (0usize, 0usize);
    let mut period = None;
    loop {
        let (element, empty) = match reader.read_event().map_err(xml)? {
            Event::Eof => return Ok(out),
            Event::Start(e) => (e.into_owned(), false),
            Event::Empty(e) => (e.into_owned(), true),
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 1 {
                    period = None;
                }
                continue;
            }
            _ => continue,
        };
        let name = local(&element);
        if depth == 1 && name == "Period" {
            period = Some(periods);
            periods += 1;
        } else if name == "SegmentTemplate" {
            out.push(Timeline {
                period,
                entries: Vec::new(),
            });
        } else if name == "S" {
            let a = attributes(&element)?;
            let number = |k: &str| a.get(k).and_then(|v| v.trim().parse::<u64>().ok());
            let r = a.get("r").and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(0);
            if let (Some(timeline), Some(d)) = (out.last_mut(), number("d")) {
                timeline.entries.push((number("t"), d, r));
            }
        }
        if !empty {
            depth += 1;
        }
    }
}

/// A representative segment duration of a Period: its first template's (with a duration, or the
/// first segment of its SegmentTimeline).
fn period_segment(mpd: &Mpd, timelines: &[Timeline], period: usize) -> Option<Duration> {
    let reps = mpd
        .periods
        .get(period)?
        .adaptation_sets
        .iter()
        .flat_map(|a| &a.representations);
    for rep in reps {
        let Some(template) = rep.template.as_ref() else {
            continue;
        };
        if template.has_timeline {
            let d = timelines
                .iter()
                .find(|t| t.period == Some(period) && !t.entries.is_empty())
                .map(|t| t.entries[0].1)?;
            let seconds = d as f64 / template.timescale.max(1) as f64;
            return Duration::try_from_secs_f64(seconds).ok().filter(|d| !d.is_zero());
        }
        if let Some(d) = template.segment_duration() {
            return Some(d);
        }
    }
    None
}

fn plan(mpd: &Mpd, timelines: &[Timeline], clip: &Clip, now: SystemTime) -> Result<Plan, ViewError> {
    let ast = mpd.availability_start.ok_or(ViewError::Unsupported(
        "the MPD has no availabilityStartTime: its segments have no time",
    ))?;
    let since = |time: SystemTime| time.duration_since(ast).unwrap_or_default();
    let from = since(clip.from);
    // The stream's end so far: the live edge, or a static MPD's duration.
    let live_end = match mpd.media_presentation_duration.filter(|_| !mpd.dynamic) {
        Some(duration) => duration,
        None => since(now),
    };
    let end = match clip.to {
        Some(to) => since(to).min(live_end),
        None => live_end,
    };
    // Past intervals (and ended streams) are static; the rest follows the live edge.
    let fixed = !mpd.dynamic || clip.to.is_some_and(|to| to <= now);
    let starts: Vec<Duration> = mpd.periods.iter().map(|p| p.start.unwrap_or_default()).collect();
    let mut periods = Vec::with_capacity(starts.len());
    let mut base = None;
    let mut view_end = Duration::ZERO;
    for (i, &period_start) in starts.iter().enumerate() {
        let period_end = starts.get(i + 1).copied().unwrap_or(Duration::MAX);
        let outside = period_end <= from || period_start >= end;
        let mut plan = PeriodPlan {
            dropped: outside,
            start: Duration::ZERO,
            cut: Duration::ZERO,
            end: None,
        };
        if !outside {
            let segment = period_segment(mpd, timelines, i).ok_or(ViewError::Unsupported(
                "a Period has no SegmentTemplate with a duration or a timeline",
            ))?;
            if from > period_start {
                let into = from - period_start;
                let whole = u32::try_from(into.as_nanos() / segment.as_nanos().max(1)).unwrap_or(u32::MAX);
                plan.cut = segment.saturating_mul(whole);
            }
            let first = period_start.saturating_add(plan.cut);
            let base = *base.get_or_insert(first);
            plan.start = first.saturating_sub(base);
            // Where the view's last segment of this Period ends: whole segments up to the end.
            let stop = period_end.min(end);
            let span = stop.saturating_sub(first);
            let segments = u32::try_from(span.as_nanos().div_ceil(segment.as_nanos().max(1))).unwrap_or(u32::MAX);
            view_end = first.saturating_add(segment.saturating_mul(segments));
            plan.end = fixed.then(|| view_end.saturating_sub(period_start));
        }
        periods.push(plan);
    }
    let base = base.ok_or(ViewError::Empty)?;
    if view_end <= base {
        return Err(ViewError::Empty);
    }
    let start = ast
        .checked_add(base)
        .filter(|t| t.duration_since(std::time::UNIX_EPOCH).is_ok_and(|d| d <= LAST_TIME))
        .ok_or(ViewError::Unsupported("the view would start after the year 9999"))?;
    Ok(Plan {
        periods,
        start,
        static_duration: fixed.then(|| view_end - base),
        depth: (!fixed).then(|| live_end.saturating_sub(base)),
    })
}

/// `element` with the attributes in `set` (replacing any of the same name) and without those in
/// `remove`.
fn with_attributes(
    element: &BytesStart<'_>,
    set: &[(&str, String)],
    remove: &[&str],
) -> Result<BytesStart<'static>, MpdError> {
    let mut out = BytesStart::new(element.name().as_ref().to_owned());
    for attribute in element.attributes() {
        let attribute = attribute.map_err(xml)?;
        let key = attribute.key.as_ref();
        if remove.contains(&key) || set.iter().any(|(k, _)| *k == key) {
            continue;
        }
        // As written: its value is escaped already.
        out.push_attribute(attribute);
    }
    for (key, value) in set {
        out.push_attribute((*key, value.as_str()));
    }
    Ok(out)
}

/// The template in force for a SegmentTemplate element met at (period, set, representation index
/// or the set's first).
fn template_at(mpd: &Mpd, period: usize, set: usize, rep: Option<usize>) -> Option<&SegmentTemplate> {
    let set = mpd.periods.get(period)?.adaptation_sets.get(set)?;
    set.representations.get(rep.unwrap_or(0))?.template.as_ref()
}

fn write(bytes: &[u8], mpd: &Mpd, plan: &Plan, timelines: &[Timeline]) -> Result<Vec<u8>, ViewError> {
    let mut reader = Reader::from_reader(bytes);
    let mut writer = Writer::new(Vec::with_capacity(bytes.len()));
    let (mut period, mut set, mut rep) = (None::<usize>, None::<usize>, None::<usize>);
    let (mut periods_seen, mut sets_seen, mut reps_seen) = (0usize, 0usize, 0usize);
    let mut templates_seen = 0usize;
    let mut depth = 0usize;
    // Inside a dropped Period: the depth of its start.
    let mut dropping: Option<usize> = None;
    // Inside a SegmentTemplate whose timeline is cut: the S elements to write in place of its own.
    let mut cut: Option<Vec<S>> = None;
    // Inside that template's SegmentTimeline: its own S elements are skipped.
    let mut skipping = false;
    let root_remove: &[&str] = if plan.static_duration.is_some() {
        &[
            "minimumUpdatePeriod",
            "timeShiftBufferDepth",
            "mediaPresentationDuration",
        ]
    } else {
        &[]
    };
    loop {
        let event = reader.read_event().map_err(xml)?;
        let (element, empty) = match &event {
            Event::Eof => break,
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                if dropping == Some(depth) {
                    dropping = None;
                    continue;
                }
                let name = e.local_name();
                if dropping.is_some() || (skipping && name.as_ref() == "S") {
                    continue;
                }
                match (name.as_ref(), depth) {
                    ("SegmentTimeline", _) => skipping = false,
                    ("SegmentTemplate", _) => cut = None,
                    (_, 1) => period = None,
                    (_, 2) => set = None,
                    (_, 3) => rep = None,
                    _ => {}
                }
                writer.write_event(event).map_err(xml)?;
                continue;
            }
            _ => (None, false),
        };
        let Some(element) = element else {
            if dropping.is_none() && !skipping {
                writer.write_event(event).map_err(xml)?;
            }
            continue;
        };
        let at = depth;
        if !empty {
            depth += 1;
        }
        let name = local(&element);
        let template_index = (name == "SegmentTemplate").then(|| {
            templates_seen += 1;
            templates_seen - 1
        });
        if dropping.is_some() || (skipping && name == "S") {
            continue;
        }
        let out = match (at, name.as_str()) {
            (0, "MPD") => {
                let mut set_attrs = vec![("availabilityStartTime", format_time(plan.start))];
                match (plan.static_duration, plan.depth) {
                    (Some(duration), _) => {
                        set_attrs.push(("type", "static".to_owned()));
                        set_attrs.push(("mediaPresentationDuration", format_duration(duration)));
                    }
                    (None, Some(depth)) => {
                        // Back to the view's start, never before its first Period.
                        set_attrs.push(("timeShiftBufferDepth", format_duration(depth)));
                    }
                    (None, None) => {}
                }
                let remove: Vec<&str> = root_remove
                    .iter()
                    .copied()
                    .filter(|r| !set_attrs.iter().any(|(k, _)| k == r))
                    .collect();
                Some(with_attributes(&element, &set_attrs, &remove)?)
            }
            (1, "Period") => {
                let index = periods_seen;
                periods_seen += 1;
                sets_seen = 0;
                match plan.periods.get(index) {
                    Some(p) if p.dropped => {
                        if !empty {
                            dropping = Some(at);
                        }
                        continue;
                    }
                    Some(p) => {
                        period = Some(index);
                        Some(with_attributes(
                            &element,
                            &[("start", format_duration(p.start))],
                            &["duration"],
                        )?)
                    }
                    None => None,
                }
            }
            (2, "AdaptationSet") if period.is_some() => {
                set = Some(sets_seen);
                sets_seen += 1;
                reps_seen = 0;
                None
            }
            (3, "Representation") if set.is_some() => {
                rep = Some(reps_seen);
                reps_seen += 1;
                None
            }
            (_, "SegmentTemplate") => match (period, set) {
                (Some(p), Some(s)) => {
                    let timeline = template_index.and_then(|k| timelines.get(k));
                    let (element, entries) = segment_template(&element, mpd, plan, (p, s, rep), timeline)?;
                    if !empty {
                        cut = entries;
                    }
                    element
                }
                (Some(_), None) => {
                    return Err(ViewError::Unsupported("a SegmentTemplate at Period level"));
                }
                _ => None,
            },
            // A reload through the encoder's Location would leave the view.
            (1, "Location" | "PatchLocation") => {
                if !empty {
                    dropping = Some(at);
                }
                continue;
            }
            (_, "SegmentTimeline") if cut.is_some() && !empty => {
                writer.write_event(Event::Start(element)).map_err(xml)?;
                for &(t, d, r) in cut.iter().flatten() {
                    let mut s = BytesStart::new("S");
                    if let Some(t) = t {
                        s.push_attribute(("t", t.to_string().as_str()));
                    }
                    s.push_attribute(("d", d.to_string().as_str()));
                    if r > 0 {
                        s.push_attribute(("r", r.to_string().as_str()));
                    }
                    writer.write_event(Event::Empty(s)).map_err(xml)?;
                }
                skipping = true;
                continue;
            }
            _ => None,
        };
        if empty && at > 0 && name == "Representation" {
            rep = None;
        }
        let element = out.unwrap_or(element);
        let event = if empty {
            Event::Empty(element)
        } else {
            Event::Start(element)
        };
        writer.write_event(event).map_err(xml)?;
    }
    Ok(writer.into_inner())
}

/// A SegmentTemplate moved on by the segments cut off its Period (None: as served), with the S
/// elements its SegmentTimeline keeps when it has one that is cut.
fn segment_template(
    element: &BytesStart<'_>,
    mpd: &Mpd,
    plan: &Plan,
    (period, set, rep): (usize, usize, Option<usize>),
    timeline: Option<&Timeline>,
) -> Result<(Option<BytesStart<'static>>, Option<Vec<S>>), ViewError> {
    let Some(p) = plan.periods.get(period) else {
        return Ok((None, None));
    };
    let Some(template) = template_at(mpd, period, set, rep) else {
        return Ok((None, None));
    };
    let complete: &[&str] = if plan.static_duration.is_some() {
        &["availabilityTimeComplete", "availabilityTimeOffset"]
    } else {
        &[]
    };
    if let Some(timeline) = timeline.filter(|t| !t.entries.is_empty()) {
        if p.cut.is_zero() && p.end.is_none() {
            return Ok((Some(with_attributes(element, &[], complete)?), None));
        }
        let (start_number, offset, entries) = cut_timeline(timeline, template, p)?;
        let set = [
            ("startNumber", start_number.to_string()),
            ("presentationTimeOffset", offset.to_string()),
        ];
        return Ok((Some(with_attributes(element, &set, complete)?), Some(entries)));
    }
    let Some(segment) = template.segment_duration().filter(|_| !p.cut.is_zero()) else {
        let element = (!complete.is_empty())
            .then(|| with_attributes(element, &[], complete))
            .transpose()?;
        return Ok((element, None));
    };
    // The Period's new start is the media time PTO + cut in every representation; its first
    // segment is the one playing then (with durations unlike the Period's, it starts a little
    // before).
    let skipped = u64::try_from(p.cut.as_nanos() / segment.as_nanos().max(1)).unwrap_or(u64::MAX);
    let set = [
        ("startNumber", template.start_number.saturating_add(skipped).to_string()),
        (
            "presentationTimeOffset",
            template
                .presentation_time_offset
                .saturating_add(media_time(p.cut, template.timescale))
                .to_string(),
        ),
    ];
    Ok((Some(with_attributes(element, &set, complete)?), None))
}

/// The segments of `timeline` that the Period plan `p` keeps: the template's new startNumber and
/// presentationTimeOffset (the media time at the Period's new start), and its S elements.
fn cut_timeline(
    timeline: &Timeline,
    template: &SegmentTemplate,
    p: &PeriodPlan,
) -> Result<(u64, u64, Vec<S>), ViewError> {
    let media = |d: Duration| media_time(d, template.timescale);
    let from = template.presentation_time_offset.saturating_add(media(p.cut));
    let until = p
        .end
        .map(|end| template.presentation_time_offset.saturating_add(media(end)));
    let segments = timeline.segments()?;
    let first = segments
        .iter()
        .position(|(t, d)| t.saturating_add(*d) > from)
        .unwrap_or(segments.len());
    let mut entries: Vec<S> = Vec::new();
    for &(t, d) in segments[first..]
        .iter()
        .take_while(|(t, _)| until.is_none_or(|u| *t < u))
    {
        match entries.last_mut() {
            Some((Some(t0), d0, r)) if *d0 == d && t0.saturating_add(d0.saturating_mul(*r as u64 + 1)) == t => *r += 1,
            _ => entries.push((Some(t), d, 0)),
        }
    }
    Ok((template.start_number.saturating_add(first as u64), from, entries))
}

/// `d` in `timescale` units.
fn media_time(d: Duration, timescale: u64) -> u64 {
    let nanos = d.as_nanos().saturating_mul(u128::from(timescale.max(1)));
    u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX)
}

/// xs:dateTime in UTC, to the millisecond (the plan keeps times within what it can print).
fn format_time(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time.max(std::time::UNIX_EPOCH)).to_string()
}

#[cfg(test)]
mod tests;
