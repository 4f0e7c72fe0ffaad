//! The HTTP/3 listener: a quinn endpoint on UDP at the TLS port number, h3 on top, and an adapter that
//! turns each request stream into an `http::Request` for the shared routes and drives the response
//! back frame by frame. No route logic lives here.
//!
//! - The request body is read with `recv_data` as it arrives and handed to the routes through a
//!   bounded channel, so an upload over HTTP/3 reaches the store chunk by chunk.
//! - The response body is sent DATA frame by DATA frame as the routes produce it; a body that ends in
//!   an error (an aborted upload) resets the stream instead of finishing it. h3 runs over ldash's own
//!   transport adapter ([`super::h3_transport`]), which hands each chunk's `Bytes` to quinn uncopied.
//! - Every request body is read to its end before the response is finished, so a client still sending
//!   is never told STOP_SENDING.
//! - Handshakes are admitted by [`super::quic_admission`]: above `--quic-retry-above` handshakes in progress a
//!   client whose address is not yet validated gets a stateless Retry (ldash keeps nothing for it
//!   until it echoes the token), and beyond the bounds on handshakes (in all and per validated
//!   peer) and on connections an attempt is refused. A flood of Initials from spoofed or
//!   never-answering sources so costs one Retry packet each, not a connection's state.
//! - Request header blocks are bounded as their bytes arrive (see [`super::h3_transport`]).
//! - No 0-RTT: requests are read only after the full handshake. 0-RTT data is replayable (unsafe for
//!   uploads), and accepting 0.5-RTT data (quinn's `into_0rtt` on the server) made the HTTP/3 setup
//!   hang in about one of five Chromium connections here; a full handshake never did.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h3::error::Code;
use http::Response;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::Congestion;
use crate::http::{App, ConnInfo, ResponseBody, Transport};
use crate::settings::ConnectionSettings;
use crate::transport::h3_transport::{H3Connection, Payload, RecvHalf, SendHalf};
use crate::transport::quic_admission::{Admission, Slots};
use crate::transport::tls::{Identity, TlsError};

/// Requests in flight on one connection: LL-HLS blocking reloads and live-edge segment requests stay
/// open for seconds each, a handful per player. quinn sets up a slot per allowed stream in every
/// connection (two hash map entries each): 1024 cost about 70 KiB per connection, most of an
/// HTTP/3 reader's memory (measured: 103 KiB per attached reader, against 20 KiB over HTTP/2).
/// 100 is what HTTP/3 servers commonly allow, and what hyper allows over HTTP/2 is of that order.
const MAX_STREAMS: u32 = 100;
/// Unidirectional streams a peer may open: HTTP/3's control and two QPACK streams, and the
/// reserved (grease) ones browsers add.
const MAX_UNI_STREAMS: u32 = 16;
/// Kernel buffers of the UDP socket (the kernel caps them at net.core.rmem_max / wmem_max). The
/// default 208 KiB overflows when hundreds of readers' acknowledgements arrive at once after a
/// chunk: dropped ACKs turn into spurious loss recovery and retransmissions.
const SOCKET_BUFFER: usize = 4 << 20;
/// Largest request body read ahead of the routes, in chunks.
const BODY_CHANNEL: usize = 8;
/// What a client may send a connection beyond what ldash has read, when it has no upload in
/// progress: quinn buffers that much (data past a gap in a stream waits for the gap), so every
/// connection costs up to this, and --quic-max-connections of them (4,096) up to 1 GiB. Requests
/// need little: a header block is at most --max-header-bytes (32 KiB), and a body of a request
/// that takes none is read and dropped as it comes.
const BASE_RECEIVE_WINDOW: u32 = 256 << 10;
/// The connection's window while the routes take in an upload on it (an encoder over HTTP/3, which
/// has upload rights): room for a far encoder's bursts.
const UPLOAD_RECEIVE_WINDOW: u32 = 32 << 20;
/// The largest piece of a response body handed to h3 at once: a client that takes none within the
/// player listener's idle timeout has stalled.
const SEND_PIECE: usize = 64 << 10;
/// How long an unread request body is drained after the response, at most.
const DRAIN_BODY: Duration = Duration::from_secs(10);
/// The QUIC idle timeout. The server's keep-alive (every 10 s) keeps a quiet connection from
/// reaching it, so a connection with no request in flight for this long is also closed by ldash.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connection attempts quinn queues for the accept loop, which decides each at once; beyond it
/// quinn refuses new ones by itself (its default, 65,536, can hold 100 MB of first datagrams).
const MAX_INCOMING: usize = 1024;
/// Datagrams quinn buffers for one attempt not yet decided (a client's first flight beyond its
/// first datagram: a large ClientHello), and for all of them (quinn's defaults: 10 and 100 MiB).
const INCOMING_BUFFER: u64 = 64 << 10;
const INCOMING_BUFFER_TOTAL: u64 = 4 << 20;
/// Connections (and handshakes) ended after which freed heap memory is given back to the system
/// ([`crate::memory`]): 256 connections hold about 12 MiB (50 KiB each, measured).
const TRIM_AFTER: usize = 256;

