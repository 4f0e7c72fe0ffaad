//! The live index's rules, without sockets, store or ffmpeg: events and instants in, actions and
//! answers out.

use std::time::{Duration, SystemTime};

use super::lifetime::ENDED_MEMORY;
use super::*;
use crate::media::cmaf::{self, Chunk};
use crate::media::mpd;

const STEADY: &[u8] = include_bytes!("../../../tests/fixtures/ffmpeg/steady.mpd");
const INIT: &[u8] = include_bytes!("../../../tests/fixtures/ffmpeg/init-stream0.m4s");

fn state(after_segments: u32) -> State {
    State::new(LiveOptions {
        part_target: None,
        end_rule: EndRule { after_segments },
        dvr_window: None,
    })
}

/// A state that knows live/stream.mpd (ffmpeg's: two representations, 1 s segments, startNumber
/// 1) and the video init segment, at `t0`.
fn with_stream(after_segments: u32, t0: Instant) -> State {
    let mut s = state(after_segments);
    let mpd = Arc::new(mpd::parse(STEADY).expect("fixture parses"));
    s.manifest_parsed(&p("live/stream.mpd"), "v1", mpd, t0);
    let init = Arc::new(cmaf::parse_init(INIT).expect("fixture init"));
    s.init_parsed(&p("live/init-stream0.m4s"), init, t0);
    s
}

/// A store path the test knows is valid.
fn p(path: &str) -> StorePath {
    StorePath::new(path).unwrap_or_else(|e| panic!("{path:?} is not a valid store path: {e}"))
}

fn video(n: u64) -> String {
    format!("live/chunk-stream0-{n:05}.m4s")
}

/// Segment `n` of the video, started at `arrival` and `at`, with one 0.2 s chunk, complete.
fn complete(s: &mut State, n: u64, arrival: u64, at: Instant) -> Vec<Action> {
    let (index, init, actions) = s.segment_started(&p(&video(n)), arrival, &[], at);
    let timescale = u64::from(init.expect("the video's init segment").tracks[0].timescale);
    index.push(
        vec![Chunk {
            start: 0,
            end: 1000,
            track_id: 1,
            decode_time: (n - 1) * timescale,
            duration: timescale / 5,
            samples: 6,
            independent: true,
        }],
        at,
    );
    index.end(false);
    actions
}

fn mpd_of(s: &State) -> Arc<Mpd> {
    Arc::clone(&s.folders["live"].mpds["stream.mpd"].1)
}

/// The stream with segment 1 complete at `t0`, ending after `after_segments` quiet segments.
fn one_segment(after_segments: u32) -> (State, Arc<Mpd>, Instant) {
    let t0 = Instant::now();
    let mut s = with_stream(after_segments, t0);
    complete(&mut s, 1, 10, t0);
    let mpd = mpd_of(&s);
    (s, mpd, t0)
}

#[test]
fn segments_are_indexed_with_their_init_segment() {
    let t0 = Instant::now();
    let mut s = with_stream(5, t0);
    let (index, init, actions) = s.segment_started(&p(&video(1)), 10, &[], t0);
    assert!(actions.is_empty());
    assert!(
        init.is_some(),
        "the representation's init segment comes with the segment"
    );
    assert!(Arc::ptr_eq(&index, &s.segment(&p(&video(1))).expect("indexed")));
    assert!(s.segment(&p("live/other.m4s")).is_none());
    // Audio has no init segment in this state: its segment is indexed without one.
    let (_, init, _) = s.segment_started(&p("live/chunk-stream1-00001.m4s"), 11, &[], t0);
    assert!(init.is_none());
}

