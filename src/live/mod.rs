//! The live stream index. It follows the store's upload events and reads every media upload like a
//! player would (a [`crate::store::Reader`], woken by appends), running the CMAF reader over it as it
//! grows; it parses init segments and manifests when they complete. What it keeps (chunk timelines,
//! tracks, parsed MPDs) feeds the MPD rewriter, the early-request hold and LL-HLS. The media logic
//! itself is pure code in [`crate::media`]; this module is the I/O around it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

pub mod hls;

use crate::media::cmaf::{self, Chunk, ChunkScanner, Init};
use crate::media::liveness::{self, EndRule};
use crate::media::mpd::{self, Mpd, Observed, Representation, SegmentTemplate, ServiceDefaults};
use crate::store::{Entry, EntryState, ReadError, Store, StoreEvent};

/// Largest init segment or manifest read whole.
const MAX_WHOLE: usize = 4 << 20;
/// Complete segments per representation used to measure bandwidth.
const BANDWIDTH_WINDOW: usize = 5;

/// How far one media segment's upload has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// CMAF chunks complete so far.
    pub chunks: usize,
    /// The upload ended (cleanly or not).
    pub ended: bool,
    /// The upload was aborted or its bytes could not be read as CMAF.
    pub failed: bool,
}

/// The CMAF chunks of one media segment, growing with its upload.
#[derive(Debug)]
pub struct SegmentIndex {
    chunks: Mutex<Vec<Chunk>>,
    progress: watch::Sender<Progress>,
    /// The folder's change counter, bumped with every new chunk and every end.
    folder: Arc<watch::Sender<u64>>,
    /// The folder's last upload, moved on with every chunk.
    activity: Arc<Activity>,
    /// The upload's place in the server's arrival order, to tell an earlier run's segments from
    /// the current run's.
    arrival: u64,
}

impl SegmentIndex {
    fn new(folder: Arc<watch::Sender<u64>>, activity: Arc<Activity>, arrival: u64) -> Self {
        SegmentIndex {
            chunks: Mutex::new(Vec::new()),
            progress: watch::channel(Progress::default()).0,
            folder,
            activity,
            arrival,
        }
    }

    /// The chunks found so far.
    pub fn chunks(&self) -> Vec<Chunk> {
        lock(&self.chunks).clone()
    }

    /// Progress, and a way to wait for the next change.
    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    fn push(&self, found: Vec<Chunk>) {
        let count = {
            let mut chunks = lock(&self.chunks);
            chunks.extend(found);
            chunks.len()
        };
        self.activity.touch();
        self.progress.send_modify(|p| p.chunks = count);
        self.folder.send_modify(|n| *n += 1);
    }

    fn end(&self, failed: bool) {
        self.progress.send_modify(|p| {
            p.ended = true;
            p.failed = failed;
        });
        self.folder.send_modify(|n| *n += 1);
    }
}

