//! An incremental CMAF reader: it is fed an upload's bytes as they arrive (in HTTP chunks that do not
//! line up with CMAF chunks) and reports each CMAF chunk (a `moof` with its `mdat`, and any `styp`,
//! `prft` or `emsg` before it) once its last byte is in, with its decode time, duration and whether
//! it starts with a sync sample. It keeps only box headers and the small `moof` boxes; `mdat`
//! payloads are counted, never copied. Init segments are parsed whole with [`parse_init`].
//!
//! Here: the model (tracks, chunks) and the init segment; the incremental [`ChunkScanner`] is in
//! `scanner`; the box walking and field reads both rely on are in `boxes`.

mod boxes;
mod codec;
mod scanner;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use boxes::{be32, children, version};

pub use codec::Coding;
pub use scanner::ChunkScanner;

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
    /// The coding its first sample entry describes.
    pub coding: Option<Coding>,
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

/// The coding in `minf` > `stbl` > `stsd`, if there is one.
fn sample_description(minf: &[u8]) -> Result<Option<Coding>, CmafError> {
    for item in children(minf) {
        let (kind, stbl) = item?;
        if &kind != b"stbl" {
            continue;
        }
        for item in children(stbl) {
            let (kind, stsd) = item?;
            if &kind == b"stsd" {
                return codec::parse_stsd(stsd);
            }
        }
    }
    Ok(None)
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
        coding: None,
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
                        b"minf" => track.coding = sample_description(body)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(track)
}
