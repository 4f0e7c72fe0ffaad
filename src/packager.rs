//! The CMAF-ingest packager's driver: it reads a track's POST body with the pure packager
//! ([`crate::media::package`]) and stores what it decides, as an encoder that writes DASH would:
//! the init segment, each segment as a growing upload chunk by chunk (readable while it grows), the
//! channel's MPD, deletes of segments that left the window, and, when the channel's POSTs have all
//! ended and the end rule's time has passed without a new one, the final (static) MPD. From the
//! store on, everything else (low-latency MPD rewrite, LL-HLS playlists, early requests, metrics,
//! the stream list) is the same as for any uploaded stream.
//!
//! It sits before the store, as an encoder does: it writes through the store's API and reads back
//! only what it stored itself, and knows nothing of the live index that follows the store (a later
//! ingest protocol, RTMP or SRT, is another driver of the same kind beside it). What it does not
//! hold: HTTP (the route hands it the body), and the packaging rules (pure, in `media::package`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::media::cmaf::parse_init;
use crate::media::liveness::EndRule;
use crate::media::package::{
    init_name, parse_init_name, parse_segment_name, representation_id, segment_name, Channel, IngestError,
    PackageOptions, Step, Stored, TrackEvent, TrackReader, MANIFEST, PACKAGED,
};
use crate::store::{EntryState, PathError, Replace, Store, StoreError, StoreEvent, StorePath, Upload, UploadOptions};

/// Largest manifest or init segment read back whole after a restart.
const MAX_WHOLE: usize = 4 << 20;

/// Why a track's POST failed.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    /// The track's bytes were refused.
    #[error("{0}")]
    Ingest(#[from] IngestError),
    /// The store refused a write.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A name the packager made, in the channel's folder, is not a valid store path (too long).
    #[error("{0}")]
    Path(#[from] PathError),
    /// The body failed.
    #[error("the upload failed: {0}")]
    Body(String),
    /// The body sent nothing for too long.
    #[error("no data for {0} s")]
    Idle(u64),
    /// The body delivered less than the minimum rate ([`crate::pace`]).
    #[error("{0}")]
    TooSlow(crate::pace::TooSlow),
    /// A newer POST of the same track took over, or the channel was deleted.
    #[error("a newer POST of this track took over (or the channel was deleted)")]
    Superseded,
}

/// What a finished POST delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// CMAF chunks received.
    pub chunks: u64,
}

/// A channel and what the driver knows of it beyond the pure part. Everything a chunk changes is
/// done under its lock (store calls, no `.await`), so the POSTs of a channel never interleave
/// halfway through a chunk.
#[derive(Debug)]
struct Slot {
    channel: Channel,
    /// The segment each track is writing (owned here, not by a POST: a POST that takes over a
    /// track, or a restart of the timeline, finishes it rather than dropping it).
    uploads: HashMap<String, Upload>,
    /// The newest POST of each track: an older one still running stops at its next chunk.
    posts: HashMap<String, u64>,
    /// Each track's newest init segment, stored again under a new run's name when one starts.
    inits: HashMap<String, Bytes>,
    /// Bumped by every POST that starts and by a DELETE, so a pending end knows it was overtaken.
    generation: u64,
    /// The dynamic manifest is stored and current.
    published: bool,
    /// The manifest changed since it was stored.
    dirty: bool,
}

