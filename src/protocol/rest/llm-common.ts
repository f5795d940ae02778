/**
 * Shared by the LLM route families (TGI, OpenAI, MindSpore-style, gRPC Generate): body parsing,
 * parameter mapping, collecting a whole generation and relaying its events as they come. Routes
 * build a GenerateRequest and have the dispatcher validate it (llm.validate) before anything here
 * runs, so these helpers take only a ValidGenerate.
 */
import { ServeError } from '../../errors.ts'
import type { FastifyReply } from 'fastify'
import type { DoneEvent, ErrorEvent, GenerateEvent, GenerateParameters, TokenEvent, ValidGenerate } from '../../llm/types.ts'
import { clientGone, openSse, type SseWriter } from './sse.ts'
import type { LlmAccessNote, LlmDispatcher } from '../../runtime/llm-dispatch.ts'
import { checkGrammar, jsonSchemaSpec } from '../../llm/grammar.ts'
import type { GrammarSpec } from '../../llm/grammar.ts'

/** SERVABLE_NOT_FOUND for routes that need an LLM when none is loaded. */
export function noLlm(): ServeError {
  return new ServeError('SERVABLE_NOT_FOUND', 'no LLM servable is loaded; add one with: npx ms-serve init llm')
}

/** Parses a JSON request body; errors are 422 like TGI's deserialization failures. */
export function parseJson(raw: unknown): Record<string, unknown> {
  // MindSpore-style routes keep their body as bytes (see rest/server.ts).
  const body = Buffer.isBuffer(raw) ? raw.toString('utf8') : raw
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

/**
 * TGI's snake_case parameter names, the RouteParameters field each maps to and its JSON type,
 * in the order they are checked (the first bad one is the one reported). Shared with the gRPC
 * Generate request, whose fields carry the same names.
 */
export const PARAMETER_FIELDS: ReadonlyArray<readonly [wire: string, key: keyof RouteParameters, kind: Kind]> = [
  ['max_new_tokens', 'maxNewTokens', 'integer'], ['temperature', 'temperature', 'number'], ['top_k', 'topK', 'integer'],
  ['top_p', 'topP', 'number'], ['typical_p', 'typicalP', 'number'], ['top_n_tokens', 'topNTokens', 'integer'],
  ['repetition_penalty', 'repetitionPenalty', 'number'], ['frequency_penalty', 'frequencyPenalty', 'number'],
  ['do_sample', 'doSample', 'boolean'], ['seed', 'seed', 'integer'], ['stop', 'stop', 'strings'], ['truncate', 'truncate', 'integer'],
  ['ignore_eos', 'ignoreEos', 'boolean'], ['details', 'details', 'boolean'], ['return_full_text', 'returnFullText', 'boolean'],
  ['decoder_input_details', 'decoderInputDetails', 'boolean'], ['best_of', 'bestOf', 'integer'],
]

export function tgiParameters(p: Record<string, unknown>, path = 'parameters.'): RouteParameters {
  // Still unsupported (422 naming the field): watermark, grammar, adapter_id, and
  // decoder_input_details (rejected by the TGI routes, tgi.ts). `best_of` is only parsed here:
  // the TGI routes run it (tgi.ts), the MindSpore-style route refuses it.
  for (const k of ['watermark', 'grammar', 'adapter_id'] as const) {
    if (p[k] !== undefined && p[k] !== null && p[k] !== false && p[k] !== 0) throw new ServeError('VALIDATION', `\`${k}\` is not supported by ms-serve`)
  }
  const out: Record<string, unknown> = {}
  for (const [wire, key, kind] of PARAMETER_FIELDS) {
    const v = typed(p, wire, kind, path)
    if (v !== undefined) out[key] = v
  }
  return out as RouteParameters
}

/**
 * TGI's `grammar` parameter: `{"type":"json","value":<JSON schema>}` (also `json_schema`, as TGI's
 * alias) -> the GrammarSpec, checked by xgrammar here in the listener (422 if it cannot compile).
 * `regex` is refused: the xgrammar build ms-serve uses has no regex front end.
 */
export async function tgiGrammar(g: unknown): Promise<GrammarSpec | undefined> {
  if (g === undefined || g === null) return undefined
  if (typeof g !== 'object' || Array.isArray(g)) throw new ServeError('VALIDATION', 'Failed to deserialize the JSON body into the target type: parameters.grammar: expected an object')
  const { type, value } = g as { type?: unknown; value?: unknown }
  if (type === 'regex') throw new ServeError('VALIDATION', '`grammar` of type "regex" is not supported by ms-serve (only "json")')
  if (type !== 'json' && type !== 'json_schema') throw new ServeError('VALIDATION', 'Failed to deserialize the JSON body into the target type: parameters.grammar.type: expected "json" or "regex"')
  const spec = jsonSchemaSpec(value, 'grammar.value')
  await checkGrammar(spec)
  return spec
}

/** Only the fields the engine reads (drops route-level flags such as `details`). */
export function engineParameters(p: RouteParameters): GenerateParameters {
  const { details: _d, returnFullText: _r, decoderInputDetails: _i, bestOf: _b, ...rest } = p
  return rest
}

export interface Collected { tokens: TokenEvent[]; done: DoneEvent }

/** Runs a request to completion; a final error event is thrown as its ServeError. */
export async function collect(llm: LlmDispatcher, req: ValidGenerate, signal?: AbortSignal): Promise<Collected> {
  return drain(llm.stream(req, signal))
}

async function drain(events: AsyncIterableIterator<GenerateEvent>): Promise<Collected> {
  const tokens: TokenEvent[] = []
  for await (const ev of events) {
    if (ev.type === 'token') tokens.push(ev)
    else if (ev.type === 'done') return { tokens, done: ev }
    else throw new ServeError(ev.code, ev.message, { details: ev.details })
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
export async function collectMany(llm: LlmDispatcher, req: ValidGenerate, n: number, signal?: AbortSignal): Promise<Collected[]> {
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

/** How one route family writes a generation's events to its writer `W` (an SSE response, a gRPC call). */
export interface EventRelay<W> {
  /** A token; with `holdLast`, every token but the last, which `done` receives instead. */
  token(w: W, t: TokenEvent): void
  done(w: W, ev: DoneEvent, last: TokenEvent | null): void
  error(w: W, ev: ErrorEvent): void
  /**
   * For formats whose last token event carries the final text: the request's last token (the
   * engine marks it `last`) is held for `done`; every other token is written at once.
   */
  holdLast?: boolean
}

/** How one route family writes a generation as server-sent events. */
export interface SseRelay extends EventRelay<SseWriter> {
  /** Written when the stream opens (OpenAI's role chunk). */
  open?(sse: SseWriter): void
  /** Written after the final event (OpenAI's `[DONE]`). */
  close?(sse: SseWriter): void
}

/** Hands `events` to `r` until the done or error event. Returns false if the events ended without one. */
export async function relayEvents<W>(w: W, events: AsyncIterable<GenerateEvent>, r: EventRelay<W>): Promise<boolean> {
  let held: TokenEvent | null = null
  const step = (ev: GenerateEvent): boolean => {
    if (ev.type === 'token') {
      // Holding every token until the next event would delay the first one by a whole step
      // (or by every prefill queued before that step): only the marked last token waits.
      if (r.holdLast && ev.last) held = ev
      else r.token(w, ev)
      return true
    }
    if (ev.type === 'done') r.done(w, ev, held)
    else r.error(w, ev)
    return false
  }
  for await (const ev of events) if (!step(ev)) return true
  return false
}

/**
 * Streams a validated request as SSE. The request is admitted first (QUEUE_FULL or
 * SERVABLE_NOT_READY are thrown, keeping their HTTP status); then the stream opens at once, before
 * the engine's first event, and errors from then on arrive as the relay's error event in the 200
 * stream (TGI). A client that disconnects cancels the request.
 */
export async function relaySse(llm: LlmDispatcher, req: ValidGenerate, reply: FastifyReply, r: SseRelay): Promise<void> {
  const ac = clientGone(reply)
  const events = llm.stream(req, ac.signal)
  const sse = openSse(reply)
  r.open?.(sse)
  if (!(await relayEvents(sse, events, r))) {
    r.error(sse, { type: 'error', requestId: '', code: 'INTERNAL', message: 'Request failed during generation: the stream ended without a final event' })
  }
  r.close?.(sse)
  sse.end()
}

/**
 * `valid`, counted into the request's access line (servable, version, tokens; summed over a
 * route's several requests) and carrying the request id to the replica.
 */
export function tracked(reply: FastifyReply, llm: LlmDispatcher, valid: ValidGenerate): ValidGenerate {
  const req = reply.request
  let note = req.access as LlmAccessNote | null
  if (note?.input_tokens === undefined) {
    note = { ...req.access, ...llm.accessNote(String(req.id)) }
    req.access = note
  }
  llm.track(valid, note)
  return valid
}
