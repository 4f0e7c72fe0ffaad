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

use super::parse::local;
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

/// The view `clip` of the MPD `bytes` (as served), whose model is `mpd`, at `now`.
pub fn view(bytes: &[u8], mpd: &Mpd, clip: &Clip, now: SystemTime) -> Result<Vec<u8>, ViewError> {
    let plan = plan(mpd, clip, now)?;
    write(bytes, mpd, &plan)
}

/// A representative segment duration of a Period: its first template with one.
fn period_segment(mpd: &Mpd, period: usize) -> Option<(Duration, bool)> {
    let templates = mpd
        .periods
        .get(period)?
        .adaptation_sets
        .iter()
        .flat_map(|a| &a.representations);
    let mut timeline = false;
    for rep in templates {
        let Some(template) = rep.template.as_ref() else {
            continue;
        };
        if template.has_timeline {
            timeline = true;
            continue;
        }
        if let Some(d) = template.segment_duration() {
            return Some((d, false));
        }
    }
    timeline.then_some((Duration::ZERO, true))
}

fn plan(mpd: &Mpd, clip: &Clip, now: SystemTime) -> Result<Plan, ViewError> {
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
        };
        if !outside {
            let (segment, timeline) = period_segment(mpd, i).ok_or(ViewError::Unsupported(
                "a Period has no SegmentTemplate with a duration",
            ))?;
            if from > period_start {
                if timeline {
                    return Err(ViewError::Unsupported(
                        "the start falls in a Period with a SegmentTimeline, which a view cannot cut yet",
                    ));
                }
                let into = from - period_start;
                let whole = (into.as_nanos() / segment.as_nanos().max(1)) as u32;
                plan.cut = segment.saturating_mul(whole);
            }
            let first = period_start + plan.cut;
            let base = *base.get_or_insert(first);
            plan.start = first.saturating_sub(base);
            // Where the view's last segment of this Period ends: whole segments up to the end.
            let stop = period_end.min(end);
            view_end = if timeline || segment.is_zero() {
                stop
            } else {
                let span = stop.saturating_sub(first);
                let segments = span.as_nanos().div_ceil(segment.as_nanos()) as u32;
                first + segment.saturating_mul(segments)
            };
        }
        periods.push(plan);
    }
    let base = base.ok_or(ViewError::Empty)?;
    if view_end <= base {
        return Err(ViewError::Empty);
    }
    let start = ast.checked_add(base).ok_or(ViewError::Empty)?;
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

