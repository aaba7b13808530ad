// Child-process entry for the embedded PostgreSQL (PGlite + pgvector behind its socket server).
// It runs apart from the origin because PGlite blocks its own thread for the length of every query.

import { PGlite } from '@electric-sql/pglite'
import { vector } from '@electric-sql/pglite-pgvector'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

export type ChildMessage = { type: 'ready'; port: number } | { type: 'failed'; message: string }

const send = (message: ChildMessage): void => {
  process.send?.(message)
}

async function main(): Promise<void> {
  const dataDir = process.env.EMBEDDED_PG_DATA_DIR ?? 'memory://'
  const db = await PGlite.create(dataDir, { extensions: { vector } })
  await db.exec('CREATE EXTENSION IF NOT EXISTS vector')
  // maxConnections counts idle sockets too; the origin's pool holds exactly one.
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: 4 })
  await server.start()
  const port = Number(server.getServerConn().split(':').pop())

  let stopping = false
  const stop = async (): Promise<void> => {
    if (stopping) return
    stopping = true
    try {
      await server.stop()
    } finally {
      await db.close() // flushes the data directory; skipping it can lose the last writes
      process.exit(0)
    }
  }
  process.on('message', (message) => {
    if (message === 'stop') void stop()
  })
  // The origin died without asking: close cleanly rather than linger as an orphan.
  process.on('disconnect', () => void stop())
  process.on('SIGTERM', () => void stop())
  process.on('SIGINT', () => void stop())
  send({ type: 'ready', port })
}

main().catch((err: unknown) => {
  send({ type: 'failed', message: err instanceof Error ? err.message : String(err) })
  process.exit(1)
})
