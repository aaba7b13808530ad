// Server entry: validate the configuration, build the app, listen, and close gracefully on
// SIGTERM/SIGINT (in-flight requests finish, the database and Redis are closed).

import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.ts'
import { ConfigError, loadConfig } from './src/config.ts'
import { flushLogs, flushLogsSync } from './src/log-destination.ts'

let config
try {
  config = loadConfig()
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`variant-origin: ${err.message}\n`)
    process.exit(2)
  }
  throw err
}

let app: Awaited<ReturnType<typeof buildApp>>
try {
  app = await buildApp(config)
} catch (err) {
  // The embedded database child exits by itself when this process goes (it watches the IPC channel).
  process.stderr.write(`variant-origin: could not start: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
}

// The log lines are buffered (src/log-destination.ts): each way out writes them before the process goes.
// close-with-grace exits as soon as this returns, so the buffer is drained here, nothing left in flight.
closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
  if (err !== undefined) {
    app.log.error({ err }, 'closing after an uncaught error')
    flushLogsSync(app.log) // at once: the close may hang until the delay runs out
  } else app.log.info({ signal }, 'closing')
  await app.close()
  await flushLogs(app.log)
})

try {
  await app.listen({ port: config.port, host: config.host })
} catch (err) {
  app.log.fatal({ err }, 'could not listen')
  flushLogsSync(app.log)
  await app.close()
  await flushLogs(app.log)
  process.exit(1)
}
