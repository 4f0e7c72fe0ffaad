# ldash CDN edge with two origins for the same streams (see docs/edges-and-failover.md, "Running
# more than one origin"): one encoder feeds both (ffmpeg's tee muxer), both serve the same names and
# the same bytes, and this edge sends every request to origin A while it is healthy and to origin B
# when it is not, so that viewers go on when an origin dies.
#
# How a failover goes:
# - A probe asks each origin whether it is ready (HEAD /ldash/ready) every 500 ms; two failures in
#   the last three make an origin sick, two successes healthy again. New requests go to the first
#   healthy origin in the order A, B (Varnish's fallback director): back to A once it is up again
#   and has caught up with the encoder (ldash answers 503 until then).
# - A request the edge is holding at an origin when that origin goes away (a blocking playlist
#   reload, a segment or part asked for before it exists, a connection refused or reset before the
#   response's headers) is sent once more, to the other origin, at once: the viewer sees only the
#   delay. So is a request that origin answers 404 (an origin back after a failure lacks what the
#   encoder sent while it was down). Nothing is retried after the headers came: a growing segment cut by the origin's death
#   is cut for its viewers too (players ask again, and the new request goes to the other origin).
#
# Substitute before use (envsubst '${LDASH_ORIGIN_A_HOST} ${LDASH_ORIGIN_A_PORT} ...'):
#   ${LDASH_ORIGIN_A_HOST} ${LDASH_ORIGIN_A_PORT}  origin A's cleartext listener (ldash --http)
#   ${LDASH_ORIGIN_B_HOST} ${LDASH_ORIGIN_B_PORT}  origin B's
# The rules (what is cached, and how) are ldash-edge-rules.vcl, which must sit beside this file:
#   varnishd -f /etc/varnish/ldash-edge-failover.vcl -a :80 -s malloc,1g -n /var/lib/varnish/ldash-edge

vcl 4.1;

import directors;
import std;

# The origin's readiness: 200 once it is up and has caught up with its encoders (an origin that
# restarted lacks what they sent while it was down, up to their next upload), 503 until then.
probe ldash_alive {
    .request = "HEAD /ldash/ready HTTP/1.1"
               "Host: ldash-edge-probe"
               "Connection: close";
    .interval = 500ms;
    .timeout = 400ms;
    .window = 3;
    .threshold = 2;
    # Healthy from the start: the edge serves before the first probes are in.
    .initial = 2;
}

backend origin_a {
    .host = "${LDASH_ORIGIN_A_HOST}";
    .port = "${LDASH_ORIGIN_A_PORT}";
    .probe = ldash_alive;
    # As ldash-edge.vcl: a held playlist up to 8 s, a part up to 10 s, a chunk every 0.2-0.5 s.
    .first_byte_timeout = 15s;
    .between_bytes_timeout = 15s;
    # A dead origin's address refuses at once; one that vanished from the network must not hold
    # a viewer for the default 3.5 s.
    .connect_timeout = 1s;
}

backend origin_b {
    .host = "${LDASH_ORIGIN_B_HOST}";
    .port = "${LDASH_ORIGIN_B_PORT}";
    .probe = ldash_alive;
    .first_byte_timeout = 15s;
    .between_bytes_timeout = 15s;
    .connect_timeout = 1s;
}

sub vcl_init {
    new origins = directors.fallback();
    origins.add_backend(origin_a);
    origins.add_backend(origin_b);
}

sub vcl_recv {
    set req.backend_hint = origins.backend();
    # Neither origin ready (both restarting): A all the same, rather than no answer at all.
    if (!std.healthy(req.backend_hint)) {
        set req.backend_hint = origin_a;
    }
}

sub vcl_backend_fetch {
    # The retry of a request whose origin went away: the other origin, whatever the probe says yet
    # (it notices a dead origin within a second; this request should not wait for it).
    if (bereq.retries > 0) {
        if (bereq.http.X-Ldash-Lost == "origin_a") {
            set bereq.backend = origin_b;
        } else {
            set bereq.backend = origin_a;
        }
    }
    unset bereq.http.X-Ldash-Lost;
}

sub vcl_backend_error {
    # No response from this origin (refused, reset, timed out before the headers): once more, on
    # the other one. Before the rules' vcl_backend_error, which makes the error a 503.
    if (bereq.retries == 0) {
        set bereq.http.X-Ldash-Lost = beresp.backend.name;
        return (retry);
    }
}

sub vcl_backend_response {
    # An origin back after a failure lacks what the encoder sent while it was down: a 404 from one
    # origin is asked of the other once. Before the rules' vcl_backend_response.
    if (beresp.status == 404 && bereq.retries == 0) {
        set bereq.http.X-Ldash-Lost = beresp.backend.name;
        return (retry);
    }
}

include "./ldash-edge-rules.vcl";
