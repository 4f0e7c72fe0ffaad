//! The packager's pure part against ffmpeg's own CMAF (the fixtures of the CMAF reader's tests): the
//! track reader fed whole, piece by piece and corrupted, the channel's placement rules and its
//! manifest.

use std::time::{Duration, SystemTime};

use super::*;
use crate::media::cmaf::{parse_init, Chunk};

const INIT: &[u8] = include_bytes!("../../../../tests/fixtures/ffmpeg/init-stream0.m4s");
const SEGMENT: &[u8] = include_bytes!("../../../../tests/fixtures/ffmpeg/chunk-stream0-00002.m4s");
const AUDIO_INIT: &[u8] = include_bytes!("../../../../tests/fixtures/ffmpeg/init-stream1.m4s");

fn track() -> Vec<u8> {
    [INIT, SEGMENT].concat()
}

fn read(pieces: usize) -> Result<Vec<TrackEvent>, IngestError> {
    let bytes = track();
    let mut reader = TrackReader::new(1 << 20);
    let mut events = Vec::new();
    for piece in bytes.chunks(bytes.len().div_ceil(pieces)) {
        events.extend(reader.push(piece)?);
    }
    reader.finish()?;
    Ok(events)
}

#[test]
fn the_reader_gives_the_init_segment_then_every_chunk_whole_however_the_body_is_cut() {
    let whole = read(1).expect("whole");
    for pieces in [2, 7, 100, track().len()] {
        assert_eq!(read(pieces).expect("in pieces"), whole, "{pieces} pieces");
    }
    let TrackEvent::Init { bytes, init } = &whole[0] else {
        panic!("the init segment first: {:?}", whole[0]);
    };
    assert_eq!(&bytes[..], INIT);
    assert_eq!(&init.tracks[0].handler, b"vide");
    let chunks: Vec<u8> = whole[1..]
        .iter()
        .flat_map(|e| match e {
            TrackEvent::Chunk { bytes, .. } => bytes.to_vec(),
            other => panic!("only chunks after the init segment: {other:?}"),
        })
        .collect();
    assert_eq!(chunks, SEGMENT, "the chunks tile the rest of the body");
    assert_eq!(whole.len(), 6, "five chunks");
}

#[test]
fn the_init_segment_gives_the_codecs_string_and_picture_size() {
    let init = parse_init(INIT).expect("init");
    let coding = init.tracks[0].coding.clone().expect("a sample entry");
    assert!(
        coding.codecs.starts_with("avc1.") && coding.codecs.len() == 11,
        "{coding:?}"
    );
    assert!(coding.size.is_some_and(|(w, h)| w > 0 && h > 0), "{coding:?}");
    let audio = parse_init(AUDIO_INIT).expect("audio init");
    let coding = audio.tracks[0].coding.clone().expect("a sample entry");
    assert_eq!(coding.codecs, "mp4a.40.2");
    assert_eq!(coding.sample_rate, Some(44100));
    assert!(coding.channels.is_some_and(|c| c > 0));
}

