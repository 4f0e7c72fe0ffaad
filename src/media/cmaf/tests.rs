//! The CMAF reader against ffmpeg's init and media segments, fed whole, byte by byte and corrupted.

use super::*;

const INIT: &[u8] = include_bytes!("../../../tests/fixtures/ffmpeg/init-stream0.m4s");
const SEGMENT: &[u8] = include_bytes!("../../../tests/fixtures/ffmpeg/chunk-stream0-00002.m4s");
const AUDIO_INIT: &[u8] = include_bytes!("../../../tests/fixtures/ffmpeg/init-stream1.m4s");
const AUDIO: &[u8] = include_bytes!("../../../tests/fixtures/ffmpeg/chunk-stream1-00002.m4s");

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
