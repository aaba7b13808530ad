// `npm run migrate [-- --down]`: applies pending migrations (or reverts the last one) on the
// configured database, the embedded one included, and exits non-zero on failure.

import { pino } from 'pino'
import { ConfigError, loadConfig } from '../config.ts'
import { createMigrator, migrateToLatest, openDatabase } from '../db/database.ts'

const log = pino({ level: process.env.LOG_LEVEL ?? 'info' })

async function main(): Promise<number> {
  const config = loadConfig()
  const handle = await openDatabase(config, log)
  try {
    if (process.argv.includes('--down')) {
      const result = await createMigrator(handle.db).migrateDown()
      if (result.error !== undefined) throw result.error
      log.info({ reverted: (result.results ?? []).map((r) => r.migrationName) }, 'reverted the last migration')
    } else {
      const result = await migrateToLatest(handle.db)
      const applied = (result.results ?? []).map((r) => r.migrationName)
      log.info({ applied }, applied.length === 0 ? 'already up to date' : 'migrations applied')
    }
    return 0
  } finally {
    await handle.close()
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof ConfigError) process.stderr.write(`variant-origin migrate: ${err.message}\n`)
    else log.error({ err }, 'migration failed')
    process.exit(1)
  },
)
