// The load generator of `npm run bench:cold`, in a process of its own (pinned by the parent to its own
// core): each job from the parent is a list of (path, segment) pairs, sent once each with
// `connections` requests in flight (autocannon, `amount` = the pairs). It answers with every
// response's latency (ms, from autocannon's own timing) and the count of each status and X-Cache.

import autocannon from 'autocannon'
import type { IncomingHttpHeaders } from 'node:http'

export interface ColdJob {
  url: string
  pairs: Array<[path: string, segment: string]>
  connections: number
}

export interface ColdJobResult {
  latencies: number[]
  /** "200 MISS", "200 HIT-L1", "error"... -> count */
  outcomes: Record<string, number>
  requests: number
  durationMs: number
}

async function run(job: ColdJob): Promise<ColdJobResult> {
  const latencies: number[] = []
  const outcomes: Record<string, number> = {}
  const bump = (key: string) => void (outcomes[key] = (outcomes[key] ?? 0) + 1)
  let next = 0
  const started = performance.now()
  // autocannon ends a run on its 1-second tick: the run lasts until the last answer, not until the run resolves.
  let lastAnswer = started
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: job.url,
        connections: job.connections,
        amount: job.pairs.length,
        pipelining: 1,
        timeout: 30,
        requests: [
          {
            // Every request takes the next pair: none is asked for twice (past the list, which autocannon
            // may ask for one request per connection beyond `amount` without sending it, the last repeats).
            setupRequest: (request: autocannon.Request) => {
              const [path, segment] = job.pairs[Math.min(next++, job.pairs.length - 1)]!
              return { ...request, path, headers: { 'x-segment': segment } }
            },
            onResponse: (status: number, _body: string, _context: object, headers?: IncomingHttpHeaders) => {
              bump(`${status} ${String(headers?.['x-cache'] ?? '-')}`)
            },
          },
        ],
      },
      (err, res) => (err !== null && err !== undefined ? reject(err) : resolve(res)),
    )
    instance.on('response', (_client: unknown, _status: number, _bytes: number, responseTime: number) => {
      latencies.push(responseTime)
      lastAnswer = performance.now()
    })
    instance.on('reqError', () => bump('error'))
  })
  return { latencies, outcomes, requests: result.requests.total, durationMs: lastAnswer - started }
}

process.on('message', (job: ColdJob) => {
  void run(job).then(
    (result) => process.send?.({ result }),
    (err: unknown) => process.send?.({ error: err instanceof Error ? err.message : String(err) }),
  )
})
process.on('disconnect', () => process.exit(0))
process.send?.({ ready: true })
