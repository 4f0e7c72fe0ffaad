//! The CDN edge tests' one scenario table, run against each edge (tests/edge.rs: Debian's nginx
//! running deploy/nginx/ldash-edge.conf, tests/edge_varnish.rs: varnishd running
//! deploy/varnish/ldash-edge.vcl), with the real ffmpeg pushing into a TestServer behind it:
//! - a crowd of viewers asks the edge for one object at once while one reader asks the origin
//!   directly (a growing segment, an LL-HLS blocking playlist, an LL-HLS part, a complete segment):
//!   every viewer gets the origin's exact bytes, and ldash serves each object once (counted from
//!   its own `ldash::access` events, captured in this process);
//! - the headers the edge passes on, MPDs passed through with the viewer's Host, uploads refused;
//! - an aborted upload is cut at the edge and not kept;
//! - the play page plays through the edge in headless Chromium.
//!
//! Where the edges differ by design (docs/edges-and-failover.md, "Behind a CDN edge"), [`Kind`]
//! says how, and the scenarios assert each edge's own behaviour. What an edge adds to latency is
//! printed (`EDGE` lines), not asserted.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ldash::store::{Entry, EntryState, StoreEvent};
use testkit::daemon::{self, Daemon};
use testkit::digest::Sha256;
use tokio::sync::{broadcast, watch};
use tracing_subscriber::layer::{Context, SubscriberExt};

use super::browser::{assert_plays, browser_driver, drive, screenshot};
use super::encoder::Encoder;
use super::{next_data, raw_exchange, raw_status, require_tool, Fetch, Proto, TestServer};

/// Viewers asking the edge for the same object at once.
pub const VIEWERS: usize = 200;

/// The tests of one edge, each named for what it proves. One runs at a time in a test binary: each
/// runs an encoder and the edge (and one a browser), and two at once on 2 cores would measure the
/// machine, not the edge.
#[macro_export]
macro_rules! edge_tests {
    ($kind:expr) => {
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn two_hundred_viewers_through_the_edge_cost_the_origin_one_request_per_object() {
            let _turn = ONE_AT_A_TIME.lock().await;
            common::edge::crowds($kind).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_aborted_upload_is_cut_at_the_edge_and_not_kept() {
            let _turn = ONE_AT_A_TIME.lock().await;
            common::edge::aborted_upload($kind).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn play_page_plays_through_the_edge() {
            let _turn = ONE_AT_A_TIME.lock().await;
            common::edge::play_through($kind).await;
        }
    };
}

/// Which edge, and how it differs from the other by design.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Varnish,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Varnish => "varnish",
        }
    }

    /// The edge's program, if it is installed (the test skips without it, unless tools are
    /// required).
    pub fn program(self) -> Option<std::path::PathBuf> {
        require_tool(match self {
            Kind::Nginx => "nginx",
            Kind::Varnish => "varnishd",
        })
    }

    /// Whether it streams a growing object to every viewer it coalesced, chunk by chunk (Varnish).
    /// nginx streams it only to the viewer whose request went to the origin (the others get it
    /// complete), and holds each chunk until the next one starts.
    fn streams_to_every_viewer(self) -> bool {
        self == Kind::Varnish
    }

    /// Whether it says how old its copy is (`Age`; open-source nginx has no such variable).
    fn adds_age(self) -> bool {
        self == Kind::Varnish
    }

    /// Its `X-Edge-Cache` on an MPD it passes through uncached (nginx adds nothing without a cache
    /// status).
    fn mpd_cache_status(self) -> Option<&'static str> {
        match self {
            Kind::Nginx => None,
            Kind::Varnish => Some("MISS"),
        }
    }

    /// Whether it answers methods other than GET, HEAD and OPTIONS itself (Varnish: 405); nginx
    /// passes them to the origin, which answers 405 to them on downloads.
    fn refuses_other_methods(self) -> bool {
        self == Kind::Varnish
    }
}

