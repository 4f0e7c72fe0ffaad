//! The live stream index. The rules live in [`state`], a pure state machine; this module is its
//! driver: it follows the store's upload events, reads every media upload like a player would (a
//! [`crate::store::Reader`], woken by appends) and runs the CMAF reader over it as it grows, parses
//! init segments and manifests when they complete, feeds all that to the state with the time,
//! carries out the state's actions on the store, and sends the state's wake-ups through the
//! folders' change channels, which it owns ([`wake`]). What the state keeps (chunk timelines,
//! tracks, parsed MPDs) feeds the MPD rewriter, the early-request hold, the release of growing
//! segments ([`release`]) and LL-HLS, whose blocking reload is [`blocking`].
//!
//! The modules import one way: this driver uses all of them; [`blocking`] and [`release`] use the
//! driver, the state and [`segment`]; [`wake`] uses the state's `Wake`; the state uses only
//! [`segment`]; [`segment`] uses nothing of the live index.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

pub mod blocking;
mod release;
mod segment;
pub mod state;
mod wake;

pub use blocking::{HlsError, Playlist, PlaylistKind};
pub use release::{Release, ReleasePoint};
pub use segment::{Progress, SegmentIndex};
pub use state::lifetime::ENDED_MEMORY;
pub use state::list::{RepresentationSummary, StreamList, StreamSummary};
pub use state::{Action, LiveOptions, State, Wake};

use crate::media::cmaf::{self, ChunkScanner};
use crate::media::kind::FileKind;
use crate::media::mpd::{self, Mpd, Observed, ServiceDefaults};
use crate::store::{Entry, EntryState, Removal, Store, StoreEvent, StorePath};
use wake::Wakes;

/// Largest init segment or manifest read whole.
const MAX_WHOLE: usize = 4 << 20;

/// How often folders of which nothing is stored are looked for, to be forgotten.
const FORGET_SWEEP: Duration = Duration::from_secs(5);

/// Streams listed at most by `GET /ldash/` and `/ldash/streams` (the newest).
pub const STREAMS_LISTED: usize = 200;

/// The state and the channels its wake-ups go through, under one lock (so a waiter subscribes and
/// the state changes in one order).
#[derive(Debug)]
struct Core {
    state: State,
    wakes: Wakes,
}

impl Core {
    /// Sends the wake-ups the state owes (after every event).
    fn wake(&mut self) {
        let wakes = self.state.take_wakes();
        self.wakes.send(wakes);
    }
}

/// The index, shared by the routes; cheap to clone.
#[derive(Debug, Clone)]
pub struct Live {
    store: Store,
    core: Arc<Mutex<Core>>,
    service: Arc<ServiceDefaults>,
    /// Set once what was on disk at start is indexed ([`Live::restore`]).
    restored: watch::Receiver<bool>,
    /// When the index started.
    started: Instant,
}

impl Live {
    /// Starts following `store` (needs a tokio runtime): `service` are the ServiceDescription
    /// values written into MPDs that lack them, `options` the index's rules.
    pub fn start(store: Store, service: ServiceDefaults, options: LiveOptions) -> Live {
        let (restored, restored_rx) = watch::channel(false);
        let live = Live {
            store: store.clone(),
            core: Arc::new(Mutex::new(Core {
                state: State::new(options),
                wakes: Wakes::default(),
            })),
            service: Arc::new(service),
            restored: restored_rx,
            started: Instant::now(),
        };
        let events = store.subscribe();
        tokio::spawn(live.clone().follow_store(events));
        let restoring = live.clone();
        tokio::spawn(async move {
            let (live, started) = (restoring.clone(), restoring.started);
            restoring.restore().await;
            live.update(|state| state.disk_indexed(started));
            restored.send_replace(true);
        });
        live
    }

    /// Waits until what was on disk at start is indexed (at once, after that), at most `limit`.
    pub async fn restored(&self, limit: Duration) {
        let mut restored = self.restored.clone();
        let _ = tokio::time::timeout(limit, restored.wait_for(|done| *done)).await;
    }

