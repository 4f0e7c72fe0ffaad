//! One request API over every HTTP version ldash speaks, so a behaviour is written once and run
//! against HTTP/1.1, HTTP/2 and HTTP/3: reqwest for the TCP flavours, [`H3Client`] (h3 + h3-quinn)
//! for HTTP/3. Request bodies can be fed chunk by chunk while the request runs, and response bodies
//! are read as they arrive, which is what a growing segment needs on both sides.

use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::sync::mpsc;

pub use crate::h3client::H3Client;
use crate::Proto;

/// One item of a fed upload: a chunk to append, or `Err(())` to cut the upload midway. Dropping
/// the sender ends the upload cleanly.
pub type Chunk = Result<Bytes, ()>;

/// The sender and receiver of a fed upload ([`Request::stream`]).
pub fn chunk_channel() -> (mpsc::Sender<Chunk>, mpsc::Receiver<Chunk>) {
    mpsc::channel(16)
}

/// A reqwest request body fed chunk by chunk: send `Ok(bytes)` to append, `Err(())` to make the
/// upload fail midway, drop the sender to end it cleanly.
pub fn streamed_body() -> (mpsc::Sender<Chunk>, reqwest::Body) {
    let (tx, rx) = chunk_channel();
    (tx, reqwest::Body::wrap_stream(stream_of(rx)))
}

fn stream_of(rx: mpsc::Receiver<Chunk>) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|item| (item.map_err(|()| std::io::Error::other("upload cut on purpose")), rx))
    })
}

/// A reqwest client that speaks exactly `proto` (a TCP flavour), with `tls` (ring, trusting the
/// server; its ALPN says HTTP/1.1 or HTTP/2 over TLS).
pub fn reqwest_client(proto: Proto, tls: rustls::ClientConfig) -> Result<reqwest::Client, String> {
    // ldash closes a kept-alive connection with no request for --http-idle-timeout (60 s) or
    // --https-idle-timeout (30 s), which tests shorten: a client that picks such a connection from
    // its pool just as it closes gets an error for its request (as hyper's IncompleteMessage did in
    // one CI run). Browsers retry that; these clients stop reusing connections idle for 5 s.
    let builder = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(5))
        .use_preconfigured_tls(tls);
    let builder = match proto {
        Proto::H1 | Proto::H1Tls => builder.http1_only(),
        Proto::H2c => builder.http2_prior_knowledge(),
        Proto::H2Tls => builder,
        Proto::H3 => return Err("reqwest does not speak HTTP/3 here: use Client::H3".into()),
    };
    builder.build().map_err(|e| e.to_string())
}

/// The next non-empty chunk of a reqwest response body (HTTP/2 may end a stream with an empty DATA
/// frame).
pub async fn next_data(response: &mut reqwest::Response) -> reqwest::Result<Option<Bytes>> {
    loop {
        match response.chunk().await? {
            Some(chunk) if chunk.is_empty() => continue,
            other => return Ok(other),
        }
    }
}

/// A request body: nothing, whole bytes, or chunks fed while the request runs.
pub enum Body {
    Empty,
    Bytes(Bytes),
    Stream(mpsc::Receiver<Chunk>),
}

/// A client bound to one protocol and one server (one connection for HTTP/3).
#[derive(Clone)]
pub enum Client {
    Tcp { client: reqwest::Client, base: String },
    H3(H3Client),
}

impl Client {
    /// A request for `route` (e.g. "/ldash/download/a.m4s").
    pub fn request(&self, method: Method, route: &str) -> Request {
        Request {
            client: self.clone(),
            method,
            route: route.to_owned(),
            headers: HeaderMap::new(),
            body: Body::Empty,
        }
    }
    pub fn get(&self, route: &str) -> Request {
        self.request(Method::GET, route)
    }
    pub fn put(&self, route: &str) -> Request {
        self.request(Method::PUT, route)
    }

    /// A test's GET of `route`: its status and whole body as text (no response fails the caller).
    pub async fn get_text(&self, route: &str) -> (u16, String) {
        let response = self.get(route).fetch().await;
        (response.status, response.text().await)
    }

