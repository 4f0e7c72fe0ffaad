//! The play-page driver: tests/browser/play.cjs (playwright-core driving Debian's headless
//! Chromium) plays a page for a while and prints what the page measured, which this module reads.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The Chromium flags every headless run here uses (the driver's and a test's own).
pub const CHROMIUM_FLAGS: [&str; 6] = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

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
    /// Glass-to-glass seconds read from the frames (median of the last second), when the stream
    /// carries a clock.
    #[serde(default)]
    pub glass: Option<f64>,
    /// Seconds of frozen picture since the measurement started (the capture time shown did not
    /// change for more than 3 frame intervals), when the stream carries a clock.
    #[serde(default)]
    pub frozen: Option<f64>,
    /// Seeks since the measurement started (the page's live-edge jumps and the player's own).
    #[serde(default)]
    pub seeks: u32,
}

/// The glass-to-glass figures read from the frames, and the player's own.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Summary {
    pub glass_p50: Option<f64>,
    pub glass_p95: Option<f64>,
    pub glass_reads: usize,
    pub glass_misses: usize,
    pub player_p50: Option<f64>,
    /// The player's forward buffer (p50 of the samples).
    pub buffer_p50: Option<f64>,
    /// Seconds of frozen picture in the measured window: every interval in which the capture time
    /// shown did not change for more than 3 frame intervals, whole (None without a clock).
    #[serde(default)]
    pub frozen_s: Option<f64>,
    /// `seeking` events in the measured window.
    #[serde(default)]
    pub seeks: u32,
}

/// What one run of the driver printed.
#[derive(Debug, serde::Deserialize)]
pub struct DriverRun {
    #[serde(default)]
    pub samples: Vec<Sample>,
    #[serde(default)]
    pub summary: Summary,
    /// When the measurement started: milliseconds since the Unix epoch (sample `at` counts from it).
    #[serde(default)]
    pub measured_from: Option<f64>,
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

impl DriverRun {
    /// The last sample and how far playback advanced over the `seconds` before it (None when
    /// there is no sample that far back).
    pub fn advanced_over(&self, seconds: u32) -> Option<(&Sample, f64)> {
        let last = self.samples.last()?;
        let earlier = self.samples.iter().find(|s| s.at + seconds == last.at)?;
        Some((last, last.current_time - earlier.current_time))
    }
}

/// Where the driver and its dependency are.
pub struct Driver {
    /// node.
    pub node: PathBuf,
    /// tests/browser/play.cjs.
    pub script: PathBuf,
    /// The folder whose node_modules holds playwright-core (`npm ci --prefix player`).
    pub modules: PathBuf,
}

impl Driver {
    /// The driver of the repository at `repo`, if its dependency is installed.
    pub fn in_repo(repo: &Path, node: PathBuf) -> Option<Driver> {
        let modules = repo.join("player");
        modules.join("node_modules/playwright-core").is_dir().then(|| Driver {
            node,
            script: repo.join("tests/browser/play.cjs"),
            modules,
        })
    }

    /// Plays `page`: `warmup` seconds to settle, then `seconds` measured, a screenshot to `shot`,
    /// `flags` for Chromium beside [`CHROMIUM_FLAGS`]. Fails when the driver did not run, when the
    /// page asked for anything beyond the loopback (ldash serves the page's libraries itself) or
    /// reported no statistics; the caller judges the rest.
    pub async fn play(
        &self,
        page: &str,
        times: (u32, u32),
        shot: &Path,
        flags: &[String],
    ) -> Result<DriverRun, String> {
        self.play_behind(&[], page, times, shot, flags).await
    }

    /// [`Driver::play`] with node (and so Chromium) run behind `prefix`: a shaped network path's
    /// [`crate::netpath::NetPath::exec_prefix`] plays the page from the player's namespace.
    pub async fn play_behind(
        &self,
        prefix: &[String],
        page: &str,
        (warmup, seconds): (u32, u32),
        shot: &Path,
        flags: &[String],
    ) -> Result<DriverRun, String> {
        if let Some(folder) = shot.parent() {
            std::fs::create_dir_all(folder).map_err(|e| format!("screenshot folder: {e}"))?;
        }
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut command = tokio::process::Command::new(program);
                command.args(args).arg(&self.node);
                command
            }
            None => tokio::process::Command::new(&self.node),
        };
        command
            .arg(&self.script)
            .arg(&self.modules)
            .arg(page)
            .arg(warmup.to_string())
            .arg(seconds.to_string())
            .arg(shot)
            .args(CHROMIUM_FLAGS)
            .arg("--autoplay-policy=no-user-gesture-required")
            .args(flags)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        let limit = Duration::from_secs(u64::from(warmup + seconds) + 90);
        let output = tokio::time::timeout(limit, command.output())
            .await
            .map_err(|_| format!("the browser run did not end within {limit:?}"))?
            .map_err(|e| format!("node: {e}"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let run: DriverRun = serde_json::from_str(text.trim()).map_err(|e| format!("driver output ({e}): {text}"))?;
        if run.error.is_some() {
            return Err(format!("the driver failed: {:?}\n{:?}", run.error, run.console));
        }
        if !run.outside.is_empty() {
            return Err(format!(
                "the page asked for more than ldash (its libraries are built in): {:?}",
                run.outside
            ));
        }
        if run.samples.is_empty() {
            return Err(format!("no statistics from the page: {:?}", run.console));
        }
        Ok(run)
    }
}
