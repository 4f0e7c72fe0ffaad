//! The one test kit of ldash: what the integration tests (tests/) and the benchmark
//! (src/bin/ldash-bench/) both need to drive a real ldash through real sockets and real peers.
//!
//! - [`client`]: one request API over HTTP/1.1 and HTTP/2 (reqwest, with our rustls + ring
//!   configuration from [`tls`]) and HTTP/3 ([`h3client`], quinn + h3), so a behaviour is written
//!   once and run over every [`Proto`].
//! - [`origin`]: where a running ldash listens ([`Origin`], with clients and the metrics scrape for
//!   it), and ldash as a child process ([`OriginProcess`]: the `ldash` binary, or the benchmark's
//!   `serve`), found from its start-up log.
//! - [`encoder`]: the ffmpeg LL-DASH encoder commands, and `ldash-clock` piped into ffmpeg.
//! - [`daemon`]: peer servers (nginx, Varnish, caddy) on free loopback ports, ready when their output
//!   says so; [`process`]: what a process tree costs, and signals to it.
//! - [`browser`]: the play-page driver (tests/browser/play.cjs, headless Chromium).
//! - [`netpath`]: shaped network paths (delay, jitter, loss, rate) between ldash and a player in a
//!   network namespace of its own, relayed in user space through a pair of TUN devices.
//! - [`metrics`]: a Prometheus text scrape; [`digest`]: SHA-256 of bodies; [`raw`]: hand-written
//!   HTTP/1.1 exchanges; [`tools`]: finding the external tools a run needs.
//!
//! It does not depend on the `ldash` crate (ldash depends on it), so anything that needs ldash's
//! types (the in-process `TestServer`, the store) stays with the tests. Helpers that only tests
//! call panic with a message that says what went wrong; what the benchmark calls returns errors,
//! so that a failed measurement is a row in its table rather than an abort.

pub mod browser;
pub mod client;
pub mod daemon;
pub mod digest;
pub mod encoder;
pub mod h3client;
pub mod metrics;
pub mod netpath;
pub mod origin;
pub mod process;
pub mod raw;
pub mod tls;
pub mod tools;

mod proto;

pub use origin::{Origin, OriginProcess};
pub use proto::{Proto, ALL_PROTOS, TCP_PROTOS};
