// Polling for a condition the test cannot await directly (a reconnect, a consumer catching up, a
// purge delivered): check every `intervalMs` until it holds, or fail naming what never happened.

export interface UntilOptions {
  timeoutMs: number
  intervalMs?: number
  /** A check that throws counts as "not yet" (e.g. a consumer group that does not exist yet). */
  errorsMeanNotYet?: boolean
}

export async function until(what: string, check: () => boolean | Promise<boolean>, options: UntilOptions): Promise<void> {
  const { timeoutMs, intervalMs = 50, errorsMeanNotYet = false } = options
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const done = errorsMeanNotYet ? await Promise.resolve().then(check).catch(() => false) : await check()
    if (done) return
    if (Date.now() >= deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}