#[test]
fn garbage_truncation_and_missing_init_are_refused_with_a_reason() {
    let garbage = TrackReader::new(1 << 20).push(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(matches!(garbage, Err(IngestError::NotCmaf(_))), "{garbage:?}");

    let no_init = TrackReader::new(1 << 20).push(SEGMENT);
    assert!(
        matches!(no_init, Err(IngestError::NotCmaf(_) | IngestError::NoInit)),
        "{no_init:?}"
    );

    let bytes = track();
    let mut cut = TrackReader::new(1 << 20);
    cut.push(&bytes[..bytes.len() - 100]).expect("a prefix reads");
    assert!(matches!(cut.finish(), Err(IngestError::Truncated(_))));

    let mut only_init = TrackReader::new(1 << 20);
    only_init
        .push(&INIT[..INIT.len() - 1])
        .expect("most of an init segment");
    assert_eq!(only_init.finish(), Err(IngestError::NoInit));

    let small = TrackReader::new(4096).push(&bytes);
    assert_eq!(small, Err(IngestError::FragmentTooLarge { limit: 4096 }));
}

#[test]
fn decode_times_that_go_back_are_refused() {
    let mut reader = TrackReader::new(1 << 20);
    reader.push(&track()).expect("one segment");
    let again = reader.push(SEGMENT);
    assert!(matches!(again, Err(IngestError::DecodeTimeBack { .. })), "{again:?}");
}

#[test]
fn every_prefix_of_a_corrupted_track_reads_without_panicking() {
    let bytes = track();
    for at in (0..bytes.len()).step_by(97) {
        let mut corrupt = bytes.clone();
        corrupt[at] ^= 0xa5;
        let mut reader = TrackReader::new(1 << 20);
        let _ = reader.push(&corrupt);
        let _ = reader.finish();
    }
}

fn chunk(decode_time: u64, duration: u64, independent: bool) -> Chunk {
    Chunk {
        start: 0,
        end: 100,
        track_id: 1,
        decode_time,
        duration,
        samples: 1,
        independent,
    }
}

fn channel() -> Channel {
    let mut channel = Channel::new(PackageOptions {
        segment_duration: Duration::from_secs(1),
        window: 3,
    });
    let init = parse_init(INIT).expect("init");
    assert!(
        channel.track_started("video", &init),
        "a new track changes the manifest"
    );
    assert!(
        !channel.track_started("video", &init),
        "the same init segment again does not"
    );
    channel.track_ended("video");
    channel
}

const T0: SystemTime = SystemTime::UNIX_EPOCH;

fn at(seconds: f64) -> SystemTime {
    T0 + Duration::from_secs_f64(seconds)
}

/// Where each chunk went (None: dropped), and the other steps in order.
fn appended(placement: &Placement) -> Option<u64> {
    placement.steps.iter().find_map(|s| match s {
        Step::Append { number } => Some(*number),
        _ => None,
    })
}

#[test]
fn segments_start_at_sync_samples_on_the_channel_timeline_and_leave_the_window() {
    let mut channel = channel();
    let scale = u64::from(parse_init(INIT).expect("init").tracks[0].timescale);
    let fifth = scale / 5;
    let mut steps = Vec::new();
    for i in 0..25u64 {
        let placement = channel.place(
            "video",
            &chunk(i * fifth, fifth, i % 5 == 0),
            1000,
            at(10.0 + i as f64 / 5.0),
        );
        assert_eq!(appended(&placement), Some(i / 5 + 1), "chunk {i}: {placement:?}");
        steps.extend(
            placement
                .steps
                .into_iter()
                .filter(|s| !matches!(s, Step::Append { .. })),
        );
    }
    // Each segment is closed by the chunk that reaches its end, and the next one opened at once.
    let expected: Vec<Step> = [
        vec![Step::Open { number: 1 }],
        vec![
            Step::Close {
                number: 1,
                empty: false,
            },
            Step::Open { number: 2 },
        ],
        vec![
            Step::Close {
                number: 2,
                empty: false,
            },
            Step::Open { number: 3 },
        ],
        vec![
            Step::Close {
                number: 3,
                empty: false,
            },
            Step::Open { number: 4 },
            Step::Delete { number: 1 },
        ],
        vec![
            Step::Close {
                number: 4,
                empty: false,
            },
            Step::Open { number: 5 },
            Step::Delete { number: 2 },
        ],
        vec![
            Step::Close {
                number: 5,
                empty: false,
            },
            Step::Open { number: 6 },
            Step::Delete { number: 3 },
        ],
    ]
    .concat();
    assert_eq!(steps, expected);
    let anchor = channel.anchor.expect("anchored by the first chunk");
    assert_eq!(
        anchor,
        at(10.0 - 0.2),
        "media time 0 is the first chunk's arrival minus its end"
    );
}

#[test]
fn keyframes_that_miss_the_boundaries_make_segments_wait_for_the_next_one() {
    let mut channel = channel();
    let scale = u64::from(parse_init(INIT).expect("init").tracks[0].timescale);
    let fifth = scale / 5;
    let mut numbers = Vec::new();
    // A keyframe every 1.4 s (every 7 chunks) against 1 s segments.
    for i in 0..21u64 {
        let placement = channel.place("video", &chunk(i * fifth, fifth, i % 7 == 0), 1000, at(1.0));
        numbers.push(appended(&placement));
    }
    // Segment 2 was opened ahead at 1.0 s; the chunk at 1.0 s is not a sync sample, so it and
    // the rest up to the keyframe at 1.4 s are dropped, and from then on segments wait for
    // keyframes.
    assert_eq!(&numbers[..5], [Some(1); 5]);
    assert_eq!(&numbers[5..7], [None, None]);
    assert_eq!(&numbers[7..14], [Some(2); 7], "{numbers:?}");
    assert_eq!(&numbers[14..21], [Some(3); 7], "{numbers:?}");
}

#[test]
fn a_reconnect_inside_a_segment_waits_for_the_next_boundary_and_continues_the_numbering() {
    let mut channel = channel();
    let scale = u64::from(parse_init(INIT).expect("init").tracks[0].timescale);
    let half = scale / 2;
    channel.place("video", &chunk(0, half, true), 10, at(1.0));
    assert_eq!(channel.track_ended("video"), Some((1, false)));
    assert!(!channel.receiving());
    let init = parse_init(INIT).expect("init");
    channel.track_started("video", &init);
    assert!(channel.receiving());
    let inside = channel.place("video", &chunk(half, half, true), 10, at(2.0));
    assert_eq!(
        inside,
        Placement::default(),
        "segment 1 is closed: its second half is dropped"
    );
    let next = channel.place("video", &chunk(scale, half, true), 10, at(2.5));
    assert_eq!(next.steps[..2], [Step::Open { number: 2 }, Step::Append { number: 2 }]);

    // A POST that ends at a boundary leaves the next segment opened ahead, empty: it is discarded,
    // and the next POST opens it again.
    channel.place("video", &chunk(scale + half, half, false), 10, at(3.0));
    assert_eq!(channel.track_ended("video"), Some((3, true)));
    channel.track_started("video", &init);
    let again = channel.place("video", &chunk(2 * scale, half, true), 10, at(3.5));
    assert_eq!(again.steps[..2], [Step::Open { number: 3 }, Step::Append { number: 3 }]);
}

#[test]
fn audio_chunks_just_before_a_boundary_start_the_next_segment() {
    let mut channel = channel();
    let audio = parse_init(AUDIO_INIT).expect("audio init");
    channel.track_started("audio", &audio);
    // 44.1 kHz, one 1024-sample frame per chunk: the frame at 0.9985 s starts segment 2.
    let frame = 1024u64;
    let numbers: Vec<Option<u64>> = (0..50u64)
        .map(|i| appended(&channel.place("audio", &chunk(i * frame, frame, true), 10, at(1.0))))
        .collect();
    assert_eq!(numbers[42], Some(1));
    assert_eq!(numbers[43], Some(2));
    // Five-frame chunks (0.116 s): the one that straddles 1 s ends segment 1.
    let mut channel = self::channel();
    channel.track_started("audio", &audio);
    let five = Chunk {
        samples: 5,
        ..chunk(0, 5 * frame, true)
    };
    let numbers: Vec<Option<u64>> = (0..10u64)
        .map(|i| {
            let chunk = Chunk {
                decode_time: i * 5 * frame,
                ..five
            };
            appended(&channel.place("audio", &chunk, 10, at(1.0)))
        })
        .collect();
    assert_eq!(numbers[8], Some(1), "0.929 s to 1.045 s");
    assert_eq!(numbers[9], Some(2));
}

#[test]
fn the_manifest_lists_video_and_audio_with_their_codecs_and_one_template_each() {
    let mut channel = channel();
    assert_eq!(channel.manifest(at(5.0)), None, "no timeline before the first chunk");
    let audio = parse_init(AUDIO_INIT).expect("audio init");
    channel.track_started("audio", &audio);
    channel.place("video", &chunk(0, 1, true), 10, at(5.0));
    let text = channel.manifest(at(6.0)).expect("a manifest");
    let mpd = crate::media::mpd::parse(text.as_bytes()).expect("it parses");
    assert!(mpd.dynamic);
    let ids: Vec<&str> = mpd.representations().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["video", "audio"]);
    let audio = mpd.representations().nth(1).expect("audio");
    assert_eq!(audio.codecs.as_deref(), Some("mp4a.40.2"));
    let template = audio.template.clone().expect("a template");
    assert_eq!((template.timescale, template.duration), (44100, Some(44100)));
    assert_eq!(template.media_path(audio, 7).as_deref(), Some("chunk-audio-00007.m4s"));
    assert_eq!(template.init_path(audio).as_deref(), Some("init-audio.m4s"));
}

