//! The play page in a real browser with the real encoder: Debian's headless Chromium (driven by
//! playwright-core from the npm registry, no browser download) plays what ffmpeg pushes, over HTTP/2
//! and over HTTP/3, with dash.js (LL-DASH) and hls.js (LL-HLS). The latencies measured are printed:
//! they are the numbers the benchmark will push down. Screenshots go under target/browser/.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::encoder::{ffmpeg_command, Ingest};
use common::{require_tool, Proto, TestServer};

#[derive(Debug, serde::Deserialize)]
struct Sample {
    at: u32,
    latency: Option<f64>,
    stalls: u32,
    protocol: Option<String>,
    #[serde(rename = "currentTime")]
    current_time: f64,
    error: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Run {
    #[serde(default)]
    samples: Vec<Sample>,
    #[serde(default)]
    console: Vec<String>,
    error: Option<String>,
}

fn player_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("player")
}

/// Whether the npm packages are installed (`npm ci --prefix player`); required in CI.
fn require_player_packages() -> bool {
    let installed = player_dir().join("node_modules/playwright-core").is_dir()
        && player_dir().join("node_modules/dashjs").is_dir()
        && player_dir().join("node_modules/hls.js").is_dir();
    if !installed {
        let required = std::env::var("LDASH_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "the player's npm packages are required: run npm ci --prefix player"
        );
        eprintln!("SKIPPED: player/node_modules is missing (npm ci --prefix player)");
    }
    installed
}

/// One browser run at a time: four encoders and four Chromiums at once starve a 2-core machine, and
/// the stalls measured would be the machine's, not the server's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn play(kind: &str, h3: bool) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (Some(ffmpeg), Some(node), Some(_)) = (require_tool("ffmpeg"), require_tool("node"), require_tool("chromium"))
    else {
        return;
    };
    if !require_player_packages() {
        return;
    }
    let server = TestServer::start_with(|c| c.player_dir = player_dir()).await;
    let url = server.url(Proto::H1, "/ldash/upload/live/stream.mpd");
    let mut encoder = ffmpeg_command(&ffmpeg, &url, Ingest::PutPersistent, 60)
        .spawn()
        .expect("ffmpeg starts");
    let mut events = server.store.subscribe();
    while server.store.get("live/chunk-stream0-00003.m4s").is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("ffmpeg reaches segment 3");
    }
    let port = server.https.port();
    let manifest = if kind == "hls" { "stream.m3u8" } else { "stream.mpd" };
    let page = format!("https://127.0.0.1:{port}/ldash/play/live/{manifest}");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser");
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let shot = shots.join(format!("{kind}-{}.png", if h3 { "h3" } else { "h2" }));
    let mut command = tokio::process::Command::new(node);
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/play.cjs"))
        .arg(player_dir())
        .arg(&page)
        .arg("20")
        .arg(&shot);
    if h3 {
        command
            .arg(format!("--origin-to-force-quic-on=127.0.0.1:{port}"))
            .arg(format!("--ignore-certificate-errors-spki-list={}", server.spki));
    }
    command.kill_on_drop(true).stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the browser run ends within 120 s")
        .expect("node runs");
    let _ = encoder.start_kill();
    let text = String::from_utf8_lossy(&output.stdout);
    let run: Run = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("driver output ({e}): {text}"));
    let case = format!("{kind} over {}", if h3 { "HTTP/3" } else { "HTTP/2" });
    assert!(
        run.error.is_none(),
        "{case}: the driver failed: {:?}\n{:?}",
        run.error,
        run.console
    );
    let last = run
        .samples
        .last()
        .unwrap_or_else(|| panic!("{case}: no statistics from the page: {:?}", run.console));
    assert!(
        last.error.is_none(),
        "{case}: the player reported {:?}; console: {:?}",
        last.error,
        run.console
    );
    // Plays at about real speed once started: over the last 5 s, at least 4 s of media.
    let earlier = run
        .samples
        .iter()
        .find(|s| s.at + 5 == last.at)
        .expect("a sample 5 s before the last");
    let advanced = last.current_time - earlier.current_time;
    assert!(
        advanced >= 4.0,
        "{case}: playback advanced {advanced:.2} s in 5 s; console: {:?}",
        run.console
    );
    assert!(last.stalls <= 1, "{case}: {} stalls", last.stalls);
    let latency = last.latency.unwrap_or(f64::MAX);
    println!("LATENCY {case}: {latency:.3} s (screenshot {})", shot.display());
    let bound = if kind == "hls" { 4.0 } else { 3.0 };
    assert!(latency < bound, "{case}: live latency {latency:.2} s is over {bound} s");
    let expected = if h3 { "h3" } else { "h2" };
    assert_eq!(
        last.protocol.as_deref(),
        Some(expected),
        "{case}: segment requests use {expected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dash_page_plays_at_low_latency_over_http2() {
    play("dash", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_page_plays_at_low_latency_over_http2() {
    play("hls", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dash_page_plays_over_http3() {
    play("dash", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_page_plays_over_http3() {
    play("hls", true).await;
}
