// What every `npm run` command shares: how it ends (its exit code; a failure as one line on stderr
// naming the command, with the problems of a refused batch one per line) and how it holds the database
// (opened, migrated when MIGRATE_ON_START is on, always closed).

import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import type { Config } from '../config.ts'
import { ConfigError } from '../config.ts'
import { migrateToLatest, openDatabase } from '../db/database.ts'
import type { Database } from '../db/schema.ts'
import { DomainError, isProblem } from '../errors.ts'

/** The message a user reads for a failed command: the error's, then each problem it names. */
export function describeFailure(err: unknown): string {
  if (!(err instanceof Error)) return String(err)
  if (!(err instanceof DomainError) || err.details === undefined) return err.message
  if (Array.isArray(err.details) && err.details.every(isProblem)) {
    return [err.message, ...err.details.map((p) => `  ${p.record < 0 ? '' : `row ${p.record}: `}${p.field}: ${p.message}`)].join('\n')
  }
  return `${err.message}\n${JSON.stringify(err.details, null, 2)}`
}

/**
 * Runs a command's main and exits with its code. A failure exits 1 with `variant-origin NAME: ...` on
 * stderr; `onUnexpected` may log an error that is neither a configuration nor a domain error (with its
 * stack) in place of that line.
 */
export function runCli(name: string, main: () => Promise<number>, onUnexpected?: (err: unknown) => void): void {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      if (onUnexpected !== undefined && !(err instanceof ConfigError) && !(err instanceof DomainError)) onUnexpected(err)
      else process.stderr.write(`variant-origin ${name}: ${describeFailure(err)}\n`)
      process.exit(1)
    },
  )
}

/**
 * Opens the configured database (the embedded one included), migrates it if configured to, runs `work`,
 * closes it. The primary only: DATABASE_READ_URL is the origin's render path, not the commands'.
 */
export async function withDatabase<T>(config: Config, log: Logger, work: (db: Kysely<Database>) => Promise<T>, options: { migrate?: boolean } = {}): Promise<T> {
  const handle = await openDatabase({ ...config, databaseReadUrls: [] }, log)
  try {
    if (options.migrate ?? config.migrateOnStart) await migrateToLatest(handle.db)
    return await work(handle.db)
  } finally {
    await handle.close()
  }
}
