/**
 * Open Inference Protocol tensors (model-servers.md §2.2-2.4) <-> ms-serve values. A decoded OIP
 * tensor covers the whole request (all instances): a numeric Tensor, or for BYTES one Value per
 * element (a JS string from JSON, bytes from the binary forms). Every decoder checks the element
 * count against the shape and names the tensor, the datatype and the limit on a mismatch.
 */
import { ServeError } from '../../errors.ts'
import { DTYPES, f16BitsToF32, f32ToF16Bits, shapeSize, Tensor, type DType, type NumericDType, type TypedArray, type Value } from '../../tensor.ts'

export const OIP_DATATYPES: Readonly<Record<string, NumericDType | 'bytes'>> = {
  BOOL: 'bool', UINT8: 'uint8', UINT16: 'uint16', UINT32: 'uint32', UINT64: 'uint64',
  INT8: 'int8', INT16: 'int16', INT32: 'int32', INT64: 'int64', FP16: 'float16', FP32: 'float32', FP64: 'float64', BYTES: 'bytes',
}

const BY_DTYPE: Readonly<Record<string, string>> = Object.fromEntries(Object.entries(OIP_DATATYPES).map(([k, v]) => [v, k]))

/** Our dtype -> the OIP datatype string (strings and bytes are both BYTES). */
export function oipDatatype(d: DType): string {
  return d === 'string' ? 'BYTES' : BY_DTYPE[d]!
}

/** One tensor of a request or response, whole batch. */
export interface OipTensor {
  name: string
  datatype: string
  shape: number[]
  /** Numeric: one Tensor of `shape`; BYTES: one value per element, row-major. */
  value: Tensor | Value[]
}

const bad = (msg: string) => new ServeError('INVALID_REQUEST', msg)

/** The numeric dtype of `datatype`, or null for BYTES; a 400 naming the known ones otherwise. */
export function dtypeOfDatatype(name: string, datatype: unknown): NumericDType | null {
  if (typeof datatype !== 'string') throw bad(`input ${name}: "datatype" must be a string such as "FP32" (got ${JSON.stringify(datatype)})`)
  const d = OIP_DATATYPES[datatype]
  if (d === undefined) {
    const hint = datatype === 'BF16' ? ' (BF16 is not supported: send FP32 or FP16)' : ''
    throw bad(`input ${name}: unknown datatype "${datatype}"${hint}; one of ${Object.keys(OIP_DATATYPES).join(', ')}`)
  }
  return d === 'bytes' ? null : d
}

/** A shape: non-negative integers. */
export function checkShape(name: string, shape: unknown): number[] {
  if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(Number(d)) || Number(d) < 0)) {
    throw bad(`input ${name}: "shape" must be a list of non-negative integers (got ${JSON.stringify(shape)})`)
  }
  return shape.map(Number)
}

/** Flattens JSON `data` (flat or nested, row-major) into `out`; returns the count or -1 past `limit`. */
function flatten(data: unknown, out: unknown[], limit: number): number {
  if (!Array.isArray(data)) { out.push(data); return out.length }
  for (const x of data) {
    if (Array.isArray(x)) { if (flatten(x, out, limit) < 0) return -1 } else out.push(x)
    if (out.length > limit) return -1
  }
  return out.length
}

/** A tensor from the JSON form: `data` nested or flat, element count equal to the shape's. */
export function tensorFromJson(name: string, datatype: unknown, shapeIn: unknown, data: unknown): OipTensor {
  const dtype = dtypeOfDatatype(name, datatype)
  const shape = checkShape(name, shapeIn)
  const n = shapeSize(shape)
  if (data === undefined) throw bad(`input ${name}: no "data" (and no parameters.binary_data_size for a binary body)`)
  const flat: unknown[] = []
  const count = flatten(data, flat, n)
  if (count !== n) throw bad(`input ${name}: shape [${shape.join(',')}] needs ${n} elements, "data" has ${count < 0 ? 'more' : count}`)
  if (dtype === null) {
    for (let i = 0; i < n; i++) if (typeof flat[i] !== 'string') throw bad(`input ${name}: BYTES elements must be strings in JSON (element ${i} is ${JSON.stringify(flat[i])}); send bytes with the binary extension`)
    return { name, datatype: 'BYTES', shape, value: flat as string[] }
  }
  const info = DTYPES[dtype]
  const arr = new info.ctor(n)
  const big = dtype === 'int64' || dtype === 'uint64'
  const isInt = dtype !== 'float16' && dtype !== 'float32' && dtype !== 'float64' && dtype !== 'bool'
  for (let i = 0; i < n; i++) {
    const v = flat[i]
    if (dtype === 'bool') {
      if (typeof v !== 'boolean' && v !== 0 && v !== 1) throw bad(`input ${name}: BOOL elements must be true/false (element ${i} is ${JSON.stringify(v)})`)
      arr[i] = v === true || v === 1 ? 1 : 0
      continue
    }
    if (typeof v !== 'number' || (isInt && !Number.isInteger(v))) throw bad(`input ${name}: ${datatype} element ${i} must be ${isInt ? 'an integer' : 'a number'} (got ${JSON.stringify(v)})`)
    if (big) (arr as BigInt64Array)[i] = BigInt(v)
    else if (dtype === 'float16') (arr as Uint16Array)[i] = f32ToF16Bits(v)
    else arr[i] = v
  }
  return { name, datatype: datatype as string, shape, value: new Tensor(dtype, shape, arr) }
}

