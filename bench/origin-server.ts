// The real origin (buildApp) for benchmarks, started as a child so it has its own event loop.
// Answers 'stats' with its render counters; exits when the parent disconnects.

import { buildApp } from '../app.ts'
import { loadConfig } from '../src/config.ts'
import { metricValue } from '../test/support/metrics.ts'

const app = await buildApp(loadConfig({ ...process.env, PORT: '0' }))
const address = await app.listen({ port: 0, host: '127.0.0.1' })
process.send?.({ address, databaseUrl: app.database.connectionString })
process.on('message', (message) => {
  if (message === 'stats') void Promise.all([metricValue(app, 'variant_origin_renders_total'), metricValue(app, 'variant_origin_singleflight_coalesced_total')]).then(([renders, coalesced]) => process.send?.({ renders, coalesced }))
})
process.on('disconnect', () => void app.close().then(() => process.exit(0)))
