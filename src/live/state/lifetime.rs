//! How long the index keeps a folder: what it knows of a path goes when the path leaves the store,
//! and a folder goes once nothing of it is stored. A manifest its encoder deleted (ffmpeg's
//! `-remove_at_exit`) is remembered as ended for [`ENDED_MEMORY`], so that players still polling it
//! are told the stream ended rather than answered `404`; one purged by garbage collection (its
//! folder got no upload for the TTL: the stream ended long ago) is forgotten at once. So what the
//! index holds is bounded by what the store holds, plus the streams deleted in the last
//! [`ENDED_MEMORY`].

use std::time::Duration;

use tokio::time::Instant;

use super::{Folder, State, Wake};
use crate::store::StorePath;

/// How long a manifest deleted by its encoder is still served as ended.
pub const ENDED_MEMORY: Duration = Duration::from_secs(300);

impl Folder {
    /// Nothing of the folder is stored: no segment, no init segment, and only manifests that
    /// were deleted.
    fn holds_nothing(&self) -> bool {
        self.segments.is_empty() && self.inits.is_empty() && self.mpds.keys().all(|name| self.ended.contains(name))
    }
}

impl State {
    /// `path` left the store at `now`: deleted (or replaced by a new run, or an upload that
    /// failed), or `purged` by garbage collection.
    pub fn removed(&mut self, path: &StorePath, purged: bool, now: Instant) {
        let (folder, name) = (path.folder(), path.name());
        let Some(f) = self.folders.get_mut(folder) else {
            return;
        };
        // Playlists must stop listing a removed segment (and shared snapshots must be taken
        // again), and an ended manifest's playlists now end.
        let mut changed = f.segments.remove(name).is_some();
        f.inits.remove(name);
        if f.mpds.contains_key(name) {
            if purged {
                f.mpds.remove(name);
                f.ended.remove(name);
                f.hls_timing.remove(name);
                f.snapshots.retain(|(manifest, _), _| manifest != name);
            } else {
                // Keep the parsed manifest for a while: the stream's playlists now end.
                f.ended.insert(name.to_owned());
            }
            changed = true;
        }
        if f.segments.is_empty() && f.inits.is_empty() && f.mpds.is_empty() {
            self.folders.remove(folder);
            self.wakes.push(Wake::Gone(folder.to_owned()));
            return;
        }
        if f.holds_nothing() {
            f.emptied = Some(now);
        }
        if changed {
            self.wake(folder);
        }
    }

    /// Forgets the folders of which nothing has been stored since [`ENDED_MEMORY`] before `now`,
    /// unless a request waits on them (`watched`, which the driver answers from the channels it
    /// owns). Returns how many it forgot.
    pub fn forget(&mut self, now: Instant, watched: impl Fn(&str) -> bool) -> usize {
        let before = self.folders.len();
        let mut gone = Vec::new();
        self.folders.retain(|folder, f| {
            let expired = f
                .emptied
                .is_none_or(|at| now.saturating_duration_since(at) >= ENDED_MEMORY);
            let keep = !(f.holds_nothing() && expired && !watched(folder));
            if !keep {
                gone.push(Wake::Gone(folder.clone()));
            }
            keep
        });
        self.wakes.extend(gone);
        before - self.folders.len()
    }
}

impl State {
    /// Every path the index keeps something of, but a manifest it remembers as ended: for the
    /// driver to check against the store after it missed some of the store's events.
    pub fn known_paths(&self) -> Vec<StorePath> {
        let mut paths = Vec::new();
        for (folder, f) in &self.folders {
            let names = f
                .segments
                .keys()
                .chain(f.inits.keys())
                .chain(f.mpds.keys().filter(|name| !f.ended.contains(*name)));
            paths.extend(names.filter_map(|name| StorePath::in_folder(folder, name).ok()));
        }
        paths
    }
}
