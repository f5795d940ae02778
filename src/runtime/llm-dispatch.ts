/**
 * Parent side of an LLM servable, TGI's router in small: validates and tokenizes each request in
 * the listener (the tokenizer and chat template are loaded once per servable version at load, by
 * prepareLlm), spreads valid requests over the replicas' engines (fewest active requests first),
 * refuses at once with 429 when every engine is at its concurrency limit, and exposes each request
 * as an async iterable of events that cancels on abort. Nothing invalid reaches a replica.
 */
import { factError, ServeError, toServeError } from '../errors.ts'
import type { ValidServable } from '../config/validate.ts'
import { fail } from '../config/validate.ts'
import type { ToolParserName } from '../llm/tool-calls.ts'
import type { GenerateEvent, GenerateRequest, ValidGenerate } from '../llm/types.ts'
import { validateGenerate, type PromptEncoder } from '../llm/validate.ts'
import type { LiveServable } from './live-servable.ts'
import type { LlmInfo } from './messages.ts'
import type { Replica } from './replica.ts'
import type { ServerMetrics } from './metrics.ts'

/** Prompt encoders of the servable versions loaded in this process (a reloaded version gets a new one). */
const encoders = new WeakMap<ValidServable, PromptEncoder>()

/**
 * Loads an LLM servable's tokenizer and chat template for the listener's validation; call it while
 * the servable loads (beside its replicas' start), so no request pays for it. A no-op for other
 * servables. Rejects with CONFIG_INVALID naming the declareLlm call, as the replica's load does.
 */
export async function prepareLlm(servable: ValidServable): Promise<void> {
  const llm = servable.llm
  if (!llm || encoders.has(servable)) return
  // Loaded on first use: a server without LLM servables never loads the tokenizer libraries.
  const { loadPromptEncoder } = await import('../llm/prompt-encoder.ts')
  try {
    encoders.set(servable, await loadPromptEncoder(llm.path, llm.tokenizerDir, undefined, llm.toolParser))
  } catch (e) {
    fail(servable.configFile, llm.site, `declareLlm({ file: '${llm.file}' }): ${toServeError(e, 'CONFIG_INVALID').message}`)
  }
}

/**
 * What a route's access line says of its LLM requests: filled in as they finish (a route with
 * several requests, best_of or a list of prompts, sums them). `request_id` also goes to the replica.
 */
export type LlmAccessNote = {
  request_id: string
  servable: string
  version: number
  input_tokens: number
  generated_tokens: number
  finish_reason?: string
}

export class LlmDispatcher {
  private encoderCache: PromptEncoder | undefined
  private readonly notes = new WeakMap<ValidGenerate, LlmAccessNote>()

  private readonly metrics: ServerMetrics | undefined

  /**
   * `encoder`: the servable's tokenizer and chat template; default the one prepareLlm loaded.
   * `metrics`: where request timings go; default the servable's (none for a bare test double).
   */
  constructor(readonly live: LiveServable, encoder?: PromptEncoder, metrics: ServerMetrics | undefined = live.metrics) {
    this.encoderCache = encoder
    this.metrics = metrics
  }

  get name(): string { return this.live.name }
  get version(): number { return this.live.version }
  get ready(): boolean { return this.live.ready }

  /** Limits and model facts, from the first ready replica. */
  get info(): LlmInfo {
    const r = this.live.replicas.find((x) => x.llm) ?? this.live.replicas[0]!
    return r.llm!
  }

  /** In-flight requests the servable takes at once: every replica's engine limit together (TGI's max_concurrent_requests). */
  get maxConcurrentRequests(): number {
    return this.info.maxConcurrentRequests * this.live.replicas.length
  }

  /** The device type the replicas run on (the device plan of `--device-type`). */
  get deviceType(): string {
    return this.live.replicas[0]?.device.deviceType ?? 'cpu'
  }

  /** How tool_choice "auto" reads tool calls from this model's output. */
  get toolParser(): ToolParserName {
    return this.encoder.toolParser ?? 'none'
  }

  private get encoder(): PromptEncoder {
    this.encoderCache ??= encoders.get(this.live.servable)
    if (!this.encoderCache) throw new ServeError('INTERNAL', `the tokenizer of LLM servable ${this.name} was not loaded (prepareLlm)`)
    return this.encoderCache
  }

  private pick(): Replica | null {
    let best: Replica | null = null
    for (const r of this.live.replicas) {
      if (r.state !== 'ready' || !r.llm || r.activeStreams >= r.llm.maxConcurrentRequests) continue
      if (!best || r.activeStreams < best.activeStreams) best = r
    }
    return best
  }