/// An edge running the repository's configuration in front of an origin, stopped when dropped.
pub struct Edge {
    pub kind: Kind,
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Edge {
    /// Starts `kind` (its `program`) in front of `origin` on a free loopback port.
    pub async fn start(kind: Kind, program: &Path, origin: SocketAddr) -> Edge {
        Edge::start_for(kind, program, Origins::One(origin)).await
    }

    /// Starts `kind` (its `program`) running the configuration for `origins` on a free loopback
    /// port.
    pub async fn start_for(kind: Kind, program: &Path, origins: Origins) -> Edge {
        let dir = tempfile::tempdir().expect("edge folder");
        let started = match kind {
            Kind::Nginx => start_nginx(program, dir.path(), origins).await,
            Kind::Varnish => start_varnish(program, dir.path(), origins).await,
        };
        let daemon = started.unwrap_or_else(|e| panic!("{e}"));
        Edge { kind, daemon, dir }
    }

    /// Its process id (to stop it).
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    pub fn url(&self, route: &str) -> String {
        format!("http://127.0.0.1:{}{route}", self.daemon.port())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.daemon.port()))
    }

    /// The edge's own log of its requests (its cache status per request), for messages.
    pub fn access_log(&self) -> String {
        match self.kind {
            Kind::Nginx => std::fs::read_to_string(self.dir.path().join("logs/edge-access.log")).unwrap_or_default(),
            Kind::Varnish => std::process::Command::new("varnishncsa")
                .arg("-d")
                .arg("-n")
                .arg(varnish_workdir(self.dir.path(), self.daemon.port()))
                .args(["-F", "%s %{X-Edge-Cache}o %U%q %{Range}i %D %{X-Ldash-Origin}o %t"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_else(|e| format!("(varnishncsa: {e})")),
        }
    }
}

/// The origins behind an edge, and the repository's configuration for them.
#[derive(Debug, Clone, Copy)]
pub enum Origins {
    /// One origin: deploy/*/ldash-edge.*.
    One(SocketAddr),
    /// Origin A, and B taking over while A is down: deploy/*/ldash-edge-failover.*.
    Failover(SocketAddr, SocketAddr),
    /// Channels spread over A and B: deploy/*/ldash-edge-shard.*.
    Shard(SocketAddr, SocketAddr),
}

impl Origins {
    /// The configuration's file name without its extension.
    fn config(self) -> &'static str {
        match self {
            Origins::One(_) => "ldash-edge",
            Origins::Failover(..) => "ldash-edge-failover",
            Origins::Shard(..) => "ldash-edge-shard",
        }
    }

    /// The configuration's placeholders for origin addresses, with what replaces them.
    fn substitutions(self, host_and_port: bool) -> Vec<(String, String)> {
        let named: Vec<(&str, SocketAddr)> = match self {
            Origins::One(origin) => vec![("LDASH_ORIGIN", origin)],
            Origins::Failover(a, b) | Origins::Shard(a, b) => vec![("LDASH_ORIGIN_A", a), ("LDASH_ORIGIN_B", b)],
        };
        let mut out = Vec::new();
        for (name, addr) in named {
            if host_and_port {
                out.push((format!("${{{name}_HOST}}"), addr.ip().to_string()));
                out.push((format!("${{{name}_PORT}}"), addr.port().to_string()));
            } else {
                out.push((format!("${{{name}}}"), addr.to_string()));
            }
        }
        out
    }
}

fn deployed(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file))
        .unwrap_or_else(|e| panic!("deploy/{file}: {e}"))
}

fn substituted(mut text: String, substitutions: &[(String, String)]) -> String {
    for (from, to) in substitutions {
        text = text.replace(from, to);
    }
    assert!(!text.contains("${"), "a placeholder is left unsubstituted:\n{text}");
    text
}

/// nginx running deploy/nginx/{configuration} (and the site rules it includes, written beside it)
/// with `dir` as its prefix.
async fn start_nginx(nginx: &Path, dir: &Path, origins: Origins) -> Result<Daemon, String> {
    let template = deployed(&format!("nginx/{}.conf", origins.config()));
    let site = deployed("nginx/ldash-edge-site.conf");
    daemon::start_nginx(nginx, dir, 1, |ports| {
        let mut substitutions = origins.substitutions(false);
        substitutions.push(("${EDGE_LISTEN}".to_owned(), format!("127.0.0.1:{}", ports[0])));
        // nginx resolves the include beside the configuration it runs (dir/nginx.conf).
        let site = substituted(site.clone(), &substitutions);
        if let Err(e) = std::fs::write(dir.join("ldash-edge-site.conf"), site) {
            panic!("ldash-edge-site.conf: {e}");
        }
        substituted(template.clone(), &substitutions)
    })
    .await
}

