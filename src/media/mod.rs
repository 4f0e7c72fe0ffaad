//! Media logic as pure code over bytes and timelines: the incremental CMAF chunk reader, the MPD model
//! and low-latency rewriter. No I/O and no clock reads here: bytes and times come in as arguments, so
//! everything is tested deterministically without sockets.

pub mod clock;
pub mod cmaf;
pub mod hls;
pub mod kind;
pub mod liveness;
pub mod mpd;
pub mod package;
