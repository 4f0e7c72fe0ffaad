//! CMAF ingest's driver: it reads a track's POST body with the pure packager
//! ([`crate::media::package`]) and stores what it decides, as an encoder that writes DASH would:
//! the init segment, each segment as a growing upload chunk by chunk (readable while it grows), the
//! channel's MPD, deletes of segments that left the window, and, when the channel's POSTs have all
//! ended and the end rule's time has passed without a new one, the final (static) MPD. From the
//! store on, everything else (low-latency MPD rewrite, LL-HLS playlists, early requests, metrics,
//! the stream list) is the same as for any uploaded stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::media::liveness::EndRule;
use crate::media::package::{
    init_name, representation_id, segment_name, Channel, IngestError, PackageOptions, Step, TrackEvent, TrackReader,
    MANIFEST,
};
use crate::store::{Replace, Store, StoreError, Upload, UploadOptions};

/// Why a track's POST failed.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    /// The track's bytes were refused.
    #[error("{0}")]
    Ingest(#[from] IngestError),
    /// The store refused a write.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The body failed.
    #[error("the upload failed: {0}")]
    Body(String),
    /// The body sent nothing for too long.
    #[error("no data for {0} s")]
    Idle(u64),
}

/// What a finished POST delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// CMAF chunks received.
    pub chunks: u64,
}

/// A channel and what the driver knows of it beyond the pure part.
#[derive(Debug)]
struct Slot {
    channel: Channel,
    /// A manifest has been stored.
    published: bool,
    /// Bumped by every POST that starts, so a pending end knows it was overtaken.
    generation: u64,
}

/// The packaged channels.
#[derive(Debug, Clone)]
pub struct Packager {
    store: Store,
    options: PackageOptions,
    end_rule: EndRule,
    channels: Arc<Mutex<HashMap<String, Arc<Mutex<Slot>>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks leaves the state consistent: a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Packager {
    /// A packager writing into `store`; channels end after `end_rule` once their POSTs have ended.
    pub fn new(store: Store, options: PackageOptions, end_rule: EndRule) -> Packager {
        Packager {
            store,
            options,
            end_rule,
            channels: Arc::default(),
        }
    }

    /// Whether `channel` is a packaged channel.
    pub fn has_channel(&self, channel: &str) -> bool {
        lock(&self.channels).contains_key(channel)
    }

    /// Reads track `track` of `channel` from `body` until it ends, storing what it carries. A
    /// failure comes with the chunks packaged before it.
    pub async fn ingest<B>(
        &self,
        channel: &str,
        track: &str,
        body: B,
        idle: Duration,
    ) -> Result<Delivered, (TrackError, u64)>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let id = representation_id(track).map_err(|err| (err.into(), 0))?;
        let slot = self.slot(channel);
        let mut writer = TrackWriter {
            packager: self,
            folder: channel,
            id: &id,
            slot: &slot,
            open: None,
            init: None,
            started: false,
            chunks: 0,
        };
        let result = writer.read(body, idle).await;
        let ended = writer.started.then(|| lock(&slot).channel.track_ended(&id)).flatten();
        let closed = writer.close(ended.is_some_and(|(_, empty)| empty));
        if writer.started {
            let slot = lock(&slot);
            if !slot.channel.receiving() {
                self.end_later(channel, &slot);
            }
        }
        let chunks = writer.chunks;
        closed.and(result).map_err(|err| (err, chunks))
    }

    /// Ends `channel` now (a DELETE of the channel): its final manifest is stored. False if there is
    /// no such channel.
    pub fn end(&self, channel: &str) -> bool {
        let Some(slot) = lock(&self.channels).get(channel).cloned() else {
            return false;
        };
        let slot = lock(&slot);
        if let Some(text) = slot.channel.final_manifest(SystemTime::now()) {
            self.put(&format!("{channel}/{MANIFEST}"), Bytes::from(text));
        }
        true
    }

    fn slot(&self, channel: &str) -> Arc<Mutex<Slot>> {
        let slot = Arc::clone(lock(&self.channels).entry(channel.to_owned()).or_insert_with(|| {
            Arc::new(Mutex::new(Slot {
                channel: Channel::new(self.options),
                published: false,
                generation: 0,
            }))
        }));
        lock(&slot).generation += 1;
        slot
    }