    /// A test's GET of `route`, which must answer 200: its whole body.
    pub async fn get_ok(&self, route: &str) -> Bytes {
        let response = self.get(route).fetch().await;
        assert_eq!(response.status, 200, "GET {route}");
        response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("GET {route}: the body broke: {e}"))
    }
}

/// A request being built.
pub struct Request {
    client: Client,
    method: Method,
    route: String,
    headers: HeaderMap,
    body: Body,
}

impl Request {
    /// Adds a header (a test's own literal: an invalid one panics).
    pub fn header(mut self, name: impl TryInto<HeaderName>, value: impl TryInto<HeaderValue>) -> Self {
        let (Ok(name), Ok(value)) = (name.try_into(), value.try_into()) else {
            panic!("invalid header in a request of the kit's caller");
        };
        self.headers.append(name, value);
        self
    }
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Body::Bytes(body.into());
        self
    }
    /// A body fed from `chunks` ([`chunk_channel`]).
    pub fn stream(mut self, chunks: mpsc::Receiver<Chunk>) -> Self {
        self.body = Body::Stream(chunks);
        self
    }

    /// Sends the request and returns once the response headers have arrived; a request that gets
    /// no response fails the caller (a test), naming the request.
    pub async fn fetch(self) -> Response {
        let what = format!("{} {}", self.method, self.route);
        self.send().await.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Sends the request and returns once the response headers have arrived.
    pub async fn send(self) -> Result<Response, String> {
        match self.client {
            Client::Tcp { client, base } => {
                let mut builder = client
                    .request(self.method, format!("{base}{}", self.route))
                    .headers(self.headers);
                builder = match self.body {
                    Body::Empty => builder,
                    Body::Bytes(bytes) => builder.body(bytes),
                    Body::Stream(rx) => builder.body(reqwest::Body::wrap_stream(stream_of(rx))),
                };
                let response = builder.send().await.map_err(|e| format!("{e:?}"))?;
                Ok(Response {
                    status: response.status().as_u16(),
                    version: response.version(),
                    headers: response.headers().clone(),
                    body: ResponseBody::Tcp(response),
                })
            }
            Client::H3(h3) => h3.send(self.method, &self.route, self.headers, self.body).await,
        }
    }
}

/// A response whose body is read as it arrives.
pub struct Response {
    pub status: u16,
    /// The HTTP version the response came over.
    pub version: http::Version,
    pub headers: HeaderMap,
    pub(crate) body: ResponseBody,
}

// One response per request: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ResponseBody {
    Tcp(reqwest::Response),
    H3 {
        recv: h3::client::RequestStream<h3_quinn::RecvStream, Bytes>,
        /// Feeds a request body while the response arrives.
        _sending: Option<tokio::task::JoinHandle<()>>,
        /// Keeps the connection open while the body is read.
        _client: H3Client,
    },
}

impl Response {
    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The next non-empty chunk of the body; None at a clean end, Err when the stream broke.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            let next = match &mut self.body {
                ResponseBody::Tcp(response) => response.chunk().await.map_err(|e| format!("{e:?}"))?,
                ResponseBody::H3 { recv, .. } => match recv.recv_data().await {
                    Ok(Some(mut data)) => Some(data.copy_to_bytes(data.remaining())),
                    Ok(None) => None,
                    Err(err) => return Err(format!("{err:?}")),
                },
            };
            match next {
                Some(chunk) if chunk.is_empty() => continue,
                other => return Ok(other),
            }
        }
    }

    /// The next chunk of a body that must go on; fails the caller when it ended or broke.
    pub async fn next_bytes(&mut self) -> Bytes {
        match self.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => panic!("the body ended where a chunk was expected"),
            Err(err) => panic!("the body broke where a chunk was expected: {err}"),
        }
    }

    /// The whole body.
    pub async fn bytes(mut self) -> Result<Bytes, String> {
        let mut all = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all.into())
    }

    /// The whole body as text; a body that breaks fails the caller.
    pub async fn text(self) -> String {
        let bytes = self.bytes().await.unwrap_or_else(|e| panic!("the body broke: {e}"));
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
