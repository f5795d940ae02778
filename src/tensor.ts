/**
 * Values that flow through servables: numeric tensors (dtype + shape + typed array),
 * strings (MindSpore MS_STRING) and byte buffers (MS_BYTES).
 */

export const NUMERIC_DTYPES = [
  'bool', 'int8', 'uint8', 'int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64', 'float16', 'float32', 'float64',
] as const
export type NumericDType = (typeof NUMERIC_DTYPES)[number]
export type DType = NumericDType | 'string' | 'bytes'

export type TypedArray =
  | Uint8Array | Int8Array | Int16Array | Uint16Array | Int32Array | Uint32Array
  | BigInt64Array | BigUint64Array | Float32Array | Float64Array

interface DTypeInfo { bytes: number; ctor: { new (n: number): TypedArray; new (buf: ArrayBufferLike, off: number, len: number): TypedArray }; ms: number; ort: string; msName: string }

/** Element size, typed-array constructor, MindSpore DataType number, ORT type name, MindSpore kMSI_ name. */
export const DTYPES: Record<NumericDType, DTypeInfo> = {
  bool: { bytes: 1, ctor: Uint8Array, ms: 1, ort: 'bool', msName: 'kMSI_Bool' },
  int8: { bytes: 1, ctor: Int8Array, ms: 2, ort: 'int8', msName: 'kMSI_Int8' },
  uint8: { bytes: 1, ctor: Uint8Array, ms: 3, ort: 'uint8', msName: 'kMSI_Uint8' },
  int16: { bytes: 2, ctor: Int16Array, ms: 4, ort: 'int16', msName: 'kMSI_Int16' },
  uint16: { bytes: 2, ctor: Uint16Array, ms: 5, ort: 'uint16', msName: 'kMSI_Uint16' },
  int32: { bytes: 4, ctor: Int32Array, ms: 6, ort: 'int32', msName: 'kMSI_Int32' },
  uint32: { bytes: 4, ctor: Uint32Array, ms: 7, ort: 'uint32', msName: 'kMSI_Uint32' },
  int64: { bytes: 8, ctor: BigInt64Array, ms: 8, ort: 'int64', msName: 'kMSI_Int64' },
  uint64: { bytes: 8, ctor: BigUint64Array, ms: 9, ort: 'uint64', msName: 'kMSI_Uint64' },
  // float16 data is kept as raw IEEE binary16 bits (Node 20 has no Float16Array).
  float16: { bytes: 2, ctor: Uint16Array, ms: 10, ort: 'float16', msName: 'kMSI_Float16' },
  float32: { bytes: 4, ctor: Float32Array, ms: 11, ort: 'float32', msName: 'kMSI_Float32' },
  float64: { bytes: 8, ctor: Float64Array, ms: 12, ort: 'float64', msName: 'kMSI_Float64' },
}

/** MindSpore DataType enum value -> dtype (13 string, 14 bytes). */
export const MS_DTYPE_BY_NUMBER: Record<number, DType> = Object.fromEntries([
  ...Object.entries(DTYPES).map(([k, v]) => [v.ms, k]),
  [13, 'string'],
  [14, 'bytes'],
])
export const MS_NUMBER_BY_DTYPE: Record<DType, number> = { ...Object.fromEntries(Object.entries(DTYPES).map(([k, v]) => [k, v.ms])), string: 13, bytes: 14 } as Record<DType, number>

/** A dense, row-major numeric tensor. */
export class Tensor {
  readonly dtype: NumericDType
  readonly shape: readonly number[]
  readonly data: TypedArray
  constructor(dtype: NumericDType, shape: readonly number[], data: TypedArray) {
    this.dtype = dtype
    this.shape = shape
    this.data = data
  }
  get size(): number { return shapeSize(this.shape) }
  get byteLength(): number { return this.data.byteLength }
  /** Bytes view of the data (no copy). */
  bytes(): Uint8Array { return new Uint8Array(this.data.buffer, this.data.byteOffset, this.data.byteLength) }
  /** Plain JS numbers (bigints for 64-bit ints). */
  toArray(): (number | bigint)[] { return Array.from(this.data as ArrayLike<number | bigint>) }
}

/** Anything a stage takes or returns. Bytes are Buffers / Uint8Arrays; strings are JS strings. */
export type Value = Tensor | string | Uint8Array

export function shapeSize(shape: readonly number[]): number {
  let n = 1
  for (const d of shape) n *= d
  return n
}

export function isTensor(v: unknown): v is Tensor {
  return v instanceof Tensor
}

