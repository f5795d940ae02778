/**
 * Replica side of an LLM servable: owns the LlmEngine (its step loop runs on this process's
 * thread, off the listeners' event loop) and turns IPC generate/cancel messages into engine
 * calls and engine events into IPC messages. Requests arrive validated and tokenized by the
 * listener (LlmWireRequest = ValidGenerate); they go to the engine as they are.
 */
import { LlmEngine } from '../llm/engine.ts'
import { toServeError } from '../errors.ts'
import { fail, type ValidLlm } from '../config/validate.ts'
import type { DevicePlan } from './devices.ts'
import type { LlmInfo, LlmWireRequest, ReplicaMessage } from './messages.ts'
import type { GenerateEvent } from '../llm/types.ts'
import { replicaLogger } from '../log.ts'
import type { StageOpener } from './stage-worker.ts'

/** Upper bounds (ms) of the engine step-duration buckets stats() reports (the listener's step histograms). */
export const STEP_BUCKETS_MS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]

/**
 * Step durations of one kind (prefill or decode), from the engine's cumulative counters: each time
 * the host looks (after a step's events, and on stats()), the steps run since then are observed at
 * their mean duration (one step per look in practice: a step's events are flushed before the next).
 */
class StepBuckets {
  /** Non-cumulative counts per bucket; the last one is +Inf. */
  private readonly counts = new Array<number>(STEP_BUCKETS_MS.length + 1).fill(0)
  private steps = 0
  private ms = 0

  observe(steps: number, ms: number): void {
    const n = steps - this.steps
    if (n <= 0) return
    const each = (ms - this.ms) / n
    let i = STEP_BUCKETS_MS.findIndex((le) => each <= le)
    if (i < 0) i = STEP_BUCKETS_MS.length
    this.counts[i]! += n
    this.steps = steps
    this.ms = ms
  }

  /** Flat stats() keys: `<prefix>_le_<ms>` cumulative counts, `<prefix>_le_inf`. */
  report(prefix: string): Record<string, number> {
    const out: Record<string, number> = {}
    let acc = 0
    STEP_BUCKETS_MS.forEach((le, i) => { acc += this.counts[i]!; out[`${prefix}_le_${le}`] = acc })
    out[`${prefix}_le_inf`] = acc + this.counts[STEP_BUCKETS_MS.length]!
    return out
  }
}

export class LlmHost {
  private readonly prefillSteps = new StepBuckets()
  private readonly decodeSteps = new StepBuckets()
  private readonly ids = new Map<number, string>()
  /** Events produced in this turn (a step emits one per running request); sent as one message. */
  private pendingIds: number[] = []
  private pendingEvents: GenerateEvent[] = []

  private readonly log = replicaLogger()

  private constructor(readonly engine: LlmEngine, readonly llm: ValidLlm, private readonly send: (m: ReplicaMessage) => void) {}

  /** `stageOpener(k)`: where decoder stage k runs when not in a local worker thread (an agent's, remote-stage.ts). */
  static async start(llm: ValidLlm, device: DevicePlan, send: (m: ReplicaMessage) => void, stageOpener: (k: number) => StageOpener | undefined = () => undefined): Promise<LlmHost> {
    // maxBestOf is the route's limit (TGI's router holds it too); the engine never sees best_of.
    const { intraOpThreads, maxBestOf: _maxBestOf, ...options } = llm.options
    let engine: LlmEngine
    try {
      engine = await LlmEngine.load(llm.path, {
        ...options,
        intraOpNumThreads: intraOpThreads ?? device.intraOpThreads,
        // Unlike model replicas, LLMs spin by default on CPU too: a decode step is ~100 short
        // parallel sections, and waking the second intra-op thread for each cost ~40% of a step
        // at batch 1 on the bench decoder (README "Replicas and devices"; BENCHMARKS.md §8c).
        allowSpinning: options.allowSpinning ?? true,
        executionProviders: device.executionProviders,
        // Decoder stages (declareLlm stages): stage k on the pipeline's k-th device (devices.ts pipelinePlans).
        // MS_SERVE_STAGES_INLINE=1: every stage on this thread, in turn (what a pipeline without overlap gives).
        ...(process.env.MS_SERVE_STAGES_INLINE === '1' ? { stageThreads: 'inline' as const } : {}),
        ...(device.stageDevices ? { stageDevices: device.stageDevices.map((d, k) => ({ intraOpNumThreads: intraOpThreads ?? d.intraOpThreads, executionProviders: d.executionProviders, open: stageOpener(k) })) } : {}),
        ...(llm.tokenizerDir ? { tokenizerDir: llm.tokenizerDir } : {}),
        ...(llm.stageFiles ? { stageFiles: llm.stageFiles.map((f) => f.path) } : {}),
      })
    } catch (e) {
      // Checks that need the loaded model or tokenizer happen here; name the declareLlm call they concern.
      const err = toServeError(e, 'CONFIG_INVALID')
      if (err.code !== 'CONFIG_INVALID') throw err
      fail(llm.path, llm.site, `declareLlm({ ${llm.stageFiles ? `stages: [${llm.stageFiles.map((f) => `'${f.file}'`).join(', ')}]` : `file: '${llm.file}'`} }): ${err.message}`)
    }
    return new LlmHost(engine, llm, send)
  }

