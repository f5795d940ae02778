/**
 * A model split into pipeline stages (`declareModel({ stages })`, made by `ms-serve split`), run
 * as one session: ModelRunner feeds it like any InferenceSession. Each stage runs one batch at a
 * time; a batch moves to stage k+1 as soon as stage k is done with it, so while batch A is in
 * stage 2, batch B runs in stage 1 (the replica takes stages + 1 batches at once, see
 * Replica.maxInflightGroups).
 *
 * Where a stage runs decides whether that overlap is real. onnxruntime-node's run() occupies the
 * JS thread that calls it, so stages of one thread take turns. `StageWorker`s (stage-worker.ts,
 * the plain servables' stages, each on its own device plan) run in their own threads and do
 * overlap; activations cross as transferred buffers when nothing else reads them, copies
 * otherwise. `inThread` stages (the LLM engine's, whose KV-cache views cannot cross threads
 * without copying the cache) hand ORT tensors along with no copy, one stage at a time.
 *
 * At load the stage files are checked to chain: an input of stage k is either a model input or an
 * output of an earlier stage with the same type and compatible shape, and every stage but the
 * last feeds a later one. Outputs no later stage reads are the model's outputs.
 */
import type * as ortTypes from 'onnxruntime-node'
import { ServeError } from '../errors.ts'

type Meta = ortTypes.InferenceSession.ValueMetadata
/** What passes along the chain: ORT tensors in one thread, their {type, dims, data} across threads. */
export interface TensorLike { readonly type: string; readonly dims: readonly number[]; readonly data: ortTypes.Tensor['data'] }
type Feeds = Record<string, TensorLike>

/** One stage as the chain sees it. */
export interface Stage {
  readonly inputMetadata: readonly Meta[]
  readonly outputMetadata: readonly Meta[]
  readonly inputNames: readonly string[]
  readonly outputNames: readonly string[]
  /**
   * `transfer`: buffers of `feeds` no one else reads (a worker may take them). `start`: when the
   * run began, as performance.timeOrigin + performance.now() (comparable across threads).
   */
  run(feeds: Feeds, transfer: ArrayBuffer[]): Promise<{ out: Feeds; ms: number; start: number }>
  release(): Promise<void>
}

/**
 * Runs on this thread take turns anyway (run() holds it); queuing them here, one at a time, lets
 * each run's clock start when it really starts, so busy times do not count another stage's run.
 */
let threadTail: Promise<unknown> = Promise.resolve()

/** A stage on the calling thread: ORT tensors in and out as they are. */
export function inThread(session: ortTypes.InferenceSession): Stage {
  return {
    inputMetadata: session.inputMetadata,
    outputMetadata: session.outputMetadata,
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    run(feeds) {
      const turn = threadTail.then(async () => {
        const t0 = performance.now()
        const out = await session.run(feeds as Record<string, ortTypes.Tensor>)
        return { out, ms: performance.now() - t0, start: performance.timeOrigin + t0 }
      })
      threadTail = turn.catch(() => undefined)
      return turn
    },
    release: () => session.release(),
  }
}

export interface StageInfo { file: string; inputs: string[]; outputs: string[] }

/** How long each stage took for one batch, and when it started (Stage.run's `start`), in stage order. */
export interface StagedRun { out: Feeds; stageMs: number[]; stageStart: number[] }

const tensorMeta = (m: Meta): { type: string; shape: readonly (number | string)[] } | null =>
  (m.isTensor ? { type: m.type, shape: m.shape as readonly (number | string)[] } : null)

const shapeText = (s: readonly (number | string)[]) => `[${s.map((d) => (typeof d === 'number' && d >= 0 ? d : '?')).join(',')}]`

export class StagedSession {
  readonly inputMetadata: readonly Meta[]
  readonly outputMetadata: readonly Meta[]
  readonly inputNames: readonly string[]
  readonly outputNames: readonly string[]
  readonly stages: readonly StageInfo[]
  /** Per stage, the promise the next batch waits on (one batch in a stage at a time). */
  private readonly tails: Promise<void>[]
  /** Per stage, the inputs whose buffers it may take: activations made earlier that no one else reads. */
  private readonly movable: ReadonlySet<string>[]

