/**
 * MindSpore-style LLM methods on the predict URL: `POST /model/{name}:generate` returns whole
 * answers; `:generated_stream` streams one JSON event per token (SSE: index, token, token_id,
 * logprob), the last one carrying the full text and finish reason. Instances: `{"prompt": "...", "max_new_tokens": 32, ...sampling}`.
 * Errors render with their code's row of the error table (422 validation, 429 overloaded, 503 not
 * ready, ...); on :generate each instance is validated and run on its own (MindSpore's
 * per-instance errors), and only when all fail alike is the answer that one error.
 */
import { collapseOutcomes, type InstanceOutcome } from '../../runtime/predict-outcome.ts'
import { msText } from '../texts.ts'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { ServeError, toServeError } from '../../errors.ts'
import type { GenerateRequest } from '../../llm/types.ts'
import type { LlmDispatcher } from '../../runtime/llm-dispatch.ts'
import { collect, engineParameters, parseJson, relaySse, tgiParameters, tracked } from './llm-common.ts'
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

function toRequest(inst: Record<string, unknown>): GenerateRequest {
  const { prompt, ...rest } = inst
  if (typeof prompt !== 'string') throw new ServeError('VALIDATION', 'Cannot find input prompt in instance input: send {"prompt": "<text>"}')
  const params = tgiParameters(rest, '')
  // The MindSpore-style answers have no place for alternatives: TGI's text for such endpoints.
  if (params.topNTokens) throw new ServeError('VALIDATION', '`top_n_tokens` != 0 is not allowed for this endpoint')
  // Nor for several sequences (best_of runs on TGI's /generate only).
  if (params.bestOf !== undefined && params.bestOf !== 1) throw new ServeError('VALIDATION', '`best_of` != 1 is not allowed for this endpoint')
  return { inputs: prompt, parameters: engineParameters(params) }
}

type InstanceResult = InstanceOutcome<ServeError, { text: string; finish_reason: string; generated_tokens: number; prompt_tokens: number }>

/** One :generate instance, validated and run on its own; its error (validation, overload, generation) is its result. */
async function generateOne(llm: LlmDispatcher, request: GenerateRequest, signal: AbortSignal, reply: FastifyReply): Promise<InstanceResult> {
  try {
    const { done } = await collect(llm, tracked(reply, llm, llm.validate(request)), signal)
    return { text: done.generatedText, finish_reason: done.finishReason, generated_tokens: done.generatedTokens, prompt_tokens: done.inputTokens }
  } catch (e) {
    return { error: toServeError(e) }
  }
}

/** Handles :generate and :generated_stream for an LLM servable; `sendError` writes MindSpore's error body with the code's status. */
export async function handleMsGenerate(llm: LlmDispatcher, method: string, req: FastifyRequest, reply: FastifyReply, sendError: (reply: FastifyReply, e: ServeError) => unknown): Promise<unknown> {
  const fail = (e: unknown) => sendError(reply, toServeError(e))
  try {
    const requests = instancesOf(req.body).map(toRequest)
    if (method === 'generate') {
      const ac = clientGone(reply)
      if (req.access) req.access.instances = requests.length
      const results = await Promise.all(requests.map((r) => generateOne(llm, r, ac.signal, reply)))
      const outcome = collapseOutcomes(results)
      if ('error' in outcome) return fail(outcome.error)
      const instances = outcome.instances.map((r) => ('error' in r ? { error_msg: msText(r.error) } : r))
      return reply.code(200).type('application/json').send(JSON.stringify({ instances }))
    }
    if (requests.length !== 1) throw new ServeError('INVALID_REQUEST', `generated_stream takes one instance per request (got ${requests.length})`)
    await relaySse(llm, tracked(reply, llm, llm.validate(requests[0]!)), reply, {
      holdLast: true,
      token: (sse, t) => sse.send({ index: t.index, token: t.text, token_id: t.id, logprob: t.logprob }),
      done: (sse, ev, last) => sse.send({
        index: last?.index ?? ev.generatedTokens, token: last?.text ?? '', token_id: last?.id ?? -1, ...(last ? { logprob: last.logprob } : {}),
        text: ev.generatedText, finish_reason: ev.finishReason, generated_tokens: ev.generatedTokens,
      }),
      error: (sse, ev) => sse.send({ error_msg: msText(ev) }),
    })
    return reply
  } catch (e) {
    if (reply.sent || reply.raw.headersSent) return reply
    return fail(e)
  }
}
