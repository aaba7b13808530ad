// A private redis-server for fault tests (killed, paused, restarted), on a free port, nothing on disk.

import { spawn, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { freePort } from './net.ts'

export interface PrivateRedis {
  url: string
  port: number
  start(): Promise<void>
  kill(): Promise<void>
  pause(): void
  resume(): void
}

async function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.setTimeout(200)
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (data) => {
      socket.destroy()
      resolve(data.toString().startsWith('+PONG'))
    })
    socket.on('error', () => resolve(false))
    socket.on('timeout', () => {
      socket.destroy()
      resolve(false)
    })
  })
}

export async function privateRedis(t: { teardown(fn: () => unknown): void }): Promise<PrivateRedis> {
  const port = await freePort()
  let child: ChildProcess | undefined
  const redis: PrivateRedis = {
    url: `redis://127.0.0.1:${port}`,
    port,
    async start() {
      child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], { stdio: 'ignore' })
      for (let i = 0; i < 100; i++) {
        if (await answers(port)) return
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      throw new Error(`redis-server did not start on port ${port} (is the redis-server binary installed?)`)
    },
    async kill() {
      // A child killed by a signal has a signalCode and no exitCode: either means it is gone.
      if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((resolve) => child!.once('exit', resolve))
      child.kill('SIGKILL')
      await exited
    },
    pause() {
      child?.kill('SIGSTOP')
    },
    resume() {
      child?.kill('SIGCONT')
    },
  }
  await redis.start()
  t.teardown(async () => {
    redis.resume()
    await redis.kill()
  })
  return redis
}
