//! Origins that survive (docs/edges-and-failover.md, "Running more than one origin"), with real
//! processes: one ffmpeg (its tee muxer) feeds two `ldash` origins, Varnish or nginx runs the
//! repository's failover configuration in front of them, 50 viewers follow the live edge through it
//! and headless Chromium plays the play page through it. Origin A is killed (SIGKILL) mid-stream,
//! started again on the same root, then B is killed: every viewer's bytes stay exact against the
//! origins' own copies, no viewer gets an error status, and the player keeps playing (at most one
//! stall per failover, no playlist or manifest error; the glass-to-glass jump is printed). Then:
//! two origins fed by one encoder answer the same requests with the same playlists and MPDs, and
//! channels sharded over two origins each reach only their own origin. Restart recovery of one
//! origin over every HTTP version is tests/faults.rs's.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::browser::{browser_driver, drive, screenshot, DriverRun};
use common::edge::{Edge, Kind, Origins};
use common::{require_tool, Proto, TestServer};
use testkit::digest::sha256;
use testkit::encoder::{Dash, Ingest, Output, Source, Video};
use testkit::origin::{ldash_command, OriginProcess};
use tokio::sync::watch;

/// Viewers following the live edge through the edge.
const VIEWERS: usize = 50;

/// The video representation the viewers follow.
fn segment_route(number: u64) -> String {
    format!("/ldash/download/live/chunk-stream0-{number:05}.m4s")
}

/// One test at a time in this binary: each runs two origins, an encoder, an edge and a browser.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_through_varnish_go_on_when_either_origin_dies() {
    let _turn = ONE_AT_A_TIME.lock().await;
    failover(Kind::Varnish, "m3u8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_through_nginx_go_on_when_either_origin_dies() {
    let _turn = ONE_AT_A_TIME.lock().await;
    failover(Kind::Nginx, "mpd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_origins_fed_by_one_encoder_answer_with_the_same_playlists_and_mpds() {
    let _turn = ONE_AT_A_TIME.lock().await;
    same_answers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn varnish_sends_each_channel_to_its_own_origin() {
    let _turn = ONE_AT_A_TIME.lock().await;
    sharding(Kind::Varnish).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_sends_each_channel_to_its_own_origin() {
    let _turn = ONE_AT_A_TIME.lock().await;
    sharding(Kind::Nginx).await;
}

/// Seconds since the Unix epoch, as the browser driver counts.
fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// An `ldash` origin as a child process that can die and come back on the same ports and root.
struct Killable {
    dir: tempfile::TempDir,
    name: &'static str,
    process: Option<OriginProcess>,
    /// The listeners it was first given (the same ones when it comes back).
    listeners: Vec<String>,
}

impl Killable {
    async fn start(name: &'static str) -> Killable {
        let dir = tempfile::tempdir().expect("origin folder");
        let process = OriginProcess::start(ldash_command(env!("CARGO_BIN_EXE_ldash")), dir.path(), &[])
            .await
            .unwrap_or_else(|e| panic!("origin {name} starts: {e}"));
        let mut listeners = vec![
            "--http".to_owned(),
            process.http.to_string(),
            "--https".to_owned(),
            process.https.to_string(),
        ];
        if let Some(metrics) = process.metrics {
            listeners.extend(["--metrics".to_owned(), metrics.to_string()]);
        }
        Killable {
            dir,
            name,
            process: Some(process),
            listeners,
        }
    }

    fn process(&self) -> &OriginProcess {
        self.process
            .as_ref()
            .unwrap_or_else(|| panic!("origin {} is down", self.name))
    }

    async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process
                .kill()
                .await
                .unwrap_or_else(|e| panic!("kill origin {}: {e}", self.name));
        }
    }

    /// Starts it again on the same ports and root (what it finds on disk is indexed at start).
    async fn restart(&mut self) {
        let options: Vec<&str> = self.listeners.iter().map(String::as_str).collect();
        let process = OriginProcess::start(ldash_command(env!("CARGO_BIN_EXE_ldash")), self.dir.path(), &options)
            .await
            .unwrap_or_else(|e| panic!("origin {} starts again: {e}", self.name));
        self.process = Some(process);
    }
}

/// An HTTP/1.1 client (cleartext: the edge's and the origins' ingest listeners).
fn http_client() -> reqwest::Client {
    testkit::tls::client_config(&[], &[b"http/1.1"])
        .and_then(|tls| testkit::client::reqwest_client(Proto::H1, tls))
        .unwrap_or_else(|e| panic!("a client: {e}"))
}

/// GET `url` to its end (30 s at most): the status and the body, or what broke it.
async fn get_all(client: &reqwest::Client, url: &str) -> Result<(u16, Vec<u8>), String> {
    tokio::time::timeout(Duration::from_secs(30), get_all_unbounded(client, url))
        .await
        .unwrap_or_else(|_| Err("no end within 30 s".into()))
}

async fn get_all_unbounded(client: &reqwest::Client, url: &str) -> Result<(u16, Vec<u8>), String> {
    let mut response = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok((status, body)),
            Err(e) => return Err(format!("body cut after {} bytes: {e:?}", body.len())),
        }
    }
}

