// Admin work that can outlive a request runs as a job: started in the background, answered at once
// with its id, followed by polling. One job of a kind at a time per instance; finished jobs are kept
// for a while (bounded in count and age) so their outcome can be read, then forgotten. Jobs live in
// this process only: another instance, or this one after a restart, does not know them.

import { randomBytes } from 'node:crypto'

export type JobState = 'running' | 'done' | 'failed'

/** What a caller reads about a job (`GET /admin/jobs/:id`). */
export interface JobSnapshot<P = unknown, R = unknown> {
  id: string
  kind: string
  state: JobState
  /** What the job was asked to do. */
  params: Record<string, unknown>
  /** How far it got; updated while it runs. */
  progress: P
  /** The outcome of a job that is done; null otherwise. */
  result: R | null
  /** Why a failed job failed (a cancelled one says so); null otherwise. */
  error: string | null
  startedAt: string
  finishedAt: string | null
}

export interface JobContext<P> {
  /** Aborted when the registry closes (the app shuts down): the job stops at its next safe point. */
  signal: AbortSignal
  /** Replaces the job's progress. */
  progress(progress: P): void
}

interface JobLogger {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
  error(obj: object, msg: string): void
}

export interface JobRegistryOptions {
  log: JobLogger
  /** Finished jobs kept at most (the oldest go first). */
  keepFinished?: number
  /** How long a finished job is kept. */
  keepFinishedMs?: number
  /** How long `close()` waits for running jobs to stop after aborting them. */
  closeTimeoutMs?: number
}

export type StartResult<P, R> = { started: true; job: JobSnapshot<P, R> } | { started: false; running: JobSnapshot }

interface Entry {
  snapshot: JobSnapshot
  controller: AbortController
  settled: Promise<void>
  finishedAtMs: number
}

/** Thrown into a job's work (its signal's reason) when the registry closes. */
export class JobCancelled extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'JobCancelled'
  }
}

export class JobRegistry {
  private readonly jobs = new Map<string, Entry>()
  private readonly log: JobLogger
  private readonly keepFinished: number
  private readonly keepFinishedMs: number
  private readonly closeTimeoutMs: number
  private closing = false

  constructor(options: JobRegistryOptions) {
    this.log = options.log
    this.keepFinished = options.keepFinished ?? 50
    this.keepFinishedMs = options.keepFinishedMs ?? 60 * 60 * 1000
    this.closeTimeoutMs = options.closeTimeoutMs ?? 10_000
  }

  /** The running job of a kind, if any. */
  running(kind: string): JobSnapshot | undefined {
    for (const { snapshot } of this.jobs.values()) if (snapshot.kind === kind && snapshot.state === 'running') return { ...snapshot }
    return undefined
  }

  /**
   * Starts `work` as a job of `kind`, unless one of that kind is running (then that one is returned and
   * nothing starts). The work runs detached from the caller: a client that goes away does not stop it.
   */
  start<P, R>(kind: string, params: Record<string, unknown>, initialProgress: P, work: (context: JobContext<P>) => Promise<R>): StartResult<P, R> {
    if (this.closing) throw new JobCancelled('the origin is shutting down; no new jobs')
    const running = this.running(kind)
    if (running !== undefined) return { started: false, running }
    this.prune()
    // 128 random bits, URL-safe: an id is unguessable, so knowing one is what reading a job takes
    // besides the admin token.
    const id = randomBytes(16).toString('base64url')
    const snapshot: JobSnapshot = { id, kind, state: 'running', params, progress: initialProgress, result: null, error: null, startedAt: new Date().toISOString(), finishedAt: null }
    const controller = new AbortController()
    const started = Date.now()
    const entry: Entry = { snapshot, controller, settled: Promise.resolve(), finishedAtMs: 0 }
    this.jobs.set(id, entry)
    this.log.info({ job: id, kind, params }, 'job started')
    const finish = (state: JobState): void => {
      snapshot.state = state
      snapshot.finishedAt = new Date().toISOString()
      entry.finishedAtMs = Date.now()
      this.prune()
    }
    // Started now (a synchronous throw becomes a failed job), settled in the background.
    entry.settled = new Promise<R>((resolve) => resolve(work({ signal: controller.signal, progress: (progress) => void (snapshot.progress = progress) }))).then(
      (result) => {
        if (snapshot.state !== 'running') return // given up on by close()
        snapshot.result = result
        finish('done')
        this.log.info({ job: id, kind, durationMs: Date.now() - started, result }, 'job finished')
      },
      (err: unknown) => {
        if (snapshot.state !== 'running') return
        snapshot.error = err instanceof Error ? err.message : String(err)
        finish('failed')
        if (err instanceof JobCancelled) this.log.warn({ job: id, kind, durationMs: Date.now() - started, progress: snapshot.progress, reason: snapshot.error }, 'job cancelled')
        else this.log.error({ job: id, kind, durationMs: Date.now() - started, progress: snapshot.progress, err }, 'job failed')
      },
    )
    return { started: true, job: { ...snapshot } as JobSnapshot<P, R> }
  }

  /** A job by id: a copy of its state now; undefined for an id never issued or already forgotten. */
  get(id: string): JobSnapshot | undefined {
    this.prune()
    const entry = this.jobs.get(id)
    return entry === undefined ? undefined : { ...entry.snapshot }
  }

  /**
   * Stops the running jobs (their signals abort; each stops at its next safe point and is marked
   * failed, cancelled) and waits for them, at most `closeTimeoutMs`, so a shutdown never hangs on one.
   */
  async close(reason = 'cancelled: the origin is shutting down'): Promise<void> {
    this.closing = true
    const running = [...this.jobs.values()].filter((entry) => entry.snapshot.state === 'running')
    for (const entry of running) entry.controller.abort(new JobCancelled(reason))
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.closeTimeoutMs)))
    await Promise.race([Promise.all(running.map((entry) => entry.settled)), deadline])
    clearTimeout(timer)
    for (const entry of running) {
      if (entry.snapshot.state !== 'running') continue
      // Still busy past the deadline: reported as failed now; what it was doing fails with the pool.
      entry.snapshot.error = `${reason} (still stopping after ${this.closeTimeoutMs} ms)`
      entry.snapshot.state = 'failed'
      entry.snapshot.finishedAt = new Date().toISOString()
      entry.finishedAtMs = Date.now()
      this.log.warn({ job: entry.snapshot.id, kind: entry.snapshot.kind }, 'job did not stop in time; closing without it')
    }
  }

  /** Forgets finished jobs past their keep time, then the oldest beyond the count. Running jobs stay. */
  private prune(): void {
    const now = Date.now()
    const finished = [...this.jobs.values()].filter((entry) => entry.snapshot.state !== 'running')
    for (const entry of finished) if (now - entry.finishedAtMs > this.keepFinishedMs) this.jobs.delete(entry.snapshot.id)
    const kept = finished.filter((entry) => this.jobs.has(entry.snapshot.id)).sort((a, b) => a.finishedAtMs - b.finishedAtMs)
    for (const entry of kept.slice(0, Math.max(0, kept.length - this.keepFinished))) this.jobs.delete(entry.snapshot.id)
  }
}
