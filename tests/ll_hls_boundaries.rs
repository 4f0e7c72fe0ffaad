//! LL-HLS blocking reloads across segment boundaries, the way Shaka Player and hls.js make them:
//! while segment N grows, ask for `_HLS_msn=N+1&_HLS_part=0&_HLS_skip=YES`, and as soon as that
//! returns ask for the next boundary. ffmpeg opens segment N+1's upload a moment before it finishes
//! segment N: a request held over that moment must still be answered with N+1's first part, never
//! with a 4xx (or a playlist whose media sequence restarts at N+1).

mod common;

use std::time::{Duration, Instant};

use common::client::Client;
use common::encoder::{streaming, Ingest};
use common::Proto;

/// Segment boundaries each player loop crosses.
const BOUNDARIES: u64 = 20;
/// The protocols a player loop runs over.
const PROTOS: [Proto; 3] = [Proto::H1, Proto::H2Tls, Proto::H3];
/// The renditions of the test encoder: two video representations and the audio one.
const RENDITIONS: [&str; 3] = ["0", "1", "2"];
/// How long one playlist request may take: the server holds a blocking request at most three
/// target durations (3 s here), and a boundary comes every second.
const REQUEST_BOUND: Duration = Duration::from_secs(6);

/// One segment as a media playlist lists it.
#[derive(Debug)]
struct Listed {
    /// Its media sequence number, from EXT-X-MEDIA-SEQUENCE, EXT-X-SKIP and its position.
    msn: u64,
    uri: String,
    /// Its parts: (BYTERANGE length, offset, INDEPENDENT=YES).
    parts: Vec<(u64, u64, bool)>,
    /// Listed with EXTINF (complete), or only as parts (growing).
    complete: bool,
}

/// What the test reads from a media playlist.
#[derive(Debug)]
struct MediaPlaylist {
    sequence: u64,
    skipped: u64,
    segments: Vec<Listed>,
    /// EXT-X-PRELOAD-HINT: (URI, BYTERANGE-START).
    hint: Option<(String, u64)>,
}

fn attribute<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let quoted = format!("{name}=\"");
    if let Some(rest) = attrs.split(quoted.as_str()).nth(1) {
        return rest.split('"').next();
    }
    attrs.split(',').find_map(|a| a.strip_prefix(&format!("{name}=")))
}

/// Parses a media playlist as src/media/hls.rs writes it: every listed segment opens with
/// EXT-X-PROGRAM-DATE-TIME, then its EXT-X-PART lines, then (once complete) EXTINF and its URI.
fn parse(text: &str) -> Result<MediaPlaylist, String> {
    let mut playlist = MediaPlaylist {
        sequence: 0,
        skipped: 0,
        segments: Vec::new(),
        hint: None,
    };
    let mut sequence = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(n) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            sequence = Some(n.parse().map_err(|_| format!("bad media sequence {line:?}"))?);
        } else if let Some(n) = line.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS=") {
            playlist.skipped = n.parse().map_err(|_| format!("bad skip {line:?}"))?;
        } else if line.starts_with("#EXT-X-PROGRAM-DATE-TIME:") {
            let sequence = sequence.ok_or("a segment before EXT-X-MEDIA-SEQUENCE")?;
            playlist.sequence = sequence;
            let msn = sequence + playlist.skipped + playlist.segments.len() as u64;
            playlist.segments.push(Listed {
                msn,
                uri: String::new(),
                parts: Vec::new(),
                complete: false,
            });
        } else if let Some(attrs) = line.strip_prefix("#EXT-X-PART:") {
            let segment = playlist.segments.last_mut().ok_or("a part before any segment")?;
            let uri = attribute(attrs, "URI").ok_or(format!("part without URI: {line:?}"))?;
            let range = attribute(attrs, "BYTERANGE").ok_or(format!("part without BYTERANGE: {line:?}"))?;
            let (len, offset) = range
                .split_once('@')
                .and_then(|(l, o)| Some((l.parse().ok()?, o.parse().ok()?)))
                .ok_or(format!("bad BYTERANGE: {line:?}"))?;
            if segment.uri.is_empty() {
                segment.uri = uri.to_owned();
            } else if segment.uri != uri {
                return Err(format!("parts of two segments under one segment: {line:?}"));
            }
            segment.parts.push((len, offset, attrs.contains("INDEPENDENT=YES")));
        } else if line.starts_with("#EXTINF:") {
            let segment = playlist.segments.last_mut().ok_or("EXTINF before any segment")?;
            let uri = lines.next().ok_or("EXTINF without a URI line")?;
            if !segment.uri.is_empty() && segment.uri != uri {
                return Err(format!("EXTINF {uri} closes the parts of {}", segment.uri));
            }
            segment.uri = uri.to_owned();
            segment.complete = true;
        } else if let Some(attrs) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            let uri = attribute(attrs, "URI").ok_or(format!("hint without URI: {line:?}"))?;
            // The draft (4.4.5.3): "Its absence implies a value of 0", as between segments.
            let start = match attribute(attrs, "BYTERANGE-START") {
                Some(s) => s.parse().map_err(|_| format!("bad BYTERANGE-START: {line:?}"))?,
                None => 0,
            };
            playlist.hint = Some((uri.to_owned(), start));
        }
    }
    playlist.sequence = sequence.ok_or("no EXT-X-MEDIA-SEQUENCE")?;
    Ok(playlist)
}

