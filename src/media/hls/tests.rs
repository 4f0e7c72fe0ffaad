//! The playlists' rules, one test each, over hand-built renditions and timings.

use super::*;

const TIMING: Timing = Timing {
    target_duration: 1,
    part_target: 0.2,
    chunks_per_part: 1,
};

fn part(offset: u64, independent: bool) -> Part {
    Part {
        offset,
        len: 1000,
        duration: 0.2,
        independent,
    }
}

fn segment(number: u64, parts: usize, complete: bool) -> Segment {
    Segment {
        number,
        uri: format!("chunk-stream0-{number:05}.m4s"),
        start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + number),
        parts: (0..parts).map(|i| part(i as u64 * 1000, i == 0)).collect(),
        complete,
        discontinuity: false,
        map: None,
    }
}

fn rendition(complete: u64, growing_parts: usize) -> Rendition {
    let mut segments: Vec<Segment> = (1..=complete).map(|n| segment(n, 5, true)).collect();
    segments.push(segment(complete + 1, growing_parts, false));
    Rendition {
        uri: "stream.0.m3u8".into(),
        init_uri: "init-stream0.m4s".into(),
        discontinuity_sequence: 0,
        segments,
        last_closed: false,
        next_uri: Some(format!("chunk-stream0-{:05}.m4s", complete + 2)),
        ended: false,
        playlist_type: None,
    }
}

/// A strict reader of the playlists written here: checks the rules of the draft that apply.
fn check(text: &str, timing: &Timing) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"#EXTM3U"), "a playlist starts with #EXTM3U");
    let position = |tag: &str| lines.iter().position(|l| l.starts_with(tag));
    let sequence = position("#EXT-X-MEDIA-SEQUENCE").expect("MEDIA-SEQUENCE");
    if let Some(skip) = position("#EXT-X-SKIP") {
        assert!(sequence < skip, "MEDIA-SEQUENCE comes before EXT-X-SKIP");
    }
    let map = position("#EXT-X-MAP").expect("EXT-X-MAP");
    let first_part = position("#EXT-X-PART:").unwrap_or(usize::MAX);
    assert!(map < first_part, "EXT-X-MAP comes before the first part");
    let mut uris = Vec::new();
    let mut parts_since_extinf: Vec<&str> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(attrs) = line.strip_prefix("#EXT-X-PART:") {
            let duration: f64 = attrs
                .split(',')
                .find_map(|a| a.strip_prefix("DURATION="))
                .and_then(|d| d.parse().ok())
                .expect("part duration");
            assert!(
                duration <= timing.part_target + 1e-9,
                "part longer than PART-TARGET: {line}"
            );
            assert!(attrs.contains("BYTERANGE=\""), "parts are byte ranges: {line}");
            parts_since_extinf.push(line);
        }
        if line.starts_with("#EXTINF:") {
            let uri = lines.get(i + 1).expect("a URI after EXTINF");
            for part in &parts_since_extinf {
                assert!(part.contains(uri), "parts of {uri} come before its EXTINF: {part}");
            }
            parts_since_extinf.clear();
            uris.push(uri.to_string());
        }
        if line.starts_with("#EXT-X-PROGRAM-DATE-TIME:") {
            let next = lines.get(i + 1).expect("something after PDT");
            assert!(
                next.starts_with("#EXT-X-PART:") || next.starts_with("#EXTINF:"),
                "PDT before its segment's parts: {next}"
            );
        }
    }
    uris
}

#[test]
fn live_playlist_lists_parts_before_extinf_and_hints_the_next_part() {
    let r = rendition(6, 2);
    let text = media_playlist(&r, &TIMING, &[], false);
    let uris = check(&text, &TIMING);
    assert_eq!(uris.len(), 6);
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:1\n"));
    assert!(text.contains(
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.000,PART-HOLD-BACK=0.600,HOLD-BACK=3.000"
    ));
    assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.200"));
    assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"chunk-stream0-00007.m4s\",BYTERANGE-START=2000"));
    assert!(!text.contains("ENDLIST"));
    // Parts for the segments that start in the last three target durations of the playlist (it
    // ends 0.4 s into segment 7): segments 5 and 6 plus the growing 7.
    assert!(!text.contains("URI=\"chunk-stream0-00004.m4s\",BYTERANGE"), "{text}");
    assert!(
        text.contains("URI=\"chunk-stream0-00005.m4s\",BYTERANGE=\"1000@0\",INDEPENDENT=YES"),
        "{text}"
    );
    assert!(
        text.contains("URI=\"chunk-stream0-00007.m4s\",BYTERANGE=\"1000@1000\"\n"),
        "{text}"
    );
}

