// Where the JSON log lines go: stdout through a buffer written asynchronously (pino.destination with
// sync: false), the way nginx buffers its access_log, so a request does not pay a write(2) on the event
// loop for its line. What is buffered is written once it passes LOG_BUFFER_BYTES, at least every
// second (LOG_FLUSH_INTERVAL_MS, nginx's `flush=`), and on the way out: server.ts drains it after a
// graceful close and writes it synchronously on a fatal error; pino itself writes it synchronously at
// process exit (it registers every asynchronous destination for that).

import pino from 'pino'

/** At most this long between a line being logged and its write, however quiet the server is. */
export const LOG_FLUSH_INTERVAL_MS = 1_000

type Destination = ReturnType<typeof pino.destination>

/** stdout, buffered up to `bufferBytes`; undefined for 0 (then pino writes each line synchronously, its default). */
export function logDestination(bufferBytes: number): Destination | undefined {
  if (bufferBytes <= 0) return undefined
  return pino.destination({
    dest: 1,
    sync: false,
    minLength: bufferBytes,
    // sonic-boom refuses a minLength that is not below maxWrite (the largest single write, 16 KiB by default).
    maxWrite: Math.max(16 * 1024, bufferBytes * 2),
    periodicFlush: LOG_FLUSH_INTERVAL_MS,
  })
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
