//! Feeds arbitrary bytes to the MPD parser and low-latency rewriter: errors are fine, panics are not,
//! and a rewritten MPD must parse again.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use ldash::media::hls::Clip;
use ldash::media::mpd::{parse, rewrite, view, Latency, Observed, Rewrite, ServiceDefaults};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse(data);
    let service = ServiceDefaults {
        latency: Some(Latency::UNOBSERVED),
        playback_rate_min: 0.92,
        playback_rate_max: 1.08,
    };
    let mut observed = HashMap::new();
    observed.insert(
        (0, 0, "0".to_string()),
        Observed { chunk_duration: Some(Duration::from_millis(200)), chunked: true, bandwidth: Some(1_000_000), codecs: None },
    );
    let request = Rewrite { clock_url: "https://example.com/ldash/time", service: &service, observed: &observed, ended: None, time_shift: None };
    if let Ok(out) = rewrite(data, &request) {
        if parse(data).is_ok() {
            assert!(parse(&out).is_ok(), "a rewritten MPD parses again");
        }
    }
    // Time views (?start=, ?end=) of whatever parses: errors are fine, panics are not.
    if let Ok(model) = parse(data) {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        for clip in [Clip { from: at(0), to: None }, Clip { from: at(1_800_000_000), to: Some(at(1_800_000_100)) }] {
            if let Ok(out) = view(data, &model, &clip, at(1_900_000_000)) {
                assert!(parse(&out).is_ok(), "a view of an MPD parses again");
            }
        }
    }
});
