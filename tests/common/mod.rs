//! The shared harness: a real ldash server (the library, in this process) on 127.0.0.1 port 0 with
//! its own temporary root. Clients for every HTTP version, process launchers, the ffmpeg encoder
//! and the other checks come from the one test kit (testkit/, shared with the benchmark); what
//! needs ldash's own types (the server, its store) lives here.
#![allow(dead_code)]

pub mod browser;
pub mod edge;
pub mod encoder;
pub mod hls_check;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ldash::store::{Entry, StoreEvent};
use ldash::{Config, Server};
use tokio::sync::{mpsc, oneshot};

// What each test binary takes from the kit through the harness (not every binary takes all).
#[allow(unused_imports)]
pub use testkit::client::{self, chunk_channel, next_data, streamed_body};
pub use testkit::raw::{raw_exchange, raw_status};
pub use testkit::tools::require_tool;
#[allow(unused_imports)]
pub use testkit::{Origin, Proto, ALL_PROTOS};

/// A running server; stopped (gracefully) by [`TestServer::stop`] or when dropped. Where it listens
/// and its certificate are its [`Origin`] (`server.http`, `server.url(..)`, ...).
pub struct TestServer {
    origin: Origin,
    pub root: std::path::PathBuf,
    pub store: ldash::store::Store,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for TestServer {
    type Target = Origin;
    fn deref(&self) -> &Origin {
        &self.origin
    }
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
        let origin = Origin {
            http: server.http_addr(),
            https: server.https_addr(),
            quic: server.quic_addr(),
            metrics: server.metrics_addr(),
            cert: server.identity().certs()[0].clone(),
            spki: server.spki_sha256().to_owned(),
        };
        let store = server.store().clone();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            origin,
            root: root.join("www"),
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

    /// A reqwest client that speaks exactly `proto` (a TCP flavour) to this server.
    pub fn client(&self, proto: Proto) -> reqwest::Client {
        self.reqwest_client(proto)
            .unwrap_or_else(|e| panic!("a {proto:?} client: {e}"))
    }

    /// A client that speaks exactly `proto` to this server (one connection for HTTP/3).
    pub async fn client_for(&self, proto: Proto) -> client::Client {
        self.connect(proto)
            .await
            .unwrap_or_else(|e| panic!("a {proto:?} client: {e}"))
    }

    /// GETs `route` over `proto` on a client of its own.
    pub async fn get(&self, proto: Proto, route: &str) -> client::Response {
        self.client_for(proto).await.get(route).fetch().await
    }

    /// Uploads `bytes` whole with PUT over HTTP/1.1; returns the status.
    pub async fn put(&self, path: &str, bytes: impl Into<Bytes>) -> u16 {
        let url = self.url(Proto::H1, &format!("/ldash/upload/{path}"));
        let response = self.client(Proto::H1).put(url).body(bytes.into()).fetch().await;
        response.status().as_u16()
    }

    /// Uploads a stream recorded from ffmpeg's DASH muxer into `folder` (tests/fixtures/ffmpeg: its
    /// MPD, both init segments and segment 2 of both representations, 0.2 s chunks), whole.
    pub async fn put_recorded_stream(&self, folder: &str) {
        for (name, fixture_name) in RECORDED_STREAM {
            let status = self.put(&format!("{folder}/{name}"), fixture(fixture_name)).await;
            assert_eq!(status, 201, "upload {name}");
        }
    }

    /// Starts an upload of `path` over `proto` with `first` as its first chunk, fed further through
    /// the [`Feed`]; returns once the upload has started in the store (within 10 s).
    pub async fn feed(&self, proto: Proto, path: &str, first: impl Into<Bytes>) -> Feed {
        let (chunks, rx) = chunk_channel();
        let request = self
            .client_for(proto)
            .await
            .put(&format!("/ldash/upload/{path}"))
            .stream(rx);
        let upload = tokio::spawn(request.send());
        chunks
            .send(Ok(first.into()))
            .await
            .expect("the upload takes its first chunk");
        let entry = self.upload_started(path, Duration::from_secs(10)).await;
        Feed { chunks, upload, entry }
    }

    /// Waits (on the store's events, at most `bound`) until an upload of `path` has started, and
    /// returns its entry.
    pub async fn upload_started(&self, path: &str, bound: Duration) -> Arc<Entry> {
        let mut events = self.store.subscribe();
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if let Some(entry) = self.store.get(path) {
                return entry;
            }
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Ok(StoreEvent::Started { path: p, entry })) if &*p == path => return entry,
                Ok(_) => {}
                Err(_) => panic!("no upload of {path} started within {bound:?}"),
            }
        }
    }
}

