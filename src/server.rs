//! Binding and running: opens the store, loads the TLS identity, binds the listeners, and runs them
//! until the shutdown future resolves; then drains and flushes persistence. The listeners and the
//! shutdown future come from outside, so tests run the real server on port 0.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::http::App;
use crate::live::Live;
use crate::settings::Settings;
use crate::store::Store;
use crate::transport::quic::{self, QuicError};
use crate::transport::tcp;
use crate::transport::tls::{Identity, TlsError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The root folder could not be opened.
    #[error("cannot open the root folder {root}: {source}")]
    Root {
        /// The folder.
        root: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS identity could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The HTTP/3 listener could not be set up.
    #[error(transparent)]
    Quic(#[from] QuicError),
}

/// A bound server, ready to run.
#[derive(Debug)]
pub struct Server {
    settings: Settings,
    app: Arc<App>,
    identity: Identity,
    http: TcpListener,
    https: TcpListener,
    quic: Option<quinn::Endpoint>,
    metrics: Option<TcpListener>,
}

impl Server {
    /// Resolves the options ([`Settings::from_config`]), opens the store and binds every listener.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        Self::bind_settings(Settings::from_config(&config)).await
    }

    /// Opens the store and binds every listener, as `settings` say.
    pub async fn bind_settings(settings: Settings) -> Result<Server, ServerError> {
        raise_open_file_limit();
        let files = settings.tls.files.as_ref();
        let identity = Identity::load(
            files.map(|(cert, _)| cert.as_path()),
            files.map(|(_, key)| key.as_path()),
            &settings.tls.cert_dir,
        )?;
        let store = Store::open(&settings.root, settings.limits.clone()).map_err(|source| ServerError::Root {
            root: settings.root.clone(),
            source,
        })?;
        let live = Live::start(store.clone(), settings.service.clone(), settings.live);
        let http = bind_tcp(settings.listen.http).await?;
        let (https, quic) = bind_tls_pair(&settings, &identity).await?;
        let metrics = match settings.listen.metrics {
            Some(addr) => Some(bind_tcp(addr).await?),
            None => None,
        };
        let alt_svc = quic
            .as_ref()
            .and_then(|q| q.local_addr().ok())
            .and_then(|addr| alt_svc(addr.port()));
        let packager = crate::packager::Packager::new(store.clone(), settings.package, settings.live.end_rule);
        let app = Arc::new(App::new(store, live, packager, settings.routes.clone(), alt_svc));
        Ok(Server {
            settings,
            app,
            identity,
            http,
            https,
            quic,
            metrics,
        })
    }

    /// The cleartext listener's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.settings.listen.http)
    }

    /// The TLS listener's address.
    pub fn https_addr(&self) -> SocketAddr {
        self.https.local_addr().unwrap_or(self.settings.listen.https)
    }

    /// The HTTP/3 listener's address, when it is on.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic.as_ref().and_then(|q| q.local_addr().ok())
    }

    /// The metrics listener's address, unless `--metrics off`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|m| m.local_addr().ok())
    }

    /// The certificate's SPKI pin (see [`Identity::spki_sha256`]).
    pub fn spki_sha256(&self) -> &str {
        self.identity.spki_sha256()
    }

    /// The TLS identity (tests trust its certificate).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The shared store.
    pub fn store(&self) -> &Store {
        &self.app.store
    }

    /// What an operator needs to know at start-up, one line each.
    pub fn announce(&self) {
        let http = self.http_addr();
        let https = self.https_addr();
        tracing::info!(root = %self.settings.root.display(), "serving files under the root");
        tracing::info!("ingest (cleartext HTTP/1.1, h2c): http://{http}/ldash/upload/{{path}}");
        tracing::info!("players (TLS HTTP/1.1, HTTP/2): https://{https}/ldash/download/{{path}}");
        match self.quic_addr() {
            Some(quic) => {
                tracing::info!("players (HTTP/3, QUIC): https://{quic}/ldash/download/{{path}} (advertised by Alt-Svc)")
            }
            None => tracing::info!("HTTP/3 is off (--no-h3)"),
        }
        match self.metrics_addr() {
            Some(metrics) => tracing::info!("metrics (Prometheus): http://{metrics}/metrics"),
            None => tracing::info!("metrics are off (--metrics off)"),
        }
        for (line, source) in crate::http::describe_libraries(&self.settings.routes.player_dir) {
            if source == crate::http::LibrarySource::Cdn {
                tracing::warn!("play page: {line}");
            } else {
                tracing::info!("play page: {line}");
            }
        }
        tracing::info!(
            certificate = %self.identity.source.display(),
            "certificate SPKI sha256 (for chromium --ignore-certificate-errors-spki-list): {}",
            self.spki_sha256()
        );
        let connections = &self.settings.connections;
        let budgeted = connections.http.max_connections + connections.https.max_connections;
        if let Some(limit) = open_file_limit().filter(|limit| budgeted + FILES_BESIDES_CONNECTIONS > *limit) {
            tracing::warn!(
                "the open-file limit ({limit}) is below the connection limits ({budgeted} for --http-max-connections \
                 and --https-max-connections, plus {FILES_BESIDES_CONNECTIONS} for files): a flood can exhaust it; \
                 raise it (ulimit -n, LimitNOFILE=) or lower the limits"
            );
        }
        if self.app.settings.upload_token.is_some() {
            tracing::info!("uploads need the upload token");
        } else {
            tracing::warn!("no --upload-token: uploads and deletes are accepted from loopback peers only");
        }
    }

    /// Runs until `shutdown` resolves; then stops accepting, drains for at most --drain-timeout and
    /// waits for persistence to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop, stopped) = watch::channel(false);
        let settings = self.settings.connections;
        let tls = match self.identity.tcp_config() {
            Ok(config) => TlsAcceptor::from(config),
            Err(err) => {
                tracing::error!(%err, "TLS listener disabled");
                return;
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(tcp::serve(
            self.http,
            None,
            Arc::clone(&self.app),
            settings,
            settings.http,
            stopped.clone(),
        ));
        if let Some(listener) = self.metrics {
            tasks.spawn(tcp::serve_metrics(
                listener,
                Arc::clone(&self.app),
                settings,
                stopped.clone(),
            ));
        }
        if let Some(endpoint) = self.quic {
            let app = Arc::clone(&self.app);
            tasks.spawn(quic::serve(endpoint, app, settings, stopped.clone()));
        }
        tasks.spawn(tcp::serve(
            self.https,
            Some(tls),
            Arc::clone(&self.app),
            settings,
            settings.https,
            stopped,
        ));
        shutdown.await;
        tracing::info!("shutting down: no new connections, draining");
        let _ = stop.send(true);
        while tasks.join_next().await.is_some() {}
        if tokio::time::timeout(Duration::from_secs(30), self.app.store.flush())
            .await
            .is_err()
        {
            tracing::warn!("persistence did not finish within 30 s");
        }
        tracing::info!("stopped");
    }
}

