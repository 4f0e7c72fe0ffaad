//! The TCP accept loop: HTTP/1.1 and HTTP/2 (told apart by the connection preface on cleartext, by
//! ALPN over TLS), TCP_NODELAY on every socket, and the bounds an anonymous client is held to:
//! - a connection budget per listener, total and per client address ([`super::budget`]): over it,
//!   a new connection is closed at once;
//! - the header timeout from the accept to the first whole request head (TLS handshake included),
//!   and from the first byte of each later HTTP/1.1 request head to its end;
//! - the listener's idle timeout between requests (ffmpeg's kept-alive ingest connections upload
//!   every segment duration; a request in progress, such as a held blocking reload, is never idle),
//!   and the same timeout for a response the peer does not take (no byte of it taken for that
//!   long: a client that never reads): see [`super::activity`];
//! - request header blocks of at most --max-header-bytes, checked by hyper as the bytes arrive;
//! - accept errors (out of file descriptors) back off from 10 ms to 1 s, with one warning per 10 s.
//!
//! The same loop serves the metrics listener, whose connections go to [`App::handle_metrics`]
//! instead of the public routes.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::activity::{Activity, Bounds, Tracked, Watched};
use super::budget::{Budget, Refused, Slot};
use crate::http::{App, ConnInfo, Transport};
use crate::settings::{ConnectionSettings, ListenerBudget};

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The public routes ([`App::handle`]).
    Public,
    /// `/metrics` only ([`App::handle_metrics`]).
    Metrics,
}

/// The HTTP/2 connection preface, which an h2c client sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a connection being closed for idleness gets to say goodbye (an HTTP/2 GOAWAY) before it
/// is dropped: a peer that reads nothing must not hold it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The first and the longest pause after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// How often a listener looks whether a flood of connections has ebbed, and how many connections
/// must have ended since its peak for the freed memory to be given back to the system.
const EBB_CHECK: (Duration, usize) = (Duration::from_secs(2), 256);

/// At most one warning of a kind per this long; the others are counted into the next.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `listener` with `budget` until `shutdown` turns true, then drains for at most the drain
/// timeout.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    settings: ConnectionSettings,
    budget: ListenerBudget,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(listener, tls, Role::Public, app, settings, budget, shutdown).await
}

/// Serves the metrics listener (cleartext, `/metrics` only) until `shutdown` turns true.
pub async fn serve_metrics(
    listener: TcpListener,
    app: Arc<App>,
    settings: ConnectionSettings,
    shutdown: watch::Receiver<bool>,
) {
    let budget = settings.metrics;
    accept_loop(listener, None, Role::Metrics, app, settings, budget, shutdown).await
}

