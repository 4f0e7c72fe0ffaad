//! The track reader of CMAF ingest: it is fed one track's POST body as it arrives and hands back the
//! init segment (once its `moov` is in) and then each CMAF chunk whole, checked: one track, a
//! non-zero timescale, decode times that never go back, no fragment above the size limit.

use bytes::{Bytes, BytesMut};

use super::IngestError;
use crate::media::cmaf::{parse_init, Chunk, ChunkScanner, Init};

/// What a piece of the body completed.
#[derive(Debug, Clone, PartialEq)]
pub enum TrackEvent {
    /// The init segment (`ftyp` and `moov`, with anything before the `moov`), and what it says.
    Init {
        /// Its bytes, as uploaded.
        bytes: Bytes,
        /// Its one track.
        init: Init,
    },
    /// A CMAF chunk (any `styp`, `prft` or `emsg`, then `moof` and `mdat`), whole.
    Chunk {
        /// Its bytes, as uploaded.
        bytes: Bytes,
        /// Its timing.
        chunk: Chunk,
    },
}

/// Box types a CMAF track may start with.
const LEADING: [&[u8; 4]; 6] = [b"ftyp", b"styp", b"free", b"skip", b"uuid", b"moov"];

/// Reads one CMAF track as it arrives.
#[derive(Debug)]
pub struct TrackReader {
    /// Largest init segment or chunk accepted, in bytes.
    limit: u64,
    /// Bytes received but not yet handed back: the init segment so far, then the chunk so far.
    pending: BytesMut,
    /// The scanner, once the init segment is in.
    scanner: Option<ChunkScanner>,
    /// The previous chunk's decode time.
    previous: Option<u64>,
}

impl TrackReader {
    /// A reader that refuses an init segment or a chunk larger than `limit` bytes.
    pub fn new(limit: u64) -> Self {
        TrackReader {
            limit,
            pending: BytesMut::new(),
            scanner: None,
            previous: None,
        }
    }

    /// Feeds the next piece of the body; returns what it completed. After an error the track is
    /// refused: nothing more is read.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<TrackEvent>, IngestError> {
        self.pending.extend_from_slice(data);
        let mut events = Vec::new();
        let after_init;
        let fed = match self.scanner {
            Some(_) => data,
            None => match self.take_init()? {
                Some(event) => {
                    events.push(event);
                    // What followed the moov in this piece starts the first chunk.
                    after_init = self.pending.to_vec();
                    &after_init[..]
                }
                None => return Ok(events),
            },
        };
        let Some(scanner) = self.scanner.as_mut() else {
            return Ok(events);
        };
        let chunks = scanner.push(fed)?;
        for chunk in chunks {
            let len = (chunk.end - chunk.start) as usize;
            if len as u64 > self.limit {
                return Err(IngestError::FragmentTooLarge { limit: self.limit });
            }
            if len > self.pending.len() {
                return Err(IngestError::NotCmaf("a chunk the reader lost track of".into()));
            }
            let bytes = self.pending.split_to(len).freeze();
            self.check(&chunk)?;
            events.push(TrackEvent::Chunk { bytes, chunk });
        }
        if self.pending.len() as u64 > self.limit {
            return Err(IngestError::FragmentTooLarge { limit: self.limit });
        }
        Ok(events)
    }

    /// Called at the end of the body: a track that stops inside a box is truncated.
    pub fn finish(&self) -> Result<(), IngestError> {
        if self.scanner.is_none() {
            return Err(IngestError::NoInit);
        }
        // Whole boxes after the last chunk (ffmpeg ends with an `mfra`) are fine; a part of one, or
        // a moof without its mdat, is a track cut short.
        let mut at = 0usize;
        while at < self.pending.len() {
            match box_header(&self.pending[at..]) {
                Ok(Some((kind, size)))
                    if kind != *b"moof" && kind != *b"mdat" && size <= (self.pending.len() - at) as u64 =>
                {
                    at += size as usize;
                }
                _ => return Err(IngestError::Truncated(self.pending.len() as u64)),
            }
        }
        Ok(())
    }

    /// Reads the init segment's boxes from the front of `pending`; once the `moov` is in, takes the
    /// init segment out of `pending` (which keeps what follows) and starts the scanner.
    fn take_init(&mut self) -> Result<Option<TrackEvent>, IngestError> {
        let mut at = 0usize;
        while let Some((kind, size)) = box_header(&self.pending[at..])? {
            if at == 0 && !LEADING.contains(&&kind) {
                return Err(IngestError::NotCmaf(format!(
                    "it starts with {}, not an ftyp box",
                    printable(&kind)
                )));
            }
            if kind == *b"moof" || kind == *b"mdat" {
                return Err(IngestError::NoInit);
            }
            if size > self.limit {
                return Err(IngestError::FragmentTooLarge { limit: self.limit });
            }
            let end = at.saturating_add(usize::try_from(size).unwrap_or(usize::MAX));
            if end > self.pending.len() {
                break;
            }
            at = end;
            if kind == *b"moov" {
                return self.init_complete(at).map(Some);
            }
        }
        if self.pending.len() as u64 > self.limit {
            return Err(IngestError::FragmentTooLarge { limit: self.limit });
        }
        Ok(None)
    }

    /// The init segment is `pending[..end]`.
    fn init_complete(&mut self, end: usize) -> Result<TrackEvent, IngestError> {
        let bytes = self.pending.split_to(end).freeze();
        let init = parse_init(&bytes)?;
        let track = match init.tracks.as_slice() {
            [track] => track,
            tracks => return Err(IngestError::Tracks(tracks.len())),
        };
        if track.timescale == 0 {
            return Err(IngestError::ZeroTimescale);
        }
        self.scanner = Some(ChunkScanner::new(Some(&init)));
        Ok(TrackEvent::Init { bytes, init })
    }

    fn check(&mut self, chunk: &Chunk) -> Result<(), IngestError> {
        // Past 2^53 ticks times lose precision as seconds (and nothing real gets there).
        if chunk.decode_time.saturating_add(chunk.duration) > 1 << 53 {
            return Err(IngestError::NotCmaf(format!(
                "a decode time of {} ticks is out of range",
                chunk.decode_time
            )));
        }
        if let Some(previous) = self.previous {
            if chunk.decode_time < previous {
                return Err(IngestError::DecodeTimeBack {
                    from: previous,
                    to: chunk.decode_time,
                });
            }
        }
        self.previous = Some(chunk.decode_time);
        Ok(())
    }
}

/// The type and size of the box at the front of `data`, once its header is in.
fn box_header(data: &[u8]) -> Result<Option<([u8; 4], u64)>, IngestError> {
    let Some(header) = data.get(..8) else {
        return Ok(None);
    };
    let kind = [header[4], header[5], header[6], header[7]];
    let size = match u32::from_be_bytes([header[0], header[1], header[2], header[3]]) {
        0 => return Err(IngestError::NotCmaf("a box runs to the end of the stream".into())),
        1 => match data.get(8..16) {
            Some(large) => large.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)),
            None => return Ok(None),
        },
        n => u64::from(n),
    };
    if size < 8 {
        return Err(IngestError::NotCmaf(format!(
            "a {} box of {size} bytes",
            printable(&kind)
        )));
    }
    Ok(Some((kind, size)))
}

fn printable(kind: &[u8; 4]) -> String {
    if kind.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("'{}'", String::from_utf8_lossy(kind))
    } else {
        format!("the bytes {kind:02x?}")
    }
}
