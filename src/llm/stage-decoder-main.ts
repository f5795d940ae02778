/**
 * Worker-thread entry of one decoder pipeline stage (declareLlm `stages`; llm/pipeline.ts starts
 * it through runtime/stage-worker.ts). The worker owns its stage's ORT session and the KV cache of
 * its own layers, one slot cache per lane (a lane is one of the engine's micro-batches; lanes'
 * steps overlap across the stages). It runs the same DecoderRunner as a one-session engine, over
 * a session wrapper that feeds the stage only the inputs it takes and adds the activations the
 * previous stage made (`carry`), so masks, positions and the KV writes are computed exactly as
 * for the whole model.
 *
 * Calls (answered in order, one at a time, by `done`/`failed`):
 * - `configure` {spec, padTokenId, lanes: cache shapes}: the whole decoder's ModelSpec; the stage
 *   keeps the layers whose past it reads.
 * - `prefill` / `decode` {lane, ..., lens, carry}: one step of that lane; answers the activations
 *   for the next stage, or (last stage) the logits, and the lane's cache capacity.
 * - `move` {lane, from, to, len}: a leaving row's hole filled (SlotKvCache.moveRow).
 */
import { parentPort } from 'node:worker_threads'
import ort from 'onnxruntime-node'
import type { StageReply, StageRequest, WireTensor } from '../runtime/stage-worker.ts'
import { openStage } from '../runtime/stage-open.ts'
import { DecoderRunner } from './decoder-runner.ts'
import { SlotKvCache, type KvCacheShape } from './kv-cache.ts'
import type { ModelSpec } from './model-spec.ts'

process.setSourceMapsEnabled(true)

const port = parentPort!

/** What a stage answers for one step. */
export interface StageStepResult {
  /** Activations for the next stage (not the last stage). */
  carry?: Record<string, WireTensor>
  /** Last stage: the rows' last-position logits, [rows, vocab], and the rewrite's statistics. */
  logits?: { data: Float32Array; vocabSize: number; max?: Float32Array; topLogprob?: Float32Array }
  capacity: number
  numRelayouts: number
  /** The run's time in this thread and its start (performance.timeOrigin + now). */
  ms: number
  start: number
}

export interface ConfigureCall { spec: ModelSpec; padTokenId: number; lanes: KvCacheShape[] }
export interface PrefillCall { lane: number; prompts: number[][]; firstRow: number; lens: Int32Array; invTemp?: Float32Array; carry: Record<string, WireTensor> }
export interface DecodeCall { lane: number; tokens: Int32Array; numRows: number; lens: Int32Array; invTemp?: Float32Array; carry: Record<string, WireTensor> }
export interface MoveCall { lane: number; from: number; to: number; len: number }

/** The stage session as DecoderRunner sees it: it builds the whole model's feeds, the stage takes its own. */
class StageFeeds {
  carry: Record<string, WireTensor> = {}
  last: ort.InferenceSession.OnnxValueMapType = {}
  ms = 0
  start = 0
  constructor(private readonly session: ort.InferenceSession) {}

