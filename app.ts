// The one app factory: the server entry and every test build the app through it, so tests run the
// real Fastify options, plugins and routes.

import Fastify, { LogController, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { Config } from './src/config.ts'
import { clientErrorHandler, frameworkErrors } from './src/http/client-errors.ts'
import { logDestination } from './src/log-destination.ts'
import adminAuthPlugin from './plugins/admin-auth.ts'
import configPlugin from './plugins/config.ts'
import databasePlugin from './plugins/database.ts'
import embedderPlugin from './plugins/embedder.ts'
import eventsPlugin from './plugins/events.ts'
import experimentsPlugin from './plugins/experiments.ts'
import errorHandlerPlugin from './plugins/error-handler.ts'
import hitFastPathPlugin, { HitFastPath } from './plugins/hit-fast-path.ts'
import loadSheddingPlugin from './plugins/load-shedding.ts'
import metricsPlugin from './plugins/metrics.ts'
import openapiPlugin from './plugins/openapi.ts'
import invalidationPlugin from './plugins/invalidation.ts'
import pagesPlugin from './plugins/pages.ts'
import purgePlugin from './plugins/purge.ts'
import redisPlugin from './plugins/redis.ts'
import requestTelemetryPlugin, { requestIdGenerator } from './plugins/request-telemetry.ts'
import { fromTrustedProxy, trustFunction } from './src/http/trust-proxy.ts'
import segmentsPlugin from './plugins/segments.ts'
import adminRoutes from './routes/admin.ts'
import adminJobRoutes from './routes/admin-jobs.ts'
import cdnConfigRoutes from './routes/cdn-config.ts'
import eventRoutes from './routes/events.ts'
import healthRoutes from './routes/health.ts'
import metricsRoutes from './routes/metrics.ts'
import openapiRoutes from './routes/openapi.ts'
import pageRoutes from './routes/pages.ts'
import searchConsoleRoutes from './routes/search-console.ts'
import experimentRoutes from './routes/experiments.ts'
import sitemapRoutes from './routes/sitemaps.ts'

export interface BuildAppOptions {
  /** Overrides the pino logger options (tests pass `false` or a level). */
  logger?: FastifyServerOptions['logger']
}

const prettyLogs = (config: Config, stdoutIsTTY: boolean): boolean => config.logPretty === 'true' || (config.logPretty === 'auto' && stdoutIsTTY)

/** The logger's options, without its destination (tests add their own `stream`; see serverLogger()). */
export function loggerOptions(config: Config, stdoutIsTTY = process.stdout.isTTY === true): FastifyServerOptions['logger'] {
  const pretty = prettyLogs(config, stdoutIsTTY)
  return {
    level: config.logLevel,
    // JSON lines for log shippers; pino-pretty only for a human at a terminal.
    ...(pretty ? { transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } } : {}),
    // Secrets never reach the logs, whatever a handler logs.
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'config.adminToken', 'config.openaiApiKey'], censor: '[redacted]' },
  }
}

/**
 * The server's logger: JSON lines to stdout through an asynchronous buffer (LOG_BUFFER_BYTES; see
 * src/log-destination.ts), or pino-pretty's transport at a terminal. server.ts drains the buffer on close.
 */
export function serverLogger(config: Config, stdoutIsTTY = process.stdout.isTTY === true): FastifyServerOptions['logger'] {
  const options = loggerOptions(config, stdoutIsTTY) as Record<string, unknown>
  const stream = prettyLogs(config, stdoutIsTTY) ? undefined : logDestination(config.logBufferBytes)
  return stream === undefined ? options : { ...options, stream }
}

export async function buildApp(config: Config, options: BuildAppOptions = {}): Promise<FastifyInstance> {
  const timeouts = {
    connectionTimeout: 30_000,
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: 72_000, // longer than common CDN/load-balancer idle timeouts (60 s), so the origin never closes first
  }
  // A slowloris client (headers a byte at a time) is cut after headersTimeout, within one check interval.
  const serverTimeouts = { ...timeouts, headersTimeout: config.headersTimeoutMs, connectionsCheckingInterval: config.connectionsCheckIntervalMs }
  // Only the proxies TRUST_PROXY names may say who the client is (X-Forwarded-For) or which request this is.
  const trust = trustFunction(config.trustProxy)
  // Fresh L1 hits are answered in front of Fastify (plugins/hit-fast-path.ts); the rest reach Fastify.
  const fastPath = new HitFastPath()
  const genReqId = requestIdGenerator(fromTrustedProxy(trust))
  const app = Fastify({
    logger: options.logger ?? serverLogger(config),
    // plugins/request-telemetry.ts logs one line per request instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    // The CDN's request id (sent by a trusted proxy, and a bounded token) ties its logs to ours.
    genReqId,
    serverFactory: (handler) => fastPath.createServer(handler, serverTimeouts),
    ...timeouts,
    // Default: no peer is trusted, and the socket's address is the client (request.ip).
    trustProxy: config.trustProxy.kind === 'none' ? false : trust,
    bodyLimit: 1024 * 1024,
    return503OnClosing: true,
    // Errors before any route (bad request line, 431, 408, bad URL, 414): no-store, nothing echoed.
    clientErrorHandler,
    frameworkErrors,
    // The embedded PostgreSQL takes seconds to start and migrate on a busy machine; avvio's default is 10 s.
    pluginTimeout: 120_000,
    routerOptions: { ignoreDuplicateSlashes: false, maxParamLength: 2048 },
  }).withTypeProvider<TypeBoxTypeProvider>()

  await app.register(configPlugin, { config })
  await app.register(errorHandlerPlugin)
  await app.register(metricsPlugin)
  await app.register(requestTelemetryPlugin)
  await app.register(loadSheddingPlugin)
  await app.register(openapiPlugin)
  await app.register(redisPlugin)
  await app.register(databasePlugin)
  await app.register(invalidationPlugin)
  await app.register(segmentsPlugin)
  await app.register(pagesPlugin)
  await app.register(hitFastPathPlugin, { fastPath, genReqId })
  await app.register(embedderPlugin)
  await app.register(purgePlugin)
  await app.register(eventsPlugin)
  await app.register(experimentsPlugin)
  await app.register(adminAuthPlugin)
  await app.register(healthRoutes)
  await app.register(metricsRoutes)
  await app.register(openapiRoutes)
  await app.register(adminRoutes)
  await app.register(adminJobRoutes)
  await app.register(cdnConfigRoutes)
  await app.register(searchConsoleRoutes)
  await app.register(sitemapRoutes)
  await app.register(experimentRoutes)
  await app.register(eventRoutes)
  await app.register(pageRoutes)
  return app
}
