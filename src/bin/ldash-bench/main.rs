//! ldash-bench: measures what ldash exists for, the delay between a byte arriving from the encoder
//! and the same byte leaving for every player, and how many players one machine carries. It starts
//! the servers it measures itself, each in a process of its own, on loopback, and prints Markdown
//! tables for BENCHMARKS.md.
//!
//! ```text
//! cargo run --release --features bench --bin ldash-bench -- [--quick] [--only relay,capacity,fanout,hls,memory,glass,dvr]
//! cargo run --release --features bench --bin ldash-bench -- --only glass --net rtt100-loss2-jitter10
//! ```
//!
//! `--net PROFILE` plays the glass-to-glass item through a shaped network path (the test kit's
//! netpath: Chromium in a network namespace of its own, delay, jitter, loss and rate added by a
//! user-space relay; needs root and /dev/net/tun): `clean`, `rtt50-loss1`,
//! `rtt100-loss2-jitter10` or `mobile`.
//!
//! `ldash-bench serve ROOT [OPTIONS]` is the server side (ldash's library with ldash's options), which
//! the benchmark starts as a child process; `ldash-bench clock [OPTIONS]` is `ldash-clock` (the
//! glass-to-glass source), which `cargo run --bin ldash-bench` does not build. Clients, launchers,
//! the encoder and the metrics scrape are the test kit's (testkit/), shared with the tests.

mod capacity;
// The same source file as the `ldash-clock` binary.
mod clients;
#[path = "../ldash-clock.rs"]
mod clock;
mod dvr;
mod fanout;
mod glass;
mod hls;
mod memory;
mod procs;
mod recording;
mod relay;
mod stats;

use std::process::ExitCode;

use testkit::{OriginProcess, Proto};

/// What a run measures, and how much of it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    only: Option<Vec<String>>,
    /// Relay: reader counts and chunk sizes instead of the defaults (for profiling one case).
    readers: Option<Vec<usize>>,
    sizes: Option<Vec<usize>>,
    /// Glass-to-glass: chunk durations (seconds) instead of the defaults.
    chunks: Option<Vec<f64>>,
    /// Glass-to-glass: the shaped network path's profile the players play through.
    net: Option<testkit::netpath::Profile>,
    /// Glass-to-glass: ldash option sets compared side by side in one run (`--servers
    /// "--part-target-ms 0|--part-target-ms 300"`), each case once per set; one empty set by default.
    servers: Vec<Vec<String>>,
    /// Glass-to-glass: only these players (`hlsjs-hls,shaka-hls`), all by default.
    players: Option<Vec<String>>,
    /// Glass-to-glass: play page query strings compared side by side (`--page
    /// "latency=0.3|latency=0.5"`), each case once per query; the page's defaults by default.
    pages: Vec<String>,
}

impl Plan {
    fn wants(&self, item: &str) -> bool {
        self.only.as_ref().is_none_or(|items| items.iter().any(|i| i == item))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("ldash-bench: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match args.first().map(String::as_str) {
        Some("serve") => return runtime.block_on(procs::serve(args[1..].to_vec())),
        // Its own name first, as a program's arguments come.
        Some("clock") => return clock::run(std::env::args_os().skip(1)),
        _ => {}
    }
    let mut plan = Plan {
        quick: false,
        only: None,
        readers: None,
        sizes: None,
        chunks: None,
        net: None,
        servers: vec![Vec::new()],
        players: None,
        pages: vec![String::new()],
    };
    let numbers = |v: Option<&String>| v.map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => plan.quick = true,
            "--only" => plan.only = it.next().map(|v| v.split(',').map(str::to_owned).collect()),
            "--readers" => plan.readers = numbers(it.next()),
            "--sizes" => plan.sizes = numbers(it.next()),
            "--chunks" => {
                plan.chunks = it.next().map(|v| {
                    v.split(',')
                        .filter_map(|n| n.parse().ok())
                        .filter(|c| *c > 0.0)
                        .collect()
                })
            }
            "--net" => {
                let name = it.next().map(String::as_str).unwrap_or_default();
                let Some(profile) = testkit::netpath::Profile::named(name) else {
                    eprintln!(
                        "ldash-bench: --net takes one of {} (not {name:?})",
                        testkit::netpath::Profile::NAMES.join(", ")
                    );
                    return ExitCode::FAILURE;
                };
                plan.net = Some(profile);
            }
            "--servers" => {
                plan.servers = it
                    .next()
                    .map(|v| {
                        v.split('|')
                            .map(|set| set.split_whitespace().map(str::to_owned).collect())
                            .collect()
                    })
                    .unwrap_or_default();
            }
            "--players" => plan.players = it.next().map(|v| v.split(',').map(str::to_owned).collect()),
            "--page" => {
                plan.pages = it
                    .next()
                    .map(|v| v.split('|').map(str::to_owned).collect())
                    .unwrap_or_default()
            }
            "-h" | "--help" => {
                println!(
                    "usage: ldash-bench [--quick] [--only relay,capacity,fanout,hls,memory,glass,dvr] \\\n  \
                     [--readers 1,100] [--sizes 1024,65536] (relay cases) [--chunks 0.2,0.1] (glass cases) \\\n  \
                     [--net clean|rtt50-loss1|rtt100-loss2-jitter10|mobile] (glass through a shaped path) \\\n  \
                     [--servers \"--part-target-ms 0|--part-target-ms 300\"] (ldash option sets side by side) \\\n  \
                     [--players dashjs-dash,shaka-dash,hlsjs-hls,shaka-hls] \\\n  \
                     [--page \"latency=0.3|latency=0.5\"] (play page queries side by side)"
                );
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("ldash-bench: unknown argument {other:?} (try --help)");
                return ExitCode::FAILURE;
            }
        }
    }
    let failed = runtime.block_on(run(plan));
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("ldash-bench: {failed} item(s) failed");
        ExitCode::FAILURE
    }
}

