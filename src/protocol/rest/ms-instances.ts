/**
 * MindSpore REST bodies, part 2: `{"instances": ...}` -> one Record<string, Value> per instance,
 * with the reference's error texts, byte for byte. Object keys are visited in sorted (UTF-8 byte)
 * order, as nlohmann's std::map does, so the first error reported is the one the reference reports.
 */
import { Buffer } from 'node:buffer'
import { ServeError } from '../../errors.ts'
import { DTYPES, Tensor, type NumericDType, type TypedArray, type Value } from '../../tensor.ts'
import { JSON_FLOAT_KINDS, type FloatMark, setOwn, isFloatAt, compareKeys, isObject } from './ms-json-reader.ts'
import { formatDouble } from './ms-render.ts'

// ---------------------------------------------------------------------------------------------
// Request: {"instances": ...} -> one Record<string, Value> per instance
// ---------------------------------------------------------------------------------------------

type ItemType = NumericDType | 'string' | 'bytes'
const B64_TYPES = new Map<string, ItemType>([
  ['int8', 'int8'], ['int16', 'int16'], ['int32', 'int32'], ['int64', 'int64'],
  ['uint8', 'uint8'], ['uint16', 'uint16'], ['uint32', 'uint32'], ['uint64', 'uint64'],
  ['fp16', 'float16'], ['fp32', 'float32'], ['fp64', 'float64'],
  ['float16', 'float16'], ['float32', 'float32'], ['float64', 'float64'],
  ['bool', 'bool'], ['str', 'string'], ['bytes', 'bytes'],
])
// The reference names a type by its first alias in std::map order, hence float16 rather than fp16.
const TYPE_NAMES: Record<ItemType, string> = {
  bool: 'bool', int8: 'int8', int16: 'int16', int32: 'int32', int64: 'int64', uint8: 'uint8', uint16: 'uint16',
  uint32: 'uint32', uint64: 'uint64', float16: 'float16', float32: 'float32', float64: 'float64', string: 'str', bytes: 'bytes',
}
const NOT_EQUAL = 'json array, elements type is not equal'
const NOT_SCALAR = 'json array, data should be number, bool, string or bytes'
// Above this we validate the array shape before allocating (a ragged array can imply a huge shape).
const MAX_DIRECT_ELEMENTS = 1 << 27
const K_INT = 0, K_FLOAT = 1, K_BOOL = 2, K_STR = 3, K_OBJ = 4

/** JSON floats are stored as float32; from this magnitude on they round to Infinity (FLT_MAX + half an ulp). */
const F32_OVERFLOW = 2 ** 128 - 2 ** 103

function outOfFloat32(v: number): never {
  bad(`json number ${v} is out of float32 range (magnitude at most 3.4028235e+38); send it as fp64 b64 or scale it`)
}

function bad(detail: string): never {
  throw new ServeError('INVALID_REQUEST', `Parser request failed, ${detail}`)
}

/** A string/bytes input whose shape is neither [] nor [1]: the reference rejects it after parsing. */
interface ParseCtx { shapeError: string | undefined }

/**
 * Turns a parsed body (from parseJsonBody, or plain JSON.parse with int/float guessed from the
 * value) into instances. Errors: INVALID_REQUEST `Parser request failed, <detail>`, except a
 * string/bytes input shaped other than [] or [1], which fails like the reference's tensor check.
 */
export function parseInstances(body: unknown): Record<string, Value>[] {
  if (!isObject(body) || !Object.hasOwn(body, 'instances')) bad("key 'instances' expects to exist once, but actually 0 times")
  const instances = body['instances']
  const ctx: ParseCtx = { shapeError: undefined }
  let out: Record<string, Value>[]
  if (Array.isArray(instances)) {
    if (instances.length === 0) bad('instances value is array type, but no value')
    if (!isObject(instances[0])) bad('instances no key mode is not supported')
    out = new Array(instances.length)
    for (let i = 0; i < instances.length; i++) {
      const inst: unknown = instances[i]
      if (!isObject(inst)) bad('json array, instance is not object type')
      if (Object.keys(inst).length === 0) bad('json array, instance is object type, but no value')
      out[i] = parseInstance(inst, ctx)
    }
  } else if (isObject(instances)) {
    if (Object.keys(instances).length === 0) bad('json object, value is empty')
    out = [parseInstance(instances, ctx)]
  } else bad('instances no key mode is not supported')
  if (ctx.shapeError !== undefined) throw new ServeError('INVALID_REQUEST', ctx.shapeError)
  return out
}

