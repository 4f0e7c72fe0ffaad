//! Uploads under attack (issue 25), through real sockets: clients with upload rights that trickle
//! a byte now and then to hold upload slots, and floods of CMAF ingest tracks (refused ones, and
//! channels of one fragment) that used to leave their state in memory for ever. Each test prints
//! its figures (`cargo test --test attack_uploads -- --nocapture`; BENCHMARKS.md has them).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use common::{fixture, raw_status, Proto, TestServer};
use futures_util::StreamExt;
use testkit::origin::ldash_command;
use testkit::raw::complete_response;
use testkit::{process, OriginProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// Opens a chunked `PUT` of `path` from the loopback address `from` (any 127.x.y.z is a peer of
/// its own) and sends its first byte.
async fn trickle(server: SocketAddr, from: &str, path: &str) -> TcpStream {
    let ip: IpAddr = from.parse().expect("a loopback address");
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.bind(SocketAddr::new(ip, 0)).expect("bind to the peer's address");
    let mut stream = socket.connect(server).await.expect("connect to ldash");
    let head =
        format!("PUT /ldash/upload/{path} HTTP/1.1\r\nHost: origin\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n");
    stream.write_all(head.as_bytes()).await.expect("send the request");
    stream
}

/// Whether the server took the upload on `stream` (it is in the store) or answered it at once
/// (Err: the answer); fails after 10 s with neither.
async fn admitted(server: &TestServer, stream: &mut TcpStream, path: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if server.store.get(path).is_some() {
            return Ok(());
        }
        if let Some(text) = complete_response(&answer) {
            return Err(text);
        }
        assert!(
            Instant::now() < deadline,
            "{path}: neither stored nor answered within 10 s; got {:?}",
            String::from_utf8_lossy(&answer)
        );
        match tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buf)).await {
            Ok(Ok(0)) => return Err(String::from_utf8_lossy(&answer).into_owned()),
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Ok(Err(err)) => return Err(format!("{err}: {}", String::from_utf8_lossy(&answer))),
            Err(_) => {}
        }
    }
}

