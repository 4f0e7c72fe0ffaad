//! Time views over a two-Period MPD: cut, re-based, static or live, timelines, and mangled input.

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
    let out = view(TWO_PERIODS.as_bytes(), &mpd, &clip, None, at(now))?;
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
fn a_timeline_period_is_cut_at_its_segments() {
    // Period 0 as the packager writes an ended run: four 2 s segments, then the encoder away.
    let timeline = TWO_PERIODS.replacen(
        r#"duration="2000" startNumber="1" availabilityTimeComplete="false"
    initialization="init-$RepresentationID$.m4s" media="a-$RepresentationID$-$Number$.m4s"/>"#,
        r#"startNumber="1" initialization="init-$RepresentationID$.m4s" media="a-$RepresentationID$-$Number$.m4s">
    <SegmentTimeline><S t="0" d="2000" r="3"/></SegmentTimeline></SegmentTemplate>"#,
        1,
    );
    assert_ne!(timeline, TWO_PERIODS);
    let mpd = parse(timeline.as_bytes()).expect("parses");
    let clip = Clip {
        from: at(5),
        to: Some(at(11)),
    };
    let out = view(timeline.as_bytes(), &mpd, &clip, None, at(100)).expect("a view");
    let out = String::from_utf8(out).expect("UTF-8");
    assert!(
        out.contains(r#"startNumber="3" presentationTimeOffset="4000">"#)
            && out.contains(r#"<SegmentTimeline><S t="4000" d="2000" r="1"/></SegmentTimeline>"#),
        "segments 3 and 4 of the timeline: {out}"
    );
    let cut = parse(out.as_bytes()).expect("the view parses");
    assert_eq!(cut.periods[1].start, Some(Duration::from_secs(6)));
    assert_eq!(cut.media_presentation_duration, Some(Duration::from_secs(8)));
    // Ending inside the timeline: segment 3 only.
    let clip = Clip {
        from: at(5),
        to: Some(at(6)),
    };
    let out = String::from_utf8(view(timeline.as_bytes(), &mpd, &clip, None, at(100)).expect("a view")).expect("UTF-8");
    assert!(out.contains(r#"<S t="4000" d="2000"/></SegmentTimeline>"#), "{out}");
    assert_eq!(parse(out.as_bytes()).expect("parses").periods.len(), 1, "{out}");
    // A huge r is refused, not expanded.
    let huge = timeline.replace(r#"r="3""#, r#"r="999999999""#);
    let mpd = parse(huge.as_bytes()).expect("parses");
    assert!(matches!(
        view(huge.as_bytes(), &mpd, &clip, None, at(100)),
        Err(ViewError::Unsupported(_))
    ));
}

#[test]
fn mangled_mpds_give_a_view_or_a_reason_never_a_panic() {
    // A small fuzzer without a crate: bytes of the test MPD (with its timeline) overwritten
    // from a fixed sequence, digits among them so that numbers change rather than only break.
    let base = TWO_PERIODS.replacen(r#"duration="2000" startNumber="1""#, r#"startNumber="1""#, 1).replacen(
        "media=\"a-$RepresentationID$-$Number$.m4s\"/>",
        "media=\"a-$RepresentationID$-$Number$.m4s\"><SegmentTimeline><S t=\"0\" d=\"2000\" r=\"3\"/></SegmentTimeline></SegmentTemplate>",
        1,
    );
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"0123456789-.PTSr\"<>/ ";
    let (mut parsed, mut viewed) = (0, 0);
    for _ in 0..3000 {
        let mut bytes = base.clone().into_bytes();
        for _ in 0..(1 + next() % 4) {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = alphabet[(next() % alphabet.len() as u64) as usize];
        }
        let Ok(mpd) = parse(&bytes) else { continue };
        parsed += 1;
        for (from, to, now) in [
            (0, None, 100),
            (5, Some(11), 100),
            (13, None, 100),
            (u64::MAX / 4, None, 0),
        ] {
            let clip = Clip {
                from: SystemTime::UNIX_EPOCH + Duration::from_secs(from.min(1 << 40)),
                to: to.map(at),
            };
            let clip = Clip {
                from: if from < 100 { at(from) } else { clip.from },
                ..clip
            };
            if let Ok(out) = view(&bytes, &mpd, &clip, None, at(now)) {
                viewed += 1;
                assert!(
                    parse(&out).is_ok(),
                    "a view parses again: {}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }
    assert!(
        parsed > 100 && viewed > 100,
        "the mangling left enough to view: {parsed} parsed, {viewed} views"
    );
}

#[test]
fn views_reach_no_further_back_than_what_is_kept() {
    let mpd = parse(TWO_PERIODS.as_bytes()).expect("parses");
    // Segments before 6 s are gone: a view from 1 s starts at segment 4 (6-8 s).
    let clip = Clip {
        from: at(1),
        to: Some(at(9)),
    };
    let out = view(TWO_PERIODS.as_bytes(), &mpd, &clip, Some(at(6)), at(100)).expect("a view");
    let cut = parse(&out).expect("parses");
    assert_eq!(cut.availability_start, Some(at(6)));
    assert_eq!(cut.media_presentation_duration, Some(Duration::from_secs(4)));
    let clip = Clip {
        from: at(1),
        to: Some(at(5)),
    };
    assert_eq!(
        view(TWO_PERIODS.as_bytes(), &mpd, &clip, Some(at(6)), at(100)),
        Err(ViewError::Empty),
        "an interval that ended before the oldest kept segment"
    );
    // A start-over view's depth reaches its own start, not the encoder's longer one.
    let clip = Clip { from: at(95), to: None };
    let out = view(TWO_PERIODS.as_bytes(), &mpd, &clip, None, at(100)).expect("a view");
    assert_eq!(
        parse(&out).expect("parses").time_shift_buffer_depth,
        Some(Duration::from_secs(6))
    );
    // Times past 9999 cannot be written: a reason, not a panic.
    let far = TWO_PERIODS.replace(r#"start="PT10S""#, r#"start="P3000000D""#);
    let mpd = parse(far.as_bytes()).expect("parses");
    let clip = Clip {
        from: at(300_000_000_000),
        to: None,
    };
    assert!(matches!(
        view(far.as_bytes(), &mpd, &clip, None, at(300_000_000_100)),
        Err(ViewError::Unsupported(_) | ViewError::Empty)
    ));
}

#[test]
fn views_outside_the_stream_are_refused() {
    assert_eq!(run(150, None, 100), Err(ViewError::Empty), "after the live edge");
    let mut mpd = parse(TWO_PERIODS.as_bytes()).expect("parses");
    mpd.availability_start = None;
    let clip = Clip { from: at(1), to: None };
    assert!(matches!(
        view(TWO_PERIODS.as_bytes(), &mpd, &clip, None, at(100)),
        Err(ViewError::Unsupported(_))
    ));
}
