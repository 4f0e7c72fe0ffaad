//! What the ingest shows of each representation of a stream (chunk duration, whether it is
//! chunked, measured bandwidth, codecs from its init segment), for the MPD rewriter and the
//! multivariant playlist.

use std::collections::HashMap;
use std::time::Duration;

use super::{numbered, Folder, State};
use crate::live::segment::Progress;
use crate::media::cmaf::Chunk;
use crate::media::mpd::{Mpd, Observed, Representation};

/// Complete segments per representation used to measure bandwidth.
const BANDWIDTH_WINDOW: usize = 5;

impl State {
    /// What the ingest shows of each representation of `mpd` in `folder`.
    pub fn observe(&self, folder: &str, mpd: &Mpd) -> HashMap<(usize, usize, String), Observed> {
        let mut observed = HashMap::new();
        let Some(f) = self.folders.get(folder) else {
            return observed;
        };
        for (p, period) in mpd.periods.iter().enumerate() {
            for (a, set) in period.adaptation_sets.iter().enumerate() {
                for rep in &set.representations {
                    if let Some(seen) = observe_rep(f, rep) {
                        observed.insert((p, a, rep.id.clone()), seen);
                    }
                }
            }
        }
        observed
    }
}

fn observe_rep(f: &Folder, rep: &Representation) -> Option<Observed> {
    let template = rep.template.as_ref()?;
    let init = template.init_path(rep).and_then(|name| f.inits.get(&name));
    let timescale = init
        .and_then(|init| init.tracks.first())
        .map(|t| u64::from(t.timescale))
        .filter(|t| *t > 0)?;
    let codecs = init
        .and_then(|init| init.tracks.first())
        .and_then(|t| t.coding.as_ref())
        .map(|c| c.codecs.clone());
    let mut segments: Vec<(u64, Vec<Chunk>, Progress)> = numbered(f, rep, template)
        .map(|(n, index)| (n, index.chunks(), index.progress()))
        .collect();
    if segments.is_empty() {
        return Some(Observed {
            codecs,
            ..Observed::default()
        });
    }
    segments.sort_by_key(|(n, _, _)| *n);
    let longest = segments
        .iter()
        .flat_map(|(_, chunks, _)| chunks)
        .map(|c| c.duration)
        .max()
        .unwrap_or(0);
    let chunked = segments.iter().any(|(_, chunks, _)| chunks.len() > 1);
    let complete: Vec<&(u64, Vec<Chunk>, Progress)> = segments
        .iter()
        .filter(|(_, _, p)| p.ended && !p.failed)
        .rev()
        .take(BANDWIDTH_WINDOW)
        .collect();
    let bytes: u64 = complete
        .iter()
        .flat_map(|(_, chunks, _)| chunks)
        .map(|c| c.end - c.start)
        .sum();
    let ticks: u64 = complete
        .iter()
        .flat_map(|(_, chunks, _)| chunks)
        .map(|c| c.duration)
        .sum();
    let bandwidth = (ticks > 0).then(|| bytes.saturating_mul(8).saturating_mul(timescale) / ticks);
    Some(Observed {
        chunk_duration: Duration::try_from_secs_f64(longest as f64 / timescale as f64)
            .ok()
            .filter(|d| !d.is_zero()),
        chunked,
        bandwidth,
        codecs,
    })
}