/// The packaged channels.
#[derive(Debug, Clone)]
pub struct Packager {
    store: Store,
    options: PackageOptions,
    end_rule: EndRule,
    channels: Arc<Mutex<HashMap<StorePath, Arc<Mutex<Slot>>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks leaves the state consistent: a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Packager {
    /// A packager writing into `store`; channels end after `end_rule` once their POSTs have ended.
    pub fn new(store: Store, options: PackageOptions, end_rule: EndRule) -> Packager {
        let packager = Packager {
            store,
            options,
            end_rule,
            channels: Arc::default(),
        };
        tokio::spawn(packager.clone().forget_removed(packager.store.subscribe()));
        packager
    }

    /// Forgets a channel when its manifest leaves the store (garbage collection purged it, or it
    /// was deleted): what the packager keeps is bounded by what the store holds.
    async fn forget_removed(self, mut events: tokio::sync::broadcast::Receiver<StoreEvent>) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match events.recv().await {
                Ok(StoreEvent::Removed { path, .. }) => {
                    if let Some(channel) = path.parent().filter(|_| path.name() == MANIFEST) {
                        self.forget_if_gone(&channel);
                    }
                }
                Ok(StoreEvent::Started { .. }) => {}
                Err(RecvError::Lagged(_)) => {
                    let names: Vec<StorePath> = lock(&self.channels).keys().cloned().collect();
                    for channel in names {
                        self.forget_if_gone(&channel);
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Drops `channel` from memory if nothing of it is left to keep: no POST or DELETE is using it
    /// (only the map holds it), no segment is open, and its manifest is not stored (a channel that
    /// never published, as a refused track's, or one whose files are gone). One whose manifest is
    /// stored stays: an encoder reconnecting goes on with its timeline.
    fn forget_if_gone(&self, channel: &StorePath) {
        let mut channels = lock(&self.channels);
        let Some(slot) = channels.get(channel) else {
            return;
        };
        if Arc::strong_count(slot) > 1 {
            return;
        }
        let idle = {
            let slot = lock(slot);
            slot.uploads.is_empty() && slot.posts.is_empty()
        };
        // Under the map's lock (the order is map, channel, store), so no POST takes the channel
        // between this check and the removal.
        if idle && manifest_of(channel).and_then(|path| self.store.get(&path)).is_none() {
            channels.remove(channel);
        }
    }

    /// Reads track `track` of `channel` from `body` until it ends, storing what it carries. A
    /// failure comes with the chunks packaged before it.
    pub async fn ingest<B>(
        &self,
        channel: &StorePath,
        track: &str,
        body: B,
        idle: Duration,
    ) -> Result<Delivered, (TrackError, u64)>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let id = representation_id(track).map_err(|err| (err.into(), 0))?;
        let slot = self.slot(channel).await;
        let mut writer = TrackWriter {
            packager: self,
            folder: channel,
            id: &id,
            slot: &slot,
            post: None,
            init: None,
            chunks: 0,
        };
        let result = writer.read(body, idle).await;
        let closed = writer.end();
        let chunks = writer.chunks;
        {
            let slot = lock(&slot);
            // A channel that published nothing (a refused track's) has nothing to end.
            if !slot.channel.receiving() && slot.published {
                self.end_later(channel, &slot);
            }
        }
        drop(slot);
        // A refused track leaves nothing behind.
        self.forget_if_gone(channel);
        result
            .and_then(|delivered| closed.map(|()| delivered))
            .map_err(|err| (err, chunks))
    }

    /// Ends `channel` now (a DELETE of the channel): POSTs still running stop at their next chunk,
    /// open segments are finished and the final manifest is stored. After a restart, a channel that
    /// stored itself is picked up first. False if the channel never published anything.
    pub async fn end(&self, channel: &StorePath) -> bool {
        let Some(slot) = self.known_slot(channel).await else {
            return false;
        };
        let mut slot = lock(&slot);
        if !slot.published && slot.uploads.is_empty() {
            return false;
        }
        slot.generation += 1;
        let running: Vec<String> = slot.posts.drain().map(|(id, _)| id).collect();
        for id in running {
            slot.channel.track_ended(&id);
        }
        for (_, upload) in slot.uploads.drain() {
            let _ = upload.finish();
        }
        self.store_final(channel, &mut slot);
        true
    }

    /// The channel's slot: the one in memory, else the channel as it stored itself before a
    /// restart, else a new one.
    async fn slot(&self, channel: &StorePath) -> Arc<Mutex<Slot>> {
        if let Some(slot) = self.known_slot(channel).await {
            return slot;
        }
        Arc::clone(lock(&self.channels).entry(channel.clone()).or_insert_with(|| {
            Arc::new(Mutex::new(Slot {
                channel: Channel::new(self.options),
                uploads: HashMap::new(),
                posts: HashMap::new(),
                inits: HashMap::new(),
                generation: 0,
                published: false,
                dirty: false,
            }))
        }))
    }

    /// The channel's slot in memory, else the channel as it stored itself before a restart.
    async fn known_slot(&self, channel: &StorePath) -> Option<Arc<Mutex<Slot>>> {
        let known = lock(&self.channels).get(channel).cloned();
        if known.is_some() {
            return known;
        }
        let restored = self.restored(channel).await?;
        let mut channels = lock(&self.channels);
        let slot = channels
            .entry(channel.clone())
            .or_insert_with(|| Arc::new(Mutex::new(restored)));
        Some(Arc::clone(slot))
    }

    /// After a restart: the channel its stored live manifest (one the packager wrote), init
    /// segments and segments describe, so that an encoder reconnecting on the same timeline goes on
    /// with the same availabilityStartTime, Period and numbering. None when there is no such
    /// manifest or it does not fit (see [`Channel::restored`]).
    async fn restored(&self, channel: &StorePath) -> Option<Slot> {
        let manifest = self
            .store
            .get(&manifest_of(channel)?)
            .filter(|e| e.state() == EntryState::Complete)?;
        let bytes = manifest.read_whole(MAX_WHOLE).await.ok()?;
        if !bytes.windows(PACKAGED.len()).any(|w| w == PACKAGED.as_bytes()) {
            return None;
        }
        let mpd = crate::media::mpd::parse(&bytes).ok()?;
        let mut stored = Stored::default();
        let mut init_bytes = HashMap::new();
        for entry in self.store.list(channel) {
            if entry.state() != EntryState::Complete {
                continue;
            }
            let name = entry.path().name();
            if let Some((id, number, run)) = parse_segment_name(name) {
                stored.segments.push((id.to_owned(), number, run));
            } else if let Some((id, run)) = parse_init_name(name) {
                let Ok(bytes) = entry.read_whole(MAX_WHOLE).await else {
                    continue;
                };
                if let Ok(init) = parse_init(&bytes) {
                    stored.inits.insert((id.to_owned(), run), init);
                    init_bytes.insert((id.to_owned(), run), bytes);
                }
            }
        }
        let restored = Channel::restored(self.options, &mpd, &stored)?;
        let run = restored.current_run();
        tracing::info!(%channel, run, "packaged channel picked up from what it stored");
        Some(Slot {
            channel: restored,
            uploads: HashMap::new(),
            posts: HashMap::new(),
            inits: init_bytes
                .into_iter()
                .filter(|((_, r), _)| *r == run)
                .map(|((id, _), bytes)| (id, bytes))
                .collect(),
            generation: 0,
            published: true,
            dirty: false,
        })
    }

    /// Once no POST of the channel has started for the end rule's time, stores its final manifest.
    fn end_later(&self, channel: &StorePath, slot: &Slot) {
        let Some(quiet) = self.end_rule.quiet_bound(slot.channel.segment_duration()) else {
            return;
        };
        let generation = slot.generation;
        let packager = self.clone();
        let channel = channel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(quiet).await;
            let Some(slot) = lock(&packager.channels).get(&channel).cloned() else {
                return;
            };
            let mut slot = lock(&slot);
            if slot.generation == generation && !slot.channel.receiving() && slot.published {
                tracing::info!(%channel, "packaged channel ended");
                packager.store_final(&channel, &mut slot);
            }
        });
    }

    /// Stores the channel's static manifest; a POST that comes back publishes a dynamic one again.
    fn store_final(&self, channel: &StorePath, slot: &mut Slot) {
        if let Some(text) = slot.channel.final_manifest(SystemTime::now()) {
            let stored = channel
                .join(MANIFEST)
                .map_err(TrackError::from)
                .and_then(|path| Ok(self.put(&path, Bytes::from(text))?));
            if let Err(err) = stored {
                tracing::warn!(%channel, %err, "packager: could not store the final manifest");
            }
        }
        slot.published = false;
    }

    /// Stores a whole file (an init segment, a manifest).
    fn put(&self, path: &StorePath, bytes: Bytes) -> Result<(), StoreError> {
        let mut upload = self.store.begin_upload(path, UploadOptions::default())?;
        upload.append(bytes)?;
        upload.finish().map(|_| ())
    }
}

/// One POST of one track.
struct TrackWriter<'a> {
    packager: &'a Packager,
    folder: &'a StorePath,
    id: &'a str,
    slot: &'a Mutex<Slot>,
    /// This POST's number among the track's, once its first chunk made it the track's newest.
    post: Option<u64>,
    /// The init segment, until the first chunk.
    init: Option<(Bytes, crate::media::cmaf::Init)>,
    chunks: u64,
}

