//! The HTTP/1.1 + HTTP/2 origin through real sockets: download while uploading, complete-file
//! semantics, errors, auth, limits, restart and shutdown. Behaviours are checked over every TCP
//! flavour (HTTP/1.1 and HTTP/2, cleartext and TLS) with the same table.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{every_pair, raw_exchange, raw_status, streamed_body, when_present, Fetch, Proto, TestServer, ALL_PROTOS};
use http::Method;
use reqwest::header;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_entry_streams_first_chunk_before_upload_ends() {
    let server = TestServer::start().await;
    for (uploader, reader) in every_pair() {
        let path = format!("live/{uploader:?}-{reader:?}.m4s");
        let upload = server.feed(uploader, &path, "first chunk;").await;
        let route = format!("/ldash/download/{path}");
        let mut response = when_present(&server.client_for(reader).await, &route).await;
        let case = format!("upload over {uploader:?}, download over {reader:?}");
        assert_eq!(
            response.header("cache-control"),
            "no-store",
            "{case}: a growing entry must not be cached"
        );
        assert_eq!(
            response.header("content-length"),
            "",
            "{case}: a growing entry has no length yet"
        );
        let first = response.next_bytes().await;
        assert_eq!(
            &first[..],
            b"first chunk;",
            "{case}: the first chunk must arrive while the upload is open"
        );
        assert!(
            !upload.is_finished(),
            "{case}: the upload must still be running when the first chunk arrives"
        );
        upload.send("second chunk").await;
        let second = response.next_bytes().await;
        assert_eq!(
            &second[..],
            b"second chunk",
            "{case}: the second chunk arrives as it is appended"
        );
        assert_eq!(upload.end().await, Ok(201), "{case}: a new path is 201");
        assert_eq!(
            response.chunk().await.expect("clean end"),
            None,
            "{case}: the download ends when the upload does"
        );
    }
}

#[tokio::test]
async fn complete_file_has_length_validators_type_and_cache_policy() {
    let server = TestServer::start().await;
    assert_eq!(server.put("live/seg-1.m4s", vec![7u8; 1000]).await, 201);
    assert_eq!(server.put("live/stream.mpd", "<MPD/>").await, 201);
    for proto in ALL_PROTOS {
        let client = server.client_for(proto).await;
        let r = client.get("/ldash/download/live/seg-1.m4s").fetch().await;
        assert_eq!(r.status, 200, "{proto:?}");
        assert_eq!(
            r.version,
            proto.version(),
            "{proto:?}: the protocol spoken (ALPN h2 over TLS, prior knowledge on h2c)"
        );
        assert_eq!(r.header("content-length"), "1000", "{proto:?}: length");
        assert_eq!(r.header("content-type"), "video/iso.segment", "{proto:?}: type");
        assert_eq!(
            r.header("cache-control"),
            "public, max-age=300",
            "{proto:?}: complete media segments are long-lived"
        );
        assert!(
            !r.header("etag").is_empty() && !r.header("last-modified").is_empty(),
            "{proto:?}: validators"
        );
        assert!(!r.header("date").is_empty(), "{proto:?}: Date");
        assert_eq!(r.header("access-control-allow-origin"), "*", "{proto:?}: CORS");
        for name in ["Date", "Age", "Content-Length"] {
            assert!(
                r.header("access-control-expose-headers").contains(name),
                "{proto:?}: {name} must be exposed"
            );
        }
        let alt_svc = r.header("alt-svc").to_owned();
        if proto == Proto::H1Tls || proto == Proto::H2Tls {
            let port = server.quic.expect("HTTP/3 on").port();
            assert_eq!(
                alt_svc,
                format!("h3=\":{port}\"; ma=86400"),
                "{proto:?}: the TLS listener advertises HTTP/3"
            );
        } else {
            assert_eq!(alt_svc, "", "{proto:?}: Alt-Svc only on the TLS TCP listener");
        }
        assert_eq!(r.bytes().await.expect("body"), vec![7u8; 1000], "{proto:?}: body");
        let r = client.get("/ldash/download/live/stream.mpd").fetch().await;
        assert_eq!(r.header("content-type"), "application/dash+xml", "{proto:?}");
        assert_eq!(
            r.header("cache-control"),
            "no-cache",
            "{proto:?}: manifests are revalidated"
        );
    }
}

