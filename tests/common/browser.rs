//! The browser driver (tests/browser/play.cjs: playwright-core driving Debian's headless Chromium on
//! the play page) and what it reports, for every test that plays the page.

use std::path::Path;
use std::time::Duration;

/// One second's statistics from the page (`window.ldash.stats`).
#[derive(Debug, serde::Deserialize)]
pub struct Sample {
    /// Seconds since the measurement started.
    pub at: u32,
    /// The player's own latency figure.
    pub latency: Option<f64>,
    /// Stalls since the measurement started.
    pub stalls: u32,
    /// The HTTP version of the latest segment request (`h2`, `h3`).
    pub protocol: Option<String>,
    #[serde(rename = "currentTime")]
    pub current_time: f64,
    pub error: Option<String>,
}

/// The glass-to-glass figures read from the frames, and the player's own.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Summary {
    pub glass_p50: Option<f64>,
    pub glass_p95: Option<f64>,
    pub glass_reads: usize,
    pub glass_misses: usize,
    pub player_p50: Option<f64>,
}

/// What one run of the driver printed.
#[derive(Debug, serde::Deserialize)]
pub struct DriverRun {
    #[serde(default)]
    pub samples: Vec<Sample>,
    #[serde(default)]
    pub summary: Summary,
    /// Manifest and playlist responses with a 4xx/5xx status.
    #[serde(default)]
    pub failed: Vec<String>,
    /// Requests to anything but the loopback.
    #[serde(default)]
    pub outside: Vec<String>,
    /// "status URL" of each player library loaded.
    #[serde(default)]
    pub libraries: Vec<String>,
    #[serde(default)]
    pub console: Vec<String>,
    pub error: Option<String>,
}

/// Plays `page` in headless Chromium: `warmup` seconds to settle, then `seconds` measured, a
/// screenshot to `shot`, `flags` for Chromium. Asserts that the driver ran, that the page asked
/// for nothing beyond the loopback (its libraries are built into ldash) and that it reported
/// statistics; the caller asserts the rest.
pub async fn drive(
    node: &Path,
    driver: &Path,
    page: &str,
    (warmup, seconds): (u32, u32),
    shot: &Path,
    flags: &[String],
    case: &str,
) -> DriverRun {
    if let Some(folder) = shot.parent() {
        std::fs::create_dir_all(folder).expect("screenshot folder");
    }
    let mut command = tokio::process::Command::new(node);
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/play.cjs"))
        .arg(driver)
        .arg(page)
        .arg(warmup.to_string())
        .arg(seconds.to_string())
        .arg(shot)
        .args(flags)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let limit = Duration::from_secs(u64::from(warmup + seconds) + 90);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("{case}: the browser run ends within {limit:?}"))
        .expect("node runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let run: DriverRun =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{case}: driver output ({e}): {text}"));
    assert!(
        run.error.is_none(),
        "{case}: the driver failed: {:?}\n{:?}",
        run.error,
        run.console
    );
    assert!(
        run.outside.is_empty(),
        "{case}: the page asked for more than ldash (its libraries are built in): {:?}",
        run.outside
    );
    assert!(
        !run.samples.is_empty(),
        "{case}: no statistics from the page: {:?}",
        run.console
    );
    run
}

/// Where a test's screenshot goes: target/browser/{name}.png.
pub fn screenshot(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/browser")
        .join(format!("{}.png", name.replace(' ', "-")))
}
