// `npm run cdn:config -- --flavour varnish [--url http://127.0.0.1:3000]`: prints the CDN's configuration
// generated from the segments table (for Varnish, the complete VCL of src/cdn/varnish-vcl.ts) to stdout;
// logs go to stderr. Without --url it reads the configured database, loading the demo site into an empty
// one first when SEED_DEMO is on, exactly as the origin does at start, so that the output is what that
// origin will serve: `DATA_DIR=memory:// npm run cdn:config -- --flavour varnish` prints
// deploy/varnish/default.vcl. With --url it asks a running origin's admin API (ADMIN_TOKEN) instead,
// which is also the way while `npm start` holds the embedded database.

import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { loadConfig } from '../config.ts'
import { renderVarnishVcl, type VclSegment } from '../cdn/varnish-vcl.ts'
import { seedDemoSite } from '../demo/demo-site.ts'
import { listSegments } from '../pages/page-repository.ts'
import { getFromOrigin, requireAdminToken } from './admin-client.ts'
import { runCli, withDatabase } from './run-cli.ts'

// stdout is the configuration: a log line there would end up in the file.
const log = pino({ level: process.env.LOG_LEVEL ?? 'info' }, pino.destination(2))

/** Each flavour: how to render it from the segments, and the admin route that serves the same. */
const FLAVOURS: Record<string, { render: (segments: readonly VclSegment[], options: { queryAllowlist: Iterable<string>; experimentBuckets: number }) => string; route: string }> = {
  varnish: { render: renderVarnishVcl, route: '/admin/cdn/varnish.vcl' },
}

const USAGE = `usage: npm run cdn:config -- --flavour ${Object.keys(FLAVOURS).join('|')} [--url http://127.0.0.1:3000]   (prints the configuration to stdout)\n`

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { flavour: { type: 'string' }, url: { type: 'string' } } })
  if (values.flavour === undefined) {
    process.stderr.write(USAGE)
    return 2
  }
  const flavour = Object.hasOwn(FLAVOURS, values.flavour) ? FLAVOURS[values.flavour] : undefined
  if (flavour === undefined) {
    process.stderr.write(`variant-origin cdn:config: unknown flavour ${JSON.stringify(values.flavour)}; supported: ${Object.keys(FLAVOURS).join(', ')}\n${USAGE}`)
    return 2
  }
  const config = loadConfig()

  let output: string
  if (values.url !== undefined) {
    output = await getFromOrigin(values.url, requireAdminToken(config.adminToken), flavour.route)
  } else {
    output = await withDatabase(config, log, async (db) => {
      if (config.seedDemo) {
        const seed = await seedDemoSite(db, config.publicBaseUrl)
        if (seed.seeded) log.info(seed, 'demo site loaded into the empty database, as the origin does at start')
      }
      return flavour.render(await listSegments(db), { queryAllowlist: config.queryAllowlist, experimentBuckets: config.experimentBuckets })
    })
  }
  process.stdout.write(output)
  return 0
}

runCli('cdn:config', main)
