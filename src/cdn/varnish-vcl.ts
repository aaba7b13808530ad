// The Varnish configuration generated from the segments table: `npm run cdn:config -- --flavour varnish`
// prints it, GET /admin/cdn/varnish.vcl serves it, and deploy/varnish/default.vcl is its output for the
// demo site's segments (test/unit/cdn/varnish-vcl.test.ts holds the two byte for byte). The template is
// the VCL below; only the segment allowlist, the utm_source rules and the default segment come from the
// data, resolved by the origin's own buildSegmentDirectory so that the edge and the origin agree on every
// request (src/segments/segment-resolution.ts), and the number of sticky experiment buckets
// (EXPERIMENT_BUCKETS).

import { DomainError } from '../errors.ts'
import { CRAWLER_USER_AGENT } from '../http/crawler.ts'
import { buildSegmentDirectory } from '../segments/segment-resolution.ts'

export interface VclSegment {
  slug: string
  utmSources: readonly string[]
  isDefault: boolean
}

/** The command that writes this file's output; the generated VCL names it. */
export const VARNISH_VCL_COMMAND = 'npm run cdn:config -- --flavour varnish'

/** What the segments table's constraint and the admin API's validation allow: nothing VCL or PCRE would read differently. */
const SLUG = /^[a-z0-9][a-z0-9_-]{0,31}$/
const UTM_SOURCE = /^[\w.-]{1,64}$/

const escapeRegex = (value: string): string => value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

/** config.experimentBuckets' default and bounds (EXPERIMENT_BUCKETS). */
export const DEFAULT_EXPERIMENT_BUCKETS = 20
const MIN_BUCKETS = 2
const MAX_BUCKETS = 1_000

// User-Agents that get no experiment bucket (src/http/crawler.ts, where the events route reads it too).
export { CRAWLER_USER_AGENT }

/**
 * The complete VCL for these segments, in the order listSegments returns them (the order the origin reads
 * them in: it decides the default when none is marked, and which segment a utm_source two segments claim
 * goes to). The output lists segments by slug, so the same segments always give the same bytes.
 */
export function renderVarnishVcl(segments: readonly VclSegment[], options: { queryAllowlist?: Iterable<string>; experimentBuckets?: number } = {}): string {
  const buckets = options.experimentBuckets ?? DEFAULT_EXPERIMENT_BUCKETS
  if (!Number.isInteger(buckets) || buckets < MIN_BUCKETS || buckets > MAX_BUCKETS) {
    throw new RangeError(`experimentBuckets (EXPERIMENT_BUCKETS) must be an integer from ${MIN_BUCKETS} to ${MAX_BUCKETS}, not ${String(buckets)}`)
  }
  for (const segment of segments) {
    if (!SLUG.test(segment.slug)) throw new DomainError('CONFLICT', `segment ${JSON.stringify(segment.slug)} is not a slug the VCL can hold (lower-case letters, digits, - and _)`)
    for (const source of segment.utmSources) {
      if (!UTM_SOURCE.test(source)) throw new DomainError('CONFLICT', `segment ${segment.slug}: utm_source ${JSON.stringify(source)} is not one the VCL can hold (letters, digits, . _ -)`)
    }
  }
  const directory = buildSegmentDirectory(segments)
  const slugs = [...directory.slugs].sort()
  const utmBySegment = new Map<string, string[]>()
  for (const [source, slug] of directory.utmRules) utmBySegment.set(slug, [...(utmBySegment.get(slug) ?? []), source])
  const utmRules = slugs.flatMap((slug) => {
    const sources = utmBySegment.get(slug)
    return sources === undefined ? [] : [{ slug, pattern: [...sources].sort().map(escapeRegex).join('|') }]
  })
  const allowlist = slugs.map(escapeRegex).join('|')
  const listed = slugs.map((slug) => (slug === directory.defaultSlug ? `${slug} (default)` : slug)).join(', ')
  const allowedParams = [...new Set(options.queryAllowlist ?? [])].sort()
  for (const name of allowedParams) {
    if (!/^[a-z0-9_.~-]{1,64}$/.test(name)) throw new DomainError('CONFLICT', `query parameter ${JSON.stringify(name)} is not one the VCL can hold`)
  }
  return header(listed, buckets) + backend + resolveSegment(allowlist, utmRules, directory.defaultSlug) + normalizeUrl(allowedParams) + assignBucket(buckets) + tail
}

