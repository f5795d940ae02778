/**
 * The client over REST (undici, one keep-alive Pool per server): MindSpore predict, TGI or
 * MindSpore-style generate streams, OpenAI chat, health and GET /servables.
 *
 * Generate goes to TGI's `POST /generate_stream`, which serves the server's default LLM; a call that
 * names a servable or version goes to the MindSpore-style `/model/{name}[/version/{n}]:generated_stream`
 * instead (TGI's routes pick no servable). Both streams end with the final text and reason.
 */
import { Pool, type Dispatcher } from 'undici'
import type { ServablesDescription } from '../runtime/describe.ts'
import { ClientError, codeOfHttp, restTransportError } from './errors.ts'
import { chatFields, snakeKeys } from './params.ts'
import { decodeInstances, encodeInstances, type DTypeHint } from './rest-codec.ts'
import { SseParser } from './sse.ts'
import { findMethod } from './describe.ts'
import type {
  CallOptions, ChatDelta, ChatMessage, ChatOptions, ChatReply, ClientOptions, GenerateEvent, GenerateOptions, GenerateParams,
  Health, Instance, InstanceResult, PredictOptions, Prompt, TokenEvent, TopToken, Usage,
} from './types.ts'

/** The server answers predict's x-request-timeout-ms itself; the client's own timer waits this much longer. */
const SERVER_TIMEOUT_GRACE_MS = 1000
const JSON_HEADERS = { 'content-type': 'application/json' }
const NO_HINT: DTypeHint = () => undefined

interface Sent {
  res: Dispatcher.ResponseData
  /** Stops the call's timer and signal listener; call once the body is consumed. */
  done: () => void
  /** Maps an error met while reading the body (abort, timeout, reset). */
  fail: (e: unknown) => ClientError
}

/** `/model/{name}[/version/{n}]:{method}`. */
export function msPath(servable: string, method: string, version: number | undefined): string {
  return `/model/${encodeURIComponent(servable)}${version ? `/version/${version}` : ''}:${encodeURIComponent(method)}`
}

export class RestTransport {
  readonly origin: string
  private readonly base: string
  private readonly pool: Pool
  private readonly headers: Record<string, string>
  private readonly timeoutMs: number | undefined
  private described: Promise<ServablesDescription | null> | undefined
  private readonly hints = new Map<string, DTypeHint>()
  private readonly refreshed = new Set<string>()

  constructor(url: string, o: ClientOptions) {
    let u: URL
    try { u = new URL(url) } catch { throw new ClientError(`url must be http://HOST:PORT or https://HOST:PORT (got "${url}")`, { code: 'INVALID_REQUEST', transport: 'rest' }) }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ClientError(`url must start with http:// or https:// (got "${url}")`, { code: 'INVALID_REQUEST', transport: 'rest' })
    this.origin = u.origin
    this.base = u.pathname.replace(/\/+$/, '')
    const tls = o.tls ?? {}
    const connect = u.protocol === 'https:' && (tls.ca || tls.cert || tls.key) ? { ca: tls.ca, cert: tls.cert, key: tls.key } as object : undefined
    // With a time limit, undici's own header/body timeouts back it up (1 s later than the call's
    // timer, as for the server's 504): postRaw calls, which have no timer, are bounded too.
    const idle = o.timeoutMs !== undefined ? { headersTimeout: o.timeoutMs + 1000, bodyTimeout: o.timeoutMs + 1000 } : {}
    this.pool = new Pool(this.origin, { pipelining: 1, keepAliveTimeout: 60_000, ...idle, ...(o.connections ? { connections: o.connections } : {}), ...(connect ? { connect } : {}) })
    this.headers = { ...(o.headers ?? {}), ...(o.apiKey !== undefined ? { authorization: `Bearer ${o.apiKey}` } : {}) }
    this.timeoutMs = o.timeoutMs
  }

