//! Item 2, live capacity: one real-time ingest at 4 Mbit/s (a recorded ffmpeg stream, 1 s segments
//! of 100 ms chunks) and N readers following the live edge, each on its own connection, fetching
//! every segment while it grows. A count passes when every reader receives every byte (SHA-256 of
//! each segment) and every chunk within 500 ms of its upload. The count doubles until one fails.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use testkit::client::Client;
use testkit::digest::{sha256_of, Sha256};
use testkit::{process, Origin, Proto};
use tokio::sync::{Notify, Semaphore};

use crate::procs;
use crate::recording::{self, Publisher, Recording, Written};
use crate::stats::{self, Summary};
use crate::Plan;

/// The bound a chunk must arrive within.
const LATE: Duration = Duration::from_millis(500);

struct Trial {
    /// Segments that did not arrive whole and exact, over all readers.
    broken: usize,
    late: usize,
    latency: Summary,
    cpu_percent: f64,
    /// The load generator's CPU (this process: the publisher and every reader), % of one core.
    load_percent: f64,
    rss: u64,
}

impl Trial {
    fn passed(&self) -> bool {
        self.broken == 0 && self.late == 0
    }
}

pub async fn run(plan: &Plan, dir: &Path) -> Result<(), String> {
    let rec = Arc::new(recording::record(&crate::recording_dir(dir), 6).await?);
    let (counts, segments): (&[usize], u64) = if plan.quick {
        (&[10, 20], 3)
    } else {
        (&[50, 100, 200, 400, 800, 1600, 3200], 8)
    };
    println!("\n## 2. Live capacity\n");
    println!(
        "One ingest of {:.1} Mbit/s (recorded ffmpeg x264 CBR, 1 s segments of {} chunks, replayed in real time \
         over HTTP/1.1), {segments} segments per trial; N readers follow the live edge, each on its own \
         connection. Pass: every segment's SHA-256 matches and every chunk arrives within 500 ms of its upload. \
         Latency: upload of a chunk to its last byte at the reader, ms. Server CPU and load CPU (this benchmark's \
         own process: the publisher and every reader, on the same two cores) are % of one core.\n",
        (rec.segment_bytes() * 8) as f64 / 1e6,
        rec.segments[0].len()
    );
    println!(
        "| proto | readers | result | broken segments | late chunks | p50 | p99 | max | server CPU | load CPU | server RSS MiB |"
    );
    println!("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for proto in [Proto::H2Tls, Proto::H3] {
        let mut best: Option<usize> = None;
        let mut tries: Vec<usize> = counts.to_vec();
        let (mut i, mut halved) = (0, false);
        while i < tries.len() {
            let n = tries[i];
            i += 1;
            let trial = trial(proto, n, segments, &rec, &dir.join(format!("{proto:?}-{n}"))).await?;
            println!(
                "| {} | {n} | {} | {} | {} | {} | {} | {} | {:.0}% | {:.0}% | {} |",
                proto.label(),
                if trial.passed() { "pass" } else { "FAIL" },
                trial.broken,
                trial.late,
                stats::ms(trial.latency.p50),
                stats::ms(trial.latency.p99),
                stats::ms(trial.latency.max),
                trial.cpu_percent,
                trial.load_percent,
                stats::mib(trial.rss)
            );
            if trial.passed() {
                best = best.max(Some(n));
                continue;
            }
            // Stop doubling; one more try halfway between the last pass and this failure.
            tries.truncate(i);
            if !halved {
                halved = true;
                if let Some(mid) = best.map(|b| (b + n) / 2).filter(|m| best.is_some_and(|b| *m > b)) {
                    tries.push(mid);
                }
            }
        }
        match best {
            Some(n) => println!("\n{}: {n} readers (the largest count that passed).\n", proto.label()),
            None => println!("\n{}: no tried count passed.\n", proto.label()),
        }
        if proto == Proto::H2Tls {
            println!("| proto | readers | result | broken segments | late chunks | p50 | p99 | max | server CPU | load CPU | server RSS MiB |");
            println!("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        }
    }
    Ok(())
}

async fn trial(proto: Proto, readers: usize, segments: u64, rec: &Arc<Recording>, dir: &Path) -> Result<Trial, String> {
    let server = procs::start_ldash(dir, &[]).await?;
    let chunks = rec.segments[0].len();
    let written = Written::new(segments as usize + 2, chunks);
    // What every reader must receive: chunk end offsets and the digest of each segment.
    let expect: Arc<Vec<Expected>> = Arc::new(
        (1..=segments)
            .map(|n| {
                let chunks = rec.segment(n);
                let ends = chunks
                    .iter()
                    .scan(0, |end, c| {
                        *end += c.len();
                        Some(*end)
                    })
                    .collect();
                (ends, sha256_of(&chunks))
            })
            .collect(),
    );
    let publisher = Publisher::new(&server, "live", Arc::clone(rec)).await?;
    publisher.start(SystemTime::now()).await?;
    let mut upload = publisher.open_first().await?;
    let probe = server.connect(Proto::H1).await?;
    crate::relay::wait_exists(&probe, "/ldash/download/live/chunk-stream0-00001.m4s").await?;

    // Connect every reader (bounded concurrency), then wait until each has segment 1's headers.
    let attached = Arc::new(AtomicUsize::new(0));
    let all_attached = Arc::new(Notify::new());
    let connecting = Arc::new(Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..readers {
        let (expect, written, attached, all_attached, connecting) = (
            Arc::clone(&expect),
            Arc::clone(&written),
            Arc::clone(&attached),
            Arc::clone(&all_attached),
            Arc::clone(&connecting),
        );
        let origin = Origin::clone(&server);
        tasks.spawn(async move {
            let conn = {
                let _permit = connecting.acquire().await.map_err(|e| e.to_string())?;
                origin.connect(proto).await?
            };
            follow(&conn, &expect, &written, || {
                if attached.fetch_add(1, Ordering::AcqRel) + 1 == readers {
                    all_attached.notify_one();
                }
            })
            .await
        });
    }
    let waiting = all_attached.notified();
    if attached.load(Ordering::Acquire) < readers {
        tokio::time::timeout(Duration::from_secs(120), waiting)
            .await
            .map_err(|_| format!("{readers} readers did not attach within 120 s"))?;
    }

    // The ingest, in real time: a chunk every 100 ms; the next segment opened before this one ends.
    let before = server.usage();
    let load_before = process::usage(std::process::id());
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for n in 1..=segments {
        let next = publisher.open(n + 1);
        for (i, chunk) in rec.segment(n).into_iter().enumerate() {
            tick.tick().await;
            upload.send(chunk, Some((&written, n, i))).await?;
        }
        upload.finish().await?;
        upload = next;
    }
    let mut latencies = Vec::new();
    let (mut broken, mut late) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline.into(), tasks.join_next()).await {
        match joined {
            Ok(Ok(result)) => {
                broken += result.broken;
                late += result.latencies.iter().filter(|d| **d > LATE).count();
                latencies.extend(result.latencies);
            }
            _ => broken += segments as usize,
        }
    }
    // Readers still running at the deadline never finished: all their segments count as broken.
    broken += tasks.len() * segments as usize;
    tasks.abort_all();
    let wall = started.elapsed().as_secs_f64();
    let after = server.usage();
    let load_after = process::usage(std::process::id());
    drop(upload);
    Ok(Trial {
        broken,
        late,
        latency: Summary::of(&mut latencies),
        cpu_percent: (after.cpu - before.cpu) / wall * 100.0,
        load_percent: (load_after.cpu - load_before.cpu) / wall * 100.0,
        rss: after.rss,
    })
}

/// A segment's chunk end offsets and SHA-256.
type Expected = (Vec<usize>, [u8; 32]);

struct Followed {
    broken: usize,
    latencies: Vec<Duration>,
}

/// Reads every expected segment as it grows; checks each against the recording.
async fn follow(
    conn: &Client,
    expect: &[Expected],
    written: &Written,
    mut on_attached: impl FnMut(),
) -> Result<Followed, String> {
    let mut out = Followed {
        broken: 0,
        latencies: Vec::new(),
    };
    for (n, (ends, digest)) in (1..).zip(expect) {
        let route = format!("/ldash/download/live/chunk-stream0-{n:05}.m4s");
        let mut body = conn.get(&route).send().await?;
        if n == 1 {
            on_attached();
        }
        if body.status != 200 {
            out.broken += 1;
            continue;
        }
        let mut received = Sha256::new();
        let mut next = 0;
        while let Ok(Some(data)) = body.chunk().await {
            let now = Instant::now();
            received.update(&data);
            let offset = received.len() as usize;
            while next < ends.len() && ends[next] <= offset {
                if let Some(at) = written.at(n, next) {
                    out.latencies.push(now.saturating_duration_since(at));
                }
                next += 1;
            }
        }
        if received.finish() != *digest {
            out.broken += 1;
        }
    }
    Ok(out)
}
