// Housekeeping for tests and benchmarks that share a Redis with others (bench/ imports it from here).

import { Redis } from 'ioredis'

/** Removes the keys under one prefix (a test's or a benchmark's), never anything else. */
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
    // Redis is not there: nothing to clean.
  } finally {
    redis.disconnect()
  }
}