  info(): LlmInfo {
    const l = this.engine.limits
    const s = this.engine.spec
    return {
      modelId: this.llm.modelId,
      maxInputTokens: l.maxInputTokens,
      maxTotalTokens: l.maxTotalTokens,
      maxStopSequences: l.maxStopSequences,
      maxTopNTokens: l.maxTopNTokens,
      maxBestOf: this.llm.options.maxBestOf ?? 2,
      maxConcurrentRequests: l.maxConcurrentRequests,
      maxBatchSize: l.maxBatchSize,
      numLayers: s.numLayers,
      numKvHeads: s.numKvHeads,
      headDim: s.headDim,
      kvDtype: s.kvDtype,
      vocabSize: s.vocabSize,
      presentMode: s.presentMode,
    }
  }

  /**
   * Starts one request; a refusal (engine closed or full) comes back as an immediate error event.
   * With the log level at debug, its end is logged here with `requestId` (the client's x-request-id
   * or the listener's), so engine lines join the listener's access line.
   */
  generate(id: number, req: LlmWireRequest, requestId?: string): void {
    const log = this.log.isLevelEnabled('debug') ? this.log : null
    try {
      const engineId = this.engine.submit(req, (event) => {
        this.queueEvent(id, event)
        if (event.type === 'token') return
        this.ids.delete(id)
        if (!log) return
        if (event.type === 'done') {
          log.debug({ event: 'llm_request', request_id: requestId, servable: this.llm.modelId, input_tokens: event.inputTokens, generated_tokens: event.generatedTokens, finish_reason: event.finishReason, queue_ms: event.timings.queueMs }, 'llm request done')
        } else log.debug({ event: 'llm_request', request_id: requestId, servable: this.llm.modelId, error: event.code, message: event.message }, 'llm request failed')
      }, `r${id}`)
      this.ids.set(id, engineId)
    } catch (e) {
      const err = toServeError(e)
      this.send({ type: 'event', id, event: { type: 'error', requestId: `r${id}`, code: err.code, message: err.message, ...(err.details === undefined ? {} : { details: err.details }) } })
    }
  }

  private queueEvent(id: number, event: GenerateEvent): void {
    if (this.pendingIds.length === 0) queueMicrotask(() => this.flushEvents())
    this.pendingIds.push(id)
    this.pendingEvents.push(event)
  }

  private flushEvents(): void {
    this.observeSteps()
    const ids = this.pendingIds
    const events = this.pendingEvents
    this.pendingIds = []
    this.pendingEvents = []
    if (ids.length === 1) this.send({ type: 'event', id: ids[0]!, event: events[0]! })
    else if (ids.length > 1) this.send({ type: 'events', ids, events })
  }

  cancel(id: number): void {
    const engineId = this.ids.get(id)
    if (engineId) this.engine.cancel(engineId)
  }

  close(): Promise<void> {
    return this.engine.close()
  }

  private observeSteps(): void {
    const st = this.engine.stats()
    this.prefillSteps.observe(st.numPrefills, st.prefillMs)
    this.decodeSteps.observe(st.numDecodes, st.decodeMs)
  }

  stats(): Record<string, number | string> {
    this.observeSteps()
    return { ...this.engine.stats(), ...this.prefillSteps.report('prefillStep'), ...this.decodeSteps.report('decodeStep') }
  }
}
