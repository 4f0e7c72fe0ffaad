//! ldash: a low-latency live-streaming origin. Encoders upload CMAF segments with chunked HTTP PUT or
//! POST while encoding them; players download the same segments while they grow.
//!
//! The modules, in the order a request meets them:
//! - [`transport`]: the accept loops (TCP cleartext and TLS, QUIC for HTTP/3), connection limits
//!   and timeouts; no route logic.
//! - [`http`]: the routes, over `http::Request`/`http::Response`, shared by every transport: paths,
//!   uploads, downloads, LL-HLS playlists (with their `_HLS_` directives, caching and gzip), the
//!   play page, errors to statuses.
//! - [`store`]: the shared segment store (entries, readers, persistence, garbage collection); it
//!   takes only validated paths ([`store::StorePath`]).
//! - [`packager`]: the CMAF-ingest packager's driver, writing segments and manifests through the
//!   store as an encoder would.
//! - [`live`]: the live index that follows the store: a pure state machine and its driver, feeding
//!   the MPD rewrite, the release of growing segments and LL-HLS (with the blocking reload).
//! - [`media`]: pure media code (CMAF reader, codecs, the packager's rules, MPD model and rewriter,
//!   LL-HLS writer, liveness rules): no I/O, time as an argument.
//! - [`metrics`]: the Prometheus metrics, served on their own listener.
//! - [`pace`]: the minimum rate every upload must keep.
//! - [`memory`]: giving freed heap memory back to the system after a burst.
//! - [`config`]: every option; [`settings`]: the options resolved once into each part's settings.
//! - [`server`]: binding and running it all until the shutdown signal.
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
