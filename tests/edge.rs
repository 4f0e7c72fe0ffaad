//! The CDN edge tier on nginx end to end: the real ffmpeg pushes LL-DASH into ldash, Debian's nginx
//! runs deploy/nginx/ldash-edge.conf in front of it, and 200 viewers at once ask the edge for a
//! growing segment, an LL-HLS blocking playlist, an LL-HLS part and a complete segment. Every
//! viewer must get the origin's exact bytes while ldash serves each object once; the viewer whose
//! request went to the origin streams the growing segment, the others get it complete (nginx cannot
//! stream a busy object to every client it coalesced: tests/edge_varnish.rs). Then an aborted upload
//! through the edge, and the play page through it in headless Chromium. The scenarios are the
//! Varnish edge's too (tests/common/edge.rs); what the edge adds to latency is printed
//! (`EDGE nginx` lines), not asserted.

mod common;

edge_tests!(common::edge::Kind::Nginx);
