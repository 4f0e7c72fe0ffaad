//! The real ffmpeg as the LL-DASH encoder: the documented low-latency command (x264 ultrafast and
//! zerolatency, 1 s segments of CMAF chunks) from one of two sources (ffmpeg's test pattern, or
//! `ldash-clock`'s frames that carry their capture time), uploading to ldash or writing files.

use std::path::{Path, PathBuf};
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
    /// PUT on a connection per file with -ignore_io_errors 1: ffmpeg goes on encoding while the
    /// origin is away (its uploads fail) and its next uploads reach the origin once it is back.
    PutOutlivingTheOrigin,
    /// The documented command with a window of 2 segments and none extra: ffmpeg DELETEs each
    /// segment two segments after it completes (segment 1 once segment 3 is complete), as a DVR
    /// test needs.
    PutShortWindow,
}

/// The frame size and rate of both sources (and of the first video rendition).
pub const SIZE: &str = "640x360";
pub const FPS: u32 = 30;

/// Where the pictures come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// ffmpeg's own test pattern (testsrc2) of this size, read at its native rate when uploading.
    TestPattern { size: &'static str },
    /// Raw yuv420p frames of [`SIZE`] on standard input, paced by their writer (ldash-clock).
    Clock,
}

/// The video renditions.
#[derive(Debug, Clone, Copy)]
pub enum Video {
    /// Two renditions: 640x360 at 800 kbit/s and 320x180 at 300 kbit/s.
    Ladder,
    /// One rendition at this bit rate.
    One(&'static str),
    /// One rendition at this constant bit rate (x264's HRD CBR).
    Cbr(&'static str),
}

/// Where the stream goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// Uploaded to this manifest URL, keeping a live window of 5 segments (+2 before deletion).
    Upload { url: String, ingest: Ingest },
    /// Uploaded to each of these manifest URLs by one ffmpeg (its tee muxer: one encoding, a DASH
    /// muxer per URL), as [`Output::Upload`] does to one.
    Tee { urls: Vec<String>, ingest: Ingest },
    /// Written as files (manifest and segments) beside this manifest path.
    Files(PathBuf),
}

/// One ffmpeg LL-DASH encoding.
#[derive(Debug, Clone)]
pub struct Dash {
    pub source: Source,
    pub video: Video,
    /// A 440 Hz sine as AAC beside the video, in an adaptation set of its own.
    pub audio: bool,
    pub seconds: u32,
    /// The CMAF chunk (fragment) duration in seconds, in 1 s segments.
    pub chunk: f64,
    pub output: Output,
    /// ffmpeg's -loglevel (warning shows what the tests look for in its log).
    pub loglevel: &'static str,
}

impl Dash {
    /// The test encoder the tests use: the test pattern with a sine, two video renditions and AAC,
    /// 1 s segments of 0.2 s chunks, uploaded as `ingest` says.
    pub fn test_stream(url: &str, ingest: Ingest, seconds: u32) -> Dash {
        Dash {
            source: Source::TestPattern { size: SIZE },
            video: Video::Ladder,
            audio: true,
            seconds,
            chunk: 0.2,
            output: Output::Upload {
                url: url.to_owned(),
                ingest,
            },
            loglevel: "warning",
        }
    }

