//! The DVR window (`--dvr-window`, docs/dvr.md): every segment is kept for the window whatever the
//! encoder deletes, listed in the MPD's time-shift buffer and in the LL-HLS playlists, kept across
//! a restart of ldash, and removed once it has aged out.
//!
//! Real ffmpeg where it is installed (a stream whose encoder keeps a window of two segments), and
//! the recorded ffmpeg stream (tests/fixtures/ffmpeg) for the rest, all through real sockets.
//! Waits are on the store's events, or on the origin's answers, each bounded.

mod common;

use std::time::{Duration, SystemTime};

use common::encoder::{xmllint_validates, Dash, Encoder, Ingest, MANIFEST};
use common::hls_check::{media_uris, parse_media, MediaPlaylist};
use common::{client::Client, require_tool, Proto, TestServer};
use ldash::store::StoreEvent;
use testkit::encoder::{CmafIngest, FPS};

/// Longest any wait of these tests lasts before it fails.
const BOUND: Duration = Duration::from_secs(30);

/// GETs `route` until its body mentions `needle` (the live index follows the store a moment
/// behind), within [`BOUND`]; returns the body.
async fn until_mentions(client: &Client, route: &str, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let (status, text) = client.get_text(route).await;
        if status == 200 && text.contains(needle) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{route} did not mention {needle} within {BOUND:?}: {status}\n{text}"
        );
        tokio::task::yield_now().await;
    }
}

