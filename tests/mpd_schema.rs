//! Every MPD the rewriter produces validates against the MPEG DASH schema (xmllint), over ffmpeg's
//! captured manifests and the corpus of valid example MPDs; static MPDs with nothing to repair come
//! back byte for byte.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::encoder::xmllint_validates;
use common::require_tool;
use ldash::media::mpd::{parse, rewrite, Latency, Observed, Rewrite, ServiceDefaults};

fn specs() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/specs/dash");
    assert!(
        dir.join("DASH-MPD.xsd").exists(),
        "the DASH schema and corpus are expected at {}",
        dir.display()
    );
    dir
}

fn service() -> ServiceDefaults {
    ServiceDefaults {
        latency: Some(Latency::UNOBSERVED),
        playback_rate_min: 0.92,
        playback_rate_max: 1.08,
    }
}

/// Observations that say every representation of the MPD is chunked in 0.2 s chunks.
fn chunked_everywhere(mpd: &[u8]) -> HashMap<(usize, usize, String), Observed> {
    let Ok(model) = parse(mpd) else { return HashMap::new() };
    let mut observed = HashMap::new();
    for (p, period) in model.periods.iter().enumerate() {
        for (a, set) in period.adaptation_sets.iter().enumerate() {
            for rep in &set.representations {
                let seen = Observed {
                    chunk_duration: Some(Duration::from_millis(200)),
                    chunked: true,
                    bandwidth: Some(500_000),
                    codecs: Some("avc1.64001f".into()),
                };
                observed.insert((p, a, rep.id.clone()), seen);
            }
        }
    }
    observed
}

#[test]
fn rewritten_mpds_validate_against_the_schema() {
    if require_tool("xmllint").is_none() {
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(specs().join("examples"))
        .expect("corpus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "mpd"))
        .collect();
    files.sort();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ffmpeg");
    files.extend(["first.mpd", "steady.mpd", "final.mpd"].map(|f| fixtures.join(f)));
    let service = service();
    let mut checked = 0;
    for file in &files {
        let original = std::fs::read(file).expect("read mpd");
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let is_ffmpeg = file.starts_with(&fixtures);
        if !is_ffmpeg {
            xmllint_validates(&original).unwrap_or_else(|e| panic!("{name} is in the valid corpus but fails: {e}"));
        }
        let observed = chunked_everywhere(&original);
        let request = Rewrite {
            clock_url: "https://origin.example:8443/ldash/time",
            service: &service,
            observed: &observed,
            ended: None,
            time_shift: None,
        };
        let out = rewrite(&original, &request).unwrap_or_else(|e| panic!("{name}: {e}"));
        xmllint_validates(&out).unwrap_or_else(|e| {
            panic!(
                "{name} rewritten fails the schema: {e}\n{}",
                String::from_utf8_lossy(&out)
            )
        });
        let model = parse(&original).expect("parse");
        if !model.dynamic && !is_ffmpeg {
            assert_eq!(
                &out[..],
                &original[..],
                "{name}: a valid static MPD comes back unchanged"
            );
        }
        checked += 1;
    }
    assert!(checked >= 30, "the corpus and fixtures were read ({checked} files)");
}
