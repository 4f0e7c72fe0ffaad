//! LL-HLS end to end from the same ffmpeg DASH ingest: playlists generated on the server, parts as
//! byte ranges of the DASH segments, blocking reload, delta updates and the error rules.

mod common;

use std::time::Duration;

use common::client::Client;
use common::encoder::{ffprobe_decodes, streaming, Ingest};
use common::Proto;

/// A part line of a media playlist.
#[derive(Debug, Clone, PartialEq)]
struct PartLine {
    uri: String,
    len: u64,
    offset: u64,
}

/// What the tests need of a media playlist.
#[derive(Debug, Default)]
struct Media {
    sequence: u64,
    segments: Vec<String>,
    parts: Vec<PartLine>,
    skipped: u64,
    text: String,
}

fn parse_media(text: &str) -> Media {
    let mut media = Media {
        text: text.to_owned(),
        ..Media::default()
    };
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(n) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            media.sequence = n.parse().expect("sequence");
        } else if let Some(n) = line.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS=") {
            media.skipped = n.parse().expect("skipped");
        } else if line.starts_with("#EXTINF:") {
            media.segments.push(lines[i + 1].to_owned());
        } else if let Some(attrs) = line.strip_prefix("#EXT-X-PART:") {
            let uri = attrs
                .split("URI=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .expect("part uri");
            let range = attrs
                .split("BYTERANGE=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .expect("byterange");
            let (len, offset) = range.split_once('@').expect("len@offset");
            media.parts.push(PartLine {
                uri: uri.to_owned(),
                len: len.parse().expect("len"),
                offset: offset.parse().expect("offset"),
            });
        }
    }
    media
}

impl Media {
    /// The live edge: (msn, part index) of the last part.
    fn edge(&self) -> (u64, u64) {
        let last = self.parts.last().expect("a live playlist has parts");
        let msn = self.sequence
            + self.skipped
            + self
                .segments
                .iter()
                .position(|s| *s == last.uri)
                .unwrap_or(self.segments.len()) as u64;
        let index = self.parts.iter().filter(|p| p.uri == last.uri).count() as u64 - 1;
        (msn, index)
    }
}