async fn delete(client: &Client, path: &str) -> u16 {
    client
        .request(http::Method::DELETE, &format!("/ldash/upload/{path}"))
        .fetch()
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_ffmpeg_deleted_stays_listed_and_downloadable_within_the_dvr_window() {
    let (Some(ffmpeg), Some(_)) = (require_tool("ffmpeg"), require_tool("ffprobe")) else {
        return;
    };
    let server = TestServer::start_with(|c| c.dvr_window = Duration::from_secs(600)).await;
    let mut events = server.store.subscribe();
    let dash = Dash::test_stream(&server.url(Proto::H1, MANIFEST), Ingest::PutShortWindow, 8);
    let mut encoder = Encoder::start(dash.command(&ffmpeg)).expect("ffmpeg starts");
    // ffmpeg keeps two segments: once segment 3 of its three representations is complete, it
    // DELETEs their segment 1. Each store event (a segment or manifest upload) is a moment to look.
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut deferred = 0.0;
    while deferred < 3.0 {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(StoreEvent::Removed { path, .. })) => {
                panic!("{path} left the store: the DVR window must keep it")
            }
            Ok(_) => {}
            Err(_) => {
                let _ = encoder.stop().await;
                panic!(
                    "ffmpeg did not DELETE segment 1 of its 3 representations within {BOUND:?} (deferred: {deferred}); its log:\n{}",
                    encoder.log().await
                );
            }
        }
        deferred = server.metric("ldash_dvr_deletes_deferred_total").await.unwrap_or(0.0);
    }
    let client = server.client_for(Proto::H1).await;
    let segment = client.get("/ldash/download/live/chunk-stream0-00001.m4s").fetch().await;
    assert_eq!(segment.status, 200, "segment 1, deleted by ffmpeg, is still served");
    let bytes = segment.bytes().await.expect("segment 1's body");
    assert!(!bytes.is_empty(), "segment 1 is served whole");

    let (status, text) = client.get_text("/ldash/download/live/stream.mpd").await;
    assert_eq!(status, 200, "{text}");
    let mpd = ldash::media::mpd::parse(text.as_bytes()).expect("the served MPD parses");
    let depth = mpd.time_shift_buffer_depth.expect("a timeShiftBufferDepth");
    let start = mpd.availability_start.expect("an availabilityStartTime");
    let since = SystemTime::now().duration_since(start).unwrap_or_default();
    // Segment 1 ends one segment after availabilityStartTime and stays available for the depth
    // and a segment more (ISO/IEC 23009-1, 5.3.9.5.3): ffmpeg's own window (PT2S) ended that.
    assert!(
        depth + Duration::from_secs(2) >= since,
        "the MPD's timeShiftBufferDepth ({depth:?}) must reach segment 1, {since:?} after availabilityStartTime:\n{text}"
    );
    let template = mpd
        .representations()
        .find(|r| r.id == "0")
        .and_then(|r| r.template.clone())
        .expect("representation 0's SegmentTemplate");
    assert_eq!(template.start_number, 1, "numbered from segment 1");
    if require_tool("xmllint").is_some() {
        xmllint_validates(text.as_bytes()).unwrap_or_else(|e| panic!("the DVR MPD fails the schema: {e}\n{text}"));
    }

    let playlist = until_mentions(&client, "/ldash/download/live/stream.0.m3u8", "chunk-stream0-00001.m4s").await;
    assert!(
        playlist.contains("#EXT-X-MEDIA-SEQUENCE:1\n"),
        "the LL-HLS playlist starts at segment 1:\n{playlist}"
    );
    let live = parse_media(&playlist).expect("the live playlist reads");
    start_over_follows_the_live_edge(&client, &live).await;

    // The stream ends (8 s): every segment stays, and any past interval is video on demand.
    match tokio::time::timeout(BOUND, encoder.child.wait()).await {
        Ok(Ok(status)) => assert!(status.success(), "ffmpeg failed: {}", encoder.log().await),
        _ => panic!("ffmpeg did not end its 8 s stream within {BOUND:?}"),
    }
    let ended = until_mentions(&client, "/ldash/download/live/stream.0.m3u8", "#EXT-X-ENDLIST").await;
    let ended = parse_media(&ended).expect("the ended playlist reads");
    assert_eq!(ended.media_sequence, Some(1), "a recording from segment 1");
    assert_eq!(
        segment_time(&ended, 2),
        segment_time(&live, 2),
        "the recording keeps the times its segments had live (ffmpeg's final MPD has no availabilityStartTime)"
    );
    catch_up_is_video_on_demand_and_exports_to_one_mp4(&server, &client, &ended, &ffmpeg).await;

    // The recording in the stream list: ended, its kept range and the disk it takes.
    let (status, list) = client.get_text("/ldash/streams").await;
    assert_eq!(status, 200, "{list}");
    let list: serde_json::Value = serde_json::from_str(&list).expect("the stream list is JSON");
    let stream = list
        .as_array()
        .and_then(|l| l.iter().find(|s| s["manifest"] == "live/stream.mpd"))
        .unwrap_or_else(|| panic!("live/stream.mpd is listed: {list}"));
    assert_eq!(stream["state"], "ended", "{stream}");
    let disk = stream["disk_bytes"].as_u64().unwrap_or(0);
    let kept_from = stream["segments_from"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339(t).ok());
    assert!(kept_from.is_some(), "{stream}");
    let stored = server.metric("ldash_stored_bytes").await.unwrap_or(0.0);
    println!("the recording: {disk} bytes on disk (ldash_stored_bytes {stored}), segments from {kept_from:?}");
    assert!(
        disk > 100_000 && stored >= disk as f64,
        "{stream}; ldash_stored_bytes {stored}"
    );
}

/// Returns once the wall clock has passed `time` (what a view's type is decided by), at most
/// [`BOUND`] from now.
async fn past(time: SystemTime) {
    let wait = time.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(wait < BOUND, "{wait:?} to wait");
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
}

/// Unix seconds with milliseconds, as a query takes them.
fn unix(time: SystemTime) -> String {
    let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", since.as_secs(), since.subsec_millis())
}

/// The wall-clock start of segment `msn` of `playlist` (its EXT-X-PROGRAM-DATE-TIME).
fn segment_time(playlist: &MediaPlaylist, msn: u64) -> SystemTime {
    let pdt = playlist
        .segment(msn)
        .and_then(|s| s.pdt.clone())
        .unwrap_or_else(|| panic!("segment {msn} has no EXT-X-PROGRAM-DATE-TIME"));
    humantime::parse_rfc3339(&pdt).unwrap_or_else(|e| panic!("{pdt}: {e}"))
}