/// Builds the QUIC endpoint on `addr` with live-streaming transport settings.
pub fn endpoint(identity: &Identity, addr: SocketAddr, congestion: Congestion) -> Result<quinn::Endpoint, QuicError> {
    let tls = identity.quic_config()?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(MAX_STREAMS.into())
        .max_concurrent_uni_streams(MAX_UNI_STREAMS.into())
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(60_000))))
        // 50 Mbit/s over a 50 ms path needs ~320 KB in flight per stream; leave room for several.
        // The connection's window starts small and is raised while an upload is taken in
        // ([`ReceiveWindow`]).
        .stream_receive_window((4u32 << 20).into())
        .receive_window(BASE_RECEIVE_WINDOW.into())
        .send_window(32 << 20);
    if congestion == Congestion::Bbr {
        // Loss-based CUBIC collapses under random loss (measured: a 2 MB live segment through 5%
        // loss and 100 ms RTT took 25 s more than a clean path; with BBR 0.4 s; tests/faults.rs;
        // and hls.js through 100 ms and 2% loss froze 27 s of 30 with CUBIC, 2.4 s with BBR).
        transport.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    }
    config.transport_config(Arc::new(transport));
    config
        .max_incoming(MAX_INCOMING)
        .incoming_buffer_size(INCOMING_BUFFER)
        .incoming_buffer_size_total(INCOMING_BUFFER_TOTAL);
    let socket = udp_socket(addr).map_err(|source| QuicError::Bind { addr, source })?;
    let runtime = Arc::new(quinn::TokioRuntime);
    quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(config), socket, runtime)
        .map_err(|source| QuicError::Bind { addr, source })
}

/// The UDP socket on `addr` with large kernel buffers ([`SOCKET_BUFFER`]); `[::]` serves IPv4 too.
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    for (what, set) in [
        (
            "SO_RCVBUF",
            Socket::set_recv_buffer_size as fn(&Socket, usize) -> std::io::Result<()>,
        ),
        ("SO_SNDBUF", Socket::set_send_buffer_size),
    ] {
        if let Err(err) = set(&socket, SOCKET_BUFFER) {
            tracing::warn!(%err, "cannot set {what} on the QUIC socket; the kernel's default stays");
        }
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Why the QUIC listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// The TLS identity is not usable for QUIC.
    #[error(transparent)]
    Identity(#[from] TlsError),
    /// quinn refused the TLS config.
    #[error("the TLS config is not usable for QUIC: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("cannot listen on udp {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Serves HTTP/3 on `endpoint` until `shutdown` turns true; then sends GOAWAY, drains for at most
/// the drain timeout, and closes the endpoint. Each connection attempt is admitted, retried or
/// refused at once ([`Admission`]); the handshake timeout bounds the handshake and the HTTP/3
/// setup, the header timeout each request's headers, as on TCP.
pub async fn serve(
    endpoint: quinn::Endpoint,
    app: Arc<App>,
    settings: ConnectionSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let drain = settings.drain_timeout;
    let admission = Arc::new(Admission::new(settings.quic, app.metrics.quic()));
    let trimmer = crate::memory::Trimmer::start(TRIM_AFTER);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Some((incoming, slots)) = admission.admit(incoming) else { continue };
                let arrival = app.connection_arrived();
                connections.spawn(connection(incoming, slots, arrival, Arc::clone(&app), settings, shutdown.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => trimmer.ended(),
            _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => break,
        }
    }
    // Connections see the same shutdown signal, send GOAWAY and end once their requests are done.
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::info!(
            open = connections.len(),
            "HTTP/3 drain time over; closing the remaining connections"
        );
    }
    connections.abort_all();
    endpoint.close(quinn::VarInt::from_u32(0), b"server shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

async fn connection(
    incoming: quinn::Incoming,
    slots: Slots,
    arrival: u64,
    app: Arc<App>,
    settings: ConnectionSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = incoming.remote_address();
    let handshake_timeout = settings.quic.handshake_timeout;
    let header_timeout = settings.header_timeout;
    let meter = app.metrics.quic();
    // The full handshake first: no 0-RTT or 0.5-RTT data (see the module docs). Then the HTTP/3
    // setup, which waits on the client too (the server's control stream needs the client to allow
    // a unidirectional stream): both within the handshake timeout.
    let setup = async {
        let quic = incoming.accept()?.await?;
        let h3 = h3::server::builder()
            .max_field_section_size(settings.max_header_bytes as u64)
            .build(H3Connection::new(quic.clone(), settings.max_header_bytes))
            .await
            .map_err(|err| SetupError::H3(err.to_string()))?;
        Ok::<_, SetupError>((quic, h3))
    };
    let (quic, mut h3) = match tokio::time::timeout(handshake_timeout, setup).await {
        Ok(Ok(done)) => done,
        Ok(Err(err)) => {
            tracing::debug!(%peer, %err, "QUIC handshake or HTTP/3 setup failed");
            return;
        }
        Err(_) => {
            meter.handshake_timeouts.inc();
            tracing::debug!(%peer, "QUIC handshake or HTTP/3 setup timed out");
            return;
        }
    };
    let window = Arc::new(ReceiveWindow {
        quic: quic.clone(),
        uploads: Default::default(),
    });
    let Slots { _connection, handshake } = slots;
    drop(handshake);
    let info = ConnInfo {
        peer,
        transport: Transport::Quic,
        arrival,
    };
    let mut requests_seen = 0u64;
    let mut requests = JoinSet::new();
    let mut closing = *shutdown.borrow();
    if closing {
        let _ = h3.shutdown(0).await;
    }
    // A connection with no request in flight is closed after a while: the first request must come
    // within the header timeout (as on TCP), a later one within the idle timeout.
    let mut idle_deadline = tokio::time::Instant::now() + header_timeout;
    loop {
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let bounds = (header_timeout, settings.https.idle_timeout);
                    let info = info.request(requests_seen);
                    requests.spawn(request(resolver, Arc::clone(&app), (info, Arc::clone(&window)), bounds));
                    requests_seen += 1;
                }
                Ok(None) => break,
                Err(err) => {
                    if !err.is_h3_no_error() {
                        tracing::debug!(%peer, %err, "HTTP/3 connection ended with an error");
                    }
                    break;
                }
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => {
                if requests.is_empty() {
                    idle_deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
                }
            }
            _ = tokio::time::sleep_until(idle_deadline), if requests.is_empty() => {
                tracing::debug!(%peer, first = requests_seen == 0, "closing an idle HTTP/3 connection");
                // A client that gives no flow control credit could hold the GOAWAY back forever.
                let _ = tokio::time::timeout(Duration::from_secs(1), h3.shutdown(0)).await;
                quic.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"idle");
                break;
            }
            _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() }, if !closing => {
                closing = true;
                // GOAWAY: requests already accepted finish; new ones go elsewhere.
                let _ = h3.shutdown(0).await;
            }
        }
    }
    while requests.join_next().await.is_some() {}
}