/**
 * The visitor's sticky bucket, 0..buckets-1: from the vo_bucket cookie, else drawn at random (vcl_deliver
 * then sets the cookie). Called once per client request, before the cookies are dropped.
 */
const assignBucket = (buckets: number): string => String.raw`# Sticky experiment buckets (EXPERIMENT_BUCKETS=${buckets}): the visitor's vo_bucket cookie, 0..${buckets - 1}, goes to the
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
        if (req.http.x-vo-cookie-bucket ~ "^[0-9]{1,9}$" && std.integer(req.http.x-vo-cookie-bucket, ${buckets}) < ${buckets}) {
            set req.http.X-Bucket = std.integer(req.http.x-vo-cookie-bucket, 0);
            unset req.http.x-vo-cookie-bucket;
            return;
        }
        unset req.http.x-vo-cookie-bucket;
    }
    if (req.http.User-Agent !~ "\S" || req.http.User-Agent ~ "(?i)${CRAWLER_USER_AGENT}") {
        # A crawler, or no User-Agent at all (no browser sends none): no bucket, no cookie.
        return;
    }
    # std.random gives a REAL in [0, ${buckets}); std.integer(real=) rounds it down: 0..${buckets - 1}, equally likely.
    set req.http.X-Bucket = std.integer(real=std.random(0, ${buckets}));
    set req.http.x-vo-bucket-new = "1";
}

`

/**
 * The query the cache is keyed on: only QUERY_ALLOWLIST's parameters, sorted (the origin redirects any
 * other away, so keying on them would only split the cache). Names compare case-insensitively, as at the
 * origin. Tracking parameters can never be allowed (config.ts), so they always go.
 */
const normalizeUrl = (allowed: readonly string[]): string =>
  allowed.length === 0
    ? String.raw`# No page reads a query parameter (QUERY_ALLOWLIST is empty): none is part of the key, tracking
# parameters included. The segment was resolved before this (utm_source included).
sub vo_normalize_url {
    if (req.url ~ "\?") {
        set req.url = regsub(req.url, "\?.*$", "");
    }
}

`
    : String.raw`# Only QUERY_ALLOWLIST's parameters (${allowed.join(', ')}) are part of the key, sorted; every other one
# (tracking parameters always) is dropped from the URL the cache is keyed on and the origin sees.
sub vo_normalize_url {
    if (req.url ~ "\?") {
        set req.url = regsuball(req.url, "(?i)(?<=[?&])(?!(?:${allowed.map(escapeRegex).join('|')})(?:=|&|$))[^&]*(?:&|$)", "");
        set req.url = std.querysort(req.url);
        set req.url = regsub(req.url, "[?&]+$", "");
    }
}

`

const header = (listed: string, buckets: number): string => `vcl 4.1;

# GENERATED from the segments table by \`${VARNISH_VCL_COMMAND}\` (the origin
# serves the same at GET /admin/cdn/varnish.vcl); the template is src/cdn/varnish-vcl.ts. Do not
# edit this file by hand: change the segments or the template, and generate it again.
# Segments: ${listed}.
# Experiment buckets: ${buckets} (EXPERIMENT_BUCKETS).
#
# variant-origin's local CDN: Varnish 7.1+ with xkey and header from varnish-modules (the official
# \`varnish\` image ships them). It mirrors the origin's request rules so that the edge and the origin
# agree on one cache key per page and segment, plus the bucket for pages under experiment:
#   - the segment: X-Segment header, else the user_segment cookie, else the utm_source rules, else
#     the default, always from the ALLOWLIST below (src/segments/segment-resolution.ts);
#   - the bucket: the visitor's sticky vo_bucket cookie, else a random one (0..${buckets - 1}) that the
#     response sets as that cookie; none for crawlers, nor without a User-Agent. It reaches the origin
#     as X-Bucket, and the key only through the origin's Vary: X-Bucket on pages under experiment
#     (vo_assign_bucket);
#   - tracking parameters are dropped and the rest sorted (src/http/url-normalize.ts);
#   - lifetimes come from the origin: Surrogate-Control / s-maxage (the crawl-weighted TTL),
#     stale-while-revalidate and stale-if-error (src/http/cache-policy.ts);
#   - purges: \`PURGE /\` with \`xkey-purge: <tags>\` or \`xkey-softpurge: <tags>\`, and \`PURGE <path>\`,
#     exactly what the origin's VarnishAdapter sends (src/purge/cdn-adapters.ts).
# test/integration/deploy/varnish.test.ts runs the generated file in a real varnishd and checks each of
# these, with a segment added at run time; test/integration/deploy/varnish-buckets.test.ts the buckets.

`

