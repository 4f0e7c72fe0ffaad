//! The live index's state, as a pure state machine: it takes what happened (an upload started, a
//! manifest or init segment parsed, a segment started, a path removed) with the time, and answers
//! with what to do (the earlier run's segments to delete), with the folders whose waiters must wake
//! ([`State::take_wakes`], as quinn-proto hands its driver events to poll), and with what it knows
//! (segments, timelines, whether a stream has ended, and the LL-HLS projections of all that in
//! [`playlists`] and [`multivariant`]). It does no I/O, reads no clock and owns no channel: the
//! driver in [`super`] feeds it from the store's events, carries out its actions and owns the
//! channels the wake-ups go through, so the arrows go one way (store -> driver -> state ->
//! actions and wake-ups -> driver -> store and waiters) and every rule is unit-tested without
//! sockets or ffmpeg.
//!
//! Inside, `mod.rs` holds the events and the DASH-side queries; [`dvr`] the DVR window's rules
//! (which segments it keeps, how far back the MPD reaches); [`lifetime`] when a folder is
//! forgotten; [`list`] the stream list; [`observed`] what the ingest shows of each representation
//! (for the MPD rewriter); [`playlists`] the renditions and shared snapshots of the
//! media playlists; [`multivariant`] the multivariant playlist; [`snapshot`] the shared snapshot
//! itself. The children extend [`State`]; this file imports only the leaf [`snapshot`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::segment::{Activity, SegmentIndex};
use crate::media::cmaf::Init;
use crate::media::hls::Timing;
use crate::media::liveness::{self, EndRule};
use crate::media::mpd::{Mpd, Representation, SegmentTemplate};
use crate::store::StorePath;
use snapshot::Snapshot;

pub mod dvr;
pub mod lifetime;
pub mod list;
pub mod multivariant;
pub mod observed;
pub mod playlists;
pub mod snapshot;
#[cfg(test)]
mod tests;

/// How the index treats the streams it follows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveOptions {
    /// LL-HLS PART-TARGET in seconds for every stream (None: the longest chunk seen).
    pub part_target: Option<f64>,
    /// When a live stream whose encoder went quiet counts as ended.
    pub end_rule: EndRule,
    /// How long every segment is kept whatever its encoder deletes, and how far back manifests
    /// reach ([`dvr`]); None: the encoder's window.
    pub dvr_window: Option<Duration>,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            part_target: None,
            end_rule: EndRule { after_segments: 5 },
            dvr_window: None,
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

/// Whom the driver must wake after an event ([`State::take_wakes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// The folder changed (a segment of it started, gained a chunk, ended or left, or a manifest
    /// changed): every blocked playlist request of the folder, and every download waiting for a
    /// segment of it to be indexed, looks again.
    Changed(String),
    /// The state forgot the folder: its waiters give up (their channel closes).
    Gone(String),
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
}

/// The whole index: folders by path.
#[derive(Debug)]
pub struct State {
    pub(super) folders: HashMap<String, Folder>,
    pub(super) options: LiveOptions,
    /// The wake-ups owed to the driver since it last took them.
    wakes: Vec<Wake>,
}

impl State {
    /// An empty index.
    pub fn new(options: LiveOptions) -> State {
        let part_target = options.part_target.filter(|t| *t > 0.0);
        State {
            folders: HashMap::new(),
            options: LiveOptions { part_target, ..options },
            wakes: Vec::new(),
        }
    }

    /// The wake-ups owed since the last call, in order (the driver takes them after every event,
    /// under the same lock, and sends them through the channels it owns).
    pub fn take_wakes(&mut self) -> Vec<Wake> {
        std::mem::take(&mut self.wakes)
    }

    /// The folder changed: its waiters look again.
    pub(super) fn wake(&mut self, folder: &str) {
        if self.wakes.last() != Some(&Wake::Changed(folder.to_owned())) {
            self.wakes.push(Wake::Changed(folder.to_owned()));
        }
    }

    /// Whether the index keeps anything of `folder`.
    pub fn knows(&self, folder: &str) -> bool {
        self.folders.contains_key(folder)
    }

    pub(super) fn folder(&mut self, folder: &str, now: Instant) -> &mut Folder {
        self.folders
            .entry(folder.to_owned())
            .or_insert_with(|| Folder::new(now))
    }

    // ---- events -------------------------------------------------------------------------------

    /// A new upload of the manifest at `path` started: its stream is live again.
    pub fn manifest_upload_started(&mut self, path: &StorePath, now: Instant) {
        let (folder, name) = (path.folder(), path.name());
        if let Some(f) = self.folders.get_mut(folder) {
            f.ended.remove(name);
            f.activity.touch(now);
        }
    }

    /// The version `etag` of the manifest at `path`, if it was parsed before.
    pub fn cached_manifest(&self, path: &StorePath, etag: &str) -> Option<Arc<Mpd>> {
        let (folder, name) = (path.folder(), path.name());
        let (cached, mpd) = self.folders.get(folder)?.mpds.get(name)?;
        (cached == etag).then(|| Arc::clone(mpd))
    }