#[tokio::test]
async fn ranges_conditionals_and_head() {
    let server = TestServer::start().await;
    let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    assert_eq!(server.put("v/file.mp4", data.clone()).await, 201);
    let route = "/ldash/download/v/file.mp4";
    for proto in ALL_PROTOS {
        let client = server.client_for(proto).await;
        let r = client.get(route).header("range", "bytes=100-199").fetch().await;
        assert_eq!(r.status, 206, "{proto:?}");
        assert_eq!(r.header("content-range"), "bytes 100-199/5000", "{proto:?}");
        assert_eq!(r.bytes().await.expect("body"), data[100..200], "{proto:?}: range body");
        let r = client.get(route).header("range", "bytes=-10").fetch().await;
        assert_eq!(r.bytes().await.expect("body"), data[4990..], "{proto:?}: suffix range");
        let r = client.get(route).header("range", "bytes=9000-").fetch().await;
        assert_eq!(r.status, 416, "{proto:?}");
        assert_eq!(r.header("content-range"), "bytes */5000", "{proto:?}");
        let first = client.get(route).fetch().await;
        let etag = first.header("etag").to_owned();
        let modified = first.header("last-modified").to_owned();
        let r = client.get(route).header("if-none-match", etag.as_str()).fetch().await;
        assert_eq!(r.status, 304, "{proto:?}: If-None-Match");
        let r = client
            .get(route)
            .header("if-modified-since", modified.as_str())
            .fetch()
            .await;
        assert_eq!(r.status, 304, "{proto:?}: If-Modified-Since");
        let r = client.get(route).header("if-none-match", "\"other\"").fetch().await;
        assert_eq!(r.status, 200, "{proto:?}: a different ETag gets the body");
        let r = client
            .get(route)
            .header("range", "bytes=0-9")
            .header("if-range", "\"stale\"")
            .fetch()
            .await;
        assert_eq!(r.status, 200, "{proto:?}: a stale If-Range gets the whole file");
        let r = client
            .get(route)
            .header("range", "bytes=0-9")
            .header("if-range", etag.as_str())
            .fetch()
            .await;
        assert_eq!(r.status, 206, "{proto:?}: a matching If-Range gets the range");
        let r = client.request(Method::HEAD, route).fetch().await;
        assert_eq!(r.status, 200, "{proto:?}");
        assert_eq!(r.header("content-length"), "5000", "{proto:?}: HEAD has the length");
        assert!(
            r.bytes().await.expect("head body").is_empty(),
            "{proto:?}: HEAD has no body"
        );
    }
}

#[tokio::test]
async fn cors_preflight_is_answered() {
    let server = TestServer::start().await;
    for proto in ALL_PROTOS {
        let r = server
            .client_for(proto)
            .await
            .request(Method::OPTIONS, "/ldash/download/live/stream.mpd")
            .header("origin", "https://player.example")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "range")
            .fetch()
            .await;
        assert_eq!(r.status, 204, "{proto:?}");
        assert_eq!(r.header("access-control-allow-origin"), "*", "{proto:?}");
        assert!(r.header("access-control-allow-methods").contains("GET"), "{proto:?}");
        assert_eq!(r.header("access-control-allow-headers"), "range", "{proto:?}");
    }
}