/// What one connection's task takes, shared by the listener's connections.
struct Shared {
    tls: Option<TlsAcceptor>,
    role: Role,
    app: Arc<App>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    bounds: Bounds,
    shutdown: watch::Receiver<bool>,
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    role: Role,
    app: Arc<App>,
    settings: ConnectionSettings,
    budget: ListenerBudget,
    mut shutdown: watch::Receiver<bool>,
) {
    let local = listener.local_addr().ok();
    let (http1, http2) = builders(&settings);
    let bounds = Bounds {
        header_timeout: settings.header_timeout,
        idle_timeout: budget.idle_timeout,
    };
    let shared = Arc::new(Shared {
        tls,
        role,
        app,
        http1,
        http2,
        bounds,
        shutdown: shutdown.clone(),
    });
    let slots = Budget::new(budget);
    let mut connections = JoinSet::new();
    let mut backoff = Duration::ZERO;
    let mut paused_until: Option<Instant> = None;
    let mut accept_warning = Throttle::default();
    let mut refusal_warning = Throttle::default();
    let mut ebb_check = tokio::time::interval(EBB_CHECK.0);
    ebb_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            accepted = listener.accept(), if paused_until.is_none() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::ZERO;
                    let slot = match slots.take(peer.ip()) {
                        Ok(slot) => slot,
                        Err(why) => {
                            // Closed at once: the client sees the end of the stream now rather than
                            // waiting, and the budget is not spent on it.
                            drop(stream);
                            tracing::debug!(%peer, ?why, "connection refused");
                            if let Some(also) = refusal_warning.allow(Instant::now()) {
                                let limit = match why {
                                    Refused::Total => "its connection limit",
                                    Refused::PerAddress => "the per-address connection limit",
                                };
                                tracing::warn!(listener = ?local, %peer, also, "connection refused: over {limit}");
                            }
                            continue;
                        }
                    };
                    tune(&stream, &settings);
                    let transport = if shared.tls.is_some() { Transport::Tls } else { Transport::Cleartext };
                    // Scrapes take no place in the arrival order of uploads.
                    let arrival = if role == Role::Public { shared.app.connection_arrived() } else { 0 };
                    let info = ConnInfo { peer, transport, arrival };
                    connections.spawn(connection(stream, info, Arc::clone(&shared), slot));
                }
                Err(err) => {
                    // Out of file descriptors and the like: pause accepting (growing pauses while it
                    // lasts) instead of spinning, and say so once in a while, not thousands of times.
                    backoff = (backoff * 2).clamp(ACCEPT_BACKOFF.0, ACCEPT_BACKOFF.1);
                    paused_until = Some(Instant::now() + backoff);
                    if let Some(also) = accept_warning.allow(Instant::now()) {
                        tracing::warn!(listener = ?local, %err, also, pause = ?backoff, "accept failed");
                    }
                }
            },
            _ = sleep_until(paused_until), if paused_until.is_some() => paused_until = None,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = ebb_check.tick() => {
                if slots.ebbed(EBB_CHECK.1) {
                    tracing::debug!(listener = ?local, "a flood of connections ebbed; giving freed memory back");
                    // glibc keeps what thousands of closed connections freed (85 MiB after 3,000, from
                    // 20 MiB) unless asked: src/memory.rs.
                    tokio::task::spawn_blocking(crate::memory::trim);
                }
            }
            _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => break,
        }
    }
    drop(listener);
    // Every connection saw the shutdown and closes gracefully (see `drive`).
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(settings.drain_timeout, drained).await.is_err() {
        tracing::info!(
            open = connections.len(),
            "drain time over; closing the remaining connections"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Socket options from the settings.
fn tune(stream: &TcpStream, settings: &ConnectionSettings) {
    // hyper never sets TCP_NODELAY; without it small chunked writes stall on Nagle.
    let _ = stream.set_nodelay(true);
    if let Some(size) = settings.tcp_send_buffer {
        if let Err(err) = socket2::SockRef::from(stream).set_send_buffer_size(size) {
            tracing::debug!(%err, "SO_SNDBUF not set");
        }
    }
    if let Some(bytes) = settings.tcp_notsent_lowat {
        if let Err(err) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(bytes) {
            tracing::debug!(%err, "TCP_NOTSENT_LOWAT not set");
        }
    }
}

fn builders(settings: &ConnectionSettings) -> (http1::Builder, http2::Builder<TokioExecutor>) {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        // Head and idle bounds are kept by `drive` (hyper's own header timer would also run while a
        // kept-alive connection idles, cutting ingest connections after the header timeout).
        .header_read_timeout(None)
        // 431 once an unfinished head passes the limit, as its bytes arrive.
        .max_header_size(settings.max_header_bytes)
        // ffmpeg closes its side right after the last chunk of an upload without waiting for the
        // answer; without half-close support hyper would drop the request mid-body and the upload
        // would be aborted.
        .half_close(true)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        // LL-HLS blocking reloads and live-edge segment requests stay open for seconds each.
        .max_concurrent_streams(1000)
        // Room for an encoder's upload burst on a far path, and for big segments to players.
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_send_buf_size(1 << 20)
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    (h1, h2)
}

/// One connection's task. What it runs after the first bytes (hyper's connection, the TLS session)
/// is boxed, so that a connection that never sends anything holds only this small future.
async fn connection(stream: TcpStream, info: ConnInfo, shared: Arc<Shared>, _slot: Slot) {
    let accepted = Instant::now();
    let peer = info.peer;
    let first_head = accepted + shared.bounds.header_timeout;
    match shared.tls.clone() {
        None => {
            let mut stream = stream;
            let sniffed = tokio::time::timeout_at(first_head, read_preface(&mut stream)).await;
            let Ok(Ok((read_ahead, http2))) = sniffed else {
                tracing::debug!(%peer, "no request within the header timeout");
                return;
            };
            let activity = Activity::new(accepted, http2);
            let io = Watched::new(stream, read_ahead, Arc::clone(&activity));
            Box::pin(serve_connection(io, http2, info, &shared, activity)).await
        }
        Some(acceptor) => {
            let handshake = Box::pin(acceptor.accept(stream));
            let Ok(Ok(stream)) = tokio::time::timeout_at(first_head, handshake).await else {
                tracing::debug!(%peer, "TLS handshake failed or timed out");
                return;
            };
            let (stream, (read_ahead, http2)) = match stream.get_ref().1.alpn_protocol() {
                Some(alpn) => {
                    let http2 = alpn == b"h2";
                    (stream, (Bytes::new(), http2))
                }
                // No ALPN: told by the preface, as on cleartext.
                None => {
                    let mut stream = stream;
                    let sniffed = tokio::time::timeout_at(first_head, read_preface(&mut stream)).await;
                    let Ok(Ok(start)) = sniffed else {
                        tracing::debug!(%peer, "no request within the header timeout");
                        return;
                    };
                    (stream, start)
                }
            };
            let activity = Activity::new(accepted, http2);
            let io = Watched::new(stream, read_ahead, Arc::clone(&activity));
            Box::pin(serve_connection(io, http2, info, &shared, activity)).await
        }
    }
}

/// Reads as much of the connection's start as tells HTTP/2 (its preface) from HTTP/1.1; returns
/// the bytes read, to be handed to hyper first, and whether it is HTTP/2.
async fn read_preface(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(Bytes, bool)> {
    let mut start = [0u8; H2_PREFACE.len()];
    let mut len = 0;
    while len < start.len() {
        let n = stream.read(&mut start[len..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
        if start[..len] != H2_PREFACE[..len] {
            return Ok((Bytes::copy_from_slice(&start[..len]), false));
        }
    }
    Ok((Bytes::copy_from_slice(&start), true))
}

async fn serve_connection<I>(io: I, http2: bool, info: ConnInfo, shared: &Shared, activity: Arc<Activity>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (role, app) = (shared.role, Arc::clone(&shared.app));
    let requests = Arc::new(AtomicU64::new(0));
    let tracker = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        // In progress from here until the response body has ended or been dropped.
        let in_progress = tracker.begin();
        let app = Arc::clone(&app);
        req.extensions_mut()
            .insert(info.request(requests.fetch_add(1, Ordering::Relaxed)));
        async move {
            let response = match role {
                Role::Public => app.handle(req).await,
                Role::Metrics => app.handle_metrics(&req),
            };
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_progress)))
        }
    });
    let io = TokioIo::new(io);
    let peer = info.peer;
    let result = if http2 {
        let conn = shared.http2.serve_connection(io, service);
        drive(conn, peer, &activity, shared).await
    } else {
        let conn = shared.http1.serve_connection(io, service);
        drive(conn, peer, &activity, shared).await
    };
    if let Some(Err(err)) = result {
        tracing::debug!(%peer, %err, "connection ended with an error");
    }
}

