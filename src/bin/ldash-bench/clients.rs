//! The clients the benchmark drives: reqwest (hyper) for HTTP/1.1 and HTTP/2, and a small HTTP/3
//! client on quinn + h3 (no established HTTP/3 load generator streams a growing body). Every reader
//! gets a connection of its own, as players do.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

/// The protocols measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1, cleartext.
    H1,
    /// HTTP/2 with prior knowledge, cleartext.
    H2c,
    /// HTTP/2 over TLS (ALPN h2).
    H2Tls,
    /// HTTP/3 over QUIC.
    H3,
}

impl Proto {
    pub fn label(self) -> &'static str {
        match self {
            Proto::H1 => "HTTP/1.1",
            Proto::H2c => "HTTP/2 (h2c)",
            Proto::H2Tls => "HTTP/2 (TLS)",
            Proto::H3 => "HTTP/3",
        }
    }
}

/// A TLS client config trusting the certificate in `cert_pem`, with ALPN `alpn`.
pub fn tls(cert_pem: &Path, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if cert_pem.exists() {
        for cert in CertificateDer::pem_file_iter(cert_pem).map_err(|e| e.to_string())? {
            roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(config)
}

/// A reqwest client that opens one connection and speaks `proto` (H1, H2c or H2Tls) on it.
pub fn reqwest_client(proto: Proto, cert_pem: &Path) -> Result<reqwest::Client, String> {
    let alpn: &[&[u8]] = match proto {
        Proto::H2Tls => &[b"h2"],
        _ => &[b"http/1.1"],
    };
    let builder = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .use_preconfigured_tls(tls(cert_pem, alpn)?);
    let builder = match proto {
        Proto::H1 => builder.http1_only(),
        Proto::H2c | Proto::H2Tls => builder.http2_prior_knowledge(),
        Proto::H3 => return Err("reqwest does not speak HTTP/3 here".into()),
    };
    builder.build().map_err(|e| e.to_string())
}

/// A streamed PUT over HTTP/1.1: chunks sent on `tx` go out as they come; dropping `tx` ends it.
pub fn put_stream(
    client: &reqwest::Client,
    url: String,
) -> (mpsc::Sender<Bytes>, tokio::task::JoinHandle<Result<u16, String>>) {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    }));
    let request = client.put(url).body(body);
    let task = tokio::spawn(async move {
        let response = request.send().await.map_err(|e| e.to_string())?;
        Ok(response.status().as_u16())
    });
    (tx, task)
}

/// One HTTP/3 connection, on a UDP socket of its own.
#[derive(Clone)]
pub struct H3 {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    authority: String,
    _endpoint: quinn::Endpoint,
}

/// A client endpoint (one UDP socket). Each connection gets its own, as each player has: one
/// endpoint shared by 100 connections serialises their packets through one task and was measured
/// to add tens of milliseconds of tail latency on the client side alone.
fn h3_endpoint(cert_pem: &Path) -> Result<quinn::Endpoint, String> {
    let tls = tls(cert_pem, &[b"h3"])?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_uni_streams(100u32.into());
    // Players' windows: a live segment or a 2 MB file never waits on flow control.
    transport.stream_receive_window((8u32 << 20).into());
    transport.receive_window((32u32 << 20).into());
    config.transport_config(Arc::new(transport));
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().map_err(|_| "address")?).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

impl H3 {
    pub async fn connect(addr: SocketAddr, cert_pem: &Path) -> Result<H3, String> {
        let endpoint = h3_endpoint(cert_pem)?;
        let quic = endpoint
            .connect(addr, "localhost")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| format!("QUIC handshake: {e}"))?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic))
            .await
            .map_err(|e| format!("HTTP/3 setup: {e:?}"))?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(H3 {
            send,
            authority: addr.to_string(),
            _endpoint: endpoint,
        })
    }

    /// Sends a GET and returns the status and the body stream once the headers arrive.
    pub async fn get(&self, route: &str) -> Result<(u16, H3Body), String> {
        let request = http::Request::get(format!("https://{}{route}", self.authority))
            .body(())
            .map_err(|e| e.to_string())?;
        let mut sender = self.send.clone();
        let mut stream = sender.send_request(request).await.map_err(|e| format!("{e:?}"))?;
        stream.finish().await.map_err(|e| format!("{e:?}"))?;
        let response = stream.recv_response().await.map_err(|e| format!("{e:?}"))?;
        Ok((response.status().as_u16(), H3Body { stream }))
    }
}

/// A response body arriving over HTTP/3.
pub struct H3Body {
    stream: h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
}

impl H3Body {
    /// The next piece of the body; None at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self.stream.recv_data().await {
            Ok(Some(mut data)) => Ok(Some(data.copy_to_bytes(data.remaining()))),
            Ok(None) => Ok(None),
            Err(err) => Err(format!("{err:?}")),
        }
    }
}

/// A streaming GET over any protocol: status, then body pieces as they arrive.
pub enum Download {
    Tcp(reqwest::Response),
    H3(Box<H3Body>),
    Raw(RawBody),
}

