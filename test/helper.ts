// Builds the real app (the same buildApp the server uses) on a throwaway in-memory embedded
// PostgreSQL and a dedicated Redis database number, and closes it when the test ends.

import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { buildApp } from '../app.ts'
import { loadConfig, type Config } from '../src/config.ts'

/** Redis database 13 is this project's test database; tests never touch database 0. */
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/13'

export function testConfig(env: Record<string, string> = {}): Config {
  return loadConfig({
    DATA_DIR: 'memory://',
    REDIS_URL: TEST_REDIS_URL,
    LOG_LEVEL: 'silent',
    PUBLIC_BASE_URL: 'https://www.example.test',
    REDIS_KEY_PREFIX: `vo-test-${process.pid}:`,
    ...env,
  })
}

interface Teardown {
  teardown(fn: () => unknown): void
}

export async function buildTestApp(t: Teardown, env: Record<string, string> = {}): Promise<FastifyInstance> {
  const config = testConfig(env)
  const app = await buildApp(config, { logger: false })
  t.teardown(async () => {
    await app.close()
    if (config.redisUrl !== undefined) await deleteKeysWithPrefix(config.redisUrl, config.redisKeyPrefix)
  })
  await app.ready()
  return app
}

/** Removes what a test wrote to Redis: only keys under its own prefix, never anything else. */
export async function deleteKeysWithPrefix(redisUrl: string, prefix: string): Promise<void> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 500, retryStrategy: () => null })
  redis.on('error', () => undefined)
  try {
    await redis.connect()
    let cursor = '0'
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
      cursor = next
      if (keys.length > 0) await redis.del(...keys)
    } while (cursor !== '0')
  } catch {
    // Redis is not there (a test of that case): nothing to clean.
  } finally {
    redis.disconnect()
  }
}