/// What one viewer got: each segment's digest, and what went wrong on the way.
#[derive(Default)]
struct Viewing {
    segments: Vec<(u64, [u8; 32], Instant)>,
    /// Responses cut mid-body (the viewer asked again).
    cuts: Vec<String>,
    /// Error statuses (any is a failure).
    statuses: Vec<String>,
}

/// A viewer following the live edge of representation 0 through the edge from segment `first`:
/// each segment asked for as soon as the one before it is complete (so it is the growing one);
/// a cut response is asked for again. Stops after the segment at which `until` is set.
async fn view(
    edge: String,
    first: u64,
    progress: Arc<watch::Sender<u64>>,
    mut until: watch::Receiver<bool>,
) -> Viewing {
    let client = http_client();
    let mut viewing = Viewing::default();
    let mut number = first;
    while !*until.borrow_and_update() {
        if viewing.cuts.len() + viewing.statuses.len() > 20 {
            break;
        }
        let url = format!("{edge}{}", segment_route(number));
        match get_all(&client, &url).await {
            Ok((200, body)) => {
                viewing.segments.push((number, sha256(&body), Instant::now()));
                progress.send_if_modified(|p| {
                    let newer = number > *p;
                    *p = (*p).max(number);
                    newer
                });
                number += 1;
            }
            Ok((status, body)) => {
                viewing
                    .statuses
                    .push(format!("{status} for {number}: {}", String::from_utf8_lossy(&body)));
                // Not a busy loop on an edge that keeps failing.
                let _ = tokio::time::timeout(Duration::from_millis(200), until.changed()).await;
            }
            Err(e) => viewing.cuts.push(format!("segment {number}: {e}")),
        }
    }
    viewing
}

/// The reference copy of every segment the viewers follow, fetched directly from the origins (B's
/// while it is up, then A's): digest per number; where both origins answered, their bytes must be
/// the same (one encoder, two muxers).
async fn reference(
    origins: Arc<Mutex<[Option<String>; 2]>>,
    first: u64,
    mut until: watch::Receiver<bool>,
) -> Result<BTreeMap<u64, [u8; 32]>, String> {
    let client = http_client();
    let mut copies = BTreeMap::new();
    let mut number = first;
    let mut failures = 0;
    while !*until.borrow_and_update() || copies.len() < 3 {
        let urls: Vec<String> = {
            let up = origins.lock().unwrap_or_else(|p| p.into_inner());
            [&up[1], &up[0]].into_iter().flatten().cloned().collect()
        };
        let mut got = None;
        for base in urls {
            if let Ok((200, body)) = get_all(&client, &format!("{base}{}", segment_route(number))).await {
                got = Some(sha256(&body));
                break;
            }
        }
        match got {
            Some(digest) => {
                copies.insert(number, digest);
                number += 1;
                failures = 0;
            }
            None => {
                failures += 1;
                if failures > 50 {
                    return Err(format!("no origin gave segment {number}"));
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), until.changed()).await;
            }
        }
    }
    Ok(copies)
}

/// The newest segment number of representation 0 in an origin's LL-HLS playlist.
async fn newest_segment(client: &reqwest::Client, base: &str) -> Option<u64> {
    let (status, body) = get_all(client, &format!("{base}/ldash/download/live/stream.0.m3u8"))
        .await
        .ok()?;
    if status != 200 {
        return None;
    }
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| l.strip_prefix("chunk-stream0-")?.strip_suffix(".m4s")?.parse().ok())
        .max()
}

