/**
 * A decoder in pipeline stages whose steps overlap (declareLlm `stages`). Each stage runs in its own
 * worker thread (stage-decoder-main.ts) and holds the KV cache of its own layers; the engine's
 * running batch is split into `lanes` (micro-batches), each an engine of its own (LlmEngine lanes:
 * its own continuous-batching scheduler, rows and slot cache), and the lanes' steps share the
 * stage workers. A step of lane A goes stage 1 -> stage 2 -> sampling on the engine's thread;
 * while lane A is in stage 2 (or being sampled), lane B's step runs in stage 1:
 *
 *   stage 1:  A1 B1 A2 B2 A3 ...          (each worker answers one call at a time, in order)
 *   stage 2:     A1 B1 A2 B2 ...
 *
 * The engine thread builds no feeds: each stage's DecoderRunner builds its own feeds from the
 * tokens and row lengths it is sent, so masks and positions are the one-session engine's. What
 * crosses threads per step: the tokens and row lengths (a few bytes each), the activations between
 * stages (transferred, not copied) and the last stage's logits (transferred).
 */
import type * as ortTypes from 'onnxruntime-node'
import { ServeError } from '../errors.ts'
import { StagedSession } from '../runtime/staged-session.ts'
import { StageWorker, type StageOpener, type WireTensor } from '../runtime/stage-worker.ts'
import type { StepLogits } from './decoder-runner.ts'
import type { KvCacheShape } from './kv-cache.ts'
import { describeModel, type ModelSpec } from './model-spec.ts'
import type { StageStepResult } from './stage-decoder-main.ts'

/** Busy intervals kept per stage (for tests and the bench's overlap figure). */
const KEEP_INTERVALS = 512

/** The stage workers of one engine, shared by its lanes. */
export class DecoderPipeline {
  /** Per stage: total run time in its worker, and the last runs' [start, end] (timeOrigin-based ms). */
  readonly busyMs: number[]
  readonly intervals: Array<Array<[number, number]>>
  /** Each stage's inputs and outputs (which layers' KV it holds shows in its past inputs). */
  readonly stages: Array<{ inputs: string[]; outputs: string[] }>

  private constructor(private readonly workers: StageWorker[], readonly spec: ModelSpec) {
    this.busyMs = workers.map(() => 0)
    this.intervals = workers.map(() => [])
    this.stages = workers.map((w) => ({ inputs: w.inputNames, outputs: w.outputNames }))
    this.stages.forEach((st, k) => { for (const n of st.inputs) this.lastReader.set(n, k) })
  }

  /** Per tensor name, the last stage that reads it (its buffer may move there). */
  private readonly lastReader = new Map<string, number>()

  /**
   * Starts one worker per stage file (bytes), checks that they chain and reads the decoder's spec.
   * `open(k)`: where stage k runs when not in a local worker thread (an agent's, runtime/remote-stage.ts).
   */
  static async start(stageBytes: Uint8Array[], options: (k: number) => ortTypes.InferenceSession.SessionOptions, open: (k: number) => StageOpener | undefined = () => undefined): Promise<DecoderPipeline> {
    const started = await Promise.allSettled(stageBytes.map((bytes, k) => StageWorker.start({ bytes }, options(k), { dir: 'llm', name: 'stage-decoder-main' }, open(k))))
    const workers = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
    const failed = started.findIndex((r) => r.status === 'rejected')
    if (failed >= 0) {
      await Promise.all(workers.map((w) => w.release()))
      throw new Error(`decoder stage ${failed + 1} did not load: ${((started[failed] as PromiseRejectedResult).reason as Error).message}`)
    }
    try {
      // The chain check and the whole decoder's metadata, as for a staged session.
      const spec = describeModel(new StagedSession(workers, workers.map((_, k) => `stage ${k + 1}`)))
      return new DecoderPipeline(workers, spec)
    } catch (e) {
      await Promise.all(workers.map((w) => w.release()))
      throw e
    }
  }

  /** Gives every stage its lanes' slot caches; returns each lane's runner. */
  async configure(lanes: KvCacheShape[], padTokenId: number): Promise<PipelineLane[]> {
    const answers = await Promise.all(this.workers.map((w) => w.call<{ layers: number[]; byteSize: number }>({ type: 'configure', spec: this.spec, padTokenId, lanes })))
    const covered = answers.flatMap((a) => a.layers).sort((a, b) => a - b)
    if (covered.length !== this.spec.numLayers || covered.some((l, i) => l !== i)) {
      throw new ServeError('CONFIG_INVALID', `decoder stages must hold every layer's KV exactly once (they hold layers ${covered.join(', ')} of ${this.spec.numLayers})`)
    }
    const perLane = answers.reduce((a, x) => a + x.byteSize, 0) / lanes.length
    return lanes.map((shape, g) => new PipelineLane(this, g, perLane, shape.exact === true))
  }

