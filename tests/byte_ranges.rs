//! Byte ranges of a growing segment as the HLS draft asks (section 6.2.6): every Range form a
//! player sends into a segment still being uploaded (a closed part range, `bytes=N-`, and the
//! draft's `bytes=N-9007199254740991` for a preload hint) gets 206 with exactly the bytes asked
//! for, and no byte of a part leaves before the whole part exists; then the part goes at once.
//! A plain GET of the same growing segment (dash.js, Shaka's whole-segment fetch) is released
//! CMAF chunk by whole CMAF chunk. Over HTTP/1.1, HTTP/2 and HTTP/3, with ffmpeg's own segments.

mod common;

use std::time::{Duration, Instant};

use common::client::{Client, Response};
use common::{fixture, Proto, TestServer};

/// The fixture segment's CMAF chunks (0.2 s each; the first carries the styp) end at these offsets.
const CHUNK_ENDS: [usize; 5] = [12594, 22087, 32169, 42381, 52937];
/// LL-HLS parts of two chunks (`--part-target-ms 400`): the first two parts end here.
const PART_ENDS: [usize; 2] = [22087, 42381];
/// How long a response is watched to show that nothing more arrives. Nothing is waited for this
/// way: it only bounds a check that bytes are held back (it cannot pass by being too short).
const QUIET: Duration = Duration::from_millis(400);

/// Whether the next body bytes stay away for [`QUIET`].
async fn quiet(response: &mut Response) -> bool {
    tokio::time::timeout(QUIET, response.chunk()).await.is_err()
}

/// Reads exactly `n` bytes of the body (fails the caller if it ends or breaks first).
async fn take(response: &mut Response, n: usize, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        match response.chunk().await {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            other => panic!("{what}: the body stopped at {} of {n} bytes: {other:?}", got.len()),
        }
    }
    assert_eq!(got.len(), n, "{what}: more bytes than one part at once");
    got
}