function resolveSegment(allowlist: string, utmRules: ReadonlyArray<{ slug: string; pattern: string }>, defaultSlug: string): string {
  const utm =
    utmRules.length === 0
      ? `
    # No segment has utm_sources: utm_source never chooses a segment here, nor at the origin.`
      : String.raw`
    if (req.url ~ "(?i)[?&]utm_source=") {
        # The first utm_source counts. The rules: the segments' utm_sources, as the origin reads them.
        set req.http.x-vo-utm = std.tolower(regsub(req.url, "(?i)^[^?]*\?(?:[^&]*&)*?utm_source=([^&#]*).*$", "\1"));
        ${utmRules.map(({ slug, pattern }) => utmBranch(slug, pattern)).join(' els')}
        unset req.http.x-vo-utm;
        if (req.http.x-vo-segment-source == "utm") {
            return;
        }
    }`
  const comment = `# The ALLOWLIST of segments: every slug in the segments table. Anything else is the default segment,
# \`${defaultSlug}\`, so a made-up value can never create a cache entry. Generated with the utm rules below
# from the segments table (\`${VARNISH_VCL_COMMAND}\`): do not edit by hand.
`
  return comment + String.raw`sub vo_resolve_segment {
    set req.http.x-vo-segment-source = "default";
    if (req.http.X-Segment ~ "(?i)^\s*(${allowlist})\s*$") {
        set req.http.x-vo-segment-source = "header";
        set req.http.X-Segment = std.tolower(regsub(req.http.X-Segment, "^\s*(\S+)\s*$", "\1"));
        return;
    }
    if (req.http.Cookie ~ "(^|;)\s*user_segment\s*=") {
        # The first user_segment cookie counts, as at the origin; quotes around the value are dropped.
        set req.http.x-vo-cookie-segment = regsub(req.http.Cookie, {"^(?:[^;]*;)*?\s*user_segment\s*=\s*"?([^;"]*)"?\s*(?:;.*)?$"}, "\1");
        if (req.http.x-vo-cookie-segment ~ "(?i)^\s*(${allowlist})\s*$") {
            set req.http.x-vo-segment-source = "cookie";
            set req.http.X-Segment = std.tolower(regsub(req.http.x-vo-cookie-segment, "^\s*(\S+)\s*$", "\1"));
            unset req.http.x-vo-cookie-segment;
            return;
        }
        unset req.http.x-vo-cookie-segment;
    }${utm}
    set req.http.X-Segment = "${defaultSlug}";
}

`
}

const utmBranch = (slug: string, pattern: string): string => String.raw`if (req.http.x-vo-utm ~ "^\s*(${pattern})\s*$") {
            set req.http.X-Segment = "${slug}";
            set req.http.x-vo-segment-source = "utm";
        }`

// From `import std;` to the end of vcl_recv: nothing here depends on the segments.
const backend = String.raw`import std;
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

`

// From vcl_hash to the end of the file: nothing here depends on the segments or the settings.
const tail = String.raw`# One site: the key is the path and query (the origin's Vary adds the segment, and the bucket on pages
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
`
