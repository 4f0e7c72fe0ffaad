//! An incremental CMAF reader: it is fed an upload's bytes as they arrive (in HTTP chunks that do not
//! line up with CMAF chunks) and reports each CMAF chunk (a `moof` with its `mdat`, and any `styp`,
//! `prft` or `emsg` before it) once its last byte is in, with its decode time, duration and whether
//! it starts with a sync sample. It keeps only box headers and the small `moof` boxes; `mdat`
//! payloads are counted, never copied. Init segments are parsed whole with [`parse_init`].

use std::collections::HashMap;

/// Why CMAF bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmafError {
    /// A box is shorter than its own header, or its fields run past its end.
    #[error("malformed {0} box")]
    Malformed(&'static str),
    /// A box whose size is 0 (to the end of the file) cannot be delimited while the file grows.
    #[error("a box extends to the end of the file, which a growing upload cannot delimit")]
    OpenEnded,
    /// A `moof` larger than any sane fragment header.
    #[error("a moof box of {0} bytes is larger than the reader accepts")]
    MoofTooLarge(u64),
    /// No `moov` in what should be an init segment.
    #[error("no moov box: not an init segment")]
    NoMovie,
}

/// Largest `moof` accepted (a fragment header with thousands of samples is still far below this).
const MAX_MOOF: u64 = 4 << 20;

/// What an init segment says about one track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// track_ID from `tkhd`.
    pub id: u32,
    /// Ticks per second from `mdhd`.
    pub timescale: u32,
    /// Handler type from `hdlr` (`vide`, `soun`, ...).
    pub handler: [u8; 4],
    /// default_sample_duration from `trex`.
    pub default_duration: u32,
    /// default_sample_flags from `trex`.
    pub default_flags: u32,
}

/// An init segment's tracks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Init {
    /// The tracks, in file order.
    pub tracks: Vec<Track>,
}

impl Init {
    /// The track with `id`, or the only track when there is one.
    pub fn track(&self, id: u32) -> Option<&Track> {
        self.tracks
            .iter()
            .find(|t| t.id == id)
            .or(match self.tracks.as_slice() {
                [only] => Some(only),
                _ => None,
            })
    }
}

/// One CMAF chunk of a segment: bytes `start..end` of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Offset of the chunk's first byte (the end of the previous chunk, or 0).
    pub start: u64,
    /// Offset just past the chunk's `mdat`.
    pub end: u64,
    /// track_ID of the chunk's (first) track fragment.
    pub track_id: u32,
    /// baseMediaDecodeTime from `tfdt`, in the track's timescale.
    pub decode_time: u64,
    /// Sum of the sample durations, in the track's timescale.
    pub duration: u64,
    /// Number of samples.
    pub samples: u32,
    /// True when the first sample is a sync sample.
    pub independent: bool,
}

/// Reads the tracks of an init segment (`ftyp` + `moov`).
pub fn parse_init(bytes: &[u8]) -> Result<Init, CmafError> {
    let moov = children(bytes).find_map(|b| b.ok().filter(|(kind, _)| kind == b"moov").map(|(_, body)| body));
    let moov = moov.ok_or(CmafError::NoMovie)?;
    let mut tracks = Vec::new();
    let mut trex: HashMap<u32, (u32, u32)> = HashMap::new();
    for item in children(moov) {
        let (kind, body) = item?;
        match &kind {
            b"trak" => tracks.push(parse_trak(body)?),
            b"mvex" => {
                for item in children(body) {
                    let (kind, body) = item?;
                    if &kind == b"trex" {
                        let id = be32(body, 4, "trex")?;
                        trex.insert(id, (be32(body, 12, "trex")?, be32(body, 20, "trex")?));
                    }
                }
            }
            _ => {}
        }
    }
    for track in &mut tracks {
        if let Some(&(duration, flags)) = trex.get(&track.id) {
            track.default_duration = duration;
            track.default_flags = flags;
        }
    }
    Ok(Init { tracks })
}

