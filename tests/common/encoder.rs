//! The real ffmpeg as the encoder (the kit's commands, pushed into a TestServer), and the real
//! ffprobe and xmllint as checkers.

use std::path::Path;
use std::time::Duration;

pub use testkit::encoder::{ClockEncoder, Dash, Encoder, Ingest, Source};

use super::{require_tool, Proto, TestServer};

/// The manifest every test encoder uploads.
pub const MANIFEST: &str = "/ldash/upload/live/stream.mpd";

impl TestServer {
    /// ffmpeg pushing the test stream ([`Dash::test_stream`]) into this server's live/stream.mpd for
    /// `seconds`, uploading as `ingest` says.
    pub fn encoder(&self, ffmpeg: &Path, ingest: Ingest, seconds: u32) -> Encoder {
        let dash = Dash::test_stream(&self.url(Proto::H1, MANIFEST), ingest, seconds);
        Encoder::start(dash.command(ffmpeg)).expect("ffmpeg starts")
    }

    /// [`TestServer::encoder`] with the documented ingest, once the stream has started `segment`
    /// (e.g. "live/chunk-stream0-00003.m4s") within 20 s.
    pub async fn live_stream(&self, ffmpeg: &Path, seconds: u32, segment: &str) -> Encoder {
        let encoder = self.encoder(ffmpeg, Ingest::PutPersistent, seconds);
        self.upload_started(segment, Duration::from_secs(20)).await;
        encoder
    }
}

/// A fresh TestServer with ffmpeg pushing the test stream into it, as `ingest` says, for `seconds`,
/// once the upload of `started` (e.g. "live/chunk-stream0-00003.m4s") has started (within 20 s);
/// None (the test skips) when ffmpeg or another of `tools` is missing.
pub async fn streaming(tools: &[&str], ingest: Ingest, seconds: u32, started: &str) -> Option<(TestServer, Encoder)> {
    let ffmpeg = require_tool("ffmpeg")?;
    if tools.iter().any(|tool| require_tool(tool).is_none()) {
        return None;
    }
    let server = TestServer::start().await;
    let encoder = server.encoder(&ffmpeg, ingest, seconds);
    server.upload_started(started, Duration::from_secs(20)).await;
    Some((server, encoder))
}

/// ldash-clock piped into ffmpeg for `seconds`, uploading to `url` with the documented ingest
/// and `chunk`-second CMAF chunks: frames that carry their capture time, for glass-to-glass latency.
pub fn clock_encoder(ffmpeg: &Path, url: &str, seconds: u32, chunk: f64) -> ClockEncoder {
    let dash = Dash {
        source: Source::Clock,
        chunk,
        ..Dash::test_stream(url, Ingest::PutPersistent, seconds)
    };
    let clock = std::process::Command::new(env!("CARGO_BIN_EXE_ldash-clock"));
    testkit::encoder::clock_encoder(clock, ffmpeg, &dash).expect("ldash-clock and ffmpeg start")
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

/// Decodes `init + segment` with ffprobe: Ok when it counts packets without an error.
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

/// ldash-clock piped into ffmpeg as a CMAF ingest encoder: one video track (`video`) and, with
/// `audio`, an AAC track, posted into `channel` (its upload URL) for `seconds` in `chunk`-second
/// fragments.
pub fn clock_ingest(ffmpeg: &Path, channel: &str, audio: bool, seconds: u32, chunk: f64) -> ClockEncoder {
    let ingest = testkit::encoder::CmafIngest {
        source: Source::Clock,
        chunk,
        ..testkit::encoder::CmafIngest::test_stream(channel, false, audio, seconds)
    };
    let clock = std::process::Command::new(env!("CARGO_BIN_EXE_ldash-clock"));
    testkit::encoder::clock_ingest(clock, ffmpeg, &ingest).expect("ldash-clock and ffmpeg start")
}
