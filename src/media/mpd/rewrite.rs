//! The low-latency rewriter: it streams a manifest from quick-xml's reader to its writer, keeping
//! every element, attribute, comment and whitespace it does not change, and applies the low-latency
//! rules: a UTCTiming to ldash's clock, availabilityTimeOffset from the observed chunking, a
//! ServiceDescription, and repairs of what ffmpeg writes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use quick_xml::events::{BytesEnd, BytesStart, Event};
use quick_xml::{Reader, Writer};

use super::parse::{attributes, local};
use super::{format_duration, parse, parse_duration, xml};
use super::{Latency, Mpd, MpdError, Observed, SegmentTemplate, ServiceDefaults};

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

    const FIRST: &[u8] = include_bytes!("../../../tests/fixtures/ffmpeg/first.mpd");
    const STEADY: &[u8] = include_bytes!("../../../tests/fixtures/ffmpeg/steady.mpd");
    const FINAL: &[u8] = include_bytes!("../../../tests/fixtures/ffmpeg/final.mpd");

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
