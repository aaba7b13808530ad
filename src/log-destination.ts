// Where the JSON log lines go: stdout through a buffer written asynchronously, the way nginx buffers its
// access_log, so a request does not pay a write(2) on the event loop for its line. What is buffered is
// written once it passes LOG_BUFFER_BYTES, at least every second (LOG_FLUSH_INTERVAL_MS, nginx's
// `flush=`), and on the way out: server.ts drains it after a graceful close and writes it synchronously
// on a fatal error, and it is written synchronously at process exit.
//
// Why not pino.destination() (sonic-boom, what pino ships for this): it keeps the pending lines as one
// JavaScript string and takes Buffer.byteLength() of that whole string on every write, so each line
// costs a flatten and a scan of everything buffered before it, then a UTF-8 conversion at the write:
// 3.3 us per 230-byte line here, a tenth of an L1 hit, against 1.3 us for encoding each line once into
// a Buffer (a micro-benchmark of both on 230-byte lines, 200,000 each; `npm run bench:logs` measures what a
// line costs a hit now). The lines are pino's either way: this is only where they go.

import { write as fsWrite, writeSync } from 'node:fs'
import pino from 'pino'

/** At most this long between a line being logged and its write, however quiet the server is. */
export const LOG_FLUSH_INTERVAL_MS = 1_000

/** Past this much waiting (stdout blocked: nobody reads the pipe), lines are dropped and counted, not held. */
const MAX_PENDING_BYTES = 64 * 1024 * 1024
/** A blocked non-blocking stdout (EAGAIN) is tried again after this long. */
const EAGAIN_RETRY_MS = 10

const liveDestinations = new Set<BufferedLogDestination>()
let exitHookInstalled = false

/**
 * pino's destination: write() encodes a line at the end of the current Buffer; what has piled up since
 * the last write goes to fs.write as one slice of it, one write in flight at a time, so lines keep their
 * order. A full Buffer is left to its pending writes and a new one started. A short write goes on with
 * the rest; EAGAIN (a non-blocking pipe that is full) waits and tries again; EPIPE (the reader is gone)
 * stops logging, as pino does.
 */
export class BufferedLogDestination {
  readonly fd: number
  readonly minLength: number
  /** Lines dropped because stdout stayed blocked past MAX_PENDING_BYTES; reported in a line once it drains. */
  dropped = 0
  private buffer: Buffer
  /** buffer[start, length) holds lines not yet handed to a write. */
  private start = 0
  private length = 0
  /** Slices waiting for their write, oldest first (the one in flight is not among them). */
  private readonly queue: Buffer[] = []
  private queuedBytes = 0
  private writing = false
  private closed = false
  private readonly drainWaiters: Array<() => void> = []
  private readonly timer: NodeJS.Timeout

  constructor(options: { fd: number; minLength: number; flushIntervalMs?: number }) {
    this.fd = options.fd
    this.minLength = options.minLength
    this.buffer = Buffer.allocUnsafeSlow(this.capacity())
    this.timer = setInterval(() => this.flush(), options.flushIntervalMs ?? LOG_FLUSH_INTERVAL_MS).unref()
    liveDestinations.add(this)
    if (!exitHookInstalled) {
      exitHookInstalled = true
      // pino registers its own destinations for this; these register themselves.
      process.on('exit', () => {
        for (const destination of liveDestinations) destination.flushSync()
      })
    }
  }

  /** Bytes of lines not yet written (queued or still in the current Buffer), the one in flight aside. */
  get pendingBytes(): number {
    return this.queuedBytes + this.length - this.start
  }

  private capacity(): number {
    return Math.max(64 * 1024, this.minLength * 4)
  }

  write(line: string): boolean {
    if (this.closed) return false
    // A UTF-16 code unit is at most 3 bytes of UTF-8: a line of n units always fits in 3n bytes.
    if (this.length + line.length * 3 > this.buffer.length) this.nextBuffer(line.length * 3)
    this.length += (this.buffer as Buffer & { utf8Write(s: string, offset: number): number }).utf8Write(line, this.length)
    if (!this.writing && this.length - this.start >= this.minLength) this.writeNext()
    return true
  }

  /** Starts writing what is buffered (unless a write is under way); `done` once everything buffered is written. */
  flush(done?: (err?: Error) => void): void {
    if (done !== undefined) this.drainWaiters.push(() => done())
    if (!this.writing) this.writeNext()
  }

  /**
   * Writes everything buffered, synchronously: for a fatal path and process exit. A slice whose
   * asynchronous write is under way is left to that write.
   */
  flushSync(): void {
    if (this.closed) return
    this.queueCurrent()
    while (this.queue.length > 0) {
      const chunk = this.queue.shift()!
      this.queuedBytes -= chunk.length
      if (!this.writeAllSync(chunk)) return
    }
    this.drained()
  }

  /** Writes what is buffered and stops; later lines are ignored. */
  end(): void {
    this.flushSync()
    this.destroy()
  }

  destroy(): void {
    this.closed = true
    this.writing = false
    clearInterval(this.timer)
    liveDestinations.delete(this)
    this.queue.length = 0
    this.queuedBytes = 0
    this.start = this.length = 0
    this.drained()
  }