fn parse_trak(trak: &[u8]) -> Result<Track, CmafError> {
    let mut track = Track {
        id: 0,
        timescale: 0,
        handler: *b"    ",
        default_duration: 0,
        default_flags: 0,
    };
    for item in children(trak) {
        let (kind, body) = item?;
        match &kind {
            b"tkhd" => {
                let at = if version(body) == 1 { 20 } else { 12 };
                track.id = be32(body, at, "tkhd")?;
            }
            b"mdia" => {
                for item in children(body) {
                    let (kind, body) = item?;
                    match &kind {
                        b"mdhd" => {
                            let at = if version(body) == 1 { 20 } else { 12 };
                            track.timescale = be32(body, at, "mdhd")?;
                        }
                        b"hdlr" => {
                            let handler = body.get(8..12).ok_or(CmafError::Malformed("hdlr"))?;
                            track.handler.copy_from_slice(handler);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(track)
}

/// Where the scanner is inside the byte stream.
#[derive(Debug)]
enum State {
    /// Collecting a box header.
    Header,
    /// Collecting a `moof` whole; `remaining` bytes to go.
    Moof { remaining: u64 },
    /// Passing over a box's payload; at the end of an `mdat` a chunk is complete.
    Skip { remaining: u64, mdat: bool },
    /// A previous error: nothing more is read.
    Failed,
}

/// Timing of the last `moof` seen, waiting for its `mdat`.
#[derive(Debug, Clone, Copy)]
struct Fragment {
    track_id: u32,
    decode_time: u64,
    duration: u64,
    samples: u32,
    independent: bool,
}

/// Finds CMAF chunks in a byte stream fed piece by piece.
#[derive(Debug)]
pub struct ChunkScanner {
    state: State,
    /// Bytes consumed so far.
    pos: u64,
    /// Where the next chunk starts.
    chunk_start: u64,
    /// A box header, or a whole `moof`, being collected.
    buf: Vec<u8>,
    fragment: Option<Fragment>,
    /// trex defaults per track (duration, flags), from the init segment when known.
    defaults: HashMap<u32, (u32, u32)>,
}

impl ChunkScanner {
    /// A scanner; `init` supplies the `trex` defaults used when a fragment has no durations or flags.
    pub fn new(init: Option<&Init>) -> Self {
        let defaults = init
            .map(|init| {
                init.tracks
                    .iter()
                    .map(|t| (t.id, (t.default_duration, t.default_flags)))
                    .collect()
            })
            .unwrap_or_default();
        ChunkScanner {
            state: State::Header,
            pos: 0,
            chunk_start: 0,
            buf: Vec::new(),
            fragment: None,
            defaults,
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Feeds the next bytes; returns the chunks they completed. After an error, nothing more is read.
    pub fn push(&mut self, mut data: &[u8]) -> Result<Vec<Chunk>, CmafError> {
        let mut done = Vec::new();
        while !data.is_empty() {
            let used = match self.step(data, &mut done) {
                Ok(used) => used,
                Err(err) => {
                    self.state = State::Failed;
                    return Err(err);
                }
            };
            if used == 0 {
                break;
            }
            self.pos += used as u64;
            data = &data[used..];
        }
        Ok(done)
    }

    /// Consumes some of `data`, returning how much.
    fn step(&mut self, data: &[u8], done: &mut Vec<Chunk>) -> Result<usize, CmafError> {
        match &mut self.state {
            State::Failed => Ok(0),
            State::Header => {
                let want = if self.buf.len() >= 8 && be32(&self.buf, 0, "box")? == 1 {
                    16
                } else {
                    8
                };
                let take = (want - self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..take]);
                if self.buf.len() == want {
                    self.header_complete()?;
                    if let State::Skip { remaining: 0, mdat } = self.state {
                        // An empty box ends with its header (an empty mdat still closes its chunk).
                        self.state = State::Header;
                        if mdat {
                            self.mdat_complete(self.pos + take as u64, done);
                        }
                    }
                }
                Ok(take)
            }
            State::Moof { remaining } => {
                let take = (*remaining).min(data.len() as u64) as usize;
                self.buf.extend_from_slice(&data[..take]);
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.fragment = Some(self.parse_moof()?);
                    self.buf.clear();
                    self.state = State::Header;
                }
                Ok(take)
            }
            State::Skip { remaining, mdat } => {
                let take = (*remaining).min(data.len() as u64) as usize;
                *remaining -= take as u64;
                if *remaining == 0 {
                    let mdat = *mdat;
                    self.state = State::Header;
                    if mdat {
                        self.mdat_complete(self.pos + take as u64, done);
                    }
                }
                Ok(take)
            }
        }
    }

    fn header_complete(&mut self) -> Result<(), CmafError> {
        let size32 = be32(&self.buf, 0, "box")?;
        if self.buf.len() == 8 && size32 == 1 {
            return Ok(()); // a 64-bit size follows
        }
        let header = self.buf.len() as u64;
        let size = match size32 {
            0 => return Err(CmafError::OpenEnded),
            1 => be64(&self.buf, 8, "box")?,
            n => u64::from(n),
        };
        if size < header {
            return Err(CmafError::Malformed("box"));
        }
        let kind: [u8; 4] = [self.buf[4], self.buf[5], self.buf[6], self.buf[7]];
        let remaining = size - header;
        match &kind {
            b"moof" if size > MAX_MOOF => return Err(CmafError::MoofTooLarge(size)),
            b"moof" => {
                if remaining == 0 {
                    return Err(CmafError::Malformed("moof"));
                }
                // Keep the header so the buffer holds the whole box.
                self.state = State::Moof { remaining };
                return Ok(());
            }
            b"mdat" => self.state = State::Skip { remaining, mdat: true },
            _ => self.state = State::Skip { remaining, mdat: false },
        }
        self.buf.clear();
        Ok(())
    }

    fn mdat_complete(&mut self, end: u64, done: &mut Vec<Chunk>) {
        if let Some(f) = self.fragment.take() {
            done.push(Chunk {
                start: self.chunk_start,
                end,
                track_id: f.track_id,
                decode_time: f.decode_time,
                duration: f.duration,
                samples: f.samples,
                independent: f.independent,
            });
            self.chunk_start = end;
        }
    }

    fn parse_moof(&self) -> Result<Fragment, CmafError> {
        let header = if be32(&self.buf, 0, "moof")? == 1 { 16 } else { 8 };
        let body = self.buf.get(header..).ok_or(CmafError::Malformed("moof"))?;
        for item in children(body) {
            let (kind, traf) = item?;
            if &kind == b"traf" {
                return self.parse_traf(traf);
            }
        }
        Err(CmafError::Malformed("moof"))
    }

    fn parse_traf(&self, traf: &[u8]) -> Result<Fragment, CmafError> {
        let mut fragment = Fragment {
            track_id: 0,
            decode_time: 0,
            duration: 0,
            samples: 0,
            independent: true,
        };
        let (mut default_duration, mut default_flags) = (None, None);
        let mut first_flags = None;
        for item in children(traf) {
            let (kind, body) = item?;
            match &kind {
                b"tfhd" => {
                    let flags = be32(body, 0, "tfhd")? & 0x00ff_ffff;
                    fragment.track_id = be32(body, 4, "tfhd")?;
                    let mut at = 8;
                    if flags & 0x1 != 0 {
                        at += 8; // base-data-offset
                    }
                    if flags & 0x2 != 0 {
                        at += 4; // sample-description-index
                    }
                    if flags & 0x8 != 0 {
                        default_duration = Some(be32(body, at, "tfhd")?);
                        at += 4;
                    }
                    if flags & 0x10 != 0 {
                        at += 4; // default-sample-size
                    }
                    if flags & 0x20 != 0 {
                        default_flags = Some(be32(body, at, "tfhd")?);
                    }
                }
                b"tfdt" => {
                    fragment.decode_time = if version(body) == 1 {
                        be64(body, 4, "tfdt")?
                    } else {
                        u64::from(be32(body, 4, "tfdt")?)
                    };
                }
                _ => {}
            }
        }
        let trex = self.defaults.get(&fragment.track_id).copied();
        let default_duration = default_duration.or(trex.map(|t| t.0)).unwrap_or(0);
        let default_flags = default_flags.or(trex.map(|t| t.1)).unwrap_or(0);
        for item in children(traf) {
            let (kind, body) = item?;
            if &kind != b"trun" {
                continue;
            }
            let run = parse_trun(body, default_duration)?;
            fragment.duration += run.duration;
            fragment.samples += run.samples;
            if first_flags.is_none() && run.samples > 0 {
                first_flags = Some(run.first_flags.unwrap_or(default_flags));
            }
        }
        // sample_is_non_sync_sample is bit 16 of the sample flags.
        fragment.independent = first_flags.unwrap_or(default_flags) & 0x0001_0000 == 0;
        Ok(fragment)
    }
}

struct Run {
    samples: u32,
    duration: u64,
    first_flags: Option<u32>,
}

fn parse_trun(body: &[u8], default_duration: u32) -> Result<Run, CmafError> {
    let flags = be32(body, 0, "trun")? & 0x00ff_ffff;
    let samples = be32(body, 4, "trun")?;
    let mut at = 8;
    if flags & 0x1 != 0 {
        at += 4; // data-offset
    }
    let mut first_flags = None;
    if flags & 0x4 != 0 {
        first_flags = Some(be32(body, at, "trun")?);
        at += 4;
    }
    let per_sample = [0x100, 0x200, 0x400, 0x800]
        .iter()
        .filter(|bit| flags & *bit != 0)
        .count();
    let needed = (samples as usize)
        .checked_mul(per_sample * 4)
        .ok_or(CmafError::Malformed("trun"))?;
    if body.len() < at + needed {
        return Err(CmafError::Malformed("trun"));
    }
    let mut duration = 0u64;
    for i in 0..samples as usize {
        let mut field = at + i * per_sample * 4;
        if flags & 0x100 != 0 {
            duration += u64::from(be32(body, field, "trun")?);
            field += 4;
        } else {
            duration += u64::from(default_duration);
        }
        if flags & 0x200 != 0 {
            field += 4;
        }
        if i == 0 && flags & 0x400 != 0 && first_flags.is_none() {
            first_flags = Some(be32(body, field, "trun")?);
        }
    }
    Ok(Run {
        samples,
        duration,
        first_flags,
    })
}

/// The child boxes of a fully buffered box payload.
fn children(data: &[u8]) -> impl Iterator<Item = Result<([u8; 4], &[u8]), CmafError>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let size32 = be32(rest, 0, "box")?;
            let kind: [u8; 4] = rest
                .get(4..8)
                .ok_or(CmafError::Malformed("box"))?
                .try_into()
                .map_err(|_| CmafError::Malformed("box"))?;
            let (size, header) = match size32 {
                0 => (rest.len() as u64, 8),
                1 => (be64(rest, 8, "box")?, 16),
                n => (u64::from(n), 8),
            };
            if size < header as u64 || size > rest.len() as u64 {
                return Err(CmafError::Malformed("box"));
            }
            let size = size as usize;
            let body = &rest[header..size];
            Ok((kind, body, size))
        })();
        match parsed {
            Ok((kind, body, size)) => {
                rest = &rest[size..];
                Some(Ok((kind, body)))
            }
            Err(err) => {
                rest = &[];
                Some(Err(err))
            }
        }
    })
}

fn version(body: &[u8]) -> u8 {
    body.first().copied().unwrap_or(0)
}

fn be32(data: &[u8], at: usize, what: &'static str) -> Result<u32, CmafError> {
    data.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or(CmafError::Malformed(what))
}

fn be64(data: &[u8], at: usize, what: &'static str) -> Result<u64, CmafError> {
    data.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(CmafError::Malformed(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg/init-stream0.m4s");
    const SEGMENT: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg/chunk-stream0-00002.m4s");
    const AUDIO_INIT: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg/init-stream1.m4s");
    const AUDIO: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg/chunk-stream1-00002.m4s");

    fn scan_whole(init: &Init, data: &[u8]) -> Vec<Chunk> {
        ChunkScanner::new(Some(init)).push(data).expect("scan")
    }

    #[test]
    fn init_segment_gives_track_and_timescale() {
        let init = parse_init(INIT).expect("video init");
        assert_eq!(init.tracks.len(), 1);
        assert_eq!(&init.tracks[0].handler, b"vide");
        assert!(init.tracks[0].timescale > 0);
        let audio = parse_init(AUDIO_INIT).expect("audio init");
        assert_eq!(&audio.tracks[0].handler, b"soun");
        assert_eq!(audio.tracks[0].timescale, 44100);
    }

    #[test]
    fn ffmpeg_segment_has_five_chunks_of_a_fifth_of_a_second() {
        let init = parse_init(INIT).expect("init");
        let timescale = u64::from(init.tracks[0].timescale);
        let chunks = scan_whole(&init, SEGMENT);
        assert_eq!(chunks.len(), 5, "1 s segment in 0.2 s fragments: {chunks:?}");
        assert_eq!(chunks[0].start, 0, "the first chunk includes the styp");
        assert_eq!(
            chunks.last().map(|c| c.end),
            Some(SEGMENT.len() as u64),
            "chunks tile the segment"
        );
        for pair in chunks.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "chunks are contiguous");
            assert_eq!(
                pair[0].decode_time + pair[0].duration,
                pair[1].decode_time,
                "decode times follow"
            );
        }
        assert!(chunks[0].independent, "a segment starts with a sync sample");
        assert!(
            chunks[1..].iter().all(|c| !c.independent),
            "later chunks of a 1 s GOP start with non-sync samples"
        );
        let total: u64 = chunks.iter().map(|c| c.duration).sum();
        assert_eq!(total, timescale, "the chunks add up to one second");
        assert!(
            chunks.iter().all(|c| c.duration * 5 == timescale),
            "each chunk is 0.2 s: {chunks:?}"
        );
    }

    #[test]
    fn byte_by_byte_feeding_finds_the_same_chunks() {
        let init = parse_init(INIT).expect("init");
        let whole = scan_whole(&init, SEGMENT);
        let mut scanner = ChunkScanner::new(Some(&init));
        let mut found = Vec::new();
        for (i, piece) in SEGMENT.chunks(7).enumerate() {
            let done = scanner.push(piece).expect("scan");
            for chunk in &done {
                assert!(
                    chunk.end <= ((i + 1) * 7) as u64,
                    "a chunk is reported once its last byte is in"
                );
            }
            found.extend(done);
        }
        assert_eq!(found, whole);
    }

    #[test]
    fn audio_chunks_are_all_independent() {
        let init = parse_init(AUDIO_INIT).expect("init");
        let chunks = scan_whole(&init, AUDIO);
        assert!(chunks.len() >= 4, "{chunks:?}");
        assert!(chunks.iter().all(|c| c.independent));
    }

    #[test]
    fn garbage_errors_without_panicking() {
        let init = parse_init(INIT).expect("init");
        for bad in [
            &b"\0\0\0\x01moof"[..],
            b"\0\0\0\x04abcd",
            b"\0\0\0\0mdat",
            b"\0\0\0\x10moof\0\0\0\x08traf",
        ] {
            let mut scanner = ChunkScanner::new(Some(&init));
            let _ = scanner.push(bad);
            let _ = scanner.push(SEGMENT);
        }
        for cut in [10, 100, 500, SEGMENT.len() - 1] {
            let mut scanner = ChunkScanner::new(Some(&init));
            let chunks = scanner.push(&SEGMENT[..cut]).expect("a prefix is fine");
            assert!(chunks.iter().all(|c| c.end <= cut as u64));
        }
        assert!(parse_init(b"junk").is_err());
        assert_eq!(parse_init(SEGMENT).err(), Some(CmafError::NoMovie));
        // Corrupt every byte of a moof in turn: errors are fine, panics are not.
        for at in 0..200.min(SEGMENT.len()) {
            let mut copy = SEGMENT.to_vec();
            copy[at] ^= 0xff;
            let _ = ChunkScanner::new(Some(&init)).push(&copy);
            let _ = parse_init(&copy);
        }
    }
}
