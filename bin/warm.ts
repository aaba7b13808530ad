// Lives in bin/, not src/: it builds the Fastify app, and src/ stays free of Fastify.
// `npm run warm -- --top N [--concurrency C] [--url http://127.0.0.1:3000]`
// Renders the top N pages by crawl weight for every segment into Redis (L2). With --url it asks a
// running origin (POST /admin/warm, ADMIN_TOKEN), which starts a job, and follows the job
// (GET /admin/jobs/:id) until it ends, with its progress on stderr; without, it builds the origin in
// this process. Either way the report is printed on stdout; a failed or refused warm-up exits 1.

import { parseArgs } from 'node:util'
import { loadConfig } from '../src/config.ts'
import { runCli } from '../src/cli/run-cli.ts'
import { followJob, postToOrigin } from '../src/cli/admin-client.ts'

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { top: { type: 'string' }, concurrency: { type: 'string', default: '8' }, url: { type: 'string' } } })
  const top = Number(values.top)
  const concurrency = Number(values.concurrency)
  if (!Number.isInteger(top) || top < 1 || top > 100_000 || !Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) {
    process.stderr.write('usage: npm run warm -- --top 1..100000 [--concurrency 1..64] [--url http://127.0.0.1:3000]\n')
    return 2
  }
  const config = loadConfig()
  let report: unknown
  if (values.url !== undefined) {
    const { location } = (await postToOrigin(values.url, config.adminToken, '/admin/warm', { top, concurrency })) as { location: string }
    let shown = ''
    report = await followJob(values.url, config.adminToken, location, {
      intervalMs: 500,
      onProgress: ({ id, progress }) => {
        const { pages, pagesDone } = progress as { pages: number | null; pagesDone: number }
        const line = `warm-up ${id}: ${pagesDone}/${pages ?? '?'} pages`
        if (line !== shown) process.stderr.write(`${(shown = line)}\n`)
      },
    })
  } else {
    if (config.redisUrl === undefined) throw new Error('warm-up fills the shared Redis tier, and REDIS_URL is off')
    const { buildApp } = await import('../app.ts')
    const { warmUp } = await import('../src/cache/warm-up.ts')
    // A one-shot command: no engagement consumer (it would join the group only to leave it).
    const app = await buildApp({ ...config, seedDemo: false, eventsConsumer: false }, { logger: { level: 'warn' } })
    try {
      await app.ready()
      report = await warmUp(app.database.db, app.pages, [...app.segments().slugs], top, concurrency)
    } finally {
      await app.close()
    }
  }
  process.stdout.write(`${JSON.stringify(report)}\n`)
  return 0
}

runCli('warm', main)