impl Download {
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            Download::Tcp(r) => r.chunk().await.map_err(|e| e.to_string()),
            Download::H3(b) => b.chunk().await,
            Download::Raw(b) => b.chunk().await,
        }
    }
}

/// A relay reader's HTTP/1.1 client at its leanest: one GET on a fresh socket, the chunked body
/// decoded by hand, so that the latency measured is the server's rather than a client stack's.
pub async fn raw_get(addr: SocketAddr, route: &str) -> Result<(u16, RawBody), String> {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    socket.set_nodelay(true).map_err(|e| e.to_string())?;
    socket
        .write_all(format!("GET {route} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut body = RawBody {
        socket,
        buf: bytes::BytesMut::with_capacity(256 * 1024),
        left_in_chunk: 0,
        done: false,
    };
    let head = loop {
        if let Some(end) = body.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break body.buf.split_to(end + 4);
        }
        if !body.fill().await? {
            return Err("connection closed before the response headers".into());
        }
    };
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    if !head.contains("transfer-encoding: chunked") {
        return Err("the raw reader only follows chunked (growing) bodies".into());
    }
    Ok((status, body))
}

/// One kept-alive HTTP/1.1 connection for whole-body uploads, one after the other, as ffmpeg sends
/// its manifest: ldash orders the uploads of one path by connection, then by request on it.
pub struct RawConn {
    addr: SocketAddr,
    socket: Option<tokio::net::TcpStream>,
}

impl RawConn {
    pub fn new(addr: SocketAddr) -> RawConn {
        RawConn { addr, socket: None }
    }

    /// PUTs `body` at `route`; returns the status.
    pub async fn put(&mut self, route: &str, body: &[u8]) -> Result<u16, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = match &mut self.socket {
            Some(socket) => socket,
            None => {
                let socket = tokio::net::TcpStream::connect(self.addr)
                    .await
                    .map_err(|e| e.to_string())?;
                socket.set_nodelay(true).map_err(|e| e.to_string())?;
                self.socket.insert(socket)
            }
        };
        let head = format!(
            "PUT {route} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        socket.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
        socket.write_all(body).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut piece = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    return text
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| "no status line".to_owned());
                }
            }
            let n = socket.read(&mut piece).await.map_err(|e| e.to_string())?;
            if n == 0 {
                self.socket = None;
                return Err("the upload connection closed".into());
            }
            buf.extend_from_slice(&piece[..n]);
        }
    }
}

/// The body of [`raw_get`].
pub struct RawBody {
    socket: tokio::net::TcpStream,
    buf: bytes::BytesMut,
    left_in_chunk: usize,
    done: bool,
}

impl RawBody {
    async fn fill(&mut self) -> Result<bool, String> {
        use tokio::io::AsyncReadExt;
        self.buf.reserve(64 * 1024);
        let n = self.socket.read_buf(&mut self.buf).await.map_err(|e| e.to_string())?;
        Ok(n > 0)
    }

    /// The payload bytes available now (waiting for some when none are), None at the body's end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.left_in_chunk > 0 {
                if self.buf.is_empty() && !self.fill().await? {
                    return Err("connection closed inside a chunk".into());
                }
                let take = self.left_in_chunk.min(self.buf.len());
                self.left_in_chunk -= take;
                return Ok(Some(self.buf.split_to(take).freeze()));
            }
            // A chunk header ("\r\n" ending the previous chunk first, except at the start).
            while self.buf.starts_with(b"\r\n") {
                let _ = self.buf.split_to(2);
            }
            match self.buf.windows(2).position(|w| w == b"\r\n") {
                Some(end) => {
                    let line = self.buf.split_to(end + 2);
                    let size = std::str::from_utf8(&line[..end])
                        .ok()
                        .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
                        .ok_or("bad chunk size line")?;
                    if size == 0 {
                        self.done = true;
                    }
                    self.left_in_chunk = size;
                }
                None => {
                    if !self.fill().await? {
                        return Err("connection closed between chunks".into());
                    }
                }
            }
        }
    }
}

/// A connection of one protocol to one server, for a reader that sends GETs on it.
#[derive(Clone)]
pub enum Conn {
    Tcp { client: reqwest::Client, base: String },
    H3(H3),
}

impl Conn {
    /// Opens a connection (HTTP/3) or prepares a one-connection client (TCP).
    pub async fn open(proto: Proto, tcp_base: &str, quic: Option<SocketAddr>, cert_pem: &Path) -> Result<Conn, String> {
        match proto {
            Proto::H3 => {
                let addr = quic.ok_or("HTTP/3 is not available")?;
                Ok(Conn::H3(H3::connect(addr, cert_pem).await?))
            }
            tcp => Ok(Conn::Tcp {
                client: reqwest_client(tcp, cert_pem)?,
                base: tcp_base.to_owned(),
            }),
        }
    }

    pub async fn get(&self, route: &str) -> Result<(u16, Download), String> {
        match self {
            Conn::Tcp { client, base } => {
                let r = client
                    .get(format!("{base}{route}"))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((r.status().as_u16(), Download::Tcp(r)))
            }
            Conn::H3(h3) => {
                let (status, body) = h3.get(route).await?;
                Ok((status, Download::H3(Box::new(body))))
            }
        }
    }
}
