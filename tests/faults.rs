//! Faults and what ldash does about them (docs/operations.md, "Faults and what ldash does"): the
//! encoder killed mid-segment and started again, ldash restarted mid-stream, HTTP/3 through a lossy
//! path, a slow reader, and a root folder that cannot be written. Every wait is on an event (store
//! events, body ends, responses) and bounded.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client::{Client, H3Client};
use common::encoder::{ffprobe_decodes, Ingest};
use common::{require_tool, Proto, TestServer};
use ldash::store::{EntryState, Store, StoreEvent};
use testkit::digest::sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Waits for an upload of `path` that starts after this call (a new run's segment, not the old one).
async fn wait_new_upload(store: &Store, path: &str, bound: Duration) -> Arc<ldash::store::Entry> {
    let mut events = store.subscribe();
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(StoreEvent::Started { path: p, entry })) if &*p == path => return entry,
            Ok(_) => {}
            Err(_) => panic!("no new upload of {path} started within {bound:?}"),
        }
    }
}

/// A new encoder run on the same URL: waits until its upload of `segment` (started after this
/// call) has its first bytes, then asserts that the playlist is live again, numbered from the new
/// run's first segment. Returns the playlist.
async fn assert_new_run(server: &TestServer, client: &Client, segment: &str) -> String {
    let entry = wait_new_upload(&server.store, segment, Duration::from_secs(30)).await;
    assert!(
        entry.wait_for_len(1, Duration::from_secs(5)).await,
        "{segment} gets its first bytes"
    );
    let (status, playlist) = client.get_text("/ldash/download/live/stream.0.m3u8").await;
    assert_eq!(status, 200, "{playlist}");
    assert!(!playlist.contains("#EXT-X-ENDLIST"), "live again: {playlist}");
    assert!(playlist.contains("#EXT-X-PART:"), "{playlist}");
    assert!(
        playlist.contains("#EXT-X-MEDIA-SEQUENCE:1\n"),
        "the new run's numbering from its first segment, without the old run's segments: {playlist}"
    );
    playlist
}

/// The live edge of a media playlist: the media sequence number of its last segment line or part.
fn last_msn(playlist: &str) -> u64 {
    let sequence: u64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let segments = playlist.lines().filter(|l| l.starts_with("#EXTINF:")).count() as u64;
    sequence + segments
}

/// One sample of `GET /metrics` (0 when absent).
async fn metric(server: &TestServer, sample: &str) -> f64 {
    let scrape = server.scrape().await.unwrap_or_else(|e| panic!("{e}"));
    scrape.value(sample).unwrap_or(0.0)
}

/// Reads a response to its end: Ok(bytes) at a clean end, Err(bytes so far, error) when it broke.
async fn read_to_end(mut response: common::client::Response) -> Result<Vec<u8>, (Vec<u8>, String)> {
    let mut all = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => all.extend_from_slice(&chunk),
            Ok(None) => return Ok(all),
            Err(err) => return Err((all, err)),
        }
    }
}