/// Waits (bounded) until `base` lists a segment at least `number` in its playlist.
async fn until_listed(client: &reqwest::Client, base: &str, number: u64, bound: Duration) -> bool {
    tokio::time::timeout(bound, async {
        loop {
            if newest_segment(client, base).await.is_some_and(|n| n >= number) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .is_ok()
}

/// Waits (bounded) until the viewers' newest complete segment is at least `number`.
async fn until_viewed(progress: &mut watch::Receiver<u64>, number: u64, what: &str) {
    let reached = tokio::time::timeout(Duration::from_secs(60), progress.wait_for(|p| *p >= number))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(
        reached,
        "the viewers did not reach segment {number} ({what}) within 60 s: at {}",
        *progress.borrow()
    );
}

/// The median of the glass-to-glass samples whose time (seconds since the measurement started)
/// lies in `from..to`, with their stalls.
fn window(run: &DriverRun, from: f64, to: f64) -> (Option<f64>, u32) {
    let inside: Vec<&common::browser::Sample> = run
        .samples
        .iter()
        .filter(|s| f64::from(s.at) > from && f64::from(s.at) <= to)
        .collect();
    let mut glass: Vec<f64> = inside.iter().filter_map(|s| s.glass).collect();
    glass.sort_by(f64::total_cmp);
    let stalls_before = run
        .samples
        .iter()
        .filter(|s| f64::from(s.at) <= from)
        .map(|s| s.stalls)
        .max()
        .unwrap_or(0);
    let stalls_after = inside.iter().map(|s| s.stalls).max().unwrap_or(stalls_before);
    (
        glass.get(glass.len() / 2).copied(),
        stalls_after.saturating_sub(stalls_before),
    )
}

async fn failover(kind: Kind, format: &str) {
    let (Some(ffmpeg), Some(program)) = (require_tool("ffmpeg"), kind.program()) else {
        return;
    };
    let Some(driver) = browser_driver() else {
        return;
    };
    let mut a = Killable::start("A").await;
    let mut b = Killable::start("B").await;
    let edge = Edge::start_for(kind, &program, Origins::Failover(a.process().http, b.process().http)).await;
    let edge_url = edge.url("");
    let bases = [
        format!("http://{}", a.process().http),
        format!("http://{}", b.process().http),
    ];

    // One encoder (frames carrying their capture time), a DASH muxer per origin, each going on
    // while its origin is away.
    let dash = Dash {
        source: Source::Clock,
        video: Video::One("800k"),
        audio: true,
        seconds: 150,
        chunk: 0.2,
        output: Output::Tee {
            urls: bases
                .iter()
                .map(|base| format!("{base}/ldash/upload/live/stream.mpd"))
                .collect(),
            ingest: Ingest::PutOutlivingTheOrigin,
        },
        loglevel: "warning",
    };
    let clock = std::process::Command::new(env!("CARGO_BIN_EXE_ldash-clock"));
    let mut encoder = testkit::encoder::clock_encoder(clock, &ffmpeg, &dash).expect("ldash-clock and ffmpeg start");
    let direct = http_client();
    for base in &bases {
        assert!(
            until_listed(&direct, base, 3, Duration::from_secs(30)).await,
            "{base} lists segment 3 within 30 s"
        );
    }
    let first = newest_segment(&direct, &bases[1]).await.expect("B's playlist") + 1;

    let up = Arc::new(Mutex::new(bases.clone().map(Some)));
    let (stop, until) = watch::channel(false);
    let copies = tokio::spawn(reference(Arc::clone(&up), first, until.clone()));
    let progress = Arc::new(watch::channel(0u64).0);
    let mut reached = progress.subscribe();
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|_| tokio::spawn(view(edge_url.clone(), first, Arc::clone(&progress), until.clone())))
        .collect();
    // The engines this test was made with (hls.js, not the page's default Shaka, for LL-HLS).
    let engine = if format == "m3u8" { "hlsjs" } else { "dashjs" };
    let page = edge.url(&format!("/ldash/play/live/stream.{format}?engine={engine}"));
    let case = format!("failover {} {format}", kind.name());
    let shot = screenshot(&case);
    let playing = {
        let case = case.clone();
        tokio::spawn(async move { drive(&driver, &page, (4, 44), &shot, &[], &case).await })
    };

    // The player settles; then A dies with segments growing and requests held on it.
    until_viewed(&mut reached, first + 10, "before A dies").await;
    let killed_a = epoch_ms();
    up.lock().unwrap_or_else(|p| p.into_inner())[0] = None;
    a.kill().await;
    until_viewed(&mut reached, first + 18, "on B alone").await;
    // A comes back on its root and catches up with the encoder; the edge goes back to it.
    a.restart().await;
    // Back from an outage longer than the end rule, A still has the stream live (its encoder went
    // on elsewhere): a player the edge sends there before A's first upload is not told it ended.
    for route in ["/ldash/download/live/stream.mpd", "/ldash/download/live/stream.0.m3u8"] {
        let (status, body) = get_all(&direct, &format!("{}{route}", bases[0]))
            .await
            .unwrap_or_else(|e| panic!("A, started again: {route}: {e}"));
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "A, started again: {route}: {body}");
        assert!(
            !body.contains("mediaPresentationDuration") && !body.contains("#EXT-X-ENDLIST"),
            "A, started again, calls the stream ended: {route}: {body}"
        );
    }
    let now = newest_segment(&direct, &bases[1]).await.expect("B's playlist");
    assert!(
        until_listed(&direct, &bases[0], now + 2, Duration::from_secs(20)).await,
        "A, started again, lists the encoder's new segments"
    );
    up.lock().unwrap_or_else(|p| p.into_inner())[0] = Some(bases[0].clone());
    until_viewed(&mut reached, now + 5, "A back").await;
    let killed_b = epoch_ms();
    up.lock().unwrap_or_else(|p| p.into_inner())[1] = None;
    b.kill().await;
    let run = playing.await.expect("the browser run");
    let last = *reached.borrow();
    stop.send_replace(true);

    let mut failures = Vec::new();
    let copies = copies.await.expect("reference task").unwrap_or_else(|e| panic!("{e}"));
    let (mut segments, mut cuts, mut longest_wait) = (0, 0, Duration::ZERO);
    for (i, viewer) in viewers.into_iter().enumerate() {
        let viewing = viewer.await.expect("viewer task");
        // How long this viewer waited for a segment after the one before (1 s when nothing
        // happens: the segments are the live edge's, each complete a segment duration later).
        for pair in viewing.segments.windows(2) {
            longest_wait = longest_wait.max(pair[1].2.duration_since(pair[0].2));
        }
        for (number, digest, _) in &viewing.segments {
            match copies.get(number) {
                Some(copy) if copy == digest => segments += 1,
                Some(_) => failures.push(format!("viewer {i}: segment {number} differs from the origins' copy")),
                None => failures.push(format!("viewer {i}: segment {number} has no origin copy")),
            }
        }
        if viewing.segments.len() < 15 {
            failures.push(format!("viewer {i} got only {} segments", viewing.segments.len()));
        }
        cuts += viewing.cuts.len();
        // A response cut by its origin's death, at most once per death.
        if viewing.cuts.len() > 2 {
            failures.push(format!(
                "viewer {i}: {} cut responses: {:?}",
                viewing.cuts.len(),
                viewing.cuts
            ));
        }
        if !viewing.statuses.is_empty() {
            failures.push(format!("viewer {i} got error statuses: {:?}", viewing.statuses));
        }
    }

    let from = run
        .measured_from
        .unwrap_or_else(|| panic!("{case}: the driver's start time"));
    let (at_a, at_b) = ((killed_a - from) / 1000.0, (killed_b - from) / 1000.0);
    let (before, _) = window(&run, 0.0, at_a);
    let readings: Vec<String> = run
        .samples
        .iter()
        .map(|s| s.glass.map_or("-".into(), |g| format!("{g:.2}")))
        .collect();
    let (after_a, stalls_a) = window(&run, at_a, at_b);
    let (after_b, stalls_b) = window(&run, at_b, f64::MAX);
    let last_sample = run.samples.last().unwrap_or_else(|| panic!("{case}: no samples"));
    println!(
        "FAILOVER {} {format}: {VIEWERS} viewers, {segments} segments exact, {cuts} responses cut by a dying \
         origin (asked again), longest wait for a viewer's next segment {:.2} s (1 s without a failure); \
         player glass-to-glass {:?} s before, {:?} s after A died ({stalls_a} stalls), \
         {:?} s after B died ({stalls_b} stalls); A killed {at_a:.1} s and B {at_b:.1} s into the measurement; \
         viewers up to segment {last}; glass-to-glass per second: {}",
        kind.name(),
        longest_wait.as_secs_f64(),
        before,
        after_a,
        after_b,
        readings.join(" ")
    );
    println!("FAILOVER {} {format} player console: {:?}", kind.name(), run.console);

    if before.is_none() || after_a.is_none() {
        failures.push("no glass-to-glass reading before or after A died".into());
    }
    if let Some(error) = &last_sample.error {
        failures.push(format!("the player reported {error}"));
    }
    if !run.failed.is_empty() {
        failures.push(format!("playlist or manifest errors: {:?}", run.failed));
    }
    if stalls_a > 1 || stalls_b > 1 {
        failures.push(format!(
            "more than one stall per failover: {stalls_a} after A died, {stalls_b} after B died"
        ));
    }
    match run.advanced_over(5) {
        Some((_, advanced)) if advanced >= 3.0 => {}
        other => failures.push(format!("not playing at the end: {:?}", other.map(|(_, a)| a))),
    }
    let _ = encoder.ffmpeg.kill().await;
    let log_tail = edge.access_log().lines().rev().take(40).collect::<Vec<_>>().join("\n");
    // The edge and the origins print their complaints when dropped: before the verdict, so that
    // what failed comes last (a CI log keeps the tail of a failing run's output).
    drop((edge, a, b));
    assert!(
        failures.is_empty(),
        "{case}\nconsole: {:?}\nedge log tail: {log_tail}\n{case} failed:\n{}",
        run.console,
        failures.join("\n")
    );
}

/// The same query to both origins (the same Host, as behind one edge).
async fn both(clients: &[reqwest::Client; 2], servers: &[TestServer; 2], route: &str) -> [String; 2] {
    let mut out = [String::new(), String::new()];
    for (i, server) in servers.iter().enumerate() {
        let url = server.url(Proto::H1, route);
        let response = clients[i]
            .get(&url)
            .header("host", "edge.example")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(response.status(), 200, "{url}");
        out[i] = response.text().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    out
}

/// The times the encoder's two muxers write each on their own clock (availabilityStartTime,
/// publishTime: the same to a few milliseconds), and the PROGRAM-DATE-TIMEs derived from them,
/// replaced by a mark; the values taken out, as seconds since the epoch.
fn without_encoder_times(text: &str) -> (String, Vec<f64>) {
    let mut out = String::with_capacity(text.len());
    let mut times = Vec::new();
    let mut rest = text;
    loop {
        let next = [
            "availabilityStartTime=\"",
            "publishTime=\"",
            "#EXT-X-PROGRAM-DATE-TIME:",
        ]
        .iter()
        .filter_map(|m| rest.find(m).map(|at| (at, m.len())))
        .min();
        let Some((at, len)) = next else {
            out.push_str(rest);
            return (out, times);
        };
        out.push_str(&rest[..at + len]);
        rest = &rest[at + len..];
        let end = rest.find(['"', '\n']).unwrap_or(rest.len());
        if let Some(t) = epoch_seconds(&rest[..end]) {
            times.push(t);
        }
        out.push_str("(time)");
        rest = &rest[end..];
    }
}

/// An xs:dateTime in UTC ("2026-12-04T03:04:05.678Z") as seconds since the epoch.
fn epoch_seconds(text: &str) -> Option<f64> {
    let (date, time) = text.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?);
    let s = t.next()?.trim_end_matches("+00:00").parse::<f64>().ok()?;
    // Days since the epoch (proleptic Gregorian calendar).
    let (y, m) = if m <= 2 { (y - 1, m + 12) } else { (y, m) };
    let days = 365 * y + y / 4 - y / 100 + y / 400 + (153 * (m - 3) + 2) / 5 + day - 719_469;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + s)
}