/// An upload fed chunk by chunk while it runs ([`TestServer::feed`]).
pub struct Feed {
    chunks: mpsc::Sender<testkit::client::Chunk>,
    upload: tokio::task::JoinHandle<Result<client::Response, String>>,
    /// The store's entry of the upload.
    pub entry: Arc<Entry>,
}

impl Feed {
    /// Appends `chunk` to the upload.
    pub async fn send(&self, chunk: impl Into<Bytes>) {
        self.chunks
            .send(Ok(chunk.into()))
            .await
            .expect("the upload is still running to take the chunk");
    }

    /// Whether the upload has ended (answered, or broken).
    pub fn is_finished(&self) -> bool {
        self.upload.is_finished()
    }

    /// Ends the upload cleanly; its status (within 30 s), or why it failed.
    pub async fn end(self) -> Result<u16, String> {
        drop(self.chunks);
        let ended = tokio::time::timeout(Duration::from_secs(30), self.upload)
            .await
            .expect("the upload ends within 30 s of its last chunk");
        Ok(ended.expect("the upload task")?.status)
    }

    /// Cuts the upload midway (as an encoder that dies), and waits until the client has ended it.
    pub async fn cut(self) {
        self.chunks
            .send(Err(()))
            .await
            .expect("the upload is still running to cut");
        let _ = self.upload.await;
    }
}

/// Every (uploader, reader) pair of protocols.
pub fn every_pair() -> impl Iterator<Item = (Proto, Proto)> {
    ALL_PROTOS.into_iter().flat_map(|up| ALL_PROTOS.map(|down| (up, down)))
}

/// Waits until `route` answers 200 (the upload has reached the server) and returns that response;
/// anything but 404 meanwhile fails the test.
pub async fn when_present(client: &client::Client, route: &str) -> client::Response {
    loop {
        let r = client.get(route).fetch().await;
        if r.status == 200 {
            return r;
        }
        assert_eq!(r.status, 404, "unexpected status while waiting for {route}");
        tokio::task::yield_now().await;
    }
}

/// `fetch()` for reqwest's requests, as the kit's have it: sends, and fails the test (naming the
/// request) when no response comes.
pub trait Fetch {
    async fn fetch(self) -> reqwest::Response;
}

impl Fetch for reqwest::RequestBuilder {
    async fn fetch(self) -> reqwest::Response {
        let (client, request) = self.build_split();
        let request = request.unwrap_or_else(|e| panic!("a request the test built: {e}"));
        let what = format!("{} {}", request.method(), request.url());
        client.execute(request).await.unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A file of tests/fixtures/ffmpeg (what ffmpeg's DASH muxer wrote).
/// The stream recorded from ffmpeg's DASH muxer (tests/fixtures/ffmpeg): (name to upload, fixture).
pub const RECORDED_STREAM: [(&str, &str); 5] = [
    ("stream.mpd", "steady.mpd"),
    ("init-stream0.m4s", "init-stream0.m4s"),
    ("chunk-stream0-00002.m4s", "chunk-stream0-00002.m4s"),
    ("init-stream1.m4s", "init-stream1.m4s"),
    ("chunk-stream1-00002.m4s", "chunk-stream1-00002.m4s"),
];

#[allow(dead_code)]
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ffmpeg")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}
