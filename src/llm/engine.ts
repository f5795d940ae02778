/**
 * The LLM engine of one replica: a TGI-style scheduler (scheduler.ts), a decoder
 * runner over a preallocated slot KV cache (decoder-runner.ts, kv-cache.ts) and the step loop.
 *
 * Loop invariant: one tick = at most one `session.run` (a prefill of joining requests OR one
 * decode step of the running batch), so the thread never blocks for longer than one step and
 * submits/cancels are picked up between steps (cancels are applied only there, never during a
 * step). Requests leave the batch as soon as they finish; joins never copy other rows' KV.
 * Requests arrive validated and tokenized (ValidGenerate, validated in the listener); the
 * engine's tokenizer only detokenizes what it generates and knows its EOS ids.
 */
import { randomInt } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { basename, dirname, resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import ort from 'onnxruntime-node'
import { factError, ServeError } from '../errors.ts'
import { ChatTemplate } from './chat-template.ts'
import { DecoderRunner, type CachedPrefixes, type StepLogits } from './decoder-runner.ts'
import { externalDataFolderEntry, rewriteForNewPositions } from './graph-rewrite.ts'
import { withoutExternalDataFolder } from '../models/external-data.ts'
import { GrammarCompilerCache } from './grammar.ts'
import type { SequenceGrammar } from './grammar.ts'
import { SlotKvCache } from './kv-cache.ts'
import { NO_PREFIX_CACHE, PrefixCache, type PrefixCacheStats } from './prefix-cache.ts'
import { resolveLlmBudgets } from './budgets.ts'
import { describeModel } from './model-spec.ts'
import { DecoderPipeline, type PipelineLane } from './pipeline.ts'
import { StagedSession, inThread } from '../runtime/staged-session.ts'
import type { ModelSpec } from './model-spec.ts'
import { planStep } from './scheduler.ts'
import type { QueueEntry, SchedulerConfig } from './scheduler.ts'
import { Sequence } from './sequence.ts'
import { loadTokenizer } from './tokenizer.ts'
import type { LlmTokenizer } from './tokenizer.ts'
import type { GenerateEvent, GenerateRequest, ValidGenerate, ValidationLimits } from './types.ts'
import { validateGenerate, type PromptEncoder } from './validate.ts'
import type { StageOpener } from '../runtime/stage-worker.ts'

/** Engine options; every field has a default. */
export interface LlmEngineOptions {
  /** KV cache rows = max running batch size (default 16). */
  maxBatchSize?: number
  /** Prompt + generated tokens per request (default 1024); sizes the KV slots. */
  maxTotalTokens?: number
  /** Default maxTotalTokens - 1. */
  maxInputTokens?: number
  /** Default maxInputTokens + 50 (TGI). */
  maxBatchPrefillTokens?: number
  /** Default maxBatchSize x maxTotalTokens. */
  maxBatchTotalTokens?: number
  /** In-flight (queued + running) limit; beyond it submit throws QUEUE_FULL (default 128). */
  maxConcurrentRequests?: number
  /** TGI: after this many decode steps without a prefill, any queued request may join (default 20). */
  maxWaitingTokens?: number
  /**
   * TGI: while a batch is running, a prefill must add >= ratio x running requests, else the
   * queue waits (up to maxWaitingTokens steps) for more to batch. Default 0 on CPU (prefill as
   * soon as a request waits, as vLLM: a compute-bound CPU prefills two prompts in twice the time
   * of one, so waiting to batch them only adds TTFT) and 0.3 (TGI's) with a GPU provider, where
   * batched prefills are nearly free.
   */
  waitingServedRatio?: number
  /**
   * Prefills that may run back to back while a batch is running before one decode step must
   * run (default 1, as TGI's loop; 0 = no limit). With no limit, requests that arrive together
   * are all prefilled before the batch decodes again, then finish on the same step and, in a
   * closed loop, return together, so every request of the clump waits for all the prefills
   * ahead of it; one prefill per decode step spreads them out.
   */
  maxConsecutivePrefills?: number
  maxStopSequences?: number
  /** Upper bound for a request's `top_n_tokens` (default 5, TGI's `--max-top-n-tokens`; 0 disables them). */
  maxTopNTokens?: number
  /**
   * Prefix cache budget in positions (default half the slot cache: maxBatchSize x maxTotalTokens / 2;
   * 0 turns it off): prompt K/V kept in blocks after each prefill and finished request, reused by
   * later prompts that start with the same tokens. Needs a model with position_ids.
   */
  prefixCacheTokens?: number
  /** Positions per prefix-cache block (default 16): prompts share cached K/V in whole blocks. */
  prefixBlockTokens?: number
  /** KV capacity growth step in positions (default 64). */
  kvBlock?: number
  /**
   * Per-row logit statistics in the rewritten graph (default true): onnxruntime computes each
   * row's max logit and log-softmax at the max, and the sampler skips its own pass over the
   * vocabulary (BENCHMARKS.md §6). false measures the JS-only path.
   */
  logitStats?: boolean
  /** 'new' (default): rewrite the graph to output only new KV positions; 'full': plain optimum I/O. */
  kvMode?: 'new' | 'full'
  intraOpNumThreads?: number
  /** Let ORT's intra-op threads spin between runs (default true; false frees the cores for the HTTP side). */
  allowSpinning?: boolean
  /** onnxruntime execution providers (the replica's device plan: CPU, or CUDA with its device_id). */
  executionProviders?: Array<string | { name: string; deviceId?: number }>
  /** Directory with tokenizer.json / tokenizer_config.json (default: next to the model, then its parent). */
  tokenizerDir?: string
  /**
   * Pipeline stages: the decoder is split at transformer-layer boundaries at load (models/split.ts)
   * and each stage runs in its own session and worker thread (llm/pipeline.ts), on `stageDevices[k]`
   * when given, holding the KV of its own layers only. Default 1 (one session).
   */
  stages?: number
  /**
   * The decoder as stage files (paths, in order; `modelPath` is the first): joined at load
   * (models/merge.ts), then rewritten and split into `stages` (default their number) as a whole
   * decoder would be.
   */
  stageFiles?: string[]
  /**
   * Staged decoders: how many micro-batches (lanes) share the stages, each with its own scheduler,
   * rows and KV slots (maxBatchSize split between them); while one lane's step is in stage 2,
   * another's runs in stage 1 (llm/pipeline.ts). Default: `stages`; 1 runs the stages one at a time.
   */
  microBatches?: number
  /**
   * Where stages run: 'workers' (default), a worker thread per stage, each holding its layers' KV;
   * 'inline', every stage on the engine's thread, taking turns (for comparison; MS_SERVE_STAGES_INLINE=1).
   */
  stageThreads?: 'workers' | 'inline'
  /** `open`: run the stage there (an agent's, runtime/remote-stage.ts) instead of in a local worker thread. */
  stageDevices?: Array<{ intraOpNumThreads?: number; executionProviders?: Array<string | { name: string; deviceId?: number }>; open?: StageOpener | undefined }>
}

/** Counters for /metrics and benchmarks (prefix-cache counters all 0 when it is off). */
export interface EngineStats extends PrefixCacheStats {
  queued: number
  running: number
  kvCapacity: number
  kvRelayouts: number
  kvBytes: number
  numPrefills: number
  numDecodes: number
  generatedTokens: number
  prefillMs: number
  decodeMs: number
  presentMode: 'new' | 'full'
  /** Staged decoders on workers: lanes sharing the stages, and each stage's time running steps. */
  lanes?: number
  [stageBusy: `stage${number}BusyMs`]: number
}

/** The step runner the engine drives: one session's (DecoderRunner) or a pipeline lane's. */
type StepRunner = DecoderRunner | PipelineLane

/** One model, one session, one step loop. Create with `LlmEngine.load`. */
export class LlmEngine {
  readonly limits: ValidationLimits & { maxConcurrentRequests: number; maxBatchSize: number }
  private readonly sched: SchedulerConfig
  /** Waiting requests: the scheduler's entries themselves, each with its sequence. */
  private readonly queue: Array<QueueEntry & { seq: Sequence }> = []
  private readonly rows: Sequence[] = []
  private readonly lens: Int32Array
  private readonly cancels = new Set<string>()
  private readonly inFlight = new Map<string, Sequence>()
  private reservedTokens = 0
  private waitingTokens = 0
  private prefillsSinceDecode = 0
  private tickPending = false
  private busy = false
  private closed = false
  private nextId = 0
  private scratch = new Float32Array(0)
  private readonly counters = { numPrefills: 0, numDecodes: 0, generatedTokens: 0, prefillMs: 0, decodeMs: 0 }
  private encoder: PromptEncoder | undefined
  /** Structured output: compiled grammars (made on the first constrained request) and each constrained sequence's matcher. */
  private grammarCache: GrammarCompilerCache | undefined
  private readonly matchers = new Map<Sequence, SequenceGrammar>()
  /** Null when off (budget 0, or a model without position_ids, whose positions follow the past length). */
  readonly prefixCache: PrefixCache | null
  /**
   * A pipelined decoder's engine hands each request to one of its lanes (engines of their own over
   * the shared stage workers) and owns the workers; a lane, and an unsplit engine, have none.
   */
  private readonly lanes: LlmEngine[]
  /** The stage workers (the engine that owns them and its lanes). */
  readonly pipeline: DecoderPipeline | null

  private constructor(readonly spec: ModelSpec, readonly tokenizer: LlmTokenizer, private readonly runner: StepRunner, opts: EngineConfig, private readonly releaseModel: () => Promise<void>,
    pipelined?: { lanes: LlmEngine[]; pipeline: DecoderPipeline }) {
    this.lanes = pipelined?.lanes ?? []
    this.pipeline = pipelined?.pipeline ?? null
    this.limits = { maxInputTokens: opts.maxInputTokens, maxTotalTokens: opts.maxTotalTokens, maxStopSequences: opts.maxStopSequences, maxTopNTokens: opts.maxTopNTokens, maxConcurrentRequests: opts.maxConcurrentRequests, maxBatchSize: opts.maxBatchSize }
    this.sched = { maxBatchPrefillTokens: opts.maxBatchPrefillTokens, maxBatchTotalTokens: opts.maxBatchTotalTokens, maxBatchSize: opts.maxBatchSize, maxWaitingTokens: opts.maxWaitingTokens, waitingServedRatio: opts.waitingServedRatio, maxConsecutivePrefills: opts.maxConsecutivePrefills }
    this.lens = new Int32Array(opts.maxBatchSize)
    this.prefixCache = runner instanceof DecoderRunner && opts.prefixCacheTokens >= opts.prefixBlockTokens && spec.hasPositionIds
      ? new PrefixCache({ numLayers: spec.numLayers, numKvHeads: spec.numKvHeads, headDim: spec.headDim, dtype: spec.kvDtype, blockTokens: opts.prefixBlockTokens, maxTokens: opts.prefixCacheTokens })
      : null
  }

  /** Loads the model (rewriting its KV outputs unless kvMode 'full') and the tokenizer it detokenizes with. */
  static async load(modelPath: string, opts: LlmEngineOptions = {}): Promise<LlmEngine> {
    if (opts.stageFiles && opts.stages === undefined) opts = { ...opts, stages: opts.stageFiles.length }
    // Option values and budgets were checked by config validation (config/validate.ts) at load,
    // before any replica started; only checks that need the model or tokenizer are made here.
    const budgets = resolveLlmBudgets(opts)
    const { maxBatchSize, maxTotalTokens } = budgets
    const onCpu = (opts.executionProviders ?? ['cpu']).every((p) => (typeof p === 'string' ? p : p.name) === 'cpu')
    const o = {
      ...budgets,
      maxConcurrentRequests: opts.maxConcurrentRequests ?? 128,
      maxWaitingTokens: opts.maxWaitingTokens ?? 20,
      waitingServedRatio: opts.waitingServedRatio ?? (onCpu ? 0 : 0.3),
      maxConsecutivePrefills: opts.maxConsecutivePrefills ?? 1,
      maxStopSequences: opts.maxStopSequences ?? 4,
      maxTopNTokens: opts.maxTopNTokens ?? 5,
      kvBlock: opts.kvBlock ?? 64,
      prefixCacheTokens: opts.prefixCacheTokens ?? Math.floor(maxBatchSize * maxTotalTokens / 2),
      prefixBlockTokens: opts.prefixBlockTokens ?? 16,
    }

    const original = opts.stageFiles ? await joinStageFiles(opts.stageFiles) : new Uint8Array(await readFile(modelPath))
    const bytes = opts.kvMode === 'full' ? original : rewriteForNewPositions(original, { logitStats: opts.logitStats !== false }).bytes
    const sessionOptions = (d: { intraOpNumThreads?: number; executionProviders?: LlmEngineOptions['executionProviders'] }): ort.InferenceSession.SessionOptions => ({
      graphOptimizationLevel: 'all', executionMode: 'sequential', interOpNumThreads: 1,
      ...(d.intraOpNumThreads ? { intraOpNumThreads: d.intraOpNumThreads } : {}),
      ...(d.executionProviders ? { executionProviders: d.executionProviders as ort.InferenceSession.ExecutionProviderConfig[] } : {}),
      // External data (model.onnx_data) is read from the model's folder, not the working directory.
      // Spinning intra-op threads hold their cores between runs; off when the cores are shared.
      extra: { ...externalDataFolderEntry(modelPath), ...(opts.allowSpinning === false ? { 'session.intra_op.allow_spinning': '0' } : {}) } as never,
    })
    const stageOptions = (k: number) => sessionOptions({ ...opts, ...opts.stageDevices?.[k] })
    if ((opts.stages ?? 1) > 1 && opts.stageThreads !== 'inline') return LlmEngine.loadPipelined(modelPath, bytes, opts, o, stageOptions)
    const session = (opts.stages ?? 1) > 1
      ? await loadStagedDecoder(bytes, modelPath, opts.stages!, stageOptions)
      : await ort.InferenceSession.create(bytes, sessionOptions(opts))
    const spec = describeModel(session)
    const tokenizer = await loadTokenizer(modelPath, opts.tokenizerDir)
    checkVocab(spec, tokenizer)
    const cache = new SlotKvCache({
      numLayers: spec.numLayers, numKvHeads: spec.numKvHeads, headDim: spec.headDim, dtype: spec.kvDtype,
      maxSlots: maxBatchSize, maxLen: maxTotalTokens, block: o.kvBlock, exact: !spec.hasPositionIds,
    })
    return new LlmEngine(spec, tokenizer, new DecoderRunner(session, spec, cache, tokenizer.padTokenId), o, () => session.release())
  }

  /**
   * A staged decoder on stage workers: the decoder split at load, one worker per stage, and
   * `microBatches` lanes (default `stages`), each an engine with maxBatchSize / lanes rows.
   */
  private static async loadPipelined(modelPath: string, bytes: Uint8Array, opts: LlmEngineOptions, o: EngineConfig, stageOptions: (k: number) => ort.InferenceSession.SessionOptions): Promise<LlmEngine> {
    const stages = opts.stages!
    const split = await splitDecoder(bytes, stages, modelPath)
    const tokenizer = await loadTokenizer(modelPath, opts.tokenizerDir)
    // A stage without external data gets no data folder: an agent running it then has nothing to fetch
    // (and its master does not decode the stage's inline weights looking for references).
    const ownOptions = (k: number) => (split[k]!.externalData ? stageOptions(k) : withoutExternalDataFolder(stageOptions(k)))
    const pipeline = await DecoderPipeline.start(split.map((st) => st.bytes), ownOptions, (k) => opts.stageDevices?.[k]?.open)
    try {
      const spec = pipeline.spec
      checkVocab(spec, tokenizer)
      const n = Math.max(1, Math.min(opts.microBatches ?? stages, o.maxBatchSize))
      const laneConfig: EngineConfig = {
        ...o,
        maxBatchSize: Math.ceil(o.maxBatchSize / n),
        maxBatchTotalTokens: Math.max(o.maxTotalTokens, Math.ceil(o.maxBatchTotalTokens / n)),
        prefixCacheTokens: 0,
      }
      const runners = await pipeline.configure(Array.from({ length: n }, () => ({
        numLayers: spec.numLayers, numKvHeads: spec.numKvHeads, headDim: spec.headDim, dtype: spec.kvDtype,
        maxSlots: laneConfig.maxBatchSize, maxLen: o.maxTotalTokens, block: o.kvBlock, exact: !spec.hasPositionIds,
      })), tokenizer.padTokenId)
      const lanes = runners.map((r) => new LlmEngine(spec, tokenizer, r, laneConfig, async () => undefined))
      // The owning engine only routes to its lanes; its own runner (lane 0's) never steps.
      return new LlmEngine(spec, tokenizer, runners[0]!, { ...o, prefixCacheTokens: 0 }, () => pipeline.release(), { lanes, pipeline })
    } catch (e) {
      await pipeline.release()
      throw e
    }
  }

  /** In flight (queued + running) in this engine or its lanes. */
  private get load(): number {
    return this.lanes.length ? this.lanes.reduce((a, l) => a + l.inFlight.size, 0) : this.inFlight.size
  }

  /** The lane (or this engine) that has `id` in flight. */
  private holder(id: string): LlmEngine | undefined {
    return this.lanes.length ? this.lanes.find((l) => l.inFlight.has(id)) : (this.inFlight.has(id) ? this : undefined)
  }

  /**
   * Queues a validated request (`id` unique among those in flight; generated when absent). Throws
   * QUEUE_FULL (facts `llm_overloaded`) synchronously; afterwards `onEvent` gets token events and
   * then exactly one done or error event.
   */
  submit(req: ValidGenerate, onEvent: (ev: GenerateEvent) => void, id = `req-${++this.nextId}`): string {
    if (this.closed) throw new ServeError('SERVABLE_NOT_READY', 'engine is closed')
    if (this.load >= this.limits.maxConcurrentRequests) throw factError('QUEUE_FULL', `the engine runs its most concurrent requests (${this.limits.maxConcurrentRequests})`, { reason: 'llm_overloaded', limit: this.limits.maxConcurrentRequests })
    if (this.holder(id)) throw new ServeError('INTERNAL', `request id "${id}" is already in flight`)
    if (this.lanes.length) {
      // The lane with the least work in flight (the first of equals).
      let lane = this.lanes[0]!
      for (const l of this.lanes) if (l.inFlight.size < lane.inFlight.size) lane = l
      return lane.submit(req, onEvent, id)
    }
    // Validation checked these against the limits this engine reported; a request past them would
    // overrun its KV slot, so a mismatch is refused here rather than trusted.
    if (req.inputIds.length + req.maxNewTokens > this.limits.maxTotalTokens) {
      throw new ServeError('INTERNAL', `request needs ${req.inputIds.length + req.maxNewTokens} tokens but the engine holds ${this.limits.maxTotalTokens} per request`)
    }
    const now = performance.now()
    const seq = new Sequence(id, req, req.seed ?? randomInt(2 ** 47), this.tokenizer, onEvent, now)
    this.inFlight.set(id, seq)
    this.queue.push({ id, inputLength: req.inputIds.length, maxNewTokens: req.maxNewTokens, enqueuedAt: now, seq })
    this.wake()
    return id
  }

  /**
   * Validates a request against this engine's own tokenizer and limits, for in-process use (tests,
   * benchmarks). The server validates in the listener (runtime/llm-dispatch.ts), never here.
   */
  validate(req: GenerateRequest): ValidGenerate {
    this.encoder ??= { tokenizer: this.tokenizer, chatTemplate: new ChatTemplate(this.tokenizer.config) }
    return validateGenerate(req, this.encoder, this.limits)
  }

  /** Cancels a queued or running request at the next step boundary; false if unknown. */
  cancel(requestId: string): boolean {
    const holder = this.holder(requestId)
    if (!holder) return false
    if (holder !== this) return holder.cancel(requestId)
    this.cancels.add(requestId)
    this.wake()
    return true
  }

  /** Snapshot of queue/batch/cache counters. */
  stats(): EngineStats {
    if (this.lanes.length) return this.pipelineStats()
    const c = this.runner.cache
    const prefix = this.prefixCache?.stats() ?? NO_PREFIX_CACHE
    return { queued: this.queue.length, running: this.rows.length, kvCapacity: c.capacity, kvRelayouts: c.numRelayouts, kvBytes: c.byteSize, presentMode: this.spec.presentMode, ...this.counters, ...prefix }
  }

  /** Fails everything in flight and releases the session. */
  async close(): Promise<void> {
    this.closed = true
    await Promise.all(this.lanes.map((l) => l.close()))
    for (const seq of this.inFlight.values()) seq.fail('CANCELLED', 'engine closed')
    this.inFlight.clear()
    this.queue.length = 0
    this.rows.length = 0
    while (this.busy) await new Promise((r) => setImmediate(r))
    // After the step in progress, which may still be masking with them.
    for (const m of this.matchers.values()) m.dispose()
    this.matchers.clear()
    await this.releaseModel()
  }

  /** The lanes' counters summed (capacity: the largest lane's), with each stage's busy time. */
  private pipelineStats(): EngineStats {
    const all = this.lanes.map((l) => l.stats())
    const sum = (k: keyof EngineStats) => all.reduce((a, s) => a + (s[k] as number), 0)
    const st: EngineStats = {
      ...all[0]!,
      queued: sum('queued'), running: sum('running'), kvCapacity: Math.max(...all.map((s) => s.kvCapacity)), kvRelayouts: sum('kvRelayouts'), kvBytes: sum('kvBytes'),
      numPrefills: sum('numPrefills'), numDecodes: sum('numDecodes'), generatedTokens: sum('generatedTokens'), prefillMs: sum('prefillMs'), decodeMs: sum('decodeMs'),
      lanes: this.lanes.length,
    }
    this.pipeline!.busyMs.forEach((ms, k) => { st[`stage${k + 1}BusyMs`] = ms })
    return st
  }

  private wake(): void {
    if (this.tickPending || this.closed) return
    this.tickPending = true
    setImmediate(() => { this.tickPending = false; void this.tick() })
  }

  private async tick(): Promise<void> {
    if (this.busy || this.closed) return
    this.busy = true
    let prefillIds: Sequence[] = []
    try {
      this.applyCancels()
      const plan = planStep({ queue: this.queue, running: { size: this.rows.length, maxTokens: this.reservedTokens }, waitingTokens: this.waitingTokens, prefillsSinceDecode: this.prefillsSinceDecode }, this.sched, performance.now())
      if (plan.kind === 'prefill') {
        prefillIds = this.queue.splice(0, plan.batch.count).map((q) => q.seq)
        await this.prefill(prefillIds)
        this.waitingTokens = 1
        this.prefillsSinceDecode++
      } else if (plan.kind === 'decode') {
        await this.decode()
        this.waitingTokens++
        this.prefillsSinceDecode = 0
      }
    } catch (e) {
      // A failed run leaves the cache in an unknown state: fail the whole batch (TGI does the same).
      const msg = `Request failed during generation: ${(e as Error).message}`
      for (const seq of [...this.rows, ...prefillIds]) { seq.fail('INFERENCE_FAILED', msg); this.inFlight.delete(seq.id); this.dropGrammar(seq) }
      this.rows.length = 0
      this.reservedTokens = 0
    } finally {
      this.busy = false
      if (!this.closed && (this.queue.length > 0 || this.rows.length > 0)) this.wake()
    }
  }

  private applyCancels(): void {
    if (this.cancels.size === 0) return
    for (const id of this.cancels) {
      const seq = this.inFlight.get(id)
      if (!seq) continue
      seq.fail('CANCELLED', 'request cancelled')
      const qi = this.queue.findIndex((q) => q.seq === seq)
      if (qi >= 0) { this.queue.splice(qi, 1); this.inFlight.delete(id) } else if (seq.row >= 0) this.leave(seq)
    }
    this.cancels.clear()
  }

  /** The one-session runner's slot cache (the prefix cache exists only with one). */
  private get slots(): SlotKvCache {
    return (this.runner as DecoderRunner).cache
  }

  private ensureScratch(v: number): Float32Array {
    if (this.scratch.length < v) this.scratch = new Float32Array(v)
    return this.scratch
  }

  private async prefill(queued: Sequence[]): Promise<void> {
    const seqs = queued.some((s) => s.req.grammar) ? await this.attachGrammars(queued) : queued
    if (seqs.length === 0) return
    const t0 = performance.now()
    const first = this.rows.length
    for (const [j, seq] of seqs.entries()) {
      seq.row = first + j
      seq.prefillAt = t0
      this.rows.push(seq)
      this.reservedTokens += seq.reservedTokens
    }
    const prompts = seqs.map((s) => s.req.inputIds)
    const pc = this.prefixCache
    let cached: CachedPrefixes | undefined
    if (pc) {
      const chains = prompts.map((p) => pc.lookup(p))
      cached = { lens: chains.map((c) => c.length * pc.blockTokens), fill: (j, row) => pc.copyInto(chains[j]!, this.slots, row) }
    }
    const logits = await this.runner.prefill(prompts, first, this.lens, cached, this.invTemperatures(seqs))
    // Cached now, before any of these rows can leave: later prompts of this very prefix hit at once.
    if (pc) for (const seq of seqs) pc.insert(seq.req.inputIds, seq.req.inputIds.length, this.slots, seq.row)
    if (this.matchers.size > 0) await this.maskRows(seqs, logits.data, logits.vocabSize)
    const now = performance.now()
    this.counters.numPrefills++
    this.counters.prefillMs += now - t0
    this.consume(seqs, logits, now)
  }

  private async decode(): Promise<void> {
    const t0 = performance.now()
    const n = this.rows.length
    const tokens = this.rows.map((s) => s.lastToken)
    const logits = await this.runner.decode(tokens, n, this.lens, this.invTemperatures(this.rows))
    if (this.matchers.size > 0) await this.maskRows(this.rows, logits.data, logits.vocabSize)
    const now = performance.now()
    this.counters.numDecodes++
    this.counters.decodeMs += now - t0
    this.consume(this.rows.slice(), logits, now)
  }

  /** 1/temperature of each sequence's row, for the graph's logit statistics (1 for greedy rows). */
  private invTemperatures(seqs: readonly Sequence[]): Float32Array | undefined {
    if (!this.spec.hasLogitStats) return undefined
    const a = new Float32Array(seqs.length)
    for (let i = 0; i < seqs.length; i++) {
      const p = seqs[i]!.req.sampling
      a[i] = p.doSample ? 1 / p.temperature : 1
    }
    return a
  }

  /** Samples one token per sequence (logits row i belongs to seqs[i]); finished ones leave. */
  private consume(seqs: Sequence[], logits: StepLogits, now: number): void {
    const vocab = logits.vocabSize
    const scratch = this.ensureScratch(vocab)
    const done: Sequence[] = []
    const stats = logits.stats
    for (const [i, seq] of seqs.entries()) {
      if (seq.finished) continue // cancelled by a consumer callback during this loop
      this.counters.generatedTokens++
      // A grammar-masked row's statistics are stale (the mask changed the row after the run).
      const rowStats = stats && !this.matchers.has(seq) ? { max: stats.max[i]!, topLogprob: stats.topLogprob[i]! } : undefined
      if (seq.step(logits.data.subarray(i * vocab, (i + 1) * vocab), now, scratch, rowStats)) done.push(seq)
      else {
        const m = this.matchers.get(seq)
        // The mask allowed only tokens the matcher accepts; a refusal would be an xgrammar bug.
        if (m && !m.accept(seq.lastToken)) { seq.fail('INFERENCE_FAILED', 'Request failed during generation: the grammar refused the sampled token'); done.push(seq) }
      }
    }
    // A finished request's generated positions extend its prompt's cached chain (the next turn
    // of a chat starts with them), when they complete a block the prompt did not.
    const pc = this.prefixCache
    if (pc) {
      for (const seq of done) {
        if (seq.row < 0) continue
        const valid = this.lens[seq.row]!
        if (Math.floor(valid / pc.blockTokens) > Math.floor(seq.req.inputIds.length / pc.blockTokens)) pc.insert([...seq.req.inputIds, ...seq.generated], valid, this.slots, seq.row)
      }
    }
    // Leave in descending row order so the row moved into each hole is one that stays.
    done.sort((a, b) => b.row - a.row)
    for (const seq of done) this.leave(seq)
  }

  /**
   * Gives each constrained sequence its grammar matcher (compiled once per distinct grammar);
   * a sequence whose grammar fails to compile fails alone. Returns the sequences to prefill.
   */
  private async attachGrammars(seqs: Sequence[]): Promise<Sequence[]> {
    this.grammarCache ??= new GrammarCompilerCache(this.tokenizer, this.spec.vocabSize ?? this.tokenizer.vocabSize)
    const ok: Sequence[] = []
    for (const seq of seqs) {
      const g = seq.req.grammar
      if (g) {
        try {
          this.matchers.set(seq, await this.grammarCache.matcher(g))
        } catch (e) {
          seq.fail('INFERENCE_FAILED', `Request failed during generation: the grammar did not compile: ${(e as Error).message}`)
          this.inFlight.delete(seq.id)
          continue
        }
        // Cancelled or engine closed while compiling.
        if (seq.finished || this.closed) { this.dropGrammar(seq); if (!this.closed) this.inFlight.delete(seq.id); continue }
      }
      ok.push(seq)
    }
    return ok
  }

  /** Masks the logits row of each constrained sequence (row i of `logits` is seqs[i]'s). */
  private async maskRows(seqs: readonly Sequence[], logits: Float32Array, vocab: number): Promise<void> {
    for (const [i, seq] of seqs.entries()) {
      const m = this.matchers.get(seq)
      if (m) await m.mask(logits.subarray(i * vocab, (i + 1) * vocab))
    }
  }

  private dropGrammar(seq: Sequence): void {
    const m = this.matchers.get(seq)
    if (m) { m.dispose(); this.matchers.delete(seq) }
  }

  /** Removes a running sequence: the last row moves into its hole (one row's KV copy). */
  private leave(seq: Sequence): void {
    const r = seq.row
    const last = this.rows.length - 1
    if (r < 0 || r > last) return
    if (r !== last) {
      const moved = this.rows[last]!
      this.runner.cache.moveRow(last, r, this.lens[last]!)
      this.lens[r] = this.lens[last]!
      this.rows[r] = moved
      moved.row = r
    }
    this.rows.pop()
    seq.row = -1
    this.dropGrammar(seq)
    this.reservedTokens -= seq.reservedTokens
    this.inFlight.delete(seq.id)
  }
}

/**
 * A decoder in `stages` pipeline stages: the (rewritten) graph split at layer boundaries
 * (models/split.ts), one session per stage. The runner drives it like one session; each stage is
 * fed only its own layers' past and returns only their new positions.
 */
async function loadStagedDecoder(bytes: Uint8Array, modelPath: string, stages: number, options: (k: number) => ort.InferenceSession.SessionOptions): Promise<ort.InferenceSession> {
  const split = await splitDecoder(bytes, stages, modelPath)
  const sessions: ort.InferenceSession[] = []
  try {
    for (const [k, st] of split.entries()) sessions.push(await ort.InferenceSession.create(st.bytes, options(k)))
  } catch (e) {
    await Promise.all(sessions.map((s) => s.release()))
    throw e
  }
  return new StagedSession(sessions.map(inThread), split.map((_, k) => `stage ${k + 1}`)) as unknown as ort.InferenceSession
}

/** A decoder given as stage files, joined into one graph (models/merge.ts); CONFIG_INVALID when they do not chain. */
async function joinStageFiles(paths: readonly string[]): Promise<Uint8Array> {
  const { mergeStages } = await import('../models/merge.ts')
  const files = await Promise.all(paths.map(async (p) => ({ name: basename(p), bytes: new Uint8Array(await readFile(p)) })))
  if (new Set(paths.map((p) => dirname(resolve(p)))).size > 1) throw new ServeError('CONFIG_INVALID', `declareLlm stages: the stage files must be in one folder (${paths.join(', ')})`)
  return mergeStages(files)
}

/** The (rewritten) decoder cut at layer boundaries into `stages` stage graphs (models/split.ts). */
async function splitDecoder(bytes: Uint8Array, stages: number, modelPath: string): Promise<Array<{ bytes: Uint8Array; externalData: boolean }>> {
  const { splitModel } = await import('../models/split.ts')
  const { ortTyper } = await import('../models/split-check.ts')
  try {
    // External data stays where it is: the stage graphs reference the model's own data file.
    return (await splitModel(bytes, { stages, externalDataFolder: dirname(resolve(modelPath)) }, ortTyper)).stages
  } catch (e) {
    throw new ServeError('CONFIG_INVALID', `declareLlm stages ${stages}: the decoder cannot be split: ${(e as Error).message}`)
  }
}

function checkVocab(spec: ModelSpec, tokenizer: LlmTokenizer): void {
  if (spec.vocabSize !== null && tokenizer.vocabSize > spec.vocabSize) {
    throw new ServeError('CONFIG_INVALID', `the tokenizer has ${tokenizer.vocabSize} tokens but the model's logits have ${spec.vocabSize}: `
      + `point declareLlm tokenizerDir at the folder with this model's tokenizer.json (or put it next to the model)`)
  }
}

type EngineConfig = Required<Omit<LlmEngineOptions, 'tokenizerDir' | 'stageFiles' | 'intraOpNumThreads' | 'kvMode' | 'executionProviders' | 'allowSpinning' | 'logitStats' | 'stages' | 'stageDevices' | 'microBatches' | 'stageThreads'>>