/// Uploads a stream (its MPD, init segments and segment 2 of both representations) into `folder`,
/// and makes its first playlist, which fixes the parts' grouping.
async fn stream(server: &TestServer, client: &Client, folder: &str) {
    server.put_recorded_stream(folder).await;
    // The index follows the store on its own: the playlist answers once it has both
    // representations' chunks.
    let route = format!("/ldash/download/{folder}/stream.0.m3u8?_HLS_msn=2&_HLS_part=0");
    let (status, text) = client.get_text(&route).await;
    assert_eq!(status, 200, "{route}: {text}");
    assert!(
        text.contains("#EXT-X-PART-INF:PART-TARGET=0.4") && text.contains("BYTERANGE=\"22087@0\""),
        "parts of two 0.2 s chunks, the first from byte 0:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_segment_ranges_are_released_whole_part_by_whole_part_on_every_protocol() {
    let server = TestServer::start_with(|c| c.part_target_ms = 400).await;
    let segment = fixture("chunk-stream0-00002.m4s");
    assert_eq!(segment.len(), CHUNK_ENDS[4], "the fixture's chunks");
    for proto in [Proto::H1, Proto::H2Tls, Proto::H3] {
        let client = server.client_for(proto).await;
        let folder = format!("ranges-{proto:?}").to_lowercase();
        stream(&server, &client, &folder).await;
        let route = format!("/ldash/download/{folder}/chunk-stream0-00003.m4s");
        // Segment 3 starts: most of its first chunk, nothing of a whole part.
        let feed = server
            .feed(
                Proto::H1,
                &format!("{folder}/chunk-stream0-00003.m4s"),
                segment[..12000].to_vec(),
            )
            .await;
        // Each response with the instant its headers arrived.
        let arrival = |request: common::client::Request| {
            tokio::spawn(async move {
                let response = request.send().await;
                (Instant::now(), response)
            })
        };
        let hint = arrival(client.get(&route).header("range", "bytes=0-9007199254740991"));
        let open = arrival(client.get(&route).header("range", "bytes=0-"));
        let later = tokio::spawn(
            client
                .get(&route)
                .header("range", format!("bytes={}-9007199254740991", PART_ENDS[0]))
                .send(),
        );
        let mut plain = client.get(&route).fetch().await;
        assert_eq!(plain.status, 200, "{proto:?}: a plain GET of a growing segment");
        assert!(feed.entry.wait_for_len(12000, Duration::from_secs(5)).await);
        assert!(
            quiet(&mut plain).await,
            "{proto:?}: a plain GET got bytes of an incomplete chunk"
        );
        assert!(
            !hint.is_finished() && !open.is_finished(),
            "{proto:?}: an open range answered before its first part"
        );

        // The first chunk completes: the plain GET gets it whole, the ranges still wait (a part is
        // two chunks).
        feed.send(segment[12000..CHUNK_ENDS[1] - 10].to_vec()).await;
        let first = take(&mut plain, CHUNK_ENDS[0], "plain GET, chunk 1").await;
        assert_eq!(first, segment[..CHUNK_ENDS[0]], "{proto:?}: chunk 1's bytes");
        assert!(
            quiet(&mut plain).await,
            "{proto:?}: bytes of chunk 2 before it was complete"
        );
        assert!(
            !hint.is_finished(),
            "{proto:?}: the hint answered before its part was whole"
        );

        // The first part completes: every open range starting in it gets exactly that part.
        feed.send(segment[CHUNK_ENDS[1] - 10..CHUNK_ENDS[1] + 10].to_vec())
            .await;
        let completed = Instant::now();
        let mut opened = Vec::new();
        for (name, task) in [("bytes=0-9007199254740991", hint), ("bytes=0-", open)] {
            let (arrived, response) = task.await.expect("task");
            let mut response = response.unwrap_or_else(|e| panic!("{proto:?} {name}: {e}"));
            let first_byte = arrived.saturating_duration_since(completed);
            assert_eq!(response.status, 206, "{proto:?} {name}");
            // RFC 8673: the length is not known yet.
            assert_eq!(
                response.header("content-range"),
                "bytes 0-9007199254740991/*",
                "{proto:?} {name}"
            );
            assert_eq!(response.header("content-length"), "", "{proto:?} {name}: no length yet");
            let part = take(&mut response, PART_ENDS[0], name).await;
            assert_eq!(
                part,
                segment[..PART_ENDS[0]],
                "{proto:?} {name}: the first part's bytes"
            );
            assert!(
                quiet(&mut response).await,
                "{proto:?} {name}: bytes of the next part before it was whole"
            );
            println!("RANGE {proto:?} {name}: headers {first_byte:?} after the part's last byte left the encoder");
            opened.push((name, response));
        }
        assert!(!later.is_finished(), "{proto:?}: a hint of part 2 answered with part 1");
        assert_eq!(
            take(&mut plain, CHUNK_ENDS[1] - CHUNK_ENDS[0], "plain GET, chunk 2").await,
            segment[CHUNK_ENDS[0]..CHUNK_ENDS[1]],
            "{proto:?}: chunk 2's bytes"
        );

        // The rest of the segment, and the end of its upload.
        feed.send(segment[CHUNK_ENDS[1] + 10..].to_vec()).await;
        let mut later = later.await.expect("task").expect("the hint of part 2");
        assert_eq!(later.status, 206, "{proto:?}: the hint of part 2");
        assert_eq!(
            later.header("content-range"),
            format!("bytes {}-9007199254740991/*", PART_ENDS[0]),
            "{proto:?}"
        );
        let second = take(&mut later, PART_ENDS[1] - PART_ENDS[0], "hint of part 2").await;
        assert_eq!(second, segment[PART_ENDS[0]..PART_ENDS[1]], "{proto:?}: part 2's bytes");
        assert!(
            quiet(&mut later).await,
            "{proto:?}: the last part before the upload ended"
        );
        assert_eq!(feed.end().await, Ok(201), "{proto:?}: the upload");
        let rest = later
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{proto:?}: the hint's body broke: {e}"));
        assert_eq!(
            rest,
            segment[PART_ENDS[1]..],
            "{proto:?}: the last part once the upload ended"
        );
        let rest = plain
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{proto:?}: the plain GET broke: {e}"));
        assert_eq!(rest, segment[CHUNK_ENDS[1]..], "{proto:?}: the plain GET's rest");
        for (name, response) in opened {
            let rest = response
                .bytes()
                .await
                .unwrap_or_else(|e| panic!("{proto:?} {name}: the body broke: {e}"));
            assert_eq!(
                rest,
                segment[PART_ENDS[0]..],
                "{proto:?} {name}: the rest of the segment"
            );
        }

        // Complete now: ordinary ranges with the length known.
        let whole = client
            .get(&route)
            .header("range", "bytes=100-9007199254740991")
            .fetch()
            .await;
        assert_eq!(whole.status, 206, "{proto:?}");
        assert_eq!(
            whole.header("content-range"),
            format!("bytes 100-{}/{}", segment.len() - 1, segment.len()),
            "{proto:?}"
        );
        let past = client
            .get(&route)
            .header("range", format!("bytes={}-9007199254740991", segment.len()))
            .fetch()
            .await;
        assert_eq!(past.status, 416, "{proto:?}: a range past the end of the finished file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_range_past_the_end_of_a_segment_that_then_ends_gets_416() {
    let server = TestServer::start_with(|c| c.part_target_ms = 400).await;
    let client = server.client_for(Proto::H2Tls).await;
    stream(&server, &client, "ends").await;
    let segment = fixture("chunk-stream0-00002.m4s");
    let path = "ends/chunk-stream0-00003.m4s";
    let feed = server.feed(Proto::H1, path, segment[..CHUNK_ENDS[0]].to_vec()).await;
    let route = format!("/ldash/download/{path}");
    let beyond = tokio::spawn(
        client
            .get(&route)
            .header("range", format!("bytes={}-9007199254740991", CHUNK_ENDS[0] + 5))
            .send(),
    );
    assert!(
        feed.entry
            .wait_for_len(CHUNK_ENDS[0] as u64, Duration::from_secs(5))
            .await
    );
    // The encoder ends the segment there (a short last segment): nothing lies past the end.
    assert_eq!(feed.end().await, Ok(201));
    let response = beyond.await.expect("task").expect("response");
    assert_eq!(
        response.status, 416,
        "nothing of the range exists once the file is complete"
    );
}