#[tokio::test]
async fn trickling_uploads_from_one_peer_cannot_starve_another_peers_upload() {
    // 16 upload slots, 8 a peer: without the share, the trickler's 16 would hold them all.
    let server = TestServer::start_with(|c| {
        c.max_uploads = 16;
        c.max_uploads_per_peer = 8;
    })
    .await;
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for i in 0..16 {
        let path = format!("trickle/{i}.m4s");
        let mut stream = trickle(server.http, "127.0.0.2", &path).await;
        match admitted(&server, &mut stream, &path).await {
            Ok(()) => held.push(stream),
            Err(answer) => refused.push(answer),
        }
    }
    assert_eq!(
        held.len(),
        8,
        "the trickler holds its share and no more; refused: {refused:?}"
    );
    for answer in &refused {
        assert_eq!(raw_status(answer), 503, "{answer}");
        assert!(answer.contains("text/plain"), "a plain-text reason: {answer}");
        assert!(
            answer.contains("peer 127.0.0.2") && answer.contains("--max-uploads-per-peer"),
            "the reason names the peer and the option: {answer}"
        );
    }
    // The trickle goes on (a byte on each), and another peer's encoder uploads meanwhile.
    for stream in &mut held {
        stream.write_all(b"1\r\nx\r\n").await.expect("the trickle goes on");
    }
    let segment = fixture("chunk-stream0-00002.m4s");
    let started = Instant::now();
    let status = server.put("live/chunk-stream0-00001.m4s", segment.clone()).await;
    let waited = started.elapsed();
    assert_eq!(
        status, 201,
        "a real encoder's PUT is taken while the trickle holds its share"
    );
    let stored = server.store.get("live/chunk-stream0-00001.m4s").expect("stored");
    assert_eq!(stored.len(), segment.len() as u64);
    for stream in &held {
        assert!(stream.peer_addr().is_ok(), "the trickles were not disturbed");
    }
    println!(
        "FIGURE trickle: 16 trickling uploads from one peer, {} held, {} refused 503; another peer's PUT of {} bytes: 201 in {:.1} ms",
        held.len(),
        refused.len(),
        segment.len(),
        waited.as_secs_f64() * 1000.0
    );
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn a_too_slow_upload_is_cut_after_its_window_while_a_real_rate_chunked_put_is_not() {
    // 4000 bytes every 2 s, the first window 1 s longer: the trickle is cut at 3 s.
    let server = TestServer::start_with(|c| {
        c.upload_min_bytes = 4000;
        c.upload_rate_window = 2;
        c.upload_rate_grace = 1;
    })
    .await;
    // The trickle: a byte every 0.5 s (well within the idle timeout).
    let slow_path = "slow/chunk-stream0-00001.m4s";
    let stream = trickle(server.http, "127.0.0.3", slow_path).await;
    let slow_started = Instant::now();
    let (mut read, mut write) = stream.into_split();
    let trickler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        for _ in 0..40 {
            tick.tick().await;
            if write.write_all(b"1\r\nx\r\n").await.is_err() {
                return;
            }
        }
    });
    // Its answer, and when it came.
    let answered = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(text) = complete_response(&answer) {
                return Ok((slow_started.elapsed(), text));
            }
            match tokio::time::timeout(Duration::from_secs(15), read.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
                other => return Err(format!("{other:?}: {:?}", String::from_utf8_lossy(&answer))),
            }
        }
    });
    // The real encoder: ffmpeg's LL-DASH PUT, a CMAF chunk every 0.1 s; 800 bytes a chunk is a
    // 64 kbit/s audio track, the thinnest a real stream has. 6 s: past the grace and two windows.
    let real_path = "live/chunk-stream1-00001.m4s";
    let chunk = Bytes::from(vec![7u8; 800]);
    let feed = server.feed(Proto::H1, real_path, chunk.clone()).await;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut sent = chunk.len();
    for _ in 0..60 {
        tick.tick().await;
        feed.send(chunk.clone()).await;
        sent += chunk.len();
    }
    let cut_at = answered
        .await
        .expect("the reading task")
        .unwrap_or_else(|err| panic!("the slow upload was not answered: {err}"));
    let (cut_after, text) = cut_at;
    trickler.abort();
    assert_eq!(raw_status(&text), 408, "{text}");
    assert!(
        text.contains("--upload-min-bytes"),
        "the reason names the option: {text}"
    );
    assert!(server.store.get(slow_path).is_none(), "the cut upload is discarded");
    let status = feed.end().await.expect("the real upload ends");
    assert_eq!(status, 201, "the real-rate upload is never cut");
    let stored = server.store.get(real_path).expect("stored");
    assert_eq!(stored.len(), sent as u64, "every byte of the real upload");
    // Both slots are free again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.store.stats().uploads > 0 {
        assert!(
            Instant::now() < deadline,
            "upload slots still held: {:?}",
            server.store.stats()
        );
        tokio::task::yield_now().await;
    }
    let metrics = server.metrics.expect("the metrics listener");
    let scrape = testkit::metrics::scrape(metrics).await.expect("a scrape");
    assert_eq!(scrape.get("ldash_uploads_too_slow_total"), 1.0);
    println!(
        "FIGURE slow upload: a byte every 0.5 s cut after {:.2} s (rule: 4000 B a 2 s window, 1 s grace); 800 B every 0.1 s for 6 s stored whole",
        cut_after.as_secs_f64()
    );
    assert!(
        cut_after >= Duration::from_millis(2900) && cut_after < Duration::from_secs(6),
        "cut when its first window closed (3 s), not before, not much later: {cut_after:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_cmaf_ingest_track_at_its_rate_is_never_cut_and_a_stalled_one_is() {
    // The same rule as above: 4000 bytes every 2 s, the first window 1 s longer.
    let server = TestServer::start_with(|c| {
        c.upload_min_bytes = 4000;
        c.upload_rate_window = 2;
        c.upload_rate_grace = 1;
    })
    .await;
    let client = server.client_for(Proto::H2c).await;
    let init = Bytes::from(fixture("init-stream0.m4s"));
    let segment = Bytes::from(fixture("chunk-stream0-00002.m4s"));
    // The stalled track: its init segment, then a byte of its first fragment every 0.5 s.
    let (stall, stall_rx) = common::chunk_channel();
    let stalled = tokio::spawn(
        client
            .request(http::Method::POST, "/ldash/upload/stalled/Streams(video.cmfv)")
            .stream(stall_rx)
            .send(),
    );
    stall
        .send(Ok(init.clone()))
        .await
        .expect("the stalled track takes its init");
    let first = segment.clone();
    let staller = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        for i in 0..40 {
            tick.tick().await;
            if stall.send(Ok(first.slice(i..i + 1))).await.is_err() {
                return;
            }
        }
    });
    // The real track: one long POST, its bytes in 0.1 s pieces for 5 s (past the grace and two
    // windows), about 10 KB/s: less than a 64 kbit/s audio track sends.
    let (feed, feed_rx) = common::chunk_channel();
    let real = tokio::spawn(
        client
            .request(http::Method::POST, "/ldash/upload/steady/Streams(video.cmfv)")
            .stream(feed_rx)
            .send(),
    );
    feed.send(Ok(init)).await.expect("the real track takes its init");
    let piece = segment.len().div_ceil(50);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for at in (0..segment.len()).step_by(piece) {
        tick.tick().await;
        let end = (at + piece).min(segment.len());
        feed.send(Ok(segment.slice(at..end)))
            .await
            .expect("the real track goes on");
    }
    drop(feed);
    let real = real.await.expect("the real track's task").expect("an answer");
    let status = real.status;
    let text = real.text().await;
    assert_eq!(status, 200, "the track at its rate is never cut: {text}");
    assert!(text.starts_with("received "), "{text}");
    let stalled = stalled.await.expect("the stalled track's task").expect("an answer");
    staller.abort();
    let status = stalled.status;
    let text = stalled.text().await;
    assert_eq!(status, 408, "{text}");
    assert!(
        text.contains("--upload-min-bytes"),
        "the reason names the option: {text}"
    );
    assert!(
        server.store.list("stalled").is_empty(),
        "the stalled track published nothing"
    );
    assert!(
        server.store.get("steady/stream.mpd").is_some(),
        "the real track's channel is published"
    );
    server.stop().await;
}

