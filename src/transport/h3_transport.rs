//! ldash's HTTP/3 transport: h3's QUIC traits (`h3::quic`) over quinn, for the server side.
//!
//! The reason it exists is the send path. A response body chunk reaches h3 as [`Payload`], the
//! reference-counted `Bytes` the store handed out, and is passed to quinn with `write_chunks`, which
//! takes the `Bytes` itself: the payload is never copied on its way into quinn's send buffer. Only
//! the frame header h3 encodes (a few bytes) and the payload of non-DATA frames (a HEADERS block)
//! are copied. A generic adapter can only write `Buf::chunk()` slices, which quinn copies.
//!
//! h3 wraps each frame in its `WriteBuf`, which shows the payload only as a `Buf`. To get the
//! `Bytes` back without a copy, [`split_frame`] asks the frame for its payload slice while a
//! thread-local lookout is set, and [`Payload::chunk`] leaves a clone of its `Bytes` there (a
//! reference count, no copy). Everything happens within one synchronous call on one thread.
//!
//! Every stream the client opens passes through a [`FrameGuard`]: no frame but DATA longer than
//! `--max-header-bytes` reaches h3, which would buffer it whole.
//!
//! Errors map to h3's types as the protocol needs them: a peer's STOP_SENDING or RESET_STREAM code
//! becomes `StreamTerminated` with that code, a lost connection becomes the connection error (an
//! application close keeps its code), anything else is `Unknown` (h3 treats it as a terminated
//! stream). Nothing here panics on what a peer sends.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h3::error::Code;
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};
use quinn::VarInt;

use super::frame_guard::{FrameGuard, StreamKind};

/// A response body chunk as h3 carries it to [`SendHalf`]: the store's `Bytes`, uncopied.
#[derive(Debug)]
pub struct Payload(Bytes);

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Self(bytes)
    }
}

impl Buf for Payload {
    fn remaining(&self) -> usize {
        self.0.len()
    }

    /// The bytes; while [`split_frame`] is looking, also leaves a clone of them in [`LOOKOUT`].
    fn chunk(&self) -> &[u8] {
        LOOKOUT.with(|lookout| {
            if let Lookout::Waiting = lookout.replace(Lookout::Off) {
                lookout.set(Lookout::Found(self.0.clone()));
            }
        });
        &self.0
    }

    fn advance(&mut self, cnt: usize) {
        self.0.advance(cnt);
    }
}

/// What [`split_frame`] and [`Payload::chunk`] pass each other on this thread.
enum Lookout {
    Off,
    Waiting,
    Found(Bytes),
}

thread_local! {
    static LOOKOUT: Cell<Lookout> = const { Cell::new(Lookout::Off) };
}

/// Turns a frame from h3 into what quinn is given: the encoded header (copied; a few bytes) and the
/// payload, which for DATA is the [`Payload`]'s own `Bytes`.
fn split_frame(frame: impl Into<WriteBuf<Payload>>) -> [Bytes; 2] {
    let mut frame = frame.into();
    let header = Bytes::copy_from_slice(frame.chunk());
    frame.advance(header.len());
    if !frame.has_remaining() {
        return [header, Bytes::new()];
    }
    LOOKOUT.with(|lookout| lookout.set(Lookout::Waiting));
    let shown = frame.chunk().len();
    let payload = match LOOKOUT.with(|lookout| lookout.replace(Lookout::Off)) {
        Lookout::Found(bytes) if bytes.len() == shown && shown == frame.remaining() => bytes,
        // Not a Payload (a HEADERS block): copy it.
        _ => frame.copy_to_bytes(frame.remaining()),
    };
    [header, payload]
}

/// A future that yields a stream (or two) once quinn has one, boxed so it owns its connection handle.
type Waiting<T> = Option<Pin<Box<dyn Future<Output = Result<T, quinn::ConnectionError>> + Send>>>;

/// Polls the future in `slot`, starting `start` on a handle to `conn` if there is none; empties the
/// slot once done.
fn poll_waiting<T, F>(
    slot: &mut Waiting<T>,
    conn: &quinn::Connection,
    cx: &mut Context<'_>,
    start: impl FnOnce(quinn::Connection) -> F,
) -> Poll<Result<T, quinn::ConnectionError>>
where
    F: Future<Output = Result<T, quinn::ConnectionError>> + Send + 'static,
{
    let future = slot.get_or_insert_with(|| Box::pin(start(conn.clone())));
    let done = ready!(future.as_mut().poll(cx));
    *slot = None;
    Poll::Ready(done)
}

