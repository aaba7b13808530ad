// The real origin (buildApp) for the sitemap benchmark, in its own process so its RSS is its own:
// samples process.memoryUsage() every 10 ms and answers 'rss' with the peak RSS and heapUsed seen and
// the kernel's maxRSS. Exits when the parent disconnects.

import { buildApp } from '../app.ts'
import { loadConfig } from '../src/config.ts'

let peak = process.memoryUsage().rss
let peakHeap = 0
const sampler = setInterval(() => {
  const usage = process.memoryUsage()
  peak = Math.max(peak, usage.rss)
  peakHeap = Math.max(peakHeap, usage.heapUsed)
}, 10)
const app = await buildApp(loadConfig({ ...process.env, PORT: '0' }))
const address = await app.listen({ port: 0, host: '127.0.0.1' })
const idle = process.memoryUsage().rss
peak = idle
peakHeap = process.memoryUsage().heapUsed
process.send?.({ address, idleRss: idle })
process.on('message', (message) => {
  if (message === 'rss') process.send?.({ peakRss: peak, peakHeap, maxRss: process.resourceUsage().maxRSS * 1024 })
})
process.on('disconnect', () => {
  clearInterval(sampler)
  void app.close().then(() => process.exit(0))
})
