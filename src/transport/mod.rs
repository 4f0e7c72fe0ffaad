//! Listeners: hyper accept loops for TCP (cleartext and TLS) and, separately, QUIC. They turn
//! connections into `http::Request`s for [`crate::http::App`] and carry its responses back; no route
//! logic lives here.

mod activity;
mod budget;
mod h3_transport;
pub mod quic;
pub mod tcp;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// Runs one step of setting up a connection or request (a TLS or QUIC handshake, reading request
/// headers) within `bound`, the header timeout; None, logged at debug level, when it failed or
/// took too long.
pub(crate) async fn within<T, E: std::fmt::Display>(
    bound: Duration,
    peer: SocketAddr,
    what: &'static str,
    step: impl Future<Output = Result<T, E>>,
) -> Option<T> {
    match tokio::time::timeout(bound, step).await {
        Ok(Ok(done)) => Some(done),
        Ok(Err(err)) => {
            tracing::debug!(%peer, %err, "{what} failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "{what} timed out");
            None
        }
    }
}
