//! A recorded ffmpeg stream and its replay. ffmpeg encodes a few seconds of 4 Mbit/s CBR video into
//! 1 s CMAF segments of 100 ms chunks (files on disk, once); the publisher then uploads it to ldash
//! as ffmpeg's dash muxer would (manifest, init segment, each segment a chunked PUT opened before its
//! first chunk), looping over the recording with the decode times moved on, so a stream of any
//! length can be played in real time or faster.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Method;
use testkit::client::{Chunk, Client};
use testkit::encoder::{Dash, Ingest, Output, Source, Video};
use testkit::{Origin, Proto};
use tokio::sync::mpsc;

use crate::clients;

/// The recorded stream.
pub struct Recording {
    pub init: Bytes,
    /// Each segment as its CMAF chunks (`styp`? + `moof` + `mdat`).
    pub segments: Vec<Vec<Bytes>>,
    /// Track ticks per second.
    pub timescale: u32,
    /// Ticks of one segment.
    pub segment_ticks: u64,
    pub codecs: String,
}

/// Encodes the recording with ffmpeg into `dir` (4 Mbit/s, 1 s segments of 100 ms chunks).
pub async fn record(dir: &Path, seconds: u32) -> Result<Recording, String> {
    let ffmpeg = testkit::tools::which("ffmpeg").ok_or("ffmpeg is not installed (apt-get install ffmpeg)")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    // Encoded once per run; later items read the same files.
    let done = dir.join("encoded");
    if !done.exists() {
        encode(&ffmpeg, dir, seconds).await?;
        std::fs::write(&done, b"").map_err(|e| e.to_string())?;
    }
    read_recording(dir, seconds)
}

async fn encode(ffmpeg: &Path, dir: &Path, seconds: u32) -> Result<(), String> {
    let dash = Dash {
        source: Source::TestPattern { size: "1280x720" },
        video: Video::Cbr("4M"),
        audio: false,
        chunk: 0.1,
        output: Output::Files(dir.join("stream.mpd")),
        loglevel: "error",
        ..Dash::test_stream("", Ingest::PutPersistent, seconds + 1)
    };
    let status = dash
        .command(ffmpeg)
        .stderr(std::process::Stdio::inherit())
        .status()
        .await
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    if !status.success() {
        return Err(format!("ffmpeg failed: {status}"));
    }
    Ok(())
}

fn read_recording(dir: &Path, seconds: u32) -> Result<Recording, String> {
    let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| format!("{name}: {e}"));
    let init = read("init-stream0.m4s")?;
    let mpd = String::from_utf8_lossy(&read("stream.mpd")?).into_owned();
    let codecs = mpd
        .split("codecs=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("avc1.64001f")
        .to_owned();
    let parsed = ldash::media::cmaf::parse_init(&init).map_err(|e| e.to_string())?;
    let timescale = parsed
        .tracks
        .first()
        .map(|t| t.timescale)
        .ok_or("no track in the init segment")?;
    let mut segments = Vec::new();
    let mut starts = Vec::new();
    for n in 1..=seconds {
        let Ok(bytes) = read(&format!("chunk-stream0-{n:05}.m4s")) else {
            break;
        };
        let mut scanner = ldash::media::cmaf::ChunkScanner::new(Some(&parsed));
        let chunks = scanner.push(&bytes).map_err(|e| e.to_string())?;
        let first = chunks.first().ok_or("a recorded segment has no chunk")?;
        starts.push(first.decode_time);
        segments.push(
            chunks
                .iter()
                .map(|c| Bytes::copy_from_slice(&bytes[c.start as usize..c.end as usize]))
                .collect::<Vec<_>>(),
        );
    }
    if segments.len() < 2 {
        return Err("the recording has fewer than two segments".into());
    }
    let segment_ticks = starts[1] - starts[0];
    // Every segment the same length, so the loop's decode times continue seamlessly.
    segments.truncate(starts.windows(2).take_while(|w| w[1] - w[0] == segment_ticks).count() + 1);
    Ok(Recording {
        init: init.into(),
        segments,
        timescale,
        segment_ticks,
        codecs,
    })
}

impl Recording {
    /// Segment `n` (1-based) of the endless replay: the recording looped, decode times moved on.
    pub fn segment(&self, n: u64) -> Vec<Bytes> {
        let len = self.segments.len() as u64;
        let index = ((n - 1) % len) as usize;
        let shift = ((n - 1) / len) * len * self.segment_ticks;
        self.segments[index].iter().map(|c| shift_tfdt(c, shift)).collect()
    }