#[test]
fn ended_stream_has_endlist_and_no_parts() {
    let mut r = rendition(5, 0);
    r.segments.pop();
    r.ended = true;
    let text = media_playlist(&r, &TIMING, &[], false);
    check(&text, &TIMING);
    assert!(text.ends_with("#EXT-X-ENDLIST\n"));
    assert!(!text.contains("#EXT-X-PART:"));
    assert!(!text.contains("PRELOAD-HINT"));
    assert_eq!(
        r.block(Wanted { msn: 99, part: None }, &TIMING),
        Block::Ready,
        "directives are ignored once ended"
    );
}

#[test]
fn a_dvr_playlist_of_two_hours_is_cheap_as_a_delta_update() {
    // 7,200 one-second segments kept by a two-hour DVR window.
    let r = rendition(7_200, 2);
    let full = media_playlist(&r, &TIMING, &[], false);
    let delta = media_playlist(&r, &TIMING, &[], true);
    assert!(
        full.contains("#EXT-X-MEDIA-SEQUENCE:1\n"),
        "the full playlist lists the window"
    );
    assert_eq!(check(&full, &TIMING).len(), 7_200);
    check(&delta, &TIMING);
    let skipped: u64 = delta
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS="))
        .and_then(|n| n.parse().ok())
        .expect("an EXT-X-SKIP");
    // All but the last six target durations (a rounding of the summed durations either way).
    assert!((7_193..=7_194).contains(&skipped), "{delta}");
    assert!(delta.contains("CAN-SKIP-UNTIL=6.000"), "{delta}");
    assert!(
        delta.len() * 100 < full.len(),
        "the delta update ({} bytes) is a small part of the full playlist ({} bytes)",
        delta.len(),
        full.len()
    );
}

#[test]
fn delta_update_skips_old_segments_and_merges_back() {
    let r = rendition(12, 1);
    let full = media_playlist(&r, &TIMING, &[], false);
    let delta = media_playlist(&r, &TIMING, &[], true);
    check(&delta, &TIMING);
    assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=6"), "{delta}");
    // Merge: the delta's segments are the last ones of the full playlist.
    let full_uris = check(&full, &TIMING);
    let delta_uris = check(&delta, &TIMING);
    assert_eq!(
        full_uris[6..],
        delta_uris[..],
        "skipped segments + delta = full playlist"
    );
    // And line for line from the first segment it lists: the same parts too (hls.js drops the
    // parts it is loading when a delta update leaves them out).
    let from_segment = |text: &str, n: usize| -> Vec<String> {
        let lines: Vec<&str> = text.lines().collect();
        let start = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("#EXT-X-PROGRAM-DATE-TIME"))
            .nth(n)
            .map(|(i, _)| i)
            .expect("a PDT per segment");
        lines[start..].iter().map(|l| l.to_string()).collect()
    };
    assert_eq!(from_segment(&full, 6), from_segment(&delta, 0));
    assert!(
        from_segment(&delta, 0)
            .iter()
            .filter(|l| l.starts_with("#EXT-X-PART:"))
            .count()
            >= 11,
        "the parts of segments 11 and 12 and the growing 13's"
    );
}

