//! The CDN edge tier on Varnish end to end: the real ffmpeg pushes LL-DASH into ldash, Debian's
//! varnishd runs deploy/varnish/ldash-edge.vcl in front of it, and 200 viewers at once ask the edge
//! for a growing segment, an LL-HLS blocking playlist, an LL-HLS part and a complete segment. Every
//! viewer must get the origin's exact bytes while ldash serves each object once, and every viewer
//! of the growing segment must get its first bytes while the upload is still appending (Varnish
//! streams a busy object to every client it coalesced, which nginx cannot: tests/edge.rs). Then an
//! aborted upload through the edge, and the play page through it in headless Chromium. The
//! scenarios are the nginx edge's too (tests/common/edge.rs); what the edge adds to latency is
//! printed (`EDGE varnish` lines), not asserted.

mod common;

edge_tests!(common::edge::Kind::Varnish);