/// HTTP/3's H3_NO_ERROR, for a connection closed for being idle.
const H3_NO_ERROR: u32 = 0x100;

/// Why a connection did not get as far as HTTP/3.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("QUIC handshake: {0}")]
    Quic(#[from] quinn::ConnectionError),
    #[error("HTTP/3 setup: {0}")]
    H3(String),
}

async fn request(
    resolver: h3::server::RequestResolver<H3Connection, Payload>,
    app: Arc<App>,
    (info, window): (ConnInfo, Arc<ReceiveWindow>),
    (header_timeout, stall): (Duration, Duration),
) {
    let reading = resolver.resolve_request();
    let (req, stream) = match tokio::time::timeout(header_timeout, reading).await {
        Ok(Ok(resolved)) => resolved,
        Ok(Err(h3::error::StreamError::HeaderTooBig {
            actual_size, max_size, ..
        })) => {
            // h3 has answered 431 (the frame guard makes an oversized frame look like this).
            app.metrics.quic().headers_refused.inc();
            tracing::debug!(peer = %info.peer, actual_size, max_size, "HTTP/3 request headers too large: 431");
            return;
        }
        Ok(Err(err)) => {
            tracing::debug!(peer = %info.peer, %err, "reading HTTP/3 request headers failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %info.peer, "reading HTTP/3 request headers timed out");
            return;
        }
    };
    let (mut send, recv) = stream.split();
    let (body_tx, body_rx) = mpsc::channel(BODY_CHANNEL);
    // Only uploads take a body: any other request's is read and dropped as it arrives, so that it
    // waits in no buffer while the request is held.
    let takes_body = matches!(*req.method(), http::Method::PUT | http::Method::POST);
    let reading = tokio::spawn(read_body(recv, takes_body.then_some(body_tx)));
    let mut req = req.map(|()| RequestBody {
        rx: body_rx,
        window,
        raised: false,
    });
    req.extensions_mut().insert(info);
    let response = app.handle(req).await;
    send_response(&mut send, response, reading, stall).await;
}

/// Feeds the request body to the routes; once the routes stop listening, reads (and drops) the rest,
/// for a bounded time, so the client is never sent STOP_SENDING mid-body.
async fn read_body(
    mut recv: h3::server::RequestStream<RecvHalf, Payload>,
    tx: Option<mpsc::Sender<Result<Bytes, BodyReadError>>>,
) {
    let mut listening = tx.is_some();
    let deadline = tokio::time::Instant::now() + DRAIN_BODY;
    loop {
        let next = if listening {
            recv.recv_data().await
        } else {
            match tokio::time::timeout_at(deadline, recv.recv_data()).await {
                Ok(next) => next,
                Err(_) => return,
            }
        };
        match next {
            Ok(Some(mut data)) => {
                let bytes = data.copy_to_bytes(data.remaining());
                if let (true, Some(tx)) = (listening, &tx) {
                    listening = tx.send(Ok(bytes)).await.is_ok();
                }
            }
            Ok(None) => return,
            Err(err) => {
                if let (true, Some(tx)) = (listening, &tx) {
                    let _ = tx.send(Err(BodyReadError(err.to_string()))).await;
                }
                return;
            }
        }
    }
}

/// Sends `response`; a response the client takes no [`SEND_PIECE`] of within `stall` (it reads
/// nothing, or gives no flow-control credit) is reset, so that it does not hold its stream, its
/// bytes and its connection forever.
async fn send_response(
    send: &mut h3::server::RequestStream<SendHalf, Payload>,
    response: Response<ResponseBody>,
    reading: tokio::task::JoinHandle<()>,
    stall: Duration,
) {
    let (parts, mut body) = response.into_parts();
    if let Err(err) = send.send_response(Response::from_parts(parts, ())).await {
        tracing::debug!(%err, "HTTP/3 response headers could not be sent");
        reading.abort();
        return;
    }
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                let Ok(mut data) = frame.into_data() else { continue };
                // In pieces, so that each wait measures progress, not a whole large chunk's time
                // (h3 waits for the previous frame to be written before it takes the next).
                while !data.is_empty() {
                    let piece = data.split_to(data.len().min(SEND_PIECE));
                    let sent = tokio::time::timeout(stall, send.send_data(Payload::from(piece))).await;
                    let failed = match sent {
                        Ok(Ok(())) => continue,
                        Ok(Err(err)) => err.to_string(),
                        Err(_) => format!("no {SEND_PIECE} bytes taken in {stall:?}"),
                    };
                    tracing::debug!(err = %failed, "HTTP/3 client stopped reading; resetting the stream");
                    send.stop_stream(Code::H3_REQUEST_CANCELLED);
                    reading.abort();
                    return;
                }
            }
            Some(Err(err)) => {
                // Never a clean end for a body that failed (an aborted upload): reset the stream.
                tracing::debug!(%err, "HTTP/3 response body failed; resetting the stream");
                send.stop_stream(Code::H3_REQUEST_CANCELLED);
                reading.abort();
                return;
            }
            None => break,
        }
    }
    let _ = reading.await;
    match tokio::time::timeout(stall, send.finish()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(%err, "HTTP/3 response could not be finished"),
        Err(_) => {
            tracing::debug!("the HTTP/3 client did not take the end of its response; resetting the stream");
            send.stop_stream(Code::H3_REQUEST_CANCELLED);
        }
    }
}

