//! Write-through persistence: completed entries go to the root folder under a temporary name and are
//! renamed into place, one job after another on a blocking thread, in the order uploads completed (so
//! an older version of a manifest never lands over a newer one). At start the root is scanned and its
//! files become complete entries served from disk (hidden files, whose names start with '.', are
//! left alone).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::entry::{inode, Entry, MemoryGauge};
use super::{lock_index, Index, Shared, Slot};

/// Folder under the root that holds files being written; never served.
pub(crate) const TEMP_DIR: &str = ".ldash-tmp";

/// Work for the persistence thread.
#[derive(Debug)]
pub(crate) enum Job {
    /// Write a completed entry, if it is still the current version of its path.
    Write(Arc<Entry>),
    /// Remove a path's file (and folders left empty).
    Remove(String),
    /// Answer once every earlier job is done.
    Flush(oneshot::Sender<()>),
}

pub(crate) fn spawn(root: PathBuf, mut jobs: mpsc::UnboundedReceiver<Job>, shared: Weak<Shared>) {
    tokio::task::spawn_blocking(move || {
        let temp = root.join(TEMP_DIR);
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
                    let target = root.join(entry.path());
                    match write_atomically(&temp.join(name), &target, &chunks) {
                        Ok(ino) => {
                            if failing > 0 {
                                tracing::info!(failed = failing, "writing to the root folder works again");
                                failing = 0;
                            }
                            entry.set_persisted(target, ino)
                        }
                        Err(err) => {
                            if let Some(shared) = shared.upgrade() {
                                shared.persist_errors.fetch_add(1, Ordering::Relaxed);
                            }
                            failing += 1;
                            if failing % 100 == 1 {
                                tracing::warn!(path = entry.path(), %err, failing, "could not persist upload; it stays in memory only")
                            } else {
                                tracing::debug!(path = entry.path(), %err, "could not persist upload; it stays in memory only")
                            }
                        }
                    }
                }
                Job::Remove(path) => remove(&root, &path),
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

fn write_atomically(temp: &Path, target: &Path, chunks: &[bytes::Bytes]) -> std::io::Result<u64> {
    if let Some(dir) = temp.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let written = (|| {
        let mut file = std::fs::File::create(temp)?;
        for chunk in chunks {
            file.write_all(chunk)?;
        }
        let ino = inode(&file.metadata()?);
        std::fs::rename(temp, target)?;
        Ok(ino)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    written
}

fn remove(root: &Path, path: &str) {
    let file = root.join(path);
    match std::fs::remove_file(&file) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => tracing::warn!(path, %err, "could not remove file"),
    }
    // Remove folders the removal left empty, up to (not including) the root.
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Indexes the files under `root` as complete entries (clearing leftovers of interrupted writes).
pub(crate) fn scan(root: &Path, gauge: &Arc<MemoryGauge>, epoch: Instant) -> std::io::Result<Index> {
    let _ = std::fs::remove_dir_all(root.join(TEMP_DIR));
    let mut index = Index {
        slots: HashMap::new(),
        folders: HashMap::new(),
        tombstones: HashMap::new(),
    };
    let now_system = SystemTime::now();
    let now = Instant::now();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for item in std::fs::read_dir(&dir)? {
            let item = item?;
            // Hidden files (.gitignore and the like, and the temporary folder) are not content.
            if item.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let meta = item.metadata()?;
            let file = item.path();
            if meta.is_dir() {
                pending.push(file);
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let Some(rel) = relative_path(root, &file) else {
                tracing::warn!(file = %file.display(), "not served: its name is not a valid ldash path");
                continue;
            };
            let modified = meta.modified().unwrap_or(now_system);
            let age = now_system.duration_since(modified).unwrap_or_default();
            let written = now.checked_sub(age).unwrap_or(epoch);
            let folder = super::folder_of(&rel).to_owned();
            let seen = index.folders.entry(folder).or_insert(written);
            *seen = (*seen).max(written);
            let path: Arc<str> = Arc::from(rel.as_str());
            let entry = Entry::on_disk(
                Arc::clone(&path),
                file,
                inode(&meta),
                meta.len(),
                modified,
                Arc::clone(gauge),
                epoch,
            );
            index.slots.insert(
                path,
                Slot {
                    current: entry,
                    pending: None,
                },
            );
        }
    }
    Ok(index)
}

/// The store path of a file under the root ('/'-separated), if every part is a valid name.
fn relative_path(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    for part in rel.components() {
        let std::path::Component::Normal(name) = part else {
            return None;
        };
        parts.push(name.to_str()?);
    }
    let path = parts.join("/");
    super::path::validate(&path).ok()?;
    Some(path)
}
