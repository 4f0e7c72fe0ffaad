//! A packaged channel picked up again after an ldash restart, from what it stored: the dynamic
//! manifest (availabilityStartTime, a Period per run, each representation's template and
//! bandwidth), the init segments (each track's coding, so that a reconnecting encoder whose init
//! segment is the same continues the run) and the names of the segments kept (each track's newest
//! and oldest, the last of each ended run). The current run is anchored where its Period puts it:
//! an encoder that reconnects on the same timeline continues the run and its numbering, one whose
//! timeline starts over starts a new run after it, exactly as before the restart.

use std::collections::BTreeMap;

use super::channel::{Channel, Kind, PackageOptions, Run, Track};
use super::manifest::UNMEASURED;
use crate::media::cmaf::Init;
use crate::media::mpd::Mpd;

/// What a channel's folder holds after a restart, besides its manifest.
#[derive(Debug, Default, Clone)]
pub struct Stored {
    /// Init segments by (track id, run).
    pub inits: BTreeMap<(String, u64), Init>,
    /// Complete segments: (track id, number, run).
    pub segments: Vec<(String, u64, u64)>,
}

impl Channel {
    /// The channel that the stored manifest `mpd` and the files `stored` describe, as it was before
    /// the restart with no POST in progress. None when `mpd` is not a live manifest this packaging
    /// (its segment duration) writes, or a track's init segment or timescale does not match it: the
    /// next POST then starts a new channel, as it would have without the stored files.
    pub fn restored(options: PackageOptions, mpd: &Mpd, stored: &Stored) -> Option<Channel> {
        if !mpd.dynamic {
            return None;
        }
        let origin = mpd.availability_start?;
        let d = options.segment_duration;
        let ticks = |timescale: u64| (d.as_secs_f64() * timescale as f64).round() as u64;
        let mut runs = Vec::new();
        for period in &mpd.periods {
            let id: u64 = period.id.as_deref()?.parse().ok()?;
            let template = period
                .adaptation_sets
                .iter()
                .flat_map(|a| &a.representations)
                .find_map(|r| r.template.as_ref())?;
            let per_segment = ticks(template.timescale);
            // An ended run lists its segments (no @duration); the current one has the template's.
            if per_segment == 0 || template.duration.is_some_and(|duration| duration != per_segment) {
                return None;
            }
            runs.push(Run {
                id,
                start: period.start.unwrap_or_default(),
                first: template.start_number,
                local_first: (template.presentation_time_offset / per_segment).saturating_add(1),
            });
        }
        let current = *runs.last()?;
        let mut tracks = BTreeMap::new();
        for set in &mpd.periods.last()?.adaptation_sets {
            let kind = match set.content_type.as_deref() {
                Some("video") => Kind::Video,
                Some("audio") => Kind::Audio,
                _ => return None,
            };
            for rep in &set.representations {
                let template = rep.template.as_ref()?;
                let init = stored.inits.get(&(rep.id.clone(), current.id))?;
                let first = init.tracks.first()?;
                if u64::from(first.timescale) != template.timescale {
                    return None;
                }
                // The manifest's placeholder is no measurement: the next segment measures it.
                let placeholder = UNMEASURED.iter().find(|(k, _)| *k == kind).map(|(_, b)| *b);
                let bandwidth = rep.bandwidth.filter(|b| Some(*b) != placeholder);
                let mut track = Track::new(
                    kind,
                    first.timescale,
                    first.coding.clone().unwrap_or_default(),
                    bandwidth,
                );
                let kept = || stored.segments.iter().filter(|(id, _, _)| *id == rep.id);
                track.newest = kept().map(|(_, n, _)| *n).max();
                track.oldest = kept().map(|(_, n, _)| *n).min();
                for run in &runs[..runs.len() - 1] {
                    if let Some(last) = kept().filter(|(_, _, r)| *r == run.id).map(|(_, n, _)| *n).max() {
                        track.last_of_run.insert(run.id, last);
                    }
                }
                // Where its current run's media ends: the end of its newest segment of that run.
                track.end = kept()
                    .filter(|(_, _, r)| *r == current.id)
                    .map(|(_, n, _)| current.local(*n).saturating_mul(ticks(u64::from(first.timescale))))
                    .max()
                    .unwrap_or(0);
                tracks.insert(rep.id.clone(), track);
            }
        }
        if tracks.is_empty() {
            return None;
        }
        // The current run's timeline: media time 0 where its Period puts it on the wall clock.
        let before = d.saturating_mul(u32::try_from(current.local_first.saturating_sub(1)).ok()?);
        let anchor = origin.checked_add(current.start)?.checked_sub(before)?;
        Some(Channel {
            options,
            origin: Some(origin),
            anchor: Some(anchor),
            runs,
            tracks,
        })
    }
}
