/**
 * TGI-compatible routes: POST /generate, /generate_stream, POST / (stream flag), GET /info.
 * Bodies, events, validation messages and status codes follow llm-serving.md §1. As TGI's router,
 * a request is validated and tokenized here, in the listener, before it is started: validation and
 * overload errors keep their HTTP status on the stream route too, and a valid stream sends its
 * headers at once; later errors (a failed generation) are error events inside the 200 stream.
 * `best_of` runs on the non-stream routes (/generate, POST / without stream): see generate().
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { ServeError, toServeError } from '../../errors.ts'
import type { DoneEvent, TokenEvent, TopToken, ValidGenerate } from '../../llm/types.ts'
import type { LlmDispatcher } from '../../runtime/llm-dispatch.ts'
import type { ServableRegistry } from '../../runtime/registry.ts'
import { validateBestOf } from '../../llm/validate.ts'
import { collectMany, engineParameters, noLlm, parseJson, relaySse, tgiGrammar, tgiParameters, tracked, type Collected } from './llm-common.ts'
import { clientGone } from './sse.ts'
import { tgiError } from '../error-render.ts'
import { VERSION } from '../../version.ts'

function sendError(reply: FastifyReply, e: unknown) {
  const { status, body } = tgiError(toServeError(e))
  return reply.code(status).send(body)
}

interface TgiCall { llm: LlmDispatcher; inputs: string; params: ReturnType<typeof tgiParameters>; stream: boolean; bestOf: number; valid: ValidGenerate }

async function parseCall(registry: ServableRegistry, body: unknown, route: string, reply: FastifyReply): Promise<TgiCall> {
  const llm = registry.llm()
  if (!llm) throw noLlm()
  const b = parseJson(body)
  if (typeof b.inputs !== 'string') throw new ServeError('VALIDATION', b.inputs === undefined ? 'Failed to deserialize the JSON body into the target type: missing field `inputs`' : 'Failed to deserialize the JSON body into the target type: inputs: expected a string')
  const p = b.parameters
  if (p !== undefined && p !== null && (typeof p !== 'object' || Array.isArray(p))) throw new ServeError('VALIDATION', 'Failed to deserialize the JSON body into the target type: parameters: expected an object')
  const { grammar: grammarField, ...plain } = (p ?? {}) as Record<string, unknown>
  const params = tgiParameters(plain)
  // As TGI: a body without `parameters` samples (its default parameters set do_sample = true).
  if (p === undefined || p === null) params.doSample = true
  const stream = route === '/generate_stream' || (route === '/' && b.stream === true)
  // best_of: range, sampling, no seed, not on streams (TGI's texts; the other rules are validateGenerate's).
  // The limit is read only when best_of is sent (with no ready replica, llm.validate answers 503).
  const bestOf = params.bestOf === undefined ? 1 : validateBestOf(params.bestOf, params, llm.info.maxBestOf, stream)
  if (stream && params.decoderInputDetails) throw new ServeError('VALIDATION', '`decoder_input_details` == true is not supported when streaming tokens')
  // Prompt-token logprobs would need the prefill's logits for every position; not implemented.
  if (params.decoderInputDetails) throw new ServeError('VALIDATION', '`decoder_input_details` == true is not supported by ms-serve')
  // 503 / 429 first, then every parameter and the token counts; nothing invalid reaches a replica.
  const grammar = await tgiGrammar(grammarField)
  const valid = tracked(reply, llm, llm.validate({ inputs: b.inputs, parameters: { ...engineParameters(params), ...(grammar ? { grammar } : {}) } }))
  return { llm, inputs: b.inputs, params, stream, bestOf, valid }
}

function tokenJson(t: TokenEvent | TopToken) {
  return { id: t.id, text: t.text, logprob: t.logprob, special: t.special }
}

/** TGI's `top_tokens` of one position (empty when not asked for). */
function topTokensJson(t: TokenEvent) {
  return t.topTokens ? t.topTokens.map(tokenJson) : []
}

/** A stream event; `top_tokens` only when asked for (TGI skips the field when empty). */
function streamEvent(t: TokenEvent, generatedText: string | null, details: unknown) {
  const ev: Record<string, unknown> = { index: t.index, token: tokenJson(t), generated_text: generatedText, details }
  if (t.topTokens?.length) ev.top_tokens = topTokensJson(t)
  return ev
}

function fullText(call: TgiCall, done: DoneEvent): string {
  return call.params.returnFullText ? call.inputs + done.generatedText : done.generatedText
}

/** Sum of the generated tokens' logprobs (NaN counts as -Infinity). */
function sumLogprob(c: Collected): number {
  let s = 0
  for (const t of c.tokens) s += Number.isNaN(t.logprob) ? -Infinity : t.logprob
  return s
}