fn varnish_workdir(dir: &Path, port: u16) -> std::path::PathBuf {
    dir.join(format!("work-{port}"))
}

/// varnishd running deploy/varnish/{configuration} and the rules it includes (copied beside it).
async fn start_varnish(varnishd: &Path, dir: &Path, origins: Origins) -> Result<Daemon, String> {
    let vcl = substituted(
        deployed(&format!("varnish/{}.vcl", origins.config())),
        &origins.substitutions(true),
    );
    let vcl_path = dir.join("ldash-edge.vcl");
    std::fs::write(&vcl_path, vcl).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("ldash-edge-rules.vcl"),
        deployed("varnish/ldash-edge-rules.vcl"),
    )
    .map_err(|e| e.to_string())?;
    daemon::start(daemon::VARNISH, 1, false, |ports| {
        let mut command = std::process::Command::new(varnishd);
        // -j none: no privilege separation, so this works as root and as any user alike.
        command
            .arg("-F")
            .arg("-f")
            .arg(&vcl_path)
            .args(["-a", &format!("127.0.0.1:{}", ports[0])])
            .arg("-n")
            .arg(varnish_workdir(dir, ports[0]))
            .args(["-s", "malloc,64m", "-j", "none"]);
        Ok(command)
    })
    .await
}

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

/// Waits (bounded) until ldash has logged at least `count` edge requests for `route` after the
/// first `since` entries of the log (earlier scenarios used the same paths), then returns how many
/// it logged.
pub async fn origin_requests_for(route: &str, since: usize, count: usize) -> usize {
    let mut log = access_log().subscribe();
    tokio::time::timeout(
        Duration::from_secs(20),
        log.wait_for(|log| edge_requests(&log[since.min(log.len())..], route) >= count),
    )
    .await
    .unwrap_or_else(|_| panic!("ldash never logged the edge's request number {count} for {route}"))
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
    pub digest: [u8; 32],
    pub len: usize,
    /// (time, bytes so far) at each body chunk.
    pub marks: Vec<(Duration, usize)>,
    pub done: Duration,
    /// The origin's entry when this viewer's first body bytes arrived (state, bytes uploaded so
    /// far), when the caller gave the entry to watch.
    pub origin_at_first_bytes: Option<(EntryState, u64)>,
}

impl Received {
    fn first_byte(&self) -> Duration {
        self.marks.first().map_or(self.done, |m| m.0)
    }
}

/// GETs `url` and reads the whole body, hashing it. With `upload`, notes where that upload stood
/// when the first body bytes arrived.
async fn receive(
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
    let mut digest = Sha256::new();
    let mut marks = Vec::new();
    let mut origin_at_first_bytes = None;
    while let Some(chunk) = next_data(&mut response)
        .await
        .unwrap_or_else(|e| panic!("body of {url}: {e}"))
    {
        if marks.is_empty() {
            origin_at_first_bytes = upload.as_ref().map(|entry| (entry.state(), entry.len()));
        }
        digest.update(&chunk);
        marks.push((t0.elapsed(), digest.len() as usize));
    }
    Received {
        status,
        cache,
        len: digest.len() as usize,
        digest: digest.finish(),
        marks,
        done: t0.elapsed(),
        origin_at_first_bytes,
    }
}

/// One object asked of the edge by the crowd.
struct Object<'a> {
    /// What it is, for messages.
    what: &'a str,
    /// Its route at the origin and the edge, with any query.
    route: &'a str,
    /// Its path as ldash's access log counts it (the route without the query).
    path: &'a str,
    range: Option<&'a str>,
    /// The status every viewer gets.
    status: u16,
    /// The upload whose progress each viewer's first bytes are noted against.
    upload: Option<Arc<Entry>>,
}

impl<'a> Object<'a> {
    /// A whole object the origin answers 200 for, counted by its route.
    fn new(what: &'a str, route: &'a str) -> Object<'a> {
        Object {
            what,
            route,
            path: route,
            range: None,
            status: 200,
            upload: None,
        }
    }
}

