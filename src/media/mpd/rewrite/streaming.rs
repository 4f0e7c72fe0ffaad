//! The streaming rewriter ldash served MPDs with before [`Mpd::rewrite`](super::super::Mpd::rewrite)
//! spliced recorded positions: on every GET it parsed the MPD, scanned it for its ServiceDescription,
//! then streamed it from quick-xml's reader to its writer, applying the low-latency rules on the
//! way. Kept unchanged, for tests only, as the reference the splice must match byte for byte.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use quick_xml::events::{BytesEnd, BytesStart, Event};
use quick_xml::{Reader, Writer};

use super::Rewrite;
use crate::media::mpd::parse::{attributes, local};
use crate::media::mpd::{format_duration, parse, parse_duration, xml};
use crate::media::mpd::{Latency, Mpd, MpdError, Observed, SegmentTemplate};

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

/// Rewrites an MPD for low latency, as ldash did before splicing. Returns the input unchanged
/// when nothing needed changing.
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