function parseInstance(inst: Record<string, unknown>, ctx: ParseCtx): Record<string, Value> {
  const rec: Record<string, Value> = {}
  for (const key of Object.keys(inst).sort(compareKeys)) {
    if (key === '') bad('string key is empty')
    const v = inst[key]
    let item: Value
    if (Array.isArray(v)) item = parseArrayItem(v, key, ctx)
    else if (isObject(v)) item = parseObjectItem(v, key, ctx)
    else if (typeof v === 'number') {
      if (isFloatAt(inst, key, v)) {
        if (v >= F32_OVERFLOW || v <= -F32_OVERFLOW) outOfFloat32(v)
        item = new Tensor('float32', [], Float32Array.of(v))
      } else item = new Tensor('int32', [], Int32Array.of(v))
    } else if (typeof v === 'bigint') item = new Tensor('int32', [], Int32Array.of(Number(BigInt.asIntN(32, v))))
    else if (typeof v === 'boolean') item = new Tensor('bool', [], Uint8Array.of(v ? 1 : 0))
    else if (typeof v === 'string') item = v
    else if (v === null) bad('json value is null, it is not supported')
    else bad('json value type is unregistered')
    setOwn(rec, key, item)
  }
  return rec
}

/** `{"b64": ..., "type"?: ..., "shape"?: [...]}`: checks in the reference's order (keys sorted). */
function parseObjectItem(obj: Record<string, unknown>, key: string, ctx: ParseCtx): Value {
  const keys = Object.keys(obj).sort(compareKeys)
  if (keys.length === 0) bad('json object, value is empty')
  if (keys.length > 3) bad("json object, items size is more than 3, only support specified ['b64', 'type', 'shape']")
  let hasB64 = false
  for (const k of keys) {
    if (k === 'b64') hasB64 = true
    else if (k === 'type') {
      const t = obj[k]
      if (typeof t !== 'string') bad("json object, key is 'type', value should be string type")
      if (!B64_TYPES.has(t)) bad(`json object, specified type:'${t}' is illegal`)
    } else if (k === 'shape') checkShape(obj[k])
    else bad(`json object, key is not ['b64', 'type', 'shape'], fail key:${k}`)
  }
  if (!hasB64) bad("json object, 'b64' should be specified only one time")
  const type = objectItemType(obj)!
  const shape = Array.isArray(obj['shape']) ? obj['shape'].map((d) => (typeof d === 'bigint' ? Number(BigInt.asUintN(32, d)) : (d as number) >>> 0)) : []
  const count = shape.reduce((a, b) => a * b, 1)
  if ((type === 'string' || type === 'bytes') && count !== 1) {
    bad("json object, only support scalar when data type is string or bytes, please check 'type' or 'shape'")
  }
  const bytes = decodeB64(obj['b64'])
  if (type === 'string' || type === 'bytes') {
    if (shape.length > 1) ctx.shapeError ??= stringShapeError(key, shape)
    return type === 'bytes' ? bytes : utf8(bytes)
  }
  const size = DTYPES[type].bytes
  if (bytes.length !== count * size) {
    const nums = shape.reduce((a, b) => a * BigInt(b), 1n)
    bad(`size is not matched, decode base64 size:${bytes.length}; Given info: type:${TYPE_NAMES[type]}; type size:${size}; element nums:${nums}`)
  }
  return new Tensor(type, shape, new DTYPES[type].ctor(bytes.buffer, bytes.byteOffset, count))
}

function checkShape(shape: unknown): void {
  if (!Array.isArray(shape)) bad("json object, key is 'shape', value should be array type")
  let zeroBefore = false
  for (let i = 0; i < shape.length; i++) {
    if (zeroBefore) bad(`json object, key is 'shape', invalid shape value ${dumpJson(shape, false)}`)
    const d: unknown = shape[i]
    const unsigned = typeof d === 'bigint' ? d >= 0n : typeof d === 'number' && d >= 0 && !Object.is(d, -0) && !isFloatAt(shape, i, d)
    if (!unsigned) bad("json object, key is 'shape', array value should be unsigned integer")
    // The reference reads each dim as int32, so dims of 2^31 and above count as negative.
    const i32 = typeof d === 'bigint' ? Number(BigInt.asIntN(32, d)) : (d as number) | 0
    if (i32 < 0) bad(`json object, key is 'shape', number value should not be negative number, shape value: ${dumpJson(shape, false)}`)
    if (i32 === 0) zeroBefore = true
  }
}