/// Not a CMAF track: refused (415) before anything is published.
const GARBAGE: &[u8] = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n";

/// POSTs `refused` garbage tracks and `channels` one-fragment channels (16 at a time), each to a
/// channel of its own named after `prefix`; checks every answer.
async fn flood(client: &reqwest::Client, base: &str, prefix: &str, refused: usize, channels: usize, track: &Bytes) {
    let jobs = (0..refused)
        .map(|i| (format!("{prefix}-r{i}"), Bytes::from_static(GARBAGE), 415))
        .chain((0..channels).map(|i| (format!("{prefix}-c{i}"), track.clone(), 200)));
    let answers: Vec<(String, u16, u16)> = futures_util::stream::iter(jobs)
        .map(|(channel, body, wanted)| {
            let client = client.clone();
            let url = format!("{base}/ldash/upload/{channel}/Streams(video.cmfv)");
            async move {
                let status = match client.post(url).body(body).send().await {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0,
                };
                (channel, status, wanted)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let wrong: Vec<&(String, u16, u16)> = answers.iter().filter(|(_, got, wanted)| got != wanted).collect();
    assert!(
        wrong.is_empty(),
        "{} of {} tracks answered otherwise than expected (channel, got, wanted), e.g. {:?}",
        wrong.len(),
        answers.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// Waits (at most `bound`) until the store of `origin` holds nothing.
async fn purged(origin: &OriginProcess, bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        let entries = origin.metric("ldash_entries").await.expect("a scrape");
        if entries == 0.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "garbage collection left {entries} paths after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tracks_and_one_fragment_channels_leave_no_memory_behind_after_gc() {
    const REFUSED: usize = 5000;
    const CHANNELS: usize = 2000;
    let dir = tempfile::tempdir().expect("a temporary folder");
    // A child process, so that its resident memory (VmRSS) is the server's alone.
    let mut origin = OriginProcess::start(
        ldash_command(env!("CARGO_BIN_EXE_ldash")),
        dir.path(),
        &["--ttl", "2", "--end-after-segments", "1", "--no-h3"],
    )
    .await
    .expect("ldash starts");
    let client = origin.reqwest_client(Proto::H2c).expect("an h2c client");
    let base = origin.url(Proto::H2c, "");
    let track = Bytes::from([fixture("init-stream0.m4s"), fixture("chunk-stream0-00002.m4s")].concat());
    // A first round warms the allocator and the runtime's threads; the baseline is after it.
    flood(&client, &base, "warm", 100, 50, &track).await;
    purged(&origin, Duration::from_secs(60)).await;
    let baseline = process::rss_kib(origin.pid);
    // The flood, RSS sampled meanwhile.
    let pid = origin.pid;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            peak = peak.max(process::rss_kib(pid));
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stopped => return peak,
            }
        }
    });
    let flood_started = Instant::now();
    flood(&client, &base, "attack", REFUSED, CHANNELS, &track).await;
    let flood_took = flood_started.elapsed();
    // The stream list while the channels are stored: bounded, and says how many there are.
    let list = client
        .get(format!("{base}/ldash/streams"))
        .send()
        .await
        .expect("the stream list");
    let total: usize = list
        .headers()
        .get("x-streams-total")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("X-Streams-Total");
    let body = list.text().await.expect("the list's body");
    let listed: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let listed = listed.as_array().map_or(0, Vec::len);
    assert!(listed <= 200, "at most 200 streams listed: {listed}");
    assert!(body.len() < 256 << 10, "the list stays small: {} bytes", body.len());
    purged(&origin, Duration::from_secs(90)).await;
    let gc_done = Instant::now();
    let _ = stop.send(());
    let peak = sampler.await.expect("the sampler").max(baseline);
    let bound = baseline + baseline / 5 + 16 * 1024;
    let mut after = process::rss_kib(origin.pid);
    while after > bound && gc_done.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = process::rss_kib(origin.pid);
    }
    println!(
        "FIGURE flood: {REFUSED} refused tracks + {CHANNELS} one-fragment channels in {:.1} s; stream list {listed} of {total} ({} bytes); RSS before {} KiB, peak {} KiB, after GC {} KiB (bound {} KiB) {:.1} s after the store emptied",
        flood_took.as_secs_f64(),
        body.len(),
        baseline,
        peak,
        after,
        bound,
        gc_done.elapsed().as_secs_f64()
    );
    assert!(
        after <= bound,
        "RSS {after} KiB 30 s after garbage collection, over 1.2 x {baseline} KiB + 16 MiB (peak {peak} KiB)"
    );
    let (status, log) = origin.stop().await.expect("ldash stops");
    assert!(
        status.success(),
        "ldash exits cleanly: {status:?}, errors {:?}",
        log.errors
    );
}