/// Where the ffmpeg recording is kept for every item of a run (beside the items' own folders).
pub fn recording_dir(item_dir: &std::path::Path) -> std::path::PathBuf {
    item_dir.parent().unwrap_or(item_dir).join("recording")
}

/// Runs every wanted item; returns how many failed to run (a missed target is not a failure).
async fn run(plan: Plan) -> usize {
    let work = std::env::temp_dir().join(format!("ldash-bench-{}", std::process::id()));
    println!("# ldash-bench{}", if plan.quick { " --quick" } else { "" });
    println!();
    println!("{}", machine());
    let mut failed = 0;
    let mut item = |name: &str, result: Result<(), String>| {
        if let Err(err) = result {
            println!("\n**{name} failed: {err}**\n");
            failed += 1;
        }
    };
    if plan.wants("relay") {
        item("relay", relay_table(&plan, &work.join("relay")).await);
    }
    if plan.wants("capacity") {
        item("capacity", capacity::run(&plan, &work.join("capacity")).await);
    }
    if plan.wants("fanout") {
        item("fanout", fanout::run(&plan, &work.join("fanout")).await);
    }
    if plan.wants("hls") {
        item("hls", hls::run(&plan, &work.join("hls")).await);
    }
    if plan.wants("memory") {
        item("memory", memory::run(&plan, &work.join("memory")).await);
    }
    if plan.wants("glass") {
        item("glass", glass::run(&plan, &work.join("glass")).await);
    }
    if plan.wants("dvr") {
        item("dvr", dvr::run(&plan, &work.join("dvr")).await);
    }
    let _ = std::fs::remove_dir_all(&work);
    failed
}

/// ldash's relay-delay histogram: deliveries within 1 ms, within 2.5 ms, and all.
async fn relay_histogram(server: &OriginProcess) -> Option<[f64; 3]> {
    let scrape = server.scrape().await.ok()?;
    let bucket = |le: &str| scrape.value(&format!("ldash_relay_delay_seconds_bucket{{le=\"{le}\"}}"));
    Some([
        bucket("0.001")?,
        bucket("0.0025")?,
        scrape.value("ldash_relay_delay_seconds_count")?,
    ])
}

/// Cores, memory, kernel and date, for the record.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0.0, |kb| kb as f64 / (1024.0 * 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    format!(
        "Machine: {cores} cores, {mem:.0} GiB, Linux {}; {date}. Servers and load run on the same machine, over loopback.",
        kernel.trim()
    )
}

async fn relay_table(plan: &Plan, dir: &std::path::Path) -> Result<(), String> {
    let (readers, sizes, chunks): (&[usize], &[usize], usize) = if plan.quick {
        (&[1, 10], &[1024], 100)
    } else {
        (&[1, 100, 1000], &[1024, 65536], 500)
    };
    let readers = plan.readers.as_deref().unwrap_or(readers);
    let sizes = plan.sizes.as_deref().unwrap_or(sizes);
    println!("\n## 1. Relay latency\n");
    println!(
        "A chunk every 10 ms ({chunks} chunks) into a growing file; every reader on its own connection; \
         time from write (uploader) to read (reader), in ms. \"server ≤1 ms\" is ldash's own view from its \
         ldash_relay_delay_seconds histogram: the share of chunk deliveries handed to the transport within \
         1 ms (and 2.5 ms) of their append, which leaves out the sockets and both clients.\n"
    );
    println!(
        "| proto | readers | chunk | offered Mbit/s | p50 | p99 | max | server ≤1 ms | server ≤2.5 ms |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let server = procs::start_ldash(dir, &[]).await?;
    let mut id = 0;
    for &chunk in sizes {
        for &n in readers {
            for proto in [None, Some(Proto::H1), Some(Proto::H2c), Some(Proto::H3)] {
                if proto.is_none() && n > 1 {
                    continue; // the floor is one socket pair
                }
                id += 1;
                let case = relay::Case {
                    proto,
                    readers: n,
                    chunk,
                    chunks,
                };
                let label = proto.map_or("TCP floor", Proto::label);
                // What the readers ask of the server together: chunk bytes x 100 a second x readers.
                let offered = (chunk * 100 * n * 8) as f64 / 1e6;
                let before = relay_histogram(&server).await;
                let result = relay::run(case, &server, id).await;
                let after = relay_histogram(&server).await;
                let share = |i: usize| match (before, after) {
                    (Some(b), Some(a)) if proto.is_some() && a[2] > b[2] => {
                        format!("{:.1}%", (a[i] - b[i]) / (a[2] - b[2]) * 100.0)
                    }
                    _ => "-".to_owned(),
                };
                match result {
                    Ok(s) => println!(
                        "| {label} | {n} | {} KB | {offered:.1} | {} | {} | {} | {} | {} |",
                        chunk / 1024,
                        stats::ms(s.p50),
                        stats::ms(s.p99),
                        stats::ms(s.max),
                        share(0),
                        share(1)
                    ),
                    Err(err) => println!(
                        "| {label} | {n} | {} KB | {offered:.1} | failed: {err} | | | | |",
                        chunk / 1024
                    ),
                }
            }
        }
    }
    Ok(())
}