/** `type` of a b64 object (bytes when absent), or undefined for an unknown/non-string type. */
function objectItemType(obj: Record<string, unknown>): ItemType | undefined {
  if (!Object.hasOwn(obj, 'type')) return 'bytes'
  const t = obj['type']
  return typeof t === 'string' ? B64_TYPES.get(t) : undefined
}

/** Standard padded base64 -> a fresh, exactly sized Uint8Array (never a slice of Buffer's pool). */
function decodeB64(b64: unknown): Uint8Array {
  if (typeof b64 !== 'string') bad('get scalar data failed, type is string, but json is not string type')
  if (b64.length % 4 !== 0) bad(`'${b64}' is illegal b64 encode string`)
  // Node's decoder skips characters outside the alphabet, so an invalid string decodes to fewer
  // bytes than its length implies; that check (plus the url-safe letters Node also accepts) is
  // much cheaper than a regex over large payloads.
  const pad = b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0
  const size = (b64.length / 4) * 3 - pad
  // Decoded straight into a buffer of its own (Buffer.from would use the shared pool, then a copy).
  const out = new Uint8Array(size)
  const written = Buffer.from(out.buffer, 0, size).write(b64, 'base64')
  if (written !== size || b64.includes('-') || b64.includes('_')) bad('decode base64 failed, size is not matched.')
  return out
}

function utf8(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')
}

function stringShapeError(key: string, shape: readonly number[]): string {
  return `Instances input ${key} check failed, detail: Instance tensor check failed: bytes or string type input `
    + ` shape can only be (1,) or empty, but given shape is [${shape.join(', ')}]`
}

/** Nested JSON array -> tensor; dtype from the first leaf, shape from the first element at each depth. */
function parseArrayItem(arr: unknown[], key: string, ctx: ParseCtx): Value {
  const shape: number[] = []
  let node: unknown = arr
  let parent: unknown[] = arr
  while (Array.isArray(node) && node.length > 0) {
    shape.push(node.length)
    parent = node
    node = node[0]
  }
  if (shape.length === 0) bad('json array, shape is empty')
  let kind = K_INT
  let type: ItemType | undefined
  if (typeof node === 'number') { kind = isFloatAt(parent, 0, node) ? K_FLOAT : K_INT; type = kind === K_FLOAT ? 'float32' : 'int32' }
  else if (typeof node === 'bigint') type = 'int32'
  else if (typeof node === 'boolean') { kind = K_BOOL; type = 'bool' }
  else if (typeof node === 'string') { kind = K_STR; type = 'string' }
  else if (isObject(node)) { kind = K_OBJ; type = objectItemType(node) }
  if (type === undefined) bad('json array, data type is unknown')
  const count = shape.reduce((a, b) => a * b, 1)
  const isTensor = type !== 'string' && type !== 'bytes'
  if (!isTensor && count !== 1) bad('json array, string or bytes type only support one item')
  if (kind === K_OBJ && isTensor) bad('json array, item is object type, object only support string or bytes type')

  const sub = shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1))
  if (!isTensor) {
    const holder: Value[] = []
    fillArray(arr, 0, shape, sub, kind, type, holder, 0)
    if (shape.length !== 1) ctx.shapeError ??= stringShapeError(key, shape)
    return holder[0]!
  }
  const dtype = type as NumericDType
  if (count > MAX_DIRECT_ELEMENTS) {
    fillArray(arr, 0, shape, sub, kind, type, null, 0) // throws on the ragged part
    bad(`json array, element count ${count} is too large`)
  }
  const data = new DTYPES[dtype].ctor(count)
  fillArray(arr, 0, shape, sub, kind, type, data, 0)
  return new Tensor(dtype, shape, data)
}

type Sink = TypedArray | Value[] | null