// 1. The encoder dies mid-segment, and comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_encoder_cuts_its_readers_ends_the_stream_and_a_new_encoder_resumes_it() {
    let (Some(ffmpeg), Some(_)) = (require_tool("ffmpeg"), require_tool("ffprobe")) else {
        return;
    };
    let server = TestServer::start_with(|c| c.end_after_segments = 2).await;
    let mut encoder = server.encoder(&ffmpeg, Ingest::PutPersistent, 120);
    let growing = server
        .upload_started("live/chunk-stream0-00003.m4s", Duration::from_secs(30))
        .await;
    assert!(
        growing.wait_for_len(1, Duration::from_secs(5)).await,
        "segment 3 gets its first chunk"
    );
    let h1 = server.client_for(Proto::H1).await;
    let h2 = server.client_for(Proto::H2Tls).await;
    let h3 = server.client_for(Proto::H3).await;
    let mut readers = Vec::new();
    for client in [&h1, &h2, &h3] {
        let mut r = client.get("/ldash/download/live/chunk-stream0-00003.m4s").fetch().await;
        assert_eq!(r.status, 200);
        let first = r.chunk().await.expect("first bytes").expect("not ended");
        assert!(!first.is_empty());
        readers.push(r);
    }
    assert_eq!(growing.state(), EntryState::Growing, "the kill comes mid-segment");
    encoder.child.start_kill().expect("SIGKILL ffmpeg");
    let _ = encoder.child.wait().await;
    for (reader, proto) in readers.into_iter().zip(["HTTP/1.1", "HTTP/2", "HTTP/3"]) {
        let ended = tokio::time::timeout(Duration::from_secs(10), read_to_end(reader))
            .await
            .expect("the reader ends once the upload is gone");
        let (_, err) = ended.expect_err("a reader of the killed upload must see an error, not a clean end");
        eprintln!("{proto} reader of the killed segment ended with: {err}");
    }
    assert_eq!(growing.state(), EntryState::Aborted, "the half segment is discarded");

    // No upload for two segment durations: the stream has ended. A blocking reload for the next
    // segment is answered with the ended playlist as the stream ends (no sleep: the response is
    // the event).
    let (status, live) = h2.get_text("/ldash/download/live/stream.0.m3u8").await;
    assert_eq!(status, 200, "{live}");
    let route = format!("/ldash/download/live/stream.0.m3u8?_HLS_msn={}", last_msn(&live) + 1);
    let mut ended = String::new();
    for _ in 0..3 {
        let (status, body) = h2.get_text(&route).await;
        if status == 200 && body.contains("#EXT-X-ENDLIST") {
            ended = body;
            break;
        }
    }
    assert!(ended.contains("#EXT-X-ENDLIST"), "the playlist ends: {ended}");
    assert!(
        !ended.contains("#EXT-X-PART:"),
        "an ended playlist lists no parts: {ended}"
    );
    let (_, mpd) = h2.get_text("/ldash/download/live/stream.mpd").await;
    assert!(
        mpd.contains("mediaPresentationDuration=\""),
        "the MPD of the ended stream says how long it is: {mpd}"
    );
    let (_, list) = h2.get_text("/ldash/streams").await;
    let list: serde_json::Value = serde_json::from_str(&list).expect("JSON");
    assert_eq!(list[0]["state"], "ended", "{list}");

    // A new ffmpeg on the same URL: the stream lives again under the same name.
    let mut encoder = server.encoder(&ffmpeg, Ingest::PutPersistent, 120);
    let resumed = assert_new_run(&server, &h2, "live/chunk-stream0-00004.m4s").await;
    assert!(resumed.contains("chunk-stream0-00003.m4s"), "{resumed}");
    let (_, mpd) = h2.get_text("/ldash/download/live/stream.mpd").await;
    assert!(
        !mpd.contains("mediaPresentationDuration"),
        "the MPD is live again: {mpd}"
    );
    let init = h2.get_ok("/ldash/download/live/init-stream0.m4s").await;
    let third = h2.get_ok("/ldash/download/live/chunk-stream0-00003.m4s").await;
    ffprobe_decodes(&init, &third).unwrap_or_else(|e| panic!("the new run's segment 3 decodes: {e}"));
    encoder.stop().await.expect("stop ffmpeg");
}

