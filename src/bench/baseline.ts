/**
 * `--baseline raw`: the same model run directly with onnxruntime-node in this process, with the same
 * inputs and the session options a replica uses, at batch sizes 1, 2, 4, ... up to the model's max
 * batch. Its best items/s is the compute ceiling ms-serve's throughput is reported against.
 * Function stages (pre/post-processing) are not part of it: a model fed by one gets random data of
 * the model's declared input shape.
 */
import type * as OrtTypes from 'onnxruntime-node'
import type { ValidMethod, ValidModel, ValidServable } from '../config/validate.ts'
import { DTYPES, shapeSize, Tensor, type NumericDType, type TypedArray, type Value } from '../tensor.ts'
import { seededRandom } from './load.ts'
import type { RawBaselineResult, RawBaselineRow } from './types.ts'
import { modelSessionOptions } from '../runtime/session-options.ts'

type Ort = typeof OrtTypes

/** Loads onnxruntime-node lazily: only baseline and input discovery need it. */
export async function loadOrt(): Promise<Ort> {
  const mod = (await import('onnxruntime-node')) as Ort & { default?: Ort }
  return mod.default ?? mod
}

/** Session options of a CPU replica of `m` with `intraOpThreads` threads (runtime/session-options.ts). */
export function replicaSessionOptions(m: ValidModel, intraOpThreads: number): OrtTypes.InferenceSession.SessionOptions {
  return modelSessionOptions(m, { deviceType: 'cpu', intraOpThreads, executionProviders: ['cpu'] })
}

/** 1, 2, 4, ... below max, then max. */
export function batchSizesUpTo(max: number): number[] {
  const out: number[] = []
  for (let b = 1; b < max; b *= 2) out.push(b)
  out.push(max)
  return out
}

export interface RawOrtArgs {
  servable: ValidServable
  method: ValidMethod
  instances: Record<string, Value>[]
  intraOpThreads: number
  msPerBatch: number
  /** Largest batch to try; default the method's smallest model maxBatchSize (32 when dynamic). */
  maxBatch?: number
  onProgress?: (msg: string) => void
}

function stack(values: Value[], rowShape: readonly number[], dtype: NumericDType, batch: number, ort: Ort): OrtTypes.Tensor {
  const per = shapeSize(rowShape)
  const data = new DTYPES[dtype].ctor(per * batch) as TypedArray
  for (let r = 0; r < batch; r++) (data as Float32Array).set((values[r % values.length] as Tensor).data as Float32Array, r * per)
  return new ort.Tensor(DTYPES[dtype].ort as 'float32', data as Float32Array, [batch, ...rowShape])
}

function randomFeed(meta: OrtTypes.InferenceSession.ValueMetadata, batch: number, batched: boolean, ort: Ort): OrtTypes.Tensor {
  if (!meta.isTensor) throw new Error(`model input ${meta.name} is not a tensor`)
  const dims = meta.shape.map((d, k) => (k === 0 && batched ? batch : typeof d === 'number' && d > 0 ? d : 1))
  const dtype = (Object.keys(DTYPES) as NumericDType[]).find((k) => DTYPES[k].ort === meta.type) ?? 'float32'
  const rnd = seededRandom(7)
  const data = new DTYPES[dtype].ctor(shapeSize(dims)) as TypedArray
  if (dtype === 'int64' || dtype === 'uint64') (data as BigInt64Array).fill(1n)
  else for (let i = 0; i < data.length; i++) (data as Float32Array)[i] = dtype.startsWith('float') ? rnd() * 2 - 1 : 1
  return new ort.Tensor(DTYPES[dtype].ort as 'float32', data as Float32Array, dims)
}

export async function rawOrtBaseline(a: RawOrtArgs): Promise<RawBaselineResult> {
  const ort = await loadOrt()
  const stages = a.method.stages.filter((s) => s.kind === 'model')
  const models = [...new Set(stages.map((s) => s.model!))].map((i) => a.servable.models[i]!)
  const sessions = new Map<number, OrtTypes.InferenceSession>()
  for (const m of models) sessions.set(m.index, await ort.InferenceSession.create(m.path, replicaSessionOptions(m, a.intraOpThreads)))
  const fixed = models.flatMap((m) => (m.withBatchDim ? sessions.get(m.index)!.inputMetadata.map((x) => (x.isTensor && typeof x.shape[0] === 'number' && x.shape[0] > 0 ? x.shape[0] : null)) : [1])).find((d) => d !== null)
  const maxBatch = fixed ?? a.maxBatch ?? Math.min(...models.map((m) => (m.withBatchDim ? m.maxBatchSize ?? 32 : 1)))
  const sizes = fixed ? [fixed] : batchSizesUpTo(Math.max(1, maxBatch))

  const rows: RawBaselineRow[] = []
  try {
    for (const batch of sizes) {
      // Inputs are built once per batch size: the ceiling is the model run, not the copy into it.
      const direct = new Map<number, OrtTypes.Tensor>()
      a.method.inputRefs.forEach((ref, i) => {
        const first = a.instances[0]?.[a.method.inputs[i]!]
        if (!(first instanceof Tensor)) return
        direct.set(ref, stack(a.instances.map((inst) => inst[a.method.inputs[i]!]!), first.shape, first.dtype, batch, ort))
      })
      const runOnce = async () => {
        const values = new Map(direct)
        for (const st of stages) {
          const m = a.servable.models[st.model!]!
          const s = sessions.get(m.index)!
          const feeds: Record<string, OrtTypes.Tensor> = {}
          s.inputMetadata.forEach((meta, j) => {
            const batched = m.withBatchDim && !m.withoutBatchDimInputs.includes(j)
            let t = values.get(st.args[j]!)
            if (!t) {
              t = randomFeed(meta, batch, batched, ort)
              direct.set(st.args[j]!, t)
              values.set(st.args[j]!, t)
            }
            feeds[meta.name] = t
          })
          const out = await s.run(feeds)
          s.outputNames.forEach((n, o) => { if (st.outputs[o] !== undefined) values.set(st.outputs[o]!, out[n]!) })
        }
      }
      for (let i = 0; i < 5; i++) await runOnce()
      let runs = 0
      const t0 = performance.now()
      const cpu0 = process.cpuUsage()
      while (runs < 10 || performance.now() - t0 < a.msPerBatch) {
        await runOnce()
        runs++
      }
      const ms = performance.now() - t0
      const cpu = process.cpuUsage(cpu0)
      const row = { batch, runs, msPerRun: ms / runs, itemsPerSec: (batch * runs * 1000) / ms, cpuMsPerItem: (cpu.user + cpu.system) / 1000 / (batch * runs) }
      rows.push(row)
      a.onProgress?.(`raw onnxruntime B=${batch}: ${Math.round(row.itemsPerSec)} items/s (${row.msPerRun.toFixed(3)} ms/run)`)
    }
  } finally {
    for (const s of sessions.values()) await s.release()
  }
  const best = rows.reduce<RawBaselineRow | null>((b, r) => (!b || r.itemsPerSec > b.itemsPerSec ? r : b), null)
  const threads = models.map((m) => m.session.intraOpThreads ?? a.intraOpThreads)[0] ?? a.intraOpThreads
  const fnStages = a.method.stages.length - stages.length
  return {
    kind: 'raw-ort',
    models: models.map((m) => m.file),
    intraOpThreads: threads,
    rows,
    best,
    note: `onnxruntime-node in the bench process, sequential await session.run, intra-op threads ${threads}, inputs prebuilt per batch size${fnStages ? `; the method's ${fnStages} function stage(s) are not included` : ''}`,
  }
}

