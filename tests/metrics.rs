//! `GET /metrics` on the metrics listener, through real sockets: uploads and downloads over HTTP/1.1,
//! HTTP/2 and HTTP/3 move the byte counters of their version, a download attached to a growing
//! upload shows in the readers gauge and the relay-delay histogram, uploads in progress go up and
//! back to 0, responses are counted by status class, and the public ports know nothing of /metrics.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use common::client::Client;
use common::{chunk_channel, raw_exchange, raw_status, Proto, TestServer};
use http::Method;

/// One scrape: every sample by its name with labels (`ldash_sent_bytes_total{version="2"}`).
struct Scrape {
    samples: HashMap<String, f64>,
    text: String,
}

impl Scrape {
    /// A sample's value; fails the test with the whole scrape when it is missing.
    fn get(&self, sample: &str) -> f64 {
        match self.samples.get(sample) {
            Some(value) => *value,
            None => panic!("no sample {sample} in the scrape:\n{}", self.text),
        }
    }
}

/// Scrapes `GET /metrics` over a new HTTP/1.1 connection and parses the text format.
async fn scrape(addr: SocketAddr) -> Scrape {
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let response = raw_exchange(addr, request.as_bytes(), "\u{0}never\u{0}").await;
    assert_eq!(raw_status(&response), 200, "scrape failed: {response}");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "a scrape is the Prometheus text format: {head}"
    );
    let mut samples = HashMap::new();
    for line in body.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.rsplit_once(' ') else {
            panic!("not a sample line: {line:?}");
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("not a sample value in {line:?}")),
        };
        samples.insert(name.to_owned(), value);
    }
    Scrape {
        samples,
        text: body.to_owned(),
    }
}

fn sent(version: &str) -> String {
    format!("ldash_sent_bytes_total{{version=\"{version}\"}}")
}

fn received(version: &str) -> String {
    format!("ldash_received_bytes_total{{version=\"{version}\"}}")
}