    /// The manifest at `path` parsed (version `etag`).
    ///
    /// Returns the model to use: ffmpeg's final (static) MPD has no availabilityStartTime, and then
    /// the live version's is kept, so a recording keeps the wall-clock times its segments had while
    /// live (its playlists' EXT-X-PROGRAM-DATE-TIME, the times of `?start=` views).
    pub fn manifest_parsed(&mut self, path: &StorePath, etag: &str, mpd: Arc<Mpd>, now: Instant) -> Arc<Mpd> {
        let (folder, name) = (path.folder(), path.name());
        let f = self.folder(folder, now);
        let live_start = f.mpds.get(name).and_then(|(_, before)| before.availability_start);
        let mpd = match live_start.filter(|_| mpd.availability_start.is_none()) {
            Some(start) => {
                let mut kept = Mpd::clone(&mpd);
                kept.availability_start = Some(start);
                Arc::new(kept)
            }
            None => mpd,
        };
        f.mpds.insert(name.to_owned(), (etag.to_owned(), Arc::clone(&mpd)));
        self.wake(folder);
        mpd
    }

    /// The init segment at `path` parsed.
    pub fn init_parsed(&mut self, path: &StorePath, init: Arc<Init>, now: Instant) {
        let (folder, name) = (path.folder(), path.name());
        let f = self.folder(folder, now);
        f.activity.touch(now);
        f.inits.insert(name.to_owned(), init);
    }

    /// Whether the folder of `path` has no parsed manifest: after a restart its manifests are only
    /// on disk, and the driver parses them before a segment of the folder is indexed.
    pub fn needs_manifests(&self, path: &StorePath) -> bool {
        self.folders.get(path.folder()).is_none_or(|f| f.mpds.is_empty())
    }

    /// Whether segment `path` is the first of its representation that the index sees (since start,
    /// or since its run began): then the driver lists the folder's stored files, because an earlier
    /// run may be on disk only.
    pub fn needs_stored(&self, path: &StorePath) -> bool {
        let (folder, name) = (path.folder(), path.name());
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
        path: &StorePath,
        arrival: u64,
        stored: &[(String, u64)],
        now: Instant,
    ) -> (Arc<SegmentIndex>, Option<Arc<Init>>, Vec<Action>) {
        let (folder, name) = (path.folder(), path.name());
        let f = self.folder(folder, now);
        let actions = new_run(f, path, arrival, stored);
        // Arrival 0: found on disk at start, not uploaded.
        if arrival > 0 {
            f.first_upload.get_or_insert(now);
        } else {
            f.found_on_disk = true;
        }
        f.activity.touch(now);
        let index = Arc::new(SegmentIndex::new(Arc::clone(&f.activity), arrival, now));
        f.segments.insert(name.to_owned(), Arc::clone(&index));
        let init = init_for(f, name);
        self.wake(folder);
        (index, init, actions)
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
    pub fn segment(&self, path: &StorePath) -> Option<Arc<SegmentIndex>> {
        self.folders.get(path.folder())?.segments.get(path.name()).cloned()
    }

    /// The last parsed version of the manifest at `path`, marked static (ended), when its stream
    /// ended by a delete (or `gone`: it is no longer in the store, even before the removal event
    /// reached the index).
    pub fn ended_manifest(&self, path: &StorePath, gone: bool) -> Option<Arc<Mpd>> {
        let (folder, name) = (path.folder(), path.name());
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

    /// For a missing `path` that is one of the next two segments of a live representation at
    /// `now`, how long to wait for its upload to start (one segment duration); None for any other.
    pub fn upcoming(&self, path: &StorePath, now: Instant) -> Option<Duration> {
        let (folder, name) = (path.folder(), path.name());
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

    /// How many CMAF chunks make an LL-HLS part in the folder of the media file at `path` (1 until
    /// a playlist was made); None when the folder is not a CMAF stream's (it has no init segment).
    pub fn chunks_per_part(&self, path: &StorePath) -> Option<usize> {
        let f = self.folders.get(path.folder()).filter(|f| !f.inits.is_empty())?;
        Some(f.hls_timing.values().map(|t| t.chunks_per_part).max().unwrap_or(1))
    }
}

/// The new-run rule for segment `path` of folder `f` starting at `arrival`: forgets the earlier
/// run's indexed segments and returns the deletions of them and of those only on disk.
fn new_run(f: &mut Folder, path: &StorePath, arrival: u64, stored: &[(String, u64)]) -> Vec<Action> {
    let (folder, name) = (path.folder(), path.name());
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
    // The caller wakes the folder (the new segment is a change too).
    let mut deleted: Vec<String> = indexed.into_iter().chain(on_disk).map(|(n, _)| n).collect();
    deleted.sort();
    deleted.dedup();
    deleted
        .into_iter()
        .filter_map(|old| path.sibling(&old).ok())
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
pub(super) fn longest_segment(mpd: &Mpd) -> Duration {
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
    // Resolved once: a DVR window's folder holds thousands of segments.
    let names = template.media_names(rep);
    f.segments
        .iter()
        .filter_map(move |(name, index)| names.as_ref()?.number(name).map(|n| (n, index)))
}
