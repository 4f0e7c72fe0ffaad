//! The HTTP/3 frame guard: reads the frame headers of a stream the client opened as its bytes
//! arrive, so that no frame but DATA longer than the header limit (`--max-header-bytes`) ever
//! reaches h3. h3 buffers a whole frame before it looks at it, so a HEADERS frame that declares
//! 1 GiB would otherwise be buffered for as long as its bytes keep coming.
//!
//! - On a request stream an oversized frame is replaced, at its frame header, by a small HEADERS
//!   frame whose fields exceed h3's `max_field_section_size` (set to the same limit): h3 then
//!   answers `431 Request Header Fields Too Large` itself, as it does for a block that decodes too
//!   large. Nothing after the frame header is read.
//! - On the client's control stream an oversized frame is a connection error
//!   (`H3_EXCESSIVE_LOAD`): SETTINGS and GOAWAY are a few bytes.
//! - Other unidirectional streams (QPACK's, unknown types) are not frames: passed on untouched.
//!
//! Pure code over byte chunks: payload bytes are passed on as the same `Bytes` (sliced, never
//! copied); only a frame header split between two chunks is copied (at most 16 bytes) and held
//! back until it is whole, so that h3 never sees part of a header that is then replaced.

use std::collections::VecDeque;

use bytes::Bytes;

/// HTTP/3 frame types the guard treats apart.
const DATA: u64 = 0x00;
const HEADERS: u64 = 0x01;
/// WebTransport's bidirectional stream signal: a frame type with no length after it.
const WEBTRANSPORT_STREAM: u64 = 0x41;
/// The control stream's type on a unidirectional stream.
const CONTROL_STREAM: u64 = 0x00;
/// A QPACK indexed field line from the static table, entry 17 (`:method: GET`): one byte that
/// counts 42 bytes towards a field section's size (name, value and 32).
const INDEXED_METHOD_GET: u8 = 0xd1;
const INDEXED_FIELD_SIZE: usize = 42;

/// Which kind of stream the client opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A bidirectional stream: an HTTP/3 request.
    Request,
    /// A unidirectional stream: its type comes first.
    Unidirectional,
}

/// A frame longer than the limit on a stream where it cannot be answered with 431.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an HTTP/3 frame of type {frame_type:#x} declares {length} bytes, over the {limit}-byte limit")]
pub struct Oversized {
    /// The frame's type.
    pub frame_type: u64,
    /// The length it declares.
    pub length: u64,
    /// The limit.
    pub limit: u64,
}

/// Where the guard is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// A unidirectional stream's type (a varint) is being read.
    StreamType,
    /// A frame header (type and length varints) is being read.
    FrameHeader,
    /// Inside a frame's payload: this many bytes are left.
    Payload(u64),
    /// Not frames (or no longer worth reading): everything is passed on.
    Off,
    /// An oversized frame was replaced: nothing more is passed on.
    Refused,
}

/// The guard of one stream.
#[derive(Debug)]
pub struct FrameGuard {
    limit: u64,
    kind: StreamKind,
    scan: Scan,
    /// The bytes of the varints being read, held back from h3 until they are whole.
    held: [u8; 16],
    held_len: usize,
}

/// What a chunk became: the pieces to hand to h3, in order.
#[derive(Debug, Default)]
pub struct Passed {
    /// Pieces for h3 (slices of the chunk, a held header, or the replacement frame).
    pub pieces: VecDeque<Bytes>,
    /// An oversized frame was replaced on a request stream: stop reading the stream.
    pub refused: bool,
}

impl FrameGuard {
    /// A guard for a stream of `kind` with frames up to `limit` bytes (DATA excepted).
    pub fn new(kind: StreamKind, limit: usize) -> Self {
        Self {
            limit: limit as u64,
            kind,
            scan: match kind {
                StreamKind::Request => Scan::FrameHeader,
                StreamKind::Unidirectional => Scan::StreamType,
            },
            held: [0; 16],
            held_len: 0,
        }
    }

    /// Whether the guard has stopped passing anything on.
    pub fn refused(&self) -> bool {
        self.scan == Scan::Refused
    }

