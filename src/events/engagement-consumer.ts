// The consumer every instance runs: reads the engagement stream as one member of a shared consumer
// group, aggregates each batch into PostgreSQL in one transaction and acknowledges it only after the
// commit (at-least-once delivery; the receipts table makes a second delivery count nothing).
// Entries left pending by a dead consumer are claimed after an idle time; an entry delivered too
// many times, or one that cannot be read, moves to the dead-letter stream instead of blocking the rest.
// About 300 lines on purpose: one loop and its failure paths (read, claim, dead-letter, back off, stop)
// are one state machine, easier to check whole than spread over files.

import { type Kysely, sql } from 'kysely'
import type { Cluster, Redis } from 'ioredis'
import type { Database } from '../db/schema.ts'
import { decodeStreamEntry } from './engagement-event.ts'
import { pruneStreamReceipts, recordEngagement, type StreamMessage } from './engagement-repository.ts'
import { CONSUMER_GROUP, type EventStreamKeys } from './event-stream.ts'
import { TIMED_OUT, withTimeout } from '../timeout.ts'

interface Logger {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
  error(obj: object, msg: string): void
}

export interface ConsumerSettings {
  /** Unique per instance (and per start): the group tracks pending entries per consumer name. */
  consumerName: string
  batchSize: number
  claimIdleMs: number
  maxDeliveries: number
  /** Bound of the dead-letter stream (XADD MAXLEN ~). */
  maxLen: number
  group?: string
}

export interface ConsumerCounters {
  /** Stream entries counted into PostgreSQL (one per accepted request). */
  processedMessages: number
  processedEvents: number
  /** Entries delivered again after they had been counted: acknowledged, not counted twice. */
  duplicateMessages: number
  unknownPathEvents: number
  unknownVariantEvents: number
  deadLettered: number
  claimed: number
  /** Pending entries that MAXLEN trimmed away before they were processed (lost; see the lag metric). */
  trimmedBeforeProcessing: number
  failedBatches: number
}

type StreamEntry = [id: string, fields: string[]]

const MAX_BLOCK_MS = 2_000
const MAX_BACKOFF_MS = 5_000
const ERROR_LOG_INTERVAL_MS = 60_000
const HOUSEKEEPING_INTERVAL_MS = 3_600_000
/** Receipts are needed only while a message can be re-delivered (minutes); a week is ample. */
const RECEIPT_RETENTION_MS = 7 * 86_400_000
/** Claim pages per cycle, so a large backlog of orphans does not starve new entries. */
const MAX_CLAIM_PAGES = 10
const STOP_GRACE_MS = 5_000

export class EngagementConsumer {
  readonly counters: ConsumerCounters = {
    processedMessages: 0, processedEvents: 0, duplicateMessages: 0, unknownPathEvents: 0, unknownVariantEvents: 0,
    deadLettered: 0, claimed: 0, trimmedBeforeProcessing: 0, failedBatches: 0,
  }
  private readonly redis: Redis | Cluster
  private readonly db: Kysely<Database>
  private readonly keys: EventStreamKeys
  private readonly settings: Required<ConsumerSettings>
  private readonly log: Logger
  private readonly blockMs: number
  private stopped = false
  /** What the loop is waiting on, for the log when it does not stop in time. */
  private phase = 'starting'
  /** Between the start of a batch's transaction and its XACK: the one phase stop() lets finish. */
  private recording = false
  private groupReady = false
  private databaseFailing = false
  private nextClaimAt = 0
  private nextHousekeepingAt = 0
  private lastErrorLogAt = 0
  private wake: (() => void) | undefined
  private loop: Promise<void> | undefined

  /** `redis` is a connection of the consumer's own: blocking reads hold it, and stop() disconnects it. */
  constructor(deps: { redis: Redis | Cluster; db: Kysely<Database>; keys: EventStreamKeys; settings: ConsumerSettings; log: Logger }) {
    this.redis = deps.redis
    this.db = deps.db
    this.keys = deps.keys
    this.settings = { group: CONSUMER_GROUP, ...deps.settings }
    this.log = deps.log
    // A claim check runs between reads: the block time bounds how late it can be.
    this.blockMs = Math.max(50, Math.min(MAX_BLOCK_MS, this.settings.claimIdleMs))
  }

  start(): void {
    this.loop ??= this.run()
  }

  /**
   * Lets a batch being committed finish and acknowledge (bounded); anything else (a blocked read, a
   * command waiting on a dead Redis, a backoff) is interrupted at once by closing the connection.
   */
  async stop(): Promise<void> {
    this.stopped = true
    this.wake?.()
    if (!this.recording) this.redis.disconnect()
    if (this.loop !== undefined) {
      const finished = await withTimeout(this.loop, STOP_GRACE_MS)
      if (finished === TIMED_OUT) this.log.warn({ phase: this.phase }, 'engagement consumer did not stop within the grace period; closing its connection anyway')
    }
    this.redis.disconnect()
  }

