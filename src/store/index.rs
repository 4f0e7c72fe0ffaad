//! The store's index: path -> slot (the version readers get, and a replacement in progress), the
//! folders that hold stored paths (a name is a file or a folder, never both), the last write per
//! folder for garbage collection, and the tombstones of recent deletes. Only the store changes it,
//! under its lock.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::path::StorePath;
use super::{Entry, StoreError};

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) current: Arc<Entry>,
    pub(super) pending: Option<Arc<Entry>>,
}

#[derive(Debug, Default)]
pub(super) struct Index {
    /// Change only through [`Index::insert_slot`] and [`Index::remove_slot`] (or recount `held`).
    pub(super) slots: HashMap<StorePath, Slot>,
    /// For every folder that holds a stored path at any depth, how many: `a/b/c` counts in `a` and
    /// `a/b`. A path cannot be stored where a folder is held, nor under a stored path.
    pub(super) held: HashMap<String, usize>,
    /// Last write per folder (the path up to its last '/'), for garbage collection: a live stream's
    /// init segment is written once but stays needed while its folder receives segments.
    pub(super) folders: HashMap<String, Instant>,
    /// Recently deleted paths with the arrival of their delete: an upload that arrived before the
    /// delete but reaches the store after it (another connection) must not bring the path back.
    pub(super) tombstones: HashMap<StorePath, (u64, Instant)>,
}

impl Index {
    pub(super) fn insert_slot(&mut self, path: StorePath, slot: Slot) {
        let folders: Vec<&str> = folders_above(&path).collect();
        if self.slots.insert(path.clone(), slot).is_none() {
            for folder in folders {
                *self.held.entry(folder.to_owned()).or_default() += 1;
            }
        }
    }

    pub(super) fn remove_slot(&mut self, path: &str) -> Option<Slot> {
        let slot = self.slots.remove(path)?;
        self.release_folders(path);
        Some(slot)
    }

    /// Uncounts `path` from its folders (after it left `slots`).
    pub(super) fn release_folders(&mut self, path: &str) {
        for folder in folders_above(path) {
            if let Some(count) = self.held.get_mut(folder) {
                *count -= 1;
                if *count == 0 {
                    self.held.remove(folder);
                }
            }
        }
    }

    /// Why `path` cannot be stored beside the paths stored or in progress: one of its folders is a
    /// file, or it is itself a folder.
    pub(super) fn collision(&self, path: &str) -> Option<StoreError> {
        if self.held.contains_key(path) {
            return Some(StoreError::FolderInTheWay {
                folder: path.to_owned(),
            });
        }
        folders_above(path)
            .find(|folder| self.slots.contains_key(*folder))
            .map(|file| StoreError::FileInTheWay { file: file.to_owned() })
    }
}

/// The folders above a path, outermost first: `a`, `a/b` for `a/b/c`.
pub(super) fn folders_above(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(at, _)| &path[..at])
}