/// `?start=` during the live stream: an EVENT playlist from the segment playing then, following
/// the live edge, and a multivariant playlist whose media playlists are the same view.
async fn start_over_follows_the_live_edge(client: &Client, live: &MediaPlaylist) {
    let query = format!("start={}", unix(segment_time(live, 2) + Duration::from_millis(300)));
    let (status, text) = client
        .get_text(&format!("/ldash/download/live/stream.0.m3u8?{query}"))
        .await;
    assert_eq!(status, 200, "{text}");
    let event = parse_media(&text).expect("the start-over playlist reads");
    assert_eq!(event.playlist_type.as_deref(), Some("EVENT"), "{text}");
    assert_eq!(
        event.media_sequence,
        Some(2),
        "from the segment playing at the start:\n{text}"
    );
    assert!(
        !event.hints.is_empty() && !event.endlist,
        "it follows the live edge:\n{text}"
    );
    assert!(
        !event.reports.is_empty() && event.reports.iter().all(|r| r.uri.ends_with(&format!("?{query}"))),
        "the rendition reports name the other renditions' views:\n{text}"
    );
    assert!(event.order.is_empty(), "tag order: {:?}", event.order);
    let (status, multivariant) = client
        .get_text(&format!("/ldash/download/live/stream.m3u8?{query}"))
        .await;
    assert_eq!(status, 200, "{multivariant}");
    let uris = media_uris(&multivariant);
    assert!(
        !uris.is_empty() && uris.iter().all(|u| u.ends_with(&format!("?{query}"))),
        "every media playlist is the same view ({query}): {uris:?}"
    );
    // The same view of the MPD: live, its first Period from segment 2, valid against the schema.
    let (status, text) = client
        .get_text(&format!("/ldash/download/live/stream.mpd?{query}"))
        .await;
    assert_eq!(status, 200, "{text}");
    let mpd = ldash::media::mpd::parse(text.as_bytes()).expect("the start-over MPD parses");
    assert!(mpd.dynamic, "start-over follows the live edge:\n{text}");
    let numbers: Vec<u64> = mpd
        .representations()
        .filter_map(|r| r.template.as_ref().map(|t| t.start_number))
        .collect();
    assert!(
        !numbers.is_empty() && numbers.iter().all(|n| *n == 2),
        "from segment 2: {numbers:?}\n{text}"
    );
    assert_eq!(
        mpd.availability_start,
        Some(segment_time(live, 2)),
        "the Period starts at segment 2"
    );
    xmllint_validates(text.as_bytes()).unwrap_or_else(|e| panic!("the start-over MPD fails the schema: {e}\n{text}"));
    let future = format!("start={}", unix(SystemTime::now() + Duration::from_secs(600)));
    let (status, why) = client
        .get_text(&format!("/ldash/download/live/stream.0.m3u8?{future}"))
        .await;
    assert_eq!(status, 400, "{why}");
    assert!(why.contains("future"), "{why}");
}