/**
 * BYTES elements that arrived as bytes reach the servable as bytes (Uint8Array), or as strings when
 * the input's `parameters.content_type` is "str" (MLServer's string codec says so the same way).
 */
export function bytesAs(name: string, values: Uint8Array[], contentType: unknown): Value[] {
  if (contentType === undefined || contentType === 'bytes' || contentType === 'base64') return values
  if (contentType !== 'str') throw bad(`input ${name}: parameters.content_type must be "str" (elements are UTF-8 text) or "bytes" (got ${JSON.stringify(contentType)})`)
  return values.map((v, i) => {
    try { return strictUtf8.decode(v) } catch { throw bad(`input ${name}: content_type "str" but element ${i} is not valid UTF-8`) }
  })
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true })

/** A tensor from raw little-endian bytes (binary extension, gRPC raw_input_contents); see bytesAs for BYTES. */
export function tensorFromRaw(name: string, datatype: unknown, shapeIn: unknown, raw: Uint8Array, contentType?: unknown): OipTensor {
  const dtype = dtypeOfDatatype(name, datatype)
  const shape = checkShape(name, shapeIn)
  const n = shapeSize(shape)
  if (dtype === null) return { name, datatype: 'BYTES', shape, value: bytesAs(name, readBytesElements(name, raw, n), contentType) }
  const size = DTYPES[dtype].bytes
  if (raw.byteLength !== n * size) throw bad(`input ${name}: shape [${shape.join(',')}] of ${datatype} needs ${n * size} bytes, got ${raw.byteLength}`)
  const info = DTYPES[dtype]
  // Aligned views share the body's memory; an unaligned slice (the JSON header's length decides) is copied.
  const data = raw.byteOffset % size === 0
    ? new info.ctor(raw.buffer, raw.byteOffset, n)
    : new info.ctor(new Uint8Array(raw).buffer, 0, n)
  return { name, datatype: datatype as string, shape, value: new Tensor(dtype, shape, data) }
}

/** BYTES in binary form: each element is a 4-byte little-endian length and the bytes. */
export function readBytesElements(name: string, raw: Uint8Array, n: number): Uint8Array[] {
  const out: Uint8Array[] = []
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength)
  let at = 0
  for (let i = 0; i < n; i++) {
    if (at + 4 > raw.byteLength) throw bad(`input ${name}: BYTES data ends inside element ${i} of ${n} (each element is a 4-byte little-endian length, then the bytes)`)
    const len = view.getUint32(at, true)
    at += 4
    if (at + len > raw.byteLength) throw bad(`input ${name}: BYTES element ${i} says ${len} bytes, only ${raw.byteLength - at} remain`)
    out.push(raw.subarray(at, at + len))
    at += len
  }
  if (at !== raw.byteLength) throw bad(`input ${name}: ${raw.byteLength - at} bytes left after the ${n} BYTES elements of its shape`)
  return out
}

const utf8 = new TextEncoder()
const fromUtf8 = new TextDecoder()

/** BYTES elements in binary form. */
export function writeBytesElements(values: readonly Value[]): Buffer {
  const parts = values.map((v) => (typeof v === 'string' ? utf8.encode(v) : (v as Uint8Array)))
  const out = Buffer.allocUnsafe(parts.reduce((s, p) => s + 4 + p.byteLength, 0))
  let at = 0
  for (const p of parts) {
    out.writeUInt32LE(p.byteLength, at)
    out.set(p, at + 4)
    at += 4 + p.byteLength
  }
  return out
}

/** The tensor's raw little-endian bytes (no copy for numeric tensors). */
export function rawOf(t: OipTensor): Uint8Array {
  return t.value instanceof Tensor ? t.value.bytes() : writeBytesElements(t.value)
}

/** JSON `data`, flat: numbers (int64 as Numbers; FP16 as its float value), booleans, strings. */
export function jsonDataOf(t: OipTensor): unknown[] {
  if (!(t.value instanceof Tensor)) return t.value.map((v) => (typeof v === 'string' ? v : fromUtf8.decode(v as Uint8Array)))
  const v = t.value
  if (v.dtype === 'bool') return Array.from(v.data as Uint8Array, (x) => x !== 0)
  if (v.dtype === 'float16') return Array.from(v.data as Uint16Array, f16BitsToF32)
  if (v.dtype === 'int64' || v.dtype === 'uint64') return Array.from(v.data as BigInt64Array, Number)
  return Array.from(v.data as Exclude<TypedArray, BigInt64Array | BigUint64Array>)
}
