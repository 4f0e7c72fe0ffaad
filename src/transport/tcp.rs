//! The TCP accept loop: HTTP/1.1 and HTTP/2 (sniffed from the preface on cleartext, by ALPN over
//! TLS), TCP_NODELAY on every socket, a header-read timeout against slowloris, and no idle timeout,
//! so an encoder's persistent ingest connection is never cut between uploads. The same loop serves
//! the metrics listener, whose connections go to [`App::handle_metrics`] instead of the public routes.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::http::{App, ConnInfo, Transport};
use crate::settings::ConnectionSettings;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The public routes ([`App::handle`]).
    Public,
    /// `/metrics` only ([`App::handle_metrics`]).
    Metrics,
}

/// Serves `listener` until `shutdown` turns true, then drains for at most the drain timeout.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    settings: ConnectionSettings,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(listener, tls, Role::Public, app, settings, shutdown).await
}

/// Serves the metrics listener (cleartext, `/metrics` only) until `shutdown` turns true.
pub async fn serve_metrics(
    listener: TcpListener,
    app: Arc<App>,
    settings: ConnectionSettings,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(listener, None, Role::Metrics, app, settings, shutdown).await
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    role: Role,
    app: Arc<App>,
    settings: ConnectionSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(builder(&settings));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Some(size) = settings.tcp_send_buffer {
                        if let Err(err) = socket2::SockRef::from(&stream).set_send_buffer_size(size) {
                            tracing::debug!(%err, "SO_SNDBUF not set");
                        }
                    }
                    if let Some(bytes) = settings.tcp_notsent_lowat {
                        if let Err(err) = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(bytes) {
                            tracing::debug!(%err, "TCP_NOTSENT_LOWAT not set");
                        }
                    }
                    let transport = if tls.is_some() { Transport::Tls } else { Transport::Cleartext };
                    // Scrapes take no place in the arrival order of uploads.
                    let arrival = if role == Role::Public { app.connection_arrived() } else { 0 };
                    let info = ConnInfo { peer, transport, arrival };
                    let task = connection(stream, info, tls.clone(), role, Arc::clone(&app), Arc::clone(&builder), graceful.watcher(), settings.header_timeout);
                    connections.spawn(task);
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(settings.drain_timeout) => {
            tracing::info!(open = connections.len(), "drain time over; closing the remaining connections");
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

fn builder(settings: &ConnectionSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        // ffmpeg closes its side right after the last chunk of an upload without waiting for the
        // answer; without half-close support hyper would drop the request mid-body and the upload
        // would be aborted.
        .half_close(true)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        // LL-HLS blocking reloads and live-edge segment requests stay open for seconds each.
        .max_concurrent_streams(1000)
        // Room for an encoder's upload burst on a far path, and for big segments to players.
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_send_buf_size(1 << 20);
    builder
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: TcpStream,
    info: ConnInfo,
    tls: Option<TlsAcceptor>,
    role: Role,
    app: Arc<App>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    header_timeout: Duration,
) {
    // hyper never sets TCP_NODELAY; without it small chunked writes stall on Nagle.
    let _ = stream.set_nodelay(true);
    let peer = info.peer;
    let requests = Arc::new(AtomicU64::new(0));
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let app = Arc::clone(&app);
        req.extensions_mut()
            .insert(info.request(requests.fetch_add(1, Ordering::Relaxed)));
        async move {
            Ok::<_, Infallible>(match role {
                Role::Public => app.handle(req).await,
                Role::Metrics => app.handle_metrics(&req),
            })
        }
    });
    let result = match tls {
        None => {
            watcher
                .watch(builder.serve_connection(TokioIo::new(stream), service).into_owned())
                .await
        }
        Some(acceptor) => {
            let Some(stream) = super::within(header_timeout, peer, "TLS handshake", acceptor.accept(stream)).await
            else {
                return;
            };
            watcher
                .watch(builder.serve_connection(TokioIo::new(stream), service).into_owned())
                .await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, %err, "connection ended with an error");
    }
}