// 2. ldash restarts mid-stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_ldash_keeps_completed_segments_and_a_reconnecting_encoder_resumes() {
    let (Some(ffmpeg), Some(_)) = (require_tool("ffmpeg"), require_tool("ffprobe")) else {
        return;
    };
    let dir = tempfile::tempdir().expect("root");
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut encoder = server.encoder(&ffmpeg, Ingest::PutPersistent, 120);
    server
        .upload_started("live/chunk-stream0-00004.m4s", Duration::from_secs(30))
        .await;
    let client = server.client_for(Proto::H1).await;
    let before = client.get_ok("/ldash/download/live/chunk-stream0-00002.m4s").await;
    server.stop().await;
    // ffmpeg with -http_persistent 1 exits on the broken connection (FIELD-NOTES); if it is still
    // trying, it is stopped: the reconnecting encoder is a new one either way (new port here).
    if tokio::time::timeout(Duration::from_secs(10), encoder.child.wait())
        .await
        .is_err()
    {
        encoder.stop().await.expect("stop ffmpeg");
    }

    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let client = server.client_for(Proto::H2Tls).await;
    let after = client.get_ok("/ldash/download/live/chunk-stream0-00002.m4s").await;
    assert_eq!(
        sha256(&after),
        sha256(&before),
        "a completed segment survives the restart byte for byte"
    );
    let (status, _) = client.get_text("/ldash/download/live/stream.mpd?raw=1").await;
    assert_eq!(status, 200, "the last manifest survives too");

    let mut encoder = server.encoder(&ffmpeg, Ingest::PutPersistent, 120);
    assert_new_run(&server, &client, "live/chunk-stream0-00003.m4s").await;
    let (status, mpd) = client.get_text("/ldash/download/live/stream.mpd").await;
    assert_eq!(status, 200);
    assert!(
        mpd.contains("type=\"dynamic\"") && mpd.contains("availabilityTimeComplete=\"false\""),
        "{mpd}"
    );
    assert!(
        server.store.get("live/chunk-stream0-00004.m4s").is_none(),
        "the earlier run's segment 4 (from disk) was dropped when the new run started"
    );
    let init = client.get_ok("/ldash/download/live/init-stream0.m4s").await;
    let second = client.get_ok("/ldash/download/live/chunk-stream0-00002.m4s").await;
    ffprobe_decodes(&init, &second).unwrap_or_else(|e| panic!("the new run's segment 2 decodes: {e}"));
    encoder.stop().await.expect("stop ffmpeg");
}

/// The stream's state survives an ldash restart whether or not its encoder comes back: at start
/// ldash indexes what is on disk, so the LL-HLS playlists and the MPD are served from the stream's
/// last state at once over every HTTP version (they answered 503 until the encoder was back), and
/// the stream ends by the usual rule, counted from the start (not its last write: the encoder may
/// have gone on to another origin meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_ldash_serves_a_streams_last_state_at_once_and_ends_it_by_the_usual_rule() {
    let Some(ffmpeg) = require_tool("ffmpeg") else {
        return;
    };
    let dir = tempfile::tempdir().expect("root");
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut encoder = server.encoder(&ffmpeg, Ingest::PutPersistent, 120);
    server
        .upload_started("live/chunk-stream0-00005.m4s", Duration::from_secs(30))
        .await;
    server.stop().await;
    // The encoder goes away with its origin and does not come back.
    encoder.stop().await.expect("stop ffmpeg");

    let server = TestServer::start_in(dir.path(), |_| {}).await;
    for proto in common::ALL_PROTOS {
        let client = server.client_for(proto).await;
        let (status, multivariant) = client.get_text("/ldash/download/live/stream.m3u8").await;
        assert_eq!(status, 200, "{proto:?}: {multivariant}");
        let (status, playlist) = client.get_text("/ldash/download/live/stream.0.m3u8").await;
        assert_eq!(status, 200, "{proto:?}: the media playlist at once: {playlist}");
        // (Segment 4 may have been cut short by the stop, its upload ending with segment 5's start.)
        for n in 1..=3 {
            assert!(
                playlist.contains(&format!("\nchunk-stream0-{n:05}.m4s\n")),
                "{proto:?}: segment {n}, complete before the restart, is listed: {playlist}"
            );
        }
        assert!(
            playlist.contains("#EXT-X-PART:"),
            "{proto:?}: the last segments' parts are listed: {playlist}"
        );
        let (status, mpd) = client.get_text("/ldash/download/live/stream.mpd").await;
        assert_eq!(status, 200, "{proto:?}: {mpd}");
    }
    // No upload since the restart: the stream ends five segment durations after the start. A
    // blocking request for a part that never comes is answered with the ended playlist then (or
    // 503 after three target durations, and asked again).
    let client = server.client_for(Proto::H2Tls).await;
    // Not ready for an edge's viewers (the playlists above waited for the index of the disk): the
    // stream found on disk is behind its encoder.
    let (status, ready) = client.get_text("/ldash/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert!(ready.contains("catching up") && ready.contains("live"), "{ready}");
    // A request ahead of what was on disk (the encoder may be further on: another origin told the
    // player of a later edge) is held like any other, not refused as too far ahead, while no
    // upload has reached the restarted origin.
    let (status, playlist) = client
        .get_text("/ldash/download/live/stream.0.m3u8?_HLS_msn=10&_HLS_part=0")
        .await;
    assert!(status == 200 || status == 503, "{status}: {playlist}");
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (status, playlist) = client
                .get_text("/ldash/download/live/stream.0.m3u8?_HLS_msn=5&_HLS_part=0")
                .await;
            if status == 200 && playlist.contains("#EXT-X-ENDLIST") {
                return playlist;
            }
            assert!(status == 200 || status == 503, "{status}: {playlist}");
        }
    })
    .await
    .expect("the stream ends within 20 s of the restart");
    assert!(ended.contains("\nchunk-stream0-00003.m4s\n"), "{ended}");
    let (_, mpd) = client.get_text("/ldash/download/live/stream.mpd").await;
    assert!(mpd.contains("mediaPresentationDuration"), "the ended MPD: {mpd}");
    // The encoder did not come back within the end rule's five segment durations of the start
    // (the probe's view: polled as an edge's probe does): ready, nothing to catch up with.
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (status, text) = client.get_text("/ldash/ready").await;
            if status == 200 {
                return text;
            }
            assert_eq!(status, 503, "{text}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("ready within 10 s of the start");
    assert_eq!(ready, "ready\n");
}

