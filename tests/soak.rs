//! Soak: the real `ldash` binary as a child process, the real ffmpeg pushing the documented
//! low-latency ingest into it for `LDASH_SOAK_SECONDS` (default 120), and readers over HTTP/1.1,
//! HTTP/2 and HTTP/3 following the live edge of every representation the whole time, some by segment
//! numbering (as dash.js does) and some by LL-HLS blocking reloads (as hls.js does).
//!
//! It checks that ffmpeg never sees an error, that no reader loses a byte (each segment a reader got
//! while it grew equals the same segment fetched again complete, and the files persisted in the root),
//! and that the server's resident memory and open file descriptors stay flat after a warm-up.
//!
//! `LDASH_SOAK_SECONDS=1800 nice -n 10 cargo test --release --test soak -- --nocapture` is the long
//! form (the figures in BENCHMARKS.md).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::client::Client;
use common::encoder::{Dash, Encoder, Ingest};
use common::{require_tool, Origin, Proto};
use testkit::digest::{sha256, Sha256};
use testkit::origin::{ldash_command, OriginProcess};
use testkit::process;
use tokio::sync::watch;

/// The ingest folder and manifest.
const STREAM: &str = "soak/stream.mpd";
/// ffmpeg's representations in the documented command: two video renditions and audio.
const REPRESENTATIONS: [u32; 3] = [0, 1, 2];
/// How often the server's RSS, descriptors and store gauges are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Longest a reader may go without a new segment while ffmpeg runs (segments are 1 s long).
const STALL: Duration = Duration::from_secs(30);
/// Longest wait for one body chunk of a growing segment (fragments come every 0.2 s).
const CHUNK_WAIT: Duration = Duration::from_secs(10);

/// How a reader finds the next segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// Asks for segment n+1 as soon as segment n has ended: the server holds the request until the
    /// upload starts (dash.js at the live edge).
    Numbering,
    /// Waits for part 0 of segment n with an LL-HLS blocking reload (`_HLS_msn=n&_HLS_part=0`),
    /// then asks for segment n (hls.js reaching for the live edge).
    Blocking,
}

