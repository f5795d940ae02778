/**
 * MindSpore REST bodies on the client side. Requests send every tensor as typed base64
 * (`{"b64", "type", "shape"}`), so each dtype reaches the server exactly (JSON numbers could only
 * say int32 or float32); strings are JSON strings and bytes `{"b64"}`.
 *
 * Replies carry no dtypes: tensors come back as (nested) JSON numbers. Each output's dtype is taken
 * from the servable's description (GET /servables) when the server knows it, which makes every
 * dtype round-trip exactly (float32 is printed widened to double, float16 as its exact value, int64
 * as exact integers). An output whose dtype only its function stage decides is read the way the
 * server reads JSON (integers int32, floats float32, bools bool), widened to int64 / float64 when
 * a value would not fit. NaN and infinities are `null` in MindSpore's JSON and come back as NaN.
 */
import { Buffer } from 'node:buffer'
import { DTYPES, f32ToF16Bits, Tensor, type DType, type NumericDType, type Value } from '../tensor.ts'
import { isFloatAt, isObject, parseJsonBody } from '../protocol/rest/ms-json-reader.ts'
import { ClientError } from './errors.ts'
import type { Instance, InstanceResult } from './types.ts'

/** An output's dtype when known (null: decided at run time, undefined: no description). */
export type DTypeHint = (output: string) => DType | null | undefined

const badInput = (message: string) => new ClientError(message, { code: 'INVALID_REQUEST', transport: 'rest' })
const badReply = (message: string) => new ClientError(`unreadable reply: ${message}`, { code: 'BAD_REPLY', transport: 'rest' })

const b64 = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength).toString('base64')

function encodeValue(name: string, v: Value): string {
  if (v instanceof Tensor) return `{"b64":"${b64(v.bytes())}","type":"${v.dtype}","shape":[${v.shape.join(',')}]}`
  if (typeof v === 'string') return JSON.stringify(v)
  if (v instanceof Uint8Array) return `{"b64":"${b64(v)}"}`
  throw badInput(`input ${name}: expected a Tensor (tensor()), a string or a Uint8Array, got ${v === null ? 'null' : typeof v}`)
}

/** `{"instances":[...]}` for MindSpore's REST predict. */
export function encodeInstances(instances: readonly Instance[]): string {
  const parts = new Array<string>(instances.length)
  for (let i = 0; i < instances.length; i++) {
    const inst = instances[i]!
    const keys = Object.keys(inst)
    const items = new Array<string>(keys.length)
    for (let k = 0; k < keys.length; k++) items[k] = `${JSON.stringify(keys[k])}:${encodeValue(keys[k]!, inst[keys[k]!]!)}`
    parts[i] = `{${items.join(',')}}`
  }
  return `{"instances":[${parts.join(',')}]}`
}

/**
 * Reads a 200 reply of `count` instances. A whole-request `{"error_msg"}` (what `--rest-always-200`
 * and MindSpore Serving answer with 200) is thrown; per-instance `{"error_msg"}` become `{ error }`.
 */
export function decodeInstances(text: string, count: number, hint: DTypeHint): InstanceResult[] {
  let body: unknown
  try { body = parseJsonBody(text) } catch (e) { throw badReply((e as Error).message) }
  if (!isObject(body)) throw badReply('the body is not a JSON object')
  if (typeof body['error_msg'] === 'string') throw new ClientError(body['error_msg'], { code: 'UNKNOWN', transport: 'rest', httpStatus: 200 })
  const list = body['instances']
  if (!Array.isArray(list)) throw badReply('no "instances" array')
  if (list.length !== count) throw badReply(`${list.length} instance(s) for a request of ${count}`)
  const out = new Array<InstanceResult>(list.length)
  for (let i = 0; i < list.length; i++) {
    const inst = list[i]
    if (!isObject(inst)) throw badReply(`instance ${i} is not an object`)
    const keys = Object.keys(inst)
    if (keys.length === 1 && keys[0] === 'error_msg' && typeof inst['error_msg'] === 'string') {
      out[i] = { error: inst['error_msg'] }
      continue
    }
    const outputs: Record<string, Value> = {}
    for (const k of keys) outputs[k] = jsonToValue(inst, k, hint(k), `instances[${i}].${k}`)
    out[i] = { outputs }
  }
  return out
}

