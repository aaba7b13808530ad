// The read router's pure parts: LSNs compared as numbers, a replica named without its credentials, and
// which errors count as "the server is gone" (moved to the primary on a read, a 503 on a write).

import t from 'tap'
import { isConnectionError } from '../../../src/db/connection-errors.ts'
import { openDatabase } from '../../../src/db/database.ts'
import { describeTarget, parseLsn } from '../../../src/db/replica-router.ts'

t.test('parseLsn: pg_lsn text to a number that orders like the WAL', async (t) => {
  t.equal(parseLsn('0/0'), 0n)
  t.equal(parseLsn('0/3001158'), 0x3001158n)
  t.equal(parseLsn('16/B374D848'), (0x16n << 32n) + 0xb374d848n)
  t.ok(parseLsn('1/0')! > parseLsn('0/FFFFFFFF')!, 'the high word counts first')
  for (const bad of [null, undefined, '', '12', '0/', 'G/0', '1/2/3', '123456789/0']) t.equal(parseLsn(bad), null, JSON.stringify(bad))
})

t.test('describeTarget: host, port and database, never the user or password', async (t) => {
  t.equal(describeTarget('postgres://origin:s3cret@replica-1:5433/origin'), 'replica-1:5433/origin')
  t.equal(describeTarget('postgresql://replica/app?sslmode=require'), 'replica/app')
  t.equal(describeTarget('not a url'), '(unparsable URL)')
})

t.test('isConnectionError: unreachable or vanished servers, not query errors', async (t) => {
  const error = (message: string, code?: string) => Object.assign(new Error(message), code === undefined ? {} : { code })
  const gone = [
    error('connect ECONNREFUSED 127.0.0.1:5433', 'ECONNREFUSED'),
    error('read ECONNRESET', 'ECONNRESET'),
    error('getaddrinfo ENOTFOUND replica', 'ENOTFOUND'),
    error('terminating connection due to administrator command', '57P01'),
    error('the database system is starting up', '57P03'),
    error('connection failure', '08006'),
    error('Connection terminated unexpectedly'),
    error('timeout exceeded when trying to connect'),
    error('Client has encountered a connection error and is not queryable'),
    new AggregateError([error('connect ECONNREFUSED ::1:5432', 'ECONNREFUSED'), error('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED')], 'connect failed'),
  ]
  for (const err of gone) t.ok(isConnectionError(err), err.message)
  const notGone = [
    error('syntax error at or near "SELEC"', '42601'),
    error('duplicate key value violates unique constraint', '23505'),
    error('cannot execute INSERT in a read-only transaction', '25006'),
    error('canceling statement due to statement timeout', '57014'),
    error('Query read timeout'),
    new AggregateError([], 'nothing'),
    new AggregateError([error('x', 'ECONNREFUSED'), error('bad', '42601')], 'mixed'),
    'ECONNREFUSED',
    null,
    undefined,
  ]
  for (const err of notGone) t.notOk(isConnectionError(err), String(err instanceof Error ? err.message : err))
})

t.test('openDatabase refuses replicas without a primary (the embedded database has none), before starting anything', async (t) => {
  const settings = { databaseUrl: undefined, dataDir: 'memory://', dbPoolMax: 1, dbConnectTimeoutMs: 1000, dbStatementTimeoutMs: 1000, databaseReadUrls: ['postgres://replica/app'] }
  await t.rejects(openDatabase(settings, { error: () => {} }), /DATABASE_READ_URL needs DATABASE_URL: the embedded database has no replicas/)
})
