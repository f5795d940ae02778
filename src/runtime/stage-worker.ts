/**
 * One pipeline stage in its own worker thread (stage-main.ts), seen from the replica: load it,
 * read its metadata, run batches. Runs are answered in the order they were posted (the worker
 * runs one at a time), so a FIFO of waiters is all the bookkeeping there is. A worker that dies
 * fails its waiting runs and every later one with the reason.
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
  options: ortTypes.InferenceSession.SessionOptions
}

export type StageRequest =
  | { type: 'run'; id: number; feeds: Record<string, WireTensor>; fetches?: string[] }
  | { type: 'release' }

export type StageReply =
  | { type: 'ready'; inputMetadata: Meta[]; outputMetadata: Meta[] }
  | { type: 'load-error'; message: string }
  | { type: 'done'; id: number; out: Record<string, WireTensor>; ms: number; start: number }
  | { type: 'failed'; id: number; message: string }

function stageEntry(): string {
  const here = dirname(fileURLToPath(import.meta.url))
  // Bundled: dist/<chunk dir>/... -> dist/runtime/stage-main.js; under tsx: src/runtime/stage-worker.ts.
  for (const p of [join(here, '..', 'runtime', 'stage-main.js'), join(here, 'stage-main.js'), join(here, '..', '..', 'dist', 'runtime', 'stage-main.js')]) {
    if (existsSync(p)) return p
  }
  throw new ServeError('INTERNAL', 'dist/runtime/stage-main.js is missing; run `npm run build`')
}

interface Waiter { resolve: (r: { out: Record<string, WireTensor>; ms: number; start: number }) => void; reject: (e: Error) => void }

export class StageWorker implements Stage {
  private readonly waiting = new Map<number, Waiter>()
  private nextId = 0
  private dead: string | null = null

  private constructor(private readonly worker: Worker, readonly inputMetadata: readonly Meta[], readonly outputMetadata: readonly Meta[]) {
    worker.on('message', (msg: StageReply) => {
      if (msg.type !== 'done' && msg.type !== 'failed') return
      const w = this.waiting.get(msg.id)
      if (!w) return
      this.waiting.delete(msg.id)
      if (msg.type === 'done') w.resolve(msg)
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

  /** Starts a worker and loads the stage in it; rejects with ORT's message if it cannot load. */
  static start(source: StageWorkerData['source'], options: ortTypes.InferenceSession.SessionOptions): Promise<StageWorker> {
    const worker = new Worker(stageEntry(), { workerData: { source, options } satisfies StageWorkerData, execArgv: [] })
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
   * Runs one batch. `transfer`: buffers of `feeds` nothing else holds (they move to the worker
   * and are detached here); everything else is copied.
   */
  run(feeds: Record<string, TensorLike>, transfer: ArrayBuffer[] = []): Promise<{ out: Record<string, WireTensor>; ms: number; start: number }> {
    if (this.dead) return Promise.reject(new Error(this.dead))
    const id = ++this.nextId
    // Plain objects: an ORT Tensor's data is a getter, which structured clone would drop.
    const wire: Record<string, WireTensor> = {}
    for (const [name, t] of Object.entries(feeds)) wire[name] = { type: t.type, dims: [...t.dims], data: t.data }
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject })
      this.worker.postMessage({ type: 'run', id, feeds: wire } satisfies StageRequest, transfer)
    })
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
