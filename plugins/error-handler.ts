// One error handler: domain codes map to statuses, client errors say what to fix, server errors
// hide their details and are never cached.

import fp from 'fastify-plugin'
import type { FastifyError, FastifyInstance, FastifyRequest } from 'fastify'
import { isConnectionError } from '../src/db/connection-errors.ts'
import { DomainError, type ErrorCode } from '../src/errors.ts'

const STATUS_BY_CODE: Record<ErrorCode, number> = {
  DATABASE_UNAVAILABLE: 503,
  VALIDATION_FAILED: 400,
  NOT_FOUND: 404,
  UNPROCESSABLE: 422,
  CONFLICT: 409,
  UNAVAILABLE: 503,
  TOO_LARGE: 413,
}

const RETRY_AFTER_SECONDS = '5'

function formatBytes(bytes: number): string {
  const MiB = 1024 * 1024
  if (bytes % MiB === 0) return `${bytes / MiB} MiB`
  if (bytes % 1024 === 0) return `${bytes / 1024} KiB`
  return `${bytes} bytes`
}

/**
 * A body over its route's limit, in bytes or in records (a batch array over its schema's maxItems),
 * as the 413 naming that limit; undefined for any other error. A batch over its record limit is too
 * large a request, not a bad record: the answer is to split it, not to fix it.
 */
function tooLarge(error: FastifyError, request: FastifyRequest): DomainError | undefined {
  const route = request.routeOptions.url === undefined ? 'this route' : `${request.method} ${request.routeOptions.url}`
  if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    const limit = request.routeOptions.bodyLimit
    return new DomainError('TOO_LARGE', `the request body is larger than the ${formatBytes(limit)} (${limit} bytes) limit of ${route}; send it in smaller batches`)
  }
  const first = error.validation?.[0]
  if (error.validationContext === 'body' && first?.keyword === 'maxItems' && /^\/[^/]+$/.test(first.instancePath)) {
    const field = first.instancePath.slice(1)
    const given = (request.body as Record<string, unknown> | undefined)?.[field]
    const count = Array.isArray(given) ? ` (got ${given.length.toLocaleString('en-US')})` : ''
    const limit = Number(first.params.limit).toLocaleString('en-US')
    return new DomainError('TOO_LARGE', `${field}: at most ${limit} a request to ${route}${count}; split the batch into requests of up to ${limit}`)
  }
  return undefined
}

/**
 * The database could not be reached or went away under the request (the primary stopped, say, while the
 * read replicas keep the pages up): a 503 to retry, not a 500. A write that failed so was not committed,
 * short of a connection lost during its COMMIT; the admin batches are idempotent, so a retry is safe.
 */
function databaseUnavailable(error: FastifyError, request: FastifyRequest): DomainError | undefined {
  // An error Fastify gave a status (a client that aborted its upload is an ECONNRESET with 400) is not the database's.
  if (error.statusCode !== undefined || !isConnectionError(error)) return undefined
  const reading = request.method === 'GET' || request.method === 'HEAD'
  return new DomainError('DATABASE_UNAVAILABLE', reading ? 'the database is unavailable; retry shortly' : 'the primary database is unavailable, so writes cannot be made; retry shortly', { cause: error })
}

async function errorHandlerPlugin(app: FastifyInstance): Promise<void> {
  app.setErrorHandler((caught: FastifyError | DomainError, request, reply) => {
    const error = caught instanceof DomainError ? caught : (databaseUnavailable(caught, request) ?? tooLarge(caught, request) ?? caught)
    const status = error instanceof DomainError ? STATUS_BY_CODE[error.code] : (error.statusCode ?? 500)
    reply.header('cache-control', 'no-store')
    if (status >= 500) {
      request.log.error({ err: error }, 'request failed')
      if (status === 503) reply.header('retry-after', RETRY_AFTER_SECONDS)
      // Domain errors carry messages written for the caller; anything else may leak internals.
      return reply.code(status).send({
        statusCode: status,
        error: status === 503 ? 'Service Unavailable' : 'Internal Server Error',
        message: error instanceof DomainError ? error.message : status === 503 ? 'temporarily unavailable; retry shortly' : 'internal error',
      })
    }
    request.log.info({ err: error }, 'client error')
    const details = error instanceof DomainError ? error.details : undefined
    return reply.code(status).send({
      statusCode: status,
      error: error instanceof DomainError ? error.code : (error.code ?? 'Bad Request'),
      message: error.message,
      ...(details === undefined ? {} : { details }),
    })
  })
}

export default fp(errorHandlerPlugin, { name: 'error-handler' })