    /// Runs one chunk from the stream through the guard.
    pub fn pass(&mut self, chunk: Bytes) -> Result<Passed, Oversized> {
        let mut passed = Passed::default();
        let mut run_start = 0; // start of the bytes of `chunk` not yet handed on
        let mut at = 0;
        while at < chunk.len() {
            match self.scan {
                Scan::Off => at = chunk.len(),
                Scan::Refused => return Ok(passed),
                Scan::Payload(left) => {
                    let take = left.min((chunk.len() - at) as u64);
                    at += take as usize;
                    self.scan = if take == left {
                        Scan::FrameHeader
                    } else {
                        Scan::Payload(left - take)
                    };
                }
                Scan::StreamType | Scan::FrameHeader => {
                    // Where this header starts in the chunk; None when it began in an earlier one
                    // (then it is at the chunk's start, and its first bytes are held).
                    let starts_here = (self.held_len == 0).then_some(at);
                    let header = loop {
                        if let Some(header) = self.header() {
                            break Some(header);
                        }
                        let Some(&byte) = chunk.get(at) else { break None };
                        if self.held_len == self.held.len() {
                            break None; // cannot happen: two varints are at most 16 bytes
                        }
                        self.held[self.held_len] = byte;
                        self.held_len += 1;
                        at += 1;
                    };
                    let Some(header) = header else {
                        // The chunk ends inside the header: hand on what came before it.
                        let end = starts_here.unwrap_or(run_start);
                        push(&mut passed, chunk.slice(run_start..end));
                        return Ok(passed);
                    };
                    let held = Bytes::copy_from_slice(&self.held[..self.held_len]);
                    self.held_len = 0;
                    if let Err(oversized) = self.next_after(header) {
                        if self.kind == StreamKind::Unidirectional {
                            return Err(oversized);
                        }
                        push(&mut passed, chunk.slice(run_start..starts_here.unwrap_or(run_start)));
                        push(&mut passed, too_large_headers(self.limit));
                        self.scan = Scan::Refused;
                        passed.refused = true;
                        return Ok(passed);
                    }
                    if starts_here.is_none() {
                        // Its first bytes came in an earlier chunk: hand on the whole header
                        // from what was held, then this chunk from after the header.
                        push(&mut passed, held);
                        run_start = at;
                    }
                }
            }
        }
        push(&mut passed, chunk.slice(run_start..));
        Ok(passed)
    }

    /// The varints read so far, once they make a whole header: (type, length if any).
    fn header(&self) -> Option<(u64, Option<u64>)> {
        let bytes = &self.held[..self.held_len];
        let (kind, used) = varint(bytes)?;
        let needs_length = match self.scan {
            Scan::StreamType => false,
            _ => kind != WEBTRANSPORT_STREAM || self.kind != StreamKind::Request,
        };
        if !needs_length {
            return (used == bytes.len()).then_some((kind, None));
        }
        let (length, more) = varint(&bytes[used..])?;
        (used + more == bytes.len()).then_some((kind, Some(length)))
    }

    /// Moves past a whole header; an error for a frame over the limit.
    fn next_after(&mut self, (kind, length): (u64, Option<u64>)) -> Result<(), Oversized> {
        self.scan = match (self.scan, length) {
            (Scan::StreamType, _) if kind == CONTROL_STREAM => Scan::FrameHeader,
            (Scan::StreamType, _) | (_, None) => Scan::Off,
            (_, Some(length)) if kind != DATA && length > self.limit => {
                return Err(Oversized {
                    frame_type: kind,
                    length,
                    limit: self.limit,
                })
            }
            (_, Some(0)) => Scan::FrameHeader,
            (_, Some(length)) => Scan::Payload(length),
        };
        Ok(())
    }
}

fn push(passed: &mut Passed, piece: Bytes) {
    if !piece.is_empty() {
        passed.pieces.push_back(piece);
    }
}

/// A QUIC variable-length integer at the start of `bytes`: (value, bytes used), None if incomplete.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let first = *bytes.first()?;
    let len = 1usize << (first >> 6);
    let rest = bytes.get(1..len)?;
    let value = rest
        .iter()
        .fold(u64::from(first & 0x3f), |value, &b| (value << 8) | u64::from(b));
    Some((value, len))
}

