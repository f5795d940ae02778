/**
 * Request inputs for predict benchmarks, in order of preference:
 *   1. `--input-file` (MindSpore REST JSON: `{"instances":[...]}`, a list of instances, or one);
 *   2. the servable's declared inputs, when its config is on disk (`--servables DIR`): each method
 *      input that feeds a model (directly or through a one-to-one function stage such as a cast)
 *      gets random data of that model input's dtype and per-row shape; an input named like an
 *      image gets a generated JPEG;
 *   3. a built-in recipe for the example servables (add, mlp, image) on a remote server.
 * Data is seeded, so two runs send the same bytes.
 */
import { readFileSync } from 'node:fs'
import { ServeError } from '../errors.ts'
import { parseInstances, parseJsonBody, renderValue } from '../protocol/rest/ms-json.ts'
import { DTYPES, f32ToF16Bits, shapeSize, Tensor, type NumericDType, type Value } from '../tensor.ts'
import type { ValidMethod, ValidServable } from '../config/validate.ts'
import { seededRandom } from './load.ts'

export type InputSpec =
  | { name: string; kind: 'tensor'; dtype: NumericDType; shape: number[] }
  | { name: string; kind: 'jpeg' }
  | { name: string; kind: 'string' }

/** Inputs of the example servables, for servers whose config is not on this machine. */
export const KNOWN_SERVABLE_INPUTS: Record<string, InputSpec[]> = {
  add: [{ name: 'x1', kind: 'tensor', dtype: 'float32', shape: [2, 2] }, { name: 'x2', kind: 'tensor', dtype: 'float32', shape: [2, 2] }],
  mlp: [{ name: 'x', kind: 'tensor', dtype: 'float32', shape: [784] }],
  image: [{ name: 'image', kind: 'jpeg' }],
}

const ORT_TO_DTYPE: Record<string, NumericDType> = Object.fromEntries(Object.entries(DTYPES).map(([k, v]) => [v.ort, k as NumericDType]))
const IMAGE_NAME = /image|img|picture|photo|jpe?g|png/i
const TEXT_NAME = /text|prompt|sentence|query/i

/** Model input metadata as onnxruntime-node reports it. */
export interface OrtInputMeta { name: string; type: string; shape: ReadonlyArray<number | string> }

/**
 * Derives one spec per method input. `modelInputs(i)` gives the ONNX inputs of model i. Free dims
 * become 1. Throws INVALID_REQUEST, asking for --input-file, when an input cannot be guessed.
 */
export async function specsFromServable(servable: ValidServable, method: ValidMethod, modelInputs: (model: number) => Promise<OrtInputMeta[]>): Promise<InputSpec[]> {
  const specs: InputSpec[] = []
  for (let i = 0; i < method.inputs.length; i++) {
    const name = method.inputs[i]!
    const ref = method.inputRefs[i]!
    let stage = method.stages.find((s) => s.args.includes(ref))
    let j = stage ? stage.args.indexOf(ref) : -1
    // A one-to-one function stage (a cast, a normalisation) in front of a model: the model's
    // input says what the value looks like.
    const named = stage?.kind === 'function' && (IMAGE_NAME.test(name) || TEXT_NAME.test(name))
    if (stage?.kind === 'function' && !named && stage.outputs.length === stage.args.length) {
      const out = stage.outputs[j]!
      const next = method.stages.find((s) => s.kind === 'model' && s.args.includes(out))
      if (next) { stage = next; j = next.args.indexOf(out) }
    }
    if (stage?.kind === 'model') {
      const model = servable.models[stage.model!]!
      const meta = (await modelInputs(model.index))[j]
      const dtype = meta ? ORT_TO_DTYPE[meta.type] : undefined
      if (!meta || !dtype) throw new ServeError('INVALID_REQUEST', `cannot generate input "${name}" of ${servable.name}:${method.name}: model ${model.file} input ${j} has type ${meta?.type ?? 'unknown'}. Pass --input-file instances.json`)
      const batched = model.withBatchDim && !model.withoutBatchDimInputs.includes(j)
      const dims = (batched ? meta.shape.slice(1) : meta.shape).map((d) => (typeof d === 'number' && d > 0 ? d : 1))
      specs.push({ name, kind: 'tensor', dtype, shape: dims })
    } else if (IMAGE_NAME.test(name)) specs.push({ name, kind: 'jpeg' })
    else if (TEXT_NAME.test(name)) specs.push({ name, kind: 'string' })
    else throw new ServeError('INVALID_REQUEST', `cannot tell what input "${name}" of ${servable.name}:${method.name} should hold (it goes into a function stage first). Pass --input-file with {"instances":[{"${name}": ...}]}`)
  }
  return specs
}

