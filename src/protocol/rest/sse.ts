/**
 * Server-sent events on a hijacked fastify reply. A stream is opened once its request is validated
 * and admitted (so validation and overload errors still get real HTTP statuses), and its headers
 * go out at once, before the engine's first token.
 */
import type { FastifyReply } from 'fastify'

export interface SseWriter {
  /** Writes `data: <json>\n\n` (or the literal text when `raw`); nothing once the client is gone. */
  send(data: unknown, raw?: boolean): void
  end(): void
}

/** Starts an SSE response. Cancelling on disconnect is the caller's (see clientGone). */
export function openSse(reply: FastifyReply): SseWriter {
  reply.hijack()
  const res = reply.raw
  res.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  })
  // Node holds headers back until the first body write; the first token may be a prefill away.
  res.flushHeaders()
  const open = () => !res.destroyed && !res.writableEnded
  return {
    send(data, raw = false) {
      if (open()) res.write(`data: ${raw ? String(data) : JSON.stringify(data)}\n\n`)
    },
    end() {
      if (open()) res.end()
    },
  }
}

/** An AbortController that fires when the client closes the connection early. */
export function clientGone(reply: FastifyReply): AbortController {
  const ac = new AbortController()
  reply.raw.on('close', () => { if (!reply.raw.writableFinished) ac.abort() })
  return ac
}
