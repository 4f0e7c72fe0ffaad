//! `ldash-clock`: a live test source whose every frame carries its capture time as a barcode
//! ([`ldash::media::clock`]), written as raw yuv420p frames to standard output at the frame rate, for
//! ffmpeg to encode. The play page reads the barcode back and shows the glass-to-glass latency.
//!
//! ```text
//! ldash-clock --size 640x360 --fps 30 | ffmpeg -f rawvideo -pix_fmt yuv420p -video_size 640x360 \
//!     -framerate 30 -i - ... http://127.0.0.1:8080/ldash/upload/live/stream.mpd
//! ```
//!
//! The benchmark includes this file as its module `clock` (`ldash-bench clock` runs it), so that
//! its glass-to-glass item feeds ffmpeg from the same source as the tests without a second build.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use ldash::media::clock::Frames;

/// Writes raw frames that carry their capture time to standard output, paced by the wall clock.
#[derive(Debug, Parser)]
#[command(name = "ldash-clock", version)]
struct Options {
    /// Frame size, WIDTHxHEIGHT (even, at least 64x36).
    #[arg(long, default_value = "640x360")]
    size: String,
    /// Frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Stop after this many seconds; 0 runs until the reader goes away.
    #[arg(long, default_value_t = 0)]
    seconds: u64,
}

fn parse_size(text: &str) -> Option<Frames> {
    let (w, h) = text.split_once(['x', 'X'])?;
    Frames::new(w.trim().parse().ok()?, h.trim().parse().ok()?)
}

// Not the entry point where the benchmark includes this file.
#[allow(dead_code)]
fn main() -> ExitCode {
    run(std::env::args_os())
}

/// Runs with `args` (the program's name first).
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let options = Options::parse_from(args);
    let Some(frames) = parse_size(&options.size) else {
        eprintln!("ldash-clock: --size must be WIDTHxHEIGHT, even, at least 64x36");
        return ExitCode::FAILURE;
    };
    if options.fps == 0 || options.fps > 240 {
        eprintln!("ldash-clock: --fps must be between 1 and 240");
        return ExitCode::FAILURE;
    }
    let interval = Duration::from_secs(1) / options.fps;
    let total = (options.seconds > 0).then(|| options.seconds * u64::from(options.fps));
    let mut frame = vec![0u8; frames.frame_len()];
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    for number in 0u64.. {
        if total.is_some_and(|total| number >= total) {
            break;
        }
        // A camera's cadence: frame n is captured at start + n intervals. A late frame (the reader
        // was slow) is captured when it can be, and stamped with that moment.
        let due = started + interval * u32::try_from(number).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        frames.paint(&mut frame, number, stamp);
        if out.write_all(&frame).and_then(|()| out.flush()).is_err() {
            // The encoder went away: that is the normal end of a run.
            break;
        }
    }
    ExitCode::SUCCESS
}
