//! The shared harness: a real ldash server on 127.0.0.1 port 0 with its own temporary root, and
//! clients for every HTTP version it speaks.
#![allow(dead_code)]

pub mod browser;
pub mod client;
pub mod edge;
pub mod encoder;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use ldash::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// The HTTP flavours a test table runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 on the cleartext listener.
    H1,
    /// HTTP/2 with prior knowledge on the cleartext listener.
    H2c,
    /// HTTP/1.1 over TLS.
    H1Tls,
    /// HTTP/2 over TLS, negotiated by ALPN.
    H2Tls,
    /// HTTP/3 over QUIC.
    H3,
}

/// Every TCP flavour.
pub const TCP_PROTOS: [Proto; 4] = [Proto::H1, Proto::H2c, Proto::H1Tls, Proto::H2Tls];
/// Every protocol the server speaks.
pub const ALL_PROTOS: [Proto; 5] = [Proto::H1, Proto::H2c, Proto::H1Tls, Proto::H2Tls, Proto::H3];

/// A running server; stopped (gracefully) by [`TestServer::stop`] or when dropped.
pub struct TestServer {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub quic: Option<SocketAddr>,
    /// The metrics listener (`GET /metrics`), on its own port 0 unless a test turns it off.
    pub metrics: Option<SocketAddr>,
    pub root: PathBuf,
    pub cert: rustls::pki_types::CertificateDer<'static>,
    pub spki: String,
    pub store: ldash::store::Store,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with default options on a fresh root.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// A server on a fresh root, with options changed by `change`.
    pub async fn start_with(change: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary root");
        let mut server = Self::start_in(dir.path(), change).await;
        server._dir = Some(dir);
        server
    }

    /// A server on `root` (kept after the server stops), with options changed by `change`.
    pub async fn start_in(root: &Path, change: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::with_root(root.join("www"));
        config.http = "127.0.0.1:0".parse().expect("address");
        config.https = "127.0.0.1:0".parse().expect("address");
        config.cert_dir = root.join("certs");
        config.drain_timeout = 2;
        // Never the default 9464: tests run in parallel.
        config.metrics = ldash::config::Listen::At("127.0.0.1:0".parse().expect("address"));
        change(&mut config);
        let server = Server::bind(config).await.expect("server binds");
        let (stop, stopped) = oneshot::channel::<()>();
        let http = server.http_addr();
        let https = server.https_addr();
        let quic = server.quic_addr();
        let metrics = server.metrics_addr();
        let cert = server.identity().certs()[0].clone();
        let spki = server.spki_sha256().to_owned();
        let store = server.store().clone();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            http,
            https,
            quic,
            metrics,
            root: root.join("www"),
            cert,
            spki,
            store,
            stop: Some(stop),
            task: Some(task),
            _dir: None,
        }
    }

    /// Signals shutdown and waits for the server to finish draining and persisting.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task ends cleanly");
        }
    }

    /// The URL of `route` (e.g. "/ldash/download/a.txt") for a protocol.
    pub fn url(&self, proto: Proto, route: &str) -> String {
        match proto {
            Proto::H1 | Proto::H2c => format!("http://{}{}", self.http, route),
            Proto::H1Tls | Proto::H2Tls | Proto::H3 => format!("https://{}{}", self.https, route),
        }
    }

    /// A client that speaks exactly `proto` to this server.
    pub fn client(&self, proto: Proto) -> reqwest::Client {
        // reqwest is built without a rustls provider of its own: every client gets ours (ring).
        let alpn: &[&[u8]] = if proto == Proto::H2Tls {
            &[b"h2"]
        } else {
            &[b"http/1.1"]
        };
        // Idle pooled connections are dropped before ldash's --header-timeout closes them.
        let builder = reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .use_preconfigured_tls(self.tls_client(alpn));
        let builder = match proto {
            Proto::H1 | Proto::H1Tls => builder.http1_only(),
            Proto::H2c => builder.http2_prior_knowledge(),
            Proto::H2Tls => builder,
            Proto::H3 => panic!("reqwest does not speak HTTP/3 here: use client_for"),
        };
        builder.build().expect("client builds")
    }

    /// A rustls client config trusting this server's certificate.
    pub fn tls_client(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).expect("certificate is valid");
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// Uploads `bytes` whole with PUT over HTTP/1.1; returns the status.
    pub async fn put(&self, path: &str, bytes: impl Into<Bytes>) -> u16 {
        let url = self.url(Proto::H1, &format!("/ldash/upload/{path}"));
        let response = self
            .client(Proto::H1)
            .put(url)
            .body(bytes.into())
            .send()
            .await
            .expect("upload");
        response.status().as_u16()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Chunks a test feeds into an upload: send `Ok(bytes)` to append, `Err(())` to cut the upload,
/// drop the sender to end it cleanly.
/// One item of a test-fed upload: a chunk, or `Err(())` to cut the upload.
pub type Chunk = Result<Bytes, ()>;

pub fn chunk_channel() -> (mpsc::Sender<Chunk>, mpsc::Receiver<Chunk>) {
    mpsc::channel(16)
}

/// A request body fed chunk by chunk by the test: send `Ok(bytes)` to append, `Err(())` to make the
/// upload fail midway, drop the sender to end it cleanly.
pub fn streamed_body() -> (mpsc::Sender<Result<Bytes, ()>>, reqwest::Body) {
    let (tx, rx) = mpsc::channel::<Result<Bytes, ()>>(16);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|item| (item.map_err(|()| std::io::Error::other("upload cut by the test")), rx))
    });
    (tx, reqwest::Body::wrap_stream(stream))
}

/// Sends raw bytes over a new TCP connection to `addr` and returns everything the server sends back
/// until it closes or `until` appears.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], until: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.expect("read response");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&got).contains(until) {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The status code of a raw HTTP/1.1 response.
pub fn raw_status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// The next non-empty chunk of a response body (HTTP/2 may end a stream with an empty DATA frame).
pub async fn next_data(response: &mut reqwest::Response) -> reqwest::Result<Option<Bytes>> {
    loop {
        match response.chunk().await? {
            Some(chunk) if chunk.is_empty() => continue,
            other => return Ok(other),
        }
    }
}

/// The path of an external tool the test needs (ffmpeg, chromium, ...). When it is missing the test
/// is skipped with a message, unless `LDASH_REQUIRE_TOOLS=1` (set by CI), which makes it fail.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let required = std::env::var("LDASH_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(!required, "{name} is required (LDASH_REQUIRE_TOOLS=1) but not on PATH");
        eprintln!("SKIPPED: {name} is not installed (CI installs it; set LDASH_REQUIRE_TOOLS=1 to fail instead)");
    }
    found
}

/// The folder whose node_modules holds the browser driver (playwright-core, from `npm ci --prefix
/// player`): the tests' own dependency, not the server's (its player libraries are built in).
/// None (the test skips) when it is not installed, unless LDASH_REQUIRE_TOOLS=1, where it fails.
pub fn browser_driver() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("player");
    if dir.join("node_modules/playwright-core").is_dir() {
        return Some(dir);
    }
    let required = std::env::var("LDASH_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "the browser driver (playwright-core) is required: npm ci --prefix player"
    );
    eprintln!("SKIPPED: player/node_modules/playwright-core is missing (npm ci --prefix player)");
    None
}