  /**
   * Sends one request. The caller's signal and the call's time limit abort it; errors before an
   * answer are ClientErrors naming the origin. `timerMs` overrides the client-side limit.
   */
  private async send(method: 'GET' | 'POST', path: string, body: string | undefined, call: CallOptions, extra?: Record<string, string>, timerMs?: number): Promise<Sent> {
    const limit = timerMs ?? call.timeoutMs ?? this.timeoutMs
    let signal = call.signal
    const state = { signal: call.signal, timedOut: false }
    let timer: NodeJS.Timeout | undefined
    let onAbort: (() => void) | undefined
    if (limit !== undefined && limit > 0) {
      const ac = new AbortController()
      timer = setTimeout(() => { state.timedOut = true; ac.abort() }, limit)
      if (call.signal) {
        if (call.signal.aborted) ac.abort()
        else { onAbort = () => ac.abort(); call.signal.addEventListener('abort', onAbort, { once: true }) }
      }
      signal = ac.signal
    }
    const done = () => {
      if (timer) clearTimeout(timer)
      if (onAbort) call.signal!.removeEventListener('abort', onAbort)
    }
    const fail = (e: unknown) => restTransportError(e, this.origin, state)
    const headers = extra ? { ...this.headers, ...extra } : this.headers
    try {
      if (call.signal?.aborted) throw call.signal.reason
      const res = await this.pool.request({ path: this.base + path, method, headers, ...(body === undefined ? {} : { body }), ...(signal ? { signal } : {}) })
      return { res, done, fail }
    } catch (e) {
      done()
      throw fail(e)
    }
  }

  /**
   * Posts a prebuilt body and returns the status and text as they are (no parsing, no timer): the
   * bench's REST load (src/bench/rest-target.ts) and tests of odd bodies. Transport failures throw
   * the undici error.
   */
  async postRaw(path: string, body: string | Uint8Array, headers?: Record<string, string>): Promise<{ status: number; text: string }> {
    const res = await this.pool.request({ path: this.base + path, method: 'POST', headers: headers ? { ...this.headers, ...headers } : this.headers, body })
    return { status: res.statusCode, text: await res.body.text() }
  }

  /** Reads a whole body; a failure while reading is mapped like one before the answer. */
  private async text(s: Sent): Promise<string> {
    try { return await s.res.body.text() } catch (e) { throw s.fail(e) } finally { s.done() }
  }

  /** The ClientError of a non-2xx answer, with the message of any route family's error body. */
  private async errorOf(s: Sent): Promise<ClientError> {
    const text = await this.text(s)
    return new ClientError(errorMessage(text, s.res.statusCode), { code: codeOfHttp(s.res.statusCode), transport: 'rest', httpStatus: s.res.statusCode })
  }

  async predict(servable: string, method: string, instances: Instance | readonly Instance[], o: PredictOptions = {}): Promise<InstanceResult[]> {
    const list = Array.isArray(instances) ? instances as readonly Instance[] : [instances as Instance]
    const body = encodeInstances(list)
    // The output dtypes are looked up while the request runs (once per method; see rest-codec.ts).
    const hint = this.hintFor(servable, o.version ?? 0, method).catch(() => NO_HINT)
    const limit = o.timeoutMs ?? this.timeoutMs
    const extra = limit ? { ...JSON_HEADERS, 'x-request-timeout-ms': String(limit) } : JSON_HEADERS
    const s = await this.send('POST', msPath(servable, method, o.version), body, o, extra, limit ? limit + SERVER_TIMEOUT_GRACE_MS : undefined)
    if (s.res.statusCode !== 200) throw await this.errorOf(s)
    const text = await this.text(s)
    return decodeInstances(text, list.length, await hint)
  }

  /** The servables' description, fetched once (again only when a servable or method is not in it). */
  private description(): Promise<ServablesDescription | null> {
    this.described ??= this.fetchDescription().catch((e) => {
      // No answer (yet): ask again next time rather than decoding without dtypes for good.
      this.described = undefined
      throw e
    })
    return this.described
  }

  private async fetchDescription(): Promise<ServablesDescription | null> {
    const s = await this.send('GET', '/servables', undefined, {})
    const text = await this.text(s)
    if (s.res.statusCode !== 200) return null
    try {
      const d = JSON.parse(text) as ServablesDescription
      return Array.isArray(d?.servables) ? d : null
    } catch {
      // MindSpore Serving answers a GET with its POST-only error; an older ms-serve with 404.
      return null
    }
  }