    /// Once no POST of the channel has started for the end rule's time, stores its final manifest.
    fn end_later(&self, channel: &str, slot: &Slot) {
        let Some(quiet) = self.end_rule.quiet_bound(slot.channel.segment_duration()) else {
            return;
        };
        let generation = slot.generation;
        let packager = self.clone();
        let channel = channel.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(quiet).await;
            let Some(slot) = lock(&packager.channels).get(&channel).cloned() else {
                return;
            };
            let slot = lock(&slot);
            if slot.generation == generation && !slot.channel.receiving() {
                if let Some(text) = slot.channel.final_manifest(SystemTime::now()) {
                    tracing::info!(channel, "packaged channel ended");
                    packager.put(&format!("{channel}/{MANIFEST}"), Bytes::from(text));
                }
            }
        });
    }

    /// Stores a whole file (an init segment, a manifest).
    fn put(&self, path: &str, bytes: Bytes) {
        let stored = self
            .store
            .begin_upload(path, UploadOptions::default())
            .and_then(|mut upload| {
                upload.append(bytes)?;
                upload.finish()
            });
        if let Err(err) = stored {
            tracing::warn!(path, %err, "packager: could not store");
        }
    }
}

/// One POST of one track.
struct TrackWriter<'a> {
    packager: &'a Packager,
    folder: &'a str,
    id: &'a str,
    slot: &'a Mutex<Slot>,
    /// The segment being written.
    open: Option<Upload>,
    /// The init segment, until the first chunk.
    init: Option<(Bytes, crate::media::cmaf::Init)>,
    /// The track joined its channel (its first chunk came).
    started: bool,
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
                Ok(Some(Err(err))) => return Err(TrackError::Body(err.into().to_string())),
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
        match event {
            TrackEvent::Init { bytes, init } => {
                // Published with the first chunk: a track refused before it publishes nothing.
                self.init = Some((bytes, init));
            }
            TrackEvent::Chunk { bytes, chunk } => {
                if let Some((bytes, init)) = self.init.take() {
                    self.packager.put(&self.path(&init_name(self.id)), bytes);
                    let mut slot = lock(self.slot);
                    let changed = slot.channel.track_started(self.id, &init);
                    self.started = true;
                    if changed && slot.published {
                        self.publish(&slot);
                    }
                }
                self.chunks += 1;
                let placement = lock(self.slot)
                    .channel
                    .place(self.id, &chunk, bytes.len() as u64, SystemTime::now());
                for step in placement.steps {
                    self.step(step, &bytes)?;
                }
                let mut slot = lock(self.slot);
                if self.open.is_some() && (!slot.published || placement.republish) {
                    slot.published = true;
                    self.publish(&slot);
                }
            }
        }
        Ok(())
    }

    fn step(&mut self, step: Step, chunk: &Bytes) -> Result<(), TrackError> {
        let store = &self.packager.store;
        match step {
            Step::Close { empty, .. } => return self.close(empty),
            Step::Open { number } => {
                let path = self.path(&segment_name(self.id, number));
                let replace = Replace::AtOnce;
                self.open = Some(store.begin_upload(&path, UploadOptions { arrival: None, replace })?);
            }
            Step::Append { .. } => {
                if let Some(open) = self.open.as_mut() {
                    open.append(chunk.clone())?;
                }
            }
            Step::Delete { number } => {
                store.delete(&self.path(&segment_name(self.id, number)), None);
            }
        }
        Ok(())
    }

    fn publish(&self, slot: &Slot) {
        if let Some(text) = slot.channel.manifest(SystemTime::now()) {
            self.packager.put(&self.path(MANIFEST), Bytes::from(text));
        }
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.folder)
    }

    /// Ends the open segment. It holds whole chunks only, so it is complete even when the body
    /// failed (an encoder that lost its connection): a shorter segment, never a broken one. An
    /// empty one (opened ahead of a chunk that never came) is discarded.
    fn close(&mut self, empty: bool) -> Result<(), TrackError> {
        match self.open.take() {
            Some(open) if empty => {
                open.abort();
                Ok(())
            }
            Some(open) => open.finish().map(|_| ()).map_err(TrackError::from),
            None => Ok(()),
        }
    }
}