    /// Bytes of one segment (the first of the recording), for rates.
    pub fn segment_bytes(&self) -> usize {
        self.segments[0].iter().map(Bytes::len).sum()
    }

    /// A dynamic MPD for the replay, with its availability start time at `start`.
    pub fn mpd(&self, start: SystemTime) -> String {
        let ast = humantime::format_rfc3339_millis(start);
        let bandwidth = self.segment_bytes() * 8;
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="dynamic" minimumUpdatePeriod="PT500S" availabilityStartTime="{ast}" publishTime="{ast}" timeShiftBufferDepth="PT30.0S" maxSegmentDuration="PT1.0S" minBufferTime="PT1.0S">
	<ServiceDescription id="0"></ServiceDescription>
	<Period id="0" start="PT0.0S">
		<AdaptationSet id="0" contentType="video" startWithSAP="1" segmentAlignment="true" frameRate="30/1" maxWidth="1280" maxHeight="720">
			<Representation id="0" mimeType="video/mp4" codecs="{codecs}" bandwidth="{bandwidth}" width="1280" height="720">
				<SegmentTemplate timescale="{ts}" duration="{dur}" availabilityTimeOffset="0.900" availabilityTimeComplete="false" initialization="init-stream$RepresentationID$.m4s" media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="1"/>
			</Representation>
		</AdaptationSet>
	</Period>
</MPD>
"#,
            codecs = self.codecs,
            ts = self.timescale,
            dur = self.segment_ticks,
        )
    }
}

/// A copy of a CMAF chunk with every `tfdt` in its `moof` moved on by `shift` ticks.
fn shift_tfdt(chunk: &Bytes, shift: u64) -> Bytes {
    if shift == 0 {
        return chunk.clone();
    }
    let mut data = chunk.to_vec();
    for (start, end) in boxes(&data, 0, data.len(), b"moof") {
        for (ts, te) in boxes(&data, start + 8, end, b"traf") {
            for (fs, _) in boxes(&data, ts + 8, te, b"tfdt") {
                let version = data.get(fs + 8).copied().unwrap_or(0);
                let at = fs + 12;
                if version == 1 && at + 8 <= data.len() {
                    let old = u64::from_be_bytes(data[at..at + 8].try_into().unwrap_or([0; 8]));
                    data[at..at + 8].copy_from_slice(&(old + shift).to_be_bytes());
                } else if at + 4 <= data.len() {
                    let old = u32::from_be_bytes(data[at..at + 4].try_into().unwrap_or([0; 4])) as u64;
                    data[at..at + 4].copy_from_slice(&((old + shift) as u32).to_be_bytes());
                }
            }
        }
    }
    data.into()
}

/// The boxes of type `kind` directly inside `data[from..to]`, as (start, end) offsets.
fn boxes(data: &[u8], mut from: usize, to: usize, kind: &[u8; 4]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    while from + 8 <= to {
        let size = u32::from_be_bytes([data[from], data[from + 1], data[from + 2], data[from + 3]]) as usize;
        let size = match size {
            0 => to - from,
            1 if from + 16 <= to => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[from + 8..from + 16]);
                u64::from_be_bytes(b) as usize
            }
            s => s,
        };
        if size < 8 || from + size > to {
            break;
        }
        if &data[from + 4..from + 8] == kind {
            found.push((from, from + size));
        }
        from += size;
    }
    found
}

/// When each chunk of each segment was written, in nanoseconds since `base` (0: not yet).
pub struct Written {
    pub base: Instant,
    at: Vec<Vec<AtomicU64>>,
}

impl Written {
    pub fn new(segments: usize, chunks: usize) -> Arc<Written> {
        Arc::new(Written {
            base: Instant::now(),
            at: (0..segments)
                .map(|_| (0..chunks).map(|_| AtomicU64::new(0)).collect())
                .collect(),
        })
    }
    fn mark(&self, segment: u64, chunk: usize) {
        let nanos = (self.base.elapsed().as_nanos() as u64).max(1);
        if let Some(slot) = self.at.get(segment as usize).and_then(|s| s.get(chunk)) {
            slot.store(nanos, Ordering::Release);
        }
    }
    /// When chunk `chunk` of `segment` was written, if it was.
    pub fn at(&self, segment: u64, chunk: usize) -> Option<Instant> {
        let nanos = self.at.get(segment as usize)?.get(chunk)?.load(Ordering::Acquire);
        (nanos > 0).then(|| self.base + Duration::from_nanos(nanos))
    }
}