fn write(bytes: &[u8], mpd: &Mpd, plan: &Plan) -> Result<Vec<u8>, ViewError> {
    let mut reader = Reader::from_reader(bytes);
    let mut writer = Writer::new(Vec::with_capacity(bytes.len()));
    let (mut period, mut set, mut rep) = (None::<usize>, None::<usize>, None::<usize>);
    let (mut periods_seen, mut sets_seen, mut reps_seen) = (0usize, 0usize, 0usize);
    let mut depth = 0usize;
    // Inside a dropped Period: the depth of its start.
    let mut dropping: Option<usize> = None;
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
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if dropping == Some(depth) {
                    dropping = None;
                    continue;
                }
                if dropping.is_some() {
                    continue;
                }
                match depth {
                    1 => period = None,
                    2 => set = None,
                    3 => rep = None,
                    _ => {}
                }
                writer.write_event(event).map_err(xml)?;
                continue;
            }
            _ => (None, false),
        };
        let Some(element) = element else {
            if dropping.is_none() {
                writer.write_event(event).map_err(xml)?;
            }
            continue;
        };
        let at = depth;
        if !empty {
            depth += 1;
        }
        if dropping.is_some() {
            continue;
        }
        let name = local(&element);
        let out = match (at, name.as_str()) {
            (0, "MPD") => {
                let mut set_attrs = vec![("availabilityStartTime", format_time(plan.start))];
                match (plan.static_duration, plan.depth) {
                    (Some(duration), _) => {
                        set_attrs.push(("type", "static".to_owned()));
                        set_attrs.push(("mediaPresentationDuration", format_duration(duration)));
                    }
                    (None, Some(depth)) => {
                        // The encoder's depth is kept where it reaches further back.
                        let keep = mpd.time_shift_buffer_depth.is_some_and(|d| d >= depth);
                        if !keep {
                            set_attrs.push(("timeShiftBufferDepth", format_duration(depth)));
                        }
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
                (Some(p), Some(s)) => segment_template(&element, mpd, plan, (p, s, rep))?,
                _ => None,
            },
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

/// A SegmentTemplate moved on by the segments cut off its Period.
fn segment_template(
    element: &BytesStart<'_>,
    mpd: &Mpd,
    plan: &Plan,
    (period, set, rep): (usize, usize, Option<usize>),
) -> Result<Option<BytesStart<'static>>, MpdError> {
    let cut = plan.periods.get(period).map_or(Duration::ZERO, |p| p.cut);
    let Some(template) = template_at(mpd, period, set, rep) else {
        return Ok(None);
    };
    let complete: &[&str] = if plan.static_duration.is_some() {
        &["availabilityTimeComplete", "availabilityTimeOffset"]
    } else {
        &[]
    };
    let Some(segment) = template.segment_duration().filter(|_| !cut.is_zero()) else {
        return Ok(if complete.is_empty() {
            None
        } else {
            Some(with_attributes(element, &[], complete)?)
        });
    };
    let skipped = (cut.as_nanos() / segment.as_nanos().max(1)) as u64;
    let duration = template.duration.unwrap_or(0);
    let set = [
        ("startNumber", (template.start_number + skipped).to_string()),
        (
            "presentationTimeOffset",
            (template.presentation_time_offset + skipped * duration).to_string(),
        ),
    ];
    Ok(Some(with_attributes(element, &set, complete)?))
}

/// xs:dateTime in UTC, to the millisecond.
fn format_time(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time.max(std::time::UNIX_EPOCH)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::mpd::parse;

    const TWO_PERIODS: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" minimumUpdatePeriod="PT1S"
  availabilityStartTime="2026-01-01T00:00:00Z" timeShiftBufferDepth="PT4S" minBufferTime="PT1S">
  <Period id="0" start="PT0S"><AdaptationSet contentType="video">
    <Representation id="0" bandwidth="1000">
      <SegmentTemplate timescale="1000" duration="2000" startNumber="1" availabilityTimeComplete="false"
        initialization="init-$RepresentationID$.m4s" media="a-$RepresentationID$-$Number$.m4s"/>
    </Representation></AdaptationSet>
    <AdaptationSet contentType="audio"><SegmentTemplate timescale="48000" duration="96000" startNumber="1"
        initialization="init-$RepresentationID$.m4s" media="a-$RepresentationID$-$Number$.m4s"/>
      <Representation id="1" bandwidth="100"/></AdaptationSet></Period>
  <Period id="1" start="PT10S"><AdaptationSet contentType="video">
    <Representation id="0" bandwidth="1000">
      <SegmentTemplate timescale="1000" duration="2000" startNumber="6" presentationTimeOffset="10000"
        initialization="init-$RepresentationID$.m4s" media="b-$RepresentationID$-$Number$.m4s"/>
    </Representation></AdaptationSet></Period>
</MPD>"#;

    fn at(seconds: u64) -> SystemTime {
        humantime::parse_rfc3339("2026-01-01T00:00:00Z").expect("a time") + Duration::from_secs(seconds)
    }

    fn run(from: u64, to: Option<u64>, now: u64) -> Result<String, ViewError> {
        let mpd = parse(TWO_PERIODS.as_bytes()).expect("the MPD parses");
        let clip = Clip {
            from: at(from),
            to: to.map(at),
        };
        let out = view(TWO_PERIODS.as_bytes(), &mpd, &clip, at(now))?;
        Ok(String::from_utf8(out).expect("UTF-8"))
    }

    #[test]
    fn a_past_interval_is_a_static_mpd_of_whole_segments() {
        // 5 s to 11 s: segments 3 (4-6 s) and 4-5 of period 0, and segment 6 (10-12 s) of period 1.
        let out = run(5, Some(11), 100).expect("a view");
        let mpd = parse(out.as_bytes()).expect("the view parses");
        assert!(!mpd.dynamic, "{out}");
        assert_eq!(mpd.availability_start, Some(at(4)), "re-based on its first segment");
        assert_eq!(mpd.media_presentation_duration, Some(Duration::from_secs(8)), "{out}");
        assert_eq!(mpd.minimum_update_period, None);
        assert_eq!(mpd.time_shift_buffer_depth, None);
        assert_eq!(mpd.periods.len(), 2);
        assert_eq!(mpd.periods[0].start, Some(Duration::ZERO));
        assert_eq!(mpd.periods[1].start, Some(Duration::from_secs(6)));
        let templates: Vec<(u64, u64)> = mpd
            .representations()
            .filter_map(|r| r.template.as_ref())
            .map(|t| (t.start_number, t.presentation_time_offset))
            .collect();
        assert_eq!(templates, vec![(3, 4000), (3, 192_000), (6, 10_000)], "{out}");
        assert!(
            !out.contains("availabilityTimeComplete"),
            "everything is complete: {out}"
        );
        assert!(
            out.contains("media=\"a-$RepresentationID$-$Number$.m4s\""),
            "the rest as served: {out}"
        );
    }

    #[test]
    fn a_start_over_view_follows_the_live_edge_from_its_first_segment() {
        let out = run(13, None, 100).expect("a view");
        let mpd = parse(out.as_bytes()).expect("the view parses");
        assert!(mpd.dynamic, "{out}");
        assert_eq!(mpd.periods.len(), 1, "period 0 ended before the start: {out}");
        assert_eq!(mpd.availability_start, Some(at(12)));
        assert_eq!(mpd.periods[0].start, Some(Duration::ZERO));
        let template = mpd
            .representations()
            .next()
            .and_then(|r| r.template.clone())
            .expect("a template");
        assert_eq!((template.start_number, template.presentation_time_offset), (7, 12_000));
        assert_eq!(
            mpd.time_shift_buffer_depth,
            Some(Duration::from_secs(88)),
            "back to its start"
        );
        assert_eq!(mpd.minimum_update_period, Some(Duration::from_secs(1)), "still live");
        // An end still to come: live until then.
        let out = run(13, Some(200), 100).expect("a view");
        assert!(parse(out.as_bytes()).expect("parses").dynamic, "{out}");
    }

    #[test]
    fn views_outside_the_stream_are_refused() {
        assert_eq!(run(150, None, 100), Err(ViewError::Empty), "after the live edge");
        let mut mpd = parse(TWO_PERIODS.as_bytes()).expect("parses");
        mpd.availability_start = None;
        let clip = Clip { from: at(1), to: None };
        assert!(matches!(
            view(TWO_PERIODS.as_bytes(), &mpd, &clip, at(100)),
            Err(ViewError::Unsupported(_))
        ));
    }
}
