// `npm run sitemaps:write -- --out DIR`: writes the same sitemap index and shards the origin serves
// (`DIR/sitemap.xml`, `DIR/sitemaps/N.xml`) as static files, for a bucket or a web server to serve at
// millions of pages without the origin. Streamed exactly as the origin streams them (keyset batches,
// one at a time), in a process that loads only the database client: peak RSS is reported.
// Every file is written under a temporary name and renamed into place, the index last, so a reader
// never sees a half-written file or an index naming a shard that is not there yet.

import { createWriteStream, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { loadConfig } from '../config.ts'
import { SitemapService } from '../sitemaps/sitemap-service.ts'
import { runCli, withDatabase } from './run-cli.ts'

const log = pino({ level: process.env.LOG_LEVEL ?? 'info' })
const USAGE = 'usage: npm run sitemaps:write -- --out DIR   (writes DIR/sitemap.xml and DIR/sitemaps/N.xml)\n'

/** Bytes written to one file; the file appears under its name only once complete. */
async function writeAtomically(path: string, content: Readable): Promise<number> {
  const temporary = `${path}.tmp-${process.pid}`
  let bytes = 0
  content.on('data', (chunk: Buffer | string) => (bytes += Buffer.byteLength(chunk)))
  try {
    await pipeline(content, createWriteStream(temporary))
    renameSync(temporary, path)
    return bytes
  } catch (err) {
    rmSync(temporary, { force: true })
    throw err
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { out: { type: 'string' } } })
  if (values.out === undefined || values.out === '') {
    process.stderr.write(USAGE)
    return 2
  }
  const out = resolve(values.out)
  const config = loadConfig()
  const started = Date.now()
  const report = await withDatabase(config, log, async (db) => {
    const sitemaps = new SitemapService(db, config, log)
    const state = await sitemaps.state()
    mkdirSync(join(out, 'sitemaps'), { recursive: true })
    let bytes = 0
    for (let shard = 0; shard < state.shardCount; shard++) bytes += await writeAtomically(join(out, 'sitemaps', `${shard}.xml`), sitemaps.shardStream(state, shard))
    bytes += await writeAtomically(join(out, 'sitemap.xml'), sitemaps.indexStream(state))
    // Shards of an earlier, larger run would be listed by no index: remove them.
    const stale = readdirSync(join(out, 'sitemaps')).filter((name) => {
      const match = /^(\d+)\.xml$/.exec(name)
      return match !== null && Number(match[1]) >= state.shardCount
    })
    for (const name of stale) rmSync(join(out, 'sitemaps', name))
    return { shards: state.shardCount, version: state.version, bytes, removedStaleShards: stale.length }
  })
  process.stdout.write(`${JSON.stringify({ ...report, out, ms: Date.now() - started, maxRssBytes: process.resourceUsage().maxRSS * 1024 })}\n`)
  return 0
}

runCli('sitemaps:write', main)
