//! The CDN edge tier on Varnish end to end: the real ffmpeg pushes LL-DASH into ldash, Debian's
//! varnishd runs deploy/varnish/ldash-edge.vcl in front of it, and 200 viewers at once ask the edge
//! for a growing segment, an LL-HLS blocking playlist, an LL-HLS part and a complete segment. Every
//! viewer must get the origin's exact bytes while ldash serves each object once (counted from its
//! own `ldash::access` events, captured in this process), and every viewer of the growing segment
//! must get its first bytes while the upload is still appending (Varnish streams a busy object to
//! every client it coalesced, which nginx cannot: tests/edge.rs). What the edge adds to latency is
//! printed (`EDGE varnish` lines), not asserted.

mod common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::edge::{
    access_log, assert_collapsed, crowd, edge_requests, live_origin, max_byte_lag, ms, next_part, next_upload, spread,
    Received, VIEWERS,
};
use common::{raw_exchange, raw_status, require_tool, streamed_body, Proto, TestServer};
use ldash::store::EntryState;
use tokio::sync::mpsc;

/// varnishd running the repository's VCL, started for one test.
struct Varnish {
    port: u16,
    workdir: std::path::PathBuf,
    _dir: tempfile::TempDir,
    child: std::process::Child,
    output: Arc<Mutex<Vec<String>>>,
    /// Disconnected once varnishd (manager and child) has closed its output, i.e. exited.
    exited: std::sync::mpsc::Receiver<()>,
}