/// The readers: every HTTP version, both ways of following the live edge.
const READERS: [(&str, Proto, Follow); 5] = [
    ("h1-dash", Proto::H1, Follow::Numbering),
    ("h2-dash", Proto::H2Tls, Follow::Numbering),
    ("h2-hls", Proto::H2Tls, Follow::Blocking),
    ("h3-dash", Proto::H3, Follow::Numbering),
    ("h3-hls", Proto::H3, Follow::Blocking),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_ffmpeg_ingest_with_live_readers_keeps_bytes_memory_and_descriptors() {
    let Some(ffmpeg) = require_tool("ffmpeg") else {
        return;
    };
    let seconds: u32 = std::env::var("LDASH_SOAK_SECONDS")
        .ok()
        .map(|v| v.parse().expect("LDASH_SOAK_SECONDS is a number of seconds"))
        .unwrap_or(120);
    assert!(
        seconds >= 30,
        "LDASH_SOAK_SECONDS must be at least 30 (warm-up and samples after it)"
    );
    // Allocator arenas, connection pools and the segment window fill during the first seconds; after
    // that the server's footprint should not move.
    // ffmpeg's window (7 segments of 1 s) is full after about 10 s.
    let warm_up = Duration::from_secs(u64::from(seconds / 4).clamp(10, 30));

    // The `ldash` binary with 127.0.0.1:0 listeners, found from the addresses it announces.
    let dir = tempfile::tempdir().expect("temporary root");
    let mut origin = OriginProcess::start(ldash_command(env!("CARGO_BIN_EXE_ldash")), dir.path(), &[])
        .await
        .unwrap_or_else(|e| panic!("ldash starts: {e}"));
    let started = Instant::now();
    let url = origin.url(Proto::H1, &format!("/ldash/upload/{STREAM}"));
    let dash = Dash::test_stream(&url, Ingest::PutPersistent, seconds);
    let mut encoder = Encoder::start(dash.command(&ffmpeg)).expect("ffmpeg starts");

    let (ended_tx, ended) = watch::channel(false);
    let mut readers = Vec::new();
    for (name, proto, follow) in READERS {
        let client = origin.connect(proto).await.expect("a client");
        let reps =
            REPRESENTATIONS.map(|rep| tokio::spawn(follow_representation(client.clone(), follow, rep, ended.clone())));
        readers.push((name, reps));
    }
    let (stop_sampling, sampling) = watch::channel(false);
    let sampler = tokio::spawn(sample(origin.pid, Origin::clone(&origin), started, sampling));

    let status = tokio::time::timeout(Duration::from_secs(u64::from(seconds) + 60), encoder.child.wait())
        .await
        .expect("ffmpeg ends within a minute of its -t")
        .expect("wait for ffmpeg");
    let ffmpeg_log = encoder.log().await;
    ended_tx.send_replace(true);

    let mut failures = Vec::new();
    let mut reports = Vec::new();
    for (name, reps) in readers {
        let mut got = Vec::new();
        for (rep, task) in REPRESENTATIONS.iter().zip(reps) {
            match tokio::time::timeout(Duration::from_secs(60), task).await {
                Ok(Ok(Ok(report))) => got.push(report),
                Ok(Ok(Err(err))) => failures.push(format!("{name} rep {rep}: {err}")),
                Ok(Err(panic)) => failures.push(format!("{name} rep {rep}: reader panicked: {panic}")),
                Err(_) => failures.push(format!("{name} rep {rep}: reader did not finish within 60 s of ffmpeg")),
            }
        }
        reports.push((name, got));
    }
    let at_rest = scrape(&origin).await;
    stop_sampling.send_replace(true);
    let samples = sampler.await.expect("sampler");
    let duration = started.elapsed();
    let (server_status, mut server_log) = origin.stop().await.unwrap_or_else(|e| panic!("{e}"));
    // Expected: this run sets no upload token.
    server_log.warnings.retain(|l| !l.contains("no --upload-token"));

    // What the server persisted: the last segments of the window, and the init segments.
    let folder = origin.root.join(Path::new(STREAM).parent().expect("folder"));
    let last_on_disk: BTreeMap<u32, u32> = REPRESENTATIONS
        .iter()
        .map(|&rep| (rep, newest_on_disk(&folder, rep)))
        .collect();
    let mut compared_with_disk = 0usize;
    for (name, got) in &reports {
        for report in got {
            let rep = report.rep;
            let last = last_on_disk[&rep];
            let newest = report.segments.keys().next_back().copied().unwrap_or(0);
            if newest != last {
                failures.push(format!(
                    "{name} rep {rep}: followed up to segment {newest}, ffmpeg's last is {last}"
                ));
            }
            let init = std::fs::read(folder.join(format!("init-stream{rep}.m4s"))).unwrap_or_default();
            if (init.len() as u64, sha256(&init)) != report.init {
                failures.push(format!(
                    "{name} rep {rep}: init segment differs from the persisted file"
                ));
            }
            for (n, got) in &report.segments {
                let Ok(file) = std::fs::read(folder.join(segment_name(rep, *n))) else {
                    continue;
                };
                compared_with_disk += 1;
                if (file.len() as u64, sha256(&file)) != *got {
                    failures.push(format!(
                        "{name} rep {rep}: segment {n} ({} bytes read) differs from the persisted file ({} bytes)",
                        got.0,
                        file.len()
                    ));
                }
            }
        }
    }

    // Summary first, so a failing run still shows its figures.
    let segments: u32 = last_on_disk.values().sum();
    println!(
        "\nsoak summary ({} build)",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| duration | {:.0} s (ffmpeg -t {seconds}, warm-up {} s) |",
        duration.as_secs_f64(),
        warm_up.as_secs()
    );
    println!(
        "| segments | {segments} ({} per representation {:?}) |",
        last_on_disk
            .values()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" / "),
        REPRESENTATIONS
    );
    for (name, got) in &reports {
        let bytes: u64 = got.iter().map(|r| r.bytes).sum();
        let fetched: usize = got.iter().map(|r| r.segments.len()).sum();
        let growing: u32 = got.iter().map(|r| r.growing).sum();
        let misses: u32 = got.iter().map(|r| r.misses).sum();
        println!(
            "| reader {name} | {:.1} MB, {fetched} segments ({growing} while growing), {misses} retried 404s |",
            bytes as f64 / 1e6
        );
    }
    println!("| compared with persisted files | {compared_with_disk} segments |");
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.at >= warm_up).collect();
    let figure = |f: fn(&Sample) -> u64| -> (u64, u64, u64) {
        let first = steady.first().map(|s| f(s)).unwrap_or(0);
        let max = steady.iter().map(|s| f(s)).max().unwrap_or(0);
        let last = steady.last().map(|s| f(s)).unwrap_or(0);
        (first, max, last)
    };
    let rss = figure(|s| s.rss_kib);
    let fds = figure(|s| s.fds);
    let entries = figure(|s| s.entries);
    let memory = figure(|s| s.memory_bytes);
    println!(
        "| RSS first/max/last | {:.1} / {:.1} / {:.1} MiB ({} samples after warm-up, every {} s) |",
        rss.0 as f64 / 1024.0,
        rss.1 as f64 / 1024.0,
        rss.2 as f64 / 1024.0,
        steady.len(),
        SAMPLE_EVERY.as_secs()
    );
    println!("| fds first/max/last | {} / {} / {} |", fds.0, fds.1, fds.2);
    println!(
        "| store entries first/max/last | {} / {} / {} |",
        entries.0, entries.1, entries.2
    );
    println!(
        "| store memory first/max/last | {:.1} / {:.1} / {:.1} MB |",
        memory.0 as f64 / 1e6,
        memory.1 as f64 / 1e6,
        memory.2 as f64 / 1e6
    );
    let complaints: Vec<&str> = ffmpeg_log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("broken pipe")
        })
        .collect();
    println!(
        "| ffmpeg | {status}, {} stderr lines, {} with error or broken pipe |",
        ffmpeg_log.lines().count(),
        complaints.len()
    );
    println!(
        "| server | {server_status}, {} log lines, {} warnings, {} errors |",
        server_log.lines,
        server_log.warnings.len(),
        server_log.errors.len()
    );
    println!("| requests by outcome | {:?} |", server_log.outcomes);
    for line in server_log.warnings.iter().chain(&server_log.errors).take(20) {
        println!("server: {line}");
    }
    for line in ffmpeg_log.lines().take(20) {
        println!("ffmpeg: {line}");
    }

    if !status.success() {
        failures.push(format!("ffmpeg exited with {status}"));
    }
    if !complaints.is_empty() {
        failures.push(format!("ffmpeg complained:\n{}", complaints.join("\n")));
    }
    if !server_status.success() {
        failures.push(format!("ldash exited with {server_status} after SIGTERM"));
    }
    if !server_log.errors.is_empty() {
        failures.push(format!("ldash logged errors:\n{}", server_log.errors.join("\n")));
    }
    if segments < 3 * (seconds / 2) {
        failures.push(format!("only {segments} segments for a {seconds} s ingest"));
    }
    if compared_with_disk == 0 {
        failures.push("no segment a reader got was still in the root to compare with".into());
    }
    for (name, got) in &reports {
        let fetched: usize = got.iter().map(|r| r.segments.len()).sum();
        let growing: u32 = got.iter().map(|r| r.growing).sum();
        // Readers follow the live edge: all but the first segment or two come while they grow.
        if (growing as usize) * 10 < fetched * 9 {
            failures.push(format!(
                "{name}: only {growing} of {fetched} segments were read while growing: not following the live edge"
            ));
        }
    }
    for (what, sample) in [
        ("ldash_growing_readers", "ldash_growing_readers"),
        ("ldash_uploads_in_progress", "ldash_uploads_in_progress"),
    ] {
        if at_rest.value(sample).unwrap_or(f64::NAN) != 0.0 {
            failures.push(format!("{what} is not 0 once ffmpeg and the readers are done"));
        }
    }
    if steady.len() < 3 {
        failures.push(format!("only {} samples after the warm-up", steady.len()));
    }
    // Bounds. RSS: 1.2x plus 16 MiB leaves room for allocator noise and the segment window's churn
    // (about 1.2 MB of media per second of window across the three representations), while a leak of
    // even one segment per second (~150 KB) shows as 18 MB in 2 minutes and 270 MB in 30. Descriptors:
    // every connection is one; the readers' pools and ffmpeg's connections are open after the warm-up,
    // and only ffmpeg's per-DELETE connections and a reader pool reconnecting come and go, so 16 more
    // is generous, while leaking one per segment or per DELETE adds hundreds. Entries: ffmpeg's window
    // (5 + 2 segments per representation) bounds the paths the store holds.
    let rss_bound = rss.0 + rss.0 / 5 + 16 * 1024;
    if rss.1 > rss_bound {
        failures.push(format!(
            "RSS grew from {} KiB to {} KiB, beyond 1.2x + 16 MiB ({rss_bound} KiB)",
            rss.0, rss.1
        ));
    }
    if fds.1 > fds.0 + 16 {
        failures.push(format!(
            "open descriptors grew from {} to {}, more than 16",
            fds.0, fds.1
        ));
    }
    if entries.1 > entries.0 + 8 {
        failures.push(format!("store entries grew from {} to {}", entries.0, entries.1));
    }
    assert!(failures.is_empty(), "soak failed:\n{}", failures.join("\n"));
}

