# ldash CDN edge: Varnish Cache (7.1) in front of an ldash origin (see docs/edges-and-failover.md,
# "Behind a CDN edge (Varnish)"). Unlike nginx, Varnish both coalesces concurrent requests for one
# object into one origin request and streams that object to every coalesced client while it is being
# fetched, so a growing segment reaches all viewers of an edge chunk by chunk from one origin
# request.
#
# Substitute before use (envsubst '${LDASH_ORIGIN_HOST} ${LDASH_ORIGIN_PORT}'):
#   ${LDASH_ORIGIN_HOST}  the origin's cleartext listener (ldash --http): host name or IP address
#   ${LDASH_ORIGIN_PORT}  its port
# The rules (what is cached, and how) are ldash-edge-rules.vcl, which must sit beside this file.
# The listen address, storage and working folder are varnishd's command line:
#   varnishd -f /etc/varnish/ldash-edge.vcl -a :80 -s malloc,1g -n /var/lib/varnish/ldash-edge
# Two origins for one stream: ldash-edge-failover.vcl; channels over several origins:
# ldash-edge-shard.vcl.

vcl 4.1;

backend ldash {
    .host = "${LDASH_ORIGIN_HOST}";
    .port = "${LDASH_ORIGIN_PORT}";
    # ldash holds a blocking playlist up to 8 s and a part up to 10 s before its first byte; a
    # growing segment sends a chunk per CMAF fragment (0.2-0.5 s apart with the documented ffmpeg).
    .first_byte_timeout = 15s;
    .between_bytes_timeout = 15s;
}

include "./ldash-edge-rules.vcl";