/// An HTTP/3 server connection's QUIC side: accepts the client's streams and opens the server's.
pub struct H3Connection {
    accepting_bidi: Waiting<(quinn::SendStream, quinn::RecvStream)>,
    accepting_uni: Waiting<quinn::RecvStream>,
    /// Also holds the connection handle the accepting side uses.
    opener: StreamOpener,
    /// The longest frame but DATA a client may send (`--max-header-bytes`).
    frame_limit: usize,
}

impl H3Connection {
    /// Wraps an established quinn connection; frames other than DATA from the client may be up to
    /// `frame_limit` bytes long.
    pub fn new(conn: quinn::Connection, frame_limit: usize) -> Self {
        Self {
            accepting_bidi: None,
            accepting_uni: None,
            opener: StreamOpener::new(conn),
            frame_limit,
        }
    }
}

impl quic::Connection<Payload> for H3Connection {
    type RecvStream = RecvHalf;
    type OpenStreams = StreamOpener;

    fn poll_accept_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<RecvHalf, ConnectionErrorIncoming>> {
        let recv = ready!(poll_waiting(
            &mut self.accepting_uni,
            &self.opener.conn,
            cx,
            |conn| async move { conn.accept_uni().await }
        ))
        .map_err(connection_error)?;
        let guard = Guard {
            frames: FrameGuard::new(StreamKind::Unidirectional, self.frame_limit),
            conn: self.opener.conn.clone(),
        };
        Poll::Ready(RecvHalf::new(recv, Some(guard)).map_err(internal))
    }

    fn poll_accept_bidi(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bidi, ConnectionErrorIncoming>> {
        let (send, recv) = ready!(poll_waiting(
            &mut self.accepting_bidi,
            &self.opener.conn,
            cx,
            |conn| async move { conn.accept_bi().await }
        ))
        .map_err(connection_error)?;
        let guard = Guard {
            frames: FrameGuard::new(StreamKind::Request, self.frame_limit),
            conn: self.opener.conn.clone(),
        };
        Poll::Ready(Bidi::new(send, recv, Some(guard)).map_err(internal))
    }

    fn opener(&self) -> StreamOpener {
        StreamOpener::new(self.opener.conn.clone())
    }
}

impl quic::OpenStreams<Payload> for H3Connection {
    type BidiStream = Bidi;
    type SendStream = SendHalf;

    fn poll_open_bidi(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bidi, StreamErrorIncoming>> {
        self.opener.poll_open_bidi(cx)
    }

    fn poll_open_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<SendHalf, StreamErrorIncoming>> {
        self.opener.poll_open_send(cx)
    }

    fn close(&mut self, code: Code, reason: &[u8]) {
        self.opener.close(code, reason);
    }
}

/// Opens the server's own streams: HTTP/3's control and QPACK streams, and grease.
pub struct StreamOpener {
    conn: quinn::Connection,
    opening_bidi: Waiting<(quinn::SendStream, quinn::RecvStream)>,
    opening_uni: Waiting<quinn::SendStream>,
}

impl StreamOpener {
    fn new(conn: quinn::Connection) -> Self {
        Self {
            conn,
            opening_bidi: None,
            opening_uni: None,
        }
    }
}

impl quic::OpenStreams<Payload> for StreamOpener {
    type BidiStream = Bidi;
    type SendStream = SendHalf;

    fn poll_open_bidi(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bidi, StreamErrorIncoming>> {
        let (send, recv) = ready!(poll_waiting(
            &mut self.opening_bidi,
            &self.conn,
            cx,
            |conn| async move { conn.open_bi().await }
        ))
        .map_err(lost)?;
        // The server's own streams: h3 never opens a bidirectional one; nothing to guard.
        Poll::Ready(Bidi::new(send, recv, None).map_err(|err| lost_with(internal(err))))
    }

    fn poll_open_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<SendHalf, StreamErrorIncoming>> {
        let send = ready!(poll_waiting(&mut self.opening_uni, &self.conn, cx, |conn| async move {
            conn.open_uni().await
        }))
        .map_err(lost)?;
        Poll::Ready(SendHalf::new(send).map_err(|err| lost_with(internal(err))))
    }

    fn close(&mut self, code: Code, reason: &[u8]) {
        let code = VarInt::from_u64(code.value()).unwrap_or(VarInt::from_u32(0x102));
        self.conn.close(code, reason);
    }
}

/// A request stream, both directions; h3 splits it into [`SendHalf`] and [`RecvHalf`].
pub struct Bidi {
    send: SendHalf,
    recv: RecvHalf,
}

impl Bidi {
    fn new(
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        guard: Option<Guard>,
    ) -> Result<Self, quic::InvalidStreamId> {
        Ok(Self {
            send: SendHalf::new(send)?,
            recv: RecvHalf::new(recv, guard)?,
        })
    }
}

impl quic::BidiStream<Payload> for Bidi {
    type SendStream = SendHalf;
    type RecvStream = RecvHalf;

