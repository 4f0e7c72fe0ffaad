//! ldash: a low-latency live-streaming origin. Encoders upload CMAF segments with chunked HTTP PUT or
//! POST while encoding them; players download the same segments while they grow.
//!
//! - [`store`]: the shared segment store (entries, readers, persistence, garbage collection).
//! - [`http`]: the routes, over `http::Request`/`http::Response`, shared by every transport.
//! - [`transport`]: the accept loops (TCP cleartext and TLS).
//! - [`metrics`]: the Prometheus metrics, served on their own listener.
//! - [`pace`]: the minimum rate every upload must keep.
//! - [`server`]: binding and running it all; [`config`]: the options.
#![warn(missing_docs)]

pub mod config;
pub mod http;
pub mod live;
pub mod media;
pub mod memory;
pub mod metrics;
pub mod pace;
pub mod packager;
pub mod server;
pub mod settings;
pub mod store;
pub mod transport;

pub use config::Config;
pub use server::Server;
