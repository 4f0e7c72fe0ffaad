//! HTTP/1.1 written by hand over a plain TCP connection: for requests no client library sends (path
//! attacks, ffmpeg's exact ingest), and for reading exactly what a server answered.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `request` over a new TCP connection to `addr` and returns everything the server sends
/// back until it closes or `until` appears.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], until: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&got).contains(until) {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// The response in `bytes` once its head and its `Content-Length` body are all there (a body
/// without one counts as empty); None while more is to come.
pub fn complete_response(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (body.len() >= length).then(|| text.into_owned())
}

/// The status code of a raw HTTP/1.1 response, if it is one.
pub fn status_of(response: &str) -> Option<u16> {
    response.split_whitespace().nth(1)?.parse().ok()
}

/// The status code of a raw HTTP/1.1 response; fails the caller when it is not one.
pub fn raw_status(response: &str) -> u16 {
    status_of(response).unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}