/** Builds a tensor from a typed array or plain numbers, checking the element count. */
export function tensor(dtype: NumericDType, shape: readonly number[], data: TypedArray | ArrayLike<number> | ArrayLike<bigint>): Tensor {
  const info = DTYPES[dtype]
  const n = shapeSize(shape)
  let arr: TypedArray
  if (ArrayBuffer.isView(data) && (data as TypedArray).constructor === info.ctor) arr = data as TypedArray
  else {
    arr = new info.ctor(n)
    const src = data as ArrayLike<number | bigint>
    if (dtype === 'int64' || dtype === 'uint64') for (let i = 0; i < src.length; i++) (arr as BigInt64Array)[i] = BigInt(src[i] as number)
    else for (let i = 0; i < src.length; i++) (arr as Float32Array)[i] = Number(src[i])
    if (src.length !== n) throw new Error(`tensor(): ${src.length} values given for shape [${shape.join(',')}] (${n} elements)`)
  }
  if (arr.length !== n) throw new Error(`tensor(): ${arr.length} values given for shape [${shape.join(',')}] (${n} elements)`)
  return new Tensor(dtype, [...shape], arr)
}

/** Wraps raw little-endian bytes as a tensor, copying when the bytes are not aligned for the dtype. */
export function tensorFromBytes(dtype: NumericDType, shape: readonly number[], bytes: Uint8Array): Tensor {
  const info = DTYPES[dtype]
  const n = bytes.byteLength / info.bytes
  if (bytes.byteOffset % info.bytes === 0) return new Tensor(dtype, shape, new info.ctor(bytes.buffer, bytes.byteOffset, n))
  const copy = new Uint8Array(bytes.byteLength)
  copy.set(bytes)
  return new Tensor(dtype, shape, new info.ctor(copy.buffer, 0, n))
}

/** Converts a tensor to another numeric dtype (a copy; float16 goes through float32). */
export function castTensor(t: Tensor, dtype: NumericDType): Tensor {
  if (t.dtype === dtype) return t
  const out = new DTYPES[dtype].ctor(t.data.length)
  const src = t.dtype === 'float16' ? f16ToF32(t.data as Uint16Array) : t.data
  const big = dtype === 'int64' || dtype === 'uint64'
  const toF16 = dtype === 'float16'
  for (let i = 0; i < src.length; i++) {
    const v = src[i] as number | bigint
    if (big) (out as BigInt64Array)[i] = typeof v === 'bigint' ? v : BigInt(Math.trunc(v))
    else if (toF16) (out as Uint16Array)[i] = f32ToF16Bits(Number(v))
    else if (dtype === 'bool') (out as Uint8Array)[i] = Number(v) !== 0 ? 1 : 0
    else (out as Float32Array)[i] = Number(v)
  }
  return new Tensor(dtype, t.shape, out)
}

const f32buf = new Float32Array(1)
const u32buf = new Uint32Array(f32buf.buffer)

export function f16BitsToF32(h: number): number {
  const s = (h & 0x8000) >> 15
  const e = (h & 0x7c00) >> 10
  const f = h & 0x03ff
  let v: number
  if (e === 0) v = f * 2 ** -24
  else if (e === 31) v = f ? NaN : Infinity
  else v = (1 + f / 1024) * 2 ** (e - 15)
  return s ? -v : v
}

export function f32ToF16Bits(x: number): number {
  f32buf[0] = x
  const b = u32buf[0]!
  const sign = (b >>> 16) & 0x8000
  const exp = (b >>> 23) & 0xff
  let mant = b & 0x7fffff
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0)
  let e = exp - 127 + 15
  if (e >= 31) return sign | 0x7c00
  if (e <= 0) {
    if (e < -10) return sign
    mant |= 0x800000
    const shift = 14 - e
    let half = mant >> shift
    if ((mant >> (shift - 1)) & 1) half += 1
    return sign | half
  }
  let half = sign | (e << 10) | (mant >> 13)
  if (mant & 0x1000) half += 1
  return half
}

export function f16ToF32(a: Uint16Array): Float32Array {
  const out = new Float32Array(a.length)
  for (let i = 0; i < a.length; i++) out[i] = f16BitsToF32(a[i]!)
  return out
}

/** Describes a value for error messages: `float32[2,2]`, `string`, `bytes(12)`. */
export function describeValue(v: Value): string {
  if (typeof v === 'string') return 'string'
  if (v instanceof Tensor) return `${v.dtype}[${v.shape.join(',')}]`
  return `bytes(${v.byteLength})`
}