/// The segment URI ffmpeg's template gives representation `rep`'s segment `msn`.
fn segment_uri(rep: &str, msn: u64) -> String {
    format!("chunk-stream{rep}-{msn:05}.m4s")
}

/// The segment number in a segment URI.
fn msn_of(uri: &str) -> Option<u64> {
    uri.strip_suffix(".m4s")?.rsplit('-').next()?.parse().ok()
}

/// The rules every live playlist of this stream keeps: each listed segment's URI matches the
/// number MEDIA-SEQUENCE and SKIP give it, only the last segment grows, and the preload hint points
/// at what comes next.
fn check_consistent(rep: &str, playlist: &MediaPlaylist) -> Result<(), String> {
    let count = playlist.segments.len();
    for (i, segment) in playlist.segments.iter().enumerate() {
        if segment.uri != segment_uri(rep, segment.msn) {
            return Err(format!(
                "segment {} is listed as {} (MEDIA-SEQUENCE {}, SKIPPED {})",
                segment.msn, segment.uri, playlist.sequence, playlist.skipped
            ));
        }
        if i + 1 < count && !segment.complete {
            return Err(format!("segment {} grows but is not the last listed", segment.msn));
        }
    }
    let last = playlist.segments.last().ok_or("no segment listed")?;
    match (&playlist.hint, last.complete) {
        (Some((uri, start)), false) => {
            let end = last.parts.last().map_or(0, |(len, offset, _)| offset + len);
            // Between the close of the last segment and the start of the next, ldash lists the
            // closed segment without EXTINF (it is published complete only once the next one has
            // started) and hints the start of the next one.
            let closed = *uri == segment_uri(rep, last.msn + 1) && *start == 0;
            if !closed && (*uri != last.uri || *start != end) {
                return Err(format!(
                    "the preload hint {uri}@{start} is not the rest of growing {} (from {end})",
                    last.uri
                ));
            }
        }
        (Some((uri, start)), true) => {
            if *uri != segment_uri(rep, last.msn + 1) || *start != 0 {
                return Err(format!(
                    "the preload hint {uri}@{start} is not the start of the segment after {}",
                    last.msn
                ));
            }
        }
        (None, false) => return Err(format!("segment {} grows but there is no preload hint", last.msn)),
        (None, true) => {}
    }
    Ok(())
}

/// What one answered blocking reload for part 0 of segment `msn` must contain: that part (the
/// first EXT-X-PART of segment `msn`, at offset 0 and independent), with segment `msn - 1` listed
/// before it as complete (the playlist did not restart at `msn`).
fn check_part_zero(rep: &str, msn: u64, playlist: &MediaPlaylist) -> Result<(), String> {
    check_consistent(rep, playlist)?;
    let at = playlist
        .segments
        .iter()
        .position(|s| s.msn == msn)
        .ok_or(format!("segment {msn} is not listed"))?;
    let segment = &playlist.segments[at];
    match segment.parts.first() {
        Some((len, 0, true)) if *len > 0 => {}
        Some(part) => {
            return Err(format!(
                "segment {msn}'s first part is {part:?}, not (len, 0, independent)"
            ))
        }
        None if segment.complete => {} // complete and too old for parts: it holds part 0 anyway
        None => return Err(format!("segment {msn} is listed without part 0")),
    }
    let previous = at.checked_sub(1).map(|i| &playlist.segments[i]).ok_or(format!(
        "segment {msn} is the first listed: segment {} is missing",
        msn - 1
    ))?;
    if previous.msn + 1 != msn || !previous.complete {
        return Err(format!("segment {} before {msn} is not complete", previous.msn));
    }
    Ok(())
}

/// A finished player loop: the hold time of each answered boundary.
struct Played {
    holds: Vec<Duration>,
}

