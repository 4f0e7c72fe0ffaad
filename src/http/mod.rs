//! Routes over `http::Request` / `http::Response`, shared by every transport: the paths, the header
//! policy, and the mapping of errors to statuses. Nothing here knows about sockets, TLS or QUIC; the
//! transports put a [`ConnInfo`] into each request's extensions and serve whatever [`App::handle`]
//! returns. The metrics listener's one route, `GET /metrics`, is [`App::handle_metrics`]: it is not
//! part of the public routes, so the public ports answer it with 404 like any unknown path.

pub mod body;
pub mod budget;
mod download;
pub mod error;
pub mod headers;
pub mod path;
mod play;
pub mod playlist;
mod release;
mod scrape;
pub mod timeview;
mod upload;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

pub use body::{BodyError, ResponseBody};
pub use error::HttpError;
pub use play::{describe_libraries, LibrarySource};

use crate::live::Live;
use crate::metrics::Metrics;
use crate::settings::RouteSettings;
use crate::store::Store;

/// The route prefix of every endpoint.
pub const PREFIX: &str = "/ldash/";

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP without TLS (HTTP/1.1, or HTTP/2 with prior knowledge).
    Cleartext,
    /// TCP with TLS (HTTP/1.1 or HTTP/2 by ALPN).
    Tls,
    /// QUIC (HTTP/3).
    Quic,
}

/// What the transport knows about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener.
    pub transport: Transport,
    /// Where the request stands in the server's arrival order: see [`App::connection_arrived`].
    pub arrival: u64,
}

impl Default for ConnInfo {
    /// An unknown peer, which may not upload without a token.
    fn default() -> Self {
        ConnInfo {
            peer: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            transport: Transport::Cleartext,
            arrival: 0,
        }
    }
}

/// Requests per connection that the arrival order can tell apart.
const REQUESTS_PER_CONNECTION: u64 = 1 << 32;

impl ConnInfo {
    /// The info of the `n`-th request on a connection.
    pub fn request(&self, n: u64) -> ConnInfo {
        ConnInfo {
            arrival: self.arrival + n.min(REQUESTS_PER_CONNECTION - 1),
            ..*self
        }
    }
}

/// A request held waiting for the live edge: its slot and its count, while it lives.
#[derive(Debug)]
struct Held(
    #[allow(dead_code)] budget::Slot,
    #[allow(dead_code)] crate::metrics::GaugeGuard,
);

/// The state every route needs.
#[derive(Debug)]
pub struct App {
    /// The segment store.
    pub store: Store,
    /// The live stream index over the store.
    pub live: Live,
    /// The packaged channels (CMAF ingest).
    pub packager: crate::packager::Packager,
    /// The routes' settings.
    pub settings: RouteSettings,
    /// Alt-Svc advertised on the TLS TCP listener when HTTP/3 is on.
    pub alt_svc: Option<HeaderValue>,
    /// Connections accepted so far, for the arrival order.
    connections: std::sync::atomic::AtomicU64,
    /// The server's metrics, served on the metrics listener.
    pub metrics: std::sync::Arc<Metrics>,
    /// The upload slots each uploader holds (`--max-uploads-per-peer`).
    pub uploads: budget::PeerBudget,
    /// The requests held waiting for the live edge, per client and in all (`--max-held-requests`).
    pub held: budget::PeerBudget,
    /// The generated playlists' gzip forms, shared by the requests that get the same text.
    gzipped: playlist::GzipCache,
}

impl App {
    /// The routes over `store` and `live`, with their settings and the Alt-Svc value to advertise.
    pub fn new(
        store: Store,
        live: Live,
        packager: crate::packager::Packager,
        settings: RouteSettings,
        alt_svc: Option<HeaderValue>,
    ) -> App {
        App {
            metrics: std::sync::Arc::new(Metrics::new(&store)),
            uploads: budget::PeerBudget::uploads(settings.max_uploads_per_peer, store.limits().max_uploads),
            held: budget::PeerBudget::held(settings.max_held_requests_per_peer, settings.max_held_requests),
            store,
            live,
            packager,
            settings,
            alt_svc,
            connections: Default::default(),
            gzipped: Default::default(),
        }
    }

    /// Called by a transport's accept loop, in accept order: the arrival base of the new connection.
    /// Requests on it are numbered from there ([`ConnInfo::request`]), so uploads of one path on
    /// different connections are ordered as the client sent them.
    pub fn connection_arrived(&self) -> u64 {
        (self.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1) * REQUESTS_PER_CONNECTION
    }

    /// A held request's slot (`--max-held-requests`, per client and in all), given back when
    /// dropped; refused with 503 and the reason.
    fn hold(&self, conn: &ConnInfo) -> Result<Held, HttpError> {
        let slot = self.held.take(budget::Client::of(conn)).map_err(|over| {
            self.metrics.held_refused();
            tracing::debug!(peer = %conn.peer, %over, "held request refused");
            HttpError::OverBudget(over)
        })?;
        Ok(Held(slot, self.metrics.held()))
    }

