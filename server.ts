// Server entry: validate the configuration, build the app, listen, and close gracefully on
// SIGTERM/SIGINT (in-flight requests finish, the database and Redis are closed).

import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.ts'
import { ConfigError, loadConfig } from './src/config.ts'

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

const app = await buildApp(config)

closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
  if (err !== undefined) app.log.error({ err }, 'closing after an uncaught error')
  else app.log.info({ signal }, 'closing')
  await app.close()
})

try {
  await app.listen({ port: config.port, host: config.host })
} catch (err) {
  app.log.fatal({ err }, 'could not listen')
  await app.close()
  process.exit(1)
}