  private async run(): Promise<void> {
    let backoffMs = 0
    while (!this.stopped) {
      try {
        this.phase = 'group'
        if (!this.groupReady) await this.ensureGroup()
        const now = Date.now()
        if (now >= this.nextClaimAt) {
          this.nextClaimAt = now + this.blockMs
          this.phase = 'claim'
          await this.claimOrphans()
        }
        if (now >= this.nextHousekeepingAt) {
          this.nextHousekeepingAt = now + HOUSEKEEPING_INTERVAL_MS
          this.phase = 'housekeeping'
          await this.housekeeping()
        }
        if (this.stopped) break
        const { group, consumerName, batchSize } = this.settings
        this.phase = 'read'
        const reply = (await this.redis.xreadgroup('GROUP', group, consumerName, 'COUNT', batchSize, 'BLOCK', this.blockMs, 'STREAMS', this.keys.stream, '>')) as Array<[string, StreamEntry[]]> | null
        const entries = reply?.[0]?.[1] ?? []
        this.phase = 'handle'
        if (entries.length > 0) await this.handle(entries)
        backoffMs = 0
      } catch (err) {
        if (this.stopped) break
        if (err instanceof Error && err.message.startsWith('NOGROUP')) {
          // The stream was deleted (or the group destroyed) under us: create it again and go on.
          this.groupReady = false
          continue
        }
        backoffMs = Math.min(MAX_BACKOFF_MS, Math.max(100, backoffMs * 2))
        this.logError(err, 'engagement consumer: redis or database failing; entries stay pending and are retried')
        this.phase = 'backoff'
        await this.sleep(backoffMs)
      }
    }
  }

  private async ensureGroup(): Promise<void> {
    try {
      // From id 0: entries accepted before any consumer ever ran are counted too.
      await this.redis.xgroup('CREATE', this.keys.stream, this.settings.group, '0', 'MKSTREAM')
    } catch (err) {
      if (!(err instanceof Error && err.message.startsWith('BUSYGROUP'))) throw err
    }
    this.groupReady = true
  }

  /** Processes entries read or claimed; acknowledges only what is committed (or dead-lettered). */
  private async handle(entries: readonly StreamEntry[]): Promise<void> {
    const messages: StreamMessage[] = []
    for (const [id, fields] of entries) {
      const decoded = decodeStreamEntry(fields)
      if ('error' in decoded) await this.deadLetter(id, fields, `unreadable entry: ${decoded.error}`, undefined)
      else messages.push({ id, events: decoded.events })
    }
    if (messages.length === 0) return
    try {
      await this.record(messages)
    } catch (err) {
      this.counters.failedBatches++
      this.databaseFailing = true
      this.logError(err, 'engagement batch not recorded; its entries stay pending and will be claimed again')
      // With PostgreSQL answering, one entry may be what fails the batch: count the others one by one,
      // so only the failing entry is retried (and dead-lettered after EVENTS_MAX_DELIVERIES).
      if (messages.length > 1 && (await this.databaseAnswers())) {
        for (const message of messages) {
          if (this.stopped) return
          await this.record([message]).catch((error: unknown) => this.log.warn({ err: error, id: message.id }, 'engagement entry not recorded; will be retried'))
        }
      }
    }
  }

  private async record(messages: readonly StreamMessage[]): Promise<void> {
    this.recording = true
    let result: Awaited<ReturnType<typeof recordEngagement>>
    try {
      result = await recordEngagement(this.db, this.keys.stream, messages)
      this.databaseFailing = false
      // After the commit only: a crash before this line re-delivers the entries, and the receipts skip them.
      await this.redis.xack(this.keys.stream, this.settings.group, ...messages.map((m) => m.id))
    } finally {
      this.recording = false
    }
    const { counters } = this
    counters.processedMessages += result.messages
    counters.processedEvents += result.events
    counters.duplicateMessages += result.duplicates
    counters.unknownPathEvents += result.unknownPathEvents
    counters.unknownVariantEvents += result.unknownVariantEvents
    if (result.outsideExperimentEvents > 0) {
      // A variant not in that page's experiment (or a page not under one): counted for nothing, and said.
      this.log.info({ outsideExperimentEvents: result.outsideExperimentEvents }, 'events with a bucket for a variant outside any experiment of their page; not counted for experiments')
    }
    if (result.unknownPathEvents > 0 || result.duplicates > 0) {
      this.log.info({ ...result, unknownPathEventsTotal: counters.unknownPathEvents }, 'engagement batch recorded; events for unknown pages counted, not stored')
    }
  }

