// Which peers may speak for the client. A proxy named in TRUST_PROXY may say who the client is
// (X-Forwarded-For: the client address, so the key of the POST /events rate limit) and which request
// this is (X-Request-Id); any other peer is the client itself, whatever headers it sends.
// One trust function serves both: Fastify's `trustProxy` option (which walks X-Forwarded-For with
// @fastify/proxy-addr) and the hit fast path, which only has the raw request's socket.

import { BlockList, isIP } from 'node:net'
import type { IncomingMessage } from 'node:http'

export type TrustProxySetting =
  | { kind: 'none' }
  /** Trust the first `hops` addresses from the socket inward, whoever they are (the peer is not checked). */
  | { kind: 'hops'; hops: number }
  /** Trust exactly these addresses and ranges (as written, after expanding the names below). */
  | { kind: 'addresses'; entries: string[] }

/** @fastify/proxy-addr's names for well-known ranges, so that `TRUST_PROXY=loopback` means what it says. */
const NAMED_RANGES: Record<string, string[]> = {
  loopback: ['127.0.0.0/8', '::1/128'],
  linklocal: ['169.254.0.0/16', 'fe80::/10'],
  uniquelocal: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
}

const MAX_HOPS = 10

/** One entry as a subnet: `10.0.0.0/8`, `2001:db8::/32`, or a single address (a /32 or /128). */
function subnet(entry: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const match = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(entry)
  if (match === null) return undefined
  const version = isIP(match[1]!)
  if (version === 0 || match[1]!.includes('%')) return undefined
  const bits = version === 4 ? 32 : 128
  const prefix = match[2] === undefined ? bits : Number(match[2])
  if (prefix > bits) return undefined
  return { address: match[1]!, prefix, family: version === 4 ? 'ipv4' : 'ipv6' }
}

/**
 * TRUST_PROXY: unset (or `none`) trusts no peer; a number from 1 to 10 is a hop count; anything else is a
 * comma list of addresses, CIDR ranges and the names loopback, linklocal, uniquelocal. A problem names
 * the entry at fault.
 */
export function parseTrustProxy(raw: string | undefined): { setting: TrustProxySetting } | { problem: string } {
  const value = (raw ?? '').trim()
  if (value === '' || /^(none|false|off)$/i.test(value)) return { setting: { kind: 'none' } }
  if (/^\d+$/.test(value)) {
    const hops = Number(value)
    if (hops === 0) return { setting: { kind: 'none' } }
    if (hops > MAX_HOPS) return { problem: `TRUST_PROXY=${JSON.stringify(value)}: a hop count is from 1 to ${MAX_HOPS}` }
    return { setting: { kind: 'hops', hops } }
  }
  if (/^(true|on|yes|all|\*)$/i.test(value)) {
    return { problem: `TRUST_PROXY=${JSON.stringify(value)}: trusting every peer would let any client choose its address; name the proxies (addresses or CIDR ranges) or give a hop count` }
  }
  const entries = value.split(',').map((entry) => entry.trim())
  const bad = entries.filter((entry) => !(entry.toLowerCase() in NAMED_RANGES) && subnet(entry) === undefined)
  if (bad.length > 0) {
    const named = bad.map((entry) => JSON.stringify(entry.slice(0, 60))).join(', ')
    return { problem: `TRUST_PROXY: ${named} ${bad.length === 1 ? 'is not an IP address or CIDR range' : 'are not IP addresses or CIDR ranges'}; expected a comma list of addresses, ranges such as 10.0.0.0/8 or 2001:db8::/32, and loopback, linklocal, uniquelocal, or a hop count from 1 to ${MAX_HOPS}` }
  }
  return { setting: { kind: 'addresses', entries: entries.flatMap((entry) => NAMED_RANGES[entry.toLowerCase()] ?? [entry]) } }
}

/** Whether the address at `hop` (0: the socket's peer, 1: the last X-Forwarded-For entry, ...) is a trusted proxy. */
export type TrustFunction = (address: string | undefined, hop: number) => boolean

/** The one trust function of a setting; Fastify's `trustProxy` gets it as is. */
export function trustFunction(setting: TrustProxySetting): TrustFunction {
  if (setting.kind === 'none') return () => false
  if (setting.kind === 'hops') {
    const { hops } = setting
    return (_address, hop) => hop < hops
  }
  const list = new BlockList()
  for (const entry of setting.entries) {
    const { address, prefix, family } = subnet(entry)!
    list.addSubnet(address, prefix, family)
  }
  // An IPv4-mapped IPv6 peer (::ffff:10.0.0.1, a dual-stack socket) matches the IPv4 ranges.
  return (address) => {
    const version = address === undefined ? 0 : isIP(address)
    if (version === 0) return false
    try {
      return list.check(address!, version === 4 ? 'ipv4' : 'ipv6')
    } catch {
      return false // a zone id or the like: never a proxy we named
    }
  }
}

/** Whether the request came straight from a trusted proxy (its socket's peer), for headers only a proxy may set. */
export function fromTrustedProxy(trust: TrustFunction): (req: IncomingMessage) => boolean {
  return (req) => trust(req.socket?.remoteAddress, 0)
}
