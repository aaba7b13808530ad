// A private varnishd running the project's VCL (deploy/varnish/default.vcl) in front of a test origin:
// its own work directory and port, killed at teardown. The VCL is copied with the backend's two
// lines rewritten, so the committed file keeps pointing at the compose service `origin:3000`; a VCL
// generated at run time (GET /admin/cdn/varnish.vcl) is loaded the same way by loadVcl.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { until } from './until.ts'

export const VCL_PATH = fileURLToPath(new URL('../../deploy/varnish/default.vcl', import.meta.url))

/** The backend lines of the committed VCL; the test origin replaces exactly these. */
const BACKEND_HOST_LINE = /^(\s*\.host = )"origin";$/m
const BACKEND_PORT_LINE = /^(\s*\.port = )"3000";$/m

/** varnishd's path, or undefined when Varnish is not installed (it lives in sbin, often off a user's PATH). */
export function findVarnishd(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin']
  return dirs.map((dir) => path.join(dir, 'varnishd')).find((candidate) => existsSync(candidate))
}

export function vclFor(vcl: string, host: string, port: number): string {
  if (!BACKEND_HOST_LINE.test(vcl) || !BACKEND_PORT_LINE.test(vcl)) {
    throw new Error(`${VCL_PATH}: the backend must keep the lines '.host = "origin";' and '.port = "3000";' that the tests rewrite`)
  }
  return vcl.replace(BACKEND_HOST_LINE, `$1"${host}";`).replace(BACKEND_PORT_LINE, `$1"${port}";`)
}

export interface Varnish {
  url: string
  port: number
  workdir: string
  vclFile: string
  /** Runs varnishadm against this instance. */
  adm(...args: string[]): string
  /**
   * Compiles `vcl` (a generated one, say) with its backend lines rewritten to the test origin, loads it
   * as `name` and makes it the active VCL. The VCL varnishd started with is `boot`.
   */
  loadVcl(name: string, vcl: string): Promise<void>
  /** varnishstat counters by name (MAIN.backend_req, MAIN.n_object, ...). */
  stats(...names: string[]): Record<string, number>
  close(): Promise<void>
}

async function waitForHttp(url: string, child: ChildProcess, output: () => string, timeoutMs: number): Promise<void> {
  try {
    await until(
      `varnishd to answer ${url} with 200`,
      async () => {
        if (child.exitCode !== null) throw new Error(`varnishd exited with ${child.exitCode}`)
        try {
          const response = await fetch(url, { signal: AbortSignal.timeout(1_000) })
          await response.arrayBuffer()
          return response.status === 200
        } catch {
          return false // not listening yet
        }
      },
      { timeoutMs, intervalMs: 100 },
    )
  } catch (err) {
    throw new Error(`${(err as Error).message} (within ${timeoutMs} ms):\n${output()}`)
  }
}

/**
 * Starts varnishd with the project's VCL in front of http://host:port, listening on `port` (chosen
 * before the origin is built, since the origin's VARNISH_PURGE_URL names it); resolves once
 * /health/live answers through it.
 */
export async function startVarnish(varnishd: string, backend: { host: string; port: number }, port: number): Promise<Varnish> {
  const workdir = await mkdtemp(path.join(tmpdir(), 'vo-varnish-'))
  // varnishd drops root to its own users: they must read the VCL and use the work directory.
  await chmod(workdir, 0o755)
  const vclFile = path.join(workdir, 'default.vcl')
  await writeFile(vclFile, vclFor(await readFile(VCL_PATH, 'utf8'), backend.host, backend.port), { mode: 0o644 })
  const instance = path.join(workdir, 'instance')
  const child = spawn(varnishd, ['-F', '-n', instance, '-f', vclFile, '-a', `127.0.0.1:${port}`, '-s', 'malloc,64m', '-p', 'vsl_space=16M'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()))
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()))
  const url = `http://127.0.0.1:${port}`
  const close = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
      await exited
      clearTimeout(timer)
    }
    await rm(workdir, { recursive: true, force: true })
  }
  try {
    await waitForHttp(`${url}/health/live`, child, () => output, 20_000)
  } catch (err) {
    await close()
    throw err
  }
  const varnishadm = path.join(path.dirname(varnishd).replace(/sbin$/, 'bin'), 'varnishadm')
  const varnishadmFor = (timeoutSeconds: number, args: string[]): string => {
    const result = spawnSync(existsSync(varnishadm) ? varnishadm : 'varnishadm', ['-n', instance, '-t', String(timeoutSeconds), ...args], { encoding: 'utf8', timeout: (timeoutSeconds + 5) * 1000 })
    if (result.status !== 0) throw new Error(`varnishadm ${args.join(' ')}: ${result.stderr}${result.stdout}`)
    return result.stdout
  }
  const adm = (...args: string[]): string => varnishadmFor(5, args)
  const loadVcl = async (name: string, vcl: string): Promise<void> => {
    const file = path.join(workdir, `${name}.vcl`)
    await writeFile(file, vclFor(vcl, backend.host, backend.port), { mode: 0o644 })
    // vcl.load compiles the VCL to C and builds it: slow on a busy machine, as varnishd -C is.
    varnishadmFor(60, ['vcl.load', name, file])
    adm('vcl.use', name)
  }
  const varnishstat = path.join(path.dirname(varnishadm), 'varnishstat')
  const stats = (...names: string[]): Record<string, number> => {
    const result = spawnSync(existsSync(varnishstat) ? varnishstat : 'varnishstat', ['-n', instance, '-1', '-j', ...names.flatMap((n) => ['-f', n])], { encoding: 'utf8', timeout: 10_000 })
    if (result.status !== 0) throw new Error(`varnishstat: ${result.stderr}`)
    const parsed = JSON.parse(result.stdout) as { counters?: Record<string, { value: number }> } & Record<string, { value?: number }>
    const counters = parsed.counters ?? parsed
    return Object.fromEntries(names.map((n) => [n, Number(counters[n]?.value ?? NaN)]))
  }
  return { url, port, workdir, vclFile, adm, loadVcl, stats, close }
}
