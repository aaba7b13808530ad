vcl 4.1;

# GENERATED from the segments table by `npm run cdn:config -- --flavour varnish` (the origin
# serves the same at GET /admin/cdn/varnish.vcl); the template is src/cdn/varnish-vcl.ts. Do not
# edit this file by hand: change the segments or the template, and generate it again.
# Segments: developer, enterprise, general (default), smb.
# Experiment buckets: 20 (EXPERIMENT_BUCKETS).
#
# variant-origin's local CDN: Varnish 7.1+ with xkey and header from varnish-modules (the official
# `varnish` image ships them). It mirrors the origin's request rules so that the edge and the origin
# agree on one cache key per page and segment, plus the bucket for pages under experiment:
#   - the segment: X-Segment header, else the user_segment cookie, else the utm_source rules, else
#     the default, always from the ALLOWLIST below (src/segments/segment-resolution.ts);
#   - the bucket: the visitor's sticky vo_bucket cookie, else a random one (0..19) that the
#     response sets as that cookie; none for crawlers, nor without a User-Agent. It reaches the origin
#     as X-Bucket, and the key only through the origin's Vary: X-Bucket on pages under experiment
#     (vo_assign_bucket);
#   - tracking parameters are dropped and the rest sorted (src/http/url-normalize.ts);
#   - lifetimes come from the origin: Surrogate-Control / s-maxage (the crawl-weighted TTL),
#     stale-while-revalidate and stale-if-error (src/http/cache-policy.ts);
#   - purges: `PURGE /` with `xkey-purge: <tags>` or `xkey-softpurge: <tags>`, and `PURGE <path>`,
#     exactly what the origin's VarnishAdapter sends (src/purge/cdn-adapters.ts).
# test/integration/deploy/varnish.test.ts runs the generated file in a real varnishd and checks each of
# these, with a segment added at run time; test/integration/deploy/varnish-buckets.test.ts the buckets.

import std;
import xkey;
import header;

backend origin {
    # The compose service. The test rewrites exactly these two lines to point at its own origin.
    .host = "origin";
    .port = "3000";
    .connect_timeout = 2s;
    .first_byte_timeout = 30s;
    .between_bytes_timeout = 10s;
    # A sick origin lets every cached page be served stale for its whole stale-if-error window. Sick
    # means 3 of the last 5 probes failed (about 6 s): one slow answer from a busy origin is not it.
    .probe = {
        .url = "/health/live";
        .interval = 2s;
        .timeout = 2s;
        .window = 5;
        .threshold = 3;
        .initial = 3;
    }
}

# Who may purge (and read the debug headers): the origin's network. docker-compose.yml pins its
# network to 172.28.0.0/24; clients reaching the published port appear from the gateway, which is
# excluded (the most specific entry wins).
acl purgers {
    "127.0.0.1";
    "::1";
    "172.28.0.0"/24;
    ! "172.28.0.1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Purging is allowed from the origin's network only"));
        }
        if (req.http.xkey-purge) {
            set req.http.x-vo-purged = xkey.purge(req.http.xkey-purge);
            return (synth(200, "Purged " + req.http.x-vo-purged + " objects"));
        }
        if (req.http.xkey-softpurge) {
            set req.http.x-vo-purged = xkey.softpurge(req.http.xkey-softpurge);
            return (synth(200, "Soft-purged " + req.http.x-vo-purged + " objects"));
        }
        # One path: every segment's variant of it (they share the hash, Vary tells them apart).
        return (purge);
    }
    if (req.method !~ "^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)$") {
        return (synth(405, "Method not allowed"));
    }
    if (req.url ~ "^/metrics(\?|$)" && client.ip !~ purgers) {
        return (synth(403, "Metrics are for the origin's network"));
    }

    # A restart (vcl_hit / vcl_synth below) keeps the segment resolved the first time.
    if (req.restarts == 0) {
        # Only vo_assign_bucket marks a bucket as new: never the client.
        unset req.http.x-vo-bucket-new;
        call vo_resolve_segment;
    } elsif (req.http.x-vo-stale-ok) {
        # The refresh failed: any grace the object has again (a restart keeps req.grace).
        set req.grace = 365d;
    } elsif (req.http.x-vo-refresh) {
        # Past stale-while-revalidate with a healthy origin: no grace, so the lookup fetches now.
        set req.grace = 0s;
    }

    if (req.method != "GET" && req.method != "HEAD") {
        # Engagement events and the admin API: never cached, cookies and body passed through.
        return (pass);
    }
    if (req.http.Authorization) {
        return (pass);
    }
    call vo_normalize_url;
    # A restart keeps the bucket of the first pass (the cookie is gone by then), as it keeps the segment.
    if (req.restarts == 0) {
        call vo_assign_bucket;
    }
    # The segment is in X-Segment now, the bucket in X-Bucket; every other cookie would only make pages
    # uncacheable.
    unset req.http.Cookie;
    return (hash);
}

