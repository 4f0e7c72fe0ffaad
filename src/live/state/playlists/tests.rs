//! The LL-HLS projections of the live index, over hand-built folders.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::multivariant::multivariant_of;
use super::*;
use crate::live::SegmentIndex;
use crate::media::cmaf::{Chunk, Init, Track};
use crate::media::hls::{Block, Wanted};
use crate::media::mpd;

const AUDIO_ONLY: &str = r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="2026-01-01T00:00:00Z">
    <Period id="0"><AdaptationSet contentType="audio" mimeType="audio/mp4">
    <Representation id="a" bandwidth="64000" codecs="mp4a.40.2">
    <SegmentTemplate timescale="1000" duration="1000" media="a-$Number$.m4s" initialization="a-init.m4s"/>
    </Representation></AdaptationSet></Period></MPD>"#;

/// A folder with audio segments of five 0.2 s chunks each, ended (`Some(failed)`) or still
/// growing (`None`).
fn folder(segments: &[(u64, Option<bool>)]) -> Folder {
    let mut f = Folder::new(Instant::now());
    let track = Track {
        id: 1,
        timescale: 1000,
        handler: *b"soun",
        default_duration: 0,
        default_flags: 0,
        coding: None,
    };
    f.inits
        .insert("a-init.m4s".into(), Arc::new(Init { tracks: vec![track] }));
    for &(n, failed) in segments {
        let index = SegmentIndex::new(Arc::clone(&f.activity), 0, Instant::now());
        let chunks = (0..5u64)
            .map(|i| Chunk {
                start: i * 100,
                end: (i + 1) * 100,
                track_id: 1,
                decode_time: n * 1000 + i * 200,
                duration: 200,
                samples: 10,
                independent: true,
            })
            .collect();
        index.push(chunks, Instant::now());
        if let Some(failed) = failed {
            index.end(failed);
        }
        f.segments.insert(format!("a-{n}.m4s"), Arc::new(index));
    }
    f
}

#[test]
fn audio_only_streams_list_their_audio_as_variants() {
    let mpd = mpd::parse(AUDIO_ONLY.as_bytes()).expect("mpd");
    let text = multivariant_of(&mpd, "radio.mpd", &HashMap::new());
    assert!(!text.contains("#EXT-X-MEDIA:"), "{text}");
    assert!(
        text.contains("#EXT-X-STREAM-INF:BANDWIDTH=64000,CODECS=\"mp4a.40.2\"\nradio.a.m3u8\n"),
        "{text}"
    );
}

#[test]
fn a_failed_segment_restarts_the_playlist_after_it() {
    let mpd = mpd::parse(AUDIO_ONLY.as_bytes()).expect("mpd");
    let rep = &mpd.periods[0].adaptation_sets[0].representations[0];
    let f = folder(&[
        (1, Some(false)),
        (2, Some(false)),
        (3, Some(true)),
        (4, Some(false)),
        (5, Some(false)),
    ]);
    let r = f.rendition(&mpd, "radio.mpd", &rep.id, false, 1).expect("rendition");
    let numbers: Vec<u64> = r.segments.iter().map(|s| s.number).collect();
    assert_eq!(
        numbers,
        [4, 5],
        "media sequence numbers stay consistent: the run restarts after the gap"
    );
    let f = folder(&[(1, Some(false)), (2, Some(false)), (3, Some(true))]);
    let r = f.rendition(&mpd, "radio.mpd", &rep.id, false, 1).expect("rendition");
    let numbers: Vec<u64> = r.segments.iter().map(|s| s.number).collect();
    assert_eq!(
        numbers,
        [1, 2],
        "a failed last segment (the encoder died) drops only itself"
    );
    assert_eq!(r.segments[1].duration(), 1.0);
    let timing = f.stream_timing(&mpd, None).expect("timing");
    assert_eq!(
        timing,
        Timing {
            target_duration: 1,
            part_target: 0.2,
            chunks_per_part: 1,
        }
    );
}