    fn split(self) -> (SendHalf, RecvHalf) {
        (self.send, self.recv)
    }
}

impl quic::SendStream<Payload> for Bidi {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<Payload>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.send.reset(reset_code);
    }

    fn send_id(&self) -> StreamId {
        self.send.send_id()
    }
}

impl quic::RecvStream for Bidi {
    type Buf = Bytes;

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code);
    }

    fn recv_id(&self) -> StreamId {
        self.recv.recv_id()
    }
}

/// The sending side of a stream. Holds at most one frame that quinn has not taken yet.
pub struct SendHalf {
    stream: quinn::SendStream,
    id: StreamId,
    /// The frame's header and payload; chunks quinn has taken are left empty.
    unsent: [Bytes; 2],
}

impl SendHalf {
    fn new(stream: quinn::SendStream) -> Result<Self, quic::InvalidStreamId> {
        let id = StreamId::try_from(u64::from(stream.id()))?;
        Ok(Self {
            stream,
            id,
            unsent: Default::default(),
        })
    }
}

impl quic::SendStream<Payload> for SendHalf {
    /// Hands quinn what is left of the last frame; ready once it took all of it.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        while let Some(first) = self.unsent.iter().position(|chunk| !chunk.is_empty()) {
            let writing = pin!(self.stream.write_chunks(&mut self.unsent[first..]));
            ready!(writing.poll(cx)).map_err(write_error)?;
        }
        Poll::Ready(Ok(()))
    }

    fn send_data<T: Into<WriteBuf<Payload>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        if self.unsent.iter().any(|chunk| !chunk.is_empty()) {
            // h3 waits for poll_ready between frames; if it did not, the stream would interleave.
            return Err(lost_with(ConnectionErrorIncoming::InternalError(
                "a frame was sent before the previous one was written".into(),
            )));
        }
        self.unsent = split_frame(data);
        Ok(())
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        ready!(self.poll_ready(cx))?;
        Poll::Ready(
            self.stream
                .finish()
                .map_err(|err| StreamErrorIncoming::Unknown(Box::new(err))),
        )
    }

    fn reset(&mut self, reset_code: u64) {
        self.unsent = Default::default();
        let _ = self.stream.reset(VarInt::from_u64(reset_code).unwrap_or(VarInt::MAX));
    }

    fn send_id(&self) -> StreamId {
        self.id
    }
}

/// The receiving side of a stream: the peer's bytes as quinn received them, uncopied, through the
/// frame guard.
pub struct RecvHalf {
    stream: quinn::RecvStream,
    id: StreamId,
    guard: Option<Guard>,
    /// What the guard handed on and h3 has not taken yet.
    ready: VecDeque<Bytes>,
}

/// The frame guard of a stream the client opened, and the connection to close on a violation
/// that cannot be answered on the stream.
struct Guard {
    frames: FrameGuard,
    conn: quinn::Connection,
}

/// HTTP/3 error codes the guard uses.
const H3_NO_ERROR: u32 = 0x100;
const H3_EXCESSIVE_LOAD: u32 = 0x107;

impl RecvHalf {
    fn new(stream: quinn::RecvStream, guard: Option<Guard>) -> Result<Self, quic::InvalidStreamId> {
        let id = StreamId::try_from(u64::from(stream.id()))?;
        Ok(Self {
            stream,
            id,
            guard,
            ready: VecDeque::new(),
        })
    }
}

