//! The real ffmpeg as an encoder, and the real ffprobe and xmllint as checkers.

use std::path::Path;
use std::process::Stdio;

/// How the encoder uploads.
#[derive(Debug, Clone, Copy)]
pub enum Ingest {
    /// The documented low-latency command: PUT on persistent connections.
    PutPersistent,
    /// ffmpeg's defaults: POST, a new connection per file.
    PostDefaults,
    /// The documented command with -remove_at_exit 1: everything is deleted when ffmpeg stops.
    PutRemoveAtExit,
}

pub fn ffmpeg_command(ffmpeg: &Path, url: &str, ingest: Ingest, seconds: u32) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(ffmpeg);
    command.args(["-hide_banner", "-loglevel", "warning", "-nostdin", "-re"]);
    command.args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"]);
    encode(&mut command, url, ingest, seconds, 0.2);
    command
}

/// The frame size and rate of the clock source.
pub const CLOCK_SIZE: &str = "640x360";
pub const CLOCK_FPS: u32 = 30;

/// ldash-clock piped into ffmpeg: frames that carry their capture time, for glass-to-glass latency.
/// Both processes are killed when this is dropped.
pub struct ClockEncoder {
    clock: std::process::Child,
    pub ffmpeg: tokio::process::Child,
}

impl Drop for ClockEncoder {
    fn drop(&mut self) {
        let _ = self.clock.kill();
        let _ = self.clock.wait();
        let _ = self.ffmpeg.start_kill();
    }
}

/// Starts ldash-clock and ffmpeg, the test encoder with `chunk`-second CMAF chunks.
pub fn clock_encoder(ffmpeg: &Path, url: &str, ingest: Ingest, seconds: u32, chunk: f64) -> ClockEncoder {
    let mut clock = std::process::Command::new(env!("CARGO_BIN_EXE_ldash-clock"))
        .args(["--size", CLOCK_SIZE, "--fps", &CLOCK_FPS.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ldash-clock starts");
    let frames = clock.stdout.take().expect("ldash-clock's standard output");
    let mut command = tokio::process::Command::new(ffmpeg);
    command.args(["-hide_banner", "-loglevel", "warning"]);
    command.args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-video_size", CLOCK_SIZE]);
    command.args(["-framerate", &CLOCK_FPS.to_string(), "-i", "pipe:0", "-re"]);
    encode(&mut command, url, ingest, seconds, chunk);
    command.stdin(Stdio::from(frames)).stderr(Stdio::inherit());
    let ffmpeg = command.spawn().expect("ffmpeg starts");
    ClockEncoder { clock, ffmpeg }
}

/// The test encoder after its video input: a sine as audio, two video renditions (640x360 at
/// 800 kbit/s, 320x180 at 300 kbit/s) and AAC, 1 s segments of `chunk`-second CMAF chunks, uploaded
/// as `ingest` says.
fn encode(command: &mut tokio::process::Command, url: &str, ingest: Ingest, seconds: u32, chunk: f64) {
    command.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
    command.args(["-t", &seconds.to_string()]);
    command.args(["-map", "0:v", "-map", "0:v", "-map", "1:a"]);
    command.args([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        "30",
        "-keyint_min",
        "30",
    ]);
    command.args([
        "-sc_threshold",
        "0",
        "-bf",
        "0",
        "-b:v:0",
        "800k",
        "-s:v:1",
        "320x180",
        "-b:v:1",
        "300k",
    ]);
    command.args(["-c:a", "aac", "-b:a", "64k"]);
    command.args([
        "-f",
        "dash",
        "-ldash",
        "1",
        "-streaming",
        "1",
        "-use_template",
        "1",
        "-use_timeline",
        "0",
    ]);
    command.args([
        "-seg_duration",
        "1",
        "-frag_type",
        "duration",
        "-frag_duration",
        &chunk.to_string(),
    ]);
    command.args([
        "-adaptation_sets",
        "id=0,streams=v id=1,streams=a",
        "-format_options",
        "movflags=cmaf",
    ]);
    command.args(["-window_size", "5", "-extra_window_size", "2"]);
    if let Ingest::PutPersistent | Ingest::PutRemoveAtExit = ingest {
        command.args(["-method", "PUT", "-http_persistent", "1", "-http_opts", "tcp_nodelay=1"]);
    }
    if let Ingest::PutRemoveAtExit = ingest {
        command.args(["-remove_at_exit", "1"]);
    }
    command.arg(url);
    command.stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    command.stdin(Stdio::null());
}

pub fn xmllint_validates(mpd: &[u8]) -> Result<(), String> {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/specs/dash/DASH-MPD.xsd");
    assert!(schema.exists(), "the DASH schema is expected at {}", schema.display());
    let file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    std::fs::write(file.path(), mpd).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema)
        .arg(file.path())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Decodes `init + segment` with ffprobe; returns the number of frames or packets it counted.
pub fn ffprobe_decodes(init: &[u8], segment: &[u8]) -> Result<(), String> {
    let file = tempfile::Builder::new()
        .suffix(".mp4")
        .tempfile()
        .map_err(|e| e.to_string())?;
    std::fs::write(file.path(), [init, segment].concat()).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "csv=p=0",
        ])
        .arg(file.path())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let packets: u64 = text
        .trim()
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    if out.status.success() && packets > 0 && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "ffprobe: status {:?}, packets {text:?}, errors {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