/// Binds the TLS listener and, unless --no-h3, the QUIC endpoint on UDP at the same port number.
/// With port 0 the system picks the TCP port, whose UDP twin may be taken: then another pair is tried.
async fn bind_tls_pair(
    settings: &Settings,
    identity: &Identity,
) -> Result<(TcpListener, Option<quinn::Endpoint>), ServerError> {
    let addr = settings.listen.https;
    let mut attempts = 0;
    loop {
        let https = bind_tcp(addr).await?;
        if !settings.listen.h3 {
            return Ok((https, None));
        }
        let tcp = https
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        match quic::endpoint(identity, tcp, settings.connections.quic_congestion) {
            Ok(endpoint) => return Ok((https, Some(endpoint))),
            Err(QuicError::Bind { source, .. })
                if addr.port() == 0 && source.kind() == std::io::ErrorKind::AddrInUse && attempts < 10 =>
            {
                attempts += 1;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(listener),
        // A host without IPv6 cannot bind [::]; serve IPv4 on the same port instead.
        Err(err) if addr.is_ipv6() && addr.ip().is_unspecified() && err.kind() != std::io::ErrorKind::AddrInUse => {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            tracing::warn!(%addr, %err, "IPv6 unavailable; listening on {v4}");
            TcpListener::bind(v4)
                .await
                .map_err(|source| ServerError::Bind { addr: v4, source })
        }
        Err(source) => Err(ServerError::Bind { addr, source }),
    }
}

/// Descriptors kept for what is not a TCP connection: the QUIC socket, files being persisted or
/// served from disk, the listeners.
const FILES_BESIDES_CONNECTIONS: usize = 256;

/// Raises the soft open-file limit to the hard one, as servers do (Go's runtime does it for every
/// program): the soft default is often 1024, far below the connection limits, while the hard one
/// (524288 under systemd) is what the administrator allows.
fn raise_open_file_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                tracing::debug!("the open-file limit could not be raised");
            }
        }
    }
}

/// The soft open-file limit of this process (from /proc/self/limits), where it can be read.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The Alt-Svc value advertising HTTP/3 on `port`.
pub fn alt_svc(port: u16) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")).ok()
}