function randomTensor(dtype: NumericDType, shape: number[], rnd: () => number): Tensor {
  const n = shapeSize(shape)
  const data = new DTYPES[dtype].ctor(n)
  for (let k = 0; k < n; k++) {
    const u = rnd()
    if (dtype === 'float32' || dtype === 'float64') (data as Float32Array)[k] = u * 2 - 1
    else if (dtype === 'float16') (data as Uint16Array)[k] = f32ToF16Bits(u * 2 - 1)
    else if (dtype === 'bool') (data as Uint8Array)[k] = u < 0.5 ? 0 : 1
    else if (dtype === 'int64' || dtype === 'uint64') (data as BigInt64Array)[k] = BigInt(Math.floor(u * 10))
    else (data as Int32Array)[k] = Math.floor(u * 10)
  }
  return new Tensor(dtype, shape, data)
}

/** A JPEG of smooth noise (so it compresses like a photo, not like static). */
async function makeJpeg(size: number, rnd: () => number): Promise<Uint8Array> {
  const sharp = (await import('sharp')).default
  const raw = Buffer.alloc(size * size * 3)
  for (let k = 0; k < raw.length; k++) raw[k] = Math.floor(rnd() * 256)
  const jpeg = await sharp(raw, { raw: { width: size, height: size, channels: 3 } }).blur(1.5).jpeg({ quality: 85 }).toBuffer()
  return new Uint8Array(jpeg.buffer, jpeg.byteOffset, jpeg.byteLength)
}

/** `count` seeded instances following `specs`. */
export async function generateInstances(specs: InputSpec[], count: number, opts: { seed?: number; imageSize?: number } = {}): Promise<Record<string, Value>[]> {
  const rnd = seededRandom(opts.seed ?? 42)
  const out: Record<string, Value>[] = []
  for (let i = 0; i < count; i++) {
    const inst: Record<string, Value> = {}
    for (const s of specs) {
      if (s.kind === 'tensor') inst[s.name] = randomTensor(s.dtype, s.shape, rnd)
      else if (s.kind === 'jpeg') inst[s.name] = await makeJpeg(opts.imageSize ?? 224, rnd)
      else inst[s.name] = `benchmark input ${i}`
    }
    out.push(inst)
  }
  return out
}

/** Reads instances from a MindSpore REST JSON file. */
export function instancesFromFile(path: string): Record<string, Value>[] {
  let text: string
  try { text = readFileSync(path, 'utf8') } catch (e) { throw new ServeError('INVALID_REQUEST', `--input-file ${path}: ${(e as Error).message}`) }
  try {
    let body = parseJsonBody(text)
    if (Array.isArray(body) || (typeof body === 'object' && body !== null && !Object.hasOwn(body, 'instances'))) body = { instances: body }
    return parseInstances(body)
  } catch (e) {
    throw new ServeError('INVALID_REQUEST', `--input-file ${path}: ${(e as Error).message}. Expected MindSpore REST JSON, e.g. {"instances":[{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[[5.0,6.0],[7.0,8.0]]}]}`)
  }
}

/** Nested lists (what users type) for small float32/int32/bool tensors, `{"b64","type","shape"}` otherwise. */
function restValue(v: Value): string {
  if (v instanceof Tensor) {
    const listable = v.dtype === 'float32' || v.dtype === 'int32' || v.dtype === 'bool'
    if (listable && v.size <= 64 && v.shape.length > 0) return renderValue(v)
    const b = v.bytes()
    return `{"b64":"${Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64')}","type":"${v.dtype}","shape":[${v.shape.join(',')}]}`
  }
  return renderValue(v)
}

/** The REST body for a list of instances. */
export function restBody(instances: Record<string, Value>[]): Buffer {
  const parts = instances.map((inst) => `{${Object.keys(inst).map((k) => `${JSON.stringify(k)}:${restValue(inst[k]!)}`).join(',')}}`)
  return Buffer.from(`{"instances":[${parts.join(',')}]}`)
}

/** Groups instances into `numRequests` requests of `perRequest` each, cycling through them. */
export function groupRequests(instances: Record<string, Value>[], perRequest: number, numRequests: number): Record<string, Value>[][] {
  const out: Record<string, Value>[][] = []
  let k = 0
  for (let r = 0; r < numRequests; r++) {
    const req: Record<string, Value>[] = []
    for (let i = 0; i < perRequest; i++) req.push(instances[k++ % instances.length]!)
    out.push(req)
  }
  return out
}
