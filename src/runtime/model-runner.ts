/**
 * One ONNX session inside a replica. Rows (one per instance) submitted in the same turn of the
 * event loop are merged, split into runs of at most maxBatchSize, padded to a fixed batch with
 * copies of the first row (MindSpore semantics), and the outputs are split back per row.
 */
import type * as ortTypes from 'onnxruntime-node'
import { DTYPES, Tensor, shapeSize, type TypedArray, type Value } from '../tensor.ts'
import { ServeError } from '../errors.ts'
import type { ValidModel } from '../config/validate.ts'
import type { ModelInfo, RunStat, TensorMeta } from './messages.ts'
import { checkModelInput, inputSpecs, ORT_TO_DTYPE, type InputSpec } from './input-check.ts'
import { StagedSession, type TensorLike } from './staged-session.ts'

type Ort = typeof ortTypes

interface Pending { rows: Value[][]; resolve: (r: Array<Value[] | ServeError>) => void }

function metaOf(m: ortTypes.InferenceSession.ValueMetadata): TensorMeta {
  if (!m.isTensor) return { name: m.name, dtype: 'non-tensor', shape: [] }
  return { name: m.name, dtype: m.type, shape: m.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : String(d))) }
}

export class ModelRunner {
  readonly info: ModelInfo
  private readonly inputs: InputSpec[]
  /** Inputs with a free (non-batch) dim: their shapes decide which rows may share a batch. */
  private readonly freeDimInputs: number[]
  private queue: Pending[] = []
  private scheduled = false
  /** Run statistics since the last drain (sent to the parent with results). */
  stats: RunStat[] = []

  /** Frees the ORT session (inline replicas on unload; a replica process or thread just exits). */
  release(): Promise<void> {
    return this.session.release()
  }

  constructor(private readonly ort: Ort, private readonly session: ortTypes.InferenceSession | StagedSession, readonly model: ValidModel) {
    const inMeta = session.inputMetadata.map(metaOf)
    const outMeta = session.outputMetadata.map(metaOf)
    const batchDims = model.withBatchDim ? inMeta.filter((_, i) => !model.withoutBatchDimInputs.includes(i)).concat(outMeta).map((m) => m.shape[0]) : []
    const fixed = batchDims.find((d) => typeof d === 'number') as number | undefined
    let maxBatchSize = model.withBatchDim ? (model.maxBatchSize ?? fixed ?? 32) : 1
    if (model.withBatchDim) {
      for (const [i, m] of [...inMeta.entries()].filter(([i]) => !model.withoutBatchDimInputs.includes(i))) {
        if (m.shape.length === 0) throw new ServeError('CONFIG_INVALID', `model ${model.file}: input ${i} (${m.name}) is a scalar, so it has no batch dim. Declare the model with withBatchDim: false, or list ${i} in withoutBatchDimInputs`)
      }
      const distinct = new Set(batchDims.filter((d) => typeof d === 'number'))
      if (distinct.size > 1) throw new ServeError('CONFIG_INVALID', `model ${model.file}: inputs and outputs disagree on the batch dim (${[...distinct].join(' vs ')}). Declare it with withBatchDim: false if dim 0 is not a batch`)
      if (fixed !== undefined && model.maxBatchSize !== null && model.maxBatchSize > fixed) {
        throw new ServeError('CONFIG_INVALID', `model ${model.file} has a fixed batch size ${fixed} but maxBatchSize is ${model.maxBatchSize}; set maxBatchSize <= ${fixed} or export the model with a dynamic batch dim`)
      }
      if (fixed !== undefined) maxBatchSize = fixed
    }
    this.info = { index: model.index, name: model.name, inputs: inMeta, outputs: outMeta, maxBatchSize, fixedBatch: model.withBatchDim && fixed !== undefined && fixed > 0 }
    this.inputs = inputSpecs(model, inMeta)
    this.freeDimInputs = this.inputs.map((s, i) => (s.rowBytes < 0 ? i : -1)).filter((i) => i >= 0)
  }

  get numInputs(): number { return this.inputs.length }
  get numOutputs(): number { return this.info.outputs.length }

  /**
   * Checks one instance's value for input i; returns MindSpore's error text, or null. Request inputs
   * fed straight into a method's leading model stages were already checked in the listener with the
   * same function (valid-predict.ts), so a wrong one never gets here; this stays as the safety net
   * for values produced by user stages (and for a model file that changed under a replica restart).
   */
  checkRow(i: number, v: Value): string | null {
    return checkModelInput(i, this.inputs[i]!, v)
  }

