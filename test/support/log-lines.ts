// The app's JSON log lines, parsed, for tests that check what an operator would read.

import { Writable } from 'node:stream'

/** A pino destination that keeps every line written to it, parsed, in `lines`. */
export function captureLogLines(): { lines: Array<Record<string, unknown>>; stream: Writable } {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>)
      done()
    },
  })
  return { lines, stream }
}
