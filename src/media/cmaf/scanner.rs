//! The incremental half of the CMAF reader: [`ChunkScanner`] is fed an upload piece by piece and
//! reports each CMAF chunk once its `mdat` is complete, keeping only box headers and whole `moof`
//! boxes (small) and counting `mdat` payloads without copying them.

use std::collections::HashMap;

use super::boxes::{be32, be64, children, version};
use super::{Chunk, CmafError, Init};

/// Largest `moof` accepted (a fragment header with thousands of samples is still far below this).
const MAX_MOOF: u64 = 4 << 20;

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
