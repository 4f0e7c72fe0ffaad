//! CMAF ingest (DASH-IF live media ingest, interface 1) end to end: the real ffmpeg POSTs each track
//! as one fragmented-MP4 stream to `{channel}/Streams({track})`, ldash packages the channel, and
//! what it serves is checked over HTTP/1.1, HTTP/2 and HTTP/3: the MPD against the MPEG schema, the
//! LL-HLS playlists, every segment decoded by ffprobe, parts against their segment, the window, the
//! end of the channel, a reconnect, and the refusal of bad tracks.

mod common;

use std::time::Duration;

use common::client::Client;
use common::encoder::{ffprobe_decodes, xmllint_validates, Encoder};
use common::{require_tool, Proto, TestServer, ALL_PROTOS};
use ldash::store::StoreEvent;
use testkit::encoder::CmafIngest;

const CHANNEL: &str = "/ldash/upload/ch1";

/// ffmpeg posting `ingest`'s tracks.
fn encoder(ffmpeg: &std::path::Path, ingest: &CmafIngest) -> Encoder {
    Encoder::start(ingest.command(ffmpeg)).expect("ffmpeg starts")
}

/// The whole body of a stored entry, once it is complete.
async fn whole(entry: &std::sync::Arc<ldash::store::Entry>) -> String {
    let mut reader = entry.reader(0, None);
    let mut text = Vec::new();
    while let Some(Ok(chunk)) = reader.next_chunk().await {
        text.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The tools these tests need; None (the test skips) when one is missing.
fn tools(more: &[&str]) -> Option<std::path::PathBuf> {
    let ffmpeg = require_tool("ffmpeg")?;
    more.iter().all(|tool| require_tool(tool).is_some()).then_some(ffmpeg)
}

/// A media playlist's complete segments (URI) and parts (URI, length, offset).
fn segments_and_parts(text: &str) -> (Vec<String>, Vec<(String, u64, u64)>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut segments = Vec::new();
    let mut parts = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("#EXTINF:") {
            segments.push(lines.get(i + 1).map(|l| l.to_string()).unwrap_or_default());
        } else if let Some(attrs) = line.strip_prefix("#EXT-X-PART:") {
            let field = |name: &str| {
                attrs
                    .split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or_default()
                    .to_owned()
            };
            let range = field("BYTERANGE");
            let (len, offset) = range.split_once('@').expect("a part's BYTERANGE is len@offset");
            parts.push((field("URI"), len.parse().expect("len"), offset.parse().expect("offset")));
        }
    }
    (segments, parts)
}

/// The checks of one protocol: the MPD, the multivariant playlist, and for each track a complete
/// segment that decodes and equals its parts.
async fn check_channel(client: &Client, proto: Proto, tracks: &[&str]) {
    let (status, mpd) = client.get_text("/ldash/download/ch1/stream.mpd").await;
    assert_eq!(status, 200, "{proto:?}: the channel's MPD\n{mpd}");
    xmllint_validates(mpd.as_bytes()).unwrap_or_else(|e| panic!("{proto:?}: the MPD is not schema-valid: {e}\n{mpd}"));
    assert!(mpd.contains("type=\"dynamic\""), "{mpd}");
    assert!(mpd.contains("availabilityTimeOffset="), "low-latency rewrite: {mpd}");
    assert!(mpd.contains("<UTCTiming"), "{mpd}");
    assert!(mpd.contains("<ServiceDescription"), "{mpd}");
    for track in tracks {
        assert!(
            mpd.contains(&format!("<Representation id=\"{track}\"")),
            "{track} in {mpd}"
        );
    }
    assert!(mpd.contains("codecs=\"avc1."), "{mpd}");
    if tracks.contains(&"audio") {
        assert!(mpd.contains("codecs=\"mp4a.40.2\""), "{mpd}");
    }

    let (status, master) = client.get_text("/ldash/download/ch1/stream.m3u8").await;
    assert_eq!(status, 200, "{proto:?}: {master}");
    let variants = tracks.iter().filter(|t| t.starts_with("video")).count();
    assert_eq!(master.matches("#EXT-X-STREAM-INF:").count(), variants, "{master}");
    if tracks.contains(&"audio") {
        assert!(master.contains("#EXT-X-MEDIA:TYPE=AUDIO"), "{master}");
        assert!(master.contains("mp4a.40.2"), "{master}");
    }

    for track in tracks {
        let route = format!("/ldash/download/ch1/stream.{track}.m3u8");
        let (status, playlist) = client.get_text(&route).await;
        assert_eq!(status, 200, "{proto:?} {route}: {playlist}");
        assert!(playlist.contains("#EXT-X-PART-INF:PART-TARGET="), "{playlist}");
        assert!(
            playlist.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES"),
            "{playlist}"
        );
        assert!(playlist.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{playlist}");
        let (segments, parts) = segments_and_parts(&playlist);
        let complete = segments
            .last()
            .unwrap_or_else(|| panic!("a complete segment in {playlist}"));
        let segment = client.get_ok(&format!("/ldash/download/ch1/{complete}")).await;
        let init = client.get_ok(&format!("/ldash/download/ch1/init-{track}.m4s")).await;
        ffprobe_decodes(&init, &segment).unwrap_or_else(|e| panic!("{proto:?} {complete}: {e}"));
        let mut joined = Vec::new();
        for (uri, len, offset) in parts.iter().filter(|(uri, ..)| uri == complete) {
            let part = client
                .get(&format!("/ldash/download/ch1/{uri}"))
                .header("range", format!("bytes={offset}-{}", offset + len - 1))
                .fetch()
                .await;
            assert_eq!(part.status, 206, "{proto:?} part of {uri}");
            joined.extend_from_slice(&part.bytes().await.expect("the part's body"));
        }
        assert!(!joined.is_empty(), "{complete} has parts in {playlist}");
        assert_eq!(joined, segment, "{proto:?}: the parts of {complete} concatenate to it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ffmpeg_cmaf_ingest_is_packaged_into_ll_dash_and_ll_hls_over_every_protocol() {
    let Some(ffmpeg) = tools(&["ffprobe", "xmllint"]) else {
        return;
    };
    let server = TestServer::start_with(|c| c.window = 4).await;
    let ingest = CmafIngest::test_stream(&server.url(Proto::H1, CHANNEL), true, true, 30);
    let mut ffmpeg = encoder(&ffmpeg, &ingest);
    // Six segments of each track started: the window of 4 has moved on.
    for track in ["video_hi", "video_lo", "audio"] {
        server
            .upload_started(&format!("ch1/chunk-{track}-00006.m4s"), Duration::from_secs(30))
            .await;
    }
    let tracks = ["video_hi", "video_lo", "audio"];
    // Segment 4 is in the window of 4 while segment 6 is the newest (the checks below take a
    // couple of seconds, after which it may have left).
    for track in ["video_hi", "video_lo", "audio"] {
        assert!(
            server.store.get(&format!("ch1/chunk-{track}-00004.m4s")).is_some(),
            "segment 4 of {track} is in the window of 4: the store holds {:?}",
            server
                .store
                .list("ch1")
                .iter()
                .map(|e| e.path().to_owned())
                .collect::<Vec<_>>()
        );
    }
    for proto in ALL_PROTOS {
        let client = server.client_for(proto).await;
        check_channel(&client, proto, &tracks).await;
    }

    // One timeline: the tracks' segments of one number start at the same media time (within a
    // frame of audio), and the oldest ones left the window.
    let client = server.client_for(Proto::H2Tls).await;
    for track in tracks {
        for gone in [1, 2] {
            let route = format!("/ldash/download/ch1/chunk-{track}-{gone:05}.m4s");
            let status = client.get(&route).fetch().await.status;
            assert_eq!(status, 404, "segment {gone} of {track} left the window of 4");
        }
    }
    let (_, list) = client.get_text("/ldash/").await;
    assert!(
        list.contains("ch1/stream.mpd"),
        "the stream list names the channel: {list}"
    );

    let scrape = testkit::metrics::scrape(server.metrics.expect("metrics listener"))
        .await
        .expect("a scrape");
    assert_eq!(scrape.get("ldash_ingest_tracks"), 3.0, "three tracks being received");
    assert_eq!(scrape.get("ldash_ingest_refused_total"), 0.0);

    let still_running = ffmpeg.child.try_wait().expect("ffmpeg status").is_none();
    let _ = ffmpeg.stop().await;
    assert!(
        still_running,
        "ffmpeg ran to the end of the checks: {}",
        ffmpeg.log().await
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_channel_ends_when_its_posts_end_and_at_a_delete() {
    let Some(program) = tools(&["xmllint"]) else {
        return;
    };
    let server = TestServer::start_with(|c| c.end_after_segments = 1).await;
    let mut events = server.store.subscribe();
    let ingest = CmafIngest::test_stream(&server.url(Proto::H1, CHANNEL), false, true, 4);
    let mut ffmpeg = encoder(&program, &ingest);
    let status = ffmpeg.child.wait().await.expect("ffmpeg runs to its end");
    assert!(status.success(), "ffmpeg: {}", ffmpeg.log().await);
    // A second after the last POST ended (one segment), the MPD is stored again: static.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(StoreEvent::Started { path, entry }) if &*path == "ch1/stream.mpd" => {
                    if whole(&entry).await.contains("type=\"static\"") {
                        return;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(err) => panic!("store events: {err}"),
            }
        }
    })
    .await
    .expect("the final MPD within 10 s of the end");
    // Served (rewritten) once its upload completed.
    let mpd = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let text = server
                .get(Proto::H1, "/ldash/download/ch1/stream.mpd")
                .await
                .text()
                .await;
            if text.contains("type=\"static\"") {
                return text;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the final MPD is served once stored");
    xmllint_validates(mpd.as_bytes()).unwrap_or_else(|e| panic!("the final MPD: {e}\n{mpd}"));
    // The channel ended after both POSTs had: what they delivered is counted.
    let scrape = testkit::metrics::scrape(server.metrics.expect("metrics listener"))
        .await
        .expect("a scrape");
    let chunks = scrape.get("ldash_ingest_chunks_total");
    // Four seconds of video and audio in 0.2 s fragments (AAC's are a little longer).
    assert!((35.0..=42.0).contains(&chunks), "{chunks} chunks packaged");
    assert!(mpd.contains("mediaPresentationDuration="), "{mpd}");
    for proto in ALL_PROTOS {
        let (status, playlist) = server
            .client_for(proto)
            .await
            .get_text("/ldash/download/ch1/stream.video.m3u8")
            .await;
        assert_eq!(status, 200, "{proto:?}");
        assert!(playlist.contains("#EXT-X-ENDLIST"), "{proto:?}: {playlist}");
    }

    // A DELETE of a channel being received ends it at once.
    let ingest = CmafIngest {
        channel: server.url(Proto::H1, "/ldash/upload/ch2"),
        ..CmafIngest::test_stream("", false, false, 30)
    };
    let mut ffmpeg = encoder(&program, &ingest);
    server
        .upload_started("ch2/chunk-video-00002.m4s", Duration::from_secs(20))
        .await;
    let client = server.client_for(Proto::H1).await;
    let deleted = client.request(http::Method::DELETE, "/ldash/upload/ch2").fetch().await;
    assert_eq!(deleted.status, 204);
    let (_, mpd) = client.get_text("/ldash/download/ch2/stream.mpd").await;
    assert!(mpd.contains("type=\"static\""), "{mpd}");
    let _ = ffmpeg.stop().await;
    server.stop().await;
}

const INIT: &[u8] = include_bytes!("fixtures/ffmpeg/init-stream0.m4s");
const SEGMENT: &[u8] = include_bytes!("fixtures/ffmpeg/chunk-stream0-00002.m4s");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tracks_are_refused_with_a_reason_and_publish_nothing() {
    // An upload limit between the init segment (776 bytes) and the fixture's fragments (about 10 KB).
    let server = TestServer::start_with(|c| c.max_upload_bytes = 4096).await;
    let truncated = [INIT, &SEGMENT[..3_000]].concat();
    let whole = [INIT, SEGMENT].concat();
    let cases: [(&str, Vec<u8>, u16, &str); 4] = [
        (
            "garbage",
            b"GET / HTTP/1.1\r\nHost: example\r\n\r\n".repeat(20),
            415,
            "not a CMAF track",
        ),
        ("no-init", SEGMENT.to_vec(), 400, "no init segment"),
        ("truncated", truncated, 400, "ended inside a fragment"),
        ("too-large", whole, 413, "larger than the upload limit"),
    ];
    for proto in ALL_PROTOS {
        let client = server.client_for(proto).await;
        for (name, body, status, reason) in &cases {
            let route = format!("/ldash/upload/bad-{name}/Streams(video.cmfv)");
            let response = client
                .request(http::Method::POST, &route)
                .body(body.clone())
                .fetch()
                .await;
            let got = response.status;
            let text = response.text().await;
            assert_eq!(got, *status, "{proto:?} {name}: {text}");
            assert!(text.contains(reason), "{proto:?} {name}: {text:?} says {reason:?}");
            let listed = server.store.list(&format!("bad-{name}"));
            let names: Vec<&str> = listed.iter().map(|e| e.path().as_str()).collect();
            assert!(names.is_empty(), "{proto:?} {name}: nothing is published: {names:?}");
        }
    }
    let metrics = server.metrics.expect("the test server's metrics listener");
    let scrape = testkit::metrics::scrape(metrics).await.expect("a scrape");
    // At least one per request (a client may send a refused request again).
    let refused = scrape.get("ldash_ingest_refused_total");
    assert!(refused >= 12.0, "4 bad tracks x 3 protocols: {refused}");
    assert_eq!(scrape.get("ldash_ingest_chunks_total"), 0.0);
    assert_eq!(scrape.get("ldash_ingest_tracks"), 0.0, "none in progress");
    server.stop().await;
}

/// The availabilityStartTime of an MPD, as written.
fn ast(mpd: &str) -> String {
    mpd.split("availabilityStartTime=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .map(str::to_owned)
        .expect("availabilityStartTime")
}

/// A 3 s run of the one-track encoder into `server`'s channel, to its end; the channel's MPD then.
async fn first_run(ffmpeg: &std::path::Path, server: &TestServer) -> String {
    let first = CmafIngest::test_stream(&server.url(Proto::H1, CHANNEL), false, false, 3);
    let mut encoder1 = encoder(ffmpeg, &first);
    let status = encoder1.child.wait().await.expect("ffmpeg runs to its end");
    assert!(status.success(), "ffmpeg: {}", encoder1.log().await);
    let (_, mpd) = server
        .client_for(Proto::H1)
        .await
        .get_text("/ldash/download/ch1/stream.mpd")
        .await;
    mpd
}

/// The same encoder back into `server`'s channel, its timestamps continuing from where the clock of
/// the channel whose MPD was `before` is now; and the first segment number it surely uploads.
fn continuing(server: &TestServer, before: &str) -> (CmafIngest, u64) {
    let anchor = humantime::parse_rfc3339(&ast(before)).expect("an RFC 3339 time");
    let offset = std::time::SystemTime::now()
        .duration_since(anchor)
        .expect("the anchor is in the past")
        .as_secs_f64();
    let again = CmafIngest {
        offset,
        ..CmafIngest::test_stream(&server.url(Proto::H1, CHANNEL), false, false, 30)
    };
    (again, (offset.floor() as u64) + 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_encoder_that_reconnects_on_the_same_timeline_continues_the_channel() {
    let Some(ffmpeg) = tools(&[]) else {
        return;
    };
    let server = TestServer::start().await;
    let before = first_run(&ffmpeg, &server).await;
    let client = server.client_for(Proto::H2Tls).await;
    // The same encoder back, its timestamps continuing from where the channel's clock is now.
    let (again, next) = continuing(&server, &before);
    let mut encoder2 = encoder(&ffmpeg, &again);
    server
        .upload_started(&format!("ch1/chunk-video-{next:05}.m4s"), Duration::from_secs(20))
        .await;
    let (_, after) = client.get_text("/ldash/download/ch1/stream.mpd").await;
    assert_eq!(ast(&after), ast(&before), "the channel keeps its timeline:\n{after}");
    assert!(
        server.store.get("ch1/chunk-video-00001.m4s").is_some(),
        "the first run's segments stay"
    );
    let (status, playlist) = client.get_text("/ldash/download/ch1/stream.video.m3u8").await;
    assert_eq!(status, 200, "{playlist}");
    assert!(!playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    assert!(playlist.contains(&format!("chunk-video-{next:05}.m4s")), "{playlist}");
    let _ = encoder2.stop().await;
    server.stop().await;
}

/// ldash restarted between two POSTs of a channel: the channel is picked up from what it stored
/// (manifest, init segment, segments), so a DELETE ends it, and an encoder that reconnects on the
/// same timeline goes on in the same Period with the same availabilityStartTime and numbering, the
/// earlier segments kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_ldash_picks_a_packaged_channel_up_where_it_was() {
    let Some(ffmpeg) = tools(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("root");
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let before = first_run(&ffmpeg, &server).await;
    server.stop().await;

    let server = TestServer::start_in(dir.path(), |_| {}).await;
    // A DELETE of the channel before any POST ends it: the packager picks it up first.
    let h1 = server.client_for(Proto::H1).await;
    let deleted = h1.request(http::Method::DELETE, "/ldash/upload/ch1").fetch().await;
    assert_eq!(deleted.status, 204);
    let (_, ended) = h1.get_text("/ldash/download/ch1/stream.mpd").await;
    assert!(ended.contains("type=\"static\""), "{ended}");
    // The encoder back on the same timeline: the channel goes on.
    let (again, next) = continuing(&server, &before);
    let mut encoder2 = encoder(&ffmpeg, &again);
    server
        .upload_started(&format!("ch1/chunk-video-{next:05}.m4s"), Duration::from_secs(20))
        .await;
    let client = server.client_for(Proto::H3).await;
    let (_, after) = client.get_text("/ldash/download/ch1/stream.mpd").await;
    assert_eq!(ast(&after), ast(&before), "the channel keeps its timeline:\n{after}");
    assert!(
        after.contains("<Period id=\"0\"") && !after.contains("<Period id=\"1\""),
        "the same Period, no new run: {after}"
    );
    assert!(
        after.contains("startNumber=\"1\""),
        "the Period still starts with segment 1 (a new channel would start where the encoder came back): {after}"
    );
    assert!(
        server.store.get("ch1/chunk-video-00002.m4s").is_some(),
        "the segments from before the restart stay"
    );
    let (status, playlist) = client.get_text("/ldash/download/ch1/stream.video.m3u8").await;
    assert_eq!(status, 200, "{playlist}");
    assert!(!playlist.contains("#EXT-X-DISCONTINUITY"), "{playlist}");
    assert!(playlist.contains(&format!("chunk-video-{next:05}.m4s")), "{playlist}");
    let _ = encoder2.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_encoder_whose_timeline_jumps_starts_a_new_period_and_an_hls_discontinuity() {
    let Some(ffmpeg) = tools(&["ffprobe", "xmllint"]) else {
        return;
    };
    let server = TestServer::start().await;
    let mut events = server.store.subscribe();
    let first = CmafIngest::test_stream(&server.url(Proto::H1, CHANNEL), false, true, 3);
    let mut encoder1 = encoder(&ffmpeg, &first);
    let status = encoder1.child.wait().await.expect("ffmpeg runs to its end");
    assert!(status.success(), "ffmpeg: {}", encoder1.log().await);
    // The encoder back with its clock 1000 s ahead: not the channel's timeline.
    let again = CmafIngest {
        offset: 1000.0,
        ..CmafIngest::test_stream(&server.url(Proto::H1, CHANNEL), false, true, 30)
    };
    // A player's blocking request for the next part, sent while the encoder is away: it is
    // answered from the new Period once the encoder is back, not held on the manifest it arrived
    // with until the 503 of the three target durations.
    let h2 = server.client_for(Proto::H2Tls).await;
    let (_, before) = h2.get_text("/ldash/download/ch1/stream.video.m3u8").await;
    let (listed, _) = segments_and_parts(&before);
    let last: u64 = listed
        .last()
        .and_then(|s| s.strip_prefix("chunk-video-")?.get(..5)?.parse().ok())
        .unwrap_or_else(|| panic!("the first run's segments: {before}"));
    // The first run's last segment (the one after `last`) stays open until the run ends: the part
    // after it is part 0 of the segment after that, the preload hint.
    assert!(
        before.contains(&format!(
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"chunk-video-{:05}.m4s\"",
            last + 2
        )),
        "{before}"
    );
    let held = format!(
        "/ldash/download/ch1/stream.video.m3u8?_HLS_msn={}&_HLS_part=0",
        last + 2
    );
    let held = h2.get_text(&held);
    let mut encoder2 = encoder(&ffmpeg, &again);
    let ((status, playlist), ()) = tokio::join!(held, async {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !matches!(events.recv().await, Ok(StoreEvent::Started { path, .. }) if path.ends_with(".p1.m4s")) {}
        })
        .await
        .expect("the new run starts within 10 s");
    });
    assert_eq!(status, 200, "the held request: {playlist}");
    assert!(playlist.contains(".p1.m4s"), "answered from the new Period: {playlist}");
    // The new run's third video segment: its first is complete and listed so.
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut seen = 0;
        loop {
            match events.recv().await {
                Ok(StoreEvent::Started { path, .. })
                    if path.starts_with("ch1/chunk-video-") && path.ends_with(".p1.m4s") =>
                {
                    seen += 1;
                    if seen == 3 {
                        return;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(err) => panic!("store events: {err}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        let stored: Vec<String> = server.store.list("ch1").iter().map(|e| e.path().to_string()).collect();
        panic!("the new run's segments within 20 s; stored: {stored:?}")
    });
    for proto in ALL_PROTOS {
        let client = server.client_for(proto).await;
        let (status, mpd) = client.get_text("/ldash/download/ch1/stream.mpd").await;
        assert_eq!(status, 200, "{proto:?}");
        xmllint_validates(mpd.as_bytes()).unwrap_or_else(|e| panic!("{proto:?}: not schema-valid: {e}\n{mpd}"));
        assert!(mpd.contains("<Period id=\"0\" start=\"PT0S\">"), "{mpd}");
        assert!(mpd.contains("<Period id=\"1\""), "{mpd}");
        assert!(
            mpd.contains("initialization=\"init-$RepresentationID$.p1.m4s\""),
            "{mpd}"
        );
        assert_eq!(mpd.matches("availabilityStartTime=").count(), 1);
        // The video playlist goes on across the boundary: a discontinuity, the new init segment,
        // media sequence numbers that only grow.
        let (status, playlist) = client.get_text("/ldash/download/ch1/stream.video.m3u8").await;
        assert_eq!(status, 200, "{proto:?}: {playlist}");
        assert!(playlist.contains("#EXT-X-MAP:URI=\"init-video.m4s\""), "{playlist}");
        assert!(
            playlist.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-video.p1.m4s\""),
            "{playlist}"
        );
        let (segments, _) = segments_and_parts(&playlist);
        let numbers: Vec<u64> = segments
            .iter()
            .filter_map(|s| s.strip_prefix("chunk-video-")?.get(..5)?.parse().ok())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{playlist}");
        let new_run = segments
            .iter()
            .find(|s| s.ends_with(".p1.m4s"))
            .unwrap_or_else(|| panic!("{playlist}"));
        let segment = client.get_ok(&format!("/ldash/download/ch1/{new_run}")).await;
        let init = client.get_ok("/ldash/download/ch1/init-video.p1.m4s").await;
        ffprobe_decodes(&init, &segment).unwrap_or_else(|e| panic!("{proto:?} {new_run}: {e}"));
        let (status, audio) = client.get_text("/ldash/download/ch1/stream.audio.m3u8").await;
        assert_eq!(status, 200, "{proto:?}: {audio}");
        assert!(
            audio.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-audio.p1.m4s\""),
            "{audio}"
        );
    }
    let _ = encoder2.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_post_of_a_track_takes_over_and_the_older_one_is_answered_409() {
    let server = TestServer::start().await;
    let init = ldash::media::cmaf::parse_init(INIT).expect("the fixture's init segment");
    let chunks = ldash::media::cmaf::ChunkScanner::new(Some(&init))
        .push(SEGMENT)
        .expect("the fixture's chunks");
    let first_end = chunks[0].end as usize;
    for proto in ALL_PROTOS {
        let channel = format!("takeover-{proto:?}");
        let route = &format!("/ldash/upload/{channel}/Streams(video.cmfv)");
        let client = server.client_for(proto).await;
        // The older POST: its init segment and first chunk, then it waits.
        let (older, rx) = testkit::client::chunk_channel();
        let sent = tokio::spawn(client.request(http::Method::POST, route).stream(rx).send());
        older
            .send(Ok([INIT, &SEGMENT[..first_end]].concat().into()))
            .await
            .expect("the older POST takes its first bytes");
        let mut events = server.store.subscribe();
        // Its first chunk is packaged: the segment it starts is uploaded.
        tokio::time::timeout(Duration::from_secs(10), async {
            while server
                .store
                .list(&channel)
                .iter()
                .all(|e| !e.path().contains("/chunk-video-"))
            {
                let _ = events.recv().await;
            }
        })
        .await
        .expect("the older POST's first chunk is packaged");
        // The newer POST, whole.
        let newer = client
            .request(http::Method::POST, route)
            .body([INIT, SEGMENT].concat())
            .fetch()
            .await;
        let newer_status = newer.status;
        assert_eq!(newer_status, 200, "{proto:?}: {}", newer.text().await);
        // The older one's next chunk is refused.
        let _ = older.send(Ok(SEGMENT[first_end..].to_vec().into())).await;
        drop(older);
        let answer = tokio::time::timeout(Duration::from_secs(10), sent)
            .await
            .expect("the older POST is answered")
            .expect("the request task");
        let answer = answer.expect("the older POST gets a response");
        let status = answer.status;
        let text = answer.text().await;
        assert_eq!(status, 409, "{proto:?}: {text}");
        assert!(text.contains("newer POST"), "{text}");
    }
    server.stop().await;
}
