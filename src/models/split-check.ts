/**
 * The onnxruntime side of `ms-serve split`: typing the tensors that cross stage boundaries, and
 * checking on random inputs that the chained stages compute what the whole model does.
 */
import * as ort from 'onnxruntime-node'
import { mulberry32, onnx } from './onnx-builder.ts'
import type { OutputTyper, SplitStage } from './split.ts'
import { ServeError } from '../errors.ts'
import { externalDataFolderOption } from './external-data.ts'

/** ORT infers the metadata of outputs added without a type: one session of the whole model says it. */
export const ortTyper: OutputTyper = async (bytes, names, folder) => {
  const model = onnx.ModelProto.decode(bytes)
  const have = new Set((model.graph!.output ?? []).map((o) => o.name ?? ''))
  for (const n of names) if (!have.has(n)) model.graph!.output!.push(onnx.ValueInfoProto.create({ name: n }))
  const session = await ort.InferenceSession.create(onnx.ModelProto.encode(model).finish(), { graphOptimizationLevel: 'disabled', ...folderOption(folder) })
  try {
    const out = new Map<string, { type: string; shape: (number | string)[] }>()
    for (const m of session.outputMetadata) if (m.isTensor) out.set(m.name, { type: m.type, shape: m.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : String(d))) })
    return out
  } finally {
    await session.release()
  }
}

/** Sessions made from bytes resolve external data `location`s against `folder` (not the working directory). */
function folderOption(folder: string | undefined): ort.InferenceSession.SessionOptions {
  return folder ? { extra: externalDataFolderOption(folder) as never } : {}
}

/** Sizes of HF optimum's decoder dims, so that a decoder's inputs agree (mask = past + new). */
const DECODER_DIMS: Record<string, number> = { batch_size: 2, sequence_length: 3, past_sequence_length: 4, total_sequence_length: 7 }

/** A free dim's size: `dims` by name, optimum's names, `a + b` of known names, else 2. */
function dimSize(name: string, dims: Record<string, number>): number {
  const known = (n: string) => dims[n] ?? DECODER_DIMS[n]
  const direct = known(name)
  if (direct !== undefined) return direct
  const sum = name.split('+').map((x) => x.trim())
  if (sum.length > 1) {
    const parts = sum.map((x) => (/^\d+$/.test(x) ? Number(x) : known(x)))
    if (parts.every((x) => x !== undefined)) return (parts as number[]).reduce((a, b) => a + b, 0)
  }
  return 2
}

/** Random inputs of the model's types; masks are ones, position ids count up, ids are small. */
function feedsFor(session: ort.InferenceSession, dims: Record<string, number>, seed: number): Record<string, ort.Tensor> {
  const r = mulberry32(seed)
  const feeds: Record<string, ort.Tensor> = {}
  for (const m of session.inputMetadata) {
    if (!m.isTensor) throw new ServeError('INVALID_REQUEST', `input ${m.name} is not a tensor; the check cannot feed it`)
    const shape = m.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : dimSize(String(d), dims)))
    const n = shape.reduce((a, b) => a * b, 1)
    const mask = /mask/i.test(m.name)
    switch (m.type) {
      case 'float32': feeds[m.name] = new ort.Tensor('float32', Float32Array.from({ length: n }, () => r() * 2 - 1), shape); break
      case 'float16': feeds[m.name] = new ort.Tensor('float16', new Uint16Array(n).fill(0x3c00), shape); break
      case 'int64': feeds[m.name] = new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(mask ? 1 : /position/i.test(m.name) ? dimSize('past_sequence_length', dims) + (i % (shape.at(-1) ?? 1)) : Math.floor(r() * 4))), shape); break
      case 'int32': feeds[m.name] = new ort.Tensor('int32', Int32Array.from({ length: n }, () => (mask ? 1 : Math.floor(r() * 4))), shape); break
      case 'bool': feeds[m.name] = new ort.Tensor('bool', new Uint8Array(n).fill(1), shape); break
      default: throw new ServeError('INVALID_REQUEST', `input ${m.name} has type ${m.type}; the check feeds float, int and bool inputs only`)
    }
  }
  return feeds
}

export interface CheckReport { outputs: { name: string; maxAbsDiff: number }[]; maxAbsDiff: number }

/**
 * Runs the whole model and the chained stages on the same random inputs and returns, per graph
 * output, the largest absolute difference. `dims` sizes the free dims by name (default 2 each);
 * `folders`: where external data `location`s of the whole model and of the stages resolve.
 */
export async function checkSplit(whole: Uint8Array, stages: readonly SplitStage[], dims: Record<string, number> = {}, seed = 7, folders: { whole?: string; stages?: string } = {}): Promise<CheckReport> {
  const opts: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: 'all' }
  const full = await ort.InferenceSession.create(whole, { ...opts, ...folderOption(folders.whole) })
  try {
    const feeds = feedsFor(full, dims, seed)
    const want = await full.run(feeds)
    const have: Record<string, ort.Tensor> = { ...feeds }
    for (const st of stages) {
      const s = await ort.InferenceSession.create(st.bytes, { ...opts, ...folderOption(folders.stages ?? folders.whole) })
      try {
        const inputs: Record<string, ort.Tensor> = {}
        for (const n of st.inputs) {
          const t = have[n]
          if (!t) throw new ServeError('INTERNAL', `stage input ${n} was not produced by an earlier stage`)
          inputs[n] = t
        }
        Object.assign(have, await s.run(inputs))
      } finally {
        await s.release()
      }
    }
    const outputs = full.outputNames.map((name) => {
      const a = want[name]!
      const b = have[name]
      if (!b) throw new ServeError('INTERNAL', `the stages do not output ${name}`)
      if (a.dims.join(',') !== b.dims.join(',')) throw new ServeError('INTERNAL', `output ${name}: the stages give shape [${b.dims}], the model [${a.dims}]`)
      let d = 0
      const x = a.data as ArrayLike<number | bigint>
      const y = b.data as ArrayLike<number | bigint>
      for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(Number(x[i]) - Number(y[i])))
      return { name, maxAbsDiff: d }
    })
    return { outputs, maxAbsDiff: Math.max(0, ...outputs.map((o) => o.maxAbsDiff)) }
  } finally {
    await full.release()
  }
}