function fillArray(node: unknown, depth: number, shape: number[], sub: number[], kind: number, type: ItemType, out: Sink, offset: number): void {
  if (!Array.isArray(node)) bad('invalid json array: json type is not array')
  if (node.length !== shape[depth]) bad(`invalid json array: json size is ${node.length}, the dim ${depth} expected to be ${shape[depth]}`)
  if (depth + 1 < shape.length) {
    const step = sub[depth]!
    for (let k = 0; k < node.length; k++) fillArray(node[k], depth + 1, shape, sub, kind, type, out, offset + step * k)
    return
  }
  if (kind === K_FLOAT) fillFloats(node, out as Float32Array | null, offset)
  else if (kind === K_INT) fillInts(node, out as Int32Array | null, offset)
  else if (kind === K_BOOL) {
    for (let k = 0; k < node.length; k++) {
      const v: unknown = node[k]
      if (typeof v !== 'boolean') leafMismatch(v)
      if (out !== null) (out as Uint8Array)[offset + k] = v ? 1 : 0
    }
  } else if (kind === K_STR) {
    for (const v of node as unknown[]) {
      if (typeof v !== 'string') leafMismatch(v)
      ;(out as Value[]).push(v)
    }
  } else {
    for (const v of node as unknown[]) {
      const t = isObject(v) ? objectItemType(v) : undefined
      if (t !== 'string' && t !== 'bytes') bad('json array, object type only support string or bytes type')
      if (t !== type) bad(NOT_EQUAL)
      const bytes = decodeB64((v as Record<string, unknown>)['b64'])
      ;(out as Value[]).push(t === 'bytes' ? bytes : utf8(bytes))
    }
  }
}

function fillFloats(row: unknown[], out: Float32Array | null, offset: number): void {
  const mark = (row as unknown as Record<symbol, FloatMark>)[JSON_FLOAT_KINDS]
  for (let k = 0; k < row.length; k++) {
    const v: unknown = row[k]
    if (typeof v !== 'number') leafMismatch(v)
    if (mark !== true && Number.isInteger(v) && !(mark !== undefined && (mark as number[])[k] === 1)) bad(NOT_EQUAL)
    // Stored as float32: a larger magnitude would become Infinity and come back as null.
    if (v >= F32_OVERFLOW || v <= -F32_OVERFLOW) outOfFloat32(v)
    if (out !== null) out[offset + k] = v
  }
}

function fillInts(row: unknown[], out: Int32Array | null, offset: number): void {
  const hasFloats = (row as unknown as Record<symbol, FloatMark>)[JSON_FLOAT_KINDS] !== undefined
  for (let k = 0; k < row.length; k++) {
    const v: unknown = row[k]
    let x: number
    if (typeof v === 'number') {
      if (!Number.isInteger(v) || (hasFloats && isFloatAt(row, k, v))) bad(NOT_EQUAL)
      x = v
    } else if (typeof v === 'bigint') x = Number(BigInt.asIntN(32, v))
    else leafMismatch(v)
    if (out !== null) out[offset + k] = x // Int32Array stores truncate modulo 2^32, like the reference's cast
  }
}

function leafMismatch(v: unknown): never {
  const t = typeof v
  return bad(t === 'number' || t === 'bigint' || t === 'boolean' || t === 'string' ? NOT_EQUAL : NOT_SCALAR)
}

/** nlohmann dump() of a parsed value (compact, sorted keys), for error texts that echo input. */
function dumpJson(v: unknown, isFloat: boolean): string {
  if (typeof v === 'number') return isFloat ? formatDouble(v) : String(v)
  if (typeof v === 'bigint' || typeof v === 'boolean') return String(v)
  if (typeof v === 'string') return JSON.stringify(v)
  if (v === null || v === undefined) return 'null'
  if (Array.isArray(v)) return `[${v.map((x, i) => dumpJson(x, typeof x === 'number' && isFloatAt(v, i, x))).join(',')}]`
  const o = v as Record<string, unknown>
  const keys = Object.keys(o).sort(compareKeys)
  return `{${keys.map((k) => `${JSON.stringify(k)}:${dumpJson(o[k], typeof o[k] === 'number' && isFloatAt(o, k, o[k] as number))}`).join(',')}}`
}