impl quic::RecvStream for RecvHalf {
    type Buf = Bytes;

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        loop {
            if let Some(piece) = self.ready.pop_front() {
                return Poll::Ready(Ok(Some(piece)));
            }
            let Some(guard) = &mut self.guard else {
                // quinn's read_chunk is cancel-safe, so a fresh one per poll loses nothing.
                let reading = pin!(self.stream.read_chunk(usize::MAX, true));
                let chunk = ready!(reading.poll(cx)).map_err(read_error)?;
                return Poll::Ready(Ok(chunk.map(|chunk| chunk.bytes)));
            };
            if guard.frames.refused() {
                return Poll::Ready(Ok(None));
            }
            let chunk = {
                let reading = pin!(self.stream.read_chunk(usize::MAX, true));
                ready!(reading.poll(cx)).map_err(read_error)?
            };
            let Some(chunk) = chunk else {
                return Poll::Ready(Ok(None));
            };
            match guard.frames.pass(chunk.bytes) {
                Ok(passed) => {
                    if passed.refused {
                        // The request gets its 431 from h3; the client need not send the rest.
                        let _ = self.stream.stop(VarInt::from_u32(H3_NO_ERROR));
                    }
                    self.ready = passed.pieces;
                }
                Err(oversized) => {
                    tracing::debug!(%oversized, "closing the HTTP/3 connection");
                    guard
                        .conn
                        .close(VarInt::from_u32(H3_EXCESSIVE_LOAD), b"frame too large");
                    return Poll::Ready(Err(lost_with(ConnectionErrorIncoming::ApplicationClose {
                        error_code: u64::from(H3_EXCESSIVE_LOAD),
                    })));
                }
            }
        }
    }

    fn stop_sending(&mut self, error_code: u64) {
        let _ = self.stream.stop(VarInt::from_u64(error_code).unwrap_or(VarInt::MAX));
    }

    fn recv_id(&self) -> StreamId {
        self.id
    }
}

/// How h3 sees a connection that ended: an HTTP/3 close keeps its code.
fn connection_error(err: quinn::ConnectionError) -> ConnectionErrorIncoming {
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => ConnectionErrorIncoming::ApplicationClose {
            error_code: close.error_code.into_inner(),
        },
        quinn::ConnectionError::TimedOut => ConnectionErrorIncoming::Timeout,
        other => ConnectionErrorIncoming::Undefined(Arc::new(other)),
    }
}

/// A stream error that is the connection's.
fn lost_with(connection_error: ConnectionErrorIncoming) -> StreamErrorIncoming {
    StreamErrorIncoming::ConnectionErrorIncoming { connection_error }
}

fn lost(err: quinn::ConnectionError) -> StreamErrorIncoming {
    lost_with(connection_error(err))
}

/// quinn handed out a stream ID h3 cannot represent (it never does: both are QUIC varints).
fn internal(err: quic::InvalidStreamId) -> ConnectionErrorIncoming {
    ConnectionErrorIncoming::InternalError(err.to_string())
}

/// A failed write: the peer's STOP_SENDING code, or the connection's end.
fn write_error(err: quinn::WriteError) -> StreamErrorIncoming {
    use quinn::WriteError::{ClosedStream, ConnectionLost, Stopped, ZeroRttRejected};
    match err {
        Stopped(code) => terminated(code),
        ConnectionLost(err) => lost(err),
        err @ (ClosedStream | ZeroRttRejected) => StreamErrorIncoming::Unknown(Box::new(err)),
    }
}

/// A failed read: the peer's RESET_STREAM code, or the connection's end. (h3 reads in order, so
/// `IllegalOrderedRead` cannot happen; it is not a reason to panic either.)
fn read_error(err: quinn::ReadError) -> StreamErrorIncoming {
    use quinn::ReadError::{ClosedStream, ConnectionLost, IllegalOrderedRead, Reset, ZeroRttRejected};
    match err {
        Reset(code) => terminated(code),
        ConnectionLost(err) => lost(err),
        err @ (ClosedStream | IllegalOrderedRead | ZeroRttRejected) => StreamErrorIncoming::Unknown(Box::new(err)),
    }
}

/// The peer ended its side of the stream with `code`.
fn terminated(code: VarInt) -> StreamErrorIncoming {
    StreamErrorIncoming::StreamTerminated {
        error_code: code.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use h3::proto::frame::Frame;

    #[test]
    fn a_data_payload_reaches_quinn_as_the_same_bytes() {
        let bytes = Bytes::from(vec![7u8; 1000]);
        let [header, payload] = split_frame(Frame::Data(Payload::from(bytes.clone())));
        assert_eq!(header.as_ref(), [0x00, 0x43, 0xe8], "type DATA, length 1000");
        assert_eq!(payload.as_ptr(), bytes.as_ptr(), "the same memory, not a copy");
        assert_eq!(payload.len(), 1000);
    }

    #[test]
    fn a_headers_block_is_copied_whole() {
        let block = Bytes::from_static(b"qpack block");
        let [header, payload] = split_frame(Frame::<Payload>::Headers(block.clone()));
        assert_eq!(header.as_ref(), [0x01, 11]);
        assert_eq!(payload, block);
    }

    #[test]
    fn the_payload_shows_itself_only_when_looked_for() {
        let payload = Payload::from(Bytes::from_static(b"abc"));
        assert_eq!(payload.chunk(), b"abc");
        LOOKOUT.with(|lookout| assert!(matches!(lookout.replace(Lookout::Off), Lookout::Off)));
    }
}