#[tokio::test]
async fn path_attacks_are_refused_with_a_reason() {
    let server = TestServer::start().await;
    std::fs::write(server.root.parent().expect("parent").join("secret.txt"), "secret").expect("write secret");
    let attacks = [
        "/ldash/download/../secret.txt",
        "/ldash/download/%2e%2e/secret.txt",
        "/ldash/download/a/%2E%2E/%2e%2e/secret.txt",
        "/ldash/download/a//b",
        "/ldash/download/",
        "/ldash/download/a%5c..%5csecret.txt",
        "/ldash/download/a%00b",
        "/ldash/download/a%0ab",
        "/ldash/download/.ldash-tmp/x",
        "/ldash/upload/../secret.txt",
        "/ldash/upload/%2e%2e%2fsecret.txt",
    ];
    for attack in attacks {
        let method = if attack.starts_with("/ldash/upload") {
            "PUT"
        } else {
            "GET"
        };
        let request =
            format!("{method} {attack} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let response = raw_exchange(server.http, request.as_bytes(), "\r\n\r\nbad path")
            .await
            .expect("a raw exchange");
        assert_eq!(raw_status(&response), 400, "{attack} must be refused: {response}");
        assert!(
            response.contains("bad path: "),
            "{attack}: the reason is given in plain text: {response}"
        );
    }
    let long = format!("/ldash/download/{}", "a/".repeat(600) + "x");
    let request = format!("GET {long} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(
        raw_status(
            &raw_exchange(server.http, request.as_bytes(), "bad path")
                .await
                .expect("a raw exchange")
        ),
        400,
        "over-long path"
    );
    assert_eq!(
        std::fs::read_to_string(server.root.parent().expect("parent").join("secret.txt")).expect("secret"),
        "secret"
    );
}

#[tokio::test]
async fn missing_paths_and_wrong_methods() {
    let server = TestServer::start().await;
    let client = server.client(Proto::H1);
    let r = client
        .get(server.url(Proto::H1, "/ldash/download/none.m4s"))
        .fetch()
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "text/plain; charset=utf-8",
        "errors are plain text"
    );
    let r = client
        .delete(server.url(Proto::H1, "/ldash/upload/none.m4s"))
        .fetch()
        .await;
    assert_eq!(r.status(), 404, "deleting a missing path");
    let r = client
        .post(server.url(Proto::H1, "/ldash/download/x.m4s"))
        .fetch()
        .await;
    assert_eq!(r.status(), 405);
    assert!(r.headers()[header::ALLOW].to_str().expect("ascii").contains("GET"));
    let r = client.get(server.url(Proto::H1, "/elsewhere")).fetch().await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn reupload_replaces_atomically_and_delete_removes() {
    let server = TestServer::start().await;
    let client = server.client(Proto::H1);
    assert_eq!(server.put("live/stream.mpd", "version 1").await, 201);
    let (chunks, body) = streamed_body();
    let url = server.url(Proto::H1, "/ldash/upload/live/stream.mpd");
    let replace = tokio::spawn(client.put(url).body(body).send());
    chunks.send(Ok(Bytes::from_static(b"version"))).await.expect("chunk");
    // Until the replacement completes, readers get the whole previous version.
    for proto in ALL_PROTOS {
        let got = server.get(proto, "/ldash/download/live/stream.mpd").await;
        assert_eq!(
            got.text().await,
            "version 1",
            "{proto:?}: the old version stays until the new one completes"
        );
    }
    chunks.send(Ok(Bytes::from_static(b" 2"))).await.expect("chunk");
    drop(chunks);
    assert_eq!(
        replace.await.expect("task").expect("upload").status(),
        204,
        "a replacement is 204"
    );
    let got = client
        .get(server.url(Proto::H1, "/ldash/download/live/stream.mpd"))
        .fetch()
        .await;
    assert_eq!(got.text().await.expect("text"), "version 2");
    let r = client
        .delete(server.url(Proto::H1, "/ldash/upload/live/stream.mpd"))
        .fetch()
        .await;
    assert_eq!(r.status(), 204);
    let r = client
        .get(server.url(Proto::H1, "/ldash/download/live/stream.mpd"))
        .fetch()
        .await;
    assert_eq!(r.status(), 404, "deleted");
    server.store.flush().await;
    assert!(
        !server.root.join("live/stream.mpd").exists(),
        "the file is gone from disk too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_upload_ends_readers_with_an_error() {
    let server = TestServer::start().await;
    for (uploader, reader) in every_pair() {
        let case = format!("upload over {uploader:?}, download over {reader:?}");
        let path = format!("live/abort-{uploader:?}-{reader:?}.m4s");
        let upload = server.feed(uploader, &path, "partial").await;
        let route = format!("/ldash/download/{path}");
        let client = server.client_for(reader).await;
        let mut response = when_present(&client, &route).await;
        assert_eq!(&response.next_bytes().await[..], b"partial", "{case}");
        upload.cut().await;
        let end = response.chunk().await;
        assert!(
            end.is_err(),
            "{case}: a reader of an aborted upload must see an error, got {end:?}"
        );
        let r = client.get(&route).fetch().await;
        assert_eq!(r.status, 404, "{case}: the partial data is discarded");
    }
}

#[tokio::test]
async fn uploads_need_the_token_when_one_is_set() {
    let server = TestServer::start_with(|c| c.upload_token = Some("s3cret".into())).await;
    let client = server.client(Proto::H1);
    let url = server.url(Proto::H1, "/ldash/upload/a.txt");
    let r = client.put(&url).body("x").fetch().await;
    assert_eq!(r.status(), 401, "no credentials");
    assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
    let r = client.put(&url).bearer_auth("wrong").body("x").fetch().await;
    assert_eq!(r.status(), 403, "wrong token");
    assert!(
        r.text().await.expect("reason").contains("token"),
        "the reason names the token"
    );
    let r = client.put(&url).bearer_auth("s3cret").body("x").fetch().await;
    assert_eq!(r.status(), 201, "Bearer token");
    let r = client
        .put(&url)
        .basic_auth("ffmpeg", Some("s3cret"))
        .body("y")
        .fetch()
        .await;
    assert_eq!(r.status(), 204, "Basic credentials with the token as password");
    let r = client.delete(&url).fetch().await;
    assert_eq!(r.status(), 401, "deletes need the token too");
    let r = client.delete(&url).bearer_auth("s3cret").fetch().await;
    assert_eq!(r.status(), 204);
    let r = client.get(server.url(Proto::H1, "/ldash/download/a.txt")).fetch().await;
    assert_eq!(r.status(), 404, "downloads need no token");
}

#[tokio::test]
async fn without_a_token_only_loopback_peers_may_upload() {
    use http_body_util::Empty;
    use ldash::http::{ConnInfo, Transport};
    let server = TestServer::start().await;
    assert_eq!(server.put("a.txt", "from loopback").await, 201, "loopback may upload");
    // The routes as the server builds them, without an upload token.
    let settings = ldash::settings::Settings::from_config(&ldash::Config::with_root("."));
    let live = ldash::live::Live::start(server.store.clone(), settings.service, settings.live);
    let packager = ldash::packager::Packager::new(server.store.clone(), settings.package, settings.live.end_rule);
    let app = ldash::http::App::new(server.store.clone(), live, packager, settings.routes, None);
    assert_eq!(app.settings.upload_token, None);
    for method in [http::Method::PUT, http::Method::DELETE] {
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri("/ldash/upload/a.txt")
            .body(Empty::<Bytes>::new())
            .expect("request");
        request.extensions_mut().insert(ConnInfo {
            peer: "192.0.2.7:4000".parse().expect("addr"),
            transport: Transport::Cleartext,
            arrival: 0,
        });
        let response = app.handle(request).await;
        assert_eq!(
            response.status(),
            403,
            "{method}: a remote peer without a token is refused"
        );
    }
    assert!(
        server.store.get("a.txt").is_some(),
        "the refused delete removed nothing"
    );
}

#[tokio::test]
async fn limits_are_enforced_with_clear_statuses() {
    let server = TestServer::start_with(|c| {
        c.max_upload_bytes = 1000;
        c.max_uploads = 1;
        c.max_paths = 3;
    })
    .await;
    let client = server.client(Proto::H1);
    let url = |p: &str| server.url(Proto::H1, &format!("/ldash/upload/{p}"));
    let r = client.put(url("big.bin")).body(vec![0u8; 2000]).fetch().await;
    assert_eq!(r.status(), 413, "a declared length over the limit");
    let (chunks, body) = streamed_body();
    let chunked = tokio::spawn(client.put(url("big2.bin")).body(body).send());
    chunks.send(Ok(Bytes::from(vec![0u8; 600]))).await.expect("chunk");
    // Hold the first upload open to test the concurrency cap.
    while server.store.get("big2.bin").is_none() {
        tokio::task::yield_now().await;
    }
    let r = client.put(url("other.bin")).body("x").fetch().await;
    assert_eq!(r.status(), 503, "a second concurrent upload over --max-uploads");
    assert!(r.headers().contains_key(header::RETRY_AFTER));
    chunks.send(Ok(Bytes::from(vec![0u8; 600]))).await.expect("chunk");
    drop(chunks);
    let status = chunked.await.expect("task").map(|r| r.status().as_u16());
    assert!(
        matches!(status, Ok(413) | Err(_)),
        "a chunked upload growing over the limit is refused, got {status:?}"
    );
    assert!(
        server.store.get("big2.bin").is_none(),
        "the refused upload is discarded"
    );
    for name in ["p1", "p2", "p3"] {
        assert_eq!(server.put(name, "x").await, 201);
    }
    let r = client.put(url("p4")).body("x").fetch().await;
    assert_eq!(r.status(), 507, "over --max-paths");
    assert_eq!(
        server.put("p1", "again").await,
        204,
        "replacing an existing path is allowed at the cap"
    );
}

#[tokio::test]
async fn restart_with_the_same_root_serves_the_same_bytes() {
    let dir = tempfile::tempdir().expect("dir");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    assert_eq!(server.put("live/seg.m4s", data.clone()).await, 201);
    server.stop().await;
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    for proto in ALL_PROTOS {
        let r = server.get(proto, "/ldash/download/live/seg.m4s").await;
        assert_eq!(r.status, 200, "{proto:?}: served after restart");
        let body = r.bytes().await.expect("body");
        assert_eq!(body, data, "{proto:?}: same bytes after restart");
    }
}

#[tokio::test]
async fn ingest_connection_is_kept_alive_across_chunked_uploads() {
    // What ffmpeg -http_persistent 1 does: several chunked PUTs (and a chunked DELETE) on one connection.
    let server = TestServer::start().await;
    let mut stream = tokio::net::TcpStream::connect(server.http).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 4096];
    for (i, request) in [
        "PUT /ldash/upload/live/init.m4s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nIcy-MetaData: 1\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "PUT /ldash/upload/live/seg-1.m4s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "DELETE /ldash/upload/live/seg-1.m4s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ]
    .iter()
    .enumerate()
    {
        stream.write_all(request.as_bytes()).await.expect("write");
        let n = stream.read(&mut buf).await.expect("read");
        let response = String::from_utf8_lossy(&buf[..n]).to_lowercase();
        assert!(response.starts_with("http/1.1 20"), "request {i} answered with success: {response}");
        assert!(!response.contains("connection: close"), "request {i}: never close an ingest connection: {response}");
    }
}

#[tokio::test]
async fn server_clock_is_iso8601_utc_with_milliseconds() {
    let server = TestServer::start().await;
    for proto in ALL_PROTOS {
        let r = server.get(proto, "/ldash/time").await;
        assert_eq!(r.header("cache-control"), "no-store", "{proto:?}");
        let text = r.text().await;
        assert_eq!(text.len(), 24, "{proto:?}: YYYY-MM-DDTHH:MM:SS.mmmZ, got {text}");
        let parsed = humantime::parse_rfc3339(&text).expect("RFC 3339");
        let skew = std::time::SystemTime::now().duration_since(parsed).unwrap_or_default();
        assert!(skew < Duration::from_secs(5), "{proto:?}: the clock is now, got {text}");
    }
}

#[tokio::test]
async fn a_fresh_origin_is_ready_for_an_edge_at_once() {
    let server = TestServer::start().await;
    for proto in ALL_PROTOS {
        let r = server.get(proto, "/ldash/ready").await;
        assert_eq!(r.status, 200, "{proto:?}");
        assert_eq!(r.header("cache-control"), "no-store", "{proto:?}");
        assert_eq!(r.text().await, "ready\n", "{proto:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_then_persists() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start_in(dir.path(), |c| c.drain_timeout = 1).await;
    let root = server.root.clone();
    assert_eq!(server.put("done.m4s", vec![1u8; 10_000]).await, 201);
    // A reader following a growing entry that never completes is cut after the drain time.
    let upload = server.feed(Proto::H1, "live.m4s", "live").await;
    let h2c = server.client_for(Proto::H2c).await;
    let mut follower = when_present(&h2c, "/ldash/download/live.m4s").await;
    assert_eq!(&follower.next_bytes().await[..], b"live");
    let http = server.http;
    server.stop().await;
    assert!(
        follower.chunk().await.is_err(),
        "a stream still growing at the drain deadline ends with an error"
    );
    assert!(
        tokio::net::TcpStream::connect(http).await.is_err(),
        "no new connections after shutdown"
    );
    assert_eq!(
        std::fs::read(root.join("done.m4s")).expect("persisted").len(),
        10_000,
        "completed uploads are on disk"
    );
    assert!(
        !root.join("live.m4s").exists(),
        "an upload cut by shutdown is not persisted"
    );
    let _ = upload.end().await;
}

#[tokio::test]
async fn malformed_manifest_and_media_are_served_as_uploaded() {
    let server = TestServer::start().await;
    let bad_mpd = "<MPD type=\"dynamic\"><Period>not closed";
    let bad_m4s = b"\x00\x00\x00\x10moofgarbage!\x00\x00\x00\x00mdat".to_vec();
    assert_eq!(server.put("bad/stream.mpd", bad_mpd).await, 201);
    assert_eq!(server.put("bad/chunk-stream0-00001.m4s", bad_m4s.clone()).await, 201);
    for proto in ALL_PROTOS {
        let client = server.client_for(proto).await;
        let r = client.get("/ldash/download/bad/stream.mpd").fetch().await;
        assert_eq!(r.status, 200, "{proto:?}: a malformed MPD is not an error");
        assert_eq!(r.text().await, bad_mpd, "{proto:?}: served exactly as uploaded");
        let r = client.get("/ldash/download/bad/chunk-stream0-00001.m4s").fetch().await;
        assert_eq!(
            r.bytes().await.expect("body"),
            bad_m4s,
            "{proto:?}: a malformed segment is served as uploaded"
        );
        let r = client.get("/ldash/download/bad/stream.m3u8").fetch().await;
        assert_eq!(r.status, 404, "{proto:?}: no playlist from an MPD that does not parse");
    }
}
