# ldash CDN edge with channels spread over several origins (see docs/edges-and-failover.md, "Running
# more than one origin"): each channel (the first folder of its path: /ldash/download/{channel}/...)
# always goes to the same origin, chosen by a hash of its name, so every origin carries its share of
# the channels. The play page of a channel goes to that channel's origin too. Each channel's encoder
# uploads to the origin the edge picks for it, which every response names (X-Ldash-Origin, the
# backend's name): `curl -sI http://edge/ldash/download/{channel}/` (see the example in
# docs/edges-and-failover.md).
#
# Substitute before use (envsubst '${LDASH_ORIGIN_A_HOST} ${LDASH_ORIGIN_A_PORT} ...'):
#   ${LDASH_ORIGIN_A_HOST} ${LDASH_ORIGIN_A_PORT}  the first origin's cleartext listener
#   ${LDASH_ORIGIN_B_HOST} ${LDASH_ORIGIN_B_PORT}  the second's
# More origins: one backend each and one add_backend line each, with the same weight.
# The rules (what is cached, and how) are ldash-edge-rules.vcl, which must sit beside this file:
#   varnishd -f /etc/varnish/ldash-edge-shard.vcl -a :80 -s malloc,1g -n /var/lib/varnish/ldash-edge

vcl 4.1;

import directors;

backend origin_a {
    .host = "${LDASH_ORIGIN_A_HOST}";
    .port = "${LDASH_ORIGIN_A_PORT}";
    .first_byte_timeout = 15s;
    .between_bytes_timeout = 15s;
}

backend origin_b {
    .host = "${LDASH_ORIGIN_B_HOST}";
    .port = "${LDASH_ORIGIN_B_PORT}";
    .first_byte_timeout = 15s;
    .between_bytes_timeout = 15s;
}

sub vcl_init {
    # No probe: a channel lives on one origin only, so another origin could not serve it anyway.
    new channels = directors.hash();
    channels.add_backend(origin_a, 1.0);
    channels.add_backend(origin_b, 1.0);
}

sub vcl_recv {
    # The channel: the first folder after /ldash/download/ or /ldash/play/; anything else
    # (the clock, the stream list, the player's libraries) hashes on its whole path.
    set req.backend_hint = channels.backend(regsub(req.url, "^/ldash/(download|play)/([^/?]+)/.*$", "\2"));
}

include "./ldash-edge-rules.vcl";
