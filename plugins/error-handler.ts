// One error handler: domain codes map to statuses, client errors say what to fix, server errors
// hide their details and are never cached.

import fp from 'fastify-plugin'
import type { FastifyError, FastifyInstance } from 'fastify'
import { DomainError, type ErrorCode } from '../src/errors.ts'

const STATUS_BY_CODE: Record<ErrorCode, number> = {
  DATABASE_UNAVAILABLE: 503,
  VALIDATION_FAILED: 400,
  NOT_FOUND: 404,
  UNPROCESSABLE: 422,
  CONFLICT: 409,
  UNAVAILABLE: 503,
}

const RETRY_AFTER_SECONDS = '5'

async function errorHandlerPlugin(app: FastifyInstance): Promise<void> {
  app.setErrorHandler((error: FastifyError | DomainError, request, reply) => {
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
