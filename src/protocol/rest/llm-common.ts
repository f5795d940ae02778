/**
 * Shared by the LLM route families (TGI, OpenAI, MindSpore-style): body parsing, parameter
 * mapping and collecting a whole generation from the event stream.
 */
import { ServeError } from '../../errors.ts'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { DoneEvent, ErrorEvent, GenerateEvent, GenerateParameters, TokenEvent } from '../../llm/types.ts'
import { openSse, type SseWriter } from './sse.ts'
import type { LlmDispatcher } from '../../runtime/llm-dispatch.ts'
import type { LlmWireRequest } from '../../runtime/messages.ts'

/** Parses a JSON request body; errors are 422 like TGI's deserialization failures. */
export function parseJson(body: unknown): Record<string, unknown> {
  if (typeof body !== 'string' || body.length === 0) throw new ServeError('VALIDATION', 'Failed to parse the request body as JSON: body is empty')
  let v: unknown
  try {
    v = JSON.parse(body)
  } catch (e) {
    throw new ServeError('VALIDATION', `Failed to parse the request body as JSON: ${(e as Error).message}`)
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ServeError('VALIDATION', 'Failed to deserialize the JSON body into the target type: expected an object')
  return v as Record<string, unknown>
}

type Kind = 'number' | 'integer' | 'boolean' | 'string' | 'strings'

function typed(obj: Record<string, unknown>, key: string, kind: Kind, path: string): unknown {
  const v = obj[key]
  if (v === undefined || v === null) return undefined
  const ok = kind === 'number' ? typeof v === 'number' && Number.isFinite(v)
    : kind === 'integer' ? Number.isInteger(v)
    : kind === 'boolean' ? typeof v === 'boolean'
    : kind === 'string' ? typeof v === 'string'
    : Array.isArray(v) && v.every((s) => typeof s === 'string')
  if (!ok) throw new ServeError('VALIDATION', `Failed to deserialize the JSON body into the target type: ${path}${key}: expected ${kind === 'strings' ? 'a list of strings' : `a ${kind}`}, got ${JSON.stringify(v)}`)
  return v
}

/** Maps TGI-style snake_case `parameters` onto the engine's GenerateParameters. */
export type RouteParameters = GenerateParameters & { details?: boolean; returnFullText?: boolean; decoderInputDetails?: boolean; bestOf?: number }

export function tgiParameters(p: Record<string, unknown>, path = 'parameters.'): RouteParameters {
  // Still unsupported (422 naming the field): watermark, grammar, adapter_id, and
  // decoder_input_details (rejected by the TGI routes, tgi.ts). `best_of` is only parsed here:
  // the TGI routes run it (tgi.ts), the MindSpore-style route refuses it.
  for (const k of ['watermark', 'grammar', 'adapter_id'] as const) {
    if (p[k] !== undefined && p[k] !== null && p[k] !== false && p[k] !== 0) throw new ServeError('VALIDATION', `\`${k}\` is not supported by ms-serve`)
  }
  const out: RouteParameters = {}
  const set = <K extends keyof typeof out>(k: K, v: unknown) => { if (v !== undefined) out[k] = v as (typeof out)[K] }
  set('maxNewTokens', typed(p, 'max_new_tokens', 'integer', path))
  set('temperature', typed(p, 'temperature', 'number', path))
  set('topK', typed(p, 'top_k', 'integer', path))
  set('topP', typed(p, 'top_p', 'number', path))
  set('typicalP', typed(p, 'typical_p', 'number', path))
  set('topNTokens', typed(p, 'top_n_tokens', 'integer', path))
  set('repetitionPenalty', typed(p, 'repetition_penalty', 'number', path))
  set('frequencyPenalty', typed(p, 'frequency_penalty', 'number', path))
  set('doSample', typed(p, 'do_sample', 'boolean', path))
  set('seed', typed(p, 'seed', 'integer', path))
  set('stop', typed(p, 'stop', 'strings', path))
  set('truncate', typed(p, 'truncate', 'integer', path))
  set('ignoreEos', typed(p, 'ignore_eos', 'boolean', path))
  set('details', typed(p, 'details', 'boolean', path))
  set('returnFullText', typed(p, 'return_full_text', 'boolean', path))
  set('decoderInputDetails', typed(p, 'decoder_input_details', 'boolean', path))
  set('bestOf', typed(p, 'best_of', 'integer', path))
  return out
}

/** Only the fields the engine reads (drops route-level flags such as `details`). */
export function engineParameters(p: RouteParameters): GenerateParameters {
  const { details: _d, returnFullText: _r, decoderInputDetails: _i, bestOf: _b, ...rest } = p
  return rest
}

export interface Collected { tokens: TokenEvent[]; done: DoneEvent }

/** Runs a request to completion; a final error event is thrown as its ServeError. */
export async function collect(llm: LlmDispatcher, req: LlmWireRequest, signal?: AbortSignal): Promise<Collected> {
  return drain(llm.stream(req, signal))
}

async function drain(events: AsyncIterableIterator<GenerateEvent>): Promise<Collected> {
  const tokens: TokenEvent[] = []
  for await (const ev of events) {
    if (ev.type === 'token') tokens.push(ev)
    else if (ev.type === 'done') return { tokens, done: ev }
    else throw new ServeError(ev.code, ev.message)
  }
  throw new ServeError('INTERNAL', 'Request failed during generation: the stream ended without a final event')
}

/**
 * Runs `n` sequences of one request concurrently (TGI's best_of): each is a request of its own
 * to the dispatcher, so each joins a running batch, draws its own random seed and counts against
 * maxConcurrentRequests. All are started before any is awaited: if one cannot start (QUEUE_FULL,
 * "Model is overloaded") the ones already started are cancelled and that error is thrown. If a
 * sequence fails, the others are cancelled and its error is thrown; aborting `signal` (client
 * gone) cancels every one. Results are in start order.
 */
export async function collectMany(llm: LlmDispatcher, req: LlmWireRequest, n: number, signal?: AbortSignal): Promise<Collected[]> {
  const all = new AbortController()
  const onAbort = () => all.abort()
  if (signal?.aborted) all.abort()
  else signal?.addEventListener('abort', onAbort, { once: true })
  try {
    if (all.signal.aborted) throw new ServeError('CANCELLED', 'request cancelled: the client disconnected')
    const streams: AsyncIterableIterator<GenerateEvent>[] = []
    for (let i = 0; i < n; i++) streams.push(llm.stream(req, all.signal))
    return await Promise.all(streams.map(drain))
  } catch (e) {
    all.abort()
    throw e
  } finally {
    signal?.removeEventListener('abort', onAbort)
  }
}

/**
 * Starts a stream and waits for its first event, so callers can still answer errors with an
 * HTTP status. Returns the first event and the iterator to continue from.
 */
export async function firstEvent(llm: LlmDispatcher, req: LlmWireRequest, signal?: AbortSignal): Promise<{ first: GenerateEvent; rest: AsyncIterableIterator<GenerateEvent> }> {
  const it = llm.stream(req, signal)
  const r = await it.next()
  if (r.done) throw new ServeError('INTERNAL', 'Request failed during generation: the stream ended without a final event')
  if (r.value.type === 'error') throw new ServeError(r.value.code, r.value.message)
  return { first: r.value, rest: it }
}

/** How one route family writes a generation as server-sent events. */
export interface SseRelay {
  /** Written when the stream opens (OpenAI's role chunk). */
  open?(sse: SseWriter): void
  /** A token; with `holdLast`, every token but the last, which `done` receives instead. */
  token(sse: SseWriter, t: TokenEvent): void
  done(sse: SseWriter, ev: DoneEvent, last: TokenEvent | null): void
  error(sse: SseWriter, ev: ErrorEvent): void
  /** Written after the final event (OpenAI's `[DONE]`). */
  close?(sse: SseWriter): void
  /**
   * For formats whose last token event carries the final text: the request's last token (the
   * engine marks it `last`) is held for `done`; every other token is written at once.
   */
  holdLast?: boolean
}

/**
 * Streams a request as SSE: waits for the first event (errors before it keep their HTTP status,
 * thrown as ServeError), then opens the stream; a client that disconnects cancels the request.
 */
export async function relaySse(llm: LlmDispatcher, wire: LlmWireRequest, req: FastifyRequest, reply: FastifyReply, r: SseRelay): Promise<void> {
  const ac = new AbortController()
  const { first, rest } = await firstEvent(llm, wire, ac.signal)
  const sse = openSse(req, reply, () => ac.abort())
  r.open?.(sse)
  let held: TokenEvent | null = null
  const step = (ev: GenerateEvent): boolean => {
    if (ev.type === 'token') {
      // Holding every token until the next event would delay the first one by a whole step
      // (or by every prefill queued before that step): only the marked last token waits.
      if (r.holdLast && ev.last) held = ev
      else r.token(sse, ev)
      return true
    }
    if (ev.type === 'done') r.done(sse, ev, held)
    else r.error(sse, ev)
    return false
  }
  if (step(first)) for await (const ev of rest) if (!step(ev)) break
  r.close?.(sse)
  sse.end()
}