  /** The current Buffer's lines join the queue and a new Buffer (of at least `needed` bytes) takes the next ones. */
  private nextBuffer(needed: number): void {
    this.queueCurrent()
    if (this.queuedBytes > MAX_PENDING_BYTES) {
      // stdout has been blocked for 64 MiB of lines: drop the oldest rather than hold memory without bound.
      while (this.queue.length > 1 && this.queuedBytes > MAX_PENDING_BYTES / 2) {
        const chunk = this.queue.shift()!
        this.queuedBytes -= chunk.length
        this.dropped += countLines(chunk)
      }
    }
    // The old Buffer stays referenced by its queued slices until they are written, then is collected.
    this.buffer = Buffer.allocUnsafeSlow(Math.max(this.capacity(), needed))
    this.start = this.length = 0
  }

  private queueCurrent(): void {
    if (this.length === this.start) return
    const slice = this.buffer.subarray(this.start, this.length)
    this.queue.push(slice)
    this.queuedBytes += slice.length
    this.start = this.length
  }

  private writeNext(): void {
    if (this.closed) {
      this.drained()
      return
    }
    if (this.queue.length === 0) this.queueCurrent()
    const chunk = this.queue.shift()
    if (chunk === undefined) {
      this.drained()
      return
    }
    this.queuedBytes -= chunk.length
    this.writing = true
    this.writeChunk(chunk)
  }

  private writeChunk(chunk: Buffer): void {
    fsWrite(this.fd, chunk, 0, chunk.length, null, (err, written) => {
      if (this.closed) return
      if (err !== null) {
        if (err.code === 'EAGAIN') {
          setTimeout(() => this.writeChunk(chunk), EAGAIN_RETRY_MS).unref()
          return
        }
        // EPIPE: nobody reads stdout any more; anything else: the fd is unusable. Either way, stop.
        this.destroy()
        return
      }
      if (written < chunk.length) {
        this.writeChunk(chunk.subarray(written))
        return
      }
      this.writing = false
      if (this.dropped > 0 && this.queuedBytes < MAX_PENDING_BYTES / 4) {
        const dropped = this.dropped
        this.dropped = 0
        this.write(`${JSON.stringify({ level: 40, time: Date.now(), dropped, msg: 'log lines dropped while stdout was blocked' })}\n`)
      }
      if (this.queue.length > 0 || this.length - this.start >= this.minLength || this.drainWaiters.length > 0) this.writeNext()
    })
  }

  private writeAllSync(chunk: Buffer): boolean {
    let offset = 0
    let blockedSince: number | undefined
    while (offset < chunk.length) {
      try {
        offset += writeSync(this.fd, chunk, offset, chunk.length - offset)
        blockedSince = undefined
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') {
          this.destroy()
          return false
        }
        // A non-blocking pipe that is full: wait for the reader, up to a second, as sonic-boom does.
        blockedSince ??= Date.now()
        if (Date.now() - blockedSince > 1_000) return false
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, EAGAIN_RETRY_MS)
      }
    }
    return true
  }

  private drained(): void {
    if (this.writing || this.length > this.start || this.queue.length > 0) return
    for (const waiter of this.drainWaiters.splice(0)) waiter()
  }
}

function countLines(chunk: Buffer): number {
  let lines = 0
  for (let at = chunk.indexOf(10); at !== -1; at = chunk.indexOf(10, at + 1)) lines++
  return lines
}

/** stdout, buffered up to `bufferBytes`; undefined for 0 (then pino writes each line synchronously, its default). */
export function logDestination(bufferBytes: number, fd = 1): BufferedLogDestination | undefined {
  if (bufferBytes <= 0) return undefined
  return new BufferedLogDestination({ fd, minLength: bufferBytes })
}

interface FlushableLogger {
  flush?: (cb?: (err?: Error) => void) => void
}

/** The logger's destination, when it is one that buffers (sonic-boom, a transport's thread stream). */
function streamOf(logger: unknown): { flushSync?: () => void } | undefined {
  const stream = (logger as Record<symbol, unknown> | null)?.[pino.symbols.streamSym]
  return typeof stream === 'object' && stream !== null ? (stream as { flushSync?: () => void }) : undefined
}

/**
 * Writes what the logger has buffered, synchronously: for a fatal path, where the process may be gone
 * before an asynchronous write completes. Never throws (a destination not open yet, or already
 * destroyed, has nothing this could save). A line whose asynchronous write is already under way is
 * left to that write.
 */
export function flushLogsSync(logger: unknown): void {
  const stream = streamOf(logger)
  if (typeof stream?.flushSync !== 'function') return
  try {
    stream.flushSync()
  } catch {
    // 'sonic boom is not ready yet', 'SonicBoom destroyed', or stdout gone (EPIPE): nothing to save.
  }
}

/**
 * Drains the logger's buffer: waits for the write under way (if any), then writes the rest
 * synchronously, so nothing is in flight when the process exits right after (close-with-grace calls
 * process.exit). A no-op for a logger that does not buffer (tests' capture streams, Fastify's no-op logger).
 */
export async function flushLogs(logger: unknown): Promise<void> {
  const { flush } = (logger ?? {}) as FlushableLogger
  if (typeof flush === 'function' && streamOf(logger) !== undefined) {
    await new Promise<void>((resolve) => {
      try {
        // The callback may carry an error (fsync refused by a pipe, a destroyed stream): the write itself is done.
        flush.call(logger, () => resolve())
      } catch {
        resolve()
      }
    })
  }
  flushLogsSync(logger)
}
