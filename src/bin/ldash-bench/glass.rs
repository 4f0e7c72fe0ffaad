//! Item 6, glass-to-glass: what a viewer sees. ffmpeg encodes a source whose every frame carries its
//! capture time ([`ldash::media::clock`]), ldash serves it, and headless Chromium plays the play page
//! with each player over HTTP/2 and HTTP/3 while the page reads the capture time back from the
//! pixels (tests/browser/play.cjs drives it). Beside it: the player's own latency figure, which leaves
//! out capture and encoding, and the player's forward buffer, which is where most of the rest goes.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use ldash::media::clock::Frames;
use tokio::process::Command;

use crate::procs::{self, which};
use crate::Plan;

const SIZE: (usize, usize) = (640, 360);
const FPS: u32 = 30;

/// The players the play page offers, as (engine, format).
const PLAYERS: [(&str, &str); 4] = [
    ("dashjs", "dash"),
    ("shaka", "dash"),
    ("hlsjs", "hls"),
    ("shaka", "hls"),
];

#[derive(Debug, Default, serde::Deserialize)]
struct Summary {
    glass_p50: Option<f64>,
    glass_p95: Option<f64>,
    player_p50: Option<f64>,
    buffer_p50: Option<f64>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Sample {
    stalls: u32,
    error: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Run {
    #[serde(default)]
    samples: Vec<Sample>,
    #[serde(default)]
    summary: Summary,
    #[serde(default)]
    failed: Vec<String>,
    error: Option<String>,
}

pub async fn run(plan: &Plan, dir: &Path) -> Result<(), String> {
    println!("\n## 6. Glass-to-glass latency in real players\n");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let player_dir = manifest.join("player");
    let tools = [which("ffmpeg"), which("node"), which("chromium")];
    if tools.iter().any(Option::is_none) || !player_dir.join("node_modules/playwright-core").is_dir() {
        if crate::tools_required() {
            return Err("needs ffmpeg, node, chromium and npm ci --prefix player".into());
        }
        println!("Skipped: needs ffmpeg, node, Chromium and `npm ci --prefix player`.");
        return Ok(());
    }
    let (warmup, measured, chunks): (u32, u32, &[f64]) = if plan.quick {
        (6, 10, &[0.1])
    } else {
        (10, 30, &[0.2, 0.1, 0.05])
    };
    let chunks = plan.chunks.as_deref().unwrap_or(chunks);
    println!(
        "ldash-clock frames ({}x{} at {FPS} fps, capture time as a barcode) encoded by ffmpeg (x264 ultrafast, \
         zerolatency, 1 s segments of the chunk duration shown, plus AAC), served by ldash, played by the play \
         page in headless Chromium, which reads each frame's capture time from its pixels. {warmup} s to settle, \
         then {measured} s measured; encoder, ldash and Chromium share the machine. \"player\" is the player's own \
         latency figure, \"buffer\" its forward buffer (p50 of the per-second samples).\n",
        SIZE.0, SIZE.1
    );
    println!(
        "| chunk | player | format | HTTP | glass-to-glass p50 | p95 | player p50 | buffer p50 | stalls | errors |\n\
         | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for &chunk in chunks {
        for (engine, format) in PLAYERS {
            for h3 in [false, true] {
                let row = case(dir, &player_dir, chunk, engine, format, h3, warmup, measured).await;
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
                            .chain(r.error.clone())
                            .collect();
                        println!(
                            "| {chunk} s | {engine} | {fmt} | {proto} | {} | {} | {} | {} | {} | {} |",
                            s(r.summary.glass_p50),
                            s(r.summary.glass_p95),
                            s(r.summary.player_p50),
                            s(r.summary.buffer_p50),
                            last.map_or(0, |l| l.stalls),
                            if errors.is_empty() {
                                "none".to_owned()
                            } else {
                                errors.join("; ")
                            }
                        );
                    }
                    Err(err) => println!("| {chunk} s | {engine} | {fmt} | {proto} | failed: {err} | | | | | |"),
                }
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn case(
    dir: &Path,
    player_dir: &Path,
    chunk: f64,
    engine: &str,
    format: &str,
    h3: bool,
    warmup: u32,
    measured: u32,
) -> Result<Run, String> {
    // No player folder: the libraries built into the binary, as users get them.
    let root = dir.join(format!("{engine}-{format}-{chunk}-{h3}"));
    let no_player = root.join("no-player-dir").to_string_lossy().into_owned();
    let server = procs::start_ldash(&root, &["--player-dir", &no_player]).await?;
    let seconds = warmup + measured + 40;
    let mut encoder = encoder(
        &format!("http://{}/ldash/upload/live/stream.mpd", server.http),
        chunk,
        seconds,
    )?;
    let result = async {
        wait_for_segment(&server, 3).await?;
        let port = server.https.port();
        let manifest = if format == "hls" { "stream.m3u8" } else { "stream.mpd" };
        let page = format!("https://127.0.0.1:{port}/ldash/play/live/{manifest}?engine={engine}");
        let shot = dir.join(format!("{engine}-{format}.png"));
        let mut command = Command::new("node");
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/play.cjs"))
            .arg(player_dir)
            .arg(&page)
            .arg(warmup.to_string())
            .arg(measured.to_string())
            .arg(&shot);
        if h3 {
            let spki = ldash::transport::tls::Identity::load(Some(&server.cert_pem), Some(&server.key_pem), dir)
                .map_err(|e| e.to_string())?
                .spki_sha256()
                .to_owned();
            command
                .arg(format!("--origin-to-force-quic-on=127.0.0.1:{port}"))
                .arg(format!("--ignore-certificate-errors-spki-list={spki}"));
        }
        command.kill_on_drop(true).stdin(Stdio::null()).stderr(Stdio::null());
        let output = tokio::time::timeout(Duration::from_secs(u64::from(warmup + measured) + 90), command.output())
            .await
            .map_err(|_| "the browser run did not end".to_owned())?
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str::<Run>(text.trim()).map_err(|e| format!("driver output ({e}): {text}"))
    }
    .await;
    encoder.stop();
    result
}

/// Waits until segment `n` of the first video rendition is complete, with a blocking LL-HLS reload
/// (held by ldash until then, 503 after its bound: asked again).
async fn wait_for_segment(server: &procs::Ldash, n: u64) -> Result<(), String> {
    let client = crate::clients::reqwest_client(crate::clients::Proto::H1, &server.cert_pem)?;
    let url = format!("http://{}/ldash/download/live/stream.0.m3u8?_HLS_msn={n}", server.http);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let sent = tokio::time::timeout(Duration::from_secs(10), client.get(&url).send()).await;
        if let Ok(Ok(response)) = sent {
            if response.status().is_success() {
                return Ok(());
            }
            if response.status().is_client_error() && response.status() != reqwest::StatusCode::NOT_FOUND {
                return Err(format!("the playlist answered {}", response.status()));
            }
        }
        // Not there yet (404 before the first MPD): the encoder is starting.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("segment {n} did not arrive within 30 s"))
}

/// ffmpeg fed by a thread that paints clock frames at the frame rate.
struct Encoder {
    ffmpeg: tokio::process::Child,
    painter: Option<std::thread::JoinHandle<()>>,
}

impl Encoder {
    fn stop(&mut self) {
        let _ = self.ffmpeg.start_kill();
        if let Some(painter) = self.painter.take() {
            let _ = painter.join();
        }
    }
}

fn encoder(url: &str, chunk: f64, seconds: u32) -> Result<Encoder, String> {
    let size = format!("{}x{}", SIZE.0, SIZE.1);
    let mut command = Command::new("ffmpeg");
    command.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
    ]);
    command.args(["-video_size", &size, "-framerate", &FPS.to_string(), "-i", "pipe:0"]);
    command.args(["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
    command.args(["-t", &seconds.to_string(), "-map", "0:v", "-map", "1:a"]);
    command.args([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        "30",
    ]);
    command.args(["-keyint_min", "30", "-sc_threshold", "0", "-bf", "0", "-b:v", "800k"]);
    command.args([
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-f",
        "dash",
        "-ldash",
        "1",
        "-streaming",
        "1",
    ]);
    command.args(["-use_template", "1", "-use_timeline", "0", "-seg_duration", "1"]);
    command.args(["-frag_type", "duration", "-frag_duration", &chunk.to_string()]);
    command.args([
        "-adaptation_sets",
        "id=0,streams=v id=1,streams=a",
        "-format_options",
        "movflags=cmaf",
    ]);
    command.args(["-window_size", "5", "-extra_window_size", "2", "-method", "PUT"]);
    command.args(["-http_persistent", "1", "-http_opts", "tcp_nodelay=1", url]);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut ffmpeg = command.spawn().map_err(|e| format!("cannot start ffmpeg: {e}"))?;
    let stdin = ffmpeg.stdin.take().ok_or("no stdin for ffmpeg")?;
    let mut pipe = stdin
        .into_owned_fd()
        .map(std::fs::File::from)
        .map_err(|e| e.to_string())?;
    let frames = Frames::new(SIZE.0, SIZE.1).ok_or("bad frame size")?;
    let painter = std::thread::spawn(move || {
        let mut frame = vec![0u8; frames.frame_len()];
        let interval = Duration::from_secs(1) / FPS;
        let started = Instant::now();
        for number in 0..u64::from(seconds) * u64::from(FPS) {
            let due = started + interval * number as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let stamp = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            frames.paint(&mut frame, number, stamp);
            if pipe.write_all(&frame).is_err() {
                break;
            }
        }
    });
    Ok(Encoder {
        ffmpeg,
        painter: Some(painter),
    })
}
