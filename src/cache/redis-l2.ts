// L2: rendered responses in Redis, shared by every origin instance, plus the short render lock that
// makes one instance render a cold key while the others wait for its entry. Every call fails open:
// an error or a timeout is a miss (or "no lock"), counted, never a failed request.

import type { ChainableCommander, Cluster, Redis } from 'ioredis'
import type { ContentCoding, Encodings } from '../http/content-coding.ts'
import type { CachedResponse } from './response-cache.ts'

interface Logger {
  warn(obj: object, msg: string): void
}

/** Where each coded body sits after the identity one: coding, ETag, length in bytes. */
type CodedPart = [coding: ContentCoding, etag: string, length: number]
type Meta = Omit<CachedResponse, 'body' | 'lastModified' | 'encodings'> & { lastModified: number; bodyLength: number; coded: CodedPart[] }

/** [4-byte meta length][meta JSON][identity body][coded bodies]: bodies travel as raw bytes, never as base64 or JSON. */
export function encodeEntry(entry: CachedResponse): Buffer {
  const { body, lastModified, encodings, ...rest } = entry
  const parts: Buffer[] = [body]
  const coded: CodedPart[] = []
  for (const coding of ['br', 'gzip'] as const) {
    const encoded = encodings[coding]
    if (encoded === undefined) continue
    coded.push([coding, encoded.etag, encoded.body.length])
    parts.push(encoded.body)
  }
  const meta = Buffer.from(JSON.stringify({ ...rest, lastModified: lastModified.getTime(), bodyLength: body.length, coded } satisfies Meta))
  const header = Buffer.allocUnsafe(4)
  header.writeUInt32BE(meta.length, 0)
  return Buffer.concat([header, meta, ...parts])
}

export function decodeEntry(raw: Buffer): CachedResponse | undefined {
  if (raw.length < 4) return undefined
  const metaLength = raw.readUInt32BE(0)
  if (raw.length < 4 + metaLength) return undefined
  try {
    const { bodyLength, coded, ...meta } = JSON.parse(raw.subarray(4, 4 + metaLength).toString('utf8')) as Meta
    // Views, not copies: ioredis hands each reply its own buffer.
    let offset = 4 + metaLength
    const body = raw.subarray(offset, (offset += bodyLength))
    const encodings: Encodings = {}
    for (const [coding, etag, length] of coded) encodings[coding] = { body: raw.subarray(offset, (offset += length)), etag }
    if (offset !== raw.length) return undefined // truncated or not this layout: a miss
    return { ...meta, lastModified: new Date(meta.lastModified), body, encodings }
  } catch {
    return undefined
  }
}

/** Deletes a render lock only if it is still ours (it may have expired and been taken by another). */
const UNLOCK_SCRIPT = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"

/**
 * A render's whole store in one script (one command, one round trip): the entry, each tag's index (a
 * sorted set of keys by expiry: the key added, the expired members dropped, the index kept exactly as
 * long as its longest-lived member), and the render lock released if it is still ours. As separate
 * commands this was 4 per tag plus 2: at 4 tags, 18 ioredis commands per miss, whose objects were most
 * of what a cold miss allocated (bench/RESULTS.md, cold misses).
 * KEYS: the entry, then the tag indexes, then the lock (when unlocking).
 * ARGV: the entry's bytes, its TTL (ms), its expiry (epoch ms), now (epoch ms), the entry's key as the
 * indexes list it (without REDIS_KEY_PREFIX, which ioredis adds to KEYS only), the number of tag
 * indexes, the lock token (when unlocking).
 */
const STORE_SCRIPT = `
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local tags = tonumber(ARGV[6])
for i = 2, tags + 1 do
  redis.call('ZADD', KEYS[i], ARGV[3], ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[4])
  redis.call('PEXPIRE', KEYS[i], ARGV[2], 'NX')
  redis.call('PEXPIRE', KEYS[i], ARGV[2], 'GT')
end
if #KEYS > tags + 1 and redis.call('GET', KEYS[#KEYS]) == ARGV[7] then redis.call('DEL', KEYS[#KEYS]) end
return 1`

type StoreCommand = (...args: Array<string | number | Buffer>) => Promise<unknown>

/** A render lock to release once an entry is written. */
export interface LockRelease {
  key: string
  token: string
}

/** A tag's index of keys (a sorted set by expiry; `tag:` held plain sets before, which were never pruned). */
const tagIndex = (tag: string): string => `ztag:${tag}`

export class RedisL2 {
  private readonly redis: Redis | Cluster
  private readonly log: Logger
  private readonly onError: () => void
  private lastWarning = 0

  constructor(redis: Redis | Cluster, log: Logger, onError: () => void = () => undefined) {
    this.redis = redis
    this.log = log
    this.onError = onError
    // ioredis sends it by EVALSHA, and the script itself only when Redis does not have it yet.
    if (!redis.isCluster && typeof (redis as unknown as Record<string, unknown>).voStoreEntry !== 'function') redis.defineCommand('voStoreEntry', { lua: STORE_SCRIPT })
  }

  private failed(err: unknown, operation: string): void {
    this.onError()
    const now = Date.now()
    if (now - this.lastWarning > 10_000) {
      this.lastWarning = now
      this.log.warn({ err, operation }, 'redis L2 call failed; carrying on without it')
    }
  }

  async get(key: string): Promise<CachedResponse | undefined> {
    try {
      const raw = await this.redis.getBuffer(key)
      return raw === null ? undefined : decodeEntry(raw)
    } catch (err) {
      this.failed(err, 'get')
      return undefined
    }
  }