/** One rendered output value -> Value. `container[key]` is the value (its float marks live on the container). */
function jsonToValue(container: Record<string, unknown>, key: string, dtype: DType | null | undefined, path: string): Value {
  const v = container[key]
  if (typeof v === 'string') return v
  if (isObject(v)) {
    if (typeof v['b64'] !== 'string') throw badReply(`${path}: an object without "b64"`)
    // A Buffer, as the gRPC transport hands bytes back.
    const bytes = Buffer.from(v['b64'], 'base64')
    return dtype === 'string' ? bytes.toString('utf8') : bytes
  }
  const numeric = dtype === 'string' || dtype === 'bytes' ? undefined : dtype ?? undefined
  if (Array.isArray(v)) return arrayTensor(v, numeric, path)
  const leaves: unknown[] = [v]
  const float = typeof v === 'number' && isFloatAt(container, key, v)
  return makeTensor(numeric ?? inferDType(leaves, float, path), [], leaves, path)
}

/**
 * A nested array's shape (from the first element at each depth), its leaves in row-major order and
 * whether any number is written as a float (`1.0`). `ragged(path, depth)` is called (and must throw)
 * where the array is not regular; `path` is like `[1][0]`. The CLI reads its `--input` values with it too.
 */
export function flattenNested(arr: unknown[], ragged: (path: string, depth: number, shape: number[]) => never): { shape: number[]; leaves: unknown[]; float: boolean } {
  const shape: number[] = []
  let node: unknown = arr
  while (Array.isArray(node)) {
    shape.push(node.length)
    if (node.length === 0) break
    node = node[0]
  }
  const leaves: unknown[] = []
  let float = false
  const walk = (a: unknown, depth: number, path: string) => {
    if (!Array.isArray(a) || a.length !== shape[depth]) ragged(path, depth, shape)
    const list = a as unknown[]
    for (let i = 0; i < list.length; i++) {
      if (depth + 1 < shape.length) { walk(list[i], depth + 1, `${path}[${i}]`); continue }
      const x = list[i]
      if (Array.isArray(x)) ragged(`${path}[${i}]`, depth + 1, shape)
      if (!float && typeof x === 'number' && isFloatAt(list, i, x)) float = true
      leaves.push(x)
    }
  }
  walk(arr, 0, '')
  return { shape, leaves, float }
}

/** A nested array as the server renders a tensor. */
function arrayTensor(arr: unknown[], dtype: NumericDType | undefined, path: string): Tensor {
  const { shape, leaves, float } = flattenNested(arr, (_p, _d, sh) => { throw badReply(`${path}: not a regular array of shape [${sh.join(',')}]`) })
  return makeTensor(dtype ?? inferDType(leaves, float, path), shape, leaves, path)
}

const INT32_MIN = -(2 ** 31)
const INT32_MAX = 2 ** 31 - 1
const INT64_MAX = 2n ** 63n - 1n

/** The server's JSON rule (int32, float32, bool), widened where a value would not fit. */
function inferDType(leaves: readonly unknown[], float: boolean, path: string): NumericDType {
  if (leaves.length === 0) return 'float32'
  const first = leaves[0]
  if (typeof first === 'boolean') return 'bool'
  // null is how MindSpore's JSON prints NaN and infinities.
  if (float || leaves.some((x) => x === null)) {
    for (const x of leaves) if (typeof x === 'number' && Math.fround(x) !== x && x === x) return 'float64'
    return 'float32'
  }
  let wide = false
  let unsigned = false
  for (const x of leaves) {
    if (typeof x === 'bigint') { wide = true; if (x > INT64_MAX) unsigned = true }
    else if (typeof x === 'number') { if (x < INT32_MIN || x > INT32_MAX) wide = true }
    else throw badReply(`${path}: ${JSON.stringify(x)} among numbers`)
  }
  return unsigned ? 'uint64' : wide ? 'int64' : 'int32'
}

function makeTensor(dtype: NumericDType, shape: number[], leaves: readonly unknown[], path: string): Tensor {
  const n = leaves.length
  const data = new DTYPES[dtype].ctor(n)
  if (dtype === 'int64' || dtype === 'uint64') {
    const big = data as BigInt64Array
    for (let i = 0; i < n; i++) {
      const x = leaves[i]
      if (typeof x === 'bigint') big[i] = x
      else if (typeof x === 'number' && Number.isInteger(x)) big[i] = BigInt(x)
      else throw badReply(`${path}: ${String(x)} in a ${dtype} tensor`)
    }
  } else if (dtype === 'bool') {
    for (let i = 0; i < n; i++) (data as Uint8Array)[i] = leaves[i] ? 1 : 0
  } else {
    const f16 = dtype === 'float16'
    const nums = data as Float64Array
    for (let i = 0; i < n; i++) {
      const x = leaves[i]
      const num = x === null ? NaN : typeof x === 'bigint' ? Number(x) : typeof x === 'boolean' ? Number(x) : x
      if (typeof num !== 'number') throw badReply(`${path}: ${JSON.stringify(x)} in a ${dtype} tensor`)
      nums[i] = f16 ? f32ToF16Bits(num) : num
    }
  }
  return new Tensor(dtype, shape, data)
}