/// An encoder that keeps going while ldash restarts (ffmpeg with a connection per file and
/// `-ignore_io_errors 1`) continues its stream on the restarted ldash with its own numbering: the
/// same MPD, the segments from before the restart kept (no new run), the playlists going on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_that_outlives_an_ldash_restart_continues_its_stream() {
    let (Some(ffmpeg), Some(_)) = (require_tool("ffmpeg"), require_tool("ffprobe")) else {
        return;
    };
    let dir = tempfile::tempdir().expect("root");
    // The restarted ldash listens where the encoder uploads: the same port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let server = TestServer::start_in(dir.path(), |c| c.http = port).await;
    let mut encoder = server.encoder(&ffmpeg, Ingest::PutOutlivingTheOrigin, 120);
    server
        .upload_started("live/chunk-stream0-00004.m4s", Duration::from_secs(30))
        .await;
    let client = server.client_for(Proto::H1).await;
    let (_, mpd_before) = client.get_text("/ldash/download/live/stream.mpd?raw=1").await;
    server.stop().await;

    let server = TestServer::start_in(dir.path(), |c| c.http = port).await;
    let mut events = server.store.subscribe();
    // The encoder's uploads reach the restarted ldash: segment 8 (numbered on, not a new run).
    let went_on = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await {
                Ok(StoreEvent::Started { path, .. }) if &*path == "live/chunk-stream0-00008.m4s" => return,
                Ok(StoreEvent::Started { path, .. }) if &*path == "live/chunk-stream0-00001.m4s" => {
                    panic!("the encoder started over instead of going on")
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(err) => panic!("store events: {err}"),
            }
        }
    })
    .await;
    if went_on.is_err() {
        let _ = encoder.stop().await;
        panic!(
            "no segment 8 within 20 s of the restart; ffmpeg: {}",
            encoder.log().await
        );
    }
    let client = server.client_for(Proto::H2Tls).await;
    assert!(
        server.store.get("live/chunk-stream0-00002.m4s").is_some(),
        "the segments from before the restart stay (no new run)"
    );
    let (status, mpd) = client.get_text("/ldash/download/live/stream.mpd?raw=1").await;
    assert_eq!(status, 200);
    let ast = |mpd: &str| {
        mpd.split("availabilityStartTime=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(str::to_owned)
    };
    assert_eq!(ast(&mpd), ast(&mpd_before), "the same stream: {mpd}");
    let (status, playlist) = client.get_text("/ldash/download/live/stream.0.m3u8").await;
    assert_eq!(status, 200, "{playlist}");
    assert!(playlist.contains("\nchunk-stream0-00007.m4s\n"), "{playlist}");
    let init = client.get_ok("/ldash/download/live/init-stream0.m4s").await;
    let seventh = client.get_ok("/ldash/download/live/chunk-stream0-00007.m4s").await;
    ffprobe_decodes(&init, &seventh).unwrap_or_else(|e| panic!("segment 7, after the restart, decodes: {e}"));
    // Caught up a segment duration after the encoder's uploads reached it again: by the start of
    // segment 10, two segments after 8.
    wait_new_upload(&server.store, "live/chunk-stream0-00010.m4s", Duration::from_secs(10)).await;
    let (status, ready) = client.get_text("/ldash/ready").await;
    assert_eq!((status, ready.as_str()), (200, "ready\n"));
    encoder.stop().await.expect("stop ffmpeg");
}