/// A HEADERS frame whose field section counts more than `limit` bytes (indexed `:method: GET`
/// lines, one byte each): what h3 answers with 431.
fn too_large_headers(limit: u64) -> Bytes {
    let fields = usize::try_from(limit).unwrap_or(usize::MAX / 2) / INDEXED_FIELD_SIZE + 1;
    let payload_len = 2 + fields; // the QPACK prefix (no dynamic table), then the fields
    let mut frame = Vec::with_capacity(payload_len + 9);
    frame.push(HEADERS as u8);
    let length = payload_len as u64;
    match length {
        0..=0x3f => frame.push(length as u8),
        0x40..=0x3fff => frame.extend_from_slice(&(0x4000 | length as u16).to_be_bytes()),
        0x4000..=0x3fff_ffff => frame.extend_from_slice(&(0x8000_0000 | length as u32).to_be_bytes()),
        _ => frame.extend_from_slice(&(0xc000_0000_0000_0000 | length).to_be_bytes()),
    }
    frame.extend_from_slice(&[0, 0]);
    frame.resize(frame.len() + fields, INDEXED_METHOD_GET);
    Bytes::from(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1000;

    fn joined(passed: &Passed) -> Vec<u8> {
        passed.pieces.iter().flat_map(|p| p.iter().copied()).collect()
    }

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        let len = payload.len() as u16;
        out.extend_from_slice(&(0x4000 | len).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Runs `bytes` through a guard split into `step`-byte chunks; everything handed on, joined.
    fn through(kind: StreamKind, bytes: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut guard = FrameGuard::new(kind, LIMIT);
        let mut out = Vec::new();
        let mut refused = false;
        for chunk in bytes.chunks(step) {
            let passed = guard.pass(Bytes::copy_from_slice(chunk)).expect("no connection error");
            out.extend(joined(&passed));
            refused |= passed.refused;
        }
        (out, refused)
    }

    #[test]
    fn frames_within_the_limit_pass_unchanged_however_they_are_split() {
        let mut stream = frame(0x01, &[7u8; 900]);
        stream.extend(frame(0x00, &[1u8; 5000]));
        stream.extend(frame(0x21, &[2u8; 10])); // a reserved (grease) frame type
        stream.extend(frame(0x00, &[3u8; 3]));
        for step in [1, 2, 3, 7, 100, 1000, stream.len()] {
            let (out, refused) = through(StreamKind::Request, &stream, step);
            assert_eq!(out, stream, "split every {step} bytes");
            assert!(!refused);
        }
    }

    #[test]
    fn a_large_data_frame_passes_as_the_same_bytes() {
        let mut guard = FrameGuard::new(StreamKind::Request, LIMIT);
        let header = [0x00, 0x80, 0x10, 0x00, 0x00]; // DATA, 1 MiB
        guard.pass(Bytes::copy_from_slice(&header)).expect("passes");
        let body = Bytes::from(vec![9u8; 100_000]);
        let passed = guard.pass(body.clone()).expect("passes");
        assert_eq!(passed.pieces.len(), 1);
        assert_eq!(passed.pieces[0].as_ptr(), body.as_ptr(), "the payload is not copied");
    }

    #[test]
    fn a_headers_frame_declaring_a_gibibyte_is_replaced_at_its_header() {
        let mut stream = vec![0x01, 0xc0, 0, 0, 0, 0x40, 0, 0, 0]; // HEADERS, 1 GiB declared
        stream.extend([b'a'; 500]);
        for step in [1, 4, stream.len()] {
            let (out, refused) = through(StreamKind::Request, &stream, step);
            assert!(refused, "split every {step} bytes");
            assert_eq!(out, too_large_headers(LIMIT as u64), "only the replacement reaches h3");
        }
    }

    #[test]
    fn the_replacement_counts_more_than_the_limit() {
        let frame = too_large_headers(32 << 10);
        let (kind, used) = varint(&frame).expect("type");
        let (length, more) = varint(&frame[used..]).expect("length");
        assert_eq!(kind, HEADERS);
        let payload = &frame[used + more..];
        assert_eq!(payload.len() as u64, length);
        assert_eq!(&payload[..2], &[0, 0], "no dynamic table");
        assert!((payload.len() - 2) * INDEXED_FIELD_SIZE > 32 << 10);
        assert!(payload.len() < 1000, "small: {}", payload.len());
    }

    #[test]
    fn bytes_before_an_oversized_frame_still_pass() {
        let mut stream = frame(0x21, &[1u8; 10]);
        let before = stream.len();
        stream.extend(frame(0x01, &[0u8; LIMIT + 1]));
        let (out, refused) = through(StreamKind::Request, &stream, 5);
        assert!(refused);
        assert_eq!(&out[..before], &stream[..before]);
        assert_eq!(&out[before..], &too_large_headers(LIMIT as u64)[..]);
    }

    #[test]
    fn an_oversized_frame_on_the_control_stream_is_an_error() {
        let mut guard = FrameGuard::new(StreamKind::Unidirectional, LIMIT);
        let mut stream = vec![0x00]; // control stream
        stream.extend(frame(0x04, &[0u8; 4])); // SETTINGS
        stream.extend([0x21, 0x80, 0x10, 0, 0]); // a reserved frame declaring 1 MiB
        let err = guard.pass(Bytes::from(stream)).expect_err("over the limit");
        assert_eq!(err.length, 1 << 20);
    }

    #[test]
    fn other_unidirectional_streams_are_not_read_as_frames() {
        let mut stream = vec![0x02]; // QPACK encoder stream
        stream.extend([0xff; 3000]);
        let (out, refused) = through(StreamKind::Unidirectional, &stream, 7);
        assert_eq!(out, stream);
        assert!(!refused);
    }
}