  /** Queues rows (one Value per model input); resolves per row with outputs or an error. */
  submit(rows: Value[][]): Promise<Array<Value[] | ServeError>> {
    return new Promise((resolve) => {
      this.queue.push({ rows, resolve })
      if (!this.scheduled) {
        this.scheduled = true
        // Rows from every pipeline that reaches this model before the microtask queue drains share
        // batches (the batch queue in front already groups requests). A microtask, not
        // setImmediate: a whole event-loop turn per batch showed as latency at one client.
        queueMicrotask(() => void this.flush())
      }
    })
  }

  private async flush(): Promise<void> {
    const pending = this.queue
    this.queue = []
    this.scheduled = false
    const all: Array<{ row: Value[]; p: number; k: number }> = []
    const results = pending.map((p) => new Array<Value[] | ServeError>(p.rows.length))
    pending.forEach((p, pi) => p.rows.forEach((row, k) => all.push({ row, p: pi, k })))
    // Rows with different shapes on a free dim cannot share a batch (all-static models: one group).
    const groups = new Map<string, typeof all>()
    if (this.freeDimInputs.length === 0) groups.set('', all)
    else {
      for (const item of all) {
        const key = this.freeDimInputs.map((i) => (item.row[i] as Tensor).shape.join('x')).join('|')
        let g = groups.get(key)
        if (!g) groups.set(key, (g = []))
        g.push(item)
      }
    }
    const max = this.info.maxBatchSize
    for (const g of groups.values()) {
      for (let off = 0; off < g.length; off += max) {
        const chunk = g.slice(off, off + max)
        try {
          const outs = await this.runChunk(chunk.map((c) => c.row))
          chunk.forEach((c, j) => { results[c.p]![c.k] = outs[j]! })
        } catch (e) {
          const err = new ServeError('INFERENCE_FAILED', `model ${this.model.name} failed: ${(e as Error).message}`)
          for (const c of chunk) results[c.p]![c.k] = err
        }
      }
    }
    pending.forEach((p, i) => p.resolve(results[i]!))
  }

  private async runChunk(rows: Value[][]): Promise<Value[][]> {
    const n = rows.length
    const batch = this.info.fixedBatch ? this.info.maxBatchSize : n
    const feeds: Record<string, ortTypes.Tensor> = {}
    this.inputs.forEach((spec, i) => {
      const first = rows[0]![i] as Tensor
      const dtype = spec.dtype!
      if (spec.shared) {
        const shape = spec.rowBytes >= 0 ? spec.rowShape : [...first.shape]
        feeds[spec.name] = new this.ort.Tensor(DTYPES[dtype].ort as 'float32', first.data as Float32Array, shape)
        return
      }
      const rowShape = spec.rowBytes >= 0 ? spec.rowShape : [...first.shape]
      const per = shapeSize(rowShape)
      let data: TypedArray
      if (batch === 1) data = first.data
      else {
        data = new DTYPES[dtype].ctor(per * batch)
        // Slots past the real rows are padding: copies of the first instance (MindSpore semantics).
        for (let r = 0; r < batch; r++) (data as Float32Array).set(((rows[r] ?? rows[0]!)[i] as Tensor).data as Float32Array, r * per)
      }
      feeds[spec.name] = new this.ort.Tensor(DTYPES[dtype].ort as 'float32', data as Float32Array, [batch, ...rowShape])
    })
    const t0 = performance.now()
    let out: Record<string, TensorLike>
    let stageMs: number[] | undefined
    if (this.session instanceof StagedSession) ({ out, stageMs } = await this.session.runTimed(feeds))
    else out = await this.session.run(feeds)
    const ms = performance.now() - t0
    this.stats.push({ model: this.model.index, batch: n, padded: batch - n, ms, ...(stageMs ? { stageMs } : {}) })
    const perRow: Value[][] = rows.map(() => [])
    for (const meta of this.info.outputs) {
      const t = out[meta.name]!
      const dtype = ORT_TO_DTYPE[t.type]
      if (!dtype) throw new Error(`output ${meta.name} has type ${t.type}, which ms-serve cannot return`)
      const dims = t.dims as readonly number[]
      const data = t.data as TypedArray
      if (!this.model.withBatchDim || dims[0] !== batch) {
        for (let r = 0; r < n; r++) perRow[r]!.push(new Tensor(dtype, [...dims], r === 0 ? data : data.slice()))
        continue
      }
      const rowShape = dims.slice(1)
      const per = shapeSize(rowShape)
      for (let r = 0; r < n; r++) perRow[r]!.push(new Tensor(dtype, rowShape, n === 1 && batch === 1 ? data : data.slice(r * per, (r + 1) * per)))
    }
    return perRow
  }
}
