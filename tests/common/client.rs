//! One request API over every HTTP version the server speaks, so a behaviour is written once and run
//! against HTTP/1.1, HTTP/2 and HTTP/3: reqwest for the TCP flavours, h3 + h3-quinn for HTTP/3.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::sync::mpsc;

use super::{Proto, TestServer};

/// A request body: nothing, whole bytes, or chunks fed by the test (`Err(())` cuts the upload).
pub enum Body {
    Empty,
    Bytes(Bytes),
    Stream(mpsc::Receiver<Result<Bytes, ()>>),
}

/// A client bound to one protocol and one server.
#[derive(Clone)]
pub enum Client {
    Tcp { client: reqwest::Client, base: String },
    H3(H3Client),
}

impl TestServer {
    /// A client that speaks exactly `proto` to this server (one connection for HTTP/3).
    pub async fn client_for(&self, proto: Proto) -> Client {
        match proto {
            Proto::H3 => {
                Client::H3(H3Client::connect(self.quic.expect("HTTP/3 is on"), self.tls_client(&[b"h3"])).await)
            }
            tcp => Client::Tcp {
                client: self.client(tcp),
                base: self.url(tcp, ""),
            },
        }
    }
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
    pub fn header(mut self, name: impl TryInto<HeaderName>, value: impl TryInto<HeaderValue>) -> Self {
        let (Ok(name), Ok(value)) = (name.try_into(), value.try_into()) else {
            panic!("invalid header in test");
        };
        self.headers.append(name, value);
        self
    }
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Body::Bytes(body.into());
        self
    }
    pub fn stream(mut self, chunks: mpsc::Receiver<Result<Bytes, ()>>) -> Self {
        self.body = Body::Stream(chunks);
        self
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

fn stream_of(rx: mpsc::Receiver<Result<Bytes, ()>>) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|item| (item.map_err(|()| std::io::Error::other("upload cut by the test")), rx))
    })
}

/// A response whose body is read as it arrives.
pub struct Response {
    pub status: u16,
    /// The HTTP version the response came over.
    pub version: http::Version,
    pub headers: HeaderMap,
    body: ResponseBody,
}

// One response per request in tests: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum ResponseBody {
    Tcp(reqwest::Response),
    H3 {
        recv: h3::client::RequestStream<h3_quinn::RecvStream, Bytes>,
        _sending: tokio::task::JoinHandle<()>,
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

    /// The whole body.
    pub async fn bytes(mut self) -> Result<Bytes, String> {
        let mut all = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all.into())
    }

    /// The whole body as text.
    pub async fn text(self) -> String {
        let bytes = self.bytes().await.expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// An HTTP/3 client holding one QUIC connection.
#[derive(Clone)]
pub struct H3Client {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    authority: String,
    _endpoint: quinn::Endpoint,
}

impl H3Client {
    /// Connects to `addr`, trusting the server's certificate through `tls` (ALPN h3).
    pub async fn connect(addr: SocketAddr, mut tls: rustls::ClientConfig) -> H3Client {
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC client config");
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_uni_streams(100u32.into());
        config.transport_config(Arc::new(transport));
        let bind: SocketAddr = if addr.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" }
            .parse()
            .expect("addr");
        let mut endpoint = quinn::Endpoint::client(bind).expect("client endpoint");
        endpoint.set_default_client_config(config);
        let quic = endpoint
            .connect(addr, "localhost")
            .expect("connect")
            .await
            .expect("QUIC handshake");
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic))
            .await
            .expect("HTTP/3 setup");
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        H3Client {
            send,
            authority: addr.to_string(),
            _endpoint: endpoint,
        }
    }

    async fn send(&self, method: Method, route: &str, headers: HeaderMap, body: Body) -> Result<Response, String> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("https://{}{}", self.authority, route))
            .body(())
            .map_err(|e| e.to_string())?;
        *request.headers_mut() = headers;
        let mut sender = self.send.clone();
        let stream = sender.send_request(request).await.map_err(|e| format!("{e:?}"))?;
        let (mut send, mut recv) = stream.split();
        let sending = tokio::spawn(async move {
            match body {
                Body::Empty => {}
                Body::Bytes(bytes) => {
                    if send.send_data(bytes).await.is_err() {
                        return;
                    }
                }
                Body::Stream(mut rx) => loop {
                    match rx.recv().await {
                        Some(Ok(bytes)) => {
                            if send.send_data(bytes).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(())) => {
                            send.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
                            return;
                        }
                        None => break,
                    }
                },
            }
            let _ = send.finish().await;
        });
        let response = recv.recv_response().await.map_err(|e| format!("{e:?}"))?;
        Ok(Response {
            status: response.status().as_u16(),
            version: response.version(),
            headers: response.headers().clone(),
            body: ResponseBody::H3 {
                recv,
                _sending: sending,
                _client: self.clone(),
            },
        })
    }
}
