//! What the CDN edge tests share, whichever proxy is the edge (tests/edge.rs: nginx,
//! tests/edge_varnish.rs: Varnish): ldash's own access log captured from its `ldash::access`
//! events, a crowd of viewers asking the edge for one object while one reader asks the origin
//! directly, and the live stream they ask about (the real ffmpeg pushing into a TestServer).

use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ldash::store::{Entry, EntryState, StoreEvent};
use tokio::sync::watch;
use tracing_subscriber::layer::{Context, SubscriberExt};

use super::encoder::{ffmpeg_command, Ingest};
use super::{next_data, Proto, TestServer};

/// Viewers asking the edge for the same object at once.
pub const VIEWERS: usize = 200;

/// One finished request as ldash's access log saw it.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub path: String,
    pub version: String,
    pub status: u64,
}

impl tracing::field::Visit for Access {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "status" {
            self.status = value;
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn Debug) {
        match field.name() {
            "path" => self.path = format!("{value:?}"),
            "version" => self.version = format!("{value:?}"),
            _ => {}
        }
    }
}

/// A tracing layer that keeps every `ldash::access` event of this process.
struct AccessRecorder(watch::Sender<Vec<Access>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AccessRecorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "ldash::access" {
            return;
        }
        let mut access = Access::default();
        event.record(&mut access);
        self.0.send_modify(|log| log.push(access));
    }
}

/// ldash's requests so far, recorded from the first call on.
pub fn access_log() -> &'static watch::Sender<Vec<Access>> {
    static LOG: OnceLock<watch::Sender<Vec<Access>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let (log, _) = watch::channel(Vec::new());
        let subscriber = tracing_subscriber::registry().with(AccessRecorder(log.clone()));
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        log
    })
}

/// Requests the edge made to ldash for `route`. Edges speak HTTP/1.1 to the origin; the test's
/// own direct requests use HTTP/2, so they are not counted.
pub fn edge_requests(log: &[Access], route: &str) -> usize {
    log.iter()
        // The log shows the query too; an object here is its path, whatever the query.
        .filter(|a| {
            a.path.split_once('?').map_or(a.path.as_str(), |(path, _)| path) == route && a.version == "HTTP/1.1"
        })
        .count()
}

/// Waits (bounded) until ldash has logged at least one edge request for `route` after the first
/// `since` entries of the log (earlier tests used the same paths), then returns how many it logged.
pub async fn origin_requests_for(route: &str, since: usize) -> usize {
    let mut log = access_log().subscribe();
    tokio::time::timeout(
        Duration::from_secs(20),
        log.wait_for(|log| edge_requests(&log[since.min(log.len())..], route) >= 1),
    )
    .await
    .unwrap_or_else(|_| panic!("ldash never logged the edge's request for {route}"))
    .expect("the access log lives as long as the test");
    let log = log.borrow();
    edge_requests(&log[since.min(log.len())..], route)
}

/// What one viewer received, with times from the common start.
#[derive(Debug)]
pub struct Received {
    pub status: u16,
    /// The edge's `X-Edge-Cache` (HIT or MISS).
    pub cache: String,
    pub digest: Vec<u8>,
    pub len: usize,
    /// (time, bytes so far) at each body chunk.
    pub marks: Vec<(Duration, usize)>,
    pub done: Duration,
    /// The origin's entry when this viewer's first body bytes arrived (state, bytes uploaded so
    /// far), when the caller gave the entry to watch.
    pub origin_at_first_bytes: Option<(EntryState, u64)>,
}

/// GETs `url` and reads the whole body, hashing it. With `upload`, notes where that upload stood
/// when the first body bytes arrived.
pub async fn receive(
    client: reqwest::Client,
    url: String,
    range: Option<String>,
    t0: Instant,
    upload: Option<Arc<Entry>>,
) -> Received {
    let mut request = client.get(&url);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    let mut response = request.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-edge-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut marks = Vec::new();
    let mut len = 0;
    let mut origin_at_first_bytes = None;
    while let Some(chunk) = next_data(&mut response)
        .await
        .unwrap_or_else(|e| panic!("body of {url}: {e}"))
    {
        if marks.is_empty() {
            origin_at_first_bytes = upload.as_ref().map(|entry| (entry.state(), entry.len()));
        }
        digest.update(&chunk);
        len += chunk.len();
        marks.push((t0.elapsed(), len));
    }
    Received {
        status,
        cache,
        digest: digest.finish().as_ref().to_vec(),
        len,
        marks,
        done: t0.elapsed(),
        origin_at_first_bytes,
    }
}