  private admit(): Replica {
    if (!this.live.ready) throw new ServeError('SERVABLE_NOT_READY', `servable ${this.name} has no ready replica`)
    const r = this.pick()
    if (!r) throw factError('QUEUE_FULL', `every engine of servable ${this.name} runs its most concurrent requests`, { reason: 'llm_overloaded', limit: this.info.maxConcurrentRequests })
    return r
  }

  /**
   * Validates and tokenizes a request against the model's limits (TGI's texts, VALIDATION).
   * As TGI's router, a request that cannot be served now is refused first, before the work of
   * tokenizing it: SERVABLE_NOT_READY (no ready replica) or QUEUE_FULL (facts `llm_overloaded`).
   */
  validate(req: GenerateRequest): ValidGenerate {
    this.admit()
    return validateGenerate(req, this.encoder, this.info)
  }

  /** A fresh access note of a request to this servable (tokens 0), for track(). */
  accessNote(requestId: string): LlmAccessNote {
    return { request_id: requestId, servable: this.name, version: this.version, input_tokens: 0, generated_tokens: 0 }
  }

  /** Counts `req`'s tokens into `note` when it finishes, and gives the replica its request id. */
  track(req: ValidGenerate, note: LlmAccessNote): void {
    this.notes.set(req, note)
  }

  /** Starts a request; throws QUEUE_FULL (`llm_overloaded`) or SERVABLE_NOT_READY at once. */
  start(req: ValidGenerate, onEvent: (ev: GenerateEvent) => void): () => void {
    const r = this.admit()
    const note = this.notes.get(req)
    let handler = this.metrics ? this.timed(this.metrics, onEvent) : onEvent
    if (note) {
      const inner = handler
      handler = (ev) => {
        if (ev.type === 'done') {
          note.input_tokens += ev.inputTokens
          note.generated_tokens += ev.generatedTokens
          note.finish_reason = ev.finishReason
        } else if (ev.type === 'error') note.finish_reason = 'error'
        inner(ev)
      }
    }
    const id = r.generate(req, handler, note?.request_id)
    return () => r.cancel(id)
  }

  /**
   * `onEvent`, observing the request's timings from its event stream as the listener sees it (TGI's
   * meanings): submit -> first token, the gap between token events, submit -> done or error.
   */
  private timed(m: ServerMetrics, onEvent: (ev: GenerateEvent) => void): (ev: GenerateEvent) => void {
    const sv = { servable: this.name, version: String(this.version) }
    const submitted = performance.now()
    let last = 0
    return (ev) => {
      const now = performance.now()
      if (ev.type === 'token') {
        if (last === 0) m.llmTimeToFirstToken.observe(sv, (now - submitted) / 1000)
        else m.llmTimePerOutputToken.observe(sv, (now - last) / 1000)
        last = now
      } else {
        m.llmRequestDuration.observe(sv, (now - submitted) / 1000)
        m.llmRequests.inc({ ...sv, outcome: ev.type === 'done' ? 'success' : ev.code.toLowerCase() })
        if (ev.type === 'done') {
          m.llmQueueDuration.observe(sv, ev.timings.queueMs / 1000)
          m.llmInputLength.observe(sv, ev.inputTokens)
          m.llmGeneratedTokens.observe(sv, ev.generatedTokens)
        }
      }
      onEvent(ev)
    }
  }

  /**
   * The request as an async iterable: token events, then one done or error event. Aborting
   * `signal` (client gone) cancels the request at the engine's next step. Throws like start().
   */
  stream(req: ValidGenerate, signal?: AbortSignal): AsyncIterableIterator<GenerateEvent> {
    const buffered: GenerateEvent[] = []
    let wakeup: (() => void) | null = null
    let ended = false
    const cancel = this.start(req, (ev) => {
      buffered.push(ev)
      if (ev.type !== 'token') ended = true
      wakeup?.()
    })
    const onAbort = () => cancel()
    if (signal?.aborted) cancel()
    else signal?.addEventListener('abort', onAbort, { once: true })
    const it: AsyncIterableIterator<GenerateEvent> = {
      [Symbol.asyncIterator]() { return it },
      async next() {
        while (buffered.length === 0) {
          if (ended) { signal?.removeEventListener('abort', onAbort); return { done: true, value: undefined } }
          await new Promise<void>((r) => { wakeup = r })
          wakeup = null
        }
        return { done: false, value: buffered.shift()! }
      },
      async return() {
        if (!ended) cancel()
        signal?.removeEventListener('abort', onAbort)
        return { done: true, value: undefined }
      },
    }
    return it
  }
}
