//! Feeds arbitrary bytes to CMAF ingest's track reader, whole and split at an arbitrary point, as a
//! track's POST body arrives: it must never panic, and both ways must give the same init segment
//! and chunks, or both refuse the track.
#![no_main]

use ldash::media::package::TrackReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limit = 1 << 16;
    let whole = TrackReader::new(limit).push(data);
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let mut reader = TrackReader::new(limit);
    let pieces = reader.push(&data[..split]).and_then(|mut first| {
        first.extend(reader.push(&data[split..])?);
        Ok(first)
    });
    let _ = reader.finish();
    match (whole, pieces) {
        (Ok(whole), Ok(pieces)) => assert_eq!(whole, pieces, "two pieces give what the whole gives"),
        (Err(_), Err(_)) => {}
        (whole, pieces) => panic!("whole {:?} but in pieces {:?}", whole.map(|e| e.len()), pieces.map(|e| e.len())),
    }
});