#[test]
fn track_paths_and_names() {
    assert_eq!(track_path("ch1/Streams(video.cmfv)"), Some(("ch1", "video.cmfv")));
    assert_eq!(track_path("a/b/Streams(a1)"), Some(("a/b", "a1")));
    assert_eq!(track_path("Streams(v)"), None);
    assert_eq!(track_path("ch1/stream.mpd"), None);
    assert_eq!(representation_id("video.cmfv").as_deref(), Ok("video"));
    assert_eq!(representation_id("audio_128k").as_deref(), Ok("audio_128k"));
    assert!(representation_id(".cmfv").is_err());
    assert!(representation_id("a b.cmfv").is_err());
    assert!(representation_id("$Number$").is_err());
}

#[test]
fn a_fragment_over_the_limit_is_refused_however_the_body_is_cut() {
    let bytes = track();
    for piece in [1usize, 1000, 16_384, bytes.len()] {
        let mut reader = TrackReader::new(4096);
        let refused = bytes.chunks(piece).find_map(|part| reader.push(part).err());
        assert_eq!(
            refused,
            Some(IngestError::FragmentTooLarge { limit: 4096 }),
            "pieces of {piece}"
        );
    }
}

#[test]
fn a_restarted_encoder_starts_a_new_period_and_a_continuing_one_keeps_the_timeline() {
    let mut channel = channel();
    let init = parse_init(INIT).expect("init");
    let scale = u64::from(init.tracks[0].timescale);
    // Ten seconds of a track, received in real time from t = 100 s.
    for i in 0..10u64 {
        channel.place("video", &chunk(i * scale, scale, true), 10, at(101.0 + i as f64));
    }
    let anchor = channel.anchor;
    assert_eq!(channel.origin, anchor);
    channel.track_ended("video");
    // Back 20 s later, its timestamps where the wall clock says: numbering goes on, gap included.
    channel.track_started("video", &init);
    let later = channel.place("video", &chunk(30 * scale, scale, true), 10, at(131.0));
    assert!(!later.republish);
    assert_eq!(later.run_started, None);
    assert_eq!(appended(&later), Some(31));
    assert_eq!(channel.anchor, anchor);
    channel.track_ended("video");
    // A restarted encoder counting from 0: a new run, its numbers going on from the newest.
    channel.track_started("video", &init);
    let restarted = channel.place("video", &chunk(0, scale, true), 10, at(140.0));
    assert!(restarted.republish, "the manifest has a new Period");
    assert_eq!(restarted.run_started, Some(1));
    assert_eq!(appended(&restarted), Some(32));
    assert_eq!(channel.anchor, Some(at(139.0)));
    assert_eq!(channel.origin, anchor, "availabilityStartTime stays");
    assert_eq!(
        (channel.run_of(31), channel.run_of(32), channel.current_run()),
        (0, 1, 1)
    );
    assert_eq!(segment_name("video", 32, 1), "chunk-video-00032.p1.m4s");
    assert_eq!(init_name("video", 1), "init-video.p1.m4s");

    let text = channel.manifest(at(140.5)).expect("a manifest");
    let mpd = crate::media::mpd::parse(text.as_bytes()).expect("it parses");
    let periods: Vec<(Option<&str>, Option<Duration>)> =
        mpd.periods.iter().map(|p| (p.id.as_deref(), p.start)).collect();
    assert_eq!(
        periods,
        [
            (Some("0"), Some(Duration::ZERO)),
            (Some("1"), Some(Duration::from_secs(39)))
        ],
        "{text}"
    );
    // The ended run lists its segments: none is promised between its last and the new Period.
    let ended = mpd.periods[0].adaptation_sets[0].representations[0]
        .template
        .clone()
        .expect("a template");
    assert!(ended.has_timeline && ended.duration.is_none(), "{text}");
    assert!(
        text.contains(&format!("<S t=\"0\" d=\"{scale}\" r=\"30\"/>")),
        "segments 1 to 31: {text}"
    );
    let rep = &mpd.periods[1].adaptation_sets[0].representations[0];
    let template = rep.template.clone().expect("a template");
    assert!(!template.has_timeline);
    assert_eq!((template.start_number, template.presentation_time_offset), (32, 0));
    assert_eq!(
        template.media_path(rep, 32).as_deref(),
        Some("chunk-video-00032.p1.m4s")
    );
    assert_eq!(template.init_path(rep).as_deref(), Some("init-video.p1.m4s"));

    // Once run 0's segments have all left the window (3), its Period goes.
    for i in 1..4u64 {
        channel.place("video", &chunk(i * scale, scale, true), 10, at(140.0 + i as f64));
    }
    let text = channel.manifest(at(144.0)).expect("a manifest");
    assert!(!text.contains("<Period id=\"0\""), "{text}");
    // The ended channel: static, both periods' remaining segments.
    let text = channel.final_manifest(at(144.0)).expect("a final manifest");
    let mpd = crate::media::mpd::parse(text.as_bytes()).expect("it parses");
    assert_eq!(mpd.periods.len(), 1, "{text}");
    let template = mpd.periods[0].adaptation_sets[0].representations[0]
        .template
        .clone()
        .expect("template");
    assert_eq!(template.start_number, 34, "{text}");
    assert_eq!(template.presentation_time_offset, 2 * scale, "{text}");
}

