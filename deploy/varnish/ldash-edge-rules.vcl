# ldash CDN edge rules for Varnish Cache (7.1), included by the edge configurations beside this
# file (ldash-edge.vcl: one origin; ldash-edge-failover.vcl: two origins, one taking over from the
# other; ldash-edge-shard.vcl: channels spread over origins). Those choose the origin (the
# request's backend) before these rules run; these say what is cached and how.
#
# What is cached follows ldash's Cache-Control, with one deliberate exception marked (*):
#   complete segment     public, max-age=TTL   cached for TTL, coalesced
#   LL-HLS part (Range)  206, public, max-age  forwarded to the origin (which holds it until the
#                        part is complete), cached per URL + Range, coalesced
#   growing segment      no-store              (*) cached 10 s all the same, coalesced, streamed
#   media playlist       public, max-age=½TD..6TD: cached; the query (_HLS_msn, _HLS_part,
#                        _HLS_skip) is part of the URL, so each blocking reload is one origin
#                        request however many viewers make it
#   MPD                  no-cache              passed through (ldash writes the Host into it)
#   play page, clock, stream list, CORS preflights: passed through or no-store, as ldash says
#   errors               no-store              not cached (a 1 s hit-for-miss, see below)
#   aborted upload       body ends in an error the fetch fails: viewers' responses are cut, and
#                        nothing is kept

import std;

sub vcl_recv {
    # Ingest goes to the origin, never through an edge.
    if (req.url ~ "^/ldash/upload/") {
        return (synth(403, "upload to the origin, not to an edge"));
    }
    if (req.method == "OPTIONS") {
        return (pass);
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (synth(405, "an edge serves GET and HEAD"));
    }
    # ldash uses no cookies; a site's cookies must not turn viewers into uncoalesced passes.
    unset req.http.Cookie;
    # MPDs are no-cache (revalidate every use) and carry the clock URL built from the Host.
    if (req.url ~ "(?i)\.mpd(\?|$)") {
        return (pass);
    }
    # Varnish drops Range from a cache miss's backend request and serves ranges itself, but not from
    # an object that is still being fetched (7.1 sends such a request the whole object as 200). An
    # LL-HLS part is asked for while its segment grows, so the Range goes to the origin, which
    # holds it until the part is complete, and names a cache object of its own.
    unset req.http.X-Ldash-Range;
    if (req.http.Range && req.url ~ "(?i)\.(m4s|mp4|m4v|m4a|cmfv|cmfa|aac|ts)(\?|$)") {
        set req.http.X-Ldash-Range = req.http.Range;
    }
    return (hash);
}

sub vcl_hash {
    # The full URL with its query: LL-HLS blocking reloads are collapsed per (_HLS_msn, _HLS_part).
    hash_data(req.url);
    if (req.http.host) {
        hash_data(req.http.host);
    } else {
        hash_data(server.ip);
    }
    if (req.http.X-Ldash-Range) {
        hash_data(req.http.X-Ldash-Range);
    }
    return (lookup);
}

sub vcl_backend_fetch {
    if (bereq.http.X-Ldash-Range) {
        set bereq.http.Range = bereq.http.X-Ldash-Range;
        unset bereq.http.X-Ldash-Range;
    }
}

sub vcl_backend_response {
    # Which origin this copy came from (the backend's name): where a sharded channel's encoder
    # uploads, and what served a viewer during a failover.
    set beresp.http.X-Ldash-Origin = beresp.backend.name;
    # Errors (ldash sends them no-store) are not kept. A hit-for-miss of 1 s instead of the builtin
    # 120 s: for those 120 s Varnish would send every viewer of that URL to the origin separately,
    # and a segment asked for too early becomes available a moment later.
    if (beresp.status >= 400) {
        set beresp.uncacheable = true;
        set beresp.ttl = 1s;
        return (deliver);
    }
    # An LL-HLS part. Varnish computes no TTL for a 206, so take ldash's max-age. Varnish 7.1
    # rejects the Content-Range "bytes 0-999/*" (length not known yet, which HTTP allows) as
    # invalid and turns the response into a 503, so the header travels under another name and is
    # restored in vcl_deliver.
    if (beresp.status == 206) {
        set beresp.ttl = std.duration(regsub(beresp.http.Cache-Control, "^.*max-age=([0-9]+).*$", "\1s"), 0s);
        set beresp.http.X-Ldash-Content-Range = beresp.http.Content-Range;
        unset beresp.http.Content-Range;
        return (deliver);
    }
    # (*) A growing media segment: sent no-store only because its length is not known yet; its
    # bytes never change. Keep it so that every viewer joins this one fetch and gets each chunk as
    # it arrives (do_stream, Varnish's default, made explicit). 10 s: long enough for the viewers
    # of the live edge, short enough that the complete copy (with its length, ETag and max-age)
    # replaces it soon; grace 0 s so the complete copy is fetched then, not the 10 s old one served.
    if (beresp.status == 200 && beresp.http.Cache-Control ~ "(?i)no-store" && !beresp.http.Content-Length
        && bereq.url ~ "(?i)\.(m4s|mp4|m4v|m4a|cmfv|cmfa|aac|ts)(\?|$)") {
        set beresp.do_stream = true;
        set beresp.ttl = 10s;
        set beresp.grace = 0s;
        return (deliver);
    }
    # Everything else: the builtin VCL, which follows Cache-Control.
}

sub vcl_backend_error {
    # Origin unreachable or an invalid response: a 503 for this request, not kept for others.
    set beresp.uncacheable = true;
    set beresp.ttl = 1s;
}

sub vcl_deliver {
    if (resp.http.X-Ldash-Content-Range) {
        set resp.http.Content-Range = resp.http.X-Ldash-Content-Range;
        unset resp.http.X-Ldash-Content-Range;
    }
    # HIT: served from the edge's copy, whole or still being fetched; MISS: this request fetched it.
    if (obj.hits > 0) {
        set resp.http.X-Edge-Cache = "HIT";
    } else {
        set resp.http.X-Edge-Cache = "MISS";
    }
}
