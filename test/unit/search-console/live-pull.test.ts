// The live pull against a local server speaking the Search Console API: the RS256 JWT verified with
// the public key, paging by startRow, Retry-After honoured on 429, exponential backoff on 5xx.

import t from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { parseServiceAccountKey, pullSearchAnalytics, retryAfterMs, serviceAccountJwt } from '../../../src/search-console/live-pull.ts'
import { startFakeSearchConsole } from '../../support/fake-search-console.ts'

const EMAIL = 'origin-import@example-project.iam.gserviceaccount.com'
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
const rowsOf = (n: number) => Array.from({ length: n }, (_, i) => ({ keys: [`https://www.example.test/p/${i}`], clicks: i, impressions: 10 * i + 1, ctr: i / (10 * i + 1), position: 2 }))

t.test('service account keys', async (t) => {
  t.throws(() => parseServiceAccountKey('{nope'), /not JSON/)
  // A key file broken inside its private key: the message gives the place, never the key's text.
  const broken = t.throws(() => parseServiceAccountKey(`{"client_email":"${EMAIL}","private_key": xMIIEvSECRETKEYMATERIAL"}`)) as Error
  t.match(broken.message, /^the service account key is not JSON; expected the JSON key file/)
  t.notMatch(broken.message, /MIIEv|SECRET/)
  t.throws(() => parseServiceAccountKey('{"client_email":"x","private_key":1,"token_uri":5}'), /client_email: missing or not an email address; private_key: missing or not a PEM private key; token_uri: must be a URL/)
  t.throws(() => parseServiceAccountKey('null'), /client_email/)
  t.same(parseServiceAccountKey(JSON.stringify({ client_email: EMAIL, private_key: pem })).token_uri, 'https://oauth2.googleapis.com/token')
})

t.test('Retry-After as seconds or an HTTP date', async (t) => {
  t.equal(retryAfterMs('3'), 3000)
  t.equal(retryAfterMs(null), undefined)
  t.equal(retryAfterMs('  '), undefined)
  t.equal(retryAfterMs('soon'), undefined)
  t.equal(retryAfterMs(new Date(10_000).toUTCString(), 4_000), 6_000)
  t.equal(retryAfterMs(new Date(1_000).toUTCString(), 4_000), 0)
})

t.test('the live pull', async (t) => {
  const fake = await startFakeSearchConsole(publicKey, EMAIL)
  t.teardown(() => fake.close())
  const key = parseServiceAccountKey(JSON.stringify({ type: 'service_account', client_email: EMAIL, private_key: pem, token_uri: fake.tokenUrl }))
  const options = { apiUrl: fake.url, tokenUrl: undefined, siteUrl: 'sc-domain:example.test', startDate: '2026-10-01', endDate: '2026-10-28', key, maxRetries: 3 }

  t.test('pages by startRow until a short page; the JWT verifies', async (t) => {
    fake.rows = rowsOf(5)
    fake.queries.length = 0
    const result = await pullSearchAnalytics({ ...options, rowLimit: 2 })
    t.same(fake.rejectedTokens, [])
    t.same(result.rows, fake.rows)
    t.same(fake.queries.map((q) => q.body.startRow), [0, 2, 4])
    t.same(fake.queries[0]!.body, { startDate: '2026-10-01', endDate: '2026-10-28', dimensions: ['page'], type: 'web', rowLimit: 2, startRow: 0 })
    t.equal(fake.queries[0]!.site, 'sc-domain:example.test')
    t.match(result, { requests: 4, retries: 0 }, 'one token request and three queries')
    fake.rows = rowsOf(4)
    fake.queries.length = 0
    t.equal((await pullSearchAnalytics({ ...options, rowLimit: 2 })).rows.length, 4)
    t.same(fake.queries.map((q) => q.body.startRow), [0, 2, 4], 'an exact multiple ends on an empty page')
    fake.queries.length = 0
    await pullSearchAnalytics({ ...options, rowLimit: 100_000 })
    t.equal(fake.queries[0]!.body.rowLimit, 25_000, 'rowLimit is capped at the API maximum')
  })

  t.test('429 waits for Retry-After, then carries on', async (t) => {
    fake.rows = rowsOf(3)
    fake.queries.length = 0
    fake.throttle = { next: 1, retryAfter: '1', status: 429 }
    const result = await pullSearchAnalytics({ ...options, rowLimit: 25_000 })
    t.equal(result.rows.length, 3)
    t.equal(result.retries, 1)
    t.equal(fake.queries.length, 2)
    t.ok(fake.queries[1]!.at - fake.queries[0]!.at >= 950, `waited ${fake.queries[1]!.at - fake.queries[0]!.at} ms for Retry-After: 1`)
  })

  t.test('5xx without Retry-After backs off exponentially; too many failures give up', async (t) => {
    fake.rows = rowsOf(1)
    fake.throttle = { next: 2, retryAfter: '', status: 503 }
    const waits: number[] = []
    const sleep = async (ms: number) => void waits.push(ms)
    const warnings: object[] = []
    const result = await pullSearchAnalytics({ ...options, sleep, log: { warn: (o) => void warnings.push(o) } })
    t.equal(result.retries, 2)
    t.equal(waits.length, 2)
    t.ok(waits[0]! <= 1000 && waits[1]! <= 2000, `jittered waits under 1 s then 2 s: ${waits}`)
    t.equal(warnings.length, 2)
    fake.throttle = { next: 10, retryAfter: '0', status: 429 }
    await t.rejects(pullSearchAnalytics({ ...options, maxRetries: 2, sleep }), /HTTP 429 .*gave up after 3 attempts/)
    fake.throttle.next = 0
  })

  t.test('a key the server does not know is refused at the token endpoint, without retries', async (t) => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
    const before = fake.tokenRequests
    await t.rejects(pullSearchAnalytics({ ...options, key: { ...key, private_key: other } }), /token: HTTP 400 .*signature does not verify/)
    t.equal(fake.tokenRequests, before + 1)
    await t.rejects(pullSearchAnalytics({ ...options, tokenUrl: `${fake.url}/token?x` }), /token: HTTP 404/, 'tokenUrl overrides the key')
    await t.rejects(pullSearchAnalytics({ ...options, apiUrl: 'http://127.0.0.1:1', maxRetries: 0 }), /searchAnalytics.query startRow 0: .*gave up after 1 attempts/)
  })

  t.test('the JWT carries the claims Google checks', async (t) => {
    const [header, claims] = serviceAccountJwt(key, 'https://aud.test/token', 1_000).split('.')
    t.same(JSON.parse(Buffer.from(header!, 'base64url').toString()), { alg: 'RS256', typ: 'JWT' })
    t.same(JSON.parse(Buffer.from(claims!, 'base64url').toString()), { iss: EMAIL, scope: 'https://www.googleapis.com/auth/webmasters.readonly', aud: 'https://aud.test/token', iat: 1_000, exp: 4_600 })
  })
})