/// The origin (HTTP/2, direct) and VIEWERS edge readers, all started at once, asking for `object`.
/// Every viewer must get the same status and bytes as each other, exactly one of them must be the
/// edge's origin request (MISS) and ldash must serve the path to the edge exactly once. Returns
/// the direct reader, the viewers and the one whose request went to the origin (by index).
async fn crowd(server: &TestServer, edge: &Edge, object: &Object<'_>) -> (Received, Vec<Received>, usize) {
    let what = object.what;
    let since = access_log().borrow().len();
    let direct_client = server.client(Proto::H2c);
    let edge_client = server.client(Proto::H1);
    let t0 = Instant::now();
    let range = object.range.map(str::to_owned);
    let direct = tokio::spawn(receive(
        direct_client,
        server.url(Proto::H2c, object.route),
        range.clone(),
        t0,
        object.upload.clone(),
    ));
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|_| {
            let url = edge.url(object.route);
            tokio::spawn(receive(
                edge_client.clone(),
                url,
                range.clone(),
                t0,
                object.upload.clone(),
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
    assert_eq!(direct.status, object.status, "the origin answers {}", object.route);
    for (i, v) in received.iter().enumerate() {
        assert_eq!(v.status, object.status, "{what}: viewer {i} got status {}", v.status);
        assert_eq!(
            v.digest, received[0].digest,
            "{what}: viewer {i} got other bytes ({} bytes)",
            v.len
        );
    }
    let misses: Vec<usize> = (0..VIEWERS).filter(|&i| received[i].cache == "MISS").collect();
    let hits = received.iter().filter(|v| v.cache == "HIT").count();
    assert_eq!(
        (misses.len(), hits),
        (1, VIEWERS - 1),
        "{what}: the edge should fetch once and serve the rest from its cache; its log:\n{}",
        edge.access_log()
    );
    let origin = origin_requests_for(object.path, since, 1).await;
    assert_eq!(
        origin, 1,
        "{what}: ldash served {} to the edge {origin} times",
        object.path
    );
    (direct, received, misses[0])
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

/// Min, median and max of `values`, as "a / b / c".
fn min_median_max(mut values: Vec<f64>, sign: bool) -> String {
    values.sort_by(f64::total_cmp);
    let [a, b, c] = [values[0], values[values.len() / 2], values[values.len() - 1]];
    if sign {
        format!("{a:+.1} / {b:+.1} / {c:+.1}")
    } else {
        format!("{a:.1} / {b:.1} / {c:.1}")
    }
}

/// Prints what the edge added for `what`: for the viewer whose request went to the origin and for
/// the others, first byte and last byte against the direct reader and the latest any byte came.
fn report(edge: &Edge, what: &str, direct: &Received, viewers: &[Received], holder: usize) {
    let others: Vec<&Received> = (0..viewers.len())
        .filter(|&i| i != holder)
        .map(|i| &viewers[i])
        .collect();
    let first = |v: &Received| ms(v.first_byte()) - ms(direct.first_byte());
    let last = |v: &Received| ms(v.done) - ms(direct.done);
    let lag = |v: &Received| ms(max_byte_lag(direct, v));
    let held = &viewers[holder];
    println!(
        "EDGE {} {what}, {} bytes: origin first byte {:.0} ms, complete {:.0} ms | the edge's origin request: \
         first byte {:+.1} ms, last byte {:+.1} ms, latest byte {:.1} ms behind | the {} others (min / median / \
         max): first byte {} ms, last byte {} ms, latest byte {} ms behind",
        edge.kind.name(),
        direct.len,
        ms(direct.first_byte()),
        ms(direct.done),
        first(held),
        last(held),
        lag(held),
        others.len(),
        min_median_max(others.iter().map(|v| first(v)).collect(), true),
        min_median_max(others.iter().map(|v| last(v)).collect(), true),
        min_median_max(others.iter().map(|v| lag(v)).collect(), false),
    );
}

/// Waits (bounded) for the next upload whose path starts with `prefix`.
async fn next_upload(events: &mut broadcast::Receiver<StoreEvent>, prefix: &str) -> String {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await {
                Ok(StoreEvent::Started { path, .. }) if path.starts_with(prefix) => return path.to_string(),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("store events ended: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no upload of {prefix}* within 20 s"))
}

/// The msn and part index of the part after the last one a media playlist lists.
fn next_part(playlist: &str) -> (u64, usize) {
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

/// The live origin (ffmpeg pushing into a TestServer, three segments in) and the edge in front of
/// it; None (the test skips) when a tool is missing.
async fn live_edge(
    kind: Kind,
    seconds: u32,
    change: impl FnOnce(&mut ldash::Config),
) -> Option<(TestServer, Edge, Encoder)> {
    let (ffmpeg, program) = (require_tool("ffmpeg")?, kind.program()?);
    access_log();
    let server = TestServer::start_with(change).await;
    let encoder = server
        .live_stream(&ffmpeg, seconds, "live/chunk-stream0-00003.m4s")
        .await;
    let edge = Edge::start(kind, &program, server.http).await;
    Some((server, edge, encoder))
}

/// The crowd scenarios: a growing segment, a blocking playlist, a part and a complete segment,
/// then the headers the edge passes on, the MPD and uploads.
pub async fn crowds(kind: Kind) {
    let Some((server, edge, _encoder)) = live_edge(kind, 60, |_| {}).await else {
        return;
    };
    let mut events = server.store.subscribe();
    growing_segment(&server, &edge, &mut events).await;
    blocking_playlist(&server, &edge).await;
    let path = part(&server, &edge, &mut events).await;
    let route = complete_segment(&server, &edge, &path).await;
    headers(&server, &edge, &route).await;
    mpd_names_the_edge(&server, &edge).await;
    uploads_are_refused(&edge).await;
}

/// A growing segment, asked for as soon as its upload starts (as LL-DASH viewers do).
async fn growing_segment(server: &TestServer, edge: &Edge, events: &mut broadcast::Receiver<StoreEvent>) {
    let path = next_upload(events, "live/chunk-stream0-").await;
    let entry = server.store.get(&path).expect("the upload that just started");
    let route = format!("/ldash/download/{path}");
    let object = Object {
        upload: Some(entry.clone()),
        ..Object::new("growing segment", &route)
    };
    let (direct, viewers, holder) = crowd(server, edge, &object).await;
    assert_eq!(
        viewers[holder].digest, direct.digest,
        "the edge's bytes of {route} are the origin's"
    );
    assert_eq!(entry.state(), EntryState::Complete, "{route} was uploaded whole");
    let total = entry.len();
    // The viewer whose request went to the origin streams it on every edge; with Varnish, every
    // viewer it coalesced does.
    for (i, v) in viewers.iter().enumerate() {
        if i != holder && !edge.kind.streams_to_every_viewer() {
            continue;
        }
        match v.origin_at_first_bytes {
            Some((EntryState::Growing, uploaded)) if uploaded < total => {}
            other => panic!(
                "viewer {i} ({}) got its first bytes of {route} only when the origin's upload stood at {other:?} \
                 of {total} bytes: the edge did not stream the growing segment to it",
                v.cache
            ),
        }
    }
    report(edge, "growing segment", &direct, &viewers, holder);
    let uploaded: Vec<u64> = viewers
        .iter()
        .filter_map(|v| v.origin_at_first_bytes.map(|(_, n)| n))
        .collect();
    println!(
        "EDGE {} growing segment: the viewers' first bytes came while the upload stood at {}..{} of {total} bytes",
        edge.kind.name(),
        uploaded.iter().min().copied().unwrap_or(0),
        uploaded.iter().max().copied().unwrap_or(0),
    );
}

/// An LL-HLS blocking reload for the next part of the second video rendition.
async fn blocking_playlist(server: &TestServer, edge: &Edge) {
    let playlist = server
        .client(Proto::H2c)
        .get(server.url(Proto::H2c, "/ldash/download/live/stream.1.m3u8"))
        .fetch()
        .await
        .text()
        .await
        .expect("playlist text");
    let (msn, part) = next_part(&playlist);
    let path = "/ldash/download/live/stream.1.m3u8";
    let route = format!("{path}?_HLS_msn={msn}&_HLS_part={part}");
    let object = Object {
        path,
        ..Object::new("blocking playlist", &route)
    };
    let (direct, viewers, holder) = crowd(server, edge, &object).await;
    report(edge, &format!("blocking playlist {route}"), &direct, &viewers, holder);
}

/// An LL-HLS part (a byte range) of a segment that has just started, held by the origin until its
/// bytes exist. Returns the segment's path.
async fn part(server: &TestServer, edge: &Edge, events: &mut broadcast::Receiver<StoreEvent>) -> String {
    let path = next_upload(events, "live/chunk-stream1-").await;
    let route = format!("/ldash/download/{path}");
    let object = Object {
        range: Some("bytes=0-999"),
        status: 206,
        ..Object::new("part", &route)
    };
    let (direct, viewers, holder) = crowd(server, edge, &object).await;
    assert_eq!(
        viewers[holder].digest, direct.digest,
        "the edge's part of {route} is the origin's"
    );
    assert!(
        viewers.iter().all(|v| v.len == 1000),
        "every viewer got 1000 bytes of the part"
    );
    report(edge, &format!("part bytes=0-999 of {path}"), &direct, &viewers, holder);
    path
}

/// A complete segment nobody asked for yet: the audio of the segment before `path`. Returns its
/// route.
async fn complete_segment(server: &TestServer, edge: &Edge, path: &str) -> String {
    let number: u32 = path
        .trim_end_matches(".m4s")
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("segment number");
    let route = format!("/ldash/download/live/chunk-stream2-{:05}.m4s", number - 1);
    let (direct, viewers, holder) = crowd(server, edge, &Object::new("complete segment", &route)).await;
    assert_eq!(
        viewers[holder].digest, direct.digest,
        "the edge's bytes of {route} are the origin's"
    );
    report(edge, "complete segment", &direct, &viewers, holder);
    route
}

/// The origin's CORS headers once each, Cache-Control as the origin said, and Age where the edge
/// adds it (hls.js needs it for its CDN tune-in).
async fn headers(server: &TestServer, edge: &Edge, cached: &str) {
    let response = server.client(Proto::H1).get(edge.url(cached)).fetch().await;
    let headers = response.headers();
    assert_eq!(headers.get_all("access-control-allow-origin").iter().count(), 1);
    assert_eq!(headers.get_all("access-control-expose-headers").iter().count(), 1);
    assert_eq!(headers["cache-control"], "public, max-age=300");
    assert_eq!(headers["x-edge-cache"], "HIT");
    assert_eq!(
        headers.contains_key("age"),
        edge.kind.adds_age(),
        "whether the edge says how old its copy is"
    );
}

/// The MPD is passed through (not cached), and its clock is the edge's: with the viewer's Host
/// forwarded, ldash names the edge; without, it writes a relative URL.
async fn mpd_names_the_edge(server: &TestServer, edge: &Edge) {
    let mpd = server
        .client(Proto::H1)
        .get(edge.url("/ldash/download/live/stream.mpd"))
        .fetch()
        .await;
    assert_eq!(
        mpd.headers().get("x-edge-cache").and_then(|v| v.to_str().ok()),
        edge.kind.mpd_cache_status(),
        "MPDs are not cached"
    );
    let mpd = mpd.text().await.expect("MPD text");
    // Both edges forward the viewer's Host, so ldash writes the edge's own clock URL.
    let clock = edge.url("/ldash/time");
    assert!(
        mpd.contains(&format!("value=\"{clock}\"")),
        "the MPD's clock is the edge's ({clock}): {mpd}"
    );
}

/// Uploads are refused at the edge and never reach the origin; other methods are refused too, by
/// the edge or by the origin.
async fn uploads_are_refused(edge: &Edge) {
    let since = access_log().borrow().len();
    for (request, expected) in [
        (
            "PUT /ldash/upload/live/x.m4s HTTP/1.1\r\nHost: e\r\nContent-Length: 1\r\n\r\nx",
            403,
        ),
        (
            "POST /ldash/upload/live/x.m4s HTTP/1.1\r\nHost: e\r\nContent-Length: 1\r\n\r\nx",
            403,
        ),
        ("DELETE /ldash/upload/live/x.m4s HTTP/1.1\r\nHost: e\r\n\r\n", 403),
        ("DELETE /ldash/download/live/x.m4s HTTP/1.1\r\nHost: e\r\n\r\n", 405),
    ] {
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            raw_exchange(edge.addr(), request.as_bytes(), "\r\n\r\n"),
        )
        .await
        .expect("the edge answers within 10 s")
        .expect("a raw exchange with the edge");
        assert_eq!(raw_status(&answer), expected, "the edge refuses {request:?}: {answer}");
    }
    let passed_on: &[&str] = if edge.kind.refuses_other_methods() {
        &[]
    } else {
        &["/ldash/download/live/x.m4s"]
    };
    if let Some(last) = passed_on.last() {
        // Logged when ldash has sent its answer, possibly after the edge passed it on.
        origin_requests_for(last, since, 1).await;
    }
    let log = access_log().borrow();
    let reached: Vec<&str> = log[since..]
        .iter()
        .filter(|a| a.path.ends_with("/live/x.m4s"))
        .map(|a| a.path.as_str())
        .collect();
    assert_eq!(
        reached, passed_on,
        "uploads through the edge must not reach the origin (and only what the edge passes on may)"
    );
}

/// An upload aborted while a viewer follows it through the edge: the viewer's response does not
/// end cleanly, and the edge keeps nothing of it.
pub async fn aborted_upload(kind: Kind) {
    let Some(program) = kind.program() else {
        return;
    };
    access_log();
    let server = TestServer::start().await;
    let edge = Edge::start(kind, &program, server.http).await;
    let route = "/ldash/download/cut/chunk-stream0-00001.m4s";
    let since = access_log().borrow().len();
    let upload = server
        .feed(Proto::H1, "cut/chunk-stream0-00001.m4s", "first chunk")
        .await;
    let mut viewer = server.client(Proto::H1).get(edge.url(route)).fetch().await;
    assert_eq!(viewer.status(), 200);
    if !kind.streams_to_every_viewer() {
        // nginx passes a chunk on only once the next one starts.
        upload.send("second").await;
    }
    let first = tokio::time::timeout(Duration::from_secs(10), next_data(&mut viewer))
        .await
        .expect("the first chunk comes through the edge while the upload is open")
        .expect("first chunk")
        .unwrap_or_default();
    if kind.streams_to_every_viewer() {
        assert_eq!(&first[..], b"first chunk");
    } else {
        assert!(first.starts_with(b"first chunk"), "the first chunk: {first:?}");
    }
    upload.cut().await;
    let rest = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match next_data(&mut viewer).await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the viewer's response ends within 20 s");
    assert!(
        rest.is_err(),
        "an aborted upload must not end cleanly at the edge: {rest:?}"
    );
    let after = server.client(Proto::H1).get(edge.url(route)).fetch().await;
    assert_eq!(
        after.status(),
        404,
        "the edge must not keep the aborted bytes: {}",
        edge.access_log()
    );
    // The second request is logged when ldash has sent its answer, possibly after the edge did.
    let origin = origin_requests_for(route, since, 2).await;
    assert_eq!(origin, 2, "the request after the abort went to the origin again");
}

/// The play page through the edge, its only viewer, against the origin directly: LL-HLS and
/// LL-DASH each play (the libraries built into the binary, through the edge), and the edge served
/// the segments.
pub async fn play_through(kind: Kind) {
    let Some(driver) = browser_driver() else {
        return;
    };
    // No player folder: the libraries built into the binary, through the edge.
    let Some((server, edge, _encoder)) = live_edge(kind, 150, |c| c.player_dir = c.root.join("no-player-dir")).await
    else {
        return;
    };
    for format in ["m3u8", "mpd"] {
        let route = format!("/ldash/play/live/stream.{format}");
        let player = if format == "mpd" { "LL-DASH" } else { "LL-HLS" };
        let mut figures = Vec::new();
        for (how, page) in [
            ("direct", server.url(Proto::H1, &route)),
            ("through the edge", edge.url(&route)),
        ] {
            let case = format!("{} edge {player} {how}", kind.name());
            // No time to settle before the measurement: every sample counts.
            let run = drive(&driver, &page, (0, 15), &screenshot(&case), &[], &case).await;
            // It plays: the clock moved on in the last 5 s. Not a smoothness bound: through the
            // nginx edge, hls.js stalls now and then (a part or playlist held up at the edge),
            // which the test prints and BENCHMARKS.md reports.
            let last = assert_plays(&run, 2.0, &case);
            figures.push((last.latency.unwrap_or(f64::NAN), last.stalls));
        }
        let [(direct, direct_stalls), (through, edge_stalls)] = figures[..] else {
            unreachable!("two runs");
        };
        println!(
            "EDGE {} {player} play page, HTTP/1.1: latency {direct:.3} s from the origin ({direct_stalls} stalls), \
             {through:.3} s through the edge ({edge_stalls} stalls): the edge adds {:.3} s",
            kind.name(),
            through - direct
        );
    }
    let log = edge.access_log();
    let segments = log.lines().filter(|l| l.contains(".m4s")).count();
    assert!(segments > 10, "the page fetched its segments through the edge:\n{log}");
}