/// A hyper connection that can be asked to close once its requests in progress are done.
trait Graceful: Future<Output = hyper::Result<()>> {
    fn close_gracefully(self: Pin<&mut Self>);
}

impl<I, S> Graceful for http1::Connection<I, S>
where
    http1::Connection<I, S>: Future<Output = hyper::Result<()>>,
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    fn close_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

impl<I, S, E> Graceful for http2::Connection<I, S, E>
where
    http2::Connection<I, S, E>: Future<Output = hyper::Result<()>>,
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn close_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

/// Runs `conn` until it ends, closing it when its [`Activity`] deadline passes (no request within
/// the header timeout, or idle past the idle timeout) or at shutdown; a connection that does not
/// finish closing within [`CLOSE_GRACE`] of an idle close is dropped. None when it was dropped.
async fn drive<C: Graceful>(
    conn: C,
    peer: std::net::SocketAddr,
    activity: &Activity,
    shared: &Shared,
) -> Option<hyper::Result<()>> {
    let mut conn = std::pin::pin!(conn);
    let mut shutdown = shared.shutdown.clone();
    let mut closing: Option<Instant> = None;
    let mut draining = false;
    loop {
        let deadline = match closing {
            Some(since) => Some(since + CLOSE_GRACE),
            None if draining => None,
            None => activity.deadline(shared.bounds, Instant::now()),
        };
        tokio::select! {
            result = conn.as_mut() => return Some(result),
            _ = activity.changed(), if closing.is_none() => {}
            _ = sleep_until(deadline), if deadline.is_some() => {
                if closing.is_some() {
                    tracing::debug!(%peer, "connection did not close within its grace; dropped");
                    return None;
                }
                let now = Instant::now();
                if activity.expired(shared.bounds, now) {
                    tracing::debug!(%peer, "no request in progress, or no response taken, within the header or idle timeout; closing");
                    conn.as_mut().close_gracefully();
                    closing = Some(now);
                }
            }
            _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() }, if !draining => {
                // Drained within --drain-timeout by the accept loop.
                draining = true;
                if closing.is_none() {
                    conn.as_mut().close_gracefully();
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One warning per [`WARN_EVERY`], counting the ones held back.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    /// Whether a warning may be logged at `now`; with it, how many were held back since the last.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now < last + WARN_EVERY) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_throttled_and_count_what_was_held_back() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        assert_eq!(throttle.allow(start), Some(0));
        for i in 1..=1000 {
            assert_eq!(throttle.allow(start + Duration::from_millis(i)), None);
        }
        assert_eq!(throttle.allow(start + WARN_EVERY), Some(1000));
    }
}
