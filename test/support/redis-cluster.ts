// A private 3-master Redis Cluster from redis-server binaries, on free ports (each port and its
// cluster bus port, +10000), in a temporary directory; torn down with the test.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'

async function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

async function pickPorts(count: number): Promise<number[]> {
  const ports: number[] = []
  while (ports.length < count) {
    const port = 20_000 + Math.floor(Math.random() * 20_000)
    if (!ports.includes(port) && (await isFree(port)) && (await isFree(port + 10_000))) ports.push(port)
  }
  return ports
}

export async function privateRedisCluster(t: { teardown(fn: () => unknown): void }): Promise<{ nodes: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'vo-redis-cluster-'))
  const ports = await pickPorts(3)
  const children: ChildProcess[] = ports.map((port) =>
    spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--dir', dir, '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], { stdio: 'ignore' }),
  )
  t.teardown(async () => {
    await Promise.all(children.map((child) => new Promise((resolve) => (child.exitCode !== null ? resolve(null) : (child.once('exit', resolve), child.kill('SIGKILL'))))))
    rmSync(dir, { recursive: true, force: true })
  })
  const cli = (...args: string[]) => spawnSync('redis-cli', args, { encoding: 'utf8', timeout: 20_000 })
  for (const port of ports) {
    for (let i = 0; i < 100 && cli('-p', String(port), 'ping').stdout.trim() !== 'PONG'; i++) await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const created = cli('--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes')
  if (created.status !== 0) throw new Error(`redis-cli --cluster create failed: ${created.stdout} ${created.stderr}`)
  for (let i = 0; i < 200; i++) {
    if (ports.every((port) => cli('-p', String(port), 'cluster', 'info').stdout.includes('cluster_state:ok'))) return { nodes: ports.map((p) => `127.0.0.1:${p}`).join(',') }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error('the Redis Cluster did not reach cluster_state:ok')
}

/**
 * One cluster-enabled redis-server owning only half the hash slots, so it reports cluster_state:fail
 * (a cluster still forming, or one that lost a master) until `coverAllSlots()` assigns the rest.
 */
export async function privateUnreadyCluster(t: { teardown(fn: () => unknown): void }): Promise<{ nodes: string; coverAllSlots(): void }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'vo-redis-unready-'))
  const [port] = await pickPorts(1)
  // announce-ip: a lone node that never met another lists its slots with no address, which no client can use.
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-announce-ip', '127.0.0.1', '--cluster-config-file', 'nodes.conf', '--dir', dir, '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], { stdio: 'ignore' })
  t.teardown(async () => {
    await new Promise((resolve) => (child.exitCode !== null ? resolve(null) : (child.once('exit', resolve), child.kill('SIGKILL'))))
    rmSync(dir, { recursive: true, force: true })
  })
  const cli = (...args: string[]) => spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8', timeout: 20_000 })
  for (let i = 0; i < 100 && cli('ping').stdout.trim() !== 'PONG'; i++) await new Promise((resolve) => setTimeout(resolve, 50))
  if (cli('cluster', 'addslotsrange', '0', '8191').stdout.trim() !== 'OK') throw new Error('could not assign the first half of the slots')
  return {
    nodes: `127.0.0.1:${port}`,
    coverAllSlots: () => {
      if (cli('cluster', 'addslotsrange', '8192', '16383').stdout.trim() !== 'OK') throw new Error('could not assign the second half of the slots')
    },
  }
}
