//! The live index's state, as a pure state machine: it takes what happened (an upload started, a
//! manifest or init segment parsed, a segment started, a path removed) with the time, and answers
//! with what to do (the earlier run's segments to delete) and with what it knows (segments,
//! timelines, whether a stream has ended). It does no I/O and reads no clock: the driver in
//! [`super`] feeds it from the store's events and carries out its actions, so the arrows go one
//! way (store -> driver -> state -> actions -> driver -> store) and every rule is unit-tested
//! without sockets or ffmpeg.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::hls::Snapshot;
use super::segment::{Activity, Progress, SegmentIndex};
use crate::media::cmaf::{Chunk, Init};
use crate::media::hls::Timing;
use crate::media::liveness::{self, EndRule};
use crate::media::mpd::{Mpd, Observed, Representation, SegmentTemplate};
use crate::store::StorePath;

mod lifetime;
mod list;
#[cfg(test)]
mod tests;

pub use lifetime::ENDED_MEMORY;
pub use list::{RepresentationSummary, StreamList, StreamSummary};

/// Complete segments per representation used to measure bandwidth.
const BANDWIDTH_WINDOW: usize = 5;

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is a single insert or push: a poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Splits a store path into its folder ("" at the root) and file name.
pub(super) fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_owned()
    } else {
        format!("{folder}/{name}")
    }
}

/// How the index treats the streams it follows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveOptions {
    /// LL-HLS PART-TARGET in seconds for every stream (None: the longest chunk seen).
    pub part_target: Option<f64>,
    /// When a live stream whose encoder went quiet counts as ended.
    pub end_rule: EndRule,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            part_target: None,
            end_rule: EndRule { after_segments: 5 },
        }
    }
}

impl LiveOptions {
    /// Whether the stream of `mpd` in folder `f` has ended at `now`: a static MPD, or a live one
    /// whose folder has received no upload for the end rule's number of segment durations.
    pub(super) fn has_ended(&self, f: &Folder, mpd: &Mpd, now: Instant) -> bool {
        !mpd.dynamic
            || self
                .end_rule
                .has_ended(f.activity.last().into_std(), longest_segment(mpd), now.into_std())
    }

    /// When the live stream of `mpd` in `f` ends if nothing is uploaded before.
    pub(super) fn ends_at(&self, f: &Folder, mpd: &Mpd) -> Option<Instant> {
        if !mpd.dynamic {
            return None;
        }
        self.end_rule
            .ends_at(f.activity.last().into_std(), longest_segment(mpd))
            .map(Instant::from_std)
    }
}

/// What the driver must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The encoder started a new run: delete the earlier run's segment at `path`, unless an upload
    /// that arrived at or after `before` replaced it since.
    Delete {
        /// The segment's store path.
        path: StorePath,
        /// The new run's first upload, in the server's arrival order.
        before: u64,
    },
}

/// What the index keeps of one folder.
#[derive(Debug)]
pub(super) struct Folder {
    /// The last upload into the folder (any chunk, manifest or init segment), for the end rule: a
    /// folder that was only read since start counts from when the index first saw it.
    pub(super) activity: Arc<Activity>,
    /// Bumped whenever a segment of the folder gains a chunk, starts or ends, or a manifest changes:
    /// every blocked playlist request of the folder wakes on it.
    pub(super) changed: Arc<watch::Sender<u64>>,
    /// Manifests the encoder deleted (ffmpeg's -remove_at_exit): their streams have ended, and
    /// their playlists say so (EXT-X-ENDLIST) until a new upload of the manifest.
    pub(super) ended: HashSet<String>,
    /// LL-HLS timing per manifest name, fixed the first time it can be computed.
    pub(super) hls_timing: HashMap<String, Timing>,
    /// Media segments by file name.
    pub(super) segments: BTreeMap<String, Arc<SegmentIndex>>,
    /// Init segments by file name.
    pub(super) inits: HashMap<String, Arc<Init>>,
    /// Parsed manifests by file name, with the ETag of the version parsed.
    pub(super) mpds: HashMap<String, (String, Arc<Mpd>)>,
    /// The newest LL-HLS snapshot per (manifest name, representation id), shared by the playlist
    /// requests that wake on the same change.
    pub(super) snapshots: HashMap<(String, String), Arc<Snapshot>>,
    /// When the first segment upload into the folder since ldash started began: its streams are
    /// not only what was found on disk from then on (an origin that restarted is behind its encoder
    /// until then, and lacks the segment the encoder was writing when it came back).
    pub(super) first_upload: Option<Instant>,
    /// Segments of the folder were found on disk at start.
    pub(super) found_on_disk: bool,
    /// When the last of its stored files left the store (see [`lifetime`]); None while something
    /// of it is stored.
    pub(super) emptied: Option<Instant>,
}