#[test]
fn a_new_run_at_the_templates_first_number_drops_the_earlier_run() {
    let t0 = Instant::now();
    let mut s = with_stream(5, t0);
    for n in 1..=4 {
        assert!(complete(&mut s, n, n * 10, t0).is_empty());
    }
    // The encoder restarts: segment 1 again, arriving after everything.
    let actions = complete(&mut s, 1, 100, t0);
    let deleted: Vec<&str> = actions
        .iter()
        .map(|Action::Delete { path, before }| {
            assert_eq!(*before, 100, "only what arrived before the new run");
            path.as_str()
        })
        .collect();
    assert_eq!(deleted, [video(1), video(2), video(3), video(4)]);
    for n in 2..=4 {
        assert!(
            s.segment(&p(&video(n))).is_none(),
            "segment {n} of the old run is forgotten"
        );
    }
    assert!(s.segment(&p(&video(1))).is_some(), "the new run's segment 1 is indexed");
}

#[test]
fn a_lower_number_in_mid_stream_is_not_a_new_run() {
    let t0 = Instant::now();
    let mut s = with_stream(5, t0);
    for n in [1, 2, 4] {
        complete(&mut s, n, n * 10, t0);
    }
    // Segment 3 overtaken by 4 (several connections): not the template's first number.
    assert!(complete(&mut s, 3, 50, t0).is_empty());
    // A retry of the newest segment is not a new run either.
    assert!(complete(&mut s, 4, 60, t0).is_empty());
    for n in 1..=4 {
        assert!(s.segment(&p(&video(n))).is_some(), "segment {n} stays");
    }
}

#[test]
fn after_a_restart_the_earlier_run_on_disk_only_is_deleted_too() {
    let t0 = Instant::now();
    let mut s = with_stream(5, t0);
    assert!(
        s.needs_stored(&p(&video(1))),
        "no segment of the representation indexed yet: the driver must list the store"
    );
    let stored = vec![
        ("chunk-stream0-00007.m4s".to_owned(), 5),
        ("chunk-stream0-00008.m4s".to_owned(), 6),
        ("chunk-stream1-00008.m4s".to_owned(), 7),
        ("stream.mpd".to_owned(), 8),
    ];
    let (_, _, actions) = s.segment_started(&p(&video(1)), 100, &stored, t0);
    assert_eq!(
        actions,
        vec![
            Action::Delete {
                path: p(&video(7)),
                before: 100
            },
            Action::Delete {
                path: p(&video(8)),
                before: 100
            },
        ],
        "only this representation's segments, not the audio's or the manifest"
    );
    assert!(
        !s.needs_stored(&p(&video(2))),
        "once indexed, the store is not listed again"
    );
}

#[test]
fn a_folder_without_a_parsed_manifest_needs_its_manifests_read() {
    let t0 = Instant::now();
    let mut s = state(5);
    assert!(s.needs_manifests(&p(&video(1))));
    assert!(
        !s.needs_stored(&p(&video(1))),
        "unknown representation: nothing to compare"
    );
    s.manifest_parsed(
        &p("live/stream.mpd"),
        "v1",
        Arc::new(mpd::parse(STEADY).expect("parses")),
        t0,
    );
    assert!(!s.needs_manifests(&p(&video(1))));
    assert!(s.needs_manifests(&p("other/chunk-stream0-00001.m4s")), "per folder");
    assert!(s.cached_manifest(&p("live/stream.mpd"), "v1").is_some());
    assert!(
        s.cached_manifest(&p("live/stream.mpd"), "v2").is_none(),
        "another version is parsed again"
    );
}

#[test]
fn the_next_two_segments_are_upcoming_while_the_stream_is_live() {
    let t0 = Instant::now();
    let mut s = with_stream(5, t0);
    assert_eq!(s.upcoming(&p(&video(1)), t0), None, "nothing indexed: no window yet");
    complete(&mut s, 1, 10, t0);
    complete(&mut s, 2, 20, t0);
    assert_eq!(
        s.upcoming(&p(&video(3)), t0),
        Some(Duration::from_secs(1)),
        "one segment duration"
    );
    assert_eq!(s.upcoming(&p(&video(4)), t0), Some(Duration::from_secs(1)));
    assert_eq!(s.upcoming(&p(&video(5)), t0), None, "too far ahead");
    assert_eq!(s.upcoming(&p(&video(2)), t0), None, "not missing");
    assert_eq!(s.upcoming(&p("live/nothing.m4s"), t0), None);
    // Five segment durations without an upload: ended, no early requests held.
    assert_eq!(s.upcoming(&p(&video(3)), t0 + Duration::from_secs(5)), None);
}

