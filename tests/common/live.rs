//! A live segment relayed during an attack (issue 25: "the live stream byte-exact"): an encoder-like
//! chunked PUT of a growing segment over the ingest listener, chunk by chunk at the encoder's pace,
//! and readers that start while it grows and must receive exactly the uploaded bytes.
//!
//! The attack tests run ldash as a child process (no store events to wait on), so this needs only
//! the kit; they include it with `#[path = "common/live.rs"] mod live;`.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use testkit::client::{chunk_channel, Client, Response};
use testkit::Proto;

/// Every wait of the relay (an answer, a reader catching up, the upload's answer) is bounded so.
const WAIT: Duration = Duration::from_secs(15);

/// The chunks of a growing segment: `count` chunks of 2 to 4 KB, each with contents of its own (a
/// marker naming it, then bytes that depend on the chunk), so that a chunk lost, repeated or out of
/// order changes the body.
pub fn segment_chunks(count: usize) -> Vec<Bytes> {
    (0..count)
        .map(|i| {
            let len = 2048 + (i * 379) % 2048;
            let mut chunk = format!("[chunk {i} of {count}]").into_bytes();
            let mut state = (i as u32 + 1).wrapping_mul(0x9e37_79b9);
            while chunk.len() < len {
                // xorshift32: a different sequence for each chunk.
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                chunk.push(state as u8);
            }
            Bytes::from(chunk)
        })
        .collect()
}

/// What a relay did.
#[derive(Debug)]
pub struct Relayed {
    /// Bytes and chunks uploaded (each reader received exactly these).
    pub bytes: usize,
    pub chunks: usize,
    /// From the first chunk to the upload's answer and the last reader's end.
    pub took: Duration,
    /// When it all ended (the upload answered, every reader at its end).
    pub ended: Instant,
}

/// Uploads `chunks` to `path` as a live encoder does (an HTTP/1.1 chunked PUT over the ingest
/// listener, a chunk every `pace`) and, for each `(proto, after)` of `readers`, starts a reader
/// over `proto` once `after` chunks are sent (1 <= after < chunks.len()): it must be served the
/// growing segment (no Content-Length), catch up with what was sent so far before the next chunk
/// goes, and end with exactly the uploaded bytes; the upload must be answered 201. `connect` makes
/// a new client for a protocol (the writer's is HTTP/1.1). Fails the test, saying what differed.
pub async fn relay_live_segment<C, F>(
    connect: C,
    path: &str,
    chunks: &[Bytes],
    pace: Duration,
    readers: &[(Proto, usize)],
) -> Relayed
where
    C: Fn(Proto) -> F,
    F: Future<Output = Client>,
{
    let n = chunks.len();
    for &(proto, after) in readers {
        assert!(
            (1..n).contains(&after),
            "a {proto:?} reader must start while the segment grows (after 1 to {} chunks), not after {after}",
            n - 1
        );
    }
    let want: Bytes = chunks.concat().into();
    let download = format!("/ldash/download/{path}");
    let (feed, rx) = chunk_channel();
    let writer = connect(Proto::H1).await;
    let upload = tokio::spawn(writer.put(&format!("/ldash/upload/{path}")).stream(rx).send());
    let started = Instant::now();
    let mut tick = tokio::time::interval(pace);
    let mut reading = Vec::new();
    let mut sent = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        // The encoder's pace, not a synchronisation.
        tick.tick().await;
        if feed.send(Ok(chunk.clone())).await.is_err() {
            let ended = tokio::time::timeout(WAIT, upload).await;
            let status = ended.map(|joined| joined.map(|answer| answer.map(|r| r.status)));
            panic!("the live upload of {path} stopped after {i} of {n} chunks ({sent} bytes): {status:?}");
        }
        sent += chunk.len();
        for &(proto, after) in readers.iter().filter(|(_, after)| *after == i + 1) {
            let what = format!("the {proto:?} reader of {path} started after chunk {after} of {n}");
            let client = connect(proto).await;
            let mut response = open_growing(&client, &download, &what).await;
            assert_eq!(
                response.header("content-length"),
                "",
                "{what}: served with a Content-Length, not as a growing segment"
            );
            // Caught up with what was sent before the next chunk goes: the segment is relayed
            // live, not at its end.
            let mut got = Vec::new();
            let caught_up = tokio::time::timeout(WAIT, async {
                while got.len() < sent {
                    match response.chunk().await {
                        Ok(Some(bytes)) => got.extend_from_slice(&bytes),
                        Ok(None) => return Err("the body ended".to_owned()),
                        Err(err) => return Err(format!("the body broke: {err}")),
                    }
                }
                Ok(())
            })
            .await;
            match caught_up {
                Ok(Ok(())) => {}
                Ok(Err(err)) => panic!(
                    "{what}: {err} after {} bytes, while {sent} were uploaded and the upload was open",
                    got.len()
                ),
                Err(_) => panic!(
                    "{what}: {} of the {sent} bytes uploaded so far arrived within {WAIT:?}",
                    got.len()
                ),
            }
            assert_byte_exact(&format!("{what}, while it grows"), &got, &want[..sent], chunks);
            reading.push(tokio::spawn(async move {
                let rest = tokio::time::timeout(WAIT + pace * n as u32, async {
                    loop {
                        match response.chunk().await {
                            Ok(Some(bytes)) => got.extend_from_slice(&bytes),
                            Ok(None) => return Ok(()),
                            Err(err) => return Err(format!("the body broke: {err}")),
                        }
                    }
                })
                .await
                .unwrap_or_else(|_| Err("the body did not end".to_owned()));
                (what, got, rest)
            }));
        }
    }
    drop(feed);
    let answer = tokio::time::timeout(WAIT, upload)
        .await
        .unwrap_or_else(|_| panic!("the live upload of {path} was not answered within {WAIT:?} of its last chunk"))
        .expect("the upload task")
        .unwrap_or_else(|e| panic!("the live upload of {path} failed: {e}"));
    assert_eq!(
        answer.status,
        201,
        "the live upload of {path} ({n} chunks, {} bytes)",
        want.len()
    );
    for task in reading {
        let (what, got, rest) = task.await.expect("a reader task");
        if let Err(err) = rest {
            let diff = difference(&got, &want, chunks).unwrap_or_else(|| "all of it, byte-exact".to_owned());
            panic!(
                "{what}: {err} after {} of the {} bytes uploaded (what came: {diff})",
                got.len(),
                want.len()
            );
        }
        assert_byte_exact(&what, &got, &want, chunks);
    }
    Relayed {
        bytes: want.len(),
        chunks: n,
        took: started.elapsed(),
        ended: Instant::now(),
    }
}

