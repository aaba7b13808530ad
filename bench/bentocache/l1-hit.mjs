// Does bentocache serve an L1 hit fast enough for the origin's hot path? Three bare Fastify servers
// answer the same 5 KB entry: straight from memory (baseline), from lru-cache, and from bentocache's
// L1 (memory driver bounded in bytes, which bentocache allows only with serialization on, as the design
// requires a byte-bounded L1) in front of Redis database 12. Medians of 3 interleaved 4 s rounds.
// Run: cd bench/bentocache && npm install && npm run bench   (Redis on 127.0.0.1:6379)
import Fastify from 'fastify'
import autocannon from 'autocannon'
import { BentoCache, bentostore } from 'bentocache'
import { memoryDriver } from 'bentocache/drivers/memory'
import { redisDriver } from 'bentocache/drivers/redis'
import { LRUCache } from 'lru-cache'

const body = Buffer.alloc(5000, 'x')
const entry = { body: body.toString('latin1'), etag: '"abc"', headers: { 'cache-control': 'public, s-maxage=3600' } }
const bento = new BentoCache({ default: 'c', stores: { c: bentostore().useL1Layer(memoryDriver({ maxSize: '64mb' })).useL2Layer(redisDriver({ connection: { host: '127.0.0.1', port: 6379, db: 12 } })) } })
const lru = new LRUCache({ max: 1000 })
lru.set('k', entry)
await bento.set({ key: 'k', value: entry, ttl: '1h' })

async function server(kind) {
  const app = Fastify({ logger: false })
  app.get('/*', async (req, reply) => {
    const e = kind === 'bento' ? await bento.get({ key: 'k' }) : kind === 'lru' ? lru.get('k') : entry
    return reply.headers(e.headers).header('etag', e.etag).send(kind === 'bare' ? body : Buffer.from(e.body, 'latin1'))
  })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, url }
}
const results = { bare: [], lru: [], bento: [] }
const servers = { bare: await server('bare'), lru: await server('lru'), bento: await server('bento') }
for (let round = 0; round < 3; round++) {
  // interleaved: each round measures all three
  for (const kind of ['bare', 'lru', 'bento']) {
    const r = await autocannon({ url: servers[kind].url + '/x', connections: 50, duration: 4 })
    results[kind].push(r.requests.average)
  }
}
const med = (a) => a.sort((x, y) => x - y)[1]
console.log(JSON.stringify({ bare: med(results.bare), lru: med(results.lru), bento: med(results.bento), lruRatio: med(results.lru) / med(results.bare), bentoRatio: med(results.bento) / med(results.bare) }))
await bento.delete({ key: 'k' })
process.exit(0)