async fn playlist(client: &Client, route: &str) -> (u16, String, String) {
    let r = client.get(route).fetch().await;
    let status = r.status;
    let cache = r.header("cache-control").to_owned();
    (status, cache, r.text().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_dash_ingest_is_a_conforming_ll_hls_stream() {
    let segment = "live/chunk-stream2-00004.m4s";
    let Some((server, mut encoder)) = streaming(&["ffprobe"], Ingest::PutPersistent, 30, segment).await else {
        return;
    };
    let client = server.client_for(Proto::H2Tls).await;

    // The multivariant playlist, built from the MPD.
    let (status, _, main) = playlist(&client, "/ldash/download/live/stream.m3u8").await;
    assert_eq!(status, 200, "{main}");
    assert_eq!(
        main.matches("#EXT-X-STREAM-INF:").count(),
        2,
        "two video variants: {main}"
    );
    assert!(main.contains("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\""), "{main}");
    assert!(
        main.contains("RESOLUTION=640x360") && main.contains("RESOLUTION=320x180"),
        "{main}"
    );
    assert!(
        main.contains("CODECS=\"avc1.") && main.contains(",mp4a.40.2\""),
        "{main}"
    );
    for uri in ["stream.0.m3u8", "stream.1.m3u8", "stream.2.m3u8"] {
        assert!(main.contains(uri), "{uri} listed: {main}");
    }

    // A media playlist: every rule the strict unit-test reader checks, on the real stream.
    let (status, cache, text) = playlist(&client, "/ldash/download/live/stream.0.m3u8").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        cache, "public, max-age=1",
        "non-blocking playlists are cached for half a target duration"
    );
    let media = parse_media(&text);
    // Every part is at most PART-TARGET, and at least 85% of it but for the last part of a segment.
    let target: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PART-INF:PART-TARGET="))
        .and_then(|t| t.parse().ok())
        .expect("PART-TARGET");
    let durations: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .map(|attrs| {
            let duration = attrs
                .split(',')
                .find_map(|a| a.strip_prefix("DURATION="))
                .and_then(|d| d.parse().ok());
            let uri = attrs
                .split("URI=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("");
            (uri.to_owned(), duration.expect("part duration"))
        })
        .collect();
    for (i, (uri, duration)) in durations.iter().enumerate() {
        assert!(
            *duration <= target + 1e-9,
            "part {i} of {uri} is longer than PART-TARGET {target}: {text}"
        );
        let last_of_segment = durations.get(i + 1).is_none_or(|(next, _)| next != uri);
        assert!(
            last_of_segment || *duration >= 0.85 * target,
            "part {i} of {uri} is under 85% of PART-TARGET: {text}"
        );
    }
    // The same playlists over every HTTP version.
    for proto in common::ALL_PROTOS {
        let other = server.client_for(proto).await;
        let (status, _, text) = playlist(&other, "/ldash/download/live/stream.m3u8").await;
        assert_eq!(status, 200, "{proto:?}: {text}");
        assert_eq!(text.matches("#EXT-X-STREAM-INF:").count(), 2, "{proto:?}: {text}");
        let (status, _, text) = playlist(&other, "/ldash/download/live/stream.2.m3u8").await;
        assert_eq!(status, 200, "{proto:?}: {text}");
        assert!(text.contains("#EXT-X-PART:"), "{proto:?}: {text}");
    }
    // The stream list knows the stream, as JSON and as HTML with links to both views.
    let list = client.get("/ldash/streams").fetch().await;
    assert_eq!(list.header("content-type"), "application/json");
    let list: serde_json::Value = serde_json::from_str(&list.text().await).expect("JSON");
    let stream = list.as_array().and_then(|a| a.first()).expect("one stream");
    assert_eq!(stream["manifest"], "live/stream.mpd");
    assert_eq!(stream["state"], "live");
    assert_eq!(stream["representations"].as_array().map(Vec::len), Some(3), "{stream}");
    let page = client.get("/ldash/").fetch().await.text().await;
    assert!(
        page.contains("/ldash/play/live/stream.mpd") && page.contains("/ldash/play/live/stream.m3u8"),
        "{page}"
    );
    assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.2"), "{text}");
    assert!(text.contains("#EXT-X-MAP:URI=\"init-stream0.m4s\""), "{text}");
    assert!(text.contains("#EXT-X-RENDITION-REPORT:URI=\"stream.1.m3u8\""), "{text}");
    assert!(text.contains("#EXT-X-RENDITION-REPORT:URI=\"stream.2.m3u8\""), "{text}");
    assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART"), "{text}");
    assert!(!media.segments.is_empty(), "{text}");

    // The parts of a complete segment concatenate to the segment, and decode with the init segment.
    let complete = media.segments.last().expect("a complete segment").clone();
    let parts: Vec<&PartLine> = media.parts.iter().filter(|p| p.uri == complete).collect();
    assert!(parts.len() >= 4, "a 1 s segment has 5 parts of 0.2 s: {text}");
    let whole = client
        .get(&format!("/ldash/download/live/{complete}"))
        .fetch()
        .await
        .bytes()
        .await
        .expect("bytes");
    let mut joined = Vec::new();
    for part in &parts {
        let range = format!("bytes={}-{}", part.offset, part.offset + part.len - 1);
        let r = client
            .get(&format!("/ldash/download/live/{}", part.uri))
            .header("range", range.as_str())
            .fetch()
            .await;
        assert_eq!(r.status, 206, "{range}");
        joined.extend_from_slice(&r.bytes().await.expect("part bytes"));
    }
    assert_eq!(
        joined,
        whole.to_vec(),
        "the parts of {complete} concatenate to the segment"
    );
    let init = client
        .get("/ldash/download/live/init-stream0.m4s")
        .fetch()
        .await
        .bytes()
        .await
        .expect("init");
    ffprobe_decodes(&init, &joined).unwrap_or_else(|e| panic!("init + parts decode: {e}"));

    // Blocking reload: the next part is asked for before it exists and answered once it is complete.
    let (_, _, text) = playlist(&client, "/ldash/download/live/stream.0.m3u8").await;
    let now = parse_media(&text);
    let (msn, part) = now.edge();
    let last = now.parts.last().expect("part").clone();
    let before = server.store.get(&format!("live/{}", last.uri)).map_or(0, |e| e.len());
    let route = format!(
        "/ldash/download/live/stream.0.m3u8?_HLS_msn={msn}&_HLS_part={}",
        part + 1
    );
    let (status, cache, text) = playlist(&client, &route).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        cache, "public, max-age=6",
        "blocking responses are cached for six target durations"
    );
    let after = parse_media(&text);
    let next = after
        .parts
        .iter()
        .find(|p| p.offset >= last.offset + last.len || p.uri != last.uri);
    let next = next.expect("the response holds the part asked for");
    let size = server.store.get(&format!("live/{}", next.uri)).map_or(0, |e| e.len());
    assert!(
        next.uri != last.uri || before < next.offset + next.len,
        "the part did not exist when asked for"
    );
    assert!(
        size >= next.offset + next.len || next.uri != last.uri,
        "the response came after the part completed"
    );

    // The error rules: 400 at once for directives too far ahead or malformed.
    // Each asks relative to a fresh live edge: the stream moves on while the test runs.
    let fresh_edge = || async {
        parse_media(&playlist(&client, "/ldash/download/live/stream.0.m3u8").await.2)
            .edge()
            .0
    };
    let far = format!("/ldash/download/live/stream.0.m3u8?_HLS_msn={}", fresh_edge().await + 3);
    let (far_status, _, far_text) = playlist(&client, &far).await;
    assert_eq!(
        far_status, 400,
        "an msn more than two past the last ({far}); the playlist then: {far_text}\nthe playlist before: {}",
        now.text
    );
    assert_eq!(
        playlist(&client, "/ldash/download/live/stream.0.m3u8?_HLS_part=1")
            .await
            .0,
        400,
        "_HLS_part without _HLS_msn"
    );
    // Part 99 of a complete segment would mean part 0 of the next; of the next segment it is far beyond.
    let beyond = format!(
        "/ldash/download/live/stream.0.m3u8?_HLS_msn={}&_HLS_part=99",
        fresh_edge().await + 1
    );
    assert_eq!(
        playlist(&client, &beyond).await.0,
        400,
        "a part beyond the advance part limit"
    );

    // Delta update: merged into the previous full playlist it gives the full playlist.
    let mut merged_ok = false;
    for _ in 0..5 {
        let (_, _, full) = playlist(&client, "/ldash/download/live/stream.0.m3u8").await;
        let (_, _, delta) = playlist(&client, "/ldash/download/live/stream.0.m3u8?_HLS_skip=YES").await;
        let (full, delta) = (parse_media(&full), parse_media(&delta));
        if full.segments.last() != delta.segments.last() {
            continue; // a segment completed in between: try again
        }
        assert!(
            delta.skipped > 0 || full.segments.len() <= 6,
            "old segments are skipped: {}",
            delta.text
        );
        assert_eq!(delta.sequence, full.sequence, "the delta keeps the media sequence");
        let skipped = delta.skipped as usize;
        assert_eq!(full.segments[skipped..], delta.segments[..], "skipped + delta = full");
        merged_ok = true;
        break;
    }
    assert!(merged_ok, "a delta update matched a full playlist");

    // gzip when the client accepts it.
    let r = client
        .get("/ldash/download/live/stream.0.m3u8")
        .header("accept-encoding", "gzip")
        .fetch()
        .await;
    assert_eq!(r.header("content-encoding"), "gzip");

    // The encoder dies: a blocking request for the next segment is answered 503 after three target
    // durations, not held forever.
    encoder.stop().await.expect("kill ffmpeg");
    let (_, _, text) = playlist(&client, "/ldash/download/live/stream.0.m3u8").await;
    let (msn, _) = parse_media(&text).edge();
    let route = format!("/ldash/download/live/stream.0.m3u8?_HLS_msn={}", msn + 1);
    let started = std::time::Instant::now();
    let (status, _, _) = playlist(&client, &route).await;
    assert_eq!(status, 503, "a stalled stream answers a blocking request with 503");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "well under hls.js's 10 s give-up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlists_end_when_ffmpeg_removes_the_stream_at_exit() {
    let segment = "live/chunk-stream0-00002.m4s";
    let Some((server, mut encoder)) = streaming(&[], Ingest::PutRemoveAtExit, 4, segment).await else {
        return;
    };
    let mut events = server.store.subscribe();
    let client = server.client_for(Proto::H2Tls).await;
    let (status, _, live) = playlist(&client, "/ldash/download/live/stream.0.m3u8").await;
    assert_eq!(status, 200, "{live}");
    assert!(!live.contains("#EXT-X-ENDLIST"), "a live playlist does not end: {live}");
    let status = tokio::time::timeout(Duration::from_secs(30), encoder.child.wait())
        .await
        .expect("ffmpeg ends")
        .expect("wait");
    assert!(status.success());
    // ffmpeg DELETEs the manifest at exit (possibly after it exits): wait for it on the store's events.
    while server.store.get("live/stream.mpd").is_some() {
        let _ = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("ffmpeg deletes the manifest");
    }
    let route = "/ldash/download/live/stream.0.m3u8?_HLS_msn=999&_HLS_part=0";
    let (status, _, ended) = playlist(&client, route).await;
    assert_eq!(status, 200, "directives are ignored once the stream has ended: {ended}");
    assert!(
        ended.contains("#EXT-X-ENDLIST"),
        "the stream's end is announced: {ended}"
    );
}