    /// The ffmpeg command, its standard error piped (for the log) and killed when dropped.
    pub fn command(&self, ffmpeg: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(ffmpeg);
        command.args(["-hide_banner", "-loglevel", self.loglevel]);
        let uploading = matches!(self.output, Output::Upload { .. } | Output::Tee { .. });
        match self.source {
            Source::TestPattern { size } => {
                command.args(["-nostdin"]);
                if uploading {
                    command.arg("-re");
                }
                command.args(["-f", "lavfi", "-i", &format!("testsrc2=size={size}:rate={FPS}")]);
                command.stdin(Stdio::null());
            }
            Source::Clock => {
                command.args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-video_size", SIZE]);
                command.args(["-framerate", &FPS.to_string(), "-i", "pipe:0"]);
            }
        }
        if let Output::Files(_) = self.output {
            command.arg("-y");
        }
        if self.audio {
            // -re paces the sine (the clock's frames are paced by their writer).
            if let Source::Clock = self.source {
                command.arg("-re");
            }
            command.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
        }
        command.args(["-t", &self.seconds.to_string()]);
        self.video(&mut command);
        if self.audio {
            command.args(["-map", "1:a", "-c:a", "aac", "-b:a", "64k"]);
        }
        let mut dash: Vec<(&str, String)> = vec![
            ("ldash", "1".into()),
            ("streaming", "1".into()),
            ("use_template", "1".into()),
            ("use_timeline", "0".into()),
            ("seg_duration", "1".into()),
            ("frag_type", "duration".into()),
            ("frag_duration", self.chunk.to_string()),
        ];
        if self.audio {
            dash.push(("adaptation_sets", "id=0,streams=v id=1,streams=a".into()));
        }
        dash.push(("format_options", "movflags=cmaf".into()));
        match &self.output {
            Output::Upload { url, ingest } => {
                dash.extend(upload_options(*ingest));
                command.args(["-f", "dash"]);
                for (key, value) in dash {
                    command.arg(format!("-{key}")).arg(value);
                }
                command.arg(url);
            }
            Output::Tee { urls, ingest } => {
                dash.extend(upload_options(*ingest));
                // Each output: [f=dash:key=value:...]url, special characters escaped.
                let options: Vec<String> = dash.iter().map(|(k, v)| format!("{k}={}", escaped(v, ":]"))).collect();
                let outputs: Vec<String> = urls
                    .iter()
                    .map(|url| escaped(&format!("[f=dash:{}]{url}", options.join(":")), "|"))
                    .collect();
                command.args(["-f", "tee"]).arg(outputs.join("|"));
            }
            Output::Files(manifest) => {
                command.args(["-f", "dash"]);
                for (key, value) in dash {
                    command.arg(format!("-{key}")).arg(value);
                }
                command.arg(manifest);
            }
        }
        command.stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        command
    }