    /// Whether this origin is ready for viewers an edge would send it: what was on disk at start
    /// is indexed, and every live stream found there has had a whole segment uploaded since (it is
    /// no longer behind its encoder) or has waited the end rule's time from the start for its
    /// encoder ([`State::catching_up`]). Err: what it waits for.
    pub fn ready(&self) -> Result<(), String> {
        if !*self.restored.borrow() {
            return Err("indexing what was on disk at start".into());
        }
        let waiting = self.core().state.catching_up(self.started, Instant::now());
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "catching up with the encoder: no whole segment uploaded since the start yet for the live streams found on disk in {}",
                waiting.join(", ")
            ))
        }
    }

    /// After a restart the store holds what it found on disk, and no upload announced it: index
    /// it as if it had just been uploaded, at the times it was written (init segments first, then
    /// segments oldest first), so that a stream's MPD and playlists are served from its last state
    /// at once, and a stream whose encoder does not come back ends by the usual rule, counted from
    /// the start ([`State::disk_indexed`]). A segment uploaded since (its event indexed it) is left
    /// as it is.
    async fn restore(self) {
        let started = Instant::now();
        let now = SystemTime::now();
        let written = |entry: &Entry| {
            let age = now.duration_since(entry.modified()).unwrap_or_default();
            started.checked_sub(age).unwrap_or(started)
        };
        let mut restored = 0usize;
        for folder in self.store.folders() {
            let entries: Vec<Arc<Entry>> = self
                .store
                .list(&folder)
                .into_iter()
                .filter(|e| e.state() == EntryState::Complete)
                .collect();
            if !entries.iter().any(|e| FileKind::of(e.path()) == FileKind::Mpd) {
                continue;
            }
            let mut segments = Vec::new();
            for entry in entries {
                if FileKind::of(entry.path()) == FileKind::Mpd {
                    // Parsed now, so that readiness knows the folder's streams.
                    let _ = self.manifest(entry.path()).await;
                }
                if FileKind::of(entry.path()) != FileKind::Media {
                    continue;
                }
                match entry.reader(0, None).next_chunk().await {
                    Some(Ok(first)) if looks_like_init(&first) => {
                        let at = written(&entry);
                        self.clone().follow_media(entry.path().clone(), entry, Some(at)).await;
                    }
                    Some(Ok(_)) => segments.push(entry),
                    Some(Err(_)) | None => {}
                }
            }
            segments.sort_by(|a, b| (a.modified(), a.path()).cmp(&(b.modified(), b.path())));
            for entry in segments {
                if self.segment(entry.path()).is_some() {
                    continue;
                }
                let at = written(&entry);
                self.clone().follow_media(entry.path().clone(), entry, Some(at)).await;
                restored += 1;
            }
        }
        if restored > 0 {
            tracing::info!(
                restored,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "indexed the segments found on disk"
            );
        }
    }

    async fn follow_store(self, mut events: broadcast::Receiver<StoreEvent>) {
        // Folders of which nothing is stored any more are forgotten on this tick (see
        // `state::ENDED_MEMORY`): what the index holds stays bounded by what the store holds.
        let mut sweep = tokio::time::interval(FORGET_SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = sweep.tick() => {
                    self.expire_dvr();
                    let mut core = self.core();
                    let Core { state, wakes } = &mut *core;
                    state.forget(Instant::now(), |folder| wakes.watched(folder));
                    core.wake();
                    let Core { state, wakes } = &mut *core;
                    wakes.prune(|folder| state.knows(folder));
                    continue;
                }
            };
            match event {
                Ok(StoreEvent::Started { path, entry }) => self.started(&path, entry),
                Ok(StoreEvent::Removed { path, cause }) => {
                    self.update(|state| state.removed(&path, cause == Removal::Purged, Instant::now()))
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "live index fell behind the store's events; some segments are not indexed"
                    );
                    self.forget_missed_removals();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Deletes the segments that aged out of the DVR window (none without one), each only if no
    /// later upload replaced the version indexed; the store's removal events then update the index.
    fn expire_dvr(&self) {
        let expired = self.core().state.dvr_expired(Instant::now());
        // A path gone already has its removal event on the way; one replaced since is indexed
        // anew, young.
        let deleted = expired
            .into_iter()
            .filter(|(path, arrival)| self.store.delete_before(path, arrival.saturating_add(1)))
            .count();
        if deleted > 0 {
            tracing::debug!(deleted, "segments older than the DVR window deleted");
        }
    }

    /// When the oldest segment every representation of the manifest at `path` still has starts
    /// (how far back a time view may reach); None when nothing bounds it.
    pub fn oldest_kept(&self, path: &StorePath, mpd: &Mpd) -> Option<SystemTime> {
        self.core().state.oldest_kept(path.folder(), mpd)
    }

    /// Whether the DVR window keeps segment `path` now: a DELETE of it from its encoder is
    /// answered, but carried out only once the segment ages out of the window.
    pub fn dvr_keeps(&self, path: &StorePath) -> bool {
        self.core().state.dvr_keeps(path, Instant::now())
    }

    /// After missed events: whatever the index keeps of a path no longer stored goes (taken as
    /// purged: a manifest deleted in that moment is not remembered as ended).
    fn forget_missed_removals(&self) {
        let known = self.core().state.known_paths();
        let gone: Vec<StorePath> = known
            .into_iter()
            .filter(|path| self.store.get(path).is_none())
            .collect();
        let now = Instant::now();
        self.update(|state| {
            for path in &gone {
                state.removed(path, true, now);
            }
        });
    }

    fn started(&self, path: &StorePath, entry: Arc<Entry>) {
        match FileKind::of(path) {
            FileKind::Mpd => {
                tokio::spawn(self.clone().follow_manifest(path.clone(), entry));
            }
            FileKind::Media => {
                tokio::spawn(self.clone().follow_media(path.clone(), entry, None));
            }
            _ => {}
        }
    }

    async fn follow_manifest(self, path: StorePath, entry: Arc<Entry>) {
        self.update(|state| state.manifest_upload_started(&path, Instant::now()));
        let Ok(bytes) = entry.read_whole(MAX_WHOLE).await else {
            return;
        };
        self.parse_manifest(&path, &entry.etag(), &bytes);
    }

    /// Parses a manifest into the state (once per version); returns it.
    fn parse_manifest(&self, path: &StorePath, etag: &str, bytes: &[u8]) -> Option<Arc<Mpd>> {
        if let Some(mpd) = self.core().state.cached_manifest(path, etag) {
            return Some(mpd);
        }
        match mpd::parse(bytes) {
            Ok(parsed) => {
                let parsed = Arc::new(parsed);
                Some(self.update(|state| state.manifest_parsed(path, etag, parsed, Instant::now())))
            }
            Err(err) => {
                tracing::warn!(%path, %err, "manifest does not parse as an MPD; it is served as uploaded");
                None
            }
        }
    }

    /// Indexes media upload `path` as it grows: an init segment is parsed, a segment's chunks are
    /// found. `written` is when a segment found on disk at start was written (its chunks count as
    /// uploaded then); None for an upload now.
    async fn follow_media(self, path: StorePath, entry: Arc<Entry>, written: Option<Instant>) {
        let now = || written.unwrap_or_else(Instant::now);
        let mut reader = entry.reader(0, None);
        let Some(Ok(first)) = reader.next_chunk().await else {
            return;
        };
        if looks_like_init(&first) {
            let Ok(bytes) = entry.read_whole(MAX_WHOLE).await else {
                return;
            };
            match cmaf::parse_init(&bytes) {
                Ok(init) => self.update(|state| state.init_parsed(&path, Arc::new(init), now())),
                Err(err) => tracing::warn!(%path, %err, "init segment does not parse; it is served as uploaded"),
            }
            return;
        }
        // After an ldash restart the folder's manifests are only on disk: parse them (once;
        // cached) so that the segment's representation is known.
        let folder = path.folder();
        if self.core().state.needs_manifests(&path) {
            for stored in self.store.list(folder) {
                if FileKind::of(stored.path()) == FileKind::Mpd && stored.state() == EntryState::Complete {
                    let _ = self.manifest(stored.path()).await;
                }
            }
        }
        let stored: Vec<(String, u64)> = if self.core().state.needs_stored(&path) {
            self.store
                .list(folder)
                .iter()
                .map(|e| (e.path().name().to_owned(), e.arrival()))
                .collect()
        } else {
            Vec::new()
        };
        // The folder's change counter is bumped here after each chunk, without the index lock.
        let ((index, init, actions), changes) = {
            let mut core = self.core();
            let started = core.state.segment_started(&path, entry.arrival(), &stored, now());
            core.wake();
            (started, core.wakes.sender(folder))
        };
        for action in actions {
            match action {
                Action::Delete { path, before } => {
                    self.store.delete_before(&path, before);
                }
            }
        }
        let mut scanner = ChunkScanner::new(init.as_deref());
        let mut next = Some(Ok(first));
        let mut failed = false;
        while let Some(item) = next {
            match item {
                Ok(bytes) => match scanner.push(&bytes) {
                    Ok(found) if !found.is_empty() => {
                        index.push(found, now());
                        wake::bump(&changes);
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(%path, %err, "segment is not readable as CMAF; it is served as uploaded");
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
        wake::bump(&changes);
    }

    /// The state and its channels, locked. Every update under this lock is a single event or
    /// query of the pure state: a poisoned lock is still consistent.
    fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Feeds an event to the state, then sends the wake-ups it owes.
    fn update<R>(&self, event: impl FnOnce(&mut State) -> R) -> R {
        let mut core = self.core();
        let out = event(&mut core.state);
        core.wake();
        out
    }

    /// A receiver of `folder`'s change counter: it moves whenever a segment of the folder starts,
    /// gains a chunk, ends or leaves, or a manifest of it changes, and closes when the index
    /// forgets the folder.
    fn changes(&self, folder: &str) -> watch::Receiver<u64> {
        self.core().wakes.subscribe(folder)
    }

    /// The chunk index of a media segment, if it is (being) indexed.
    pub fn segment(&self, path: &StorePath) -> Option<Arc<SegmentIndex>> {
        self.core().state.segment(path)
    }

    /// The parsed manifest at `path` (from the cache when its version was parsed before).
    pub async fn manifest(&self, path: &StorePath) -> Option<(Arc<Mpd>, Bytes)> {
        let Some(entry) = self.store.get(path) else {
            return self.ended_manifest(path).map(|mpd| (mpd, Bytes::new()));
        };
        if entry.state() != EntryState::Complete {
            return None;
        }
        let bytes = entry.read_whole(MAX_WHOLE).await.ok()?;
        let mpd = self.parse_manifest(path, &entry.etag(), &bytes)?;
        Some((mpd, bytes))
    }

    /// The parsed manifest at `path` as it is now, read only when its version was not parsed yet.
    pub async fn current_manifest(&self, path: &StorePath) -> Option<Arc<Mpd>> {
        if let Some(entry) = self.store.get(path).filter(|e| e.state() == EntryState::Complete) {
            if let Some(mpd) = self.core().state.cached_manifest(path, &entry.etag()) {
                return Some(mpd);
            }
        }
        self.manifest(path).await.map(|(mpd, _)| mpd)
    }

    /// The last parsed version of a manifest the encoder deleted, marked static (ended).
    fn ended_manifest(&self, path: &StorePath) -> Option<Arc<Mpd>> {
        // Gone from the store is ended, even before this index has handled the removal event (a
        // request right after the encoder's DELETE got a 404 in that moment).
        let gone = self.store.get(path).is_none();
        self.core().state.ended_manifest(path, gone)
    }

    /// Whether `path` names a manifest that is stored, or was deleted at the end of its stream.
    pub fn knows_manifest(&self, path: &StorePath) -> bool {
        self.store.get(path).is_some() || self.ended_manifest(path).is_some()
    }

    /// The manifest rewritten for low latency, or None when it should be served as uploaded.
    pub fn rewrite(&self, path: &StorePath, mpd: &Mpd, bytes: &[u8], clock_url: &str) -> Option<Bytes> {
        let folder = path.folder();
        let (observed, ended, time_shift) = {
            let core = self.core();
            let state = &core.state;
            (
                state.observe(folder, mpd),
                state.ended_duration(folder, mpd, Instant::now()),
                state.dvr_depth(folder, mpd, SystemTime::now()),
            )
        };
        let rewrite = mpd::Rewrite {
            clock_url,
            service: &self.service,
            observed: &observed,
            ended,
            time_shift,
        };
        match mpd.rewrite(bytes, &rewrite) {
            Ok(std::borrow::Cow::Borrowed(_)) => None,
            Ok(std::borrow::Cow::Owned(out)) => Some(Bytes::from(out)),
            Err(err) => {
                tracing::warn!(%path, %err, "manifest could not be rewritten; it is served as uploaded");
                None
            }
        }
    }

    /// What the ingest shows of each representation of `mpd` in `folder`.
    pub fn observe(&self, folder: &str, mpd: &Mpd) -> HashMap<(usize, usize, String), Observed> {
        self.core().state.observe(folder, mpd)
    }

    /// The streams the index knows (manifests parsed since start), newest upload first, at most
    /// [`STREAMS_LISTED`], and how many there are.
    pub fn streams(&self) -> StreamList {
        let modified = |path: &str| self.store.get(path).map(|entry| entry.modified());
        // One pass over the store for every folder, outside the index lock.
        let bytes = self.store.folder_bytes();
        let disk = |folder: &str| bytes.get(folder).copied().unwrap_or(0);
        let now = (Instant::now(), SystemTime::now());
        self.core().state.streams(modified, disk, now, STREAMS_LISTED)
    }

    /// For a missing `path` that is one of the next two segments of a live representation, how long
    /// to wait for its upload to start (one segment duration); None for any other missing path.
    pub fn upcoming(&self, path: &StorePath) -> Option<Duration> {
        self.core().state.upcoming(path, Instant::now())
    }
}

fn looks_like_init(first: &[u8]) -> bool {
    matches!(first.get(4..8), Some(b"ftyp") | Some(b"moov"))
        && !first.windows(4).take(64).any(|w| w == b"styp" || w == b"moof")
}