/// When a folder last received an upload: an atomic, so following a chunk takes no lock.
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let millis = Instant::now().saturating_duration_since(self.epoch).as_millis();
        self.last
            .store(u64::try_from(millis).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

#[derive(Debug)]
struct Folder {
    /// The last upload into the folder (any chunk, manifest or init segment), for the end rule: a
    /// folder that was only read since start counts from when the index first saw it.
    activity: Arc<Activity>,
    /// Bumped whenever a segment of the folder gains a chunk, starts or ends, or a manifest changes:
    /// every blocked playlist request of the folder wakes on it.
    changed: Arc<watch::Sender<u64>>,
    /// Manifests the encoder deleted (ffmpeg's -remove_at_exit): their streams have ended, and
    /// their playlists say so (EXT-X-ENDLIST) until a new upload of the manifest.
    ended: std::collections::HashSet<String>,
    /// LL-HLS timing per manifest name, fixed the first time it can be computed.
    hls_timing: HashMap<String, crate::media::hls::Timing>,
    /// Media segments by file name.
    segments: BTreeMap<String, Arc<SegmentIndex>>,
    /// Init segments by file name.
    inits: HashMap<String, Arc<Init>>,
    /// Parsed manifests by file name, with the ETag of the version parsed.
    mpds: HashMap<String, (String, Arc<Mpd>)>,
    /// The newest LL-HLS snapshot per (manifest name, representation id), shared by the playlist
    /// requests that wake on the same change.
    snapshots: HashMap<(String, String), Arc<hls::Snapshot>>,
}

/// One stream for the stream list: a manifest and what the index knows of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamSummary {
    /// The manifest's store path (`live/stream.mpd`).
    pub manifest: String,
    /// "live" (dynamic MPD) or "ended" (static).
    pub state: &'static str,
    /// When the manifest was last uploaded (RFC 3339).
    pub last_upload: String,
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

/// The index, shared by the routes; cheap to clone.
#[derive(Debug, Clone)]
pub struct Live {
    store: Store,
    folders: Arc<Mutex<HashMap<String, Folder>>>,
    service: Arc<ServiceDefaults>,
    /// LL-HLS PART-TARGET (seconds) set by the operator, instead of the longest chunk seen.
    part_target: Option<f64>,
    /// When a live stream whose encoder went quiet counts as ended.
    end_rule: EndRule,
}

/// How the index treats the streams it follows.
#[derive(Debug, Clone, Copy)]
pub struct LiveOptions {
    /// LL-HLS PART-TARGET in seconds for every stream (None: the longest chunk seen).
    pub part_target: Option<f64>,
    /// Segment durations without an upload after which a live stream is ended (0: never).
    pub end_after_segments: u32,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            part_target: None,
            end_after_segments: 5,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is a single insert or push: a poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Splits a store path into its folder ("" at the root) and file name.
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn is_media(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".m4s", ".mp4", ".m4v", ".m4a", ".cmfv", ".cmfa", ".cmft"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

impl Default for Folder {
    fn default() -> Self {
        Folder {
            activity: Arc::new(Activity::new()),
            changed: Arc::new(watch::channel(0).0),
            ended: Default::default(),
            hls_timing: HashMap::new(),
            segments: BTreeMap::new(),
            inits: HashMap::new(),
            mpds: HashMap::new(),
            snapshots: HashMap::new(),
        }
    }
}

impl Live {
    /// Starts following `store` (needs a tokio runtime).
    pub fn start(store: Store, service: ServiceDefaults) -> Live {
        Self::start_with_part_target(store, service, None)
    }

    /// [`Live::start`] with a fixed LL-HLS PART-TARGET in seconds.
    pub fn start_with_part_target(store: Store, service: ServiceDefaults, part_target: Option<f64>) -> Live {
        Self::start_with_options(
            store,
            service,
            LiveOptions {
                part_target,
                ..LiveOptions::default()
            },
        )
    }

    /// [`Live::start`] with every option.
    pub fn start_with_options(store: Store, service: ServiceDefaults, options: LiveOptions) -> Live {
        let live = Live {
            store: store.clone(),
            folders: Arc::default(),
            service: Arc::new(service),
            part_target: options.part_target.filter(|t| *t > 0.0),
            end_rule: EndRule {
                after_segments: options.end_after_segments,
            },
        };
        let events = store.subscribe();
        tokio::spawn(live.clone().follow_store(events));
        live
    }

    async fn follow_store(self, mut events: broadcast::Receiver<StoreEvent>) {
        loop {
            match events.recv().await {
                Ok(StoreEvent::Started { path, entry }) => self.started(&path, entry),
                Ok(StoreEvent::Removed { path }) => self.removed(&path),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "live index fell behind the store's events; some segments are not indexed"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn started(&self, path: &str, entry: Arc<Entry>) {
        let (_, name) = split(path);
        if name.to_ascii_lowercase().ends_with(".mpd") {
            tokio::spawn(self.clone().follow_manifest(path.to_owned(), entry));
        } else if is_media(name) {
            tokio::spawn(self.clone().follow_media(path.to_owned(), entry));
        }
    }

    fn removed(&self, path: &str) {
        let (folder, name) = split(path);
        let mut folders = lock(&self.folders);
        if let Some(f) = folders.get_mut(folder) {
            if f.segments.remove(name).is_some() {
                // Playlists must stop listing it (and shared snapshots must be taken again).
                f.changed.send_modify(|n| *n += 1);
            }
            f.inits.remove(name);
            if f.mpds.contains_key(name) {
                // Keep the parsed manifest: the stream's playlists now end.
                f.ended.insert(name.to_owned());
                f.changed.send_modify(|n| *n += 1);
                return;
            }
            if f.segments.is_empty() && f.inits.is_empty() && f.mpds.is_empty() {
                folders.remove(folder);
            }
        }
    }

    async fn follow_manifest(self, path: String, entry: Arc<Entry>) {
        {
            let (folder, name) = split(&path);
            if let Some(f) = lock(&self.folders).get_mut(folder) {
                f.ended.remove(name);
                f.activity.touch();
            }
        }
        let Ok(bytes) = read_whole(&entry).await else {
            return;
        };
        self.parse_manifest(&path, &entry.etag(), &bytes);
    }

    /// Parses a manifest into the cache; returns it.
    fn parse_manifest(&self, path: &str, etag: &str, bytes: &[u8]) -> Option<Arc<Mpd>> {
        let (folder, name) = split(path);
        if let Some((cached, mpd)) = lock(&self.folders).get(folder).and_then(|f| f.mpds.get(name)) {
            if cached == etag {
                return Some(Arc::clone(mpd));
            }
        }
        match mpd::parse(bytes) {
            Ok(parsed) => {
                let parsed = Arc::new(parsed);
                let mut folders = lock(&self.folders);
                let f = folders.entry(folder.to_owned()).or_default();
                f.mpds.insert(name.to_owned(), (etag.to_owned(), Arc::clone(&parsed)));
                f.changed.send_modify(|n| *n += 1);
                Some(parsed)
            }
            Err(err) => {
                tracing::warn!(path, %err, "manifest does not parse as an MPD; it is served as uploaded");
                None
            }
        }
    }

    async fn follow_media(self, path: String, entry: Arc<Entry>) {
        let (folder, name) = split(&path);
        let mut reader = entry.reader(0, None);
        let Some(Ok(first)) = reader.next_chunk().await else {
            return;
        };
        if looks_like_init(&first) {
            let Ok(bytes) = read_whole(&entry).await else {
                return;
            };
            match cmaf::parse_init(&bytes) {
                Ok(init) => {
                    let mut folders = lock(&self.folders);
                    let f = folders.entry(folder.to_owned()).or_default();
                    f.activity.touch();
                    f.inits.insert(name.to_owned(), Arc::new(init));
                }
                Err(err) => tracing::warn!(path, %err, "init segment does not parse; it is served as uploaded"),
            }
            return;
        }
        self.start_of_run(folder, name, entry.arrival()).await;
        let (index, init) = {
            let mut folders = lock(&self.folders);
            let f = folders.entry(folder.to_owned()).or_default();
            f.activity.touch();
            let index = Arc::new(SegmentIndex::new(
                Arc::clone(&f.changed),
                Arc::clone(&f.activity),
                entry.arrival(),
            ));
            f.segments.insert(name.to_owned(), Arc::clone(&index));
            f.changed.send_modify(|n| *n += 1);
            (index, init_for(f, name))
        };
        let mut scanner = ChunkScanner::new(init.as_deref());
        let mut next = Some(Ok(first));
        let mut failed = false;
        while let Some(item) = next {
            match item {
                Ok(bytes) => match scanner.push(&bytes) {
                    Ok(found) if !found.is_empty() => index.push(found),
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(path, %err, "segment is not readable as CMAF; it is served as uploaded");
                        failed = true;
                        break;
                    }
                },
                Err(_) => {
                    failed = true;
                    break;
                }
            }
            next = reader.next_chunk().await;
        }
        index.end(failed || entry.state() != EntryState::Complete);
    }

    /// Called as segment `name` of `folder` starts uploading (at `arrival`): when its number is below
    /// the newest its representation already has, the encoder started a new run (it was killed and
    /// restarted, or lost its connection to a restarted ldash), and the earlier run's segments of
    /// that representation are forgotten and deleted, so that its numbering is the only one in the
    /// playlists and no player is served a dead run's segment under a reused name.
    async fn start_of_run(&self, folder: &str, name: &str, arrival: u64) {
        // After an ldash restart the folder's manifests and segments are only on disk: parse the
        // manifests (once; cached) so the segment's representation is known.
        let known = lock(&self.folders).get(folder).is_some_and(|f| !f.mpds.is_empty());
        if !known {
            for entry in self.store.list(folder) {
                if entry.path().to_ascii_lowercase().ends_with(".mpd") && entry.state() == EntryState::Complete {
                    let _ = self.manifest(entry.path()).await;
                }
            }
        }
        // The first segment of a representation since start (or since its run began) is compared
        // with the stored files too: the earlier run may be on disk only.
        let first = {
            let folders = lock(&self.folders);
            let Some(f) = folders.get(folder) else { return };
            let Some((rep, template, _)) = representation_of(f, name) else {
                return;
            };
            let none = numbered(f, &rep, &template).next().is_none();
            none
        };
        let stored: Vec<(String, u64)> = if first {
            self.store
                .list(folder)
                .iter()
                .map(|e| (split(e.path()).1.to_owned(), e.arrival()))
                .collect()
        } else {
            Vec::new()
        };
        let earlier: Vec<String> = {
            let mut folders = lock(&self.folders);
            let Some(f) = folders.get_mut(folder) else { return };
            let Some((rep, template, number)) = representation_of(f, name) else {
                return;
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
                return;
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
            f.changed.send_modify(|n| *n += 1);
            indexed.into_iter().chain(on_disk).map(|(n, _)| n).collect()
        };
        for old in earlier {
            let path = if folder.is_empty() {
                old
            } else {
                format!("{folder}/{old}")
            };
            self.store.delete_before(&path, arrival);
        }
    }

    /// Whether the stream of `mpd` in folder `f` has ended at `now`: a static MPD, or a live one
    /// whose folder has received no upload for the end rule's number of segment durations.
    fn has_ended(&self, f: &Folder, mpd: &Mpd, now: Instant) -> bool {
        !mpd.dynamic
            || self
                .end_rule
                .has_ended(f.activity.last().into_std(), longest_segment(mpd), now.into_std())
    }

    /// When the live stream of `mpd` in `f` ends if nothing is uploaded before.
    fn ends_at(&self, f: &Folder, mpd: &Mpd) -> Option<Instant> {
        if !mpd.dynamic {
            return None;
        }
        self.end_rule
            .ends_at(f.activity.last().into_std(), longest_segment(mpd))
            .map(Instant::from_std)
    }

    /// The chunk index of a media segment, if it is (being) indexed.
    pub fn segment(&self, path: &str) -> Option<Arc<SegmentIndex>> {
        let (folder, name) = split(path);
        lock(&self.folders)
            .get(folder)
            .and_then(|f| f.segments.get(name))
            .cloned()
    }

    /// The parsed manifest at `path` (from the cache when its version was parsed before).
    pub async fn manifest(&self, path: &str) -> Option<(Arc<Mpd>, Bytes)> {
        let Some(entry) = self.store.get(path) else {
            return self.ended_manifest(path).map(|mpd| (mpd, Bytes::new()));
        };
        if entry.state() != EntryState::Complete {
            return None;
        }
        let bytes = read_whole(&entry).await.ok()?;
        let mpd = self.parse_manifest(path, &entry.etag(), &bytes)?;
        Some((mpd, bytes))
    }

    /// The last parsed version of a manifest the encoder deleted, marked static (ended).
    fn ended_manifest(&self, path: &str) -> Option<Arc<Mpd>> {
        // Gone from the store is ended, even before this index has handled the removal event (a
        // request right after the encoder's DELETE got a 404 in that moment).
        let gone = self.store.get(path).is_none();
        let (folder, name) = split(path);
        let folders = lock(&self.folders);
        let f = folders.get(folder)?;
        if !gone && !f.ended.contains(name) {
            return None;
        }
        let (_, mpd) = f.mpds.get(name)?;
        let mut ended = Mpd::clone(mpd);
        ended.dynamic = false;
        Some(Arc::new(ended))
    }

    /// Whether `path` names a manifest that is stored, or was deleted at the end of its stream.
    pub fn knows_manifest(&self, path: &str) -> bool {
        self.store.get(path).is_some() || self.ended_manifest(path).is_some()
    }

    /// The manifest rewritten for low latency, or None when it should be served as uploaded.
    pub fn rewrite(&self, path: &str, mpd: &Mpd, bytes: &[u8], clock_url: &str) -> Option<Bytes> {
        let (folder, _) = split(path);
        let observed = self.observe(folder, mpd);
        let ended = {
            let folders = lock(&self.folders);
            folders
                .get(folder)
                .filter(|f| mpd.dynamic && self.has_ended(f, mpd, Instant::now()))
                .and_then(|f| presentation_end(f, mpd))
        };
        let rewrite = mpd::Rewrite {
            clock_url,
            service: &self.service,
            observed: &observed,
            ended,
        };
        match mpd.rewrite(bytes, &rewrite) {
            Ok(std::borrow::Cow::Borrowed(_)) => None,
            Ok(std::borrow::Cow::Owned(out)) => Some(Bytes::from(out)),
            Err(err) => {
                tracing::warn!(path, %err, "manifest could not be rewritten; it is served as uploaded");
                None
            }
        }
    }

    /// What the ingest shows of each representation of `mpd` in `folder`.
    pub fn observe(&self, folder: &str, mpd: &Mpd) -> HashMap<(usize, usize, String), Observed> {
        let folders = lock(&self.folders);
        let mut observed = HashMap::new();
        let Some(f) = folders.get(folder) else {
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

    /// The streams the index knows (manifests parsed since start), newest upload first.
    pub fn streams(&self) -> Vec<StreamSummary> {
        let folders = lock(&self.folders);
        let mut streams: Vec<(std::time::SystemTime, StreamSummary)> = Vec::new();
        for (folder, f) in folders.iter() {
            for (name, (_, mpd)) in &f.mpds {
                let manifest = if folder.is_empty() {
                    name.clone()
                } else {
                    format!("{folder}/{name}")
                };
                let Some(entry) = self.store.get(&manifest) else {
                    continue;
                };
                let representations = mpd
                    .periods
                    .iter()
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
                let modified = entry.modified();
                streams.push((
                    modified,
                    StreamSummary {
                        manifest,
                        state: if self.has_ended(f, mpd, Instant::now()) {
                            "ended"
                        } else {
                            "live"
                        },
                        last_upload: rfc3339(modified),
                        representations,
                    },
                ));
            }
        }
        streams.sort_by_key(|s| std::cmp::Reverse(s.0));
        streams.into_iter().map(|(_, s)| s).collect()
    }

    /// For a missing `path` that is one of the next two segments of a live representation, how long
    /// to wait for its upload to start (one segment duration); None for any other missing path.
    pub fn upcoming(&self, path: &str) -> Option<Duration> {
        let (folder, name) = split(path);
        let folders = lock(&self.folders);
        let f = folders.get(folder)?;
        for (_, mpd) in f.mpds.values() {
            if self.has_ended(f, mpd, Instant::now()) {
                continue;
            }
            for rep in mpd.representations() {
                let Some(template) = &rep.template else { continue };
                let Some(wanted) = template.match_media(rep, name) else {
                    continue;
                };
                let newest = numbered(f, rep, template).map(|(n, _)| n).max()?;
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
    let period_start = mpd.periods.first().and_then(|p| p.start).unwrap_or_default();
    mpd.representations()
        .filter_map(|rep| {
            let template = rep.template.as_ref()?;
            let init = f.inits.get(&template.init_path(rep)?)?;
            let timescale = u64::from(init.tracks.first()?.timescale);
            let end = numbered(f, rep, template)
                .filter(|(_, index)| {
                    let progress = *index.progress.borrow();
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
fn numbered<'f>(
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
    let mut segments: Vec<(u64, Vec<Chunk>, Progress)> = numbered(f, rep, template)
        .map(|(n, index)| (n, index.chunks(), *index.progress.borrow()))
        .collect();
    if segments.is_empty() {
        return None;
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
    })
}

/// RFC 3339 with milliseconds, or "" for a time humantime cannot print (before 1970, after 9999:
/// a file's modification time can be anything).
fn rfc3339(time: std::time::SystemTime) -> String {
    let last = std::time::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    if time < std::time::UNIX_EPOCH || time > last {
        return String::new();
    }
    humantime::format_rfc3339_millis(time).to_string()
}

fn looks_like_init(first: &[u8]) -> bool {
    matches!(first.get(4..8), Some(b"ftyp") | Some(b"moov"))
        && !first.windows(4).take(64).any(|w| w == b"styp" || w == b"moof")
}

/// An entry's whole content (it must be complete or completing; bounded by [`MAX_WHOLE`]).
async fn read_whole(entry: &Arc<Entry>) -> Result<Bytes, ReadError> {
    let mut reader = entry.reader(0, None);
    let mut all = Vec::new();
    while let Some(chunk) = reader.next_chunk().await {
        all.extend_from_slice(&chunk?);
        if all.len() > MAX_WHOLE {
            return Err(ReadError::Disk("too large to read whole".into()));
        }
    }
    Ok(all.into())
}
