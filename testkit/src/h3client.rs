//! A small HTTP/3 client on quinn + h3: one QUIC connection on a UDP socket of its own, many
//! requests on it, bodies streamed both ways (no established HTTP/3 client streams a growing body).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::client::{Body, Response, ResponseBody};

/// An HTTP/3 client holding one QUIC connection.
#[derive(Clone)]
pub struct H3Client {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    authority: String,
    _endpoint: quinn::Endpoint,
}

/// A client endpoint (one UDP socket). Each connection gets its own, as each player has: one
/// endpoint shared by 100 connections serialises their packets through one task and was measured
/// to add tens of milliseconds of tail latency on the client side alone.
fn endpoint(addr: SocketAddr, mut tls: rustls::ClientConfig) -> Result<quinn::Endpoint, String> {
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_uni_streams(100u32.into());
    // Players' windows: a live segment or a 2 MB file never waits on flow control.
    transport.stream_receive_window((8u32 << 20).into());
    transport.receive_window((32u32 << 20).into());
    config.transport_config(Arc::new(transport));
    let bind: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    } else {
        (std::net::Ipv4Addr::LOCALHOST, 0).into()
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| format!("client endpoint: {e}"))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

impl H3Client {
    /// Connects to `addr`, trusting the server's certificate through `tls` (its ALPN becomes h3).
    pub async fn connect(addr: SocketAddr, tls: rustls::ClientConfig) -> Result<H3Client, String> {
        let endpoint = endpoint(addr, tls)?;
        let quic = endpoint
            .connect(addr, "localhost")
            .map_err(|e| format!("connect to {addr}: {e}"))?
            .await
            .map_err(|e| format!("QUIC handshake with {addr}: {e}"))?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic))
            .await
            .map_err(|e| format!("HTTP/3 setup: {e:?}"))?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(H3Client {
            send,
            authority: addr.to_string(),
            _endpoint: endpoint,
        })
    }

    /// Sends a request and returns once the response headers have arrived; a body is fed by a task
    /// of its own meanwhile (a cut one resets the stream, as an aborted upload does).
    pub(crate) async fn send(
        &self,
        method: Method,
        route: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Response, String> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("https://{}{}", self.authority, route))
            .body(())
            .map_err(|e| e.to_string())?;
        *request.headers_mut() = headers;
        let mut sender = self.send.clone();
        let stream = sender.send_request(request).await.map_err(|e| format!("{e:?}"))?;
        let (mut send, mut recv) = stream.split();
        let sending = match body {
            // Nothing to feed: the request ends here, without a task (a failure shows in the response).
            Body::Empty => {
                let _ = send.finish().await;
                None
            }
            body => Some(tokio::spawn(async move {
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
            })),
        };
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