    /// The video maps, codec and rates: one GOP per 1 s segment, no B-frames, no scene cuts.
    fn video(&self, command: &mut tokio::process::Command) {
        match self.video {
            Video::Ladder => command.args(["-map", "0:v", "-map", "0:v"]),
            Video::One(_) | Video::Cbr(_) => command.args(["-map", "0:v"]),
        };
        command.args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"]);
        command.args(["-g", "30", "-keyint_min", "30", "-sc_threshold", "0", "-bf", "0"]);
        match self.video {
            Video::Ladder => command.args(["-b:v:0", "800k", "-s:v:1", "320x180", "-b:v:1", "300k"]),
            Video::One(rate) => command.args(["-b:v", rate]),
            Video::Cbr(rate) => command
                .args(["-b:v", rate, "-minrate", rate, "-maxrate", rate, "-bufsize", "1M"])
                .args(["-x264-params", "nal-hrd=cbr"]),
        };
    }
}

/// The DASH muxer's options for uploading as `ingest` says, with a live window of 5 segments
/// (+2 before deletion).
fn upload_options(ingest: Ingest) -> Vec<(&'static str, String)> {
    let (window, extra) = match ingest {
        Ingest::PutShortWindow => ("2", "0"),
        _ => ("5", "2"),
    };
    let mut options = vec![
        ("window_size", window.to_owned()),
        ("extra_window_size", extra.to_owned()),
    ];
    let put = |options: &mut Vec<(&'static str, String)>| {
        options.push(("method", "PUT".to_owned()));
        options.push(("http_opts", "tcp_nodelay=1".to_owned()));
    };
    match ingest {
        Ingest::PostDefaults => {}
        Ingest::PutPersistent | Ingest::PutShortWindow => {
            put(&mut options);
            options.push(("http_persistent", "1".to_owned()));
        }
        Ingest::PutRemoveAtExit => {
            put(&mut options);
            options.push(("http_persistent", "1".to_owned()));
            options.push(("remove_at_exit", "1".to_owned()));
        }
        Ingest::PutOutlivingTheOrigin => {
            put(&mut options);
            options.push(("ignore_io_errors", "1".to_owned()));
        }
    }
    options
}

/// `text` with each of `special` (and the backslash and quote) escaped by a backslash, as ffmpeg's
/// tokenizer (av_get_token) reads it. The tee muxer reads its argument twice: split into outputs at
/// '|', then each output's `[key=value:...]` options.
fn escaped(text: &str, special: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if special.contains(c) || c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// ffmpeg as a DASH-IF CMAF ingest encoder (interface 1): one process, each track a long-running
/// POST of fragmented MP4 to `{channel}/Streams({track})`, the documented command of the README.
#[derive(Debug, Clone)]
pub struct CmafIngest {
    pub source: Source,
    /// The channel's upload URL (`http://host:port/ldash/upload/ch1`).
    pub channel: String,
    /// Two video tracks (`video_hi` 640x360 at 800 kbit/s, `video_lo` 320x180 at 300 kbit/s)
    /// instead of one (`video`).
    pub ladder: bool,
    /// An AAC track (`audio`) from a 440 Hz sine.
    pub audio: bool,
    pub seconds: u32,
    /// The CMAF fragment (chunk) duration in seconds.
    pub chunk: f64,
    /// Added to every timestamp (ffmpeg's -output_ts_offset with -movflags +frag_discont): an
    /// encoder that reconnects and continues the channel's timeline, or one whose timeline jumps.
    pub offset: f64,
    pub loglevel: &'static str,
}

impl CmafIngest {
    /// The test pattern (and a sine) into `channel`, 0.2 s chunks.
    pub fn test_stream(channel: &str, ladder: bool, audio: bool, seconds: u32) -> CmafIngest {
        CmafIngest {
            source: Source::TestPattern { size: SIZE },
            channel: channel.to_owned(),
            ladder,
            audio,
            seconds,
            chunk: 0.2,
            offset: 0.0,
            loglevel: "warning",
        }
    }

    /// The track names it posts, in output order.
    pub fn tracks(&self) -> Vec<&'static str> {
        let mut tracks = if self.ladder {
            vec!["video_hi.cmfv", "video_lo.cmfv"]
        } else {
            vec!["video.cmfv"]
        };
        if self.audio {
            tracks.push("audio.cmfa");
        }
        tracks
    }

    /// The ffmpeg command, its standard error piped (for the log) and killed when dropped.
    pub fn command(&self, ffmpeg: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(ffmpeg);
        command.args(["-hide_banner", "-loglevel", self.loglevel]);
        match self.source {
            Source::TestPattern { size } => {
                command.args(["-nostdin", "-re", "-f", "lavfi"]);
                command.args(["-i", &format!("testsrc2=size={size}:rate={FPS}")]);
                command.stdin(Stdio::null());
            }
            Source::Clock => {
                command.args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-video_size", SIZE]);
                command.args(["-framerate", &FPS.to_string(), "-i", "pipe:0"]);
            }
        }
        if self.audio {
            command.args(["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
        }
        let x264 = |command: &mut tokio::process::Command, rate: &str, size: Option<&str>| {
            command.args([
                "-map",
                "0:v",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ]);
            command.args([
                "-g",
                "30",
                "-keyint_min",
                "30",
                "-sc_threshold",
                "0",
                "-bf",
                "0",
                "-b:v",
                rate,
            ]);
            if let Some(size) = size {
                command.args(["-s", size]);
            }
        };
        for track in self.tracks() {
            match track {
                "video_hi.cmfv" | "video.cmfv" => x264(&mut command, "800k", None),
                "video_lo.cmfv" => x264(&mut command, "300k", Some("320x180")),
                _ => {
                    command.args(["-map", "1:a", "-c:a", "aac", "-b:a", "64k"]);
                }
            }
            self.output(&mut command, track);
        }
        command.stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        command
    }

    fn output(&self, command: &mut tokio::process::Command, track: &str) {
        // -t is an output option: each output of the one process needs its own.
        command.args(["-t", &self.seconds.to_string()]);
        // An offset reaches the fragments' decode times (tfdt) only with frag_discont: without it
        // ffmpeg's mp4 muxer starts every track's timeline at 0 whatever the timestamps.
        let flags = if self.offset > 0.0 {
            "+cmaf+empty_moov+separate_moof+frag_keyframe+frag_discont"
        } else {
            "+cmaf+empty_moov+separate_moof+frag_keyframe"
        };
        command.args(["-f", "mp4", "-movflags", flags]);
        command.args(["-frag_duration", &((self.chunk * 1e6).round() as u64).to_string()]);
        if self.offset > 0.0 {
            command.args(["-output_ts_offset", &self.offset.to_string()]);
        }
        command.args(["-method", "POST", &format!("{}/Streams({track})", self.channel)]);
    }
}

/// `ldash-clock` piped into ffmpeg: frames that carry their capture time, for glass-to-glass
/// latency. Both processes are killed when this is dropped.
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

/// Starts `clock` (the `ldash-clock` program, or a command that runs it) for `dash`'s duration and
/// ffmpeg encoding its frames as `dash` says ([`Source::Clock`]); ffmpeg's log goes to this
/// process's standard error.
pub fn clock_encoder(clock: std::process::Command, ffmpeg: &Path, dash: &Dash) -> Result<ClockEncoder, String> {
    clock_into(clock, dash.command(ffmpeg), dash.seconds)
}

/// [`clock_encoder`] for a CMAF ingest encoder ([`CmafIngest`] with [`Source::Clock`]).
pub fn clock_ingest(clock: std::process::Command, ffmpeg: &Path, ingest: &CmafIngest) -> Result<ClockEncoder, String> {
    clock_into(clock, ingest.command(ffmpeg), ingest.seconds)
}

/// `clock`'s frames for `seconds` piped into `command` (an ffmpeg reading them on standard input).
fn clock_into(
    mut clock: std::process::Command,
    mut command: tokio::process::Command,
    seconds: u32,
) -> Result<ClockEncoder, String> {
    let mut clock = clock
        .args(["--size", SIZE, "--fps", &FPS.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start ldash-clock: {e}"))?;
    let frames = clock.stdout.take().ok_or("ldash-clock's standard output")?;
    command.stdin(Stdio::from(frames)).stderr(Stdio::inherit());
    match command.spawn() {
        Ok(ffmpeg) => Ok(ClockEncoder { clock, ffmpeg }),
        Err(err) => {
            let _ = clock.kill();
            let _ = clock.wait();
            Err(format!("cannot start ffmpeg: {err}"))
        }
    }
}

/// A running ffmpeg whose log (its standard error) is read as it comes and kept.
pub struct Encoder {
    pub child: tokio::process::Child,
    log: Option<tokio::task::JoinHandle<String>>,
}

impl Encoder {
    /// Starts `command` (from [`Dash::command`]).
    pub fn start(mut command: tokio::process::Command) -> Result<Encoder, String> {
        let mut child = command.spawn().map_err(|e| format!("cannot start ffmpeg: {e}"))?;
        let log = child.stderr.take().map(|mut stderr| {
            tokio::spawn(async move {
                let mut text = String::new();
                let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
                text
            })
        });
        Ok(Encoder { child, log })
    }

    /// Kills ffmpeg (an error if it was gone already) and waits until it has gone.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await.map(drop)
    }

    /// Everything ffmpeg logged, once it has closed its log (it exited); "" when asked again.
    pub async fn log(&mut self) -> String {
        match self.log.take() {
            Some(log) => log.await.unwrap_or_default(),
            None => String::new(),
        }
    }
}