  private async hintFor(servable: string, version: number, method: string): Promise<DTypeHint> {
    const key = `${servable}\0${version}\0${method}`
    const cached = this.hints.get(key)
    if (cached) return cached
    let d = await this.description()
    let found = findMethod(d, servable, version, method)
    if (!found && d && !this.refreshed.has(key)) {
      this.refreshed.add(key)
      this.described = undefined
      this.hints.clear()
      d = await this.description()
      found = findMethod(d, servable, version, method)
    }
    if (!found) return NO_HINT
    const dtypes = new Map(found.method.outputs.map((t) => [t.name, t.dtype]))
    const hint: DTypeHint = (name) => dtypes.get(name)
    // A version still loading may not know its model types yet: look again next time.
    if (found.ready) this.hints.set(key, hint)
    return hint
  }

  async servables(o: CallOptions = {}): Promise<ServablesDescription> {
    const s = await this.send('GET', '/servables', undefined, o)
    const unsupported = (why: string) => new ClientError(`GET ${this.origin}/servables ${why}: the server does not describe its servables (MindSpore Serving itself, or an older ms-serve)`, { code: 'UNSUPPORTED', transport: 'rest', httpStatus: s.res.statusCode })
    if (s.res.statusCode === 404 || s.res.statusCode === 405) {
      await this.text(s)
      throw unsupported(`answered ${s.res.statusCode}`)
    }
    if (s.res.statusCode !== 200) throw await this.errorOf(s)
    const text = await this.text(s)
    let d: ServablesDescription
    try { d = JSON.parse(text) as ServablesDescription } catch { throw unsupported('did not answer JSON') }
    if (!Array.isArray(d?.servables)) throw unsupported('answered no "servables" list')
    return d
  }

  async health(o: CallOptions = {}): Promise<Health> {
    let s: Sent
    try {
      s = await this.send('GET', '/v2/health/ready', undefined, o)
      // A server without the KServe routes (TGI): its own /health.
      if (s.res.statusCode === 404) {
        await this.text(s)
        s = await this.send('GET', '/health', undefined, o)
      }
    } catch (e) {
      if ((e as ClientError).code === 'UNREACHABLE') return { live: false, ready: false, error: (e as Error).message }
      throw e
    }
    await this.text(s)
    return { live: true, ready: s.res.statusCode === 200 }
  }

  async *generate(prompt: Prompt, params: GenerateParams | undefined, o: GenerateOptions = {}): AsyncGenerator<GenerateEvent> {
    if (typeof prompt !== 'string') {
      throw new ClientError('a token-id prompt ({ inputIds }) needs the gRPC transport: no REST generate route takes token ids', { code: 'UNSUPPORTED', transport: 'rest' })
    }
    if (o.version && o.servable === undefined) {
      throw new ClientError('generate with a version needs the servable too: REST addresses versions as /model/{servable}/version/{n}', { code: 'INVALID_REQUEST', transport: 'rest' })
    }
    const tgi = o.servable === undefined
    const wire = snakeKeys(params)
    const path = tgi ? '/generate_stream' : msPath(o.servable ?? '', 'generated_stream', o.version)
    const body = tgi
      ? JSON.stringify({ inputs: prompt, parameters: { ...wire, details: true } })
      : JSON.stringify({ instances: { ...wire, prompt } })
    const s = await this.send('POST', path, body, o, { ...JSON_HEADERS, accept: 'text/event-stream' })
    let finished = false
    try {
      if (s.res.statusCode !== 200) throw await this.errorOf(s)
      const parser = new SseParser()
      const decoder = new TextDecoder()
      const read = tgi ? readTgiEvent : readMsEvent
      try {
        for await (const chunk of s.res.body) {
          for (const payload of parser.push(decoder.decode(chunk as Buffer, { stream: true }))) {
            for (const ev of read(payload)) {
              yield ev
              if (ev.type === 'done') { finished = true; return }
              // Events of a chunk already read are not handed out once the caller has aborted.
              if (o.signal?.aborted) throw cancelled()
            }
          }
        }
      } catch (e) {
        throw s.fail(e)
      }
      for (const payload of parser.end()) for (const ev of read(payload)) { yield ev; if (ev.type === 'done') { finished = true; return } }
      throw new ClientError('the stream ended without its final event', { code: 'BAD_REPLY', transport: 'rest', httpStatus: 200 })
    } finally {
      // Breaking out of the loop (or an error) closes the connection: the server cancels the request.
      if (!finished) s.res.body.destroy()
      s.done()
    }
  }