  constructor(private readonly sessions: readonly Stage[], files: readonly string[]) {
    const made = new Map<string, { meta: Meta; stage: number }>()
    const inputs = new Map<string, Meta>()
    const read = new Set<string>()
    sessions.forEach((s, k) => {
      for (const m of s.inputMetadata) {
        read.add(m.name)
        const from = made.get(m.name)
        if (from === undefined) {
          const seen = inputs.get(m.name)
          if (seen && JSON.stringify(tensorMeta(seen)) !== JSON.stringify(tensorMeta(m))) {
            throw new ServeError('CONFIG_INVALID', `stage files do not chain: model input ${m.name} is ${describe(seen)} in one stage and ${describe(m)} in ${files[k]}`)
          }
          if (!seen) inputs.set(m.name, m)
          continue
        }
        const a = tensorMeta(from.meta)
        const b = tensorMeta(m)
        const fits = a && b && a.type === b.type && a.shape.length === b.shape.length && a.shape.every((d, i) => typeof d !== 'number' || d < 0 || typeof b.shape[i] !== 'number' || (b.shape[i] as number) < 0 || d === b.shape[i])
        if (!fits) {
          throw new ServeError('CONFIG_INVALID', `stage files do not chain: ${files[k]} takes ${m.name} as ${describe(m)}, but ${files[from.stage]} makes it as ${describe(from.meta)}. Split the model again with npx ms-serve split`)
        }
      }
      for (const m of s.outputMetadata) made.set(m.name, { meta: m, stage: k })
    })
    for (let k = 0; k < sessions.length - 1; k++) {
      if (!sessions[k]!.outputMetadata.some((m) => sessions.slice(k + 1).some((t) => t.inputMetadata.some((x) => x.name === m.name)))) {
        throw new ServeError('CONFIG_INVALID', `stage files do not chain: no later stage reads an output of ${files[k]} (outputs ${sessions[k]!.outputNames.join(', ')}; the next stage takes ${sessions[k + 1]!.inputNames.join(', ')}). List the stages in order, as ms-serve split wrote them`)
      }
    }
    this.inputMetadata = [...inputs.values()]
    this.outputMetadata = [...made.values()].filter(({ meta, stage }) => stage === sessions.length - 1 || !read.has(meta.name) || !sessions.slice(stage + 1).some((t) => t.inputNames.includes(meta.name))).map((x) => x.meta)
    this.inputNames = this.inputMetadata.map((m) => m.name)
    this.outputNames = this.outputMetadata.map((m) => m.name)
    this.stages = sessions.map((s, k) => ({ file: files[k]!, inputs: [...s.inputNames], outputs: [...s.outputNames] }))
    this.tails = sessions.map(() => Promise.resolve())
    const outputs = new Set(this.outputNames)
    this.movable = sessions.map((s, k) => new Set(s.inputNames.filter((n) => made.has(n) && made.get(n)!.stage < k && !outputs.has(n)
      && sessions.filter((t) => t.inputNames.includes(n)).length === 1)))
  }

  /** Runs one batch through every stage; each stage takes one batch at a time, in arrival order. */
  async runTimed(feeds: Feeds): Promise<StagedRun> {
    const have: Feeds = { ...feeds }
    const stageMs: number[] = []
    const stageStart: number[] = []
    for (let k = 0; k < this.sessions.length; k++) {
      const s = this.sessions[k]!
      const prev = this.tails[k]!
      let done!: () => void
      this.tails[k] = new Promise<void>((r) => { done = r })
      await prev
      try {
        const inputs: Feeds = {}
        const transfer: ArrayBuffer[] = []
        for (const n of s.inputNames) {
          const t = inputs[n] = have[n]!
          if (this.movable[k]!.has(n) && ArrayBuffer.isView(t.data) && t.data.buffer instanceof ArrayBuffer && !transfer.includes(t.data.buffer)) transfer.push(t.data.buffer)
        }
        const { out, ms, start } = await s.run(inputs, transfer)
        Object.assign(have, out)
        stageMs.push(ms)
        stageStart.push(start)
      } finally {
        done()
      }
    }
    const out: Feeds = {}
    for (const n of this.outputNames) out[n] = have[n]!
    return { out, stageMs, stageStart }
  }

  /** InferenceSession.run: all outputs, or those named in `fetches`. */
  async run(feeds: Feeds, fetches?: readonly string[]): Promise<Feeds> {
    const { out } = await this.runTimed(feeds)
    if (!fetches) return out
    const picked: Feeds = {}
    for (const n of fetches) picked[n] = out[n]!
    return picked
  }

  async release(): Promise<void> {
    await Promise.all(this.sessions.map((s) => s.release()))
  }
}

function describe(m: Meta): string {
  const t = tensorMeta(m)
  return t ? `${t.type}${shapeText(t.shape)}` : 'a non-tensor'
}
