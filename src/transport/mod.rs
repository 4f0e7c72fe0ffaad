//! Listeners: hyper accept loops for TCP (cleartext and TLS) and, separately, QUIC. They turn
//! connections into `http::Request`s for [`crate::http::App`] and carry its responses back; no route
//! logic lives here.

pub mod quic;
pub mod tcp;
pub mod tls;
