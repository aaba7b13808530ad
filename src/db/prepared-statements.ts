// Prepared statements for the hot path: pg's named queries under kysely, which has no API for them.

import { createHash } from 'node:crypto'
import type pg from 'pg'

/**
 * The mark that makes a statement a prepared one: pg sends it under a name derived from its text, so
 * PostgreSQL parses and plans it once per connection, not once per execution. Kysely has no API for
 * prepared statements; pg's named queries are that API. For the hot statements only (the page lookup of
 * every miss): each distinct text is a statement every connection keeps for its life.
 */
export const PREPARED = '/* prepared */ '

const statementNames = new Map<string, string>()
function statementName(text: string): string {
  let name = statementNames.get(text)
  if (name === undefined) statementNames.set(text, (name = `vo_${createHash('sha256').update(text).digest('hex').slice(0, 24)}`))
  return name
}

/** Sends this client's PREPARED statements (kysely's `query(text, values)` calls) as pg named queries. */
export function namePreparedStatements(client: pg.PoolClient): void {
  const query = client.query.bind(client) as (config: unknown, values?: unknown, callback?: unknown) => unknown
  client.query = ((config: unknown, values?: unknown, callback?: unknown) => {
    if (typeof config === 'string' && config.startsWith(PREPARED) && Array.isArray(values)) return query({ name: statementName(config), text: config, values }, callback)
    return query(config, values, callback)
  }) as typeof client.query
}