/// What one reader got from one representation.
struct RepReport {
    rep: u32,
    /// The init segment: length and SHA-256.
    init: (u64, [u8; 32]),
    /// Every segment by number: length and SHA-256 of the bytes as they streamed in.
    segments: BTreeMap<u32, (u64, [u8; 32])>,
    /// Body bytes received (init and segments, not the verifying re-fetches).
    bytes: u64,
    /// Segments that were still growing when their response started.
    growing: u32,
    /// 404s retried (the next segment not there yet, or the stream not started).
    misses: u32,
}

/// Follows representation `rep` from segment 1 until ffmpeg has ended and the next segment does not
/// exist: every segment is streamed while it grows, then fetched again complete and compared.
async fn follow_representation(
    client: Client,
    follow: Follow,
    rep: u32,
    ended: watch::Receiver<bool>,
) -> Result<RepReport, String> {
    let folder = Path::new(STREAM).parent().and_then(Path::to_str).unwrap_or("");
    let stem = STREAM.strip_suffix(".mpd").unwrap_or(STREAM);
    let mut report = RepReport {
        rep,
        init: (0, [0; 32]),
        segments: BTreeMap::new(),
        bytes: 0,
        growing: 0,
        misses: 0,
    };
    let init_route = format!("/ldash/download/{folder}/init-stream{rep}.m4s");
    let mut progress = Instant::now();
    let init = loop {
        let response = request(&client, &init_route).await?;
        if response.status == 200 {
            break read_all(response).await?;
        }
        expect_missing(response.status, &init_route)?;
        report.misses += 1;
        stalled(progress, &init_route)?;
        // The one poll: until ffmpeg's first upload the server knows nothing it could hold the request
        // for, and an external encoder gives no event to wait on.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    report.bytes += init.0;
    report.init = (init.0, init.1);

    let mut n = 1u32;
    loop {
        let route = format!("/ldash/download/{folder}/{}", segment_name(rep, n));
        if follow == Follow::Blocking {
            let playlist = format!("/ldash/download/{stem}.{rep}.m3u8?_HLS_msn={n}&_HLS_part=0");
            let response = request(&client, &playlist).await?;
            match response.status {
                // 503: the hold ran out (three target durations); 400: beyond the end; the segment
                // request below decides.
                200 | 503 | 400 => {
                    read_all(response).await?;
                }
                404 if report.segments.is_empty() => {}
                other => return Err(format!("{playlist}: status {other}")),
            }
        } else if rep == 0 && !report.segments.is_empty() {
            // A DASH player reloads the manifest as it goes: exercise the rewrite every segment.
            let mpd = request(&client, &format!("/ldash/download/{STREAM}")).await?;
            if mpd.status != 200 {
                return Err(format!("the MPD answered {}", mpd.status));
            }
            read_all(mpd).await?;
        }
        let asked = Instant::now();
        let response = request(&client, &route).await?;
        if response.status != 200 {
            expect_missing(response.status, &route)?;
            // Asked again after ffmpeg's end is known: only then is a 404 the end of the stream.
            if *ended.borrow() {
                let again = request(&client, &route).await?;
                match again.status {
                    404 => return Ok(report),
                    // It did exist after all: follow it from the top of the loop.
                    200 => continue,
                    other => return Err(format!("{route}: status {other}")),
                }
            }
            report.misses += 1;
            stalled(progress, &route)?;
            if asked.elapsed() < Duration::from_millis(100) {
                // Not held (the stream is not live yet, or not known): see the init loop above.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        }
        let growing = response.header("cache-control").contains("no-store");
        let got = read_all(response).await?;
        // The segment has ended cleanly, so its upload has completed: fetch it again whole.
        let again = request(&client, &route).await?;
        if again.status != 200 || again.header("cache-control").contains("no-store") {
            return Err(format!(
                "{route}: fetched again after it ended: status {}, cache-control {:?} (deleted or still growing)",
                again.status,
                again.header("cache-control")
            ));
        }
        let whole = read_all(again).await?;
        if whole != got {
            return Err(format!(
                "{route}: {} bytes read while growing, {} bytes when complete, or their SHA-256 differ",
                got.0, whole.0
            ));
        }
        report.bytes += got.0;
        report.growing += u32::from(growing);
        report.segments.insert(n, (got.0, got.1));
        progress = Instant::now();
        n += 1;
    }
}

/// Sends a GET, bounded: a request is answered within the server's longest hold (10 s) plus slack.
async fn request(client: &Client, route: &str) -> Result<common::client::Response, String> {
    tokio::time::timeout(Duration::from_secs(20), client.get(route).send())
        .await
        .map_err(|_| format!("{route}: no response headers within 20 s"))?
        .map_err(|e| format!("{route}: {e}"))
}

/// Reads a body to its clean end: its length and SHA-256.
async fn read_all(mut response: common::client::Response) -> Result<(u64, [u8; 32]), String> {
    let mut digest = Sha256::new();
    loop {
        let len = digest.len();
        match tokio::time::timeout(CHUNK_WAIT, response.chunk()).await {
            Err(_) => {
                return Err(format!(
                    "no body bytes for {} s (after {len} bytes)",
                    CHUNK_WAIT.as_secs()
                ))
            }
            Ok(Err(err)) => return Err(format!("body broke after {len} bytes: {err}")),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => digest.update(&chunk),
        }
    }
    Ok((digest.len(), digest.finish()))
}

fn expect_missing(status: u16, route: &str) -> Result<(), String> {
    if status == 404 {
        Ok(())
    } else {
        Err(format!("{route}: status {status}"))
    }
}

fn stalled(since: Instant, route: &str) -> Result<(), String> {
    if since.elapsed() > STALL {
        Err(format!(
            "{route}: nothing new for {} s while ffmpeg runs",
            STALL.as_secs()
        ))
    } else {
        Ok(())
    }
}

fn segment_name(rep: u32, n: u32) -> String {
    format!("chunk-stream{rep}-{n:05}.m4s")
}

/// The highest segment number of `rep` persisted in `folder` (ffmpeg's last one).
fn newest_on_disk(folder: &Path, rep: u32) -> u32 {
    let prefix = format!("chunk-stream{rep}-");
    std::fs::read_dir(folder)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.strip_prefix(&prefix)?.strip_suffix(".m4s")?.parse().ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// One measurement of the server process.
struct Sample {
    /// Since the start of the ingest.
    at: Duration,
    rss_kib: u64,
    fds: u64,
    entries: u64,
    memory_bytes: u64,
}

/// Samples the server every [`SAMPLE_EVERY`] until told to stop.
async fn sample(pid: u32, origin: Origin, started: Instant, mut stop: watch::Receiver<bool>) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return samples,
        }
        let gauges = scrape(&origin).await;
        let gauge = |name: &str| gauges.value(name).unwrap_or(0.0) as u64;
        let sample = Sample {
            at: started.elapsed(),
            rss_kib: process::rss_kib(pid),
            fds: process::open_descriptors(pid),
            entries: gauge("ldash_entries"),
            memory_bytes: gauge("ldash_memory_bytes"),
        };
        println!(
            "soak sample t={:>5.0}s rss={:>7} KiB fds={:>3} entries={:>3} memory={:>9} B readers={}",
            sample.at.as_secs_f64(),
            sample.rss_kib,
            sample.fds,
            sample.entries,
            sample.memory_bytes,
            gauge("ldash_growing_readers")
        );
        samples.push(sample);
    }
}

/// One `GET /metrics`, bounded (empty if the scrape fails).
async fn scrape(origin: &Origin) -> testkit::metrics::Scrape {
    match tokio::time::timeout(Duration::from_secs(5), origin.scrape()).await {
        Ok(Ok(scrape)) => scrape,
        _ => testkit::metrics::Scrape::default(),
    }
}