/// The request body error the routes see when an HTTP/3 upload fails midway.
#[derive(Debug, thiserror::Error)]
#[error("HTTP/3 request body failed: {0}")]
pub struct BodyReadError(String);

/// A connection's receive window: [`BASE_RECEIVE_WINDOW`], raised to [`UPLOAD_RECEIVE_WINDOW`]
/// while the routes take in an upload on it (they read a body only once it is accepted: an upload
/// refused, say for want of rights, never raises it).
#[derive(Debug)]
struct ReceiveWindow {
    quic: quinn::Connection,
    uploads: std::sync::atomic::AtomicUsize,
}

impl ReceiveWindow {
    fn raise(&self) {
        if self.uploads.fetch_add(1, std::sync::atomic::Ordering::AcqRel) == 0 {
            self.quic.set_receive_window(UPLOAD_RECEIVE_WINDOW.into());
        }
    }

    fn lower(&self) {
        if self.uploads.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.quic.set_receive_window(BASE_RECEIVE_WINDOW.into());
        }
    }
}

/// An HTTP/3 request body, fed by [`read_body`].
#[derive(Debug)]
pub struct RequestBody {
    rx: mpsc::Receiver<Result<Bytes, BodyReadError>>,
    window: Arc<ReceiveWindow>,
    /// This body raised its connection's window (the routes took a chunk of it).
    raised: bool,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyReadError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyReadError>>> {
        let polled = self.rx.poll_recv(cx);
        if matches!(polled, Poll::Ready(Some(Ok(_)))) && !std::mem::replace(&mut self.raised, true) {
            self.window.raise();
        }
        polled.map(|item| item.map(|chunk| chunk.map(Frame::data)))
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if self.raised {
            self.window.lower();
        }
    }
}