  async chat(messages: readonly ChatMessage[], params: object | undefined, o: ChatOptions): Promise<ChatReply> {
    const s = await this.send('POST', '/v1/chat/completions', JSON.stringify(chatBody(messages, params, o, false)), o, JSON_HEADERS)
    if (s.res.statusCode !== 200) throw await this.errorOf(s)
    const j = parseJsonReply(await this.text(s)) as { choices?: Array<{ message?: Record<string, unknown>; finish_reason?: string }>; usage?: RawUsage }
    const c = j.choices?.[0]
    if (!c?.message) throw new ClientError('chat answer without choices[0].message', { code: 'BAD_REPLY', transport: 'rest', httpStatus: 200 })
    const m = c.message
    return {
      role: 'assistant',
      content: (m['content'] as string | null | undefined) ?? null,
      ...(Array.isArray(m['tool_calls']) && m['tool_calls'].length ? { toolCalls: m['tool_calls'] as ChatReply['toolCalls'] } : {}),
      finishReason: c.finish_reason ?? '',
      ...(j.usage ? { usage: usageOf(j.usage) } : {}),
    }
  }

  async *chatStream(messages: readonly ChatMessage[], params: object | undefined, o: ChatOptions): AsyncGenerator<ChatDelta> {
    const s = await this.send('POST', '/v1/chat/completions', JSON.stringify(chatBody(messages, params, o, true)), o, { ...JSON_HEADERS, accept: 'text/event-stream' })
    let finished = false
    try {
      if (s.res.statusCode !== 200) throw await this.errorOf(s)
      const parser = new SseParser()
      const decoder = new TextDecoder()
      const handle = function* (payloads: string[]): Generator<ChatDelta | null> {
        for (const p of payloads) {
          if (p === '[DONE]') { yield null; return }
          const d = readChatChunk(p)
          if (d) yield d
        }
      }
      try {
        for await (const chunk of s.res.body) {
          for (const d of handle(parser.push(decoder.decode(chunk as Buffer, { stream: true })))) {
            if (d === null) { finished = true; return }
            yield d
            if (o.signal?.aborted) throw cancelled()
          }
        }
      } catch (e) {
        throw s.fail(e)
      }
      for (const d of handle(parser.end())) { if (d === null) { finished = true; return } yield d }
      throw new ClientError('the chat stream ended without data: [DONE]', { code: 'BAD_REPLY', transport: 'rest', httpStatus: 200 })
    } finally {
      if (!finished) s.res.body.destroy()
      s.done()
    }
  }

  async close(): Promise<void> {
    await this.pool.close()
  }
}

const cancelled = () => new ClientError('request cancelled by the caller', { code: 'CANCELLED', transport: 'rest' })

interface RawUsage { prompt_tokens?: number; completion_tokens?: number; total_tokens?: number }

const usageOf = (u: RawUsage): Usage => ({ promptTokens: u.prompt_tokens ?? 0, completionTokens: u.completion_tokens ?? 0, totalTokens: u.total_tokens ?? 0 })

function chatBody(messages: readonly ChatMessage[], params: object | undefined, o: ChatOptions, stream: boolean): Record<string, unknown> {
  return {
    ...(o.servable !== undefined ? { model: o.servable } : {}),
    messages,
    ...chatFields(params),
    ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
  }
}

function parseJsonReply(text: string): Record<string, unknown> {
  try { return JSON.parse(text) as Record<string, unknown> } catch { throw new ClientError(`not JSON: ${text.slice(0, 120)}`, { code: 'BAD_REPLY', transport: 'rest' }) }
}

/** The message of a MindSpore (`error_msg`), TGI (`error`) or OpenAI (`error.message`) error body. */
function errorMessage(text: string, status: number): string {
  try {
    const j = JSON.parse(text) as Record<string, unknown>
    if (typeof j['error_msg'] === 'string') return j['error_msg']
    const err = j['error']
    if (typeof err === 'string') return err
    if (err && typeof (err as { message?: unknown }).message === 'string') return (err as { message: string }).message
  } catch { /* not JSON: the text itself */ }
  return text.trim() ? text.slice(0, 300) : `HTTP ${status}`
}

