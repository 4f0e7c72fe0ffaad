//! Feeds arbitrary bytes to the CMAF reader, whole and split at an arbitrary point, as an upload's
//! HTTP chunks would arrive: it must never panic, and both ways must agree.
#![no_main]

use ldash::media::cmaf::{parse_init, ChunkScanner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let init = parse_init(data).ok();
    let whole = ChunkScanner::new(init.as_ref()).push(data);
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let mut scanner = ChunkScanner::new(init.as_ref());
    let first = scanner.push(&data[..split]);
    let second = scanner.push(&data[split..]);
    if let (Ok(whole), Ok(mut a), Ok(b)) = (whole, first, second) {
        a.extend(b);
        assert_eq!(whole, a, "feeding in two pieces finds the same chunks");
    }
});