/// `?start=&end=` of the ended stream: a VOD playlist cut at segment boundaries, which ffprobe
/// reads to the asked duration (± a segment) and ffmpeg exports as one MP4.
async fn catch_up_is_video_on_demand_and_exports_to_one_mp4(
    server: &TestServer,
    client: &Client,
    ended: &MediaPlaylist,
    ffmpeg: &std::path::Path,
) {
    // From just after segment 2 starts to just before segment 5 starts: segments 2 to 4 (3 s).
    let from = segment_time(ended, 2) + Duration::from_millis(1);
    let to = segment_time(ended, 5) - Duration::from_millis(1);
    let query = format!("start={}&end={}", unix(from), unix(to));
    // VOD once the end is past by three segments (a view asked for before then stays EVENT).
    past(to + Duration::from_secs(3)).await;
    let (status, text) = client
        .get_text(&format!("/ldash/download/live/stream.0.m3u8?{query}"))
        .await;
    assert_eq!(status, 200, "{text}");
    let vod = parse_media(&text).expect("the VOD playlist reads");
    assert_eq!(vod.playlist_type.as_deref(), Some("VOD"), "{text}");
    assert!(
        vod.endlist && vod.hints.is_empty() && vod.server_control.is_none(),
        "{text}"
    );
    assert_eq!(
        vod.segments.iter().map(|s| s.msn).collect::<Vec<_>>(),
        vec![2, 3, 4],
        "cut at the segment boundaries around the interval:\n{text}"
    );
    assert!(
        vod.segments.iter().all(|s| s.parts.is_empty() && s.extinf.is_some()),
        "{text}"
    );
    let (status, _) = client
        .get_text(&format!(
            "/ldash/download/live/stream.0.m3u8?start={}&end={}",
            unix(segment_time(ended, 1) - Duration::from_secs(20)),
            unix(segment_time(ended, 1) - Duration::from_secs(10))
        ))
        .await;
    assert_eq!(status, 404, "an interval before the recording's start holds nothing");

    // The same interval of the MPD: static, segments 2 to 4.
    let (status, text) = client
        .get_text(&format!("/ldash/download/live/stream.mpd?{query}"))
        .await;
    assert_eq!(status, 200, "{text}");
    let mpd = ldash::media::mpd::parse(text.as_bytes()).expect("the VOD MPD parses");
    assert!(!mpd.dynamic, "a past interval is static:\n{text}");
    assert_eq!(mpd.media_presentation_duration, Some(Duration::from_secs(3)), "{text}");
    xmllint_validates(text.as_bytes()).unwrap_or_else(|e| panic!("the VOD MPD fails the schema: {e}\n{text}"));
    let dash_url = server.url(Proto::H1, &format!("/ldash/download/live/stream.mpd?{query}"));
    let dash_probed = probe_duration(&dash_url).unwrap_or_else(|e| panic!("ffprobe {dash_url}: {e}"));

    let url = server.url(Proto::H1, &format!("/ldash/download/live/stream.m3u8?{query}"));
    let probed = probe_duration(&url).unwrap_or_else(|e| panic!("ffprobe {url}: {e}"));
    let asked = to.duration_since(from).unwrap_or_default().as_secs_f64();
    assert!(
        (probed - asked).abs() <= 1.0 + 0.05,
        "ffprobe reads {probed:.2} s of the {asked:.2} s asked (± a segment)"
    );
    // The documented export (docs/dvr.md).
    let dir = tempfile::tempdir().expect("a temporary folder");
    let clip = dir.path().join("clip.mp4");
    let out = std::process::Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            &url,
            "-map",
            "0:v:0",
            "-map",
            "0:a:0",
            "-c",
            "copy",
        ])
        .arg(&clip)
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "the export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = probe_duration(&clip.to_string_lossy()).unwrap_or_else(|e| panic!("ffprobe the clip: {e}"));
    println!(
        "catch-up of {asked:.2} s: ffprobe reads the VOD playlist as {probed:.2} s and the static MPD as {dash_probed:.2} s, the exported MP4 is {exported:.2} s"
    );
    // ffmpeg's DASH reader takes one segment past a static template's duration when it exists
    // (dashdec's last number is first + duration / segment, inclusive), as the DVR window keeps it.
    assert!(
        (dash_probed - asked).abs() <= 1.0 + 0.05,
        "ffprobe reads the static MPD as {dash_probed:.2} s"
    );
    assert!(
        (exported - asked).abs() <= 1.0 + 0.05,
        "the exported MP4 is {exported:.2} s of the {asked:.2} s asked"
    );
}