/**
 * The sequence to answer with among best_of ones: the highest *sum* of its generated tokens'
 * logprobs (each token's logprob as reported in details.tokens, i.e. after penalties and
 * temperature); ties go to the earliest started. TGI divides that sum by the token count (mean
 * logprob per token); the sum is chosen here, so with different lengths a shorter sequence is
 * favoured. Returns its index.
 */
function pickBest(seqs: Collected[]): number {
  let best = 0
  for (let i = 1; i < seqs.length; i++) if (sumLogprob(seqs[i]!) > sumLogprob(seqs[best]!)) best = i
  return best
}

function detailsJson(call: TgiCall, c: Collected): Record<string, unknown> {
  const { tokens, done } = c
  const details: Record<string, unknown> = { finish_reason: done.finishReason, generated_tokens: done.generatedTokens, seed: done.seed, prefill: [], tokens: tokens.map(tokenJson) }
  // One list per generated token; the field is left out when top_n_tokens was not asked for.
  if (call.params.topNTokens) details.top_tokens = tokens.map(topTokensJson)
  return details
}

async function generate(call: TgiCall, reply: FastifyReply, asArray: boolean) {
  const ac = clientGone(reply)
  const seqs = await collectMany(call.llm, call.valid, call.bestOf, ac.signal)
  const bestIndex = pickBest(seqs)
  const { done } = seqs[bestIndex]!
  const t = done.timings
  const inferenceMs = t.totalMs - t.queueMs
  void reply.headers({
    'x-compute-type': call.llm.deviceType,
    'x-compute-time': (inferenceMs / 1000).toFixed(6),
    'x-total-time': Math.round(t.totalMs),
    'x-queue-time': Math.round(t.queueMs),
    'x-inference-time': Math.round(inferenceMs),
    'x-time-per-token': Math.round(inferenceMs / Math.max(1, done.generatedTokens)),
    'x-prompt-tokens': done.inputTokens,
    'x-generated-tokens': done.generatedTokens,
  })
  const res: Record<string, unknown> = { generated_text: fullText(call, done) }
  if (call.params.details) {
    const details = detailsJson(call, seqs[bestIndex]!)
    // As TGI: the sequences not chosen, in start order, each with its own text and details.
    if (call.bestOf > 1) details.best_of_sequences = seqs.filter((_, i) => i !== bestIndex).map((c) => ({ generated_text: fullText(call, c.done), ...detailsJson(call, c) }))
    res.details = details
  }
  return reply.send(asArray ? [res] : res)
}

function generateStream(call: TgiCall, reply: FastifyReply): Promise<void> {
  return relaySse(call.llm, call.valid, reply, {
    // The last token event carries generated_text and details.
    holdLast: true,
    token: (sse, t) => sse.send(streamEvent(t, null, null)),
    done: (sse, ev, held) => {
      const last = held ?? { index: ev.generatedTokens, id: -1, text: '', logprob: 0, special: true }
      const details = call.params.details ? { finish_reason: ev.finishReason, generated_tokens: ev.generatedTokens, seed: ev.seed, input_length: ev.inputTokens } : null
      sse.send(streamEvent(last as TokenEvent, fullText(call, ev), details))
    },
    error: (sse, ev) => sse.send(tgiError(ev).body),
  })
}

export function registerTgiRoutes(app: FastifyInstance, registry: ServableRegistry): void {
  const handle = (route: string) => async (req: FastifyRequest, reply: FastifyReply) => {
    try {
      const call = await parseCall(registry, req.body, route, reply)
      if (call.stream) return await generateStream(call, reply)
      return await generate(call, reply, route === '/')
    } catch (e) {
      if (reply.sent || reply.raw.headersSent) return
      return sendError(reply, e)
    }
  }
  app.post('/generate', handle('/generate'))
  app.post('/generate_stream', handle('/generate_stream'))
  app.post('/', handle('/'))
  app.get('/info', async (_req, reply) => {
    const llm = registry.llm()
    if (!llm) return sendError(reply, noLlm())
    const i = llm.info
    return {
      model_id: i.modelId,
      model_sha: null,
      model_dtype: i.kvDtype,
      model_device_type: llm.deviceType,
      model_pipeline_tag: 'text-generation',
      max_concurrent_requests: llm.maxConcurrentRequests,
      max_best_of: i.maxBestOf,
      max_stop_sequences: i.maxStopSequences,
      max_input_tokens: i.maxInputTokens,
      max_total_tokens: i.maxTotalTokens,
      validation_workers: 1,
      // TGI's limit for a list of `inputs`; these routes take one string per request.
      max_client_batch_size: 1,
      router: 'ms-serve',
      version: VERSION,
      sha: null,
      docker_label: null,
    }
  })
}