/// The playlist without the progress its rendition reports give of the other renditions: how far
/// another rendition is when this one's part arrives is a race between two uploads (a part either
/// way), on one origin as on two.
fn without_report_progress(text: &str) -> String {
    text.lines()
        .map(|l| match l.split_once(",LAST-MSN=") {
            Some((report, _)) if l.starts_with("#EXT-X-RENDITION-REPORT:") => report,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that both origins' answers are the same but for the encoder's times, which differ by
/// less than 50 ms, and the other renditions' progress in rendition reports.
fn assert_same(what: &str, [a, b]: &[String; 2]) {
    let (a_text, a_times) = without_encoder_times(&without_report_progress(a));
    let (b_text, b_times) = without_encoder_times(&without_report_progress(b));
    assert_eq!(a_text, b_text, "{what}: the two origins answered differently");
    assert_eq!(a_times.len(), b_times.len(), "{what}");
    for (x, y) in a_times.iter().zip(&b_times) {
        assert!(
            (x - y).abs() < 0.05,
            "{what}: times {x} and {y} are more than 50 ms apart:\n{a}\n{b}"
        );
    }
}

async fn same_answers() {
    let Some(ffmpeg) = require_tool("ffmpeg") else {
        return;
    };
    let servers = [TestServer::start().await, TestServer::start().await];
    let dash = Dash {
        output: Output::Tee {
            urls: servers
                .iter()
                .map(|s| s.url(Proto::H1, "/ldash/upload/live/stream.mpd"))
                .collect(),
            ingest: Ingest::PutPersistent,
        },
        ..Dash::test_stream("", Ingest::PutPersistent, 14)
    };
    let mut encoder = testkit::encoder::Encoder::start(dash.command(&ffmpeg)).expect("ffmpeg starts");
    let clients = [http_client(), http_client()];
    // Origin A makes its first playlist early, B late: what they publish must not depend on it.
    servers[0]
        .upload_started("live/chunk-stream0-00002.m4s", Duration::from_secs(30))
        .await;
    let client_a = servers[0].client_for(Proto::H1).await;
    let (status, _) = client_a.get_text("/ldash/download/live/stream.0.m3u8").await;
    assert_eq!(status, 200);
    servers[1]
        .upload_started("live/chunk-stream0-00006.m4s", Duration::from_secs(30))
        .await;
    // Blocking reloads are answered when their part is there: the same moment of the stream.
    let base = servers[1].url(Proto::H1, "");
    let next = newest_segment(&clients[1], &base).await.expect("B's playlist") + 1;
    for route in [
        "/ldash/download/live/stream.m3u8".to_owned(),
        format!("/ldash/download/live/stream.0.m3u8?_HLS_msn={next}&_HLS_part=2"),
        format!("/ldash/download/live/stream.1.m3u8?_HLS_msn={next}&_HLS_part=2"),
        format!("/ldash/download/live/stream.2.m3u8?_HLS_msn={}&_HLS_part=0", next + 1),
        format!(
            "/ldash/download/live/stream.0.m3u8?_HLS_msn={}&_HLS_part=1&_HLS_skip=YES",
            next + 2
        ),
    ] {
        let answers = both(&clients, &servers, &route).await;
        assert_same(&route, &answers);
        if route.ends_with("stream.m3u8") {
            // Behind the tee muxer ffmpeg's MPD says "avc1" alone; players need the profile.
            assert!(answers[0].contains("CODECS=\"avc1.42c0"), "{}", answers[0]);
        }
    }
    let mpds = both(&clients, &servers, "/ldash/download/live/stream.mpd").await;
    assert!(mpds[0].contains("http://edge.example/ldash/time"), "{}", mpds[0]);
    assert!(mpds[0].contains("codecs=\"avc1.42c0"), "{}", mpds[0]);
    assert_same("the MPD", &mpds);
    let status = encoder.child.wait().await.expect("ffmpeg ends");
    assert!(status.success(), "ffmpeg: {}", encoder.log().await);
    // The ended stream: the whole of it, the same on both.
    for route in [
        "/ldash/download/live/stream.0.m3u8",
        "/ldash/download/live/stream.2.m3u8",
    ] {
        let answers = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let answers = both(&clients, &servers, route).await;
                if answers.iter().all(|a| a.contains("#EXT-X-ENDLIST")) {
                    return answers;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{route} ends on both origins within 30 s"));
        assert_same(route, &answers);
    }
    for server in servers {
        server.stop().await;
    }
}

async fn sharding(kind: Kind) {
    let (Some(ffmpeg), Some(program)) = (require_tool("ffmpeg"), kind.program()) else {
        return;
    };
    let servers = [TestServer::start().await, TestServer::start().await];
    let edge = Edge::start_for(kind, &program, Origins::Shard(servers[0].http, servers[1].http)).await;
    let names = match kind {
        Kind::Varnish => ["origin_a".to_owned(), "origin_b".to_owned()],
        Kind::Nginx => [servers[0].http.to_string(), servers[1].http.to_string()],
    };
    // The documented way (docs/edges-and-failover.md) to find a channel's origin: ask the edge
    // (X-Ldash-Origin), here for channel names until each origin has one.
    let client = http_client();
    let mut channels: [Option<String>; 2] = [None, None];
    for i in 1..=32 {
        let channel = format!("ch{i}");
        let url = edge.url(&format!("/ldash/download/{channel}/"));
        let response = client.head(&url).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let origin = response
            .headers()
            .get("x-ldash-origin")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{url}: no X-Ldash-Origin: {:?}", response.headers()))
            .to_owned();
        let at = names
            .iter()
            .position(|n| *n == origin)
            .unwrap_or_else(|| panic!("{url}: X-Ldash-Origin {origin} names neither origin {names:?}"));
        channels[at].get_or_insert(channel);
        if channels.iter().all(Option::is_some) {
            break;
        }
    }
    let channels = channels.map(|c| c.expect("32 channel names hash to both origins"));
    let encoders: Vec<_> = channels
        .iter()
        .zip(&servers)
        .map(|(channel, server)| {
            let dash = Dash {
                video: Video::One("300k"),
                audio: false,
                ..Dash::test_stream(
                    &server.url(Proto::H1, &format!("/ldash/upload/{channel}/stream.mpd")),
                    Ingest::PutPersistent,
                    12,
                )
            };
            testkit::encoder::Encoder::start(dash.command(&ffmpeg)).expect("ffmpeg starts")
        })
        .collect();
    for (channel, server) in channels.iter().zip(&servers) {
        server
            .upload_started(&format!("{channel}/chunk-stream0-00003.m4s"), Duration::from_secs(30))
            .await;
    }
    for (i, (channel, server)) in channels.iter().zip(&servers).enumerate() {
        for route in [
            format!("/ldash/download/{channel}/stream.mpd"),
            format!("/ldash/download/{channel}/stream.0.m3u8"),
            format!("/ldash/download/{channel}/chunk-stream0-00002.m4s"),
            format!("/ldash/play/{channel}/stream.mpd"),
        ] {
            let response = client
                .get(edge.url(&route))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{route}: {e}"));
            assert_eq!(response.status(), 200, "{route} through the edge");
            if route.contains("/download/") {
                let origin = response.headers().get("x-ldash-origin").and_then(|v| v.to_str().ok());
                // A copy the edge kept says nothing (nginx) or names the origin it came from.
                assert!(
                    origin.is_none_or(|o| o.is_empty() || o == names[i]),
                    "{route} came from {origin:?}, not {}",
                    names[i]
                );
            }
            let body = response.bytes().await.unwrap_or_else(|e| panic!("{route}: {e}"));
            if route.ends_with(".m4s") {
                let direct = server.client_for(Proto::H1).await.get_ok(&route).await;
                assert_eq!(sha256(&body), sha256(&direct), "{route}: the origin's bytes");
            }
        }
        // Each origin saw only its own channel: the other's never reached it.
        let other = &channels[1 - i];
        assert!(
            server.store.list(other).is_empty() && server.store.get(&format!("{other}/stream.mpd")).is_none(),
            "origin {i} holds channel {other}"
        );
    }
    for mut encoder in encoders {
        let _ = encoder.child.kill().await;
    }
    for server in servers {
        server.stop().await;
    }
}
