/**
 * MindSpore-style LLM methods on the predict URL: `POST /model/{name}:generate` returns whole
 * answers; `:generated_stream` streams one JSON event per token (SSE), the last one carrying the
 * full text and finish reason. Instances: `{"prompt": "...", "max_new_tokens": 32, ...sampling}`.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import { ServeError, toServeError } from '../../errors.ts'
import type { LlmDispatcher } from '../../runtime/llm-dispatch.ts'
import type { LlmWireRequest } from '../../runtime/messages.ts'
import { collect, engineParameters, parseJson, relaySse, tgiParameters } from './llm-common.ts'
import { clientGone } from './sse.ts'

export const LLM_METHODS = ['generate', 'generated_stream'] as const

function instancesOf(body: unknown): Record<string, unknown>[] {
  const b = parseJson(body)
  const inst = b.instances
  if (inst === undefined) throw new ServeError('INVALID_REQUEST', "key 'instances' expects to exist once, but actually 0 times")
  const list = Array.isArray(inst) ? inst : [inst]
  if (list.length === 0) throw new ServeError('INVALID_REQUEST', 'instances value is array type, but no value')
  return list.map((x, i) => {
    if (!x || typeof x !== 'object' || Array.isArray(x)) throw new ServeError('INVALID_REQUEST', `instance ${i} must be an object like {"prompt": "Hello", "max_new_tokens": 32}`)
    return x as Record<string, unknown>
  })
}

function toWire(inst: Record<string, unknown>): LlmWireRequest {
  const { prompt, ...rest } = inst
  if (typeof prompt !== 'string') throw new ServeError('VALIDATION', 'Cannot find input prompt in instance input: send {"prompt": "<text>"}')
  const params = tgiParameters(rest, '')
  // The MindSpore-style answers have no place for alternatives: TGI's text for such endpoints.
  if (params.topNTokens) throw new ServeError('VALIDATION', '`top_n_tokens` != 0 is not allowed for this endpoint')
  // Nor for several sequences (best_of runs on TGI's /generate only).
  if (params.bestOf !== undefined && params.bestOf !== 1) throw new ServeError('VALIDATION', '`best_of` != 1 is not allowed for this endpoint')
  return { inputs: prompt, parameters: engineParameters(params) }
}

/** Handles :generate and :generated_stream for an LLM servable; `sendError` writes MindSpore's error body. */
export async function handleMsGenerate(llm: LlmDispatcher, method: string, req: FastifyRequest, reply: FastifyReply, sendError: (reply: FastifyReply, e: ServeError) => unknown): Promise<unknown> {
  const fail = (e: unknown) => sendError(reply, toServeError(e))
  try {
    const instances = instancesOf(req.body).map(toWire)
    if (method === 'generate') {
      const ac = clientGone(reply)
      const results = await Promise.all(instances.map((w) => collect(llm, w, ac.signal).then(
        ({ done }) => ({ text: done.generatedText, finish_reason: done.finishReason, generated_tokens: done.generatedTokens, prompt_tokens: done.inputTokens }),
        (e) => ({ error_msg: toServeError(e).message }),
      )))
      const first = results[0] as { error_msg?: string }
      if (first.error_msg !== undefined && results.every((r) => (r as { error_msg?: string }).error_msg === first.error_msg)) return fail(new ServeError('VALIDATION', first.error_msg))
      return reply.code(200).type('application/json').send(JSON.stringify({ instances: results }))
    }
    if (instances.length !== 1) throw new ServeError('INVALID_REQUEST', `generated_stream takes one instance per request (got ${instances.length})`)
    await relaySse(llm, instances[0]!, req, reply, {
      holdLast: true,
      token: (sse, t) => sse.send({ index: t.index, token: t.text, token_id: t.id }),
      done: (sse, ev, last) => sse.send({ index: last?.index ?? ev.generatedTokens, token: last?.text ?? '', token_id: last?.id ?? -1, text: ev.generatedText, finish_reason: ev.finishReason, generated_tokens: ev.generatedTokens }),
      error: (sse, ev) => sse.send({ error_msg: ev.message }),
    })
    return reply
  } catch (e) {
    if (reply.sent || reply.raw.headersSent) return reply
    return fail(e)
  }
}