/// One segment's upload in progress.
pub struct SegmentUpload {
    tx: mpsc::Sender<Chunk>,
    task: tokio::task::JoinHandle<Result<u16, String>>,
}

/// Uploads the replay to ldash the way ffmpeg does.
pub struct Publisher {
    origin: Origin,
    /// Segments and deletes (a connection each, as needed).
    client: Client,
    /// The manifest and init segment, one after the other on one connection, as ffmpeg sends them:
    /// ldash orders uploads of one path by connection and request order.
    manifests: tokio::sync::Mutex<clients::RawConn>,
    /// `/ldash/upload/FOLDER`
    route: String,
    pub rec: Arc<Recording>,
}

impl Publisher {
    pub async fn new(origin: &Origin, folder: &str, rec: Arc<Recording>) -> Result<Publisher, String> {
        Ok(Publisher {
            origin: origin.clone(),
            client: origin.connect(Proto::H1).await?,
            manifests: tokio::sync::Mutex::new(clients::RawConn::new(origin.http)),
            route: format!("/ldash/upload/{folder}"),
            rec,
        })
    }

    /// The upload route of segment `n`.
    fn segment(&self, n: u64) -> String {
        format!("{}/chunk-stream0-{n:05}.m4s", self.route)
    }

    async fn put(&self, name: &str, body: &[u8]) -> Result<(), String> {
        let status = self
            .manifests
            .lock()
            .await
            .put(&format!("{}/{name}", self.route), body)
            .await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("upload of {name}: {status}"))
        }
    }

    /// Uploads the manifest (availability from `start`) and the init segment.
    pub async fn start(&self, start: SystemTime) -> Result<(), String> {
        self.put("stream.mpd", self.rec.mpd(start).as_bytes()).await?;
        self.put("init-stream0.m4s", &self.rec.init).await
    }

    /// Re-uploads the manifest, as ffmpeg does at every segment boundary.
    pub async fn manifest(&self, start: SystemTime) -> Result<(), String> {
        self.put("stream.mpd", self.rec.mpd(start).as_bytes()).await
    }

    /// Opens the upload of segment 1 and waits (bounded) until ldash has it. Segment 2 is opened
    /// while 1 is still uploading; were both opened at once, ldash could see 2 arrive first, and an
    /// upload of a lower number after a higher one is how a restarted encoder looks (a new run).
    pub async fn open_first(&self) -> Result<SegmentUpload, String> {
        let upload = self.open(1);
        let route = self.segment(1).replace("/ldash/upload/", "/ldash/download/");
        // A client of its own: a probe connection left idle in the segments' pool could carry a
        // later segment with an arrival before segment 1's.
        let probe = self.origin.connect(Proto::H1).await?;
        for _ in 0..2000 {
            if probe
                .request(Method::HEAD, &route)
                .send()
                .await
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(upload);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Err("segment 1 did not appear within 2 s".into())
    }

    /// Opens the upload of segment `n` (the path exists from now on, still empty).
    pub fn open(&self, n: u64) -> SegmentUpload {
        let (tx, task) = clients::upload_stream(&self.client, &self.segment(n));
        SegmentUpload { tx, task }
    }

    /// Deletes segment `n`, as ffmpeg does beyond its window.
    pub async fn delete(&self, n: u64) -> Result<(), String> {
        self.client
            .request(Method::DELETE, &self.segment(n))
            .send()
            .await
            .map(|_| ())
    }
}

impl SegmentUpload {
    /// Sends one chunk, stamping `written` just before it goes out.
    pub async fn send(&self, chunk: Bytes, written: Option<(&Written, u64, usize)>) -> Result<(), String> {
        if let Some((w, segment, index)) = written {
            w.mark(segment, index);
        }
        self.tx
            .send(Ok(chunk))
            .await
            .map_err(|_| "the segment upload ended early".to_owned())
    }

    /// Ends the upload and waits for the server's answer.
    pub async fn finish(self) -> Result<(), String> {
        drop(self.tx);
        match self.task.await.map_err(|e| e.to_string())?? {
            200..=299 => Ok(()),
            status => Err(format!("segment upload answered {status}")),
        }
    }
}
