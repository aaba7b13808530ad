// `npm run experiments [-- --page /crm] [--json] [--url http://127.0.0.1:3000]`
// The experiments as a table: per page, segment and variant, views, conversions, rate with its 95%
// interval, probability of being best, share of buckets, since when. Read from the database (as the
// origin is configured: DATABASE_URL or the embedded one under DATA_DIR), or with --url from a
// running origin's GET /admin/experiments (ADMIN_TOKEN).

import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { loadConfig } from '../config.ts'
import { isCanonicalPagePath } from '../http/url-normalize.ts'
import { listExperiments, readExperimentCounts } from '../experiments/experiment-repository.ts'
import { type ExperimentReport, experimentReports, formatReports } from '../experiments/experiment-report.ts'
import { getFromOrigin } from './admin-client.ts'
import { runCli, withDatabase } from './run-cli.ts'

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { page: { type: 'string' }, json: { type: 'boolean', default: false }, url: { type: 'string' } } })
  if (values.page !== undefined && !isCanonicalPagePath(values.page)) {
    process.stderr.write(`npm run experiments: --page ${JSON.stringify(values.page)} is not a canonical page path, such as /crm\nusage: npm run experiments [-- --page /crm] [--json] [--url http://127.0.0.1:3000]\n`)
    return 2
  }
  const config = loadConfig()
  let reports: ExperimentReport[]
  if (values.url !== undefined) {
    const query = values.page === undefined ? '' : `?page=${encodeURIComponent(values.page)}`
    reports = (JSON.parse(await getFromOrigin(values.url, config.adminToken, `/admin/experiments${query}`)) as { experiments: ExperimentReport[] }).experiments
  } else {
    const log = pino({ level: 'warn' })
    reports = await withDatabase(config, log, async (db) => experimentReports(await listExperiments(db, values.page === undefined ? {} : { path: values.page }), await readExperimentCounts(db)))
  }
  process.stdout.write(values.json ? `${JSON.stringify(reports, null, 2)}\n` : formatReports(reports))
  return 0
}

runCli('experiments', main)