  /** Several keys in one MGET; they must share a hash tag on a Cluster (one page's keys do). */
  async getMany(keys: readonly string[]): Promise<Array<CachedResponse | undefined>> {
    if (keys.length === 1) return [await this.get(keys[0]!)]
    try {
      const raws = await this.redis.mgetBuffer(...keys)
      return raws.map((raw) => (raw === null ? undefined : decodeEntry(raw)))
    } catch (err) {
      this.failed(err, 'get')
      return keys.map(() => undefined)
    }
  }

  /**
   * Stores the entry (only if absent with onlyIfAbsent); true when it was written. With `unlock`, the
   * render lock is released after the write, in the same round trip where Redis is not a Cluster.
   */
  async set(key: string, entry: CachedResponse, options: { onlyIfAbsent?: boolean; unlock?: LockRelease } = {}): Promise<boolean> {
    const { onlyIfAbsent = false, unlock } = options
    const now = Date.now()
    const ttl = Math.ceil(entry.staleUntil - now)
    if (ttl <= 0) {
      if (unlock !== undefined) await this.unlock(unlock.key, unlock.token)
      return false
    }
    // The tag index lets a purge by tag find the keys: per tag, a sorted set of keys scored by when
    // they expire. Each write drops the members already expired and keeps the set only as long as its
    // last member, so no tag index outlives or outgrows the keys it lists.
    const indexTag = (commands: ChainableCommander, tag: string): ChainableCommander =>
      commands
        .zadd(tagIndex(tag), now + ttl, key)
        .zremrangebyscore(tagIndex(tag), '-inf', now)
        .pexpire(tagIndex(tag), ttl, 'NX')
        .pexpire(tagIndex(tag), ttl, 'GT')
    try {
      if (!onlyIfAbsent && !this.redis.isCluster) {
        // One command: the entry, every tag index, the unlock (a render's store: 3 round trips to Redis
        // per miss in all, with the lookup and the lock).
        const store = (this.redis as unknown as { voStoreEntry: StoreCommand }).voStoreEntry.bind(this.redis)
        const keys = [key, ...entry.tags.map(tagIndex), ...(unlock === undefined ? [] : [unlock.key])]
        await store(keys.length, ...keys, encodeEntry(entry), ttl, now + ttl, now, key, entry.tags.length, ...(unlock === undefined ? [] : [unlock.token]))
        return true
      }
      try {
        const written = onlyIfAbsent ? await this.redis.set(key, encodeEntry(entry), 'PX', ttl, 'NX') : await this.redis.set(key, encodeEntry(entry), 'PX', ttl)
        if (written !== 'OK') return false
        // On a Cluster each tag index has its own slot: one transaction per tag; else one for all.
        if (this.redis.isCluster) await Promise.all(entry.tags.map((tag) => indexTag(this.redis.multi(), tag).exec()))
        else if (entry.tags.length > 0) await entry.tags.reduce(indexTag, this.redis.multi()).exec()
        return true
      } finally {
        if (unlock !== undefined) await this.unlock(unlock.key, unlock.token)
      }
    } catch (err) {
      this.failed(err, 'set')
      return false
    }
  }

  /** Keys of entries carrying one of these tags, dropping the tag indexes; every key is then deleted. */
  async deleteTagged(tags: readonly string[]): Promise<string[]> {
    try {
      const keys = new Set<string>()
      for (const tag of tags) {
        for (const key of await this.redis.zrange(tagIndex(tag), 0, -1)) keys.add(key)
        await this.redis.del(tagIndex(tag))
      }
      await Promise.all([...keys].map((key) => this.redis.del(key)))
      return [...keys]
    } catch (err) {
      this.failed(err, 'purge by tag')
      return []
    }
  }

  /** Keys of one path share a hash tag, so this is one command even on a Redis Cluster. */
  async delete(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return
    try {
      await this.redis.del(...keys)
    } catch (err) {
      this.failed(err, 'del')
    }
  }

  /**
   * The render lock (SET NX PX) and, in the same round trip, what L2 holds for `keys` right after it
   * (the double-check: another instance may have written the entry and unlocked since our lookup). The
   * lock key shares the keys' hash tag. locked true: this instance renders; false: another one is;
   * undefined: Redis cannot say (render anyway).
   */
  async tryLock(key: string, token: string, ttlMs: number, keys: readonly string[]): Promise<{ locked: boolean | undefined; entries: Array<CachedResponse | undefined> }> {
    const none = keys.map(() => undefined)
    try {
      const results = await this.redis.pipeline().set(key, token, 'PX', ttlMs, 'NX').mgetBuffer(...keys).exec()
      if (results === null) throw new Error('pipeline discarded')
      const [[lockError, lockReply], [readError, raws]] = results as [[Error | null, unknown], [Error | null, Array<Buffer | null>]]
      if (lockError !== null) throw lockError
      if (readError !== null) this.failed(readError, 'get')
      return { locked: lockReply === 'OK', entries: readError !== null ? none : raws.map((raw) => (raw === null ? undefined : decodeEntry(raw))) }
    } catch (err) {
      this.failed(err, 'lock')
      return { locked: undefined, entries: none }
    }
  }

  /** Whether a render lock is held; undefined when Redis cannot say. */
  async isLocked(key: string): Promise<boolean | undefined> {
    try {
      return (await this.redis.exists(key)) === 1
    } catch (err) {
      this.failed(err, 'lock check')
      return undefined
    }
  }

  /** Releases the lock only if it is still ours (it may have expired and been taken by another). */
  async unlock(key: string, token: string): Promise<void> {
    try {
      await this.redis.eval(UNLOCK_SCRIPT, 1, key, token)
    } catch (err) {
      this.failed(err, 'unlock')
    }
  }
}
