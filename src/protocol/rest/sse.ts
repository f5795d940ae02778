/**
 * Server-sent events on a hijacked fastify reply. A stream is only opened once the first engine
 * event is known to be a token, so validation and overload errors still get real HTTP statuses.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'

export interface SseWriter {
  /** Writes `data: <json>\n\n` (or the literal text when `raw`). Returns false once the client is gone. */
  send(data: unknown, raw?: boolean): boolean
  end(): void
  readonly closed: boolean
}

/** Starts an SSE response; `onClose` fires if the client disconnects before `end()`. */
export function openSse(req: FastifyRequest, reply: FastifyReply, onClose: () => void): SseWriter {
  reply.hijack()
  const res = reply.raw
  res.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  })
  let closed = false
  res.on('close', () => {
    if (!res.writableFinished) onClose()
    closed = true
  })
  void req
  return {
    send(data, raw = false) {
      if (closed || res.destroyed) return false
      res.write(`data: ${raw ? String(data) : JSON.stringify(data)}\n\n`)
      return true
    },
    end() {
      if (!closed && !res.destroyed) res.end()
      closed = true
    },
    get closed() { return closed || res.destroyed },
  }
}

/** An AbortController that fires when the client closes the connection early. */
export function clientGone(reply: FastifyReply): AbortController {
  const ac = new AbortController()
  reply.raw.on('close', () => { if (!reply.raw.writableFinished) ac.abort() })
  return ac
}
