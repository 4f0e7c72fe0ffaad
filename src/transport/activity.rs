//! What one TCP connection is doing, for its idle bounds: how many requests are in progress, since
//! when it has had none, since when bytes of a next HTTP/1.1 request head have been arriving, and
//! since when its responses have been stuck on the peer. A request is in progress from the moment
//! hyper hands its whole head to the routes until its response body has ended or been dropped, so
//! a held blocking reload, a growing download or an upload is never idle. But a response whose
//! bytes the peer does not take (it reads nothing, or gives no HTTP/2 flow-control credit) is no
//! progress: when hyper has been handed a frame of a response body and has not come back for the
//! next one for the idle timeout, on any response of the connection, the connection is stalled
//! and closed like an idle one (a body waiting for its upload to grow is waiting, not stalled).
//! The connection's task ([`super::tcp`]) turns this into one deadline; the socket wrapper
//! ([`Watched`]) and each response body ([`Tracked`]) feed it. Nothing here closes anything.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// "No time" in the millisecond fields.
const NEVER: u64 = u64::MAX;

/// The bounds one connection is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// From the accept to the first whole request head (TLS handshake included), and from the first
    /// byte of a later HTTP/1.1 request head to its end.
    pub header_timeout: Duration,
    /// From the end of the last request in progress to the next request head.
    pub idle_timeout: Duration,
}

/// The shared state of one connection (see the module documentation).
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    /// HTTP/2 multiplexes, and its peers send frames (PING, WINDOW_UPDATE, SETTINGS) while no request
    /// is in progress: bytes arriving then are not the start of a request head.
    http2: bool,
    in_progress: AtomicUsize,
    /// Requests begun so far.
    begun: AtomicU64,
    /// Milliseconds from `start` when the last request in progress ended.
    idle_since: AtomicU64,
    /// Milliseconds from `start` when bytes first arrived while idle (HTTP/1.1); NEVER: none.
    head_since: AtomicU64,
    /// Response frames handed to hyper whose body hyper has not polled again since.
    handed: AtomicUsize,
    /// Milliseconds from `start` when hyper last polled a response body.
    sent_at: AtomicU64,
    changed: Notify,
}

impl Activity {
    /// A connection accepted at `start`, speaking HTTP/2 or HTTP/1.1.
    pub fn new(start: Instant, http2: bool) -> Arc<Activity> {
        Arc::new(Activity {
            start,
            http2,
            in_progress: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(NEVER),
            handed: AtomicUsize::new(0),
            sent_at: AtomicU64::new(0),
            changed: Notify::new(),
        })
    }

    /// When the connection is to be closed unless something changes first. While a request is in
    /// progress: an idle timeout after hyper last took a response frame when one is waiting on
    /// the peer (stalled then), or else an idle timeout from `now`, to look again (a frame handed
    /// meanwhile wakes nobody: that would cost a wake-up per chunk).
    pub fn deadline(&self, bounds: Bounds, now: Instant) -> Option<Instant> {
        if self.in_progress.load(Ordering::Acquire) > 0 {
            if self.handed.load(Ordering::Acquire) > 0 {
                return Some(self.at(self.sent_at.load(Ordering::Acquire)) + bounds.idle_timeout);
            }
            return Some(now + bounds.idle_timeout);
        }
        if self.begun.load(Ordering::Acquire) == 0 {
            return Some(self.start + bounds.header_timeout);
        }
        let idle = self.at(self.idle_since.load(Ordering::Acquire)) + bounds.idle_timeout;
        match self.head_since.load(Ordering::Acquire) {
            NEVER => Some(idle),
            head => Some(idle.min(self.at(head) + bounds.header_timeout)),
        }
    }

    /// Resolves at the next change of what [`Activity::deadline`] says (a change made before the
    /// call is not lost: the one waiter gets a stored permit).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Whether the connection is past its deadline at `now`: idle, or stalled on the peer.
    pub fn expired(&self, bounds: Bounds, now: Instant) -> bool {
        if self.in_progress.load(Ordering::Acquire) > 0 && self.handed.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.deadline(bounds, now).is_some_and(|at| at <= now)
    }

    /// A request head was handed to the routes: in progress until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        self.begun.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(NEVER, Ordering::Release);
        self.changed.notify_one();
        InProgress {
            activity: Arc::clone(self),
            handed: false,
        }
    }

    fn end(&self) {
        if self.in_progress.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(self.elapsed(), Ordering::Release);
            self.head_since.store(NEVER, Ordering::Release);
        }
        self.changed.notify_one();
    }

    /// Bytes came in from the peer.
    fn arrived(&self) {
        if self.http2
            || self.in_progress.load(Ordering::Acquire) > 0
            || self.begun.load(Ordering::Acquire) == 0
            || self.head_since.load(Ordering::Acquire) != NEVER
        {
            return;
        }
        self.head_since.store(self.elapsed(), Ordering::Release);
        self.changed.notify_one();
    }

    fn elapsed(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    fn at(&self, millis: u64) -> Instant {
        self.start + Duration::from_millis(millis)
    }
}

