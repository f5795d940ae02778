/**
 * Streaming generate over undici: TGI `POST /generate_stream` or OpenAI `POST /v1/completions`
 * with `stream: true`. Records when each token-bearing SSE event arrives; the metrics (TTFT, TPOT,
 * ITL, E2EL) are computed from those times by the recorder, as vLLM's benchmark does client side.
 */
import { Pool } from 'undici'
import { SseParser } from '../client/sse.ts'
import { interpretEvent } from './sse.ts'
import { errorMessageOf, failed, networkErrorKind, type SendOutcome, type Target } from './target.ts'
import type { GenerateRoute } from './types.ts'

export interface GenerateOptions {
  origin: string
  route: GenerateRoute
  servable: string
  prompts: string[]
  maxNewTokens: number
  connections: number
  timeoutMs: number
}

export const GENERATE_PATHS: Record<GenerateRoute, string> = { tgi: '/generate_stream', openai: '/v1/completions' }

/** The request body each route documents (TGI §1.2 parameters; OpenAI completions with usage). */
export function generateBody(route: GenerateRoute, servable: string, prompt: string, maxNewTokens: number): string {
  if (route === 'tgi') return JSON.stringify({ inputs: prompt, parameters: { max_new_tokens: maxNewTokens, details: true } })
  return JSON.stringify({ model: servable, prompt, max_tokens: maxNewTokens, temperature: 0, stream: true, stream_options: { include_usage: true } })
}

export function generateTarget(o: GenerateOptions): Target {
  const pool = new Pool(o.origin, { connections: o.connections, pipelining: 1, keepAliveTimeout: 60_000, headersTimeout: o.timeoutMs, bodyTimeout: o.timeoutMs })
  const path = GENERATE_PATHS[o.route]
  const bodies = o.prompts.map((p) => Buffer.from(generateBody(o.route, o.servable, p, o.maxNewTokens)))
  const headers = { 'content-type': 'application/json', accept: 'text/event-stream' }
  let next = 0
  return {
    description: `${o.route === 'tgi' ? 'TGI' : 'OpenAI'} stream POST ${o.origin}${path}`,
    itemsPerRequest: 1,
    async send(): Promise<SendOutcome> {
      const body = bodies[next++ % bodies.length]!
      const chunkTimes: number[] = []
      let tokens = 0
      let finalTokens: number | undefined
      let finished = false
      try {
        const res = await pool.request({ path, method: 'POST', headers, body })
        if (res.statusCode !== 200) return failed(`http_${res.statusCode}`, errorMessageOf(await res.body.text()))
        const parser = new SseParser()
        const decoder = new TextDecoder()
        const handle = (payloads: string[], at: number): SendOutcome | null => {
          for (const p of payloads) {
            const ev = interpretEvent(o.route, p)
            if (ev.kind === 'error') return failed(ev.errorKind, ev.message)
            if (ev.kind === 'done') { finished = true; continue }
            if (ev.kind !== 'token') continue
            if (ev.count > 0) { chunkTimes.push(at); tokens += ev.count }
            if (ev.finalTokens !== undefined) finalTokens = ev.finalTokens
            // TGI ends with the final token event; OpenAI with [DONE] after it.
            if (ev.final && o.route === 'tgi') finished = true
          }
          return null
        }
        for await (const chunk of res.body) {
          const at = performance.now()
          const err = handle(parser.push(decoder.decode(chunk as Buffer, { stream: true })), at)
          if (err) { res.body.destroy(); return err }
        }
        const err = handle(parser.end(), performance.now())
        if (err) return err
        if (!finished) return failed('incomplete_stream', `the stream ended after ${tokens} token event(s) without ${o.route === 'tgi' ? 'a final event (generated_text)' : 'data: [DONE]'}`)
        return { error: null, stream: { chunkTimes, outputTokens: finalTokens ?? tokens } }
      } catch (e) {
        return failed(networkErrorKind(e), (e as Error).message)
      }
    },
    async close(): Promise<void> {
      await pool.close()
    },
  }
}