  /**
   * Takes over entries idle longer than EVENTS_CLAIM_IDLE_MS (their consumer died or failed). While
   * PostgreSQL is failing nothing is claimed: a database outage must not push entries to the
   * dead-letter stream by piling up deliveries.
   */
  private async claimOrphans(): Promise<void> {
    if (this.databaseFailing && !(await this.databaseAnswers())) return
    const { group, consumerName, claimIdleMs, batchSize, maxDeliveries } = this.settings
    let cursor = '0-0'
    for (let page = 0; page < MAX_CLAIM_PAGES && !this.stopped; page++) {
      const [next, claimed, deleted] = (await this.redis.xautoclaim(this.keys.stream, group, consumerName, claimIdleMs, cursor, 'COUNT', batchSize)) as [string, StreamEntry[], string[]]
      if (deleted.length > 0) {
        this.counters.trimmedBeforeProcessing += deleted.length
        this.log.error({ count: deleted.length, ids: deleted.slice(0, 10) }, 'pending engagement entries were trimmed by EVENTS_STREAM_MAXLEN before they were counted; raise it or add consumers')
      }
      if (claimed.length > 0) {
        this.counters.claimed += claimed.length
        const deliveries = await this.deliveryCounts(claimed)
        const retry: StreamEntry[] = []
        for (const entry of claimed) {
          const count = deliveries.get(entry[0]) ?? 1
          if (count > maxDeliveries) await this.deadLetter(entry[0], entry[1], `delivered ${count} times (EVENTS_MAX_DELIVERIES=${maxDeliveries})`, count)
          else retry.push(entry)
        }
        this.log.info({ claimed: claimed.length, retried: retry.length }, 'claimed engagement entries left pending by another consumer')
        if (retry.length > 0) await this.handle(retry)
      }
      if (next === '0-0') break
      cursor = next
    }
  }

  /** Delivery counts of entries this consumer holds (XAUTOCLAIM does not report them). */
  private async deliveryCounts(entries: readonly StreamEntry[]): Promise<Map<string, number>> {
    const first = entries[0]![0]
    const last = entries[entries.length - 1]![0]
    // The range may also hold this consumer's own failed entries: leave room for them.
    const rows = (await this.redis.xpending(this.keys.stream, this.settings.group, first, last, entries.length + 2 * this.settings.batchSize, this.settings.consumerName)) as Array<[string, string, number, number]>
    return new Map(rows.map(([id, , , count]) => [id, Number(count)]))
  }

  private async deadLetter(id: string, fields: readonly string[], reason: string, deliveries: number | undefined): Promise<void> {
    // One MULTI (both keys share a hash tag): the entry is never in both places nor in neither.
    const result = await this.redis
      .multi()
      .xadd(this.keys.dead, 'MAXLEN', '~', this.settings.maxLen, '*', 'source_id', id, 'reason', reason, 'deliveries', String(deliveries ?? 1), 'consumer', this.settings.consumerName, ...fields)
      .xack(this.keys.stream, this.settings.group, id)
      .exec()
    const failed = result?.find(([err]) => err !== null)
    if (result === null || failed !== undefined) throw failed?.[0] ?? new Error('dead-letter transaction aborted')
    this.counters.deadLettered++
    this.log.warn({ id, reason, deadLettered: this.counters.deadLettered, deadLetterStream: this.keys.dead }, 'engagement entry moved to the dead-letter stream')
  }

  /** Drops old receipts and consumers that left no pending entries behind (restarted instances). */
  private async housekeeping(): Promise<void> {
    try {
      await pruneStreamReceipts(this.db, RECEIPT_RETENTION_MS)
    } catch (err) {
      this.logError(err, 'engagement receipts not pruned; will retry')
    }
    const consumers = (await this.redis.xinfo('CONSUMERS', this.keys.stream, this.settings.group)) as unknown[][]
    const forgetAfterMs = Math.max(HOUSEKEEPING_INTERVAL_MS, 10 * this.settings.claimIdleMs)
    for (const fields of consumers) {
      const info = new Map<string, unknown>()
      for (let i = 0; i + 1 < fields.length; i += 2) info.set(String(fields[i]), fields[i + 1])
      const name = String(info.get('name'))
      if (name !== this.settings.consumerName && Number(info.get('pending')) === 0 && Number(info.get('idle')) > forgetAfterMs) {
        await this.redis.xgroup('DELCONSUMER', this.keys.stream, this.settings.group, name)
      }
    }
  }

  private async databaseAnswers(): Promise<boolean> {
    try {
      await sql`select 1`.execute(this.db)
      return true
    } catch {
      return false
    }
  }

  private logError(err: unknown, message: string): void {
    const now = Date.now()
    if (now - this.lastErrorLogAt < ERROR_LOG_INTERVAL_MS) return
    this.lastErrorLogAt = now
    this.log.warn({ err, counters: this.counters }, message)
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms)
      this.wake = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }
}