/** An error event inside a 200 stream (TGI `{error, error_type}`, MindSpore-style `{error_msg}`, OpenAI `{error: {message}}`). */
function streamError(ev: Record<string, unknown>): ClientError | null {
  const e = ev['error'] ?? ev['error_msg']
  if (e === undefined || e === null) return null
  const message = typeof e === 'string' ? e : typeof (e as { message?: unknown }).message === 'string' ? (e as { message: string }).message : JSON.stringify(e)
  return new ClientError(message, { code: ev['error_type'] === 'overloaded' ? 'QUEUE_FULL' : ev['error_type'] === 'validation' ? 'VALIDATION' : 'INFERENCE_FAILED', transport: 'rest', httpStatus: 200 })
}

function parseEvent(payload: string): Record<string, unknown> {
  try { return JSON.parse(payload) as Record<string, unknown> } catch { throw new ClientError(`stream event is not JSON: ${payload.slice(0, 120)}`, { code: 'BAD_REPLY', transport: 'rest', httpStatus: 200 }) }
}

function topTokens(list: unknown): TopToken[] | undefined {
  if (!Array.isArray(list) || list.length === 0) return undefined
  return list.map((t: Record<string, unknown>) => ({ id: Number(t['id']), text: String(t['text'] ?? ''), logprob: Number(t['logprob']), special: Boolean(t['special']) }))
}

/** TGI: one token per event; the last one also carries generated_text and details. */
function readTgiEvent(payload: string): GenerateEvent[] {
  const ev = parseEvent(payload)
  const err = streamError(ev)
  if (err) throw err
  const out: GenerateEvent[] = []
  const t = ev['token'] as { id?: number; text?: string; logprob?: number } | undefined
  // The server's placeholder when the final event has no token of its own.
  if (t && t.id !== -1) {
    const tok: TokenEvent = { type: 'token', index: Number(ev['index']) - 1, id: Number(t.id), text: t.text ?? '', logprob: Number(t.logprob) }
    const top = topTokens(ev['top_tokens'])
    if (top) tok.topTokens = top
    out.push(tok)
  }
  if (typeof ev['generated_text'] === 'string') {
    const d = (ev['details'] ?? {}) as { finish_reason?: string; generated_tokens?: number }
    out.push({ type: 'done', generatedText: ev['generated_text'], finishReason: d.finish_reason ?? '', generatedTokens: d.generated_tokens ?? Number(ev['index']) })
  }
  return out
}

/** MindSpore-style `:generated_stream`: `{index, token, token_id, logprob}`; the last adds text, finish_reason, generated_tokens. */
function readMsEvent(payload: string): GenerateEvent[] {
  const ev = parseEvent(payload)
  const err = streamError(ev)
  if (err) throw err
  const out: GenerateEvent[] = []
  if (ev['token_id'] !== undefined && ev['token_id'] !== -1) {
    out.push({ type: 'token', index: Number(ev['index']) - 1, id: Number(ev['token_id']), text: String(ev['token'] ?? ''), logprob: ev['logprob'] === undefined ? NaN : Number(ev['logprob']) })
  }
  if (typeof ev['text'] === 'string' && typeof ev['finish_reason'] === 'string') {
    out.push({ type: 'done', generatedText: ev['text'], finishReason: ev['finish_reason'], generatedTokens: Number(ev['generated_tokens']) })
  }
  return out
}

/** One OpenAI chat chunk -> a delta (null for chunks that carry nothing). */
function readChatChunk(payload: string): ChatDelta | null {
  const ev = parseEvent(payload)
  const err = streamError(ev)
  if (err) throw err
  const d: ChatDelta = {}
  const c = (ev['choices'] as Array<{ delta?: { content?: string | null; tool_calls?: unknown[] }; finish_reason?: string | null }> | undefined)?.[0]
  if (c?.delta?.content) d.content = c.delta.content
  if (c?.delta?.tool_calls?.length) d.toolCalls = c.delta.tool_calls
  if (c?.finish_reason) d.finishReason = c.finish_reason
  if (ev['usage']) d.usage = usageOf(ev['usage'] as RawUsage)
  return Object.keys(d).length ? d : null
}
