//! How long the index keeps a folder: what it knows of a path goes when the path leaves the store,
//! and a folder goes once nothing of it is stored. A manifest its encoder deleted (ffmpeg's
//! `-remove_at_exit`) is remembered as ended for [`ENDED_MEMORY`], so that players still polling it
//! are told the stream ended rather than answered `404`; one purged by garbage collection (its
//! folder got no upload for the TTL: the stream ended long ago) is forgotten at once. So what the
//! index holds is bounded by what the store holds, plus the streams deleted in the last
//! [`ENDED_MEMORY`].

use std::time::Duration;

use tokio::time::Instant;

use super::{split, Folder, State};

/// How long a manifest deleted by its encoder is still served as ended.
pub const ENDED_MEMORY: Duration = Duration::from_secs(300);

impl Folder {
    /// Nothing of the folder is stored: no segment, no init segment, and only manifests that
    /// were deleted.
    fn holds_nothing(&self) -> bool {
        self.segments.is_empty() && self.inits.is_empty() && self.mpds.keys().all(|name| self.ended.contains(name))
    }

    /// No request waits on the folder's changes.
    fn unwatched(&self) -> bool {
        self.changed.receiver_count() == 0
    }
}

impl State {
    /// `path` left the store at `now`: deleted (or replaced by a new run, or an upload that
    /// failed), or `purged` by garbage collection.
    pub fn removed(&mut self, path: &str, purged: bool, now: Instant) {
        let (folder, name) = split(path);
        let Some(f) = self.folders.get_mut(folder) else {
            return;
        };
        if f.segments.remove(name).is_some() {
            // Playlists must stop listing it (and shared snapshots must be taken again).
            f.bump();
        }
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
            f.bump();
        }
        if f.segments.is_empty() && f.inits.is_empty() && f.mpds.is_empty() {
            self.folders.remove(folder);
        } else if f.holds_nothing() {
            f.emptied = Some(now);
        }
    }

    /// Forgets the folders of which nothing has been stored since [`ENDED_MEMORY`] before `now`
    /// (and those a request created that hold nothing at all), unless a request waits on them.
    /// Returns how many it forgot.
    pub fn forget(&mut self, now: Instant) -> usize {
        let before = self.folders.len();
        self.folders.retain(|_, f| {
            let expired = f
                .emptied
                .is_none_or(|at| now.saturating_duration_since(at) >= ENDED_MEMORY);
            !(f.holds_nothing() && expired && f.unwatched())
        });
        before - self.folders.len()
    }
}

impl State {
    /// Every path the index keeps something of, but a manifest it remembers as ended: for the
    /// driver to check against the store after it missed some of the store's events.
    pub fn known_paths(&self) -> Vec<String> {
        let mut paths = Vec::new();
        for (folder, f) in &self.folders {
            let names = f
                .segments
                .keys()
                .chain(f.inits.keys())
                .chain(f.mpds.keys().filter(|name| !f.ended.contains(*name)));
            paths.extend(names.map(|name| super::join(folder, name)));
        }
        paths
    }
}
