// TRUST_PROXY (issue 12 item 6): no peer is trusted by default; a list names proxies by address or
// range, a hop count trusts that many hops; a bad entry is named at start.

import t from 'tap'
import type { IncomingMessage } from 'node:http'
import { loadConfig } from '../../../src/config.ts'
import { fromTrustedProxy, parseTrustProxy, trustFunction, type TrustProxySetting } from '../../../src/http/trust-proxy.ts'

const setting = (raw: string | undefined): TrustProxySetting => {
  const parsed = parseTrustProxy(raw)
  if ('problem' in parsed) throw new Error(parsed.problem)
  return parsed.setting
}

t.test('default and explicit "none": nobody is trusted', async (t) => {
  for (const raw of [undefined, '', '  ', 'none', 'false', 'OFF', '0']) t.same(setting(raw), { kind: 'none' }, JSON.stringify(raw))
  const trust = trustFunction(setting(undefined))
  for (const address of ['127.0.0.1', '::1', '10.1.2.3', '172.16.0.1', '192.168.1.1']) t.equal(trust(address, 0), false, address)
  t.equal(loadConfig({}).trustProxy.kind, 'none', 'the configuration default')
})

t.test('addresses, ranges and names', async (t) => {
  const trust = trustFunction(setting(' 203.0.113.7 , 10.0.0.0/8,2001:db8::/32, loopback '))
  const table: Array<[string, boolean]> = [
    ['203.0.113.7', true],
    ['203.0.113.8', false],
    ['10.200.3.4', true],
    ['11.0.0.1', false],
    ['::ffff:10.0.0.9', true], // an IPv4-mapped peer on a dual-stack socket
    ['2001:db8:1::5', true],
    ['2001:db9::5', false],
    ['127.0.0.1', true],
    ['127.8.9.10', true],
    ['::1', true],
    ['192.168.1.1', false],
    ['not-an-address', false],
    ['fe80::1%eth0', false],
    ['', false],
  ]
  for (const [address, expected] of table) t.equal(trust(address, 0), expected, address)
  t.equal(trust(undefined, 0), false, 'no address (a destroyed socket)')
  t.same(setting('uniquelocal').kind, 'addresses')
  t.equal(trustFunction(setting('UniqueLocal'))('172.20.1.1', 0), true)
  t.equal(trustFunction(setting('linklocal'))('169.254.169.254', 0), true)
})

t.test('a hop count trusts that many hops, whoever they are', async (t) => {
  t.same(setting('2'), { kind: 'hops', hops: 2 })
  const trust = trustFunction(setting('2'))
  t.equal(trust('198.51.100.1', 0), true)
  t.equal(trust('198.51.100.2', 1), true)
  t.equal(trust('198.51.100.3', 2), false)
})

t.test('bad values are refused, naming the entry', async (t) => {
  const table: Array<[string, RegExp]> = [
    ['10.0.0.0/33', /TRUST_PROXY: "10.0.0.0\/33" is not an IP address or CIDR range; expected a comma list/],
    ['10.0.0.1, 300.1.1.1', /TRUST_PROXY: "300.1.1.1" is not an IP address/],
    ['cloudflare', /"cloudflare" is not an IP address/],
    ['10.0.0.0/8,,10.1.0.0/16', /"" is not an IP address/],
    ['2001:db8::/129', /"2001:db8::\/129"/],
    ['a, b', /"a", "b" are not IP addresses or CIDR ranges/],
    ['11', /TRUST_PROXY="11": a hop count is from 1 to 10/],
    ['true', /TRUST_PROXY="true": trusting every peer would let any client choose its address/],
  ]
  for (const [raw, expected] of table) {
    const parsed = parseTrustProxy(raw)
    t.ok('problem' in parsed, raw)
    if ('problem' in parsed) t.match(parsed.problem, expected, raw)
    t.throws(() => loadConfig({ TRUST_PROXY: raw }), expected, `${raw}: the configuration refuses it`)
  }
})

t.test('the peer check the request id uses: the socket address at hop 0', async (t) => {
  const fromProxy = fromTrustedProxy(trustFunction(setting('127.0.0.1')))
  const req = (remoteAddress: string | undefined) => ({ socket: { remoteAddress } }) as unknown as IncomingMessage
  t.equal(fromProxy(req('127.0.0.1')), true)
  t.equal(fromProxy(req('::ffff:127.0.0.1')), true)
  t.equal(fromProxy(req('10.0.0.1')), false)
  t.equal(fromProxy(req(undefined)), false)
  t.equal(fromTrustedProxy(trustFunction(setting('1')))(req('198.51.100.1')), true, 'a hop count trusts the peer')
})

t.test('server timeouts: defaults, and a headers timeout never past the request timeout', async (t) => {
  t.match(loadConfig({}), { headersTimeoutMs: 10_000, requestTimeoutMs: 120_000, connectionsCheckIntervalMs: 2_000 })
  t.throws(() => loadConfig({ HEADERS_TIMEOUT_MS: '5000', REQUEST_TIMEOUT_MS: '1000' }), /HEADERS_TIMEOUT_MS=5000: must not exceed REQUEST_TIMEOUT_MS \(1000\)/)
  t.throws(() => loadConfig({ CONNECTIONS_CHECK_INTERVAL_MS: '60000' }), /CONNECTIONS_CHECK_INTERVAL_MS="60000": expected an integer from 50 to 30000/)
})
