//! Item 6, glass-to-glass: what a viewer sees. ffmpeg encodes a source whose every frame carries its
//! capture time ([`ldash::media::clock`]), ldash serves it, and headless Chromium plays the play page
//! with each player over HTTP/2 and HTTP/3 while the page reads the capture time back from the
//! pixels (tests/browser/play.cjs drives it). Beside it: the player's own latency figure, which leaves
//! out capture and encoding, and the player's forward buffer, which is where most of the rest goes.
//! With `--net PROFILE` Chromium plays from the far end of a shaped network path (the test kit's
//! netpath), and the frozen picture time and seeks tell a player that jumps from one that plays.

use std::path::Path;
use std::time::{Duration, Instant};

use testkit::browser::{Driver, DriverRun};
use testkit::encoder::{clock_encoder, Dash, Ingest, Source, Video};
use testkit::netpath::{NetPath, OpenError};
use testkit::tools::{tools_required, which};
use testkit::{OriginProcess, Proto};

use crate::procs;
use crate::Plan;

/// The players the play page offers, as (engine, format).
const PLAYERS: [(&str, &str); 4] = [
    ("dashjs", "dash"),
    ("shaka", "dash"),
    ("hlsjs", "hls"),
    ("shaka", "hls"),
];

pub async fn run(plan: &Plan, dir: &Path) -> Result<(), String> {
    println!("\n## 6. Glass-to-glass latency in real players\n");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (Some(ffmpeg), Some(_), Some(driver)) = (
        which("ffmpeg"),
        which("chromium"),
        which("node").and_then(|node| Driver::in_repo(repo, node)),
    ) else {
        if tools_required() {
            return Err("needs ffmpeg, node, chromium and npm ci --prefix player".into());
        }
        println!("Skipped: needs ffmpeg, node, Chromium and `npm ci --prefix player`.");
        return Ok(());
    };
    let (warmup, measured, chunks): (u32, u32, &[f64]) = match (plan.quick, &plan.net) {
        (true, _) => (6, 10, &[0.1]),
        // Through a shaped path, the chunk the issue measured with unless --chunks says otherwise.
        (false, Some(_)) => (10, 30, &[0.1]),
        (false, None) => (10, 30, &[0.2, 0.1, 0.05]),
    };
    let chunks = plan.chunks.as_deref().unwrap_or(chunks);
    let path = match &plan.net {
        None => None,
        Some(profile) => match NetPath::open(profile.clone()) {
            Ok(path) => Some(path),
            Err(OpenError::Unavailable(why)) if !tools_required() => {
                println!("Skipped: a shaped network path needs root and /dev/net/tun ({why}).");
                return Ok(());
            }
            Err(err) => return Err(err.to_string()),
        },
    };
    println!(
        "ldash-clock frames ({} at {} fps, capture time as a barcode) encoded by ffmpeg (x264 ultrafast, \
         zerolatency, 1 s segments of the chunk duration shown, plus AAC), served by ldash, played by the play \
         page in headless Chromium, which reads each frame's capture time from its pixels. {warmup} s to settle, \
         then {measured} s measured; encoder, ldash and Chromium share the machine. \"player\" is the player's own \
         latency figure, \"buffer\" its forward buffer (p50 of the per-second samples), \"frozen\" the seconds in which \
         the picture stood still (the capture time shown did not change for more than 3 frame intervals; whole \
         intervals counted), \"seeks\" the player's jumps.\n",
        testkit::encoder::SIZE,
        testkit::encoder::FPS
    );
    if let Some(path) = &path {
        println!(
            "Through a shaped network path: {}. Chromium runs in a network namespace of its own and reaches ldash at \
             {} through a user-space relay (the test kit's netpath) that delays, jitters and drops every packet of \
             the player each way; the encoder pushes over loopback, unshaped.\n",
            path.profile().describe(),
            path.server_addr()
        );
    }
    println!(
        "| chunk | ldash options | player | format | HTTP | glass-to-glass p50 | p95 | player p50 | buffer p50 | stalls | frozen | seeks | errors |\n\
         | ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    let players = PLAYERS.iter().filter(|(engine, format)| {
        plan.players
            .as_ref()
            .is_none_or(|only| only.iter().any(|p| *p == format!("{engine}-{format}")))
    });
    for &chunk in chunks {
        for &(engine, format) in players.clone() {
            for h3 in [false, true] {
                // The option sets one after the other for each case, so that they see the same machine.
                let sets = plan.servers.iter().flat_map(|o| plan.pages.iter().map(move |q| (o, q)));
                for (n, (options, query)) in sets.enumerate() {
                    let mut shown = options.join(" ");
                    if !query.is_empty() {
                        shown = format!("{shown} page ?{query}").trim().to_owned();
                    }
                    if shown.is_empty() {
                        shown = "defaults".to_owned();
                    }
                    let row = case(
                        &dir.join(format!("set{n}")),
                        (&ffmpeg, &driver, path.as_ref()),
                        (chunk, options),
                        (engine, format, query),
                        h3,
                        (warmup, measured),
                    )
                    .await;
                    let proto = if h3 { "HTTP/3" } else { "HTTP/2" };
                    let fmt = if format == "hls" { "LL-HLS" } else { "LL-DASH" };
                    match row {
                        Ok(r) => {
                            let s = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} s"));
                            let last = r.samples.last();
                            let errors: Vec<String> = r
                                .failed
                                .iter()
                                .cloned()
                                .chain(last.and_then(|l| l.error.clone()))
                                .collect();
                            println!(
                            "| {chunk} s | {shown} | {engine} | {fmt} | {proto} | {} | {} | {} | {} | {} | {} | {} | {} |",
                            s(r.summary.glass_p50),
                            s(r.summary.glass_p95),
                            s(r.summary.player_p50),
                            s(r.summary.buffer_p50),
                            last.map_or(0, |l| l.stalls),
                            s(r.summary.frozen_s),
                            r.summary.seeks,
                            if errors.is_empty() {
                                "none".to_owned()
                            } else {
                                errors.join("; ")
                            }
                        );
                        }
                        Err(err) => {
                            println!(
                                "| {chunk} s | {shown} | {engine} | {fmt} | {proto} | failed: {err} | | | | | | | |"
                            )
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// One row: `engine` playing `format` over HTTP/2 or HTTP/3 (`h3`) of a clock source with
/// `chunk`-second chunks, from a fresh ldash; from the far end of `path` when there is one.
async fn case(
    dir: &Path,
    (ffmpeg, driver, path): (&Path, &Driver, Option<&NetPath>),
    (chunk, extra): (f64, &[String]),
    (engine, format, query): (&str, &str, &str),
    h3: bool,
    (warmup, measured): (u32, u32),
) -> Result<DriverRun, String> {
    // No player folder: the libraries built into the binary, as users get them.
    let root = dir.join(format!("{engine}-{format}-{chunk}-{h3}"));
    let no_player = root.join("no-player-dir").to_string_lossy().into_owned();
    // TLS and QUIC where the path's far end reaches this namespace; cleartext (the encoder) on loopback.
    let host = path.map_or("127.0.0.1".to_owned(), |p| p.server_addr().to_string());
    let https = format!("{host}:0");
    let mut options = vec!["--player-dir", &no_player];
    if path.is_some() {
        options.extend(["--https", &https]);
    }
    options.extend(extra.iter().map(String::as_str));
    let server = procs::start_ldash(&root, &options).await?;
    let url = server.url(Proto::H1, "/ldash/upload/live/stream.mpd");
    // The tests' encoder with one video rendition, from the clock.
    let dash = Dash {
        source: Source::Clock,
        video: Video::One("800k"),
        chunk,
        loglevel: "error",
        ..Dash::test_stream(&url, Ingest::PutPersistent, warmup + measured + 40)
    };
    let mut clock = std::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    clock.arg("clock");
    let _encoder = clock_encoder(clock, ffmpeg, &dash)?;
    wait_for_segment(&server, 3).await?;
    let port = server.https.port();
    let manifest = if format == "hls" { "stream.m3u8" } else { "stream.mpd" };
    let mut page = format!("https://{host}:{port}/ldash/play/live/{manifest}?engine={engine}");
    if !query.is_empty() {
        page = format!("{page}&{query}");
    }
    let shot = dir.join(format!("{engine}-{format}.png"));
    let mut flags = Vec::new();
    if h3 {
        flags.push(format!("--origin-to-force-quic-on={host}:{port}"));
        flags.push(format!("--ignore-certificate-errors-spki-list={}", server.spki));
    }
    let prefix = path.map(NetPath::exec_prefix).unwrap_or_default();
    driver
        .play_behind(&prefix, &page, (warmup, measured), &shot, &flags)
        .await
}

/// Waits until segment `n` of the first video rendition is complete, with a blocking LL-HLS reload
/// (held by ldash until then, 503 after its bound: asked again).
async fn wait_for_segment(server: &OriginProcess, n: u64) -> Result<(), String> {
    let client = server.connect(Proto::H1).await?;
    let route = format!("/ldash/download/live/stream.0.m3u8?_HLS_msn={n}");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let sent = tokio::time::timeout(Duration::from_secs(10), client.get(&route).send()).await;
        if let Ok(Ok(response)) = sent {
            match response.status {
                200..=299 => return Ok(()),
                status @ 400..=499 if status != 404 => return Err(format!("the playlist answered {status}")),
                _ => {}
            }
        }
        // Not there yet (404 before the first MPD): the encoder is starting.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("segment {n} did not arrive within 30 s"))
}
