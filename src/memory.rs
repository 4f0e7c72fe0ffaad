//! Giving freed heap memory back to the system after a burst of connections.
//!
//! glibc's malloc keeps what the program frees in its arenas for reuse, and returns it to the
//! system only from the top of an arena: memory freed inside an arena stays resident. Measured with
//! 2,000 HTTP/3 connections held at once and then closed (tests/attack_quic.rs): +50 KiB of RSS per
//! connection while open, and all of it still resident once every connection was gone (20 -> 120
//! MiB, with 1 or 2 arenas as with the default); one `malloc_trim(0)` took it to 27 MiB. So what
//! stayed was free memory in the allocator, not state ldash kept.
//!
//! [`Trimmer`] calls `malloc_trim(0)` on a blocking thread once enough connections have ended,
//! after a short delay (their memory is freed a moment after their tasks end) and at most every
//! few seconds; a quiet server never trims. Other allocators (musl's) give memory back by
//! themselves: there it does nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Gives the allocator's free memory back to the system; whether it could.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists (taking its own locks).
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Trims after bursts: count what ended with [`Trimmer::ended`]. Its task ends when it is dropped.
#[derive(Debug)]
pub struct Trimmer {
    state: Arc<TrimState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct TrimState {
    /// Connections ended since the last trim was asked for.
    ended: AtomicUsize,
    /// How many ended connections ask for a trim.
    after: usize,
    wake: Notify,
}

/// The delay before a trim: connections' memory is freed a moment after their tasks end (quinn
/// drains a closed connection for three probe timeouts).
const SETTLE: Duration = Duration::from_secs(2);
/// At most one trim in this time (a trim of a few hundred MiB takes milliseconds and holds each
/// arena's lock meanwhile).
const AT_MOST_EVERY: Duration = Duration::from_secs(10);

impl Trimmer {
    /// A trimmer (with its task) that trims once `after` connections have ended since the last
    /// trim.
    pub fn start(after: usize) -> Self {
        let state = Arc::new(TrimState {
            ended: AtomicUsize::new(0),
            after: after.max(1),
            wake: Notify::new(),
        });
        let task = tokio::spawn(run(Arc::clone(&state)));
        Self { state, task }
    }

    /// One connection ended.
    pub fn ended(&self) {
        let ended = self.state.ended.fetch_add(1, Ordering::Relaxed) + 1;
        if ended == self.state.after {
            self.state.wake.notify_one();
        }
    }
}

impl Drop for Trimmer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(state: Arc<TrimState>) {
    loop {
        // Notify keeps a permit: a burst that ended before this wait is not missed.
        state.wake.notified().await;
        tokio::time::sleep(SETTLE).await;
        state.ended.store(0, Ordering::Relaxed);
        let started = Instant::now();
        let trimmed = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
        if trimmed {
            tracing::debug!(took = ?started.elapsed(), "gave freed heap memory back to the system");
        }
        tokio::time::sleep(AT_MOST_EVERY.saturating_sub(started.elapsed())).await;
    }
}