/// One request in progress; its end when dropped.
#[derive(Debug)]
pub(crate) struct InProgress {
    activity: Arc<Activity>,
    /// A frame of its response was handed to hyper, which has not polled the body since.
    handed: bool,
}

impl InProgress {
    /// hyper polls the response body: it took the frame handed before, if any.
    fn polled(&mut self) {
        let activity = &self.activity;
        activity.sent_at.store(activity.elapsed(), Ordering::Release);
        if std::mem::take(&mut self.handed) {
            activity.handed.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// A frame of the response body went to hyper.
    fn handed(&mut self) {
        if !std::mem::replace(&mut self.handed, true) {
            self.activity.handed.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if self.handed {
            self.activity.handed.fetch_sub(1, Ordering::AcqRel);
        }
        self.activity.end();
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in progress until it has ended or is dropped.
    pub(crate) struct Tracked<B> {
        #[pin]
        body: B,
        in_progress: Option<InProgress>,
    }
}

impl<B> Tracked<B> {
    /// `body`, holding `in_progress`.
    pub fn new(body: B, in_progress: InProgress) -> Tracked<B> {
        Tracked {
            body,
            in_progress: Some(in_progress),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if let Some(in_progress) = this.in_progress.as_mut() {
            in_progress.polled();
        }
        let polled = this.body.poll_frame(cx);
        match &polled {
            Poll::Ready(None) => drop(this.in_progress.take()),
            Poll::Ready(Some(Ok(_))) => {
                if let Some(in_progress) = this.in_progress.as_mut() {
                    in_progress.handed();
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A connection's byte stream (TCP or TLS), telling its [`Activity`] when bytes arrive; bytes
    /// read ahead to tell HTTP/2 from HTTP/1.1 are handed out first.
    pub(crate) struct Watched<S> {
        #[pin]
        inner: S,
        read_ahead: Bytes,
        activity: Arc<Activity>,
    }
}

impl<S> Watched<S> {
    /// `inner`, whose first bytes (already read) are `read_ahead`.
    pub fn new(inner: S, read_ahead: Bytes, activity: Arc<Activity>) -> Watched<S> {
        Watched {
            inner,
            read_ahead,
            activity,
        }
    }
}

impl<S: AsyncRead> AsyncRead for Watched<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.read_ahead.is_empty() {
            let n = this.read_ahead.len().min(buf.remaining());
            buf.put_slice(&this.read_ahead.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.arrived();
        }
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
    };

    #[test]
    fn a_connection_has_the_header_timeout_for_its_first_request() {
        let start = Instant::now();
        let activity = Activity::new(start, false);
        activity.arrived();
        assert_eq!(activity.deadline(BOUNDS, start), Some(start + BOUNDS.header_timeout));
    }

    #[test]
    fn a_request_in_progress_is_never_idle_and_its_end_starts_the_idle_bound() {
        let start = Instant::now();
        let activity = Activity::new(start, false);
        let request = activity.begin();
        let other = activity.begin();
        let later = start + BOUNDS.idle_timeout * 3;
        assert!(!activity.expired(BOUNDS, later), "a request is in progress");
        drop(request);
        assert!(!activity.expired(BOUNDS, later), "one request is still in progress");
        drop(other);
        let deadline = activity.deadline(BOUNDS, start).expect("idle");
        assert!(
            deadline >= start + BOUNDS.idle_timeout,
            "the idle bound, not the header bound"
        );
    }

    #[test]
    fn bytes_of_a_next_http1_head_start_the_header_timeout_but_not_on_http2() {
        for http2 in [false, true] {
            let start = Instant::now();
            let activity = Activity::new(start, http2);
            drop(activity.begin());
            activity.arrived();
            let deadline = activity.deadline(BOUNDS, start).expect("idle");
            let header_bound = deadline < start + BOUNDS.idle_timeout;
            assert_eq!(header_bound, !http2, "http2: {http2}");
        }
    }

    #[test]
    fn a_response_frame_the_peer_does_not_take_stalls_the_connection_after_the_idle_timeout() {
        let start = Instant::now();
        let activity = Activity::new(start, true);
        let mut request = activity.begin();
        let mut waiting = activity.begin();
        // A body that waits for its upload (polled, nothing handed) is never stalled.
        waiting.polled();
        request.polled();
        request.handed();
        let stalled_at = activity
            .deadline(BOUNDS, start)
            .expect("a deadline while a frame waits");
        assert!(stalled_at <= Instant::now() + BOUNDS.idle_timeout);
        assert!(
            activity.expired(BOUNDS, stalled_at),
            "stalled an idle timeout after the frame"
        );
        // hyper comes back for the next frame: progress, no longer stalled.
        request.polled();
        assert!(!activity.expired(BOUNDS, stalled_at + BOUNDS.idle_timeout * 2));
        request.handed();
        drop(request);
        assert_eq!(
            activity.handed.load(Ordering::Acquire),
            0,
            "a dropped body takes its frame along"
        );
        assert!(
            !activity.expired(BOUNDS, stalled_at + BOUNDS.idle_timeout * 2),
            "the other one waits"
        );
    }
}