fn responses(class: &str) -> String {
    format!("ldash_responses_total{{class=\"{class}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_transfers_by_version_and_follow_a_growing_upload() {
    // One upload at a time, so a second upload while one is open is a 503 (a 5xx to count).
    let server = TestServer::start_with(|config| config.max_uploads = 1).await;
    let metrics = server.metrics.expect("the metrics listener is on");
    let before = scrape(metrics).await;
    assert_eq!(before.get("ldash_uploads_in_progress"), 0.0, "nothing uploads yet");
    assert_eq!(
        before.get("ldash_relay_delay_seconds_count"),
        0.0,
        "nothing relayed yet"
    );

    // A whole upload and its download over each HTTP version.
    let cases = [
        (Proto::H1, "1.1", 1000usize),
        (Proto::H2Tls, "2", 2000),
        (Proto::H3, "3", 3000),
    ];
    for (proto, _, size) in cases {
        let client = server.client_for(proto).await;
        let route = format!("/ldash/upload/vod/{proto:?}.bin");
        let put = client.put(&route).body(vec![b'x'; size]).send().await.expect("upload");
        assert_eq!(put.status, 201, "upload over {proto:?}");
        let download = client
            .get(&route.replace("upload", "download"))
            .send()
            .await
            .expect("download");
        assert_eq!(download.status, 200, "download over {proto:?}");
        assert_eq!(download.bytes().await.expect("body").len(), size, "body over {proto:?}");
    }
    let after = scrape(metrics).await;
    for (proto, version, size) in cases {
        assert_eq!(
            after.get(&received(version)) - before.get(&received(version)),
            size as f64,
            "the upload over {proto:?} counts its body as received over HTTP/{version}"
        );
        assert!(
            after.get(&sent(version)) - before.get(&sent(version)) >= size as f64,
            "the download over {proto:?} counts its body as sent over HTTP/{version}"
        );
    }
    assert!(after.get("ldash_entries") >= 3.0, "three paths are stored");
    assert!(after.get("ldash_memory_bytes") >= 6000.0, "their bytes are in memory");

    // A download attached to a growing upload (upload over HTTP/1.1, download over HTTP/2).
    let uploader = server.client_for(Proto::H1).await;
    let (chunks, rx) = chunk_channel();
    let upload = tokio::spawn(uploader.put("/ldash/upload/live/seg.m4s").stream(rx).send());
    chunks.send(Ok(Bytes::from_static(b"first;"))).await.expect("queue");
    let reader = server.client_for(Proto::H2Tls).await;
    let mut download = when_present(&reader, "/ldash/download/live/seg.m4s").await;
    let first = download.chunk().await.expect("first chunk").expect("present");
    assert_eq!(&first[..], b"first;");
    let open = scrape(metrics).await;
    assert_eq!(open.get("ldash_uploads_in_progress"), 1.0, "one upload is open");
    assert_eq!(
        open.get("ldash_growing_readers"),
        1.0,
        "one download follows the growing upload"
    );

    // A second upload while the only slot is taken: 503.
    let busy = server
        .client_for(Proto::H1)
        .await
        .put("/ldash/upload/live/other.m4s")
        .body("x")
        .send()
        .await
        .expect("second upload");
    assert_eq!(busy.status, 503, "--max-uploads 1 refuses a second upload");

    // Appended while the reader is attached: relayed, so its delay is observed.
    chunks.send(Ok(Bytes::from_static(b"second"))).await.expect("queue");
    let second = download.chunk().await.expect("second chunk").expect("present");
    assert_eq!(&second[..], b"second");
    let relayed = scrape(metrics).await;
    assert!(
        relayed.get("ldash_relay_delay_seconds_count") >= 1.0,
        "the chunk appended while the reader was attached is in the relay histogram:\n{}",
        relayed.text
    );
    assert_eq!(
        relayed.get("ldash_relay_delay_seconds_count"),
        relayed.get("ldash_relay_delay_seconds_bucket{le=\"+Inf\"}"),
        "the histogram's count is its +Inf bucket"
    );

    drop(chunks);
    let done = upload.await.expect("upload task").expect("upload response");
    assert_eq!(done.status, 201, "the growing upload completes");
    assert!(
        download.chunk().await.expect("clean end").is_none(),
        "the download ends cleanly"
    );
    let closed = scrape(metrics).await;
    assert_eq!(
        closed.get("ldash_uploads_in_progress"),
        0.0,
        "no upload is open any more"
    );
    assert_eq!(closed.get("ldash_growing_readers"), 0.0, "the download has ended");

    // Status classes: 304 for a matching ETag, 404 for a missing path.
    let client = server.client_for(Proto::H1).await;
    let etag = client
        .get("/ldash/download/vod/H1.bin")
        .send()
        .await
        .expect("get")
        .header("etag")
        .to_owned();
    let not_modified = client
        .get("/ldash/download/vod/H1.bin")
        .header("if-none-match", etag.as_str())
        .send()
        .await
        .expect("conditional get");
    assert_eq!(not_modified.status, 304);
    let missing = client.get("/ldash/download/none.bin").send().await.expect("get");
    assert_eq!(missing.status, 404);
    let classes = scrape(metrics).await;
    for class in ["2xx", "3xx", "4xx", "5xx"] {
        assert!(
            classes.get(&responses(class)) > before.get(&responses(class)),
            "a {class} response was counted:\n{}",
            classes.text
        );
    }
}

/// Waits until `route` answers 200 (the upload has reached the server).
async fn when_present(client: &Client, route: &str) -> common::client::Response {
    loop {
        let r = client.get(route).send().await.expect("download");
        if r.status == 200 {
            return r;
        }
        assert_eq!(r.status, 404, "unexpected status while waiting for {route}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ports_do_not_serve_metrics() {
    let server = TestServer::start().await;
    for proto in [Proto::H1, Proto::H2Tls, Proto::H3] {
        let client = server.client_for(proto).await;
        for method in [Method::GET, Method::HEAD] {
            let response = client
                .request(method.clone(), "/metrics")
                .send()
                .await
                .expect("request");
            assert_eq!(
                response.status, 404,
                "{method} /metrics over {proto:?} on a public port"
            );
        }
    }
    let metrics = server.metrics.expect("the metrics listener is on");
    let other = raw_exchange(
        metrics,
        b"GET /ldash/time HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
        "\u{0}never\u{0}",
    )
    .await;
    assert_eq!(raw_status(&other), 404, "the metrics listener serves /metrics only");
}

#[tokio::test]
async fn metrics_off_binds_no_listener() {
    let server = TestServer::start_with(|config| config.metrics = ldash::config::Listen::Off).await;
    assert_eq!(server.metrics, None, "--metrics off binds nothing");
    assert_eq!(server.put("a.txt", "still serving").await, 201);
}

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ffmpeg");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Scrapes until `sample` has `value`, or fails once `gave_up` says the awaited request ended.
async fn until_sample(metrics: SocketAddr, sample: &str, value: f64, gave_up: impl Fn() -> bool) -> Scrape {
    loop {
        let now = scrape(metrics).await;
        if now.get(sample) == value {
            return now;
        }
        assert!(!gave_up(), "{sample} never reached {value}:\n{}", now.text);
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_held_early_requests_and_blocking_playlist_reloads() {
    let server = TestServer::start().await;
    let metrics = server.metrics.expect("the metrics listener is on");
    for (name, bytes) in [
        ("stream.mpd", fixture("steady.mpd")),
        ("init-stream0.m4s", fixture("init-stream0.m4s")),
        ("chunk-stream0-00002.m4s", fixture("chunk-stream0-00002.m4s")),
        ("init-stream1.m4s", fixture("init-stream1.m4s")),
        ("chunk-stream1-00002.m4s", fixture("chunk-stream1-00002.m4s")),
    ] {
        assert_eq!(server.put(&format!("live/{name}"), bytes).await, 201, "upload {name}");
    }
    // The live index follows the store on its own: wait until it lists segment 2 of both
    // representations (LL-HLS timing needs the chunks of every one).
    let client = server.client_for(Proto::H1).await;
    loop {
        let list = client
            .get("/ldash/streams")
            .send()
            .await
            .expect("stream list")
            .text()
            .await;
        let streams: serde_json::Value = serde_json::from_str(&list).expect("stream list is JSON");
        let reps = streams[0]["representations"].as_array().cloned().unwrap_or_default();
        if reps.len() == 2 && reps.iter().all(|rep| rep["newest_segment"].as_u64() == Some(2)) {
            break;
        }
        tokio::task::yield_now().await;
    }

    // Segment 3 is the next one: its request is held (for a segment duration) instead of a 404.
    let early = tokio::spawn(client.get("/ldash/download/live/chunk-stream0-00003.m4s").send());
    let held = until_sample(metrics, "ldash_early_requests_waiting", 1.0, || early.is_finished()).await;
    assert_eq!(
        held.get("ldash_early_requests_held_total"),
        1.0,
        "one early request held"
    );

    // A blocking reload for segment 3's first part waits too. (One for the whole segment would
    // wait for segment 4: the newest segment is published complete when the next one starts.)
    let blocking = tokio::spawn(
        client
            .get("/ldash/download/live/stream.0.m3u8?_HLS_msn=3&_HLS_part=0")
            .send(),
    );
    until_sample(metrics, "ldash_hls_blocking_requests", 1.0, || blocking.is_finished()).await;

    assert_eq!(
        server
            .put("live/chunk-stream0-00003.m4s", fixture("chunk-stream0-00002.m4s"))
            .await,
        201,
        "upload segment 3"
    );
    let early = early.await.expect("early task").expect("early response");
    assert_eq!(
        early.status, 200,
        "the held request gets segment 3 once its upload starts"
    );
    let blocking = blocking.await.expect("blocking task").expect("playlist response");
    assert_eq!(
        blocking.status, 200,
        "the blocking reload is answered once segment 3's first part exists"
    );
    let after = scrape(metrics).await;
    assert_eq!(
        after.get("ldash_early_requests_waiting"),
        0.0,
        "no early request waits any more"
    );
    assert_eq!(
        after.get("ldash_early_requests_held_total"),
        1.0,
        "the counter keeps the hold"
    );
    assert_eq!(
        after.get("ldash_hls_blocking_requests"),
        0.0,
        "no blocking reload waits any more"
    );
}
