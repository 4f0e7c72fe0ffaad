//! What the store holds, by folder: the bytes of each stream (the stream list's disk use, which
//! a DVR window makes hours of segments), and of everything (the metrics).

use std::collections::HashMap;

use super::Store;

impl Store {
    /// Bytes of every stored path (complete or growing, in memory or on disk), by folder.
    pub fn folder_bytes(&self) -> HashMap<String, u64> {
        let mut bytes: HashMap<String, u64> = HashMap::new();
        for (path, slot) in &self.index().slots {
            *bytes.entry(path.folder().to_owned()).or_default() += slot.current.len();
        }
        bytes
    }

    /// Bytes of every stored path.
    pub fn stored_bytes(&self) -> u64 {
        self.index().slots.values().map(|slot| slot.current.len()).sum()
    }
}
