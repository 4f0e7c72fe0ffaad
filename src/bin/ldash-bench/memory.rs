//! Item 5, memory: ldash's resident memory under a 4 Mbit/s stream with a 30 s window (the encoder
//! deletes segments beyond it, as ffmpeg's `-window_size` does) and garbage collection on: after one
//! minute in real time, then after a simulated hour (the rest of the hour's segments replayed as fast
//! as they upload). Then the memory each reader attached to a growing segment costs.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use testkit::{OriginProcess, Proto};
use tokio::sync::Notify;

use crate::procs;
use crate::recording::{self, Publisher};
use crate::stats;
use crate::Plan;

const WINDOW: u64 = 30;
/// How much faster than real time the rest of the hour is replayed: fast enough to take minutes,
/// not so fast that a backlog of writes to disk (which real time never builds) is what is measured.
const SPEEDUP: u32 = 20;

pub async fn run(plan: &Plan, dir: &Path) -> Result<(), String> {
    let rec = Arc::new(recording::record(&crate::recording_dir(dir), 6).await?);
    let (realtime, total, readers) = if plan.quick { (5, 100, 50) } else { (60, 3600, 500) };
    println!("\n## 5. Memory\n");
    let server = procs::start_ldash(dir, &["--ttl", "60"]).await?;
    let publisher = Publisher::new(&server, "live", Arc::clone(&rec)).await?;
    let start = SystemTime::now();
    publisher.start(start).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut fast = tokio::time::interval(Duration::from_millis(100) / SPEEDUP);
    let mut upload = publisher.open_first().await?;
    let mut after_minute = 0;
    // RSS every tenth of the run after the first minute: a leak grows steadily, a one-off step does not.
    let mut samples = Vec::new();
    for n in 1..=total {
        let next = publisher.open(n + 1);
        for chunk in rec.segment(n) {
            if n <= realtime {
                tick.tick().await;
            } else {
                fast.tick().await;
            }
            upload.send(chunk, None).await?;
        }
        upload.finish().await?;
        upload = next;
        publisher.manifest(start).await?;
        if n > WINDOW {
            publisher.delete(n - WINDOW).await?;
        }
        if n == realtime {
            after_minute = server.usage().rss;
        } else if n > realtime && n % (total / 10).max(1) == 0 && n != total {
            samples.push((n, server.usage().rss));
        }
    }
    let after_hour = server.usage().rss;
    println!(
        "A {:.1} Mbit/s stream (1 s segments), window {WINDOW} segments, `--ttl 60`: {realtime} segments in real \
         time, then up to {total} segments ({:.1} GB) at {SPEEDUP}x real time.\n",
        (rec.segment_bytes() * 8) as f64 / 1e6,
        (rec.segment_bytes() as u64 * total) as f64 / 1e9
    );
    println!("| after | segments | server RSS MiB |\n| --- | ---: | ---: |");
    println!(
        "| {realtime} s (real time) | {realtime} | {} |",
        stats::mib(after_minute)
    );
    for (n, rss) in samples {
        println!("| {n} s (simulated) | {n} | {} |", stats::mib(rss));
    }
    println!("| {total} s (simulated) | {total} | {} |", stats::mib(after_hour));
    println!(
        "\nRatio after the simulated hour / after the first minute: {:.2} (target at most 1.2).\n",
        after_hour as f64 / after_minute.max(1) as f64
    );

    println!("Memory per reader attached to a growing segment ({readers} readers on their own connections):\n");
    println!(
        "| proto | readers | RSS before MiB | RSS attached MiB | KiB per reader |\n| --- | ---: | ---: | ---: | ---: |"
    );
    for (n, proto) in (total + 1..).zip([Proto::H1, Proto::H2Tls, Proto::H3]) {
        let next = publisher.open(n + 1);
        let first = rec.segment(n);
        upload.send(first[0].clone(), None).await?;
        let (before, attached) = per_reader(&server, proto, readers, n).await?;
        for chunk in first.into_iter().skip(1) {
            upload.send(chunk, None).await?;
        }
        upload.finish().await?;
        upload = next;
        println!(
            "| {} | {readers} | {} | {} | {:.1} |",
            proto.label(),
            stats::mib(before),
            stats::mib(attached),
            attached.saturating_sub(before) as f64 / 1024.0 / readers as f64
        );
    }
    drop(upload);
    Ok(())
}

/// RSS before and after `readers` readers have attached to growing segment `n` (each has its first
/// chunk); the readers stay attached until the segment completes.
async fn per_reader(server: &OriginProcess, proto: Proto, readers: usize, n: u64) -> Result<(u64, u64), String> {
    let route = format!("/ldash/download/live/chunk-stream0-{n:05}.m4s");
    let before = server.usage().rss;
    let attached = Arc::new(AtomicUsize::new(0));
    let all = Arc::new(Notify::new());
    for _ in 0..readers {
        let conn = server.connect(proto).await?;
        let (route, attached, all) = (route.clone(), Arc::clone(&attached), Arc::clone(&all));
        tokio::spawn(async move {
            let Ok(mut body) = conn.get(&route).send().await else {
                return;
            };
            if body.status != 200 {
                return;
            }
            let mut first = true;
            while let Ok(Some(_)) = body.chunk().await {
                if std::mem::take(&mut first) && attached.fetch_add(1, Ordering::AcqRel) + 1 == readers {
                    all.notify_one();
                }
            }
        });
    }
    let waiting = all.notified();
    if attached.load(Ordering::Acquire) < readers {
        tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .map_err(|_| "readers did not attach within 60 s")?;
    }
    Ok((before, server.usage().rss))
}
