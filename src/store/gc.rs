//! Garbage collection (folders idle for longer than the TTL) and memory eviction (complete,
//! persisted entries leave memory, least recently used first, when the memory limit is passed).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::persist::Job;
use super::{folder_of, lock_index, Entry, EntryState, Index, Shared, StoreEvent, TOMBSTONE_AGE};

pub(super) fn collect_garbage(shared: &Shared) -> usize {
    let now = Instant::now();
    lock_index(shared)
        .tombstones
        .retain(|_, (_, at)| now.saturating_duration_since(*at) < TOMBSTONE_AGE);
    let Some(ttl) = shared.limits.ttl else {
        return 0;
    };
    let now = Instant::now();
    let mut purged = Vec::new();
    {
        let mut index = lock_index(shared);
        let Index { slots, folders, .. } = &mut *index;
        folders.retain(|_, written| now.saturating_duration_since(*written) < ttl);
        slots.retain(|path, slot| {
            let keep = folders.contains_key(folder_of(path))
                || slot.current.state() == EntryState::Growing
                || slot.pending.is_some();
            if !keep {
                // Queued under the index lock: see `delete`.
                let _ = shared.jobs.send(Job::Remove(path.to_string()));
                purged.push(path.to_string());
            }
            keep
        });
        for path in &purged {
            index.release_folders(path);
        }
    }
    let count = purged.len();
    shared.purged.fetch_add(count as u64, Ordering::Relaxed);
    for path in purged {
        tracing::debug!(path, "purged by garbage collection");
        let _ = shared.events.send(StoreEvent::Removed {
            path: Arc::from(path.as_str()),
            cause: super::Removal::Purged,
        });
    }
    if count > 0 {
        tracing::info!(count, "garbage collection purged expired paths");
    }
    count
}

pub(super) fn evict_for_memory(shared: &Shared) -> u64 {
    let target = shared.limits.max_memory / 10 * 9;
    if shared.gauge.used() <= target {
        return 0;
    }
    let mut candidates: Vec<Arc<Entry>> = lock_index(shared)
        .slots
        .values()
        .filter(|slot| slot.current.evictable_bytes() > 0)
        .map(|slot| Arc::clone(&slot.current))
        .collect();
    candidates.sort_by_key(|entry| entry.last_touched());
    let mut freed = 0;
    for entry in candidates {
        if shared.gauge.used() <= target {
            break;
        }
        freed += entry.evict();
    }
    if freed > 0 {
        tracing::debug!(freed, "moved persisted entries out of memory");
    }
    freed
}

/// Runs garbage collection periodically and eviction whenever memory runs over its limit.
pub(super) async fn maintain(shared: std::sync::Weak<Shared>, pressure: Arc<Notify>) {
    let period = shared
        .upgrade()
        .and_then(|s| s.limits.ttl)
        .map_or(Duration::from_secs(60), |ttl| {
            (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
        });
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if shared.strong_count() == 0 {
            return;
        }
        tokio::select! {
            _ = tick.tick() => {
                let Some(strong) = shared.upgrade() else { return };
                collect_garbage(&strong);
                evict_for_memory(&strong);
            }
            _ = pressure.notified() => {
                let Some(strong) = shared.upgrade() else { return };
                evict_for_memory(&strong);
            }
        }
    }
}