#[test]
fn a_quiet_stream_ends_after_the_configured_segments() {
    let (mut s, mpd, t0) = one_segment(3);
    let f = &s.folders["live"];
    assert!(!s.options.has_ended(f, &mpd, t0 + Duration::from_millis(2999)));
    assert!(s.options.has_ended(f, &mpd, t0 + Duration::from_secs(3)));
    assert_eq!(s.options.ends_at(f, &mpd), Some(t0 + Duration::from_secs(3)));
    // Ended: the MPD gets the presentation end of the complete media (0.2 s of segment 1).
    let end = s.ended_duration("live", &mpd, t0 + Duration::from_secs(3));
    assert_eq!(end, Some(Duration::from_millis(200)));
    assert_eq!(s.ended_duration("live", &mpd, t0), None, "still live");
    // An upload moves the end on.
    complete(&mut s, 2, 20, t0 + Duration::from_secs(2));
    let f = &s.folders["live"];
    assert!(!s.options.has_ended(f, &mpd, t0 + Duration::from_secs(3)));
}

#[test]
fn a_live_stream_found_on_disk_ends_by_the_rule_counted_from_the_start_not_its_last_write() {
    // Written 60 s before the origin started (it was down meanwhile): indexed at those times.
    let start = Instant::now() + Duration::from_secs(120);
    let written = start - Duration::from_secs(60);
    let mut s = with_stream(5, written);
    for n in 1..=3 {
        complete(&mut s, n, 0, written);
    }
    let mpd = mpd_of(&s);
    assert!(
        s.options.has_ended(&s.folders["live"], &mpd, start),
        "before the disk is indexed, the last write counts"
    );
    s.disk_indexed(start);
    let f = &s.folders["live"];
    assert!(
        !s.options.has_ended(f, &mpd, start),
        "live at the start: the encoder may be back"
    );
    assert_eq!(
        s.ended_duration("live", &mpd, start),
        None,
        "no mediaPresentationDuration"
    );
    assert!(!s.options.has_ended(f, &mpd, start + Duration::from_millis(4999)));
    assert!(s.options.has_ended(f, &mpd, start + Duration::from_secs(5)));
    // A stream uploaded since the start only is not moved.
    let (mut s, mpd, t0) = one_segment(5);
    s.disk_indexed(t0 + Duration::from_secs(4));
    assert!(s
        .options
        .has_ended(&s.folders["live"], &mpd, t0 + Duration::from_secs(5)));
}

#[test]
fn end_after_zero_segments_never_ends() {
    let (s, mpd, t0) = one_segment(0);
    let f = &s.folders["live"];
    assert!(!s.options.has_ended(f, &mpd, t0 + Duration::from_secs(86_400)));
    assert_eq!(s.options.ends_at(f, &mpd), None);
}

#[test]
fn a_deleted_manifest_ends_its_stream_until_it_is_uploaded_again() {
    let t0 = Instant::now();
    let mut s = with_stream(5, t0);
    assert!(s.ended_manifest(&p("live/stream.mpd"), false).is_none(), "live");
    let gone = s
        .ended_manifest(&p("live/stream.mpd"), true)
        .expect("gone from the store is ended");
    assert!(!gone.dynamic);
    s.removed(&p("live/stream.mpd"), false, t0);
    let ended = s.ended_manifest(&p("live/stream.mpd"), false).expect("ended");
    assert!(!ended.dynamic, "served static");
    assert!(s.folders.contains_key("live"), "the parsed manifest is kept");
    s.manifest_upload_started(&p("live/stream.mpd"), t0);
    assert!(s.ended_manifest(&p("live/stream.mpd"), false).is_none(), "live again");
}