impl Varnish {
    /// Starts varnishd in front of `origin` on a free loopback port, retrying with another port
    /// when the one picked was taken in between. Ready when the manager reports that its child (the
    /// cache process, which accepts on the socket the manager bound) started.
    async fn start(varnishd: &Path, origin: SocketAddr) -> Varnish {
        let template =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/varnish/ldash-edge.vcl"))
                .expect("deploy/varnish/ldash-edge.vcl");
        let vcl = template
            .replace("${LDASH_ORIGIN_HOST}", &origin.ip().to_string())
            .replace("${LDASH_ORIGIN_PORT}", &origin.port().to_string());
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let dir = tempfile::tempdir().expect("varnish folder");
            let vcl_path = dir.path().join("ldash-edge.vcl");
            std::fs::write(&vcl_path, &vcl).expect("VCL file");
            let workdir = dir.path().join("work");
            // -j none: no privilege separation, so this works as root and as any user alike.
            let mut child = std::process::Command::new(varnishd)
                .arg("-F")
                .arg("-f")
                .arg(&vcl_path)
                .args(["-a", &format!("127.0.0.1:{port}")])
                .arg("-n")
                .arg(&workdir)
                .args(["-s", "malloc,64m", "-j", "none"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("varnishd starts");
            let (lines_tx, mut lines) = mpsc::unbounded_channel::<String>();
            let (exit_tx, exited) = std::sync::mpsc::channel::<()>();
            let output = Arc::new(Mutex::new(Vec::new()));
            let stdout = child.stdout.take().expect("varnishd stdout");
            let stderr = child.stderr.take().expect("varnishd stderr");
            let pipes: [Box<dyn std::io::Read + Send>; 2] = [Box::new(stdout), Box::new(stderr)];
            for pipe in pipes {
                let (kept, lines_tx, exit_tx) = (output.clone(), lines_tx.clone(), exit_tx.clone());
                std::thread::spawn(move || {
                    for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                        kept.lock().expect("varnishd output").push(line.clone());
                        let _ = lines_tx.send(line);
                    }
                    drop(exit_tx);
                });
            }
            drop((lines_tx, exit_tx));
            let outcome = tokio::time::timeout(Duration::from_secs(20), async {
                while let Some(line) = lines.recv().await {
                    if line.contains("Child starts") {
                        return Ok(());
                    }
                    if line.starts_with("Error") {
                        return Err(line);
                    }
                }
                Err("varnishd exited".to_owned())
            })
            .await
            .unwrap_or_else(|_| Err("varnishd did not start its child within 20 s".to_owned()));
            match outcome {
                Ok(()) => {
                    return Varnish {
                        port,
                        workdir,
                        _dir: dir,
                        child,
                        output,
                        exited,
                    }
                }
                Err(line) if line.contains("Address already in use") => {
                    let _ = child.kill();
                    let _ = child.wait();
                    failures.push(line);
                }
                Err(line) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("varnishd failed: {line}\n{}", output.lock().expect("output").join("\n"));
                }
            }
        }
        panic!("varnishd found no free port in 5 tries: {failures:?}");
    }

    fn url(&self, route: &str) -> String {
        format!("http://127.0.0.1:{}{route}", self.port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The edge's requests so far (status, X-Edge-Cache, URL, Range), for messages.
    fn access_log(&self) -> String {
        std::process::Command::new("varnishncsa")
            .arg("-d")
            .arg("-n")
            .arg(&self.workdir)
            .args(["-F", "%s %{X-Edge-Cache}o %U%q %{Range}i %D"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("(varnishncsa: {e})"))
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        // SIGTERM to the manager (by its pid) stops its child too; SIGKILL would orphan the child.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        // Nothing is ever sent: this returns (disconnected) once varnishd closed its output.
        let _ = self.exited.recv_timeout(Duration::from_secs(10));
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let errors: Vec<String> = self
            .output
            .lock()
            .map(|lines| {
                lines
                    .iter()
                    .filter(|l| l.starts_with("Error") && !l.contains("Manager got SIGTERM"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !errors.is_empty() {
            eprintln!("varnishd reported:\n{}", errors.join("\n"));
        }
    }
}

/// Min, median and max of `values` (ms).
fn min_median_max(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[0], values[values.len() / 2], values[values.len() - 1])
}

/// What the edge added for each viewer: first byte, last byte (both against the direct reader,
/// ms) and the latest any byte came.
fn edge_delays(direct: &Received, viewers: &[Received]) -> String {
    let first = min_median_max(
        viewers
            .iter()
            .map(|v| {
                ms(v.marks.first().map_or(v.done, |m| m.0)) - ms(direct.marks.first().map_or(direct.done, |m| m.0))
            })
            .collect(),
    );
    let last = min_median_max(viewers.iter().map(|v| ms(v.done) - ms(direct.done)).collect());
    let lag = min_median_max(viewers.iter().map(|v| ms(max_byte_lag(direct, v))).collect());
    format!(
        "first byte {:+.1} / {:+.1} / {:+.1} ms, last byte {:+.1} / {:+.1} / {:+.1} ms, latest byte behind the \
         origin {:.1} / {:.1} / {:.1} ms (min/median/max over {} viewers)",
        first.0,
        first.1,
        first.2,
        last.0,
        last.1,
        last.2,
        lag.0,
        lag.1,
        lag.2,
        viewers.len()
    )
}

/// One test at a time in this binary: each runs an encoder and varnishd, and two at once on 2 cores
/// would measure the machine, not the edge.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_viewers_through_varnish_stream_a_growing_segment_from_one_origin_request() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (Some(ffmpeg), Some(varnishd)) = (require_tool("ffmpeg"), require_tool("varnishd")) else {
        return;
    };
    let (server, mut encoder) = live_origin(&ffmpeg, 60, |_| {}).await;
    let edge = Varnish::start(&varnishd, server.http).await;
    let mut events = server.store.subscribe();

    // 1. A growing segment (LL-DASH viewers ask for it as soon as its upload starts).
    let path = next_upload(&mut events, "live/chunk-stream0-").await;
    let entry = server.store.get(&path).expect("the upload that just started");
    let route = format!("/ldash/download/{path}");
    let (direct, viewers, since) = crowd(&server, &edge.url(&route), &route, None, Some(entry.clone())).await;
    assert_eq!(direct.status, 200, "the origin serves {route}");
    let holder = assert_collapsed("growing segment", &route, 200, (&viewers, since), || edge.access_log()).await;
    assert_eq!(
        holder.digest, direct.digest,
        "the edge's bytes of {route} are the origin's"
    );
    assert_eq!(entry.state(), EntryState::Complete, "{route} was uploaded whole");
    let total = entry.len();
    for (i, v) in viewers.iter().enumerate() {
        match v.origin_at_first_bytes {
            Some((EntryState::Growing, uploaded)) if uploaded < total => {}
            other => panic!(
                "viewer {i} ({}) got its first bytes of {route} only when the origin's upload stood at {other:?} \
                 of {total} bytes: the edge did not stream the growing segment to it",
                v.cache
            ),
        }
    }
    let uploaded: Vec<u64> = viewers
        .iter()
        .filter_map(|v| v.origin_at_first_bytes.map(|(_, n)| n))
        .collect();
    println!(
        "EDGE varnish growing segment {total} bytes: origin first byte {:.0} ms, complete {:.0} ms | edge: {} | \
         every viewer's first bytes came while the upload stood at {}..{} of {total} bytes",
        ms(direct.marks[0].0),
        ms(direct.done),
        edge_delays(&direct, &viewers),
        uploaded.iter().min().copied().unwrap_or(0),
        uploaded.iter().max().copied().unwrap_or(0),
    );

    // 2. An LL-HLS blocking reload for the next part of the second video rendition.
    let playlist = server
        .client(Proto::H2c)
        .get(server.url(Proto::H2c, "/ldash/download/live/stream.1.m3u8"))
        .send()
        .await
        .expect("media playlist")
        .text()
        .await
        .expect("playlist text");
    let (msn, part) = next_part(&playlist);
    let route = "/ldash/download/live/stream.1.m3u8".to_owned();
    let blocking = format!("{route}?_HLS_msn={msn}&_HLS_part={part}");
    let (direct, viewers, since) = crowd(&server, &edge.url(&blocking), &blocking, None, None).await;
    assert_eq!(direct.status, 200, "the origin answers {blocking}");
    let holder = assert_collapsed("blocking playlist", &route, 200, (&viewers, since), || {
        edge.access_log()
    })
    .await;
    let (first, median, last) = spread(&viewers, Some(holder));
    println!(
        "EDGE varnish blocking playlist {blocking}: origin answered at {:.0} ms | the edge's origin request at \
         {:.0} ms | the {} coalesced viewers at {first:.0} / {median:.0} / {last:.0} ms",
        ms(direct.done),
        ms(holder.done),
        VIEWERS - 1,
    );

    // 3. An LL-HLS part (a byte range) of a segment that has just started, held by the origin until
    //    its bytes exist.
    let path = next_upload(&mut events, "live/chunk-stream1-").await;
    let route = format!("/ldash/download/{path}");
    let (direct, viewers, since) = crowd(&server, &edge.url(&route), &route, Some("bytes=0-999"), None).await;
    assert_eq!(direct.status, 206, "the origin serves the range of {route}");
    let holder = assert_collapsed("part", &route, 206, (&viewers, since), || edge.access_log()).await;
    assert_eq!(
        holder.digest, direct.digest,
        "the edge's part of {route} is the origin's"
    );
    assert!(
        viewers.iter().all(|v| v.len == 1000),
        "every viewer got 1000 bytes of the part"
    );
    println!(
        "EDGE varnish part bytes=0-999 of {path}: origin at {:.0} ms | edge: {}",
        ms(direct.done),
        edge_delays(&direct, &viewers),
    );

    // 4. A complete segment nobody asked for yet (the audio of the segment before the one above).
    let number: u32 = path
        .trim_end_matches(".m4s")
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("segment number");
    let route = format!("/ldash/download/live/chunk-stream2-{:05}.m4s", number - 1);
    let (direct, viewers, since) = crowd(&server, &edge.url(&route), &route, None, None).await;
    assert_eq!(direct.status, 200, "the origin serves {route}");
    let holder = assert_collapsed("complete segment", &route, 200, (&viewers, since), || edge.access_log()).await;
    assert_eq!(
        holder.digest, direct.digest,
        "the edge's bytes of {route} are the origin's"
    );
    println!(
        "EDGE varnish complete segment {} bytes: origin {:.1} ms | edge: {}",
        direct.len,
        ms(direct.done),
        edge_delays(&direct, &viewers),
    );

    // Headers: the origin's CORS headers once each, Cache-Control as the origin said, and Age
    // (which hls.js needs for its CDN tune-in).
    let response = server
        .client(Proto::H1)
        .get(edge.url(&route))
        .send()
        .await
        .expect("cached segment");
    let headers = response.headers();
    assert_eq!(headers.get_all("access-control-allow-origin").iter().count(), 1);
    assert_eq!(headers.get_all("access-control-expose-headers").iter().count(), 1);
    assert_eq!(headers["cache-control"], "public, max-age=300");
    assert_eq!(headers["x-edge-cache"], "HIT");
    assert!(headers.contains_key("age"), "the edge says how old its copy is");

    // The MPD is passed through with the viewer's Host, so its clock URL names the edge.
    let mpd = server
        .client(Proto::H1)
        .get(edge.url("/ldash/download/live/stream.mpd"))
        .send()
        .await
        .expect("MPD through the edge");
    assert_eq!(mpd.headers()["x-edge-cache"], "MISS", "MPDs are not cached");
    let mpd = mpd.text().await.expect("MPD text");
    assert!(
        mpd.contains(&edge.url("/ldash/time")),
        "the MPD's clock is the edge's: {mpd}"
    );

    // Uploads are refused at the edge and never reach the origin.
    let since = access_log().borrow().len();
    for (request, expected) in [
        (
            "PUT /ldash/upload/live/x.m4s HTTP/1.1\r\nHost: e\r\nContent-Length: 1\r\n\r\nx",
            403,
        ),
        (
            "POST /ldash/upload/live/x.m4s HTTP/1.1\r\nHost: e\r\nContent-Length: 1\r\n\r\nx",
            403,
        ),
        ("DELETE /ldash/upload/live/x.m4s HTTP/1.1\r\nHost: e\r\n\r\n", 403),
        ("DELETE /ldash/download/live/x.m4s HTTP/1.1\r\nHost: e\r\n\r\n", 405),
    ] {
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            raw_exchange(edge.addr(), request.as_bytes(), "\r\n\r\n"),
        )
        .await
        .expect("the edge answers within 10 s");
        assert_eq!(raw_status(&answer), expected, "the edge refuses {request:?}: {answer}");
    }
    let log = access_log().borrow();
    let reached: Vec<&str> = log[since..]
        .iter()
        .filter(|a| a.path.ends_with("/live/x.m4s"))
        .map(|a| a.path.as_str())
        .collect();
    assert!(
        reached.is_empty(),
        "uploads through the edge reached the origin: {reached:?}"
    );
    drop(log);
    let _ = encoder.start_kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_upload_is_not_kept_by_varnish() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(varnishd) = require_tool("varnishd") else {
        return;
    };
    access_log();
    let server = TestServer::start().await;
    let edge = Varnish::start(&varnishd, server.http).await;
    let route = "/ldash/download/cut/chunk-stream0-00001.m4s";
    let (chunks, body) = streamed_body();
    let upload = tokio::spawn(
        server
            .client(Proto::H1)
            .put(server.url(Proto::H1, "/ldash/upload/cut/chunk-stream0-00001.m4s"))
            .body(body)
            .send(),
    );
    chunks
        .send(Ok(bytes::Bytes::from_static(b"first chunk")))
        .await
        .expect("upload body");
    let mut events = server.store.subscribe();
    while server.store.get("cut/chunk-stream0-00001.m4s").is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the upload starts");
    }
    let mut viewer = server
        .client(Proto::H1)
        .get(edge.url(route))
        .send()
        .await
        .expect("the edge answers while the segment grows");
    assert_eq!(viewer.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), common::next_data(&mut viewer))
        .await
        .expect("the first chunk comes through the edge while the upload is open")
        .expect("first chunk");
    assert_eq!(first.as_deref(), Some(&b"first chunk"[..]));
    chunks.send(Err(())).await.expect("cut the upload");
    let rest = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match common::next_data(&mut viewer).await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the viewer's response ends within 20 s");
    assert!(
        rest.is_err(),
        "an aborted upload must not end cleanly at the edge: {rest:?}"
    );
    let _ = upload.await;
    let after = server
        .client(Proto::H1)
        .get(edge.url(route))
        .send()
        .await
        .expect("the edge answers after the abort");
    assert_eq!(
        after.status(),
        404,
        "the edge must not keep the aborted bytes: {}",
        edge.access_log()
    );
    // The second request is logged when ldash has sent its answer, possibly after the edge did.
    let mut log = access_log().subscribe();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        log.wait_for(|log| edge_requests(log, route) >= 2),
    )
    .await;
    let origin = edge_requests(&log.borrow(), route);
    assert_eq!(origin, 2, "the request after the abort went to the origin again");
}