#[test]
fn periods_follow_each_other_with_a_discontinuity_and_their_own_init_segment() {
    let two = AUDIO_ONLY.replace(
        "</Period></MPD>",
        r#"</Period><Period id="1" start="PT10S"><AdaptationSet contentType="audio" mimeType="audio/mp4">
        <Representation id="a" bandwidth="64000" codecs="mp4a.40.2">
        <SegmentTemplate timescale="1000" duration="1000" startNumber="4" presentationTimeOffset="4000" media="a-$Number$.p1.m4s" initialization="a-init.p1.m4s"/>
        </Representation></AdaptationSet></Period></MPD>"#,
    );
    let mpd = mpd::parse(two.as_bytes()).expect("mpd");
    let mut f = folder(&[
        (1, Some(false)),
        (2, Some(false)),
        (3, Some(false)),
        (4, Some(false)),
        (5, None),
    ]);
    let init = f.inits.get("a-init.m4s").cloned().expect("init");
    f.inits.insert("a-init.p1.m4s".into(), init);
    for n in [4, 5] {
        let index = f.segments.remove(&format!("a-{n}.m4s")).expect("segment");
        f.segments.insert(format!("a-{n}.p1.m4s"), index);
    }
    let r = f.rendition(&mpd, "radio.mpd", "a", false, 1).expect("rendition");
    let listed: Vec<(u64, bool, Option<&str>)> = r
        .segments
        .iter()
        .map(|s| (s.number, s.discontinuity, s.map.as_deref()))
        .collect();
    assert_eq!(
        listed,
        [
            (1, false, None),
            (2, false, None),
            (3, false, None),
            (4, true, Some("a-init.p1.m4s")),
            (5, false, None)
        ]
    );
    assert_eq!((r.init_uri.as_str(), r.discontinuity_sequence), ("a-init.m4s", 0));
    let start = mpd.availability_start.expect("start");
    assert_eq!(
        r.segments[3].start,
        start + Duration::from_secs(10),
        "Period 1 starts at 10 s"
    );
    assert_eq!(r.segments[4].uri, "a-5.p1.m4s");
    // A Period that starts its numbers over is not listed after the one before: the list starts
    // again with it.
    let restarting = two.replace("startNumber=\"4\"", "startNumber=\"1\"");
    let mpd = mpd::parse(restarting.as_bytes()).expect("mpd");
    let mut f = folder(&[(1, Some(false)), (2, Some(false))]);
    let init = f.inits.get("a-init.m4s").cloned().expect("init");
    f.inits.insert("a-init.p1.m4s".into(), init);
    let index = f.segments.remove("a-1.m4s").expect("segment");
    f.segments.insert("a-1.p1.m4s".into(), index);
    let r = f.rendition(&mpd, "radio.mpd", "a", false, 1).expect("rendition");
    let numbers: Vec<u64> = r.segments.iter().map(|s| s.number).collect();
    assert_eq!(numbers, [1]);
    assert_eq!((r.init_uri.as_str(), r.discontinuity_sequence), ("a-init.p1.m4s", 1));
}

#[test]
fn a_growing_segment_whose_chunks_fill_it_hints_the_next_segment() {
    // Segment 2 has its five 0.2 s chunks (1 s, its whole duration), and its upload is still
    // open (ffmpeg ends it when it starts segment 3): nothing more of it will come, so the hint
    // names segment 3, not bytes past segment 2's end that would be answered 416.
    let mpd = mpd::parse(AUDIO_ONLY.as_bytes()).expect("mpd");
    let f = folder(&[(1, Some(false)), (2, None)]);
    let r = f.rendition(&mpd, "radio.mpd", "a", false, 1).expect("rendition");
    assert!(r.last_closed && !r.segments[1].complete, "{r:?}");
    let timing = f.stream_timing(&mpd, None).expect("timing");
    let text = hls::media_playlist(&r, &timing, &[], false);
    assert!(
        text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"a-3.m4s\"\n"),
        "{text}"
    );
    // With parts of two chunks the fifth chunk is not a part until the upload ends: the hint
    // stays on segment 2's rest, which does come.
    let r = f.rendition(&mpd, "radio.mpd", "a", false, 2).expect("rendition");
    assert!(!r.last_closed, "{r:?}");
    assert_eq!(r.segments[1].parts.len(), 2);
    // And each segment starts where its media does (its first chunk's decode time).
    let start = mpd.availability_start.expect("start");
    assert_eq!(r.segments[1].start, start + Duration::from_secs(2));
}

#[test]
fn a_next_segment_opened_before_the_previous_completes_waits_its_turn() {
    // ffmpeg opens segment 3's upload while segment 2 still grows: the playlist keeps segment 2
    // as its growing last segment, and a request for segment 3's first part (what Shaka and
    // hls.js ask for at every boundary) is held, not refused.
    let mpd = mpd::parse(AUDIO_ONLY.as_bytes()).expect("mpd");
    let rep = &mpd.periods[0].adaptation_sets[0].representations[0];
    let f = folder(&[(1, Some(false)), (2, None), (3, None)]);
    let r = f.rendition(&mpd, "radio.mpd", &rep.id, false, 1).expect("rendition");
    let numbers: Vec<u64> = r.segments.iter().map(|s| s.number).collect();
    assert_eq!(numbers, [1, 2], "segment 3 is listed once segment 2 is complete");
    let timing = f.stream_timing(&mpd, None).expect("timing");
    assert_eq!(r.block(Wanted { msn: 3, part: Some(0) }, &timing), Block::Wait);
    let f = folder(&[(1, Some(false)), (2, Some(false)), (3, None)]);
    let r = f.rendition(&mpd, "radio.mpd", &rep.id, false, 1).expect("rendition");
    let numbers: Vec<u64> = r.segments.iter().map(|s| s.number).collect();
    assert_eq!(numbers, [1, 2, 3]);
}
