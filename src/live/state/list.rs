//! The stream list (`GET /ldash/`, `GET /ldash/streams`): what the index knows of each stored
//! manifest, newest upload first, and at most a bounded number of them (a server with thousands of
//! channels answers with the newest, and says how many there are).

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{numbered, State};
use crate::store::StorePath;

/// One stream for the stream list: a manifest and what the index knows of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamSummary {
    /// The manifest's store path (`live/stream.mpd`).
    pub manifest: String,
    /// "live" (dynamic MPD) or "ended" (static).
    pub state: &'static str,
    /// When the manifest was last uploaded (RFC 3339).
    pub last_upload: String,
    /// When the oldest segment the index keeps of the folder began (its upload's start, RFC 3339):
    /// with a DVR window, how far back `?start=` views reach. None before any segment.
    pub segments_from: Option<String>,
    /// When the newest segment began (RFC 3339).
    pub segments_to: Option<String>,
    /// Bytes the stream's folder holds (its segments, init segments and manifests).
    pub disk_bytes: u64,
    /// The representations.
    pub representations: Vec<RepresentationSummary>,
}

/// One representation in the stream list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepresentationSummary {
    /// Representation@id.
    pub id: String,
    /// video, audio, ...
    pub kind: Option<String>,
    /// bits/s.
    pub bandwidth: Option<u64>,
    /// RFC 6381 codecs.
    pub codecs: Option<String>,
    /// Width and height.
    pub resolution: Option<(u32, u32)>,
    /// Newest segment number indexed.
    pub newest_segment: Option<u64>,
}

/// The newest streams, and how many there are.
#[derive(Debug, Clone, Default)]
pub struct StreamList {
    /// The newest `limit` streams, newest upload first.
    pub streams: Vec<StreamSummary>,
    /// Every stream the index knows that is still stored.
    pub total: usize,
}

impl State {
    /// The streams the index knows (manifests parsed since start) that are still stored, newest
    /// upload first, at most `limit` of them; `modified` says when the store last wrote a path
    /// (None: not stored). Only the listed ones are summarised.
    pub fn streams(
        &self,
        modified: impl Fn(&str) -> Option<SystemTime>,
        disk: impl Fn(&str) -> u64,
        (now, wall): (Instant, SystemTime),
        limit: usize,
    ) -> StreamList {
        let mut stored: Vec<(SystemTime, &str, &str)> = Vec::new();
        for (folder, f) in &self.folders {
            for name in f.mpds.keys() {
                let Ok(path) = StorePath::in_folder(folder, name) else {
                    continue;
                };
                if let Some(at) = modified(&path) {
                    stored.push((at, folder, name));
                }
            }
        }
        let total = stored.len();
        stored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| (a.1, a.2).cmp(&(b.1, b.2))));
        stored.truncate(limit);
        let streams = stored
            .into_iter()
            .filter_map(|(at, folder, name)| {
                self.summary(folder, name, at, (now, wall)).map(|mut summary| {
                    summary.disk_bytes = disk(folder);
                    summary
                })
            })
            .collect();
        StreamList { streams, total }
    }

    fn summary(
        &self,
        folder: &str,
        name: &str,
        modified: SystemTime,
        (now, wall): (Instant, SystemTime),
    ) -> Option<StreamSummary> {
        let f = self.folders.get(folder)?;
        let started = f.segments.values().map(|index| index.started);
        let (oldest, newest) = (started.clone().min(), started.max());
        let at = |instant: Instant| rfc3339(wall.checked_sub(now.saturating_duration_since(instant)).unwrap_or(wall));
        let (_, mpd) = f.mpds.get(name)?;
        // The newest Period's: what the stream is now.
        let representations = mpd
            .periods
            .iter()
            .rev()
            .take(1)
            .flat_map(|p| &p.adaptation_sets)
            .flat_map(|a| a.representations.iter().map(move |r| (a, r)))
            .map(|(a, r)| RepresentationSummary {
                id: r.id.clone(),
                kind: a.content_type.clone(),
                bandwidth: r.bandwidth,
                codecs: r.codecs.clone(),
                resolution: r.width.zip(r.height),
                newest_segment: r
                    .template
                    .as_ref()
                    .and_then(|t| numbered(f, r, t).map(|(n, _)| n).max()),
            })
            .collect();
        let state = if self.options.has_ended(f, mpd, now) {
            "ended"
        } else {
            "live"
        };
        Some(StreamSummary {
            manifest: StorePath::in_folder(folder, name).ok()?.to_string(),
            state,
            last_upload: rfc3339(modified),
            segments_from: oldest.map(at),
            segments_to: newest.map(at),
            disk_bytes: 0,
            representations,
        })
    }
}

/// RFC 3339 with milliseconds, or "" for a time humantime cannot print (before 1970, after 9999:
/// a file's modification time can be anything).
fn rfc3339(time: SystemTime) -> String {
    let last = std::time::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    if time < std::time::UNIX_EPOCH || time > last {
        return String::new();
    }
    humantime::format_rfc3339_millis(time).to_string()
}