  /** One step of a lane through every stage, in order; the last stage's logits. */
  async step(msg: Record<string, unknown> & { type: 'prefill' | 'decode'; lane: number }, onLast: (r: StageStepResult) => void): Promise<StepLogits> {
    // Activations made so far; stage k is sent those it reads, moved (not copied) to the last reader.
    const have: Record<string, WireTensor> = {}
    for (let k = 0; k < this.workers.length; k++) {
      const carry: Record<string, WireTensor> = {}
      const transfer: ArrayBuffer[] = []
      for (const n of this.stages[k]!.inputs) {
        const t = have[n]
        if (!t) continue
        carry[n] = t
        if (this.lastReader.get(n) === k && ArrayBuffer.isView(t.data) && t.data.buffer instanceof ArrayBuffer && !transfer.includes(t.data.buffer)) transfer.push(t.data.buffer)
      }
      const r = await this.workers[k]!.call<StageStepResult>({ ...msg, carry }, transfer)
      this.busyMs[k] = this.busyMs[k]! + r.ms
      const iv = this.intervals[k]!
      iv.push([r.start, r.start + r.ms])
      if (iv.length > KEEP_INTERVALS) iv.shift()
      if (k === this.workers.length - 1) {
        onLast(r)
        const l = r.logits!
        return { data: l.data, vocabSize: l.vocabSize, ...(l.max && l.topLogprob ? { stats: { max: l.max, topLogprob: l.topLogprob } } : {}) }
      }
      Object.assign(have, r.carry)
    }
    throw new Error('a decoder pipeline has at least two stages')
  }

  /** Fills a leaving row's hole in every stage's cache of the lane (in order with the lane's steps). */
  move(lane: number, from: number, to: number, len: number): void {
    for (const w of this.workers) w.call({ type: 'move', lane, from, to, len }).catch(() => undefined) // a dead worker fails the lane's next step
  }

  async release(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.release()))
  }
}

/** The lane's cache as the engine reads it: the stages hold the data, the last stage reports its layout. */
class LaneCache {
  capacity = 0
  numRelayouts = 0
  constructor(private readonly pipeline: DecoderPipeline, private readonly lane: number, readonly byteSize: number, readonly shape: { exact: boolean }) {}
  moveRow(from: number, to: number, len: number): void {
    if (from === to || len === 0) return
    this.pipeline.move(this.lane, from, to, len)
  }
}

/** One lane's step runner: DecoderRunner's prefill/decode, carried out by the stage workers. */
export class PipelineLane {
  readonly cache: LaneCache

  constructor(private readonly pipeline: DecoderPipeline, readonly lane: number, byteSize: number, exact: boolean) {
    this.cache = new LaneCache(pipeline, lane, byteSize, { exact })
  }

  private readonly onLast = (r: StageStepResult): void => {
    this.cache.capacity = r.capacity
    this.cache.numRelayouts = r.numRelayouts
  }

  /** Prefix-cached positions are not used by pipelined engines (the engine keeps no prefix cache for them). */
  async prefill(prompts: readonly (readonly number[])[], firstRow: number, lens: Int32Array, _cached?: unknown, invTemp?: Float32Array): Promise<StepLogits> {
    const n = prompts.length
    const logits = await this.pipeline.step({ type: 'prefill', lane: this.lane, prompts, firstRow, lens: lens.slice(0, firstRow + n), ...(invTemp ? { invTemp } : {}) }, this.onLast)
    for (let j = 0; j < n; j++) lens[firstRow + j] = prompts[j]!.length
    return logits
  }

  async decode(tokens: ArrayLike<number>, numRows: number, lens: Int32Array, invTemp?: Float32Array): Promise<StepLogits> {
    const logits = await this.pipeline.step({ type: 'decode', lane: this.lane, tokens: Int32Array.from(tokens as ArrayLike<number>), numRows, lens: lens.slice(0, numRows), ...(invTemp ? { invTemp } : {}) }, this.onLast)
    for (let r = 0; r < numRows; r++) lens[r] = lens[r]! + 1
    return logits
  }
}

/** Wall-clock ms during which two or more stages ran at once, over the kept intervals (the pipelining that happened). */
export function overlapMs(intervals: ReadonlyArray<ReadonlyArray<readonly [number, number]>>): number {
  const events: Array<[number, number]> = []
  for (const stage of intervals) for (const [a, b] of stage) events.push([a, 1], [b, -1])
  events.sort((x, y) => x[0] - y[0] || x[1] - y[1])
  let depth = 0
  let since = 0
  let total = 0
  for (const [t, d] of events) {
    if (depth >= 2) total += t - since
    depth += d
    since = t
  }
  return total
}
