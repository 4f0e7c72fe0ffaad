//! Clients that hold what they ask for (issue 25), through real sockets against the real `ldash`
//! binary as a child process (so that its resident memory is its own):
//!
//! - thousands of HTTP/1.1 clients (over TLS, from other loopback addresses) each holding an LL-HLS
//!   blocking playlist reload for a part that does not exist yet, asking again as soon as one is
//!   answered: all held at once, while a fresh client on every protocol is served within 1 s and a
//!   live segment reaches readers that start while it grows byte-exact; once they are gone, nothing
//!   is held and memory is back within 1.2x its baseline + 16 MiB within 30 s;
//! - held requests over `--max-held-requests-per-peer` (HTTP/2 streams on one connection) and over
//!   `--max-held-requests` are refused with 503, a plain-text reason and Retry-After, while requests
//!   that are not held are served, and the slots come back when the held ones are answered;
//! - a client that never reads the complete file it asked for (HTTP/1.1, HTTP/2, HTTP/3) loses it
//!   after the idle timeout: its connection is closed (TCP) or its stream reset (HTTP/3), the
//!   rest of the file never sent.
//!
//! `cargo test --test attack_holds -- --nocapture` prints the figures (BENCHMARKS.md).

#[path = "common/attack.rs"]
mod attack;
mod common;
#[path = "common/live.rs"]
mod live;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use attack::{loopback, metric, metric_reaches, mib, rss_bound, rss_settles, start_ldash, RSS_RETURN};
use bytes::Bytes;
use common::{fixture, RECORDED_STREAM};
use testkit::process::{open_descriptors, rss_kib};
use testkit::{Origin, Proto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

/// These tests hold thousands of sockets and measure latency on 2 shared cores: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The live segment relayed during the attack: chunks of 2 to 4 KB at the encoder's pace.
const LIVE_CHUNKS: usize = 30;
const LIVE_PACE: Duration = Duration::from_millis(40);

/// A blocking reload for segment 3's first part of the recorded stream, whose newest segment is 2:
/// held until the part exists (never, here) or the hold's bound (three target durations: 3 s).
const HELD_RELOAD: &str = "/ldash/download/live/stream.0.m3u8?_HLS_msn=3&_HLS_part=0";

/// PUTs `body` to `path` over HTTP/1.1 from 127.0.0.1 (a loopback peer may upload); the status.
async fn put(origin: &Origin, path: &str, body: impl Into<Bytes>) -> u16 {
    let client = attack::fresh_client(origin, Proto::H1, loopback(1));
    let url = origin.url(Proto::H1, &format!("/ldash/upload/{path}"));
    let response = tokio::time::timeout(Duration::from_secs(10), client.put(&url).body(body.into()).send())
        .await
        .unwrap_or_else(|_| panic!("PUT {path}: no answer within 10 s"))
        .unwrap_or_else(|e| panic!("PUT {path}: {e:?}"));
    response.status().as_u16()
}

/// Uploads the stream recorded from ffmpeg (tests/fixtures/ffmpeg: its MPD, both init segments and
/// segment 2 of both representations) into live/, and waits (at most 10 s) until its LL-HLS
/// playlist lists segment 2.
async fn put_recorded_stream(origin: &Origin) {
    for (name, fixture_name) in RECORDED_STREAM {
        assert_eq!(
            put(origin, &format!("live/{name}"), fixture(fixture_name)).await,
            201,
            "upload {name}"
        );
    }
    let client = attack::fresh_client(origin, Proto::H1, loopback(1));
    let url = origin.url(Proto::H1, "/ldash/download/live/stream.0.m3u8");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(response) = client.get(&url).send().await {
            let text = response.text().await.unwrap_or_default();
            if text.contains("chunk-stream0-00002.m4s") {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the recorded stream's playlist does not list segment 2 within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one holder's answers were.
#[derive(Debug, Default)]
struct Answers {
    ok: usize,
    unavailable: usize,
    other: Vec<u16>,
}

/// One HTTP/1.1 client over TLS from `from` that asks [`HELD_RELOAD`] again as soon as it is
/// answered, until `stop`; reports on `open` once its first request is sent. Gives `opening` back
/// then.
async fn hold_reloads(
    origin: Origin,
    from: IpAddr,
    open: mpsc::UnboundedSender<Result<(), String>>,
    opening: tokio::sync::OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) -> Answers {
    let mut answers = Answers::default();
    let mut tls = match attack::tls_from(&origin, from, b"http/1.1").await {
        Ok(tls) => tls,
        Err(err) => {
            let _ = open.send(Err(err));
            return answers;
        }
    };
    let request = format!("GET {HELD_RELOAD} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut opening = Some(opening);
    loop {
        if let Err(err) = tls.write_all(request.as_bytes()).await {
            let _ = open.send(Err(format!("request: {err}")));
            return answers;
        }
        if opening.take().is_some() {
            let _ = open.send(Ok(()));
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let answer = loop {
            tokio::select! {
                read = tls.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return answers,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                },
                _ = stop.wait_for(|stop| *stop) => return answers,
            }
            if let Some(text) = testkit::raw::complete_response(&got) {
                break testkit::raw::status_of(&text);
            }
        };
        match answer {
            Some(200) => answers.ok += 1,
            Some(503) => answers.unavailable += 1,
            other => answers.other.push(other.unwrap_or(0)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_held_http1_reloads_leave_fresh_clients_and_the_live_stream_served_and_memory_returns() {
    let _one = ONE_AT_A_TIME.lock().await;
    let limit = attack::raise_open_file_limit();
    // Each holder costs a descriptor here and one in ldash. 2,000 by default (CI);
    // LDASH_ATTACK_HELD asks for more (BENCHMARKS.md).
    let wanted: u64 = std::env::var("LDASH_ATTACK_HELD")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    let holders = (limit.saturating_sub(1000) / 2).min(wanted) as usize;
    assert!(
        holders >= 200,
        "an open-file limit of {limit} leaves no room for the attack"
    );
    let dir = tempfile::tempdir().expect("dir");
    // The stream never ends for want of uploads while the reloads are held.
    let ldash = start_ldash(dir.path(), &["--end-after-segments", "0"]).await;
    let fresh = loopback(250);
    put_recorded_stream(&ldash).await;
    attack::fresh_on_every_protocol(&ldash, fresh, "before the attack").await;
    let baseline = rss_kib(ldash.pid);
    let bound = rss_bound(baseline);

    // The holders: from 127.0.0.2 on, 250 an address (within the per-address limits), opened 64
    // at a time.
    let (open_tx, mut open_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let opening = Arc::new(Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..holders {
        let (origin, open, opening, stop) = (
            Origin::clone(&ldash),
            open_tx.clone(),
            Arc::clone(&opening),
            stop_rx.clone(),
        );
        let from = loopback(2 + (i / 250) as u8);
        tasks.spawn(async move {
            let permit = opening.acquire_owned().await.expect("the semaphore stays open");
            hold_reloads(origin, from, open, permit, stop).await
        });
    }
    drop(open_tx);
    let mut opened = 0;
    while opened < holders {
        match tokio::time::timeout(Duration::from_secs(30), open_rx.recv()).await {
            Ok(Some(Ok(()))) => opened += 1,
            Ok(Some(Err(err))) => panic!("a holder did not start: {err}"),
            Ok(None) => break,
            Err(_) => panic!("{opened} of {holders} holders started after 30 s more"),
        }
    }
    let open_time = started.elapsed();
    // Nearly all held at once (a holder between an answer and its next request is not).
    let threshold = holders as f64 * 0.95;
    let held = metric_reaches(&ldash, "ldash_held_requests", Duration::from_secs(20), |held| {
        held >= threshold
    })
    .await;

    // During the attack: a live segment relayed byte-exact (readers over HTTP/1.1 with TLS, HTTP/2
    // and HTTP/3 on the attacked listeners) and fresh clients on every protocol within 1 s.
    let origin = Origin::clone(&ldash);
    let connect = |proto: Proto| {
        let origin = origin.clone();
        async move { attack::fresh_kit_client(&origin, proto, fresh).await }
    };
    let chunks = live::segment_chunks(LIVE_CHUNKS);
    let readers = [
        (Proto::H1Tls, 1),
        (Proto::H2Tls, LIVE_CHUNKS / 3),
        (Proto::H3, 2 * LIVE_CHUNKS / 3),
    ];
    let relaying = live::relay_live_segment(connect, "relay/growing.m4s", &chunks, LIVE_PACE, &readers);
    let probing = async {
        let mut rounds = Vec::new();
        let mut most = held;
        for _ in 0..3 {
            rounds.push(attack::fresh_on_every_protocol(&ldash, fresh, "while reloads are held").await);
            most = most.max(metric(&ldash, "ldash_held_requests").await);
        }
        (rounds, most)
    };
    let (relayed, (rounds, most_held)) = tokio::join!(relaying, probing);
    let still_held = metric(&ldash, "ldash_held_requests").await;
    let peak = rss_kib(ldash.pid);
    assert!(
        still_held >= threshold,
        "the reloads were held through the relay and the fresh clients: {still_held} held at its end"
    );

    // The holders leave.
    let _ = stop_tx.send(true);
    let mut answers = Answers::default();
    while let Some(done) = tasks.join_next().await {
        let one = done.expect("a holder task");
        answers.ok += one.ok;
        answers.unavailable += one.unavailable;
        answers.other.extend(one.other);
    }
    metric_reaches(&ldash, "ldash_held_requests", Duration::from_secs(10), |held| {
        held == 0.0
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_descriptors(ldash.pid) >= 200 {
        assert!(
            Instant::now() < deadline,
            "ldash still holds {} descriptors 10 s after the holders left",
            open_descriptors(ldash.pid)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (after, settled_in) = rss_settles(ldash.pid, bound, RSS_RETURN).await;
    let slowest = rounds.iter().flatten().map(|(_, took)| *took).max().unwrap_or_default();
    println!(
        "held reloads: {holders} HTTP/1.1 clients over TLS opened in {open_time:.1?}, {held} held at once (at most \
         {most_held}); answers while held: {} 503 (hold over), {} 200, other {:?}; fresh clients on every \
         protocol during it: {rounds:?} (slowest {slowest:.0?}); a live segment ({} chunks, {} bytes) relayed \
         byte-exact to 3 readers in {:.1?}; ldash RSS {:.1} MiB before, {:.1} MiB peak ({:+.1} KiB a held \
         reload), {:.1} MiB {:.1?} after they left (allowed {:.1})",
        answers.unavailable,
        answers.ok,
        answers.other,
        relayed.chunks,
        relayed.bytes,
        relayed.took,
        mib(baseline),
        mib(peak),
        (peak as f64 - baseline as f64) / holders as f64,
        mib(after),
        settled_in,
        mib(bound)
    );
    assert!(
        answers.other.is_empty(),
        "held reloads are answered 200 or 503 only: {:?}",
        answers.other
    );
    assert!(
        after <= bound,
        "RSS {after} KiB 30 s after the holders left, over 1.2 x {baseline} KiB + 16 MiB"
    );
    attack::fresh_on_every_protocol(&ldash, fresh, "after the attack").await;
}

/// GETs `route` with `client`, a reqwest client, within 10 s.
async fn get(client: &reqwest::Client, origin: &Origin, proto: Proto, route: &str) -> reqwest::Response {
    let url = origin.url(proto, route);
    tokio::time::timeout(Duration::from_secs(10), client.get(&url).send())
        .await
        .unwrap_or_else(|_| panic!("GET {route}: no answer within 10 s"))
        .unwrap_or_else(|e| panic!("GET {route}: {e:?}"))
}

/// Starts `n` requests for [`HELD_RELOAD`] with `client` over `proto`, each giving its status to
/// `held`.
fn hold(held: &mut tokio::task::JoinSet<u16>, client: &reqwest::Client, origin: &Origin, proto: Proto, n: usize) {
    for _ in 0..n {
        let (client, origin) = (client.clone(), Origin::clone(origin));
        held.spawn(async move { get(&client, &origin, proto, HELD_RELOAD).await.status().as_u16() });
    }
}

/// Asserts that `response` is a refusal for the held-request bound `option`: 503, Retry-After and
/// a plain-text reason naming the option.
async fn assert_refused(response: reqwest::Response, option: &str, what: &str) {
    assert_eq!(response.status(), 503, "{what}");
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.unwrap_or_default();
    assert!(
        kind.starts_with("text/plain"),
        "{what}: a plain-text reason, not {kind:?}"
    );
    assert_eq!(retry, "1", "{what}: Retry-After");
    assert!(
        text.contains(option) && text.contains("held"),
        "{what}: the reason names {option}: {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_requests_over_their_share_or_the_total_are_refused_with_a_reason() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("dir");
    let options = [
        "--end-after-segments",
        "0",
        "--max-held-requests",
        "40",
        "--max-held-requests-per-peer",
        "30",
    ];
    let ldash = start_ldash(dir.path(), &options).await;
    put_recorded_stream(&ldash).await;

    // 30 blocking reloads as HTTP/2 streams of one connection from 127.0.0.2: its share, all held.
    let multiplexed = attack::fresh_client(&ldash, Proto::H2c, loopback(2));
    let mut held = tokio::task::JoinSet::new();
    hold(&mut held, &multiplexed, &ldash, Proto::H2c, 30);
    metric_reaches(&ldash, "ldash_held_requests", Duration::from_secs(10), |held| {
        held == 30.0
    })
    .await;
    // One more from that address, another stream on the same connection: over its share.
    let over = get(&multiplexed, &ldash, Proto::H2c, HELD_RELOAD).await;
    assert_refused(
        over,
        "--max-held-requests-per-peer",
        "a 31st held request from one address",
    )
    .await;

    // Another address holds 10 more, up to the total; a third address is refused, for a blocking
    // reload as for the next segment before its upload (an early request).
    let other = attack::fresh_client(&ldash, Proto::H1, loopback(3));
    hold(&mut held, &other, &ldash, Proto::H1, 10);
    metric_reaches(&ldash, "ldash_held_requests", Duration::from_secs(10), |held| {
        held == 40.0
    })
    .await;
    let third = attack::fresh_client(&ldash, Proto::H1Tls, loopback(4));
    let over = get(&third, &ldash, Proto::H1Tls, HELD_RELOAD).await;
    assert_refused(over, "--max-held-requests", "a held reload over the total").await;
    let over = get(
        &third,
        &ldash,
        Proto::H1Tls,
        "/ldash/download/live/chunk-stream0-00003.m4s",
    )
    .await;
    assert_refused(over, "--max-held-requests", "an early segment request over the total").await;
    // What is not held is served meanwhile: the playlist without directives, a segment, the clock.
    for route in [
        "/ldash/download/live/stream.0.m3u8",
        "/ldash/download/live/chunk-stream0-00002.m4s",
        "/ldash/time",
    ] {
        assert_eq!(
            get(&third, &ldash, Proto::H1Tls, route).await.status(),
            200,
            "{route} while the held ones are full"
        );
    }
    assert_eq!(metric(&ldash, "ldash_held_requests_refused_total").await, 3.0);

    // Segment 3 arrives: every held reload is answered 200, and the slots come back.
    assert_eq!(
        put(
            &ldash,
            "live/chunk-stream0-00003.m4s",
            fixture("chunk-stream0-00002.m4s")
        )
        .await,
        201
    );
    while let Some(status) = held.join_next().await {
        assert_eq!(
            status.expect("a held request"),
            200,
            "a held reload once its part exists"
        );
    }
    metric_reaches(&ldash, "ldash_held_requests", Duration::from_secs(10), |held| {
        held == 0.0
    })
    .await;
    let again = get(
        &third,
        &ldash,
        Proto::H1Tls,
        "/ldash/download/live/stream.0.m3u8?_HLS_msn=3&_HLS_part=0",
    )
    .await;
    assert_eq!(again.status(), 200, "a blocking reload once slots are free");
}

/// A complete file of 16 MiB, larger than every buffer between ldash and a client.
const BIG: usize = 16 << 20;

/// Reads what is left on `stream` until it ends or breaks (at most 10 s): the bytes and how it ended.
async fn drain(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> (usize, String) {
    let mut total = 0;
    let mut buf = vec![0u8; 64 << 10];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return "end of stream".to_owned(),
                Ok(n) => total += n,
                Err(err) => return err.to_string(),
            }
        }
    })
    .await
    .unwrap_or_else(|_| "still open after 10 s".to_owned());
    (total, ended)
}

/// ldash's descriptors once the count holds still (connections of earlier clients closed).
async fn settled_descriptors(pid: u32) -> u64 {
    let mut last = open_descriptors(pid);
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = open_descriptors(pid);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Waits (at most `within`) until ldash holds more than `count` descriptors (it accepted the
/// connection), then until it holds at most `count` again (it closed it); how long that took.
async fn descriptors_back_to(pid: u32, count: u64, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    while open_descriptors(pid) <= count {
        assert!(
            started.elapsed() < within,
            "{what}: ldash never accepted the connection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while open_descriptors(pid) > count {
        assert!(
            started.elapsed() < within,
            "{what}: the connection is still open after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// An HTTP/2 GET of `path` on stream 1 (HPACK literals without indexing, no Huffman).
fn h2_get(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04]; // :method GET, :scheme http, :path (literal)
    block.push(path.len() as u8);
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 9]); // :authority (literal)
    block.extend_from_slice(b"localhost");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // SETTINGS, empty
    let len = block.len() as u32;
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 0x1, 0x5, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_a_complete_file_loses_it_after_the_idle_timeout() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("dir");
    let idle = Duration::from_secs(2);
    let options = ["--http-idle-timeout", "2", "--https-idle-timeout", "2"];
    let ldash = start_ldash(dir.path(), &options).await;
    let file: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    assert_eq!(put(&ldash, "big/file.bin", file).await, 201);
    let path = "/ldash/download/big/file.bin";
    let before = settled_descriptors(ldash.pid).await;
    let mut figures = Vec::new();

    // HTTP/1.1 and HTTP/2 (cleartext): the request, then nothing read.
    for (name, request) in [
        (
            "HTTP/1.1",
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes(),
        ),
        ("HTTP/2", h2_get(path)),
    ] {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut tcp = socket.connect(ldash.http).await.expect("connect");
        tcp.write_all(&request).await.expect("the request");
        let asked = Instant::now();
        let took = descriptors_back_to(ldash.pid, before, Duration::from_secs(15), name).await;
        let closed_after = asked.elapsed();
        let (received, ended) = drain(&mut tcp).await;
        assert!(
            closed_after >= idle - Duration::from_millis(500),
            "{name}: closed {closed_after:?} after the request, before the idle timeout ({idle:?}) passed"
        );
        assert!(
            received < BIG,
            "{name}: the whole file came ({received} bytes) though the client read nothing"
        );
        assert_ne!(ended, "still open after 10 s", "{name}");
        figures.push((name, took, received, ended));
    }

    // HTTP/3: the response's headers, then nothing read: the stream is reset.
    let client = ldash.connect(Proto::H3).await.expect("an HTTP/3 client");
    let mut response = client.get(path).send().await.expect("the response headers");
    assert_eq!(response.status, 200);
    // The subject of the test is a client that reads nothing for longer than the idle timeout.
    tokio::time::sleep(idle + Duration::from_secs(2)).await;
    let mut received = 0;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), response.chunk()).await {
            Ok(Ok(Some(chunk))) => received += chunk.len(),
            Ok(Ok(None)) => break "end of stream".to_owned(),
            Ok(Err(err)) => break err,
            Err(_) => break "still open after 10 s".to_owned(),
        }
    };
    assert!(
        received < BIG,
        "HTTP/3: the whole file came ({received} bytes) though the client read nothing"
    );
    assert!(ended.contains("H3_REQUEST_CANCELLED"), "HTTP/3: reset, not {ended}");
    figures.push(("HTTP/3", idle + Duration::from_secs(2), received, ended));
    println!("a client that reads nothing of a 16 MiB file (idle timeout {idle:?}): {figures:?}");

    // ldash serves the file whole to a client that reads.
    let reader = ldash.connect(Proto::H1).await.expect("a client");
    assert_eq!(reader.get(path).fetch().await.bytes().await.map(|b| b.len()), Ok(BIG));
}
