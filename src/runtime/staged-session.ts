/**
 * A model split into pipeline stages (`declareModel({ stages })`, made by `ms-serve split`), run
 * as one session: ModelRunner feeds it like any InferenceSession. Each stage has its own ORT
 * session (on its own device plan: threads, CUDA device) and runs one batch at a time; a batch
 * moves to stage k+1 as soon as stage k is done with it, so while batch A is in stage 2, batch B
 * runs in stage 1 (the replica takes stages + 1 batches at once, see Replica.maxInflightGroups).
 * Activations pass between stages as the ORT tensors stage k returned: no copy inside a replica.
 *
 * At load the stage files are checked to chain: an input of stage k is either a model input or an
 * output of an earlier stage with the same type and compatible shape, and every stage but the
 * last feeds a later one. Outputs no later stage reads are the model's outputs.
 */
import type * as ortTypes from 'onnxruntime-node'
import { ServeError } from '../errors.ts'

type Session = ortTypes.InferenceSession
type Meta = ortTypes.InferenceSession.ValueMetadata
type Feeds = Record<string, ortTypes.Tensor>

export interface StageInfo { file: string; inputs: string[]; outputs: string[] }

/** How long each stage took for one batch, in stage order. */
export interface StagedRun { out: Feeds; stageMs: number[] }

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

  constructor(private readonly sessions: readonly Session[], files: readonly string[]) {
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
  }

  /** Runs one batch through every stage; each stage takes one batch at a time, in arrival order. */
  async runTimed(feeds: Feeds): Promise<StagedRun> {
    const have: Feeds = { ...feeds }
    const stageMs: number[] = []
    for (let k = 0; k < this.sessions.length; k++) {
      const s = this.sessions[k]!
      const prev = this.tails[k]!
      let done!: () => void
      this.tails[k] = new Promise<void>((r) => { done = r })
      await prev
      try {
        const inputs: Feeds = {}
        for (const n of s.inputNames) inputs[n] = have[n]!
        const t0 = performance.now()
        Object.assign(have, await s.run(inputs))
        stageMs.push(performance.now() - t0)
      } finally {
        done()
      }
    }
    const out: Feeds = {}
    for (const n of this.outputNames) out[n] = have[n]!
    return { out, stageMs }
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