# The ALLOWLIST of segments: every slug in the segments table. Anything else is the default segment,
# `general`, so a made-up value can never create a cache entry. Generated with the utm rules below
# from the segments table (`npm run cdn:config -- --flavour varnish`): do not edit by hand.
sub vo_resolve_segment {
    set req.http.x-vo-segment-source = "default";
    if (req.http.X-Segment ~ "(?i)^\s*(developer|enterprise|general|smb)\s*$") {
        set req.http.x-vo-segment-source = "header";
        set req.http.X-Segment = std.tolower(regsub(req.http.X-Segment, "^\s*(\S+)\s*$", "\1"));
        return;
    }
    if (req.http.Cookie ~ "(^|;)\s*user_segment\s*=") {
        # The first user_segment cookie counts, as at the origin; quotes around the value are dropped.
        set req.http.x-vo-cookie-segment = regsub(req.http.Cookie, {"^(?:[^;]*;)*?\s*user_segment\s*=\s*"?([^;"]*)"?\s*(?:;.*)?$"}, "\1");
        if (req.http.x-vo-cookie-segment ~ "(?i)^\s*(developer|enterprise|general|smb)\s*$") {
            set req.http.x-vo-segment-source = "cookie";
            set req.http.X-Segment = std.tolower(regsub(req.http.x-vo-cookie-segment, "^\s*(\S+)\s*$", "\1"));
            unset req.http.x-vo-cookie-segment;
            return;
        }
        unset req.http.x-vo-cookie-segment;
    }
    if (req.url ~ "(?i)[?&]utm_source=") {
        # The first utm_source counts. The rules: the segments' utm_sources, as the origin reads them.
        set req.http.x-vo-utm = std.tolower(regsub(req.url, "(?i)^[^?]*\?(?:[^&]*&)*?utm_source=([^&#]*).*$", "\1"));
        if (req.http.x-vo-utm ~ "^\s*(github|hackernews)\s*$") {
            set req.http.X-Segment = "developer";
            set req.http.x-vo-segment-source = "utm";
        } elsif (req.http.x-vo-utm ~ "^\s*(linkedin)\s*$") {
            set req.http.X-Segment = "enterprise";
            set req.http.x-vo-segment-source = "utm";
        } elsif (req.http.x-vo-utm ~ "^\s*(bing|google)\s*$") {
            set req.http.X-Segment = "smb";
            set req.http.x-vo-segment-source = "utm";
        }
        unset req.http.x-vo-utm;
        if (req.http.x-vo-segment-source == "utm") {
            return;
        }
    }
    set req.http.X-Segment = "general";
}

# No page reads a query parameter (QUERY_ALLOWLIST is empty): none is part of the key, tracking
# parameters included. The segment was resolved before this (utm_source included).
sub vo_normalize_url {
    if (req.url ~ "\?") {
        set req.url = regsub(req.url, "\?.*$", "");
    }
}

# Sticky experiment buckets (EXPERIMENT_BUCKETS=20): the visitor's vo_bucket cookie, 0..19, goes to the
# origin as X-Bucket; a visitor without a valid one gets a random bucket, which vcl_deliver sets as the
# cookie. The origin decides which variant each bucket sees and answers only pages under experiment with
# Vary: X-Bucket, so only those are cached once per bucket. A client never chooses its own X-Bucket;
# crawlers and requests without a User-Agent get none (the origin serves them the segment's best
# variant).
sub vo_assign_bucket {
    unset req.http.X-Bucket;
    if (req.http.Cookie ~ "(^|;)\s*vo_bucket\s*=") {
        # The first vo_bucket cookie counts: digits only, below the bucket count.
        set req.http.x-vo-cookie-bucket = regsub(req.http.Cookie, "^(?:[^;]*;)*?\s*vo_bucket\s*=\s*([^;]*?)\s*(?:;.*)?$", "\1");
        if (req.http.x-vo-cookie-bucket ~ "^[0-9]{1,9}$" && std.integer(req.http.x-vo-cookie-bucket, 20) < 20) {
            set req.http.X-Bucket = std.integer(req.http.x-vo-cookie-bucket, 0);
            unset req.http.x-vo-cookie-bucket;
            return;
        }
        unset req.http.x-vo-cookie-bucket;
    }
    if (req.http.User-Agent !~ "\S" || req.http.User-Agent ~ "(?i)bot|crawl|spider|slurp|facebookexternalhit|preview|lighthouse|headless") {
        # A crawler, or no User-Agent at all (no browser sends none): no bucket, no cookie.
        return;
    }
    # std.random gives a REAL in [0, 20); std.integer(real=) rounds it down: 0..19, equally likely.
    set req.http.X-Bucket = std.integer(real=std.random(0, 20));
    set req.http.x-vo-bucket-new = "1";
}

# One site: the key is the path and query (the origin's Vary adds the segment, and the bucket on pages
# under experiment; nothing here strips or rewrites Vary). Not the Host, so that a purge the
# origin sends to varnish:80 reaches the pages browsers fetched as localhost:8080.
sub vcl_hash {
    hash_data(req.url);
    return (lookup);
}

sub vcl_hit {
    if (obj.ttl > 0s) {
        set req.http.x-vo-edge = "HIT";
        return (deliver);
    }
    # Expired but in grace. Serve it (Varnish refreshes it in the background) while inside the page's
    # stale-while-revalidate, when the origin is sick, or when a refresh just failed (stale-if-error).
    if (req.http.x-vo-stale-ok || !std.healthy(req.backend_hint) || obj.ttl + std.duration(obj.http.x-vo-swr, 0s) > 0s) {
        set req.http.x-vo-edge = "STALE";
        return (deliver);
    }
    # Past stale-while-revalidate and the origin looks healthy: fetch now; vcl_synth falls back to
    # this copy if that fetch fails.
    set req.http.x-vo-refresh = "1";
    return (restart);
}

sub vcl_miss {
    set req.http.x-vo-edge = "MISS";
}

sub vcl_pass {
    set req.http.x-vo-edge = "PASS";
}

sub vcl_backend_fetch {
    # X-Segment and X-Bucket go to the origin; the edge's own markers do not.
    unset bereq.http.x-vo-segment-source;
    unset bereq.http.x-vo-bucket-new;
    unset bereq.http.x-vo-edge;
    unset bereq.http.x-vo-stale-ok;
}

sub vcl_backend_response {
    if (beresp.status >= 500) {
        if (bereq.is_bgfetch || bereq.http.x-vo-refresh) {
            # Keep the stale copy in cache; the client gets it through vcl_synth's fallback.
            return (abandon);
        }
        # A short hit-for-miss: requests do not queue behind a failing origin, nothing is stored.
        set beresp.ttl = 1s;
        set beresp.uncacheable = true;
        return (deliver);
    }
    # Lifetimes: the CDN-targeted Surrogate-Control (CDN_FLAVOUR=varnish) wins over Cache-Control,
    # whose s-maxage Varnish already parsed into beresp.ttl.
    set beresp.http.x-vo-cc = beresp.http.Surrogate-Control + ", " + beresp.http.Cache-Control;
    if (beresp.http.Surrogate-Control ~ "(^|[,\s])max-age=[0-9]+") {
        set beresp.ttl = std.duration(regsub(beresp.http.Surrogate-Control, "^(?:.*[,\s])?max-age=([0-9]+).*$", "\1s"), beresp.ttl);
    }
    # vcl_hit serves a stale copy without a sick or failing origin only this long (x-vo-swr).
    set beresp.http.x-vo-swr = "0s";
    if (beresp.http.x-vo-cc ~ "stale-while-revalidate=[0-9]+") {
        set beresp.http.x-vo-swr = regsub(beresp.http.x-vo-cc, "^.*?stale-while-revalidate=([0-9]+).*$", "\1s");
        set beresp.grace = std.duration(beresp.http.x-vo-swr, beresp.grace);
    }
    if (beresp.http.x-vo-cc ~ "stale-if-error=[0-9]+") {
        # Grace covers stale-if-error: past stale-while-revalidate a stale copy is kept only for an
        # origin that is sick or failing (vcl_hit, vcl_synth).
        set beresp.http.x-vo-sie = regsub(beresp.http.x-vo-cc, "^.*?stale-if-error=([0-9]+).*$", "\1s");
        if (std.duration(beresp.http.x-vo-sie, 0s) > beresp.grace) {
            set beresp.grace = std.duration(beresp.http.x-vo-sie, 0s);
        }
        unset beresp.http.x-vo-sie;
    }
    unset beresp.http.x-vo-cc;
    # No return: the builtin rules follow (Set-Cookie, private or no-store, ttl <= 0: not stored).
}

sub vcl_backend_error {
    if (bereq.is_bgfetch || bereq.http.x-vo-refresh) {
        return (abandon);
    }
}

sub vcl_synth {
    # A refresh past stale-while-revalidate failed: look again, this time accepting the stale copy.
    if (resp.status == 503 && req.http.x-vo-refresh && !req.http.x-vo-stale-ok) {
        set req.http.x-vo-stale-ok = "1";
        return (restart);
    }
}

sub vcl_deliver {
    set resp.http.X-Edge-Cache = req.http.x-vo-edge;
    if (client.ip ~ purgers) {
        # Debug view for the origin's network: what Varnish holds, in seconds left.
        set resp.http.X-Edge-Ttl = obj.ttl;
        set resp.http.X-Edge-Grace = obj.grace;
    } else {
        unset resp.http.xkey;
    }
    unset resp.http.x-vo-swr;
    unset resp.http.Surrogate-Control;
    if (req.http.x-vo-segment-source == "utm") {
        # As the origin does: the utm rule's segment follows the browser to its next page, and a
        # response that sets a cookie is not for shared caches.
        set resp.http.Set-Cookie = "user_segment=" + req.http.X-Segment + "; Path=/; Max-Age=2592000; SameSite=Lax; HttpOnly";
        set resp.http.Cache-Control = regsub(regsub(resp.http.Cache-Control, "public", "private"), ",\s*s-maxage=[0-9]+", "");
    }
    if (req.http.x-vo-bucket-new && (resp.status == 200 || resp.status == 304)) {
        # A bucket drawn for this visitor (vo_assign_bucket) sticks to it: set per client here, never
        # stored with the cached object, and added to any Set-Cookie already there. Like the utm cookie,
        # it makes the response one for the browser only.
        header.append(resp.http.Set-Cookie, "vo_bucket=" + req.http.X-Bucket + "; Path=/; Max-Age=2592000; SameSite=Lax");
        if (resp.http.Cache-Control) {
            set resp.http.Cache-Control = regsub(regsub(resp.http.Cache-Control, "public", "private"), ",\s*s-maxage=[0-9]+", "");
        }
    }
}