    /// Answers one request. Never fails: errors become a status with a plain-text reason.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let conn = req.extensions().get::<ConnInfo>().copied().unwrap_or_default();
        let method = req.method().clone();
        let version = req.version();
        // With the query: a blocking playlist reload is only readable with its _HLS_ directives.
        let log_path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .chars()
            .take(512)
            .collect::<String>();
        let priority = headers::priority(req.uri().path());
        let mut response = self.route(req, &conn).await.unwrap_or_else(HttpError::into_response);
        let headers = response.headers_mut();
        headers::add_cors(headers);
        if let Some(priority) = priority {
            headers.insert(http::HeaderName::from_static("priority"), priority);
        }
        if !headers.contains_key(header::DATE) {
            if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
                headers.insert(header::DATE, date);
            }
        }
        if conn.transport == Transport::Tls {
            if let Some(alt_svc) = &self.alt_svc {
                headers.insert(header::ALT_SVC, alt_svc.clone());
            }
        }
        self.metrics.response(response.status());
        let status = response.status().as_u16();
        let meter = self.metrics.body_meter(version);
        response.map(|body| {
            body.with_meter(meter).with_log(body::AccessLog {
                method,
                path: log_path,
                status,
                version,
                peer: conn.peer,
                started,
                bytes: 0,
                complete: false,
                failed: None,
            })
        })
    }

    /// Answers one request on the metrics listener: `GET|HEAD /metrics`, 404 for any other path.
    pub fn handle_metrics<B>(&self, req: &Request<B>) -> Response<ResponseBody> {
        scrape::metrics(self, req).unwrap_or_else(HttpError::into_response)
    }

    async fn route<B>(&self, req: Request<B>, conn: &ConnInfo) -> Result<Response<ResponseBody>, HttpError>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let full = req.uri().path().to_owned();
        let Some(rest) = full.strip_prefix(PREFIX) else {
            return Err(HttpError::NotFound);
        };
        if req.method() == Method::OPTIONS {
            return Ok(preflight(&req));
        }
        let (route, tail) = rest.split_once('/').unwrap_or((rest, ""));
        match route {
            "upload" => {
                let path = path::decode(tail)?;
                match *req.method() {
                    Method::PUT | Method::POST => upload::put(self, &path, req, conn).await,
                    Method::DELETE => upload::delete(self, &path, &req, conn).await,
                    _ => Err(HttpError::MethodNotAllowed("PUT, POST, DELETE, OPTIONS")),
                }
            }
            "download" => {
                let path = path::decode(tail)?;
                match *req.method() {
                    // An `.m3u8` nobody uploaded is an LL-HLS playlist made from the stream's MPD.
                    Method::GET | Method::HEAD if playlist::is_generated(self, &path) => {
                        playlist::get(self, &path, &req, conn).await
                    }
                    Method::GET | Method::HEAD => download::get(self, &path, &req, conn).await,
                    _ => Err(HttpError::MethodNotAllowed("GET, HEAD, OPTIONS")),
                }
            }
            "" | "streams" if tail.is_empty() => match *req.method() {
                Method::GET | Method::HEAD => Ok(play::streams(self, route == "streams")),
                _ => Err(HttpError::MethodNotAllowed("GET, HEAD, OPTIONS")),
            },
            "play" => match *req.method() {
                Method::GET | Method::HEAD => play::page(self, &path::decode(tail)?),
                _ => Err(HttpError::MethodNotAllowed("GET, HEAD, OPTIONS")),
            },
            "player" => match *req.method() {
                Method::GET | Method::HEAD => play::asset(self, tail, req.headers()).await,
                _ => Err(HttpError::MethodNotAllowed("GET, HEAD, OPTIONS")),
            },
            "time" if tail.is_empty() => match *req.method() {
                Method::GET | Method::HEAD => Ok(clock(req.method() == Method::HEAD)),
                _ => Err(HttpError::MethodNotAllowed("GET, HEAD, OPTIONS")),
            },
            "ready" if tail.is_empty() => match *req.method() {
                Method::GET | Method::HEAD => Ok(ready(self.live.ready(), req.method() == Method::HEAD)),
                _ => Err(HttpError::MethodNotAllowed("GET, HEAD, OPTIONS")),
            },
            _ => Err(HttpError::NotFound),
        }
    }
}

fn preflight<B>(req: &Request<B>) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    headers::add_preflight(
        response.headers_mut(),
        req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS),
    );
    response
}

/// Readiness for an edge's health probe: 200 "ready", or 503 with what the origin waits for (a
/// restarted origin is behind its encoders until their next upload reaches it).
fn ready(state: Result<(), String>, head: bool) -> Response<ResponseBody> {
    let (status, text) = match state {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    };
    plain_no_store(status, text, head)
}

/// The server clock for DASH UTCTiming (urn:mpeg:dash:utc:http-iso:2014): ISO-8601 UTC, milliseconds.
fn clock(head: bool) -> Response<ResponseBody> {
    let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    plain_no_store(StatusCode::OK, now, head)
}

/// A short plain-text answer nobody may keep.
fn plain_no_store(status: StatusCode, text: String, head: bool) -> Response<ResponseBody> {
    let len = text.len();
    let body = if head {
        ResponseBody::empty()
    } else {
        ResponseBody::full(text)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}
