//! Garbage collection (folders idle for longer than the TTL) and memory eviction (complete,
//! persisted entries leave memory, least recently used first, when the memory limit is passed).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::persist::Job;
use super::{lock_index, Entry, EntryState, Index, Shared, StoreEvent, TOMBSTONE_AGE};

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
            let keep = folders.contains_key(path.folder())
                || slot.current.state() == EntryState::Growing
                || slot.pending.is_some();
            if !keep {
                // Queued under the index lock: see `delete`.
                let _ = shared.jobs.send(Job::Remove(path.clone()));
                purged.push(path.clone());
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
        tracing::debug!(%path, "purged by garbage collection");
        let _ = shared.events.send(StoreEvent::Removed {
            path,
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

/// Moves out of memory the complete, persisted entries nobody has read or written for
/// `memory_idle` (see [`super::Limits::memory_idle`]); returns the bytes freed.
pub(super) fn evict_idle(shared: &Shared) -> u64 {
    let Some(idle) = shared.limits.memory_idle else {
        return 0;
    };
    let now = Instant::now().saturating_duration_since(shared.epoch).as_millis() as u64;
    let idle = idle.as_millis() as u64;
    let candidates: Vec<Arc<Entry>> = lock_index(shared)
        .slots
        .values()
        .filter(|slot| now.saturating_sub(slot.current.last_touched()) >= idle)
        .map(|slot| Arc::clone(&slot.current))
        .collect();
    // Outside the index lock: each takes its entry's own.
    let freed: u64 = candidates.iter().map(|entry| entry.evict()).sum();
    if freed > 0 {
        tracing::debug!(freed, "moved idle persisted entries out of memory");
    }
    freed
}

/// Paths purged (since the last trim) after which the allocator is asked to give freed memory
/// back: a burst (the channels of a flood), not a live stream's few files now and then; at most
/// one trim a garbage-collection pass.
const TRIM_AFTER_PURGED: usize = 256;

/// How long the followers of the store (the live index, the packager) get to drop what they kept
/// of the purged paths before the trim.
const SETTLE: Duration = Duration::from_secs(2);

/// glibc keeps memory freed inside its arenas resident: after 1,000 one-fragment channels were
/// purged, ldash stayed at 88 MiB (baseline 25 MiB) with nothing left referenced; one
/// `malloc_trim(0)` took it back to 25 MiB (tests/attack_uploads.rs). Done on a blocking thread
/// once the followers have dropped their state.
fn give_back_later() {
    tokio::spawn(async {
        tokio::time::sleep(SETTLE).await;
        let _ = tokio::task::spawn_blocking(crate::memory::trim).await;
    });
}

/// Runs garbage collection periodically and eviction whenever memory runs over its limit.
pub(super) async fn maintain(shared: std::sync::Weak<Shared>, pressure: Arc<Notify>) {
    let limits = shared.upgrade().map(|s| s.limits.clone());
    let period = limits
        .as_ref()
        .and_then(|l| l.ttl)
        .map_or(Duration::from_secs(60), |ttl| {
            (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
        });
    // Idle entries leave memory within a quarter more than their idle time.
    let period = match limits.and_then(|l| l.memory_idle) {
        Some(idle) => period.min((idle / 4).max(Duration::from_secs(1))),
        None => period,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Paths purged since the last trim: a flood's channels may expire over several passes.
    let mut purged_since_trim = 0;
    loop {
        if shared.strong_count() == 0 {
            return;
        }
        tokio::select! {
            _ = tick.tick() => {
                let Some(strong) = shared.upgrade() else { return };
                purged_since_trim += collect_garbage(&strong);
                evict_idle(&strong);
                evict_for_memory(&strong);
                if purged_since_trim >= TRIM_AFTER_PURGED {
                    purged_since_trim = 0;
                    give_back_later();
                }
            }
            _ = pressure.notified() => {
                let Some(strong) = shared.upgrade() else { return };
                evict_for_memory(&strong);
            }
        }
    }
}
