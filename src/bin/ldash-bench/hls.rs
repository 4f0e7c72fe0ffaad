//! Item 4, LL-HLS wake-up: clients blocked on `_HLS_msn`/`_HLS_part` for the next part of a live
//! stream (the recorded ffmpeg stream replayed into ldash); the uploader then sends that part's
//! chunk, and the time from its last byte leaving the uploader to each client's complete playlist
//! response is the wake-up latency.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use testkit::client::Client;
use testkit::{OriginProcess, Proto};

use crate::procs;
use crate::recording::{self, Publisher};
use crate::stats::{self, Summary};
use crate::Plan;

pub async fn run(plan: &Plan, dir: &Path) -> Result<(), String> {
    let rec = Arc::new(recording::record(&crate::recording_dir(dir), 6).await?);
    let (waiters, segments): (usize, u64) = if plan.quick { (20, 1) } else { (200, 3) };
    println!("\n## 4. LL-HLS wake-up\n");
    println!(
        "{waiters} clients, each on its own connection, blocked on the media playlist with _HLS_msn/_HLS_part \
         for the next part; then the part's chunk is uploaded. Time from its last byte leaving the uploader to \
         each complete playlist response, ms, over {} parts.\n",
        segments as usize * rec.segments[0].len()
    );
    println!(
        "| proto | waiters | responses | early | p50 | p99 | max |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for proto in [Proto::H1, Proto::H2Tls, Proto::H3] {
        match wake_up(proto, waiters, segments, &rec, &dir.join(format!("{proto:?}"))).await {
            Ok((mut samples, early)) => {
                let s = Summary::of(&mut samples);
                println!(
                    "| {} | {waiters} | {} | {early} | {} | {} | {} |",
                    proto.label(),
                    s.count,
                    stats::ms(s.p50),
                    stats::ms(s.p99),
                    stats::ms(s.max)
                );
            }
            Err(err) => println!("| {} | {waiters} | failed: {err} | | | | |", proto.label()),
        }
    }
    Ok(())
}

/// Returns the wake-up latencies and how many responses came before the part was sent (which
/// would mean the server did not block).
async fn wake_up(
    proto: Proto,
    waiters: usize,
    segments: u64,
    rec: &Arc<recording::Recording>,
    dir: &Path,
) -> Result<(Vec<Duration>, usize), String> {
    let server = procs::start_ldash(dir, &[]).await?;
    let publisher = Publisher::new(&server, "live", Arc::clone(rec)).await?;
    publisher.start(SystemTime::now()).await?;
    // Two segments in real time, so the stream has a live edge and a fixed part target.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut upload = publisher.open_first().await?;
    for n in 1..=2 {
        let next = publisher.open(n + 1);
        for chunk in rec.segment(n) {
            tick.tick().await;
            upload.send(chunk, None).await?;
        }
        upload.finish().await?;
        upload = next;
    }
    let route = "/ldash/download/live/stream.0.m3u8";
    let probe = server.connect(Proto::H1).await?;
    let offset = msn_offset(&probe, route).await?;

    let mut conns = Vec::with_capacity(waiters);
    for _ in 0..waiters {
        conns.push(server.connect(proto).await?);
    }
    // Warm every connection (and, over TLS, finish every handshake) before measuring.
    for conn in &conns {
        conn.get(route).send().await?.bytes().await?;
    }
    let mut samples = Vec::new();
    let mut early = 0;
    for n in 3..3 + segments {
        let next = publisher.open(n + 1);
        for (part, chunk) in rec.segment(n).into_iter().enumerate() {
            let target = format!("{route}?_HLS_msn={}&_HLS_part={part}", n as i64 + offset);
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
            // Every request has reached the server and is parked there (the part does not exist yet).
            wait_blocked(&server, waiters).await?;
            upload.send(chunk, None).await?;
            let sent = Instant::now();
            while let Some(joined) = blocked.join_next().await {
                let (status, at) = joined.map_err(|e| e.to_string())??;
                if status != 200 {
                    return Err(format!("blocking playlist request answered {status}"));
                }
                match at.checked_duration_since(sent) {
                    Some(d) => samples.push(d),
                    None => early += 1,
                }
            }
        }
        upload.finish().await?;
        upload = next;
    }
    Ok((samples, early))
}

/// Waits (bounded) until ldash counts `waiters` blocking playlist requests in progress.
pub(crate) async fn wait_blocked(server: &OriginProcess, waiters: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("ldash_hls_blocking_requests").await? < waiters as f64 {
        if Instant::now() > deadline {
            return Err("the blocking requests did not all reach the server within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Media sequence number minus segment number, read from the playlist.
pub(crate) async fn msn_offset(conn: &Client, route: &str) -> Result<i64, String> {
    let response = conn.get(route).send().await?;
    if response.status != 200 {
        return Err(format!("{route} answered {}", response.status));
    }
    let text = response.bytes().await?;
    let text = String::from_utf8_lossy(&text);
    let mut msn: Option<i64> = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v.trim().parse().ok();
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let number: i64 = line
                .rsplit('-')
                .next()
                .and_then(|t| t.split('.').next())
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| format!("unexpected segment URI {line:?}"))?;
            let current = msn.ok_or("no EXT-X-MEDIA-SEQUENCE before the first segment")?;
            return Ok(current - number);
        }
    }
    Err(format!("no segment in the playlist:\n{text}"))
}
