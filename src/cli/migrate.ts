// `npm run migrate [-- --down]`: applies pending migrations (or reverts the last one) on the
// configured database, the embedded one included, and exits non-zero on failure.

import { pino } from 'pino'
import { loadConfig } from '../config.ts'
import { createMigrator, migrateToLatest } from '../db/database.ts'
import { runCli, withDatabase } from './run-cli.ts'

const log = pino({ level: process.env.LOG_LEVEL ?? 'info' })

async function main(): Promise<number> {
  // This command is the migration: the database is opened without MIGRATE_ON_START's own pass.
  return withDatabase(loadConfig(), log, async (db) => {
    if (process.argv.includes('--down')) {
      const result = await createMigrator(db).migrateDown()
      if (result.error !== undefined) throw result.error
      log.info({ reverted: (result.results ?? []).map((r) => r.migrationName) }, 'reverted the last migration')
    } else {
      const result = await migrateToLatest(db)
      const applied = (result.results ?? []).map((r) => r.migrationName)
      log.info({ applied }, applied.length === 0 ? 'already up to date' : 'migrations applied')
    }
    return 0
  }, { migrate: false })
}

runCli('migrate', main, (err) => log.error({ err }, 'migration failed'))
