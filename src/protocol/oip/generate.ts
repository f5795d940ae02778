/**
 * Triton's generate extension for LLM servables: `POST /v2/models/{m}[/versions/{v}]/generate`
 * answers `{"model_name", "model_version", "text_output"}`; `/generate_stream` sends one SSE event
 * per token with that token's `text_output` (the last one also has `finish_reason`). The body is
 * `{"text_input": "...", "parameters": {...}}`; sampling fields may also sit at the top level, as
 * Triton accepts them. Names: Triton's (`max_tokens`, `stop_words`) and TGI's (`max_new_tokens`,
 * `stop`, `temperature`, `top_p`, `top_k`, `seed`, ...). Errors before the stream opens are
 * `{"error"}` with the error table's status; later ones an `{"error"}` event in the 200 stream.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import { ServeError } from '../../errors.ts'
import type { LlmDispatcher } from '../../runtime/llm-dispatch.ts'
import { collect, engineParameters, parseJson, relaySse, tgiParameters, tracked } from '../rest/llm-common.ts'
import { clientGone } from '../rest/sse.ts'
import { oipError } from '../error-render.ts'

/** Triton's names -> TGI's (which tgiParameters reads). */
const TRITON_NAMES: Record<string, string> = { max_tokens: 'max_new_tokens', stop_words: 'stop' }

/** Keys of the body that are not sampling parameters. */
const BODY_KEYS = new Set(['text_input', 'parameters', 'id', 'stream'])

function requestOf(body: unknown) {
  const b = parseJson(body)
  if (typeof b.text_input !== 'string') throw new ServeError('VALIDATION', `the generate request needs "text_input": the prompt as a string${b.text_input === undefined ? '' : ` (got ${JSON.stringify(b.text_input)})`}`)
  const p = b.parameters
  if (p !== undefined && (p === null || typeof p !== 'object' || Array.isArray(p))) throw new ServeError('VALIDATION', '"parameters" must be an object')
  const merged: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(b)) if (!BODY_KEYS.has(k)) merged[TRITON_NAMES[k] ?? k] = v
  for (const [k, v] of Object.entries((p ?? {}) as Record<string, unknown>)) merged[TRITON_NAMES[k] ?? k] = v
  // temperature 0 is greedy, as Triton's vLLM and TensorRT-LLM backends read it (TGI refuses 0).
  if (merged['temperature'] === 0) { delete merged['temperature']; merged['do_sample'] = false }
  // Triton's stop_words may be one string.
  if (typeof merged['stop'] === 'string') merged['stop'] = [merged['stop']]
  const params = tgiParameters(merged, '')
  if (params.bestOf !== undefined && params.bestOf !== 1) throw new ServeError('VALIDATION', '`best_of` != 1 is not allowed for this endpoint')
  return { inputs: b.text_input, parameters: engineParameters(params) }
}

export async function handleOipGenerate(llm: LlmDispatcher, stream: boolean, modelName: string, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const version = String(llm.version)
  try {
    const valid = tracked(reply, llm, llm.validate(requestOf(req.body)))
    if (!stream) {
      const { done } = await collect(llm, valid, clientGone(reply).signal)
      return reply.code(200).send({ model_name: modelName, model_version: version, text_output: done.generatedText, finish_reason: done.finishReason })
    }
    return await relaySse(llm, valid, reply, {
      holdLast: true,
      token: (sse, t) => sse.send({ model_name: modelName, model_version: version, text_output: t.text }),
      done: (sse, ev, last) => sse.send({ model_name: modelName, model_version: version, text_output: last?.text ?? '', finish_reason: ev.finishReason }),
      error: (sse, ev) => sse.send(oipError(ev).body),
    })
  } catch (e) {
    if (reply.sent || reply.raw.headersSent) return
    const { status, body } = oipError(e as ServeError)
    return reply.code(status).send(body)
  }
}
