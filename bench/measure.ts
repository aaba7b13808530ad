// What every benchmark here needs: a process's own CPU time, the median of rounds, cleanup on the way out
// (on an error or Ctrl-C too), and its section of bench/RESULTS.md.

import { existsSync, readFileSync, writeFileSync } from 'node:fs'

/** CPU time (user + system, ms) a process has used: /proc/<pid>/stat fields 14 and 15, in clock ticks of 10 ms. */
export function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(fields[11]) + Number(fields[12])) * 10
}

export const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** What was started or created, undone by cleanup() in reverse order; cleanup() runs once, on SIGINT and SIGTERM too. */
export const cleanups: Array<() => unknown> = []
let cleaning: Promise<void> | undefined
export function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const fn of cleanups.reverse()) {
      try {
        await fn()
      } catch (err) {
        process.stderr.write(`cleanup: ${err instanceof Error ? err.message : String(err)}\n`)
      }
    }
  })()
  return cleaning
}
/** Makes Ctrl-C and a kill undo what the benchmark started (call once, at its start). */
export function cleanUpOnSignals(): void {
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) process.on(signal, () => void cleanup().then(() => process.exit(code)))
}

export const log = (line: string): void => void process.stderr.write(`${line}\n`)
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Writes `section` (which starts with `start` and ends with `end`) in place of the file's section between those markers, else at its end. */
export function writeResultsSection(file: string, start: string, end: string, section: string): void {
  const previous = existsSync(file) ? readFileSync(file, 'utf8') : ''
  const at = previous.indexOf(start)
  writeFileSync(file, at === -1 ? `${previous.trimEnd()}\n${section}\n` : `${previous.slice(0, at)}${section}${previous.slice(previous.indexOf(end) + end.length)}`)
}
