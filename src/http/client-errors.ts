// Answers for requests that never reach a route: a malformed request line or headers, headers over the
// size limit, a client too slow to send its request (Node's clientError), a path that is not valid
// percent-encoded UTF-8 or is longer than any page path (Fastify's framework errors). Each is
// `no-store`, so no cache keeps an error, and none echoes what the client sent.

import http from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'

const NO_STORE = 'no-store'

/** Node's clientError: the same statuses Fastify's default handler picks, never cacheable, and the connection closed. */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const [status, message] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'the request was not received in time']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'the request headers (or the URL) are too large']
        : [400, 'the request is not valid HTTP/1.1']
  const body = JSON.stringify({ statusCode: status, error: http.STATUS_CODES[status], message })
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nCache-Control: ${NO_STORE}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    )
  }
  socket.destroy(err)
}

/** Fastify's framework errors (a bad URL, a path over maxParamLength): what to fix, not what was sent. */
export function frameworkErrors(error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  const status = error.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 414 : 400
  const message = status === 414 ? 'the request path is longer than any page path can be' : 'the request path is not valid percent-encoded UTF-8'
  void reply.code(status).header('cache-control', NO_STORE).send({ statusCode: status, error: http.STATUS_CODES[status], message })
}
