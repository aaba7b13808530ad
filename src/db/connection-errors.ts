// Which database errors mean "the server cannot be reached or went away" (as opposed to a bad query or
// a constraint): the read router moves such a read from a replica to the primary, and the HTTP layer
// answers them 503 (retry shortly) instead of 500.

/** Socket-level failures Node reports while connecting or on an open connection. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'ECONNABORTED'])

/**
 * SQLSTATEs of a server that is going or not ready: class 08 (connection exception), admin_shutdown,
 * crash_shutdown, cannot_connect_now (starting up, shutting down, or a standby not accepting connections).
 */
const SERVER_GONE = /^(08...|57P01|57P02|57P03)$/

/** What pg and pg-pool say when a connection ends under a query or cannot be had in time. */
const PG_MESSAGES = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error and is not queryable|Connection terminated due to connection timeout)/

export function isConnectionError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false
  const { code, message, errors } = err as { code?: unknown; message?: unknown; errors?: unknown }
  if (typeof code === 'string' && (NETWORK_CODES.has(code) || SERVER_GONE.test(code))) return true
  if (typeof message === 'string' && PG_MESSAGES.test(message)) return true
  // Node's happy-eyeballs connect (a host with several addresses) fails with an AggregateError of the attempts.
  return Array.isArray(errors) && errors.length > 0 && errors.every(isConnectionError)
}
