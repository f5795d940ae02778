/**
 * The servables being served, by name and version, and the one predict entry point both
 * protocols call. A predict is validated here, in the listener (valid-predict.ts), and answers one
 * PredictOutcome; whole-request errors carry MindSpore's texts.
 */
import { factError, type ServeError, toServeError } from '../errors.ts'
import type { Value } from '../tensor.ts'
import type { LiveServable } from './live-servable.ts'
import { LlmDispatcher } from './llm-dispatch.ts'
import { requestTimeoutMs } from './policy.ts'
import { collapseOutcomes, type PredictOutcome } from './predict-outcome.ts'
import { validatePredict, withRefused } from './valid-predict.ts'
import { ServerMetrics, type Protocol } from './metrics.ts'

export interface PredictCall {
  name: string
  method: string
  version: number
  instances: Record<string, Value>[]
  /** The listener it came through (the `protocol` label of msserve_requests_total). */
  protocol?: Protocol
  /** The client's own deadline (REST x-request-timeout-ms, gRPC deadline), capped by the servable's. */
  timeoutMs?: number
  /** Registers what to run when the client goes away: queued instances are dropped. */
  onCancel?: (cancel: () => void) => void
}

export class ServableRegistry {
  private byName = new Map<string, Map<number, LiveServable>>()
  private llmCache = new WeakMap<LiveServable, LlmDispatcher>()
  /** Servables that failed to load (name -> why): reported unavailable until a reload serves them. */
  readonly failed = new Map<string, string>()
  /** The LLM servable that routes without a model name (TGI /generate, OpenAI without `model`) use. */
  defaultLlm: string | undefined

  /** `metrics`: the server's instruments (metrics.ts); predict counts and times each request there. */
  constructor(readonly metrics: ServerMetrics = new ServerMetrics()) {}

  markFailed(name: string, why: string): void {
    this.failed.set(name, why)
  }

  /** Called when a version starts serving (start-up, reload): e.g. the body parser's limits follow it. */
  onServing: (s: LiveServable) => void = () => {}

  add(s: LiveServable): void {
    this.failed.delete(s.name)
    let m = this.byName.get(s.name)
    if (!m) this.byName.set(s.name, (m = new Map()))
    m.set(s.version, s)
    this.onServing(s)
  }

  /** Replaces (or adds) a version atomically; returns the previous one for draining. */
  swap(s: LiveServable): LiveServable | undefined {
    const prev = this.byName.get(s.name)?.get(s.version)
    this.add(s)
    return prev
  }

  remove(name: string, version: number): LiveServable | undefined {
    const m = this.byName.get(name)
    const s = m?.get(version)
    m?.delete(version)
    if (m && m.size === 0) this.byName.delete(name)
    return s
  }

  /** version 0 = the newest version that has a ready replica. */
  get(name: string, version: number): LiveServable | undefined {
    const m = this.byName.get(name)
    if (!m) return undefined
    if (version !== 0) return m.get(version)
    let best: LiveServable | undefined
    for (const s of m.values()) if (s.ready && (!best || s.version > best.version)) best = s
    return best ?? [...m.values()].sort((a, b) => b.version - a.version)[0]
  }

  /**
   * The LLM servable `name` at `version` (0 = the newest, as get()); without a name, `defaultLlm`
   * or the first LLM servable by name. Undefined when that version is not loaded.
   */
  llm(name?: string, version = 0): LlmDispatcher | undefined {
    // The name first, then the version: all() lists the oldest version of a name first.
    const pick = name || this.defaultLlm || this.all().find((x) => x.servable.llm)?.name
    const s = pick ? this.get(pick, version) : undefined
    if (!s || !s.servable.llm) return undefined
    let d = this.llmCache.get(s)
    if (!d) this.llmCache.set(s, (d = new LlmDispatcher(s)))
    return d
  }

  /** Every LLM servable (newest version of each name). */
  llms(): LlmDispatcher[] {
    const names = [...new Set(this.all().filter((s) => s.servable.llm).map((s) => s.name))]
    return names.map((n) => this.llm(n)!).filter(Boolean)
  }

  all(): LiveServable[] {
    return [...this.byName.values()].flatMap((m) => [...m.values()]).sort((a, b) => a.name.localeCompare(b.name) || a.version - b.version)
  }

  /** A servable (version) that is missing or not serving (MindSpore words it "servable is not available"). */
  notAvailable(name: string, method: string, version: number): ServeError {
    // One text either way; the code tells "no such servable" (404) from "replicas restarting" (503).
    // A servable that failed to load is known, just not serving: 503 like one whose replicas restart.
    const known = this.get(name, version) !== undefined || this.failed.has(name)
    const which = version !== 0 ? `servable ${name} version ${version}` : `servable ${name}`
    return factError(known ? 'SERVABLE_NOT_READY' : 'SERVABLE_NOT_FOUND', `${which} is not available${known ? ' (not serving now)' : ''}`, { reason: 'servable_unavailable', servable: name, method, version })
  }

  /**
   * Runs a request. Never rejects: a whole-request error (MindSpore's collapse of identical
   * per-instance errors included) is `{ error }`. A request whose instances are all refused by the
   * checks never reaches a replica.
   */
  async predict(call: PredictCall): Promise<PredictOutcome> {
    const t0 = performance.now()
    const s = this.get(call.name, call.version)
    const outcome = await this.run(call, s)
    const result = 'error' in outcome ? outcome.error.code.toLowerCase() : outcome.instances.some((o) => 'error' in o) ? 'partial' : 'success'
    const protocol = call.protocol ?? 'rest'
    const seconds = (performance.now() - t0) / 1000
    // Labels only from what the server knows: an unknown servable or method is not a new series.
    if (s !== undefined && s.method(call.method) !== undefined) s.recordRequest(call.method, protocol, result, seconds)
    else {
      const labels = { servable: s ? s.name : '', version: s ? String(s.version) : '', method: '', protocol }
      this.metrics.requests.inc({ ...labels, outcome: result })
      this.metrics.requestDuration.observe(labels, seconds)
    }
    return outcome
  }

  private async run(call: PredictCall, s: LiveServable | undefined): Promise<PredictOutcome> {
    try {
      if (!s || !s.ready) return { error: this.notAvailable(call.name, call.method, call.version) }
      const valid = validatePredict(s.signature, call.method, call.instances)
      // Every instance refused by the checks: answered here, without a batch slot or a replica hop.
      if (valid.instances.length === 0) return collapseOutcomes(withRefused(valid, []))
      const timeoutMs = requestTimeoutMs(s.policy, call.timeoutMs)
      const ran = await s.predict(valid.method, valid.instances, call.onCancel ? { timeoutMs, onCancel: call.onCancel } : { timeoutMs })
      return collapseOutcomes(withRefused(valid, ran))
    } catch (e) {
      return { error: toServeError(e) }
    }
  }

}
