//! Listeners: hyper accept loops for TCP (cleartext and TLS) and, separately, QUIC. They turn
//! connections into `http::Request`s for [`crate::http::App`] and carry its responses back; no route
//! logic lives here.

mod activity;
mod budget;
mod frame_guard;
mod h3_transport;
pub mod quic;
mod quic_admission;
pub mod tcp;
pub mod tls;