impl Folder {
    pub(super) fn new(now: Instant) -> Self {
        Folder {
            activity: Arc::new(Activity::new(now)),
            changed: Arc::new(watch::channel(0).0),
            ended: HashSet::new(),
            hls_timing: HashMap::new(),
            segments: BTreeMap::new(),
            inits: HashMap::new(),
            mpds: HashMap::new(),
            snapshots: HashMap::new(),
            first_upload: None,
            found_on_disk: false,
            emptied: None,
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

/// The whole index: folders by path.
#[derive(Debug)]
pub struct State {
    pub(super) folders: HashMap<String, Folder>,
    pub(super) options: LiveOptions,
}

impl State {
    /// An empty index.
    pub fn new(options: LiveOptions) -> State {
        let part_target = options.part_target.filter(|t| *t > 0.0);
        State {
            folders: HashMap::new(),
            options: LiveOptions { part_target, ..options },
        }
    }

    pub(super) fn folder(&mut self, folder: &str, now: Instant) -> &mut Folder {
        self.folders
            .entry(folder.to_owned())
            .or_insert_with(|| Folder::new(now))
    }

    // ---- events -------------------------------------------------------------------------------

    /// A new upload of the manifest at `path` started: its stream is live again.
    pub fn manifest_upload_started(&mut self, path: &str, now: Instant) {
        let (folder, name) = split(path);
        if let Some(f) = self.folders.get_mut(folder) {
            f.ended.remove(name);
            f.activity.touch(now);
        }
    }

    /// The version `etag` of the manifest at `path`, if it was parsed before.
    pub fn cached_manifest(&self, path: &str, etag: &str) -> Option<Arc<Mpd>> {
        let (folder, name) = split(path);
        let (cached, mpd) = self.folders.get(folder)?.mpds.get(name)?;
        (cached == etag).then(|| Arc::clone(mpd))
    }

    /// The manifest at `path` parsed (version `etag`).
    pub fn manifest_parsed(&mut self, path: &str, etag: &str, mpd: Arc<Mpd>, now: Instant) {
        let (folder, name) = split(path);
        let f = self.folder(folder, now);
        f.mpds.insert(name.to_owned(), (etag.to_owned(), mpd));
        f.bump();
    }

    /// The init segment at `path` parsed.
    pub fn init_parsed(&mut self, path: &str, init: Arc<Init>, now: Instant) {
        let (folder, name) = split(path);
        let f = self.folder(folder, now);
        f.activity.touch(now);
        f.inits.insert(name.to_owned(), init);
    }

    /// Whether the folder of `path` has no parsed manifest: after a restart its manifests are only
    /// on disk, and the driver parses them before a segment of the folder is indexed.
    pub fn needs_manifests(&self, path: &str) -> bool {
        let (folder, _) = split(path);
        self.folders.get(folder).is_none_or(|f| f.mpds.is_empty())
    }

    /// Whether segment `path` is the first of its representation that the index sees (since start,
    /// or since its run began): then the driver lists the folder's stored files, because an earlier
    /// run may be on disk only.
    pub fn needs_stored(&self, path: &str) -> bool {
        let (folder, name) = split(path);
        let Some(f) = self.folders.get(folder) else {
            return false;
        };
        representation_of(f, name).is_some_and(|(rep, template, _)| numbered(f, &rep, &template).next().is_none())
    }

    /// Segment `path` started uploading (at `arrival` in the server's arrival order); `stored` is
    /// what the store holds in its folder, as (file name, arrival), when [`State::needs_stored`]
    /// asked for it. When its number is at the template's first and below the newest its
    /// representation has, the encoder started a new run (it was killed and restarted, or lost its
    /// connection to a restarted ldash): the earlier run's segments of that representation are
    /// forgotten, and the actions delete them, so that the new numbering is the only one in the
    /// playlists and no player is served a dead run's segment under a reused name. Returns the
    /// segment's index (for the driver to feed chunks into) and its representation's init segment.
    pub fn segment_started(
        &mut self,
        path: &str,
        arrival: u64,
        stored: &[(String, u64)],
        now: Instant,
    ) -> (Arc<SegmentIndex>, Option<Arc<Init>>, Vec<Action>) {
        let (folder, name) = split(path);
        let f = self.folder(folder, now);
        let actions = new_run(f, folder, name, arrival, stored);
        // Arrival 0: found on disk at start, not uploaded.
        if arrival > 0 {
            f.first_upload.get_or_insert(now);
        } else {
            f.found_on_disk = true;
        }
        f.activity.touch(now);
        let index = Arc::new(SegmentIndex::new(
            Arc::clone(&f.changed),
            Arc::clone(&f.activity),
            arrival,
        ));
        f.segments.insert(name.to_owned(), Arc::clone(&index));
        f.bump();
        (index, init_for(f, name), actions)
    }

    /// The folders holding a live stream found on disk at start that has not caught up with its
    /// encoder: not a whole segment duration since the first segment upload after the start (until
    /// then the newest whole segment is one from before, and players at the live edge need the
    /// one the encoder was writing when this origin came back, which it never got). A stream waits
    /// for its encoder as long as the end rule gives one that stopped, counted from `started` (the
    /// index's start, not the stream's last write before it: the encoder went on elsewhere
    /// meanwhile), 10 s without an end rule. Sorted.
    pub fn catching_up(&self, started: Instant, now: Instant) -> Vec<String> {
        let mut folders: Vec<String> = self
            .folders
            .iter()
            .filter(|(_, f)| {
                // Its manifests as last parsed (one being uploaded anew is not parsed yet): only
                // static ones, nothing live to catch up with.
                let parsed: Vec<&Mpd> = f.mpds.values().map(|(_, mpd)| mpd.as_ref()).collect();
                if !f.found_on_disk || (!parsed.is_empty() && parsed.iter().all(|mpd| !mpd.dynamic)) {
                    return false;
                }
                let segment = parsed
                    .iter()
                    .map(|mpd| longest_segment(mpd))
                    .max()
                    .unwrap_or(Duration::from_secs(1));
                let caught_up = f.first_upload.is_some_and(|t| now >= t + segment);
                let grace = self
                    .options
                    .end_rule
                    .quiet_bound(segment)
                    .unwrap_or(Duration::from_secs(10));
                !caught_up && now < started + grace
            })
            .map(|(name, _)| name.clone())
            .collect();
        folders.sort();
        folders
    }

    /// What was on disk at `started` is indexed (at the times it was written). A live stream found
    /// there counts towards the end rule from `started`, not from its last write before: its
    /// encoder may have gone on elsewhere meanwhile (to another origin, while this one was down)
    /// and come back any moment; an origin back from an outage longer than the end rule would
    /// otherwise call the stream ended (`mediaPresentationDuration`, `EXT-X-ENDLIST`) to the first
    /// players an edge sends it, and those players stop.
    pub fn disk_indexed(&mut self, started: Instant) {
        for f in self.folders.values_mut().filter(|f| f.found_on_disk) {
            f.activity.touch(started);
        }
    }

    /// Whether a segment was uploaded into `folder` since start. Until then its streams are only
    /// what was on disk: a restarted origin is behind its encoder, and a request ahead of that is
    /// not ahead of the stream.
    pub fn uploaded(&self, folder: &str) -> bool {
        self.folders.get(folder).is_some_and(|f| f.first_upload.is_some())
    }

    // ---- queries ------------------------------------------------------------------------------

    /// The chunk index of a media segment, if it is (being) indexed.
    pub fn segment(&self, path: &str) -> Option<Arc<SegmentIndex>> {
        let (folder, name) = split(path);
        self.folders.get(folder)?.segments.get(name).cloned()
    }

    /// The last parsed version of the manifest at `path`, marked static (ended), when its stream
    /// ended by a delete (or `gone`: it is no longer in the store, even before the removal event
    /// reached the index).
    pub fn ended_manifest(&self, path: &str, gone: bool) -> Option<Arc<Mpd>> {
        let (folder, name) = split(path);
        let f = self.folders.get(folder)?;
        if !gone && !f.ended.contains(name) {
            return None;
        }
        let (_, mpd) = f.mpds.get(name)?;
        let mut ended = Mpd::clone(mpd);
        ended.dynamic = false;
        Some(Arc::new(ended))
    }

    /// The presentation duration to write into the MPD of `folder` when its live stream has ended
    /// at `now` (None while it is live, or when no segment completed).
    pub fn ended_duration(&self, folder: &str, mpd: &Mpd, now: Instant) -> Option<Duration> {
        let f = self.folders.get(folder)?;
        (mpd.dynamic && self.options.has_ended(f, mpd, now))
            .then(|| presentation_end(f, mpd))
            .flatten()
    }

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

    /// For a missing `path` that is one of the next two segments of a live representation at
    /// `now`, how long to wait for its upload to start (one segment duration); None for any other.
    pub fn upcoming(&self, path: &str, now: Instant) -> Option<Duration> {
        let (folder, name) = split(path);
        let f = self.folders.get(folder)?;
        for (_, mpd) in f.mpds.values() {
            if self.options.has_ended(f, mpd, now) {
                continue;
            }
            let reps = mpd.periods.iter().enumerate().flat_map(|(p, period)| {
                period
                    .adaptation_sets
                    .iter()
                    .flat_map(move |a| a.representations.iter().map(move |r| (p, r)))
            });
            for (p, rep) in reps {
                let Some(template) = &rep.template else { continue };
                let Some(wanted) = template.match_media(rep, name) else {
                    continue;
                };
                // A later Period with no segment yet (a new run of a packaged channel) waits for
                // its first; a stream with nothing indexed has no window yet.
                let newest = match numbered(f, rep, template).map(|(n, _)| n).max() {
                    Some(newest) => newest,
                    None if p > 0 => template.start_number.saturating_sub(1),
                    None => return None,
                };
                if wanted > newest && wanted <= newest + 2 {
                    return Some(
                        template
                            .segment_duration()
                            .unwrap_or(Duration::from_secs(1))
                            .min(Duration::from_secs(10)),
                    );
                }
            }
        }
        None
    }

    /// A receiver of the folder's change counter (the folder is created if new).
    pub fn changes(&mut self, folder: &str, now: Instant) -> watch::Receiver<u64> {
        self.folder(folder, now).changed.subscribe()
    }
}

/// The new-run rule for segment `name` of folder `f` starting at `arrival`: forgets the earlier
/// run's indexed segments and returns the deletions of them and of those only on disk.
fn new_run(f: &mut Folder, folder: &str, name: &str, arrival: u64, stored: &[(String, u64)]) -> Vec<Action> {
    let Some((rep, template, number)) = representation_of(f, name) else {
        return Vec::new();
    };
    let of_rep = |n: &str, at: u64| (at < arrival).then(|| template.match_media(&rep, n)).flatten();
    let indexed: Vec<(String, u64)> = f
        .segments
        .iter()
        .filter_map(|(n, index)| of_rep(n, index.arrival).map(|num| (n.clone(), num)))
        .collect();
    let on_disk: Vec<(String, u64)> = stored
        .iter()
        .filter_map(|(n, at)| of_rep(n, *at).map(|num| (n.clone(), num)))
        .collect();
    let newest = indexed.iter().chain(&on_disk).map(|(_, num)| *num).max();
    if !liveness::starts_new_run(number, newest, template.start_number) {
        return Vec::new();
    }
    tracing::info!(
        folder,
        segment = name,
        newest,
        "the encoder started a new run: the earlier run's segments of this representation are dropped"
    );
    for (old, _) in &indexed {
        f.segments.remove(old);
    }
    f.bump();
    let mut deleted: Vec<String> = indexed.into_iter().chain(on_disk).map(|(n, _)| n).collect();
    deleted.sort();
    deleted.dedup();
    deleted
        .into_iter()
        .filter_map(|old| StorePath::in_folder(folder, &old).ok())
        .map(|path| Action::Delete { path, before: arrival })
        .collect()
}

/// The representation (with its template) whose media template names segment `name`, and the
/// segment's number, per the folder's MPDs.
fn representation_of(f: &Folder, name: &str) -> Option<(Representation, SegmentTemplate, u64)> {
    f.mpds.values().find_map(|(_, mpd)| {
        mpd.representations().find_map(|rep| {
            let template = rep.template.as_ref()?;
            let number = template.match_media(rep, name)?;
            Some((rep.clone(), template.clone(), number))
        })
    })
}

/// The longest segment duration of an MPD's templates (1 s when none says).
fn longest_segment(mpd: &Mpd) -> Duration {
    mpd.representations()
        .filter_map(|r| r.template.as_ref()?.segment_duration())
        .max()
        .unwrap_or(Duration::from_secs(1))
}

/// The end of the media uploaded completely, as a presentation duration (the latest of the
/// representations), for the MPD of an ended stream; None when no segment completed.
fn presentation_end(f: &Folder, mpd: &Mpd) -> Option<Duration> {
    mpd.periods
        .iter()
        .flat_map(|p| {
            let start = p.start.unwrap_or_default();
            p.adaptation_sets
                .iter()
                .flat_map(move |a| a.representations.iter().map(move |r| (start, r)))
        })
        .filter_map(|(period_start, rep)| {
            let template = rep.template.as_ref()?;
            let init = f.inits.get(&template.init_path(rep)?)?;
            let timescale = u64::from(init.tracks.first()?.timescale);
            let end = numbered(f, rep, template)
                .filter(|(_, index)| {
                    let progress = index.progress();
                    progress.ended && !progress.failed
                })
                .flat_map(|(_, index)| index.chunks())
                .map(|c| c.decode_time.saturating_add(c.duration))
                .max()?;
            liveness::presentation_duration(
                period_start,
                (end, timescale),
                (template.presentation_time_offset, template.timescale),
            )
        })
        .max()
}

/// The init segment of the representation whose media template names `name`, per the folder's MPDs.
fn init_for(f: &Folder, name: &str) -> Option<Arc<Init>> {
    for (_, mpd) in f.mpds.values() {
        for rep in mpd.representations() {
            let Some(template) = &rep.template else { continue };
            if template.match_media(rep, name).is_some() {
                return template.init_path(rep).and_then(|init| f.inits.get(&init)).cloned();
            }
        }
    }
    None
}

/// The indexed segments of one representation, by number.
pub(super) fn numbered<'f>(
    f: &'f Folder,
    rep: &'f Representation,
    template: &'f SegmentTemplate,
) -> impl Iterator<Item = (u64, &'f Arc<SegmentIndex>)> + 'f {
    f.segments
        .iter()
        .filter_map(move |(name, index)| template.match_media(rep, name).map(|n| (n, index)))
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