impl TrackWriter<'_> {
    async fn read<B>(&mut self, mut body: B, idle: Duration) -> Result<Delivered, TrackError>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut reader = TrackReader::new(self.packager.store.limits().max_upload_bytes);
        loop {
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => return Err(TrackError::Idle(idle.as_secs())),
                Ok(None) => break,
                Ok(Some(Err(err))) => {
                    return Err(match err.into().downcast::<crate::pace::TooSlow>() {
                        Ok(slow) => TrackError::TooSlow(*slow),
                        Err(err) => TrackError::Body(err.to_string()),
                    })
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else { continue };
            for event in reader.push(&data)? {
                self.handle(event)?;
            }
        }
        reader.finish()?;
        Ok(Delivered { chunks: self.chunks })
    }

    fn handle(&mut self, event: TrackEvent) -> Result<(), TrackError> {
        let (bytes, chunk) = match event {
            TrackEvent::Init { bytes, init } => {
                // Published with the first chunk: a track refused before it publishes nothing.
                self.init = Some((bytes, init));
                return Ok(());
            }
            TrackEvent::Chunk { bytes, chunk } => (bytes, chunk),
        };
        let mut slot = lock(self.slot);
        let mut new_init = false;
        if let Some((init_bytes, init)) = self.init.take() {
            slot.inits.insert(self.id.to_owned(), init_bytes);
            new_init = true;
            // This POST becomes the track's newest: an older one still running stops, and the
            // segment it was writing is closed (this POST's chunks in it are dropped, not appended
            // over what the older one sent).
            if slot.posts.contains_key(self.id) {
                let empty = slot.channel.track_ended(self.id).is_some_and(|(_, empty)| empty);
                close(slot.uploads.remove(self.id), empty)?;
            }
            slot.generation += 1;
            let post = slot.generation;
            slot.posts.insert(self.id.to_owned(), post);
            self.post = Some(post);
            slot.dirty |= slot.channel.track_started(self.id, &init);
        }
        if self.post.is_none() || slot.posts.get(self.id) != self.post.as_ref() {
            self.post = None;
            return Err(TrackError::Superseded);
        }
        self.chunks += 1;
        let placement = slot
            .channel
            .place(self.id, &chunk, bytes.len() as u64, SystemTime::now());
        slot.dirty |= placement.republish;
        // Init segments before the segments that need them: every track's under a new run's name,
        // else this POST's own under the current run's.
        let inits: Vec<(String, Bytes)> = match placement.run_started {
            Some(_) => slot.inits.iter().map(|(id, b)| (id.clone(), b.clone())).collect(),
            None if new_init => slot
                .inits
                .get(self.id)
                .map(|b| (self.id.to_owned(), b.clone()))
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        let run = slot.channel.current_run();
        for (id, bytes) in inits {
            self.packager.put(&self.path(&init_name(&id, run))?, bytes)?;
        }
        for step in placement.steps {
            self.step(&mut slot, step, &bytes)?;
        }
        if slot.uploads.contains_key(self.id) && (!slot.published || slot.dirty) {
            if let Some(text) = slot.channel.manifest(SystemTime::now()) {
                self.packager.put(&self.path(MANIFEST)?, Bytes::from(text))?;
                slot.published = true;
                slot.dirty = false;
            }
        }
        Ok(())
    }

    fn step(&self, slot: &mut Slot, step: Step, chunk: &Bytes) -> Result<(), TrackError> {
        let store = &self.packager.store;
        match step {
            Step::Close { empty, .. } => close(slot.uploads.remove(self.id), empty)?,
            Step::Open { number } => {
                // One a restart of the timeline left open is finished, never dropped.
                close(slot.uploads.remove(self.id), false)?;
                let path = self.path(&segment_name(self.id, number, slot.channel.run_of(number)))?;
                let replace = Replace::AtOnce;
                let upload = store.begin_upload(&path, UploadOptions { arrival: None, replace })?;
                slot.uploads.insert(self.id.to_owned(), upload);
            }
            Step::Append { .. } => {
                if let Some(open) = slot.uploads.get_mut(self.id) {
                    open.append(chunk.clone())?;
                }
            }
            Step::Delete { number } => {
                let run = slot.channel.run_of(number);
                store.delete(&self.path(&segment_name(self.id, number, run))?, None);
            }
        }
        Ok(())
    }

    /// The store path of file `name` of the channel.
    fn path(&self, name: &str) -> Result<StorePath, TrackError> {
        Ok(self.folder.join(name)?)
    }

    /// The POST ended: if it was still the track's newest, the segment it was writing is closed.
    fn end(&mut self) -> Result<(), TrackError> {
        let Some(post) = self.post else {
            return Ok(());
        };
        let mut slot = lock(self.slot);
        if slot.posts.get(self.id) != Some(&post) {
            return Ok(());
        }
        slot.posts.remove(self.id);
        let empty = slot.channel.track_ended(self.id).is_some_and(|(_, empty)| empty);
        close(slot.uploads.remove(self.id), empty)
    }
}

/// Ends a segment's upload. It holds whole chunks only, so it is complete even when the body
/// failed (an encoder that lost its connection): a shorter segment, never a broken one. An empty
/// one (opened ahead of a chunk that never came) is discarded.
fn close(upload: Option<Upload>, empty: bool) -> Result<(), TrackError> {
    match upload {
        // Also one left open by a restart of the timeline before any chunk reached it.
        Some(open) if empty || open.entry().is_empty() => {
            open.abort();
            Ok(())
        }
        Some(open) => open.finish().map(|_| ()).map_err(TrackError::from),
        None => Ok(()),
    }
}

/// The store path of a channel's manifest (None only if the channel's path is already at the
/// length limit).
fn manifest_of(channel: &StorePath) -> Option<StorePath> {
    channel.join(MANIFEST).ok()
}