#[test]
fn removals_wake_playlists_and_empty_folders_go() {
    let t0 = Instant::now();
    let mut s = state(5);
    s.segment_started(&p("clips/a.m4s"), 1, &[], t0);
    assert_eq!(
        s.take_wakes(),
        [Wake::Changed("clips".into())],
        "a new segment is a change"
    );
    s.removed(&p("clips/a.m4s"), false, t0);
    assert_eq!(
        s.take_wakes(),
        [Wake::Gone("clips".into())],
        "a removed segment is a change"
    );
    assert!(!s.folders.contains_key("clips"), "nothing left: the folder is dropped");
    s.removed(&p("clips/b.m4s"), false, t0);
    s.removed(&p("nowhere/c.m4s"), true, t0);
    assert!(s.take_wakes().is_empty(), "nothing known, nothing changed");
    // A removed segment of a folder that keeps something is a change, and a new manifest is one.
    let mut s = with_stream(5, Instant::now());
    complete(&mut s, 1, 10, t0);
    s.take_wakes();
    s.removed(&p(&video(1)), false, t0);
    assert_eq!(
        s.take_wakes(),
        [Wake::Changed("live".into())],
        "a removed segment is a change"
    );
    s.manifest_parsed(&p("live/stream.mpd"), "v2", mpd_of(&s), t0);
    assert_eq!(
        s.take_wakes(),
        [Wake::Changed("live".into())],
        "a new manifest is a change"
    );
}

#[test]
fn a_folder_is_forgotten_once_nothing_of_it_is_stored() {
    let t0 = Instant::now();
    // Purged by garbage collection (the stream ended a TTL ago): nothing is kept.
    let mut s = with_stream(5, t0);
    for path in s.known_paths() {
        s.removed(&path, true, t0);
    }
    assert!(s.folders.is_empty(), "purged: nothing kept, {:?}", s.folders.keys());
    // Deleted by its encoder: the ended manifest is served for a while, then forgotten.
    let mut s = with_stream(5, t0);
    for path in s.known_paths() {
        s.removed(&path, false, t0);
    }
    assert!(
        s.ended_manifest(&p("live/stream.mpd"), false).is_some(),
        "served as ended"
    );
    assert_eq!(
        s.forget(t0 + Duration::from_secs(1), |_| false),
        0,
        "remembered for a while"
    );
    let waiting = |folder: &str| folder == "live";
    assert_eq!(
        s.forget(t0 + ENDED_MEMORY, waiting),
        0,
        "not while a request waits on it"
    );
    s.take_wakes();
    assert_eq!(s.forget(t0 + ENDED_MEMORY, |_| false), 1);
    assert!(s.folders.is_empty());
    assert_eq!(s.take_wakes(), [Wake::Gone("live".into())], "its channel is closed");
    // A folder a request waits on that the index never knew goes with the request: see the
    // channels' own test in `live::wake`.
}

#[test]
fn observed_chunks_give_the_chunk_duration_and_bandwidth() {
    let t0 = Instant::now();
    let mut s = with_stream(5, t0);
    let mpd = mpd_of(&s);
    // Nothing uploaded yet: only what an init segment says (its codecs).
    let before = s.observe("live", &mpd);
    assert!(
        before
            .values()
            .all(|o| o.chunk_duration.is_none() && !o.chunked && o.bandwidth.is_none()),
        "{before:?}"
    );
    complete(&mut s, 1, 10, t0);
    let observed = s.observe("live", &mpd);
    let video = observed.get(&(0, 0, "0".to_owned())).expect("the video is observed");
    assert_eq!(video.chunk_duration, Some(Duration::from_millis(200)));
    assert!(!video.chunked, "one chunk per segment so far");
    // 1000 bytes in 0.2 s.
    assert_eq!(video.bandwidth, Some(40_000));
    assert!(
        !observed.contains_key(&(0, 1, "1".to_owned())),
        "the audio has no init segment: no timescale"
    );
}

