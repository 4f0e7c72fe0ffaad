//! HTTP/3 specifics beyond the shared table in origin.rs: many streams on one connection, large
//! bodies intact, and a real browser (Chromium) forced onto QUIC.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::client::Client;
use common::{require_tool, when_present, Proto, TestServer};
use testkit::browser::CHROMIUM_FLAGS;
use testkit::digest::sha256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_streams_share_one_connection() {
    let server = TestServer::start().await;
    for i in 0..50u8 {
        assert_eq!(
            server.put(&format!("many/{i}.m4s"), vec![i; 10_000 + i as usize]).await,
            201
        );
    }
    let client = server.client_for(Proto::H3).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50u8 {
        let client: Client = client.clone();
        tasks.spawn(async move {
            let response = client.get(&format!("/ldash/download/many/{i}.m4s")).fetch().await;
            assert_eq!(response.status, 200, "stream {i}");
            let body = response.bytes().await.expect("body");
            assert_eq!(body, vec![i; 10_000 + i as usize], "stream {i}: exact bytes");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("every stream completes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_megabyte_bodies_arrive_intact_both_ways() {
    let server = TestServer::start().await;
    let data: Bytes = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect::<Vec<_>>()
        .into();
    let client = server.client_for(Proto::H3).await;
    let r = client
        .put("/ldash/upload/big/20mb.bin")
        .body(data.clone())
        .fetch()
        .await;
    assert_eq!(r.status, 201, "20 MB upload over HTTP/3");
    let stored = server.store.get("big/20mb.bin").expect("stored");
    assert_eq!(stored.len(), data.len() as u64, "the whole upload is stored");
    let r = client.get("/ldash/download/big/20mb.bin").fetch().await;
    assert_eq!(r.header("content-length"), "20000000");
    let body = r.bytes().await.expect("20 MB body");
    assert_eq!(body.len(), data.len(), "length of the 20 MB download");
    assert_eq!(
        sha256(&body),
        sha256(&data),
        "the 20 MB download hashes like the upload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_forced_onto_quic_loads_a_page_over_h3() {
    let Some(chromium) = require_tool("chromium") else {
        return;
    };
    let server = TestServer::start_with(|c| c.https = "127.0.0.1:0".parse().expect("addr")).await;
    let page = "<!doctype html><html><body><script>\
        const nav = performance.getEntriesByType('navigation')[0];\
        document.body.textContent = 'protocol=' + nav.nextHopProtocol;\
        </script></body></html>";
    assert_eq!(server.put("pages/h3.html", page).await, 201);
    let port = server.quic.expect("HTTP/3 on").port();
    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("https://127.0.0.1:{port}/ldash/download/pages/h3.html");
    let mut command = tokio::process::Command::new(chromium);
    command
        .arg("--headless")
        .args(CHROMIUM_FLAGS)
        .arg("--enable-quic")
        .arg(format!("--origin-to-force-quic-on=127.0.0.1:{port}"))
        .arg(format!("--ignore-certificate-errors-spki-list={}", server.spki))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(&url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("chromium starts");
    let mut stdout = child.stdout.take().expect("stdout");
    // Read the dumped DOM as it comes; chromium's helper processes may keep the pipe open after it.
    let dom = tokio::time::timeout(Duration::from_secs(90), async {
        use tokio::io::AsyncReadExt;
        let mut dom = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stdout.read(&mut buf).await.expect("read chromium output");
            dom.extend_from_slice(&buf[..n]);
            if n == 0 || String::from_utf8_lossy(&dom).contains("</html>") {
                return String::from_utf8_lossy(&dom).into_owned();
            }
        }
    })
    .await
    .expect("chromium dumps the page within 90 s");
    let _ = child.kill().await;
    assert!(
        dom.contains("protocol=h3"),
        "the page must be loaded over HTTP/3; chromium printed: {dom}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_and_cuts_streams_left_after_the_drain() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start_in(dir.path(), |c| c.drain_timeout = 1).await;
    assert_eq!(server.put("done.m4s", vec![3u8; 50_000]).await, 201);
    let upload = server.feed(Proto::H1, "live.m4s", "live").await;
    let h3 = server.client_for(Proto::H3).await;
    let mut follower = when_present(&h3, "/ldash/download/live.m4s").await;
    assert_eq!(&follower.next_bytes().await[..], b"live");
    server.stop().await;
    let end = follower.chunk().await;
    assert!(
        end.is_err(),
        "an HTTP/3 stream still growing at the drain deadline ends with an error, got {end:?}"
    );
    let _ = upload.end().await;
}
