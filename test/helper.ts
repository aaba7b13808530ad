// Builds the real app (the same buildApp the server uses) on a throwaway in-memory embedded
// PostgreSQL and a dedicated Redis database number, and closes it when the test ends.

import type { FastifyInstance } from 'fastify'
import { buildApp } from '../app.ts'
import { deleteKeysWithPrefix } from './support/redis-keys.ts'
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
    // A test drives its app from the same event loop, often in long promise chains that never yield (thousands
    // of injected requests); under CI's load that reads as a stalled loop and the app sheds the next request
    // with a 503. Shedding is load-shedding.test.ts's subject, which sets its own thresholds.
    LOAD_SHED_MAX_EVENT_LOOP_DELAY_MS: '0',
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
