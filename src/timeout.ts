// One way to bound a wait: the work's result, or (when `ms` passes first) TIMED_OUT or the given
// error. The work itself goes on; only the waiting stops. The timer never outlives the race.

export const TIMED_OUT: unique symbol = Symbol('timed out')

export function withTimeout<T>(work: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT>
export function withTimeout<T>(work: Promise<T>, ms: number, timeoutError: () => Error): Promise<T>
export async function withTimeout<T>(work: Promise<T>, ms: number, timeoutError?: () => Error): Promise<T | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<typeof TIMED_OUT>((resolve, reject) => {
    timer = setTimeout(() => (timeoutError === undefined ? resolve(TIMED_OUT) : reject(timeoutError())), ms)
  })
  try {
    return await Promise.race([work, deadline])
  } finally {
    clearTimeout(timer)
  }
}
