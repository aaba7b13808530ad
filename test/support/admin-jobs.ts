// Admin work that runs as a job (POST /admin/warm answers 202 with the job): follow it to its end.

import type { FastifyInstance } from 'fastify'
import type { WarmProgress, WarmReport } from '../../src/cache/warm-up.ts'
import { until } from './until.ts'

/** A job as GET /admin/jobs/:id answers it (routes/admin-jobs.ts). */
export interface JobView {
  id: string
  kind: string
  state: 'running' | 'done' | 'failed'
  params: Record<string, number>
  progress: WarmProgress
  result: WarmReport | null
  error: string | null
  startedAt: string
  finishedAt: string | null
}

/** Polls the job at `location` until it is no longer running; its last answer. */
export async function awaitJob(app: FastifyInstance, location: string, headers: Record<string, string>, timeoutMs = 60_000): Promise<JobView> {
  let job: JobView | undefined
  await until(
    `the job at ${location} to finish`,
    async () => {
      const res = await app.inject({ url: location, headers })
      if (res.statusCode !== 200) throw new Error(`GET ${location}: ${res.statusCode} ${res.body}`)
      job = res.json<JobView>()
      return job.state !== 'running'
    },
    { timeoutMs, intervalMs: 25 },
  )
  return job!
}

/** POST /admin/warm, then waits for the job: the 202's status and the finished job. */
export async function warmAndWait(app: FastifyInstance, headers: Record<string, string>, payload: object): Promise<{ statusCode: number; body: string; job: JobView | undefined }> {
  const res = await app.inject({ method: 'POST', url: '/admin/warm', headers, payload })
  if (res.statusCode !== 202) return { statusCode: res.statusCode, body: res.body, job: undefined }
  return { statusCode: res.statusCode, body: res.body, job: await awaitJob(app, res.headers.location as string, headers) }
}
