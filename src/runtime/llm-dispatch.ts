/**
 * Parent side of an LLM servable: spreads generate requests over the replicas' engines (fewest
 * active requests first), refuses at once with 429 when every engine is at its concurrency limit,
 * and exposes each request as an async iterable of events that cancels on abort.
 */
import { ServeError } from '../errors.ts'
import type { GenerateEvent } from '../llm/types.ts'
import type { LiveServable } from './live-servable.ts'
import type { LlmInfo, LlmWireRequest } from './messages.ts'
import type { Replica } from './replica.ts'

export class LlmDispatcher {
  constructor(readonly live: LiveServable) {}

  get name(): string { return this.live.name }
  get version(): number { return this.live.version }
  get ready(): boolean { return this.live.ready }

  /** Limits and model facts, from the first ready replica. */
  get info(): LlmInfo {
    const r = this.live.replicas.find((x) => x.llm) ?? this.live.replicas[0]!
    return r.llm!
  }

  private pick(): Replica | null {
    let best: Replica | null = null
    for (const r of this.live.replicas) {
      if (r.state !== 'ready' || !r.llm || r.activeStreams >= r.llm.maxConcurrentRequests) continue
      if (!best || r.activeStreams < best.activeStreams) best = r
    }
    return best
  }

  /** Starts a request; throws QUEUE_FULL ("Model is overloaded") or SERVABLE_NOT_READY at once. */
  start(req: LlmWireRequest, onEvent: (ev: GenerateEvent) => void): () => void {
    if (!this.live.ready) throw new ServeError('SERVABLE_NOT_READY', `servable ${this.name} has no ready replica`)
    const r = this.pick()
    if (!r) throw new ServeError('QUEUE_FULL', 'Model is overloaded')
    const id = r.generate(req, onEvent)
    return () => r.cancel(id)
  }

  /**
   * The request as an async iterable: token events, then one done or error event. Aborting
   * `signal` (client gone) cancels the request at the engine's next step.
   */
  stream(req: LlmWireRequest, signal?: AbortSignal): AsyncIterableIterator<GenerateEvent> {
    const buffered: GenerateEvent[] = []
    let wakeup: (() => void) | null = null
    let ended = false
    const cancel = this.start(req, (ev) => {
      buffered.push(ev)
      if (ev.type !== 'token') ended = true
      wakeup?.()
    })
    const onAbort = () => cancel()
    signal?.addEventListener('abort', onAbort, { once: true })
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

  async stats(): Promise<object> {
    const replicas = await Promise.all(this.live.replicas.map(async (r) => ({ device: `${r.device.deviceType}:${r.device.deviceId}`, pid: r.pid, state: r.state, active: r.activeStreams, engine: await r.llmStats() })))
    return { name: this.name, version: this.version, ready: this.ready, model: this.live.replicas[0]?.llm ?? null, replicas }
  }
}