#[test]
fn the_stream_list_reports_stored_manifests_newest_first() {
    let t0 = Instant::now();
    let mut s = with_stream(5, t0);
    complete(&mut s, 1, 10, t0);
    complete(&mut s, 2, 20, t0);
    s.manifest_parsed(
        &p("old/stream.mpd"),
        "v1",
        Arc::new(mpd::parse(STEADY).expect("parses")),
        t0,
    );
    let now = SystemTime::now();
    let modified = |path: &str| match path {
        "live/stream.mpd" => Some(now),
        "old/stream.mpd" => Some(now - Duration::from_secs(60)),
        _ => None,
    };
    let list = s.streams(modified, |_| 7, (t0, SystemTime::now()), 10);
    assert_eq!(list.total, 2);
    let streams = list.streams;
    let names: Vec<&str> = streams.iter().map(|s| s.manifest.as_str()).collect();
    assert_eq!(names, ["live/stream.mpd", "old/stream.mpd"]);
    assert_eq!(streams[0].state, "live");
    assert_eq!(streams[0].representations[0].newest_segment, Some(2));
    assert_eq!(streams[0].representations[0].resolution, Some((320, 180)));
    assert_eq!(streams[0].disk_bytes, 7, "the folder's bytes, from the store");
    assert!(
        streams[0].segments_from.is_some() && streams[0].segments_from <= streams[0].segments_to,
        "the kept segments' range: {:?} to {:?}",
        streams[0].segments_from,
        streams[0].segments_to
    );
    let later = s
        .streams(modified, |_| 7, (t0 + Duration::from_secs(60), SystemTime::now()), 10)
        .streams;
    let newest = s.streams(modified, |_| 7, (t0, SystemTime::now()), 1);
    assert_eq!(
        (newest.streams.len(), newest.total),
        (1, 2),
        "bounded, and says how many"
    );
    assert_eq!(newest.streams[0].manifest, "live/stream.mpd");
    assert_eq!(later[0].state, "ended");
    assert!(
        s.streams(|_| None, |_| 0, (t0, SystemTime::now()), 10)
            .streams
            .is_empty(),
        "a manifest gone from the store is not listed"
    );
}

#[test]
fn a_fixed_part_target_is_kept_and_zero_is_none() {
    let s = State::new(LiveOptions {
        part_target: Some(0.0),
        ..LiveOptions::default()
    });
    assert_eq!(s.options.part_target, None);
    let s = State::new(LiveOptions {
        part_target: Some(0.25),
        ..LiveOptions::default()
    });
    assert_eq!(s.options.part_target, Some(0.25));
}

#[test]
fn a_stream_found_on_disk_catches_up_a_whole_segment_after_its_first_upload_or_gives_up() {
    let t0 = Instant::now();
    let s_of = || {
        let mut s = with_stream(5, t0);
        // Segments 1-3 found on disk at start (arrival 0), written before it.
        for n in 1..=3 {
            complete(&mut s, n, 0, t0);
        }
        s
    };
    let mut s = s_of();
    assert_eq!(s.catching_up(t0, t0), ["live"], "found on disk, nothing uploaded since");
    assert!(!s.uploaded("live"));
    // The encoder's next segment reaches it 2 s after the start: caught up one segment later.
    let up = t0 + Duration::from_secs(2);
    complete(&mut s, 7, 10, up);
    assert!(s.uploaded("live"));
    assert_eq!(s.catching_up(t0, up + Duration::from_millis(900)), ["live"]);
    assert!(s.catching_up(t0, up + Duration::from_secs(1)).is_empty());
    // An encoder that never comes back: waited for five segment durations from the start.
    let s = s_of();
    assert_eq!(s.catching_up(t0, t0 + Duration::from_millis(4900)), ["live"]);
    assert!(s.catching_up(t0, t0 + Duration::from_secs(5)).is_empty());
    // A stream uploaded since start only has nothing to catch up with.
    let (s, _, t0) = one_segment(5);
    assert!(s.catching_up(t0, t0).is_empty());
}
