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
use common::{client::Client, require_tool, Proto, TestServer};
use ldash::store::StoreEvent;

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
    let Some(ffmpeg) = require_tool("ffmpeg") else {
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
    let _ = encoder.stop().await;
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
    let (status, _) = client.get_text("/ldash/download/live/init-stream0.m4s").await;
    assert_eq!(status, 200, "init segments stay with their stream");
    assert_eq!(
        delete(&client, "live/init-stream0.m4s").await,
        204,
        "a DELETE of anything but a kept segment is carried out at once"
    );
}
