//! The response body every route returns: whole bytes, nothing, or a live stream of an entry's chunks.
//! It also writes the access-log line when the response is done (sent, failed or dropped), so one line
//! per request holds the bytes actually sent, whatever the transport. The same place feeds the
//! metrics: bytes sent by HTTP version, relay delay per chunk, and downloads attached to a growing
//! entry.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Frame, SizeHint};

use crate::metrics::{BodyMeter, GaugeGuard};
use crate::store::{ReadError, Reader};

/// The error a streamed body ends with; transports turn it into a truncated response (HTTP/1.1), a
/// RST_STREAM (HTTP/2) or a stream reset (HTTP/3), never a clean end.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(#[from] pub ReadError);

/// Chunks with the instant each was appended to the store, when the reader follows a growing entry.
pub(crate) type ChunkStream =
    Pin<Box<dyn Stream<Item = Result<(Bytes, Option<std::time::Instant>), ReadError>> + Send>>;

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Stream {
        chunks: ChunkStream,
        remaining: Option<u64>,
    },
}

/// The body of every response ldash sends.
pub struct ResponseBody {
    kind: Kind,
    log: Option<AccessLog>,
    meter: Option<BodyMeter>,
    /// Counts this download as attached to a growing entry until its stream ends.
    attached: Option<GaugeGuard>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseBody")
    }
}

impl ResponseBody {
    /// No body.
    pub fn empty() -> Self {
        ResponseBody {
            kind: Kind::Empty,
            log: None,
            meter: None,
            attached: None,
        }
    }

    /// A whole body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Self::empty();
        }
        ResponseBody {
            kind: Kind::Full(Some(bytes)),
            log: None,
            meter: None,
            attached: None,
        }
    }

    /// A body read from the store; `len` is its exact length when known (complete entries).
    pub fn reader(reader: Reader, len: Option<u64>) -> Self {
        let chunks = futures_util::stream::unfold(reader, |mut reader| async move {
            reader.next_timed().await.map(|chunk| (chunk, reader))
        });
        ResponseBody {
            kind: Kind::Stream {
                chunks: Box::pin(chunks),
                remaining: len,
            },
            log: None,
            meter: None,
            attached: None,
        }
    }

    /// A body of stored chunks from `chunks` (a growing segment released part by part); `len` is
    /// its exact length when known.
    pub(crate) fn chunks(chunks: ChunkStream, len: Option<u64>) -> Self {
        ResponseBody {
            kind: Kind::Stream { chunks, remaining: len },
            log: None,
            meter: None,
            attached: None,
        }
    }

    /// Holds `guard` (a download attached to a growing entry) until the body's stream ends.
    pub(crate) fn attached(mut self, guard: GaugeGuard) -> Self {
        self.attached = Some(guard);
        self
    }

    pub(crate) fn with_meter(mut self, meter: BodyMeter) -> Self {
        self.meter = Some(meter);
        self
    }

    pub(crate) fn with_log(mut self, mut log: AccessLog) -> Self {
        log.complete = http_body::Body::is_end_stream(&self);
        self.log = Some(log);
        self
    }

    fn count(&mut self, n: usize, appended: Option<std::time::Instant>) {
        if let Some(log) = &mut self.log {
            log.bytes += n as u64;
        }
        if let Some(meter) = &self.meter {
            meter.sent(n, appended.map(|at| at.elapsed()));
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok((bytes, None)))),
            Kind::Stream { chunks, remaining } => match chunks.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok((bytes, appended)))) => {
                    if let Some(left) = remaining {
                        *left = left.saturating_sub(bytes.len() as u64);
                    }
                    Poll::Ready(Some(Ok((bytes, appended))))
                }
                Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        };
        match polled {
            Poll::Ready(Some(Ok((bytes, appended)))) => {
                // The frame goes to the transport now: the chunk's relay ends here.
                this.count(bytes.len(), appended);
                // hyper stops polling once the body says it is at its end.
                if http_body::Body::is_end_stream(&*this) {
                    if let Some(log) = &mut this.log {
                        log.complete = true;
                    }
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(Some(Err(err))) => {
                if let (ReadError::TooSlow { .. }, Some(meter)) = (&err, &this.meter) {
                    meter.slow_reader_cut();
                }
                if let Some(log) = &mut this.log {
                    log.failed = Some(err.to_string());
                }
                this.attached = None;
                Poll::Ready(Some(Err(BodyError(err))))
            }
            Poll::Ready(None) => {
                if let Some(log) = &mut this.log {
                    log.complete = true;
                }
                this.attached = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream { remaining, .. } => *remaining == Some(0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream { remaining: Some(n), .. } => SizeHint::with_exact(*n),
            Kind::Stream { remaining: None, .. } => SizeHint::default(),
        }
    }
}

/// One access-log line, written when the response body is dropped.
#[derive(Debug)]
pub(crate) struct AccessLog {
    pub method: http::Method,
    pub path: String,
    pub status: u16,
    pub version: http::Version,
    pub peer: std::net::SocketAddr,
    pub started: Instant,
    pub bytes: u64,
    pub complete: bool,
    pub failed: Option<String>,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let outcome = match (&self.failed, self.complete) {
            (Some(err), _) => err.as_str(),
            (None, true) => "done",
            (None, false) => "client gone",
        };
        tracing::info!(
            target: "ldash::access",
            method = %self.method,
            path = %self.path,
            status = self.status,
            bytes = self.bytes,
            ms = (self.started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0,
            version = ?self.version,
            peer = %self.peer,
            outcome,
        );
    }
}
