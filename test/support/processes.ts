// Child processes the tests and benchmarks start or look for: a CLI run to completion, and the
// embedded PostgreSQL child of this process (to pause it, or to read its peak memory).

import { spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'

export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
}

/**
 * Runs a TypeScript entry point under this Node (and its loader flags, when coverage is on) to its exit; LOG_LEVEL=warn
 * unless env says otherwise. A run that has not exited after `timeoutMs` is killed and reported with
 * what it printed so far, so a hang fails its own assertion instead of the whole file's timeout.
 */
export function runScript(entry: string, args: string[], env: Record<string, string>, timeoutMs = 60_000): Promise<CliResult> {
  // tap's TypeScript loader is there for coverage (see README, Libraries): without coverage (the native pass,
  // `tap --disable-coverage`) the script runs on Node's own type stripping, as `npm run` runs it, seconds sooner.
  const execArgv = process.env.TAP_DISABLE_COVERAGE === '1' ? process.execArgv.filter((arg) => !arg.includes('@tapjs/typescript')) : process.execArgv
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...execArgv, entry, ...args], { env: { ...process.env, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c) => (stdout += c))
    child.stderr.on('data', (c) => (stderr += c))
    const timer = setTimeout(() => {
      stderr += `\n[killed: no exit within ${timeoutMs} ms]`
      child.kill('SIGKILL')
    }, timeoutMs)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

/** The pid of this process's embedded PostgreSQL child (src/db/embedded-postgres-child.ts), from /proc; undefined when there is none. */
export function embeddedPostgresPid(): number | undefined {
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (ppid === process.pid && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('embedded-postgres-child')) return Number(pid)
    } catch {
      // the process went away while we looked
    }
  }
  return undefined
}