/// GETs `route` until it answers 200 (404 while the upload has not reached the server yet),
/// within [`WAIT`].
async fn open_growing(client: &Client, route: &str, what: &str) -> Response {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let response = tokio::time::timeout(left, client.get(route).send())
            .await
            .unwrap_or_else(|_| panic!("{what}: no 200 for GET {route} within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("{what}: GET {route}: {e}"));
        match response.status {
            200 => return response,
            404 => tokio::task::yield_now().await,
            other => panic!("{what}: GET {route} answered {other}"),
        }
    }
}

/// Fails the test unless `got` is `want`, saying where they differ.
pub fn assert_byte_exact(what: &str, got: &[u8], want: &[u8], chunks: &[Bytes]) {
    if let Some(diff) = difference(got, want, chunks) {
        panic!("{what}: not byte-exact: {diff}");
    }
}

/// Where `got` differs from `want` (the concatenated `chunks`, or a prefix of them): the lengths,
/// the first differing offset and the chunk it is in, and where the bytes found there were
/// uploaded (a chunk out of order or repeated); None when equal.
fn difference(got: &[u8], want: &[u8], chunks: &[Bytes]) -> Option<String> {
    if got == want {
        return None;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let mut text = format!(
        "{} bytes received, {} uploaded; first difference at offset {at}",
        got.len(),
        want.len()
    );
    let (mut chunk, mut start) = (0, 0);
    for (i, c) in chunks.iter().enumerate() {
        if at < start + c.len() {
            chunk = i;
            break;
        }
        start += c.len();
        chunk = i + 1;
    }
    text.push_str(&format!(" (chunk {chunk}, its byte {})", at - start));
    match (got.get(at), want.get(at)) {
        (Some(g), Some(w)) => {
            text.push_str(&format!(": received {g:#04x}, uploaded {w:#04x}"));
            let window = &got[at..got.len().min(at + 32)];
            let all: Vec<u8> = chunks.concat();
            if let Some(from) = all.windows(window.len()).position(|w| w == window) {
                text.push_str(&format!("; the bytes received there were uploaded at offset {from}"));
            }
        }
        (None, Some(_)) => text.push_str(": the received body is short (truncated)"),
        (Some(_), None) => text.push_str(": the received body is longer than the upload"),
        (None, None) => {}
    }
    Some(text)
}
