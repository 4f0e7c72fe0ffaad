//! Item 7, a DVR window's playlists: the recorded stream published with its availabilityStartTime
//! two hours back and its segments uploaded faster than real time until the window holds 7,200
//! one-second segments (600 with `--quick`), into ldash with `--dvr-window 2h`; beside it, the same
//! stream with ldash's defaults and the encoder's window of 30 segments. For each: the media
//! playlist's size in full and as a delta update (`_HLS_skip=YES`, what LL-HLS players reload),
//! plain and gzipped, and the blocking reload's wake-up latency as in item 4.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use testkit::client::Client;
use testkit::Proto;

use crate::hls::{msn_offset, wait_blocked};
use crate::procs;
use crate::recording::{self, Publisher};
use crate::stats::{self, Summary};
use crate::Plan;

const ROUTE: &str = "/ldash/download/live/stream.0.m3u8";

pub async fn run(plan: &Plan, dir: &Path) -> Result<(), String> {
    let rec = Arc::new(recording::record(&crate::recording_dir(dir), 6).await?);
    let (kept, waiters) = if plan.quick { (600u64, 10) } else { (7_200u64, 100) };
    println!("\n## 7. DVR window playlists\n");
    println!(
        "The recorded stream with its availabilityStartTime {kept} s back, {kept} segments uploaded faster than real \
         time, then {waiters} clients blocked on the next part over HTTP/2 with `_HLS_skip=YES` (a part's chunk \
         uploaded, the time to each complete response, as item 4), for every part of two segments. Beside it the \
         same with ldash's defaults and 30 segments kept (the encoder's window).\n"
    );
    println!(
        "| ldash | segments listed | full playlist | gzipped | delta update | gzipped | upload of the window | wake-up p50 | p99 | max |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let window = format!("{kept}s");
    let cases: [(&str, Vec<&str>, u64); 2] = [
        (
            "`--dvr-window` (the window)",
            vec!["--dvr-window", window.as_str()],
            kept,
        ),
        ("defaults, 30 segments", vec![], 30),
    ];
    for (label, args, segments) in cases {
        match window_case(&rec, &args, segments, waiters, &dir.join(format!("{segments}"))).await {
            Ok(row) => println!("| {label} | {row} |"),
            Err(err) => println!("| {label} | failed: {err} | | | | | | | | |"),
        }
    }
    Ok(())
}

/// One server: `segments` uploaded, the playlists' sizes and the wake-up latencies, as a row.
async fn window_case(
    rec: &Arc<recording::Recording>,
    args: &[&str],
    segments: u64,
    waiters: usize,
    dir: &Path,
) -> Result<String, String> {
    let server = procs::start_ldash(dir, args).await?;
    let publisher = Publisher::new(&server, "live", Arc::clone(rec)).await?;
    // Segment n covers [n - 1, n) s after the start: the last one uploaded ends now.
    let start = SystemTime::now() - Duration::from_secs(segments);
    publisher.start(start).await?;
    let began = Instant::now();
    let mut upload = publisher.open_first().await?;
    for n in 1..=segments {
        let next = publisher.open(n + 1);
        for chunk in rec.segment(n) {
            upload.send(chunk, None).await?;
        }
        upload.finish().await?;
        upload = next;
    }
    let uploaded = began.elapsed();
    let probe = server.connect(Proto::H1).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let full = loop {
        let text = text(&probe, ROUTE).await?;
        if text.contains(&format!("chunk-stream0-{segments:05}.m4s")) {
            break text;
        }
        if Instant::now() > deadline {
            return Err(format!("segment {segments} is not listed within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let listed = full.lines().filter(|l| l.starts_with("#EXTINF")).count();
    let delta = text(&probe, &format!("{ROUTE}?_HLS_skip=YES")).await?;
    let full_gz = gzipped_len(&probe, ROUTE).await?;
    let delta_gz = gzipped_len(&probe, &format!("{ROUTE}?_HLS_skip=YES")).await?;

    let offset = msn_offset(&probe, ROUTE).await?;
    let conns = futures_util::future::try_join_all((0..waiters).map(|_| server.connect(Proto::H2Tls))).await?;
    for conn in &conns {
        conn.get(ROUTE).send().await?.bytes().await?;
    }
    let mut samples = Vec::new();
    let mut upload = upload;
    for n in segments + 1..=segments + 2 {
        let next = publisher.open(n + 1);
        for (part, chunk) in rec.segment(n).into_iter().enumerate() {
            let target = format!("{ROUTE}?_HLS_msn={}&_HLS_part={part}&_HLS_skip=YES", n as i64 + offset);
            let mut blocked = tokio::task::JoinSet::new();
            for conn in &conns {
                let (conn, target) = (conn.clone(), target.clone());
                blocked.spawn(async move {
                    let response = conn.get(&target).send().await?;
                    let status = response.status;
                    response.bytes().await?;
                    Ok::<_, String>((status, Instant::now()))
                });
            }
            wait_blocked(&server, waiters).await?;
            upload.send(chunk, None).await?;
            let sent = Instant::now();
            while let Some(joined) = blocked.join_next().await {
                let (status, at) = joined.map_err(|e| e.to_string())??;
                if status != 200 {
                    return Err(format!("a blocking reload was answered {status}"));
                }
                samples.push(at.saturating_duration_since(sent));
            }
        }
        upload.finish().await?;
        upload = next;
    }
    drop(upload);
    let s = Summary::of(&mut samples);
    Ok(format!(
        "{listed} | {} | {} | {} | {} | {:.1} s | {} ms | {} ms | {} ms",
        kb(full.len()),
        kb(full_gz),
        kb(delta.len()),
        kb(delta_gz),
        uploaded.as_secs_f64(),
        stats::ms(s.p50),
        stats::ms(s.p99),
        stats::ms(s.max)
    ))
}

fn kb(bytes: usize) -> String {
    format!("{:.1} KB", bytes as f64 / 1000.0)
}

async fn text(conn: &Client, route: &str) -> Result<String, String> {
    let response = conn.get(route).send().await?;
    if response.status != 200 {
        return Err(format!("{route} answered {}", response.status));
    }
    Ok(String::from_utf8_lossy(&response.bytes().await?).into_owned())
}

/// The length of `route`'s gzip form as sent.
async fn gzipped_len(conn: &Client, route: &str) -> Result<usize, String> {
    let response = conn.get(route).header("accept-encoding", "gzip").send().await?;
    if response.status != 200 {
        return Err(format!("{route} answered {}", response.status));
    }
    Ok(response.bytes().await?.len())
}