/// One player: reads the playlist, then asks for part 0 of the next segment at every boundary.
async fn play(client: Client, proto: Proto, rep: &'static str) -> Result<Played, String> {
    let route = format!("/ldash/download/live/stream.{rep}.m3u8");
    let get = |query: String| {
        let client = client.clone();
        let route = format!("{route}{query}");
        async move {
            let request = async {
                let response = client.get(&route).send().await?;
                let status = response.status;
                let body = response.bytes().await?;
                Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
            };
            match tokio::time::timeout(REQUEST_BOUND, request).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(err)) => Err(format!("{route}: request failed: {err}")),
                Err(_) => Err(format!("{route}: no response within {REQUEST_BOUND:?}")),
            }
        }
    };
    let who = format!("{proto:?} stream.{rep}.m3u8");

    // The first load: the whole playlist, and the segment growing now.
    let (status, body) = get(String::new())
        .await
        .map_err(|e| format!("{who}: first load: {e}"))?;
    if status != 200 {
        return Err(format!("{who}: first load: status {status}\n{body}"));
    }
    let first = parse(&body)
        .and_then(|p| check_consistent(rep, &p).map(|()| p))
        .map_err(|e| format!("{who}: first load: status {status}: {e}\n{body}"))?;
    let growing = match (&first.hint, first.segments.last()) {
        (Some((uri, _)), _) => msn_of(uri).ok_or(format!("{who}: hint URI {uri}"))?,
        (None, Some(last)) => last.msn,
        (None, None) => return Err(format!("{who}: first load lists nothing\n{body}")),
    };

    let mut sequence = first.sequence;
    let mut holds = Vec::new();
    for boundary in 1..=BOUNDARIES {
        let msn = growing + boundary;
        let sent = Instant::now();
        let query = format!("?_HLS_msn={msn}&_HLS_part=0&_HLS_skip=YES");
        let (status, body) = get(query.clone())
            .await
            .map_err(|e| format!("{who}: boundary {boundary} ({query}): {e}"))?;
        let held = sent.elapsed();
        let fail = |what: String| format!("{who}: boundary {boundary} ({query}) after {held:?}: {what}\n{body}");
        if status != 200 {
            return Err(fail(format!("status {status}")));
        }
        let playlist = parse(&body).map_err(|e| fail(format!("status {status}, unreadable: {e}")))?;
        check_part_zero(rep, msn, &playlist).map_err(|e| fail(format!("status {status}: {e}")))?;
        if playlist.sequence < sequence {
            return Err(fail(format!(
                "status {status}: EXT-X-MEDIA-SEQUENCE went back from {sequence} to {}",
                playlist.sequence
            )));
        }
        sequence = playlist.sequence;
        holds.push(held);
    }
    Ok(Played { holds })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn next_segment_part_zero_reloads_are_answered_200_at_every_boundary_on_every_protocol() {
    // Every rendition has parts once the audio's second segment starts: the store says when (both
    // segments 2 within 20 s).
    let started = Instant::now();
    // About 3 s to get going, then 20 boundaries of 1 s: 30 s of media leaves a margin.
    let audio = format!("live/{}", segment_uri("2", 2));
    let Some((server, mut encoder)) = streaming(&[], Ingest::PutPersistent, 30, &audio).await else {
        return;
    };
    let video = format!("live/{}", segment_uri("0", 2));
    let left = Duration::from_secs(20).saturating_sub(started.elapsed());
    server.upload_started(&video, left).await;

    let mut players = tokio::task::JoinSet::new();
    for proto in PROTOS {
        // One client per protocol, as one player: HTTP/2 and HTTP/3 multiplex its renditions.
        let client = server.client_for(proto).await;
        for rep in RENDITIONS {
            let client = client.clone();
            players.spawn(async move { (proto, rep, play(client, proto, rep).await) });
        }
    }
    let all = async {
        let mut results = Vec::new();
        while let Some(joined) = players.join_next().await {
            results.push(joined.expect("a player loop panicked"));
        }
        results
    };
    let results = tokio::time::timeout(Duration::from_secs(40), all)
        .await
        .expect("every player crosses 20 boundaries within 40 s");

    let mut failures = Vec::new();
    for (proto, rep, result) in &results {
        match result {
            Ok(played) => {
                let mut holds = played.holds.clone();
                holds.sort();
                eprintln!(
                    "{proto:?} stream.{rep}.m3u8: {} boundaries, all 200 with part 0; held median {:?}, max {:?}",
                    holds.len(),
                    holds[holds.len() / 2],
                    holds[holds.len() - 1]
                );
            }
            Err(failure) => failures.push(failure.clone()),
        }
    }
    let still_running = encoder.child.try_wait().expect("ffmpeg status").is_none();
    let _ = encoder.stop().await;
    let ffmpeg_log = encoder.log().await;
    server.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {} player loops failed:\n\n{}\n\nffmpeg still running at the end: {still_running}; its log:\n{ffmpeg_log}",
        failures.len(),
        results.len(),
        failures.join("\n\n")
    );
    assert!(
        still_running,
        "ffmpeg ended before the players were done (it has 30 s of media): {ffmpeg_log}"
    );
}