#[test]
fn a_new_period_is_a_discontinuity_with_its_own_init_segment_in_full_and_delta_playlists() {
    let mut r = rendition(12, 1);
    r.discontinuity_sequence = 3;
    r.segments[6].discontinuity = true;
    r.segments[6].map = Some("init-stream0.p4.m4s".into());
    let full = media_playlist(&r, &TIMING, &[], false);
    check(&full, &TIMING);
    assert!(full.contains("#EXT-X-DISCONTINUITY-SEQUENCE:3\n"), "{full}");
    assert!(full.contains("#EXT-X-MAP:URI=\"init-stream0.m4s\"\n"), "{full}");
    assert!(
        full.contains(
            "chunk-stream0-00006.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-stream0.p4.m4s\"\n\
             #EXT-X-PROGRAM-DATE-TIME"
        ),
        "{full}"
    );
    assert_eq!(full.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    // The delta update skips segments 1 to 6: the init segment in force is the new one, the
    // sequence stays, and the discontinuity before segment 7 stays.
    let delta = media_playlist(&r, &TIMING, &[], true);
    check(&delta, &TIMING);
    assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=6"), "{delta}");
    assert!(delta.contains("#EXT-X-DISCONTINUITY-SEQUENCE:3\n"), "{delta}");
    assert_eq!(delta.matches("#EXT-X-MAP:").count(), 1, "{delta}");
    assert!(delta.contains("#EXT-X-MAP:URI=\"init-stream0.p4.m4s\"\n"), "{delta}");
    assert!(
        delta.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME"),
        "{delta}"
    );
    // Once the old Period has left the playlist, its first segment carries no tag: the sequence
    // counts it.
    r.segments.drain(..6);
    r.discontinuity_sequence = 4;
    r.init_uri = "init-stream0.p4.m4s".into();
    let later = media_playlist(&r, &TIMING, &[], false);
    assert!(!later.contains("#EXT-X-DISCONTINUITY\n"), "{later}");
    assert_eq!(later.matches("#EXT-X-MAP:").count(), 1, "{later}");
}

#[test]
fn blocking_rules_follow_section_6_2_5_2() {
    let r = rendition(6, 2);
    let wait = |msn, part| r.block(Wanted { msn, part }, &TIMING);
    assert_eq!(wait(6, None), Block::Ready);
    assert_eq!(wait(7, None), Block::Wait, "segment 7 is not complete");
    assert_eq!(wait(7, Some(1)), Block::Ready, "part 1 of 7 exists");
    assert_eq!(wait(7, Some(2)), Block::Wait);
    assert_eq!(
        wait(6, Some(5)),
        Block::Ready,
        "past the last part of 6 means part 0 of 7, which exists"
    );
    assert!(r.holds(Wanted { msn: 6, part: Some(5) }));
    assert_eq!(wait(9, Some(0)), Block::Wait, "two segments ahead is accepted");
    assert_eq!(wait(10, None), Block::TooFar, "more than two past the last segment");
    assert_eq!(wait(9, Some(40)), Block::TooFar, "beyond the advance part limit");
    assert_eq!(TIMING.advance_part_limit(), 15);
}

#[test]
fn a_skipped_number_is_satisfied_by_a_later_segment() {
    // Segments 1..=3, then a new Period's segment 5 growing (this track never had a 4).
    let mut r = rendition(3, 0);
    r.segments.pop();
    r.segments.push(segment(5, 1, false));
    let wait = |msn, part| r.block(Wanted { msn, part }, &TIMING);
    assert_eq!(wait(4, Some(0)), Block::Ready, "part 0 of 5 is later than part 0 of 4");
    assert_eq!(
        wait(3, Some(5)),
        Block::Ready,
        "past the last part of 3 is part 0 of 4: later exists"
    );
    assert_eq!(wait(5, Some(1)), Block::Wait);
    assert_eq!(wait(4, None), Block::Wait, "no segment after 3 is complete yet");
}

#[test]
fn rendition_reports_name_the_other_renditions() {
    let r = rendition(3, 1);
    let reports = [Report {
        uri: "stream.1.m3u8".into(),
        edge: Edge { msn: 4, part: Some(0) },
    }];
    let text = media_playlist(&r, &TIMING, &reports, false);
    assert!(text.contains("#EXT-X-RENDITION-REPORT:URI=\"stream.1.m3u8\",LAST-MSN=4,LAST-PART=0\n"));
    assert_eq!(r.edge(), Some(Edge { msn: 4, part: Some(0) }));
}

#[test]
fn multivariant_lists_video_variants_with_an_audio_group() {
    let text = multivariant(
        &[Variant {
            uri: "stream.0.m3u8".into(),
            bandwidth: 900_000,
            codecs: "avc1.64001e,mp4a.40.2".into(),
            resolution: Some((640, 360)),
            frame_rate: Some(30.0),
        }],
        &[Audio {
            uri: "stream.2.m3u8".into(),
            name: "2".into(),
            language: None,
            channels: Some("1".into()),
        }],
    );
    assert!(text.contains("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"2\",CHANNELS=\"1\",DEFAULT=YES,AUTOSELECT=YES,URI=\"stream.2.m3u8\""));
    assert!(text.contains("#EXT-X-STREAM-INF:BANDWIDTH=900000,CODECS=\"avc1.64001e,mp4a.40.2\",RESOLUTION=640x360,FRAME-RATE=30.000,AUDIO=\"audio\"\nstream.0.m3u8\n"));
}

#[test]
fn between_segments_the_next_segment_is_hinted() {
    let mut r = rendition(6, 5);
    r.last_closed = true;
    let text = media_playlist(&r, &TIMING, &[], false);
    check(&text, &TIMING);
    assert!(
        text.ends_with("BYTERANGE=\"1000@4000\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"chunk-stream0-00008.m4s\"\n"),
        "the closed segment is listed by its parts, the hint names the next: {text}"
    );
    assert!(
        !text.contains("chunk-stream0-00007.m4s\n"),
        "no EXTINF for it yet: {text}"
    );
    assert_eq!(
        r.block(Wanted { msn: 7, part: Some(5) }, &TIMING),
        Block::Wait,
        "past its last part waits for the next segment"
    );
}

#[test]
fn parts_group_whole_chunks_up_to_the_wanted_target() {
    // 0.1 s chunks, 1 s segments: a part per chunk unless asked for more.
    assert_eq!(Timing::for_chunks(1.0, 0.1, None).chunks_per_part, 1);
    assert_eq!(Timing::for_chunks(1.0, 0.1, Some(0.05)).chunks_per_part, 1);
    let three = Timing::for_chunks(1.0, 0.1, Some(0.3));
    assert_eq!(
        (three.chunks_per_part, three.part_target, three.target_duration),
        (3, 0.3, 1)
    );
    // Uneven audio chunks (0.085 to 0.107 s): three of the longest bound the part.
    let audio = Timing::for_chunks(1.0, 0.107, Some(0.3));
    assert_eq!((audio.chunks_per_part, audio.part_target), (3, 0.321));
    // Never more chunks than a segment has.
    assert_eq!(Timing::for_chunks(1.0, 0.1, Some(5.0)).chunks_per_part, 10);
}

#[test]
fn a_growing_segment_lists_only_whole_groups_and_its_last_part_when_complete() {
    let chunks: Vec<Part> = (0..7)
        .map(|i| Part {
            offset: i * 100,
            len: 100,
            duration: 0.1,
            independent: i == 0,
        })
        .collect();
    let growing = group_parts(&chunks, 3, false);
    assert_eq!(growing.len(), 2, "the seventh chunk starts a part still being made");
    assert_eq!(
        (growing[0].offset, growing[0].len, growing[0].independent),
        (0, 300, true)
    );
    assert_eq!(
        (growing[1].offset, growing[1].len, growing[1].independent),
        (300, 300, false)
    );
    assert!((growing[1].duration - 0.3).abs() < 1e-9);
    let complete = group_parts(&chunks, 3, true);
    assert_eq!(complete.len(), 3);
    assert_eq!((complete[2].offset, complete[2].len), (600, 100), "the short last part");
    let ends = [100, 200, 300, 400, 500, 600, 700];
    assert_eq!(part_ends(ends.into_iter(), 3).collect::<Vec<_>>(), [300, 600]);
    assert_eq!(part_ends(ends.into_iter(), 1).collect::<Vec<_>>(), ends);
}

/// Long after every segment of the test renditions.
fn now() -> SystemTime {
    at(1_000.0)
}

fn at(seconds: f64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(1_700_000_000.0 + seconds)
}

#[test]
fn a_start_over_view_is_an_event_playlist_from_the_segment_playing_then() {
    let r = rendition(10, 2);
    let clip = Clip {
        from: at(4.5),
        to: None,
    };
    let view = r.clipped(&clip, now()).expect("segments from 4.5 s");
    let text = media_playlist(&view, &TIMING, &[], false);
    let uris = check(&text, &TIMING);
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"), "{text}");
    assert!(
        text.contains("#EXT-X-MEDIA-SEQUENCE:4\n"),
        "segment 4 plays at 4.5 s: {text}"
    );
    assert_eq!(uris.first().map(String::as_str), Some("chunk-stream0-00004.m4s"));
    assert_eq!(uris.len(), 7, "4 to 10 complete, 11 growing");
    assert!(text.contains("#EXT-X-PRELOAD-HINT"), "it follows the live edge: {text}");
    assert!(!text.contains("#EXT-X-ENDLIST"), "{text}");
    assert_eq!(
        r.clipped(
            &Clip {
                from: at(4.0),
                to: None
            },
            now()
        )
        .map(|v| v.segments[0].number),
        Some(4),
        "a start on a boundary starts the segment there"
    );
    assert_eq!(
        r.clipped(
            &Clip {
                from: at(-100.0),
                to: None
            },
            now()
        )
        .map(|v| v.segments[0].number),
        Some(1),
        "a start before the window: the oldest segment kept"
    );
    // An end not reached yet: still an EVENT following the edge.
    let view = r
        .clipped(
            &Clip {
                from: at(4.5),
                to: Some(at(30.0)),
            },
            now(),
        )
        .expect("a view");
    assert_eq!(view.playlist_type, Some(PlaylistType::Event));
    assert!(!view.ended);
}

#[test]
fn a_past_interval_is_a_vod_playlist_cut_at_segment_boundaries() {
    let r = rendition(10, 2);
    let view = r
        .clipped(
            &Clip {
                from: at(4.5),
                to: Some(at(7.2)),
            },
            now(),
        )
        .expect("segments 4 to 7");
    let text = media_playlist(&view, &TIMING, &[], true);
    let uris = check(&text, &TIMING);
    assert_eq!(
        uris,
        (4..=7).map(|n| format!("chunk-stream0-{n:05}.m4s")).collect::<Vec<_>>(),
        "{text}"
    );
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"), "{text}");
    assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    for live_only in [
        "#EXT-X-PART:",
        "#EXT-X-PRELOAD-HINT",
        "#EXT-X-SERVER-CONTROL",
        "#EXT-X-PART-INF",
        "#EXT-X-SKIP",
    ] {
        assert!(!text.contains(live_only), "{live_only} in a VOD playlist: {text}");
    }
    // Its end just past (within three segments): still EVENT, ended; a playlist that a client may
    // have seen as EVENT never turns VOD.
    let just = r
        .clipped(
            &Clip {
                from: at(4.5),
                to: Some(at(7.2)),
            },
            at(9.0),
        )
        .expect("a view");
    assert_eq!((just.playlist_type, just.ended), (Some(PlaylistType::Event), true));
    let only = r
        .clipped(
            &Clip {
                from: at(2.0),
                to: Some(at(3.0)),
            },
            now(),
        )
        .expect("segment 2");
    assert_eq!(only.segments.iter().map(|s| s.number).collect::<Vec<_>>(), vec![2]);
    assert_eq!(
        r.clipped(
            &Clip {
                from: at(50.0),
                to: Some(at(60.0))
            },
            now()
        )
        .map(|v| v.ended),
        Some(false),
        "the growing segment: not reached"
    );
    let mut ended = r.clone();
    ended.ended = true;
    ended.segments.pop();
    assert_eq!(
        ended.clipped(
            &Clip {
                from: at(50.0),
                to: None
            },
            now()
        ),
        None,
        "nothing of an ended stream after its end"
    );
    let view = ended
        .clipped(
            &Clip {
                from: at(3.0),
                to: None,
            },
            now(),
        )
        .expect("a view");
    assert_eq!(
        (view.playlist_type, view.ended),
        (Some(PlaylistType::Event), true),
        "an ended stream's start-over view: EVENT with EXT-X-ENDLIST (a view that was EVENT never turns VOD)"
    );
}

#[test]
fn a_view_keeps_the_discontinuities_and_the_init_segment_it_cuts_off() {
    let mut r = rendition(10, 2);
    r.segments[4].discontinuity = true;
    r.segments[4].map = Some("init-b.m4s".into());
    let view = r
        .clipped(
            &Clip {
                from: at(6.5),
                to: None,
            },
            now(),
        )
        .expect("a view");
    assert_eq!(
        view.discontinuity_sequence, 1,
        "segment 5's discontinuity is before the view"
    );
    assert_eq!(view.init_uri, "init-b.m4s");
    let text = media_playlist(&view, &TIMING, &[], false);
    assert!(text.contains("#EXT-X-MAP:URI=\"init-b.m4s\""), "{text}");
    assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    let view = r
        .clipped(
            &Clip {
                from: at(5.0),
                to: None,
            },
            now(),
        )
        .expect("a view");
    assert_eq!(view.segments[0].number, 5);
    assert_eq!(
        view.discontinuity_sequence, 1,
        "the first segment's discontinuity is counted"
    );
    assert_eq!(view.init_uri, "init-b.m4s");
}
