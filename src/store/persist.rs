//! Write-through persistence: completed entries go to the root folder under a temporary name and are
//! renamed into place, one job after another on a blocking thread, in the order uploads completed (so
//! an older version of a manifest never lands over a newer one). At start the root is scanned and its
//! files become complete entries served from disk (hidden files, whose names start with '.', are
//! left alone). Every disk operation goes through [`RootDir`], which follows no link under the root.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::entry::{inode, Entry, MemoryGauge};
use super::path::StorePath;
use super::root::RootDir;
use super::{lock_index, Index, Shared, Slot};

/// Work for the persistence thread.
#[derive(Debug)]
pub(crate) enum Job {
    /// Write a completed entry, if it is still the current version of its path.
    Write(Arc<Entry>),
    /// Remove a path's file (and folders left empty).
    Remove(StorePath),
    /// Answer once every earlier job is done.
    Flush(oneshot::Sender<()>),
}

pub(crate) fn spawn(root: Arc<RootDir>, mut jobs: mpsc::UnboundedReceiver<Job>, shared: Weak<Shared>) {
    tokio::task::spawn_blocking(move || {
        let counter = AtomicU64::new(0);
        // Failed writes in a row: a full or broken disk fails every write, and one warning per
        // segment would flood the log, so only the first of a run and every hundredth are warnings.
        let mut failing: u64 = 0;
        while let Some(job) = jobs.blocking_recv() {
            match job {
                Job::Write(entry) => {
                    if !is_current(&shared, &entry) {
                        continue;
                    }
                    let Some(chunks) = entry.complete_chunks() else {
                        continue;
                    };
                    let name = format!("{}-{}", std::process::id(), counter.fetch_add(1, Ordering::Relaxed));
                    match root.write(entry.path(), &name, &chunks) {
                        Ok(ino) => {
                            if failing > 0 {
                                tracing::info!(failed = failing, "writing to the root folder works again");
                                failing = 0;
                            }
                            entry.set_persisted(Arc::clone(&root), ino)
                        }
                        Err(err) => {
                            if let Some(shared) = shared.upgrade() {
                                shared.persist_errors.fetch_add(1, Ordering::Relaxed);
                            }
                            failing += 1;
                            if failing % 100 == 1 {
                                tracing::warn!(path = %entry.path(), %err, failing, "could not persist upload; it stays in memory only")
                            } else {
                                tracing::debug!(path = %entry.path(), %err, "could not persist upload; it stays in memory only")
                            }
                        }
                    }
                }
                Job::Remove(path) => {
                    if let Err(err) = root.remove(&path) {
                        tracing::warn!(%path, %err, "could not remove file");
                    }
                }
                Job::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    });
}

fn is_current(shared: &Weak<Shared>, entry: &Arc<Entry>) -> bool {
    let Some(shared) = shared.upgrade() else {
        // The store is gone (shutdown): finish what was queued.
        return true;
    };
    let index = lock_index(&shared);
    index
        .slots
        .get(entry.path())
        .is_some_and(|slot| Arc::ptr_eq(&slot.current, entry))
}

/// Indexes the files under the root as complete entries (clearing leftovers of interrupted writes).
pub(crate) fn scan(root: &Arc<RootDir>, gauge: &Arc<MemoryGauge>, epoch: Instant) -> std::io::Result<Index> {
    root.clear_temp();
    let mut index = Index::default();
    let now_system = SystemTime::now();
    let now = Instant::now();
    for found in root.scan()? {
        let meta = found.meta;
        let modified = meta.modified().unwrap_or(now_system);
        let age = now_system.duration_since(modified).unwrap_or_default();
        let written = now.checked_sub(age).unwrap_or(epoch);
        let folder = found.path.folder().to_owned();
        let seen = index.folders.entry(folder).or_insert(written);
        *seen = (*seen).max(written);
        let path = found.path;
        let entry = Entry::on_disk(
            path.clone(),
            Arc::clone(root),
            inode(&meta),
            meta.len(),
            modified,
            Arc::clone(gauge),
            epoch,
        );
        index.insert_slot(
            path,
            Slot {
                current: entry,
                pending: None,
            },
        );
    }
    Ok(index)
}