#[test]
fn a_changed_init_segment_starts_a_new_period_and_an_ended_channel_lists_both() {
    let mut channel = channel();
    let init = parse_init(INIT).expect("init");
    let scale = u64::from(init.tracks[0].timescale);
    for i in 0..3u64 {
        channel.place("video", &chunk(i * scale, scale, true), 10, at(1.0 + i as f64));
    }
    channel.track_ended("video");
    // The same track back with another coding (here: another sample entry), timeline continuing.
    let mut other = init.clone();
    if let Some(coding) = other.tracks[0].coding.as_mut() {
        coding.codecs = "avc1.64001f".into();
    }
    assert!(channel.track_started("video", &other), "the manifest changes");
    let placed = channel.place("video", &chunk(3 * scale, scale, true), 10, at(4.0));
    assert_eq!(placed.run_started, Some(1));
    assert_eq!(appended(&placed), Some(4));
    let text = channel.final_manifest(at(5.0)).expect("a final manifest");
    let mpd = crate::media::mpd::parse(text.as_bytes()).expect("it parses");
    assert!(!mpd.dynamic);
    let starts: Vec<Option<Duration>> = mpd.periods.iter().map(|p| p.start).collect();
    assert_eq!(starts, [Some(Duration::ZERO), Some(Duration::from_secs(1))], "{text}");
    let template = mpd.periods[1].adaptation_sets[0].representations[0]
        .template
        .clone()
        .expect("template");
    assert_eq!(
        (template.start_number, template.presentation_time_offset),
        (4, 3 * scale)
    );
    assert!(
        text.contains("mediaPresentationDuration=\"PT2S\""),
        "segments 2 to 4: {text}"
    );
}

#[test]
fn a_jump_forward_deletes_at_most_the_window_and_huge_times_do_not_overflow() {
    let mut channel = channel();
    let scale = u64::from(parse_init(INIT).expect("init").tracks[0].timescale);
    channel.place("video", &chunk(0, scale, true), 10, at(1.0));
    let jump = channel.place("video", &chunk(10_000_000 * scale, scale, true), 10, at(2.0));
    let deletes = jump.steps.iter().filter(|s| matches!(s, Step::Delete { .. })).count();
    assert!(deletes <= 3, "{jump:?}");
    // Numbers saturate rather than overflow.
    let far = Chunk {
        decode_time: u64::MAX - 10,
        duration: 5,
        ..chunk(0, 1, true)
    };
    let placed = channel.place("video", &far, 10, at(3.0));
    assert!(appended(&placed).is_some_and(|n| n > 10_000_000));
}

mod restore;
