//! `GET /metrics` on the metrics listener, through real sockets: uploads and downloads over HTTP/1.1,
//! HTTP/2 and HTTP/3 move the byte counters of their version, a download attached to a growing
//! upload shows in the readers gauge and the relay-delay histogram, uploads in progress go up and
//! back to 0, responses are counted by status class, and the public ports know nothing of /metrics.

mod common;

use std::net::SocketAddr;

use common::fixture;
use common::{raw_exchange, raw_status, when_present, Proto, TestServer};
use http::Method;
use testkit::metrics::Scrape;

/// Scrapes `GET /metrics` over a new HTTP/1.1 connection; it is the Prometheus text format.
async fn scrape(addr: SocketAddr) -> Scrape {
    let scrape = testkit::metrics::scrape(addr).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        scrape
            .content_type
            .to_ascii_lowercase()
            .starts_with("text/plain; version=0.0.4"),
        "a scrape is the Prometheus text format: {}",
        scrape.content_type
    );
    scrape
}

/// Asserts that each sample has its value: (sample, value, what that value means).
fn assert_samples(scrape: &Scrape, expected: &[(&str, f64, &str)]) {
    for &(sample, value, what) in expected {
        assert_eq!(scrape.get(sample), value, "{what} ({sample})");
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
    assert_samples(
        &before,
        &[
            ("ldash_uploads_in_progress", 0.0, "nothing uploads yet"),
            ("ldash_relay_delay_seconds_count", 0.0, "nothing relayed yet"),
        ],
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
        let put = client.put(&route).body(vec![b'x'; size]).fetch().await;
        assert_eq!(put.status, 201, "upload over {proto:?}");
        let download = client.get(&route.replace("upload", "download")).fetch().await;
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
    let upload = server.feed(Proto::H1, "live/seg.m4s", "first;").await;
    let reader = server.client_for(Proto::H2Tls).await;
    let mut download = when_present(&reader, "/ldash/download/live/seg.m4s").await;
    assert_eq!(&download.next_bytes().await[..], b"first;");
    assert_samples(
        &scrape(metrics).await,
        &[
            ("ldash_uploads_in_progress", 1.0, "one upload is open"),
            ("ldash_growing_readers", 1.0, "one download follows the growing upload"),
        ],
    );

    // A second upload while the only slot is taken: 503.
    let busy = server
        .client_for(Proto::H1)
        .await
        .put("/ldash/upload/live/other.m4s")
        .body("x")
        .fetch()
        .await;
    assert_eq!(busy.status, 503, "--max-uploads 1 refuses a second upload");

    // Appended while the reader is attached: relayed, so its delay is observed.
    upload.send("second").await;
    assert_eq!(&download.next_bytes().await[..], b"second");
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

    assert_eq!(upload.end().await, Ok(201), "the growing upload completes");
    assert!(
        download.chunk().await.expect("clean end").is_none(),
        "the download ends cleanly"
    );
    assert_samples(
        &scrape(metrics).await,
        &[
            ("ldash_uploads_in_progress", 0.0, "no upload is open any more"),
            ("ldash_growing_readers", 0.0, "the download has ended"),
        ],
    );

    // Status classes: 304 for a matching ETag, 404 for a missing path.
    let client = server.client_for(Proto::H1).await;
    let etag = client
        .get("/ldash/download/vod/H1.bin")
        .fetch()
        .await
        .header("etag")
        .to_owned();
    let not_modified = client
        .get("/ldash/download/vod/H1.bin")
        .header("if-none-match", etag.as_str())
        .fetch()
        .await;
    assert_eq!(not_modified.status, 304);
    let missing = client.get("/ldash/download/none.bin").fetch().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ports_do_not_serve_metrics() {
    let server = TestServer::start().await;
    for proto in [Proto::H1, Proto::H2Tls, Proto::H3] {
        let client = server.client_for(proto).await;
        for method in [Method::GET, Method::HEAD] {
            let response = client.request(method.clone(), "/metrics").fetch().await;
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
    .await
    .expect("a request to the metrics listener");
    assert_eq!(raw_status(&other), 404, "the metrics listener serves /metrics only");
}

#[tokio::test]
async fn metrics_off_binds_no_listener() {
    let server = TestServer::start_with(|config| config.metrics = ldash::config::Listen::Off).await;
    assert_eq!(server.metrics, None, "--metrics off binds nothing");
    assert_eq!(server.put("a.txt", "still serving").await, 201);
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
    server.put_recorded_stream("live").await;
    // The live index follows the store on its own: wait until it lists segment 2 of both
    // representations (LL-HLS timing needs the chunks of every one).
    let client = server.client_for(Proto::H1).await;
    loop {
        let list = client.get("/ldash/streams").fetch().await.text().await;
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
    assert_samples(
        &held,
        &[("ldash_early_requests_held_total", 1.0, "one early request held")],
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
    assert_samples(
        &scrape(metrics).await,
        &[
            ("ldash_early_requests_waiting", 0.0, "no early request waits any more"),
            ("ldash_early_requests_held_total", 1.0, "the counter keeps the hold"),
            ("ldash_hls_blocking_requests", 0.0, "no blocking reload waits any more"),
        ],
    );
}