// 3. HTTP/3 under loss.

/// xorshift64*: a deterministic loss pattern from a seed.
struct Rng(u64);

impl Rng {
    fn chance(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Default)]
struct RelayStats {
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// A UDP relay between one client and `server` that drops `loss` of the datagrams each way
/// (deterministically from `seed`) and delays the rest by `delay` (in order), with at most 4096
/// datagrams in flight each way (more are dropped).
async fn lossy_relay(server: SocketAddr, loss: f64, delay: Duration, seed: u64) -> (SocketAddr, Arc<RelayStats>) {
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    back.connect(server).await.expect("connect");
    let addr = front.local_addr().expect("addr");
    let stats = Arc::new(RelayStats::default());
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    type Queue = tokio::sync::mpsc::Sender<(tokio::time::Instant, Vec<u8>)>;
    let (to_server, mut for_server) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(4096);
    let (to_client, mut for_client) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(4096);
    let offer = move |queue: &Queue, rng: &mut Rng, stats: &RelayStats, packet: Vec<u8>| {
        if rng.chance() < loss || queue.try_send((tokio::time::Instant::now() + delay, packet)).is_err() {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    };
    {
        let (front, stats, client) = (Arc::clone(&front), Arc::clone(&stats), Arc::clone(&client));
        tokio::spawn(async move {
            let mut rng = Rng(seed);
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap_or_else(|p| p.into_inner()) = Some(from);
                offer(&to_server, &mut rng, &stats, buf[..n].to_vec());
            }
        });
    }
    {
        let (back, stats) = (Arc::clone(&back), Arc::clone(&stats));
        tokio::spawn(async move {
            let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = back.recv(&mut buf).await {
                offer(&to_client, &mut rng, &stats, buf[..n].to_vec());
            }
        });
    }
    tokio::spawn(async move {
        while let Some((at, packet)) = for_server.recv().await {
            tokio::time::sleep_until(at).await;
            let _ = back.send(&packet).await;
        }
    });
    tokio::spawn(async move {
        while let Some((at, packet)) = for_client.recv().await {
            tokio::time::sleep_until(at).await;
            let to = *client.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(to) = to {
                let _ = front.send_to(&packet, to).await;
            }
        }
    });
    (addr, stats)
}

/// Reads a growing download to its end; returns its bytes and the instant of its last byte.
async fn timed_download(client: Client, route: String) -> (Vec<u8>, Instant) {
    let mut r = client.get(&route).fetch().await;
    assert_eq!(r.status, 200);
    let mut all = Vec::new();
    let mut last = Instant::now();
    while let Some(chunk) = r.chunk().await.expect("the download completes") {
        all.extend_from_slice(&chunk);
        last = Instant::now();
    }
    (all, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_through_five_percent_loss_delivers_a_growing_segment_byte_exact() {
    lossy_http3_delivery(ldash::config::Congestion::Cubic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_with_bbr_through_five_percent_loss_delivers_a_growing_segment_byte_exact() {
    lossy_http3_delivery(ldash::config::Congestion::Bbr).await;
}

async fn lossy_http3_delivery(congestion: ldash::config::Congestion) {
    let server = TestServer::start_with(|c| c.quic_congestion = congestion).await;
    let quic = server.quic.expect("HTTP/3 is on");
    let (relay, stats) = lossy_relay(quic, 0.05, Duration::from_millis(50), 0x5eed_1e55).await;
    let tls = server.tls_client(&[b"h3"]).expect("TLS client");
    let lossy = Client::H3(H3Client::connect(relay, tls).await.expect("HTTP/3 through the relay"));
    let direct = server.client_for(Proto::H3).await;

    // A 2 MB segment uploaded like an encoder does: 40 chunks of 50 KB, one every 25 ms.
    let data: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut pieces = data.chunks(50_000).map(Bytes::copy_from_slice);
    let upload = server
        .feed(Proto::H1, "lossy/segment.m4s", pieces.next().expect("data"))
        .await;
    assert!(upload.entry.wait_for_len(1, Duration::from_secs(10)).await);
    let route = "/ldash/download/lossy/segment.m4s".to_owned();
    let near = tokio::spawn(timed_download(direct, route.clone()));
    let far = tokio::spawn(timed_download(lossy, route));
    let mut pace = tokio::time::interval(Duration::from_millis(25));
    for piece in pieces {
        pace.tick().await;
        upload.send(piece).await;
    }
    assert_eq!(upload.end().await, Ok(201));
    let (near, far) = tokio::time::timeout(Duration::from_secs(60), async { (near.await, far.await) })
        .await
        .expect("both downloads end within 60 s");
    let ((near, near_last), (far, far_last)) = (near.expect("direct reader"), far.expect("relayed reader"));
    assert_eq!(
        sha256(&near),
        sha256(&data),
        "the direct HTTP/3 reader gets the upload exactly"
    );
    assert_eq!(far.len(), data.len(), "length through the lossy relay");
    assert_eq!(
        sha256(&far),
        sha256(&data),
        "the reader behind 5% loss gets the upload exactly"
    );
    let extra = far_last.saturating_duration_since(near_last);
    eprintln!(
        "HTTP/3 ({congestion:?}), 5% loss each way, 50 ms one-way delay: last byte {:.0} ms after the \
         direct reader's ({} datagrams forwarded, {} dropped)",
        extra.as_secs_f64() * 1000.0,
        stats.forwarded.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
    );
}

// 4. A slow reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_delays_no_one_and_is_cut_off_once_too_far_behind() {
    // A bounded kernel send buffer, so the slow reader cannot hide megabytes in its socket.
    let server = TestServer::start_with(|c| {
        c.reader_lag_limit = 256 << 10;
        c.tcp_send_buffer = 64 << 10;
    })
    .await;
    let data: Vec<u8> = (0..6_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut pieces = data.chunks(8192).map(Bytes::copy_from_slice);
    let upload = server
        .feed(Proto::H1, "slow/segment.m4s", pieces.next().expect("data"))
        .await;

    // The slow reader: a raw HTTP/1.1 client with a 4 KB receive buffer that reads 1 KB every
    // 100 ms (10 KB/s). Its MSS is that of an Ethernet path: with loopback's 64 KB segments the
    // kernel would size the server's send buffer at megabytes and hold the whole upload there.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("small receive buffer");
    socket.set_tcp_mss(1400).expect("Ethernet-sized segments");
    socket.connect(&server.http.into()).expect("connect");
    socket.set_nonblocking(true).expect("non-blocking");
    let mut slow = tokio::net::TcpStream::from_std(socket.into()).expect("tokio stream");
    let request = format!(
        "GET /ldash/download/slow/segment.m4s HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.http
    );
    slow.write_all(request.as_bytes()).await.expect("request");
    let slow_read = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&slow_read);
    let slow_reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let mut pace = tokio::time::interval(Duration::from_millis(100));
        let outcome = loop {
            pace.tick().await;
            match slow.read(&mut buf).await {
                Ok(0) => break "closed".to_owned(),
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(err) => break format!("reset: {err}"),
            }
        };
        (got, outcome)
    });

    let fast = tokio::spawn(timed_download(
        server.client_for(Proto::H1).await,
        "/ldash/download/slow/segment.m4s".to_owned(),
    ));
    // The encoder's pace: 8 KB every 5 ms (1.6 MB/s, about 4 s for the whole segment).
    let mut pace = tokio::time::interval(Duration::from_millis(5));
    // The upload is never held back by the slow reader.
    for piece in pieces {
        pace.tick().await;
        upload.send(piece).await;
    }
    assert_eq!(upload.end().await, Ok(201));
    let (fast, _) = tokio::time::timeout(Duration::from_secs(30), fast)
        .await
        .expect("the fast reader ends")
        .expect("fast reader");
    assert_eq!(sha256(&fast), sha256(&data), "the fast reader gets everything");
    let behind = slow_read.load(Ordering::Relaxed);
    assert!(
        behind < 1_000_000,
        "the upload and the fast reader completed while the slow reader had {behind} bytes of 6 MB"
    );

    let (got, outcome) = tokio::time::timeout(Duration::from_secs(60), slow_reader)
        .await
        .expect("the slow reader is cut off within a minute")
        .expect("slow reader");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{}", &text[..text.len().min(200)]);
    assert!(
        got.len() < 2_000_000 && !got.ends_with(b"\r\n0\r\n\r\n"),
        "the slow reader is cut off ({outcome}) with a truncated body of {} bytes, not a clean end",
        got.len()
    );
    eprintln!(
        "slow reader: {} bytes before it was cut off ({outcome}); the fast reader and the upload \
         finished when it had {behind}",
        got.len()
    );
    assert_eq!(metric(&server, "ldash_slow_readers_cut_total").await, 1.0);
}

// 5. The root cannot be written.
async fn serves_from_memory_when_writes_fail(server: &TestServer) {
    // A segment followed while it grows, then read again complete.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let mut pieces = data.chunks(30_000).map(Bytes::copy_from_slice);
    let upload = server
        .feed(Proto::H1, "live/after.m4s", pieces.next().expect("data"))
        .await;
    let client = server.client_for(Proto::H2Tls).await;
    let reader = tokio::spawn(timed_download(client.clone(), "/ldash/download/live/after.m4s".into()));
    for piece in pieces {
        upload.send(piece).await;
    }
    assert_eq!(
        upload.end().await,
        Ok(201),
        "the upload is accepted although it cannot be written"
    );
    let (live, _) = reader.await.expect("live reader");
    assert_eq!(sha256(&live), sha256(&data), "the growing segment was relayed in full");
    server.store.flush().await;
    let errors = metric(server, "ldash_disk_write_errors_total").await;
    assert!(errors >= 1.0, "the failed write is counted: {errors}");
    assert_eq!(
        sha256(&client.get_ok("/ldash/download/live/after.m4s").await),
        sha256(&data),
        "the complete segment is served from memory"
    );
    assert_eq!(
        client.get_ok("/ldash/download/live/before.m4s").await.as_ref(),
        b"written before the fault",
        "what was there before is still served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_root_keeps_live_serving_from_memory_and_counts_the_errors() {
    let server = TestServer::start().await;
    assert_eq!(server.put("live/before.m4s", "written before the fault").await, 201);
    server.store.flush().await;
    assert!(
        server.root.join("live/before.m4s").is_file(),
        "persisted while the root was fine"
    );
    // Tests run as root, where permissions do not stop writes: the root's path becomes a file, so
    // every write below it fails (ENOTDIR).
    std::fs::rename(&server.root, server.root.with_extension("gone")).expect("move the root away");
    std::fs::write(&server.root, b"not a folder").expect("a file where the root was");
    serves_from_memory_when_writes_fail(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_live_serving_from_memory_and_counts_the_errors() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).expect("root");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&root)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "SKIPPED: cannot mount a small tmpfs here (needs root); the unwritable-root test covers the same path"
        );
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(root.clone());
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    assert_eq!(server.put("live/before.m4s", "written before the fault").await, 201);
    // Fill the 64 KB disk.
    assert_eq!(server.put("fill/big.bin", vec![7u8; 200_000]).await, 201);
    server.store.flush().await;
    assert!(
        metric(&server, "ldash_disk_write_errors_total").await >= 1.0,
        "a file larger than the disk fails to be written"
    );
    serves_from_memory_when_writes_fail(&server).await;
    server.stop().await;
}

// The store-level rules behind the faults, without sockets.

async fn drain(reader: &mut ldash::store::Reader) -> Result<Vec<u8>, ldash::store::ReadError> {
    let mut all = Vec::new();
    while let Some(chunk) = reader.next_chunk().await {
        all.extend_from_slice(&chunk?);
    }
    Ok(all)
}

#[tokio::test]
async fn lag_limit_cuts_a_reader_that_falls_behind_but_not_one_that_joined_late() {
    let dir = tempfile::tempdir().expect("root");
    let store = Store::open(dir.path(), ldash::store::Limits::default()).expect("store");
    let mut upload = store
        .begin_upload(&sp("s/seg.m4s"), ldash::store::UploadOptions::default())
        .expect("upload");
    upload.append(Bytes::from(vec![1u8; 10_000])).expect("append");
    let entry = Arc::clone(upload.entry());
    // Joins 10 KB behind the edge with a 4 KB window: its starting lag is not held against it.
    let mut late = entry.reader(0, None).with_lag_limit(4_000);
    let mut idle = entry.reader(0, None).with_lag_limit(4_000);
    assert_eq!(late.next_chunk().await.expect("chunk").expect("ok").len(), 10_000);
    upload.append(Bytes::from(vec![2u8; 3_000])).expect("append");
    assert_eq!(late.next_chunk().await.expect("chunk").expect("ok").len(), 3_000);
    upload.append(Bytes::from(vec![3u8; 3_000])).expect("append");
    // `idle` took nothing while 6 KB arrived: 2 KB over its window.
    assert!(matches!(
        idle.next_chunk().await,
        Some(Err(ldash::store::ReadError::TooSlow { limit: 4_000 }))
    ));
    upload.finish().expect("finish");
    assert_eq!(
        drain(&mut late)
            .await
            .expect("the reader that kept up ends cleanly")
            .len(),
        3_000
    );
    let mut after = entry.reader(0, None).with_lag_limit(1);
    assert_eq!(
        drain(&mut after).await.expect("a complete entry is never cut").len(),
        16_000
    );
}

#[tokio::test]
async fn a_segment_uploaded_at_once_over_a_complete_one_is_streamed_while_it_grows() {
    let dir = tempfile::tempdir().expect("root");
    let store = Store::open(dir.path(), ldash::store::Limits::default()).expect("store");
    let mut old = store
        .begin_upload(&sp("s/seg.m4s"), ldash::store::UploadOptions::default())
        .expect("upload");
    old.append(Bytes::from_static(b"old run")).expect("append");
    old.finish().expect("finish");
    let mut reader_of_old = store.get("s/seg.m4s").expect("old").reader(0, None);
    let mut new = store
        .begin_upload(
            &sp("s/seg.m4s"),
            ldash::store::UploadOptions {
                arrival: None,
                replace: ldash::store::Replace::AtOnce,
            },
        )
        .expect("upload");
    new.append(Bytes::from_static(b"new ")).expect("append");
    let current = store.get("s/seg.m4s").expect("current");
    assert_eq!(
        current.state(),
        EntryState::Growing,
        "readers get the new upload at once"
    );
    let mut reader = current.reader(0, None);
    assert_eq!(reader.next_chunk().await.expect("chunk").expect("ok").as_ref(), b"new ");
    new.append(Bytes::from_static(b"run")).expect("append");
    new.finish().expect("finish");
    assert_eq!(drain(&mut reader).await.expect("clean end"), b"run");
    assert_eq!(
        drain(&mut reader_of_old)
            .await
            .expect("a reader of the old version finishes it"),
        b"old run"
    );
    // A manifest keeps the atomic replace.
    let mut mpd = store
        .begin_upload(&sp("s/m.mpd"), ldash::store::UploadOptions::default())
        .expect("upload");
    mpd.append(Bytes::from_static(b"v1")).expect("append");
    mpd.finish().expect("finish");
    let mut v2 = store
        .begin_upload(&sp("s/m.mpd"), ldash::store::UploadOptions::default())
        .expect("upload");
    v2.append(Bytes::from_static(b"v2")).expect("append");
    assert_eq!(store.get("s/m.mpd").expect("v1").state(), EntryState::Complete);
    // And an at-once replacement that fails leaves nothing behind, in memory or on disk.
    store.flush().await;
    assert!(dir.path().join("s/seg.m4s").is_file());
    let broken = store
        .begin_upload(
            &sp("s/seg.m4s"),
            ldash::store::UploadOptions {
                arrival: None,
                replace: ldash::store::Replace::AtOnce,
            },
        )
        .expect("upload");
    broken.abort();
    store.flush().await;
    assert!(store.get("s/seg.m4s").is_none());
    assert!(
        !dir.path().join("s/seg.m4s").exists(),
        "the dead version's file is removed"
    );
    drop(v2);
}

/// A store path the test knows is valid.
fn sp(path: &str) -> ldash::store::StorePath {
    ldash::store::StorePath::new(path).unwrap_or_else(|e| panic!("{path:?} is not a valid store path: {e}"))
}
