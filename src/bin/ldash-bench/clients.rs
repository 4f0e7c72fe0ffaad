//! What the benchmark adds to the kit's clients (testkit::client, the same as the tests'): a relay
//! reader's HTTP/1.1 at its leanest, the kept-alive connection ffmpeg uploads its manifest on, and
//! streamed uploads. Every reader gets a connection of its own, as players do.

use std::net::SocketAddr;

use bytes::Bytes;
use testkit::client::{Chunk, Client, Response};
use tokio::sync::mpsc;

/// A streamed PUT of `route`: chunks sent on the sender go out as they come; dropping it ends the
/// upload, whose status the task returns.
pub fn upload_stream(
    client: &Client,
    route: &str,
) -> (mpsc::Sender<Chunk>, tokio::task::JoinHandle<Result<u16, String>>) {
    // Room for a backlog: a sender that waits would count the wait as relay latency.
    let (tx, rx) = mpsc::channel(64);
    let request = client.put(route).stream(rx);
    (tx, tokio::spawn(async move { Ok(request.send().await?.status) }))
}

/// A streaming GET's body: the kit's response (boxed: it is large), or the lean raw reader's.
pub enum Download {
    Kit(Box<Response>),
    Raw(RawBody),
}

impl Download {
    /// The next piece of the body; None at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            Download::Kit(r) => r.chunk().await,
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
