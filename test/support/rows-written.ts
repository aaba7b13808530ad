// What an input could have written, as row counts of every table ingest, imports and purges touch: a
// refused request must leave these as they were.

import type { Kysely } from 'kysely'
import type { Database } from '../../src/db/schema.ts'

const TABLES = { pages: 'pages', variants: 'content_variants', segments: 'segments', imports: 'search_console_imports', importRows: 'search_console_rows', outbox: 'purge_outbox' } as const

export async function rowsWritten(db: Kysely<Database>): Promise<Record<keyof typeof TABLES, number>> {
  const counts = {} as Record<keyof typeof TABLES, number>
  for (const [name, table] of Object.entries(TABLES) as Array<[keyof typeof TABLES, (typeof TABLES)[keyof typeof TABLES]]>) {
    counts[name] = Number((await db.selectFrom(table).select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()).n)
  }
  return counts
}
