//! The browser driver (the kit's: tests/browser/play.cjs, playwright-core driving Debian's headless
//! Chromium on the play page) for every test that plays the page, and what those tests assert of a
//! run.

use std::path::{Path, PathBuf};

pub use testkit::browser::{Driver, DriverRun, Sample};

use super::require_tool;

/// The driver with node and Chromium; None (the test skips) when one of them or the driver's own
/// dependency (playwright-core, from `npm ci --prefix player`) is missing, unless
/// LDASH_REQUIRE_TOOLS=1, where it fails.
pub fn browser_driver() -> Option<Driver> {
    let (Some(node), Some(_)) = (require_tool("node"), require_tool("chromium")) else {
        return None;
    };
    let driver = Driver::in_repo(Path::new(env!("CARGO_MANIFEST_DIR")), node);
    if driver.is_none() {
        testkit::tools::missing(
            "the browser driver (player/node_modules/playwright-core)",
            "npm ci --prefix player",
        );
    }
    driver
}

/// Plays `page` in headless Chromium: `warmup` seconds to settle, then `seconds` measured, a
/// screenshot to `shot`, `flags` for Chromium. Fails the test unless the driver ran, the page asked
/// for nothing beyond the loopback (its libraries are built into ldash) and reported statistics;
/// the caller asserts the rest.
pub async fn drive(
    driver: &Driver,
    page: &str,
    times: (u32, u32),
    shot: &Path,
    flags: &[String],
    case: &str,
) -> DriverRun {
    driver
        .play(page, times, shot, flags)
        .await
        .unwrap_or_else(|e| panic!("{case}: {e}"))
}

/// The last sample, asserting that the player reported no error and that playback advanced at
/// least `min` seconds over the last 5 s; returns it.
pub fn assert_plays<'a>(run: &'a DriverRun, min: f64, case: &str) -> &'a Sample {
    check_plays(run, (min, 5), case).unwrap_or_else(|failure| panic!("{failure}"))
}

/// The last sample when the player reported no error and playback advanced at least `min` seconds
/// over the last `seconds`; otherwise what went wrong (with the page's console).
pub fn check_plays<'a>(run: &'a DriverRun, (min, seconds): (f64, u32), case: &str) -> Result<&'a Sample, String> {
    let (last, advanced) = run
        .advanced_over(seconds)
        .ok_or_else(|| format!("{case}: no sample {seconds} s before the last: {:?}", run.console))?;
    if last.error.is_some() {
        return Err(format!(
            "{case}: the player reported {:?}; console: {:?}",
            last.error, run.console
        ));
    }
    if advanced < min {
        return Err(format!(
            "{case}: playback advanced {advanced:.2} s in {seconds} s; console: {:?}",
            run.console
        ));
    }
    Ok(last)
}

/// Where a test's screenshot goes: target/browser/{name}.png.
pub fn screenshot(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/browser")
        .join(format!("{}.png", name.replace(' ', "-")))
}