/// The origin (HTTP/2, direct) and VIEWERS edge readers of `edge_url` (the edge's URL of `route`),
/// all started at once. Also returns where ldash's access log stood before.
pub async fn crowd(
    server: &TestServer,
    edge_url: &str,
    route: &str,
    range: Option<&str>,
    upload: Option<Arc<Entry>>,
) -> (Received, Vec<Received>, usize) {
    let since = access_log().borrow().len();
    let direct_client = server.client(Proto::H2c);
    let edge_client = server.client(Proto::H1);
    let t0 = Instant::now();
    let direct = tokio::spawn(receive(
        direct_client,
        server.url(Proto::H2c, route),
        range.map(str::to_owned),
        t0,
        upload.clone(),
    ));
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|_| {
            tokio::spawn(receive(
                edge_client.clone(),
                edge_url.to_owned(),
                range.map(str::to_owned),
                t0,
                upload.clone(),
            ))
        })
        .collect();
    let bound = Duration::from_secs(30);
    let direct = tokio::time::timeout(bound, direct)
        .await
        .expect("the direct read ends within 30 s")
        .expect("direct reader");
    let mut received = Vec::new();
    for viewer in viewers {
        received.push(
            tokio::time::timeout(bound, viewer)
                .await
                .expect("every edge viewer finishes within 30 s")
                .expect("edge reader"),
        );
    }
    (direct, received, since)
}

/// Every viewer got `status` and the same bytes, exactly one was the edge's origin request (MISS),
/// and ldash served the route to the edge exactly once. Returns the viewer that went to the origin.
/// `edge_log` says what the edge logged, for the message.
pub async fn assert_collapsed<'a>(
    case: &str,
    route: &str,
    status: u16,
    (viewers, since): (&'a [Received], usize),
    edge_log: impl Fn() -> String,
) -> &'a Received {
    for (i, v) in viewers.iter().enumerate() {
        assert_eq!(v.status, status, "{case}: viewer {i} got status {}", v.status);
        assert_eq!(
            v.digest, viewers[0].digest,
            "{case}: viewer {i} got other bytes ({} bytes)",
            v.len
        );
    }
    let misses: Vec<&Received> = viewers.iter().filter(|v| v.cache == "MISS").collect();
    let hits = viewers.iter().filter(|v| v.cache == "HIT").count();
    assert_eq!(
        (misses.len(), hits),
        (1, VIEWERS - 1),
        "{case}: the edge should fetch once and serve the rest from its cache; its log:\n{}",
        edge_log()
    );
    let origin = origin_requests_for(route, since).await;
    assert_eq!(origin, 1, "{case}: ldash served {route} to the edge {origin} times");
    misses[0]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The largest delay of any byte at `viewer` compared with the direct reader: for each point the
/// origin's bytes reached, when the viewer had as many.
pub fn max_byte_lag(direct: &Received, viewer: &Received) -> Duration {
    direct
        .marks
        .iter()
        .map(|&(at, n)| {
            let viewer_at = viewer
                .marks
                .iter()
                .find(|&&(_, m)| m >= n)
                .map_or(viewer.done, |&(t, _)| t);
            viewer_at.saturating_sub(at)
        })
        .max()
        .unwrap_or_default()
}

/// Min, median and max of the viewers' completion times (ms), leaving out `skip`.
pub fn spread(viewers: &[Received], skip: Option<&Received>) -> (f64, f64, f64) {
    let mut done: Vec<f64> = viewers
        .iter()
        .filter(|v| skip.is_none_or(|s| !std::ptr::eq(*v, s)))
        .map(|v| ms(v.done))
        .collect();
    done.sort_by(f64::total_cmp);
    (done[0], done[done.len() / 2], done[done.len() - 1])
}

/// Waits (bounded) for the next upload whose path starts with `prefix`.
pub async fn next_upload(events: &mut tokio::sync::broadcast::Receiver<StoreEvent>, prefix: &str) -> String {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await {
                Ok(StoreEvent::Started { path, .. }) if path.starts_with(prefix) => return path.to_string(),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("store events ended: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no upload of {prefix}* within 20 s"))
}

/// Starts ldash and ffmpeg and waits (bounded) until the stream has three segments.
pub async fn live_origin(
    ffmpeg: &Path,
    seconds: u32,
    change: impl FnOnce(&mut ldash::Config),
) -> (TestServer, tokio::process::Child) {
    access_log();
    let server = TestServer::start_with(change).await;
    let url = server.url(Proto::H1, "/ldash/upload/live/stream.mpd");
    let encoder = ffmpeg_command(ffmpeg, &url, Ingest::PutPersistent, seconds)
        .spawn()
        .expect("ffmpeg starts");
    let mut events = server.store.subscribe();
    while server.store.get("live/chunk-stream0-00003.m4s").is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("ffmpeg reaches segment 3");
    }
    (server, encoder)
}

/// The msn and part index of the part after the last one a media playlist lists.
pub fn next_part(playlist: &str) -> (u64, usize) {
    let hint = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:"))
        .expect("a preload hint");
    let uri = hint
        .split(',')
        .find_map(|kv| kv.strip_prefix("URI=\""))
        .and_then(|u| u.strip_suffix('"'))
        .expect("hint URI");
    let msn = uri
        .trim_end_matches(".m4s")
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("segment number in the hint");
    let listed = playlist
        .lines()
        .filter(|l| l.starts_with("#EXT-X-PART:") && l.contains(&format!("URI=\"{uri}\"")))
        .count();
    (msn, listed)
}
