//! The packager's pure part against ffmpeg's own CMAF (the fixtures of the CMAF reader's tests): the
//! track reader fed whole, piece by piece and corrupted, the channel's placement rules and its
//! manifest.

use std::time::{Duration, SystemTime};

use super::*;
use crate::media::cmaf::{parse_init, Chunk};

const INIT: &[u8] = include_bytes!("../../../tests/fixtures/ffmpeg/init-stream0.m4s");
const SEGMENT: &[u8] = include_bytes!("../../../tests/fixtures/ffmpeg/chunk-stream0-00002.m4s");
const AUDIO_INIT: &[u8] = include_bytes!("../../../tests/fixtures/ffmpeg/init-stream1.m4s");

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

#[test]
fn segments_start_at_sync_samples_on_the_channel_timeline_and_leave_the_window() {
    let mut channel = channel();
    let scale = u64::from(parse_init(INIT).expect("init").tracks[0].timescale);
    let fifth = scale / 5;
    let mut begun = Vec::new();
    for i in 0..25u64 {
        let placement = channel.place(
            "video",
            &chunk(i * fifth, fifth, i % 5 == 0),
            1000,
            at(10.0 + i as f64 / 5.0),
        );
        match placement {
            Placement::Begin {
                number, closes, delete, ..
            } => begun.push((number, closes, delete)),
            Placement::Append { number } => assert_eq!(Some(number), begun.last().map(|b| b.0)),
            Placement::Drop => panic!("chunk {i} dropped"),
        }
    }
    assert_eq!(
        begun,
        [
            (1, None, vec![]),
            (2, Some(1), vec![]),
            (3, Some(2), vec![]),
            (4, Some(3), vec![1]),
            (5, Some(4), vec![2]),
        ]
    );
    let anchor = channel.anchor.expect("anchored by the first chunk");
    assert_eq!(
        anchor,
        at(10.0 - 0.2),
        "media time 0 is the first chunk's arrival minus its end"
    );
}

#[test]
fn a_reconnect_inside_a_segment_waits_for_the_next_boundary_and_continues_the_numbering() {
    let mut channel = channel();
    let scale = u64::from(parse_init(INIT).expect("init").tracks[0].timescale);
    let half = scale / 2;
    channel.place("video", &chunk(0, half, true), 10, at(1.0));
    channel.place("video", &chunk(half, half, false), 10, at(1.5));
    assert_eq!(channel.track_ended("video"), Some(1));
    assert!(!channel.receiving());
    let init = parse_init(INIT).expect("init");
    channel.track_started("video", &init);
    assert!(channel.receiving());
    assert_eq!(
        channel.place("video", &chunk(half, half, true), 10, at(2.0)),
        Placement::Drop
    );
    assert!(matches!(
        channel.place("video", &chunk(scale, half, true), 10, at(2.5)),
        Placement::Begin {
            number: 2,
            closes: None,
            ..
        }
    ));
}

#[test]
fn audio_chunks_just_before_a_boundary_start_the_next_segment() {
    let mut channel = channel();
    let audio = parse_init(AUDIO_INIT).expect("audio init");
    channel.track_started("audio", &audio);
    // 44.1 kHz, 1024-sample frames: the frame at 0.998 s starts segment 2.
    let frame = 1024u64;
    let mut numbers = Vec::new();
    for i in 0..50u64 {
        if let Placement::Begin { number, .. } = channel.place("audio", &chunk(i * frame, frame, true), 10, at(1.0)) {
            numbers.push((number, i * frame));
        }
    }
    assert_eq!(numbers, [(1, 0), (2, 43 * 1024)]);
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
