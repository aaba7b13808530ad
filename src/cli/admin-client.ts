// `--url`: the CLIs that can hand their work to a running origin send it to (or read it from) its
// admin API with ADMIN_TOKEN, and fail with the origin's own answer (status and body) when it refuses.

/** The token `--url` needs; a command that will post checks it before it reads its input. */
export function requireAdminToken(adminToken: string | undefined): string {
  if (adminToken === undefined) throw new Error('--url needs ADMIN_TOKEN set to the origin admin token')
  return adminToken
}

/** POSTs `body` as JSON to `path` on the origin at `baseUrl`; the parsed JSON answer, or an error naming status and body. */
export async function postToOrigin(baseUrl: string, adminToken: string | undefined, path: string, body: unknown): Promise<Record<string, unknown>> {
  requireAdminToken(adminToken)
  const response = await fetch(new URL(path, baseUrl), {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken}` },
    body: JSON.stringify(body),
  })
  const text = await response.text()
  if (!response.ok) throw new Error(`${response.status} from ${path}: ${text}`)
  return JSON.parse(text) as Record<string, unknown>
}

/** GETs `path` from the origin at `baseUrl` with the admin token; the body as text, or an error naming status and body. */
export async function getFromOrigin(baseUrl: string, adminToken: string | undefined, path: string): Promise<string> {
  requireAdminToken(adminToken)
  const response = await fetch(new URL(path, baseUrl), { headers: { authorization: `Bearer ${adminToken}` } })
  const text = await response.text()
  if (!response.ok) throw new Error(`${response.status} from ${path}: ${text}`)
  return text
}

/** A background job as `GET /admin/jobs/:id` reports it (routes/admin-jobs.ts). */
export interface OriginJob {
  id: string
  state: 'running' | 'done' | 'failed'
  progress: unknown
  result: unknown
  error: string | null
}

/**
 * Follows a job the origin started (its `location`, e.g. `/admin/jobs/<id>`) until it is no longer
 * running: its result when done, an error naming the job and its error when it failed. `onProgress`
 * sees each answer while it runs. Jobs live on the instance that runs them: `baseUrl` must reach that
 * instance, not a balancer in front of several.
 */
export async function followJob(baseUrl: string, adminToken: string | undefined, location: string, options: { intervalMs?: number; onProgress?: (job: OriginJob) => void } = {}): Promise<unknown> {
  const { intervalMs = 1_000, onProgress } = options
  for (;;) {
    const job = JSON.parse(await getFromOrigin(baseUrl, adminToken, location)) as OriginJob
    if (job.state === 'done') return job.result
    if (job.state === 'failed') throw new Error(`job ${job.id} failed: ${job.error ?? 'no reason given'} (progress: ${JSON.stringify(job.progress)})`)
    onProgress?.(job)
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}