/// The seconds of video ffprobe reads from `input`: its first video stream's frames, every one
/// read (not the duration a manifest declares), at the test stream's frame rate.
fn probe_duration(input: &str) -> Result<f64, String> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "csv=p=0",
            input,
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let frames: f64 = text
        .trim()
        .lines()
        .next()
        .and_then(|l| l.trim().trim_end_matches(',').parse().ok())
        .ok_or_else(|| format!("no frames read: {text} {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok(frames / f64::from(FPS))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_segment_is_kept_across_a_restart_within_the_dvr_window() {
    let dir = tempfile::tempdir().expect("a temporary root");
    let dvr = |c: &mut ldash::Config| c.dvr_window = Duration::from_secs(600);
    let server = TestServer::start_in(dir.path(), dvr).await;
    server.put_recorded_stream("live").await;
    let client = server.client_for(Proto::H1).await;
    let playlist = "/ldash/download/live/stream.0.m3u8";
    until_mentions(&client, playlist, "chunk-stream0-00002.m4s").await;
    assert_eq!(
        delete(&client, "live/chunk-stream0-00002.m4s").await,
        202,
        "the DELETE is accepted and left to the DVR window"
    );
    server.stop().await;

    let server = TestServer::start_in(dir.path(), dvr).await;
    let client = server.client_for(Proto::H1).await;
    let segment = client.get("/ldash/download/live/chunk-stream0-00002.m4s").fetch().await;
    assert_eq!(segment.status, 200, "the kept segment is there after the restart");
    until_mentions(&client, playlist, "chunk-stream0-00002.m4s").await;
    assert_eq!(
        delete(&client, "live/chunk-stream0-00002.m4s").await,
        202,
        "after the restart the window still keeps it"
    );
    // Time views of what was kept, after the restart: from segment 2's time, both formats.
    let (_, text) = client.get_text(playlist).await;
    let kept = parse_media(&text).expect("the playlist reads");
    let query = format!("start={}", unix(segment_time(&kept, 2)));
    let (status, text) = client.get_text(&format!("{playlist}?{query}")).await;
    assert_eq!(status, 200, "{text}");
    let view = parse_media(&text).expect("the view reads");
    assert_eq!(view.media_sequence, Some(2), "{text}");
    let (status, text) = client
        .get_text(&format!("/ldash/download/live/stream.mpd?{query}"))
        .await;
    assert_eq!(status, 200, "{text}");
    let mpd = ldash::media::mpd::parse(text.as_bytes()).expect("the MPD view parses");
    assert!(
        mpd.representations()
            .filter_map(|r| r.template.as_ref())
            .all(|t| t.start_number == 2),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_goes_once_older_than_the_dvr_window() {
    let server = TestServer::start_with(|c| c.dvr_window = Duration::from_secs(1)).await;
    let mut events = server.store.subscribe();
    server.put_recorded_stream("live").await;
    let client = server.client_for(Proto::H1).await;
    until_mentions(&client, "/ldash/download/live/stream.0.m3u8", "chunk-stream0-00002.m4s").await;
    // Kept for the window and two 1 s segments: a DELETE right after the upload waits.
    assert_eq!(delete(&client, "live/chunk-stream0-00002.m4s").await, 202);
    let mut gone = Vec::new();
    while gone.len() < 2 {
        match tokio::time::timeout(BOUND, events.recv()).await {
            Ok(Ok(StoreEvent::Removed { path, .. })) => gone.push(path.to_string()),
            Ok(_) => {}
            Err(_) => panic!("the segments did not age out within {BOUND:?} (gone: {gone:?})"),
        }
    }
    gone.sort();
    assert_eq!(
        gone,
        ["live/chunk-stream0-00002.m4s", "live/chunk-stream1-00002.m4s"],
        "every segment ages out, deleted by its encoder or not; nothing else goes"
    );
    let (status, _) = client.get_text("/ldash/download/live/chunk-stream0-00002.m4s").await;
    assert_eq!(status, 404, "gone past the window");
    // Nothing kept: a view of any time finds nothing, in either format.
    for manifest in ["stream.mpd", "stream.0.m3u8"] {
        let (status, why) = client
            .get_text(&format!("/ldash/download/live/{manifest}?start=1700000000"))
            .await;
        assert_eq!(status, 404, "{manifest}: {why}");
        assert!(why.contains("no segment in that interval"), "{manifest}: {why}");
    }
    let (status, _) = client.get_text("/ldash/download/live/init-stream0.m4s").await;
    assert_eq!(status, 200, "init segments stay with their stream");
    assert_eq!(
        delete(&client, "live/init-stream0.m4s").await,
        204,
        "a DELETE of anything but a kept segment is carried out at once"
    );
}

/// A packaged channel (CMAF ingest) whose encoder restarted: a view across the two runs is one
/// VOD playlist with a discontinuity, and one static MPD of two Periods, the first (the ended run,
/// a SegmentTimeline) cut at its segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_across_a_packaged_channels_two_runs_keeps_both_periods() {
    let (Some(ffmpeg), Some(_)) = (require_tool("ffmpeg"), require_tool("ffprobe")) else {
        return;
    };
    let server = TestServer::start_with(|c| c.dvr_window = Duration::from_secs(600)).await;
    let channel = server.url(Proto::H1, "/ldash/upload/ch1");
    let first = CmafIngest::test_stream(&channel, false, false, 4);
    // The encoder restarted with its clock elsewhere: a new run, a new Period.
    let second = CmafIngest {
        offset: 1000.0,
        ..CmafIngest::test_stream(&channel, false, false, 4)
    };
    for run in [first, second] {
        let mut encoder = Encoder::start(run.command(&ffmpeg)).expect("ffmpeg starts");
        match tokio::time::timeout(BOUND, encoder.child.wait()).await {
            Ok(Ok(status)) => assert!(status.success(), "ffmpeg failed: {}", encoder.log().await),
            _ => panic!("ffmpeg did not end its 4 s run within {BOUND:?}"),
        }
    }
    let client = server.client_for(Proto::H1).await;
    let playlist = "/ldash/download/ch1/stream.video.m3u8";
    let text = until_mentions(&client, playlist, "#EXT-X-DISCONTINUITY").await;
    let live = parse_media(&text).expect("the playlist reads");
    let runs: Vec<&common::hls_check::Segment> = live.segments.iter().filter(|s| s.extinf.is_some()).collect();
    let boundary = runs
        .iter()
        .position(|s| s.discontinuity)
        .unwrap_or_else(|| panic!("a discontinuity between the runs:\n{text}"));
    assert!(
        boundary >= 2 && runs.len() >= boundary + 2,
        "two segments each side:\n{text}"
    );
    // From the first run's second complete segment to the second run's second.
    let from = segment_time(&live, runs[1].msn) + Duration::from_millis(1);
    let to = segment_time(&live, runs[boundary + 1].msn) + Duration::from_millis(1);
    let query = format!("start={}&end={}", unix(from), unix(to));
    past(to + Duration::from_secs(3)).await;

    let (status, text) = client.get_text(&format!("{playlist}?{query}")).await;
    assert_eq!(status, 200, "{text}");
    let vod = parse_media(&text).expect("the VOD playlist reads");
    assert_eq!(vod.playlist_type.as_deref(), Some("VOD"), "{text}");
    assert!(vod.endlist, "{text}");
    let numbers: Vec<u64> = vod.segments.iter().map(|s| s.msn).collect();
    let expected: Vec<u64> = runs[1..=boundary + 1].iter().map(|s| s.msn).collect();
    assert_eq!(numbers, expected, "both runs' segments in the interval:\n{text}");
    assert!(
        vod.segments.iter().filter(|s| s.discontinuity).count() == 1,
        "one discontinuity:\n{text}"
    );
    let given: f64 = vod.segments.iter().filter_map(|s| s.extinf).sum();
    let url = server.url(Proto::H1, &format!("/ldash/download/ch1/stream.m3u8?{query}"));
    let probed = probe_duration(&url).unwrap_or_else(|e| panic!("ffprobe {url}: {e}"));
    println!("across two runs: the VOD playlist lists {given:.2} s, ffprobe reads {probed:.2} s of video");
    assert!(
        (probed - given).abs() <= 0.5,
        "ffprobe reads {probed:.2} s of the {given:.2} s listed"
    );

    let (status, text) = client
        .get_text(&format!("/ldash/download/ch1/stream.mpd?{query}"))
        .await;
    assert_eq!(status, 200, "{text}");
    let mpd = ldash::media::mpd::parse(text.as_bytes()).expect("the VOD MPD parses");
    assert!(!mpd.dynamic, "{text}");
    assert_eq!(mpd.periods.len(), 2, "both runs:\n{text}");
    assert_eq!(mpd.periods[0].start, Some(Duration::ZERO));
    let first_run = mpd.periods[0]
        .adaptation_sets
        .iter()
        .flat_map(|a| &a.representations)
        .find_map(|r| r.template.clone())
        .expect("the first run's template");
    assert!(first_run.has_timeline, "the ended run lists its segments:\n{text}");
    assert_eq!(
        first_run.start_number, runs[1].msn,
        "cut at the first run's segments:\n{text}"
    );
    xmllint_validates(text.as_bytes()).unwrap_or_else(|e| panic!("the VOD MPD fails the schema: {e}\n{text}"));
    server.stop().await;
}