  async run(feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession.OnnxValueMapType> {
    const mine: Record<string, ort.Tensor> = {}
    for (const n of this.session.inputNames) {
      const c = this.carry[n]
      const t = c ? new ort.Tensor(c.type as 'float32', c.data as Float32Array, c.dims) : feeds[n]
      if (!t) throw new Error(`decoder stage input ${n} was neither made by an earlier stage nor fed by the engine`)
      mine[n] = t
    }
    const t0 = performance.now()
    this.last = await this.session.run(mine)
    this.ms = performance.now() - t0
    this.start = performance.timeOrigin + t0
    return this.last
  }
}

interface Lane { cache: SlotKvCache; runner: DecoderRunner }

async function main(): Promise<void> {
  const session = await openStage()
  if (!session) return
  const feeds = new StageFeeds(session)
  let lanes: Lane[] = []
  let spec: ModelSpec | null = null
  let last = false
  let ownOutputs = new Set<string>()

  const result = (lane: Lane, logits: { data: Float32Array; vocabSize: number; stats?: { max: Float32Array; topLogprob: Float32Array } }): { value: StageStepResult; transfer: ArrayBuffer[] } => {
    const transfer: ArrayBuffer[] = []
    const take = (a: ArrayBufferView) => { if (a.buffer instanceof ArrayBuffer && !transfer.includes(a.buffer)) transfer.push(a.buffer) }
    const value: StageStepResult = { capacity: lane.cache.capacity, numRelayouts: lane.cache.numRelayouts, ms: feeds.ms, start: feeds.start }
    if (last) {
      value.logits = { data: logits.data, vocabSize: logits.vocabSize, ...(logits.stats ? { max: logits.stats.max, topLogprob: logits.stats.topLogprob } : {}) }
      // ORT's output buffers (the logits are handed over as they are when one position per row).
      take(logits.data)
      if (logits.stats) { take(logits.stats.max); take(logits.stats.topLogprob) }
    } else {
      const carry: Record<string, WireTensor> = {}
      for (const [name, v] of Object.entries(feeds.last)) {
        if (ownOutputs.has(name)) continue
        const t = v as ort.Tensor
        carry[name] = { type: t.type, dims: [...t.dims], data: t.data as WireTensor['data'] }
        if (ArrayBuffer.isView(t.data)) take(t.data)
      }
      value.carry = carry
    }
    return { value, transfer }
  }

  const handle = async (msg: { type: string; id: number } & Record<string, unknown>): Promise<{ value: unknown; transfer: ArrayBuffer[] }> => {
    if (msg.type === 'configure') {
      const c = msg as unknown as ConfigureCall
      const layers = c.spec.pastKeyNames.map((_, l) => l).filter((l) => session.inputNames.includes(c.spec.pastKeyNames[l]!))
      for (const l of layers) {
        for (const n of [c.spec.presentKeyNames[l]!, c.spec.presentValueNames[l]!]) if (!session.outputNames.includes(n)) throw new Error(`decoder stage reads past of layer ${l} but does not output ${n}`)
      }
      const pick = (names: string[]) => layers.map((l) => names[l]!)
      spec = { ...c.spec, numLayers: layers.length, pastKeyNames: pick(c.spec.pastKeyNames), pastValueNames: pick(c.spec.pastValueNames), presentKeyNames: pick(c.spec.presentKeyNames), presentValueNames: pick(c.spec.presentValueNames) }
      last = session.outputNames.includes(c.spec.logitsName)
      ownOutputs = new Set([...spec.presentKeyNames, ...spec.presentValueNames])
      lanes = c.lanes.map((shape) => {
        const cache = new SlotKvCache({ ...shape, numLayers: layers.length })
        return { cache, runner: new DecoderRunner(feeds as unknown as ort.InferenceSession, spec!, cache, c.padTokenId) }
      })
      return { value: { layers, byteSize: lanes.reduce((a, l) => a + l.cache.byteSize, 0) }, transfer: [] }
    }
    if (!spec) throw new Error(`decoder stage got ${msg.type} before configure`)
    const lane = lanes[(msg as unknown as { lane: number }).lane]
    if (!lane) throw new Error(`decoder stage has no lane ${(msg as unknown as { lane: number }).lane}`)
    if (msg.type === 'prefill') {
      const c = msg as unknown as PrefillCall
      feeds.carry = c.carry
      const logits = await lane.runner.prefill(c.prompts, c.firstRow, c.lens, undefined, c.invTemp)
      return result(lane, logits)
    }
    if (msg.type === 'decode') {
      const c = msg as unknown as DecodeCall
      feeds.carry = c.carry
      const logits = await lane.runner.decode(c.tokens, c.numRows, c.lens, c.invTemp)
      return result(lane, logits)
    }
    if (msg.type === 'move') {
      const c = msg as unknown as MoveCall
      lane.cache.moveRow(c.from, c.to, c.len)
      return { value: null, transfer: [] }
    }
    throw new Error(`decoder stage: unknown call ${msg.type}`)
  }

  let tail: Promise<void> = Promise.resolve()
  port.on('message', (msg: StageRequest) => {
    if (msg.type === 'release') {
      void tail.then(() => session.release()).finally(() => port.close())
      return
    }
    const call = msg as { type: string; id: number } & Record<string, unknown>
    tail = tail.then(async () => {
      try {
        const { value, transfer } = await handle(call)
        port.postMessage({ type: 'done', id: call.id, value } satisfies StageReply, transfer)
      } catch (e) {
        port.postMessage({ type: 'failed', id: call.id, message: (e as Error).message } satisfies StageReply)
      } finally {
        feeds.carry = {}
        feeds.last = {}
      }
    })
  })
}

void main()
