//! The writing end of an upload, and the count of uploads in progress.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::{Entry, EntryState, Landed, Shared, Store, StoreError};

/// Counts one upload in progress; released when dropped.
#[derive(Debug)]
pub(super) struct UploadPermit(pub(super) Arc<Shared>);

impl Drop for UploadPermit {
    fn drop(&mut self) {
        self.0.uploads.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The writing end of one upload. Dropping it before [`Upload::finish`] aborts the upload.
#[derive(Debug)]
pub struct Upload {
    pub(super) store: Store,
    pub(super) entry: Arc<Entry>,
    pub(super) _permit: UploadPermit,
    pub(super) done: bool,
}

impl Upload {
    /// The entry being written (readable while it grows, unless it replaces a complete version).
    pub fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }

    /// Appends a chunk; every waiting reader sees it at once.
    pub fn append(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.entry.append(chunk, self.store.shared.limits.max_upload_bytes)?;
        if self.store.memory_used() > self.store.shared.limits.max_memory {
            self.store.shared.pressure.notify_one();
        }
        Ok(())
    }

    /// Completes the upload: readers reach a clean end and a replaced version gives way.
    pub fn finish(mut self) -> Result<Landed, StoreError> {
        self.done = true;
        if self.entry.state() != EntryState::Growing {
            return Err(StoreError::Superseded);
        }
        self.store.finish(&self.entry)
    }

    /// Aborts the upload: readers end with an error, and a previous complete version stays.
    pub fn abort(mut self) {
        self.done = true;
        self.store.abort(&self.entry);
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            self.store.abort(&self.entry);
        }
    }
}
