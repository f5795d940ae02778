/**
 * One pipeline stage in its own worker thread, seen from the replica: load it, read its metadata,
 * call it. Plain stages (stage-main.ts) take `run` calls; the LLM engine's stages
 * (llm/stage-decoder-main.ts) take prefill/decode calls over the KV cache they own. A worker
 * answers calls in order, one at a time; one that dies fails its waiting calls and every later
 * one with the reason.
 */
import { Worker } from 'node:worker_threads'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type * as ortTypes from 'onnxruntime-node'
import { ServeError } from '../errors.ts'
import type { Stage, TensorLike } from './staged-session.ts'

type Meta = ortTypes.InferenceSession.ValueMetadata

/** A tensor as it crosses to and from a stage worker (structured clone; buffers transferred where safe). */
export interface WireTensor { type: string; dims: number[]; data: ortTypes.Tensor['data'] }

export interface StageWorkerData {
  source: { path: string } | { bytes: Uint8Array }
  // An inline import type: the bundled .d.ts (dist/api.d.ts reaches this through LlmOptions) keeps it resolvable.
  options: import('onnxruntime-node').InferenceSession.SessionOptions
}

/** A plain stage's call and its answer. */
export interface RunCall { type: 'run'; feeds: Record<string, WireTensor>; fetches?: string[] }
export interface RunResult { out: Record<string, WireTensor>; ms: number; start: number }

/** What the parent sends: calls carry an id, answered by a `done` or `failed` with it. */
export type StageRequest = ({ id: number } & { type: string; [k: string]: unknown }) | { type: 'release' }

export type StageReply =
  | { type: 'ready'; inputMetadata: Meta[]; outputMetadata: Meta[] }
  | { type: 'load-error'; message: string }
  | { type: 'done'; id: number; value: unknown }
  | { type: 'failed'; id: number; message: string }

/** Which worker code a stage runs: dist/<dir>/<name>.js. */
export interface StageEntry { dir: 'runtime' | 'llm'; name: string }

/**
 * What a StageWorker talks to: a worker thread here, or a stage on an agent (runtime/remote-stage.ts)
 * that behaves like one (`message`, `error` and `exit` events; transfer lists may be ignored).
 */
export interface StagePort {
  postMessage(msg: unknown, transfer?: ArrayBuffer[]): void
  on(event: 'message' | 'error' | 'exit', fn: (arg: any) => void): unknown
  once(event: 'message' | 'error' | 'exit', fn: (arg: any) => void): unknown
  off(event: 'message' | 'error' | 'exit', fn: (arg: any) => void): unknown
  terminate(): unknown
}

/** Opens a stage somewhere else (an agent) instead of in a local worker thread. */
export type StageOpener = (entry: StageEntry, data: StageWorkerData) => StagePort

/** A local worker thread running a stage's code. */
export function stageThread(entry: StageEntry, data: StageWorkerData): Worker {
  return new Worker(stageEntry(entry.dir, entry.name), { workerData: data, execArgv: [] })
}

/** dist/<dir>/<name>.js, found from the bundle (dist/...) or from src/ under tsx. */
function stageEntry(dir: 'runtime' | 'llm', name: string): string {
  const here = dirname(fileURLToPath(import.meta.url))
  for (const p of [join(here, '..', dir, `${name}.js`), join(here, '..', '..', 'dist', dir, `${name}.js`)]) {
    if (existsSync(p)) return p
  }
  throw new ServeError('INTERNAL', `dist/${dir}/${name}.js is missing; run \`npm run build\``)
}

interface Waiter { resolve: (r: unknown) => void; reject: (e: Error) => void }

export class StageWorker implements Stage {
  private readonly waiting = new Map<number, Waiter>()
  private nextId = 0
  private dead: string | null = null

  private constructor(private readonly worker: StagePort, readonly inputMetadata: readonly Meta[], readonly outputMetadata: readonly Meta[]) {
    worker.on('message', (msg: StageReply) => {
      if (msg.type !== 'done' && msg.type !== 'failed') return
      const w = this.waiting.get(msg.id)
      if (!w) return
      this.waiting.delete(msg.id)
      if (msg.type === 'done') w.resolve(msg.value)
      else w.reject(new Error(msg.message))
    })
    const die = (why: string) => {
      if (this.dead) return
      this.dead = why
      for (const w of this.waiting.values()) w.reject(new Error(why))
      this.waiting.clear()
    }
    worker.on('error', (e) => die(`stage worker failed: ${e.message}`))
    worker.on('exit', (code) => die(`stage worker exited (code ${code})`))
  }

  get inputNames(): string[] { return this.inputMetadata.map((m) => m.name) }
  get outputNames(): string[] { return this.outputMetadata.map((m) => m.name) }

  /**
   * Starts a worker and loads the stage in it; rejects with ORT's message if it cannot load.
   * `entry`: the worker's code, a plain stage's by default; `open`: where it runs (default a
   * local worker thread; an agent's through runtime/remote-stage.ts).
   */
  static start(source: StageWorkerData['source'], options: ortTypes.InferenceSession.SessionOptions, entry: StageEntry = { dir: 'runtime', name: 'stage-main' }, open: StageOpener = stageThread): Promise<StageWorker> {
    const worker = open(entry, { source, options })
    return new Promise((resolve, reject) => {
      const onExit = (code: number) => reject(new Error(`stage worker exited while loading (code ${code})`))
      const onError = (e: Error) => reject(e)
      worker.once('exit', onExit)
      worker.once('error', onError)
      worker.once('message', (msg: StageReply) => {
        worker.off('exit', onExit)
        worker.off('error', onError)
        if (msg.type === 'ready') resolve(new StageWorker(worker, msg.inputMetadata, msg.outputMetadata))
        else {
          void worker.terminate()
          reject(new Error(msg.type === 'load-error' ? msg.message : `stage worker sent ${msg.type} before ready`))
        }
      })
    })
  }

  /**
   * One call, answered in turn. `transfer`: buffers of `msg` nothing else holds (they move to the
   * worker and are detached here); everything else is copied.
   */
  call<T>(msg: { type: string; [k: string]: unknown }, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.dead) return Promise.reject(new Error(this.dead))
    const id = ++this.nextId
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (r: unknown) => void, reject })
      this.worker.postMessage({ ...msg, id }, transfer)
    })
  }

  /** Runs one batch of a plain stage (Stage.run). */
  run(feeds: Record<string, TensorLike>, transfer: ArrayBuffer[] = []): Promise<RunResult> {
    return this.call<RunResult>({ type: 'run', feeds: toWire(feeds) } satisfies RunCall, transfer)
  }

  async release(): Promise<void> {
    if (this.dead) return
    const exited = new Promise<void>((r) => this.worker.once('exit', () => r()))
    this.worker.postMessage({ type: 'release' } satisfies StageRequest)
    const t = setTimeout(() => void this.worker.terminate(), 5000)
    await exited
    clearTimeout(t)
  }
}

/** Plain objects: an ORT Tensor's data is a getter, which structured clone would drop. */
export function toWire(feeds: Record<string, TensorLike>): Record<string, WireTensor> {
  const wire: Record<string, WireTensor> = {}
  for (const [name, t] of Object.entries(feeds)) wire[name] = { type: t.type, dims: [...t.dims], data: t.data }
  return wire
}
