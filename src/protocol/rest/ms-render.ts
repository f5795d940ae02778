/** MindSpore REST bodies, part 3: results -> `{"instances":[...]}` / `{"error_msg":"..."}`. */
import { msText } from '../texts.ts'
import { Buffer } from 'node:buffer'
import { Tensor, f16BitsToF32, type Value } from '../../tensor.ts'
import type { PredictOutcome } from '../../runtime/predict-outcome.ts'
import { compareKeys } from './ms-json-reader.ts'

// ---------------------------------------------------------------------------------------------
// Reply: results -> {"instances":[...]} / {"error_msg":"..."}
// ---------------------------------------------------------------------------------------------

class ReplyError extends Error {}

/** `{"error_msg":"<message>"}`, the whole-request error body. */
export function renderError(message: string): string {
  return `{"error_msg":${JSON.stringify(message)}}`
}

/**
 * Renders a predict's outcome as the reference's compact, key-sorted JSON: a whole-request error as
 * renderError(message), else `{"instances":[...]}` with per-instance `{"error_msg":...}` objects for
 * failed ones. Identical failures arrive already collapsed (runtime/predict-outcome.ts
 * collapseOutcomes); they are not merged here. An unrenderable value yields `Failed to construct the response: ...`.
 */
export function renderReply(outcome: PredictOutcome<{ message: string; details?: unknown }>): string {
  if ('error' in outcome) return renderError(msText(outcome.error))
  const results = outcome.instances
  try {
    const parts = new Array<string>(results.length)
    for (let i = 0; i < results.length; i++) {
      const r = results[i]!
      parts[i] = 'error' in r ? renderError(msText(r.error)) : renderOutputs(r.outputs)
    }
    return `{"instances":[${parts.join(',')}]}`
  } catch (e) {
    if (e instanceof ReplyError) return renderError(`Failed to construct the response: ${e.message}`)
    throw e
  }
}

function renderOutputs(outputs: Record<string, Value>): string {
  const keys = Object.keys(outputs).sort(compareKeys)
  if (keys.length === 0) throw new ReplyError('reply instance items is empty')
  const parts = new Array<string>(keys.length)
  for (let i = 0; i < keys.length; i++) parts[i] = `${JSON.stringify(keys[i])}:${renderValue(outputs[keys[i]!]!)}`
  return `{${parts.join(',')}}`
}

/** Renders one output value: tensors as (nested) numbers, strings as JSON strings, bytes as {"b64":...}. */
export function renderValue(v: Value): string {
  if (v instanceof Tensor) return renderTensor(v)
  if (typeof v === 'string') return JSON.stringify(v)
  if (v instanceof Uint8Array) return `{"b64":"${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64')}"}`
  throw new ReplyError('reply data type is unknown')
}

function renderTensor(t: Tensor): string {
  const shape = t.shape
  let n = 1
  for (const d of shape) n *= d
  if (t.data.length < n) throw new ReplyError(`reply tensor data size ${t.data.length} is less than the ${n} elements of shape [${shape.join(',')}]`)
  if (shape.length === 0) return renderScalar(t)
  // Any zero dim: nested empty arrays down to it (the reference prints null for a zero non-last dim).
  if (n === 0) return renderEmpty(shape, 0)
  const w = shape[shape.length - 1]!
  let level = new Array<string>(n / w)
  for (let r = 0; r < level.length; r++) level[r] = renderRow(t, r * w, w)
  for (let d = shape.length - 2; d >= 0; d--) {
    const g = shape[d]!
    const next = new Array<string>(level.length / g)
    for (let j = 0; j < next.length; j++) next[j] = `[${level.slice(j * g, j * g + g).join(',')}]`
    level = next
  }
  return level[0]!
}

function renderEmpty(shape: readonly number[], d: number): string {
  if (shape[d] === 0) return '[]'
  const inner = renderEmpty(shape, d + 1)
  return `[${new Array<string>(shape[d]!).fill(inner).join(',')}]`
}

function renderScalar(t: Tensor): string {
  const v = t.data[0]!
  if (t.dtype === 'float16') return formatDouble(f16BitsToF32(v as number))
  if (t.dtype === 'float32' || t.dtype === 'float64') return formatDouble(v as number)
  if (t.dtype === 'bool') return v ? 'true' : 'false'
  return String(v)
}

/** `count` elements from `offset` as one bracketed JSON array. */
function renderRow(t: Tensor, offset: number, count: number): string {
  const data = t.data
  switch (t.dtype) {
    case 'float32':
    case 'float64':
    case 'float16':
      return renderFloatRow(data as Float32Array | Uint16Array, t.dtype === 'float16', offset, count)
    case 'bool': {
      const b = data as Uint8Array
      const parts = new Array<string>(count)
      for (let k = 0; k < count; k++) parts[k] = b[offset + k] ? 'true' : 'false'
      return `[${parts.join(',')}]`
    }
    default:
      // Integer typed arrays (incl. BigInt64/BigUint64) join natively to exact decimal text.
      return `[${(data as Int32Array).subarray(offset, offset + count).join(',')}]`
  }
}

const INTEGRAL_TOKEN_RE = /(?<=[[,])(-?\d+)(?=[,\]])/g

/**
 * Native JSON.stringify already prints shortest round-trip digits and `null` for NaN/Infinity,
 * like nlohmann; only integral values (`11` -> `11.0`) differ inside 1e-4 <= |x| < 1e15. Rows
 * with -0 or values outside that range take the per-element formatDouble path.
 */
function renderFloatRow(data: Float32Array | Uint16Array, half: boolean, offset: number, count: number): string {
  const values = new Array<number>(count)
  let integral = false
  let special = false
  for (let k = 0; k < count; k++) {
    const v = half ? f16BitsToF32(data[offset + k]!) : data[offset + k]!
    values[k] = v
    const a = v < 0 ? -v : v
    if (a >= 1e-4 && a < 1e15) { if (Number.isInteger(v)) integral = true }
    else if (v === 0) { if (1 / v < 0) special = true; else integral = true }
    else if (v === v && a !== Infinity) special = true
  }
  if (special) return `[${values.map(formatDouble).join(',')}]`
  const text = JSON.stringify(values)
  return integral ? text.replace(INTEGRAL_TOKEN_RE, '$1.0') : text
}

/**
 * nlohmann's number_float text: shortest round-trip digits; fixed notation for 1e-4 <= |x| < 1e15
 * with integral values as `11.0`; otherwise `d.ddde+XX` (two-digit minimum exponent); `-0.0`.
 * NaN and ±Infinity are not JSON: nlohmann dumps them as `null`, and so do we.
 */
export function formatDouble(x: number): string {
  const a = x < 0 ? -x : x
  if (a >= 1e-4 && a < 1e15) {
    const s = '' + x
    return Number.isInteger(x) ? s + '.0' : s
  }
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0'
  if (a !== a || a === Infinity) return 'null'
  const s = x.toExponential()
  const e = s.indexOf('e')
  const digits = s.slice(e + 2)
  return `${s.slice(0, e + 2)}${digits.length < 2 ? '0' : ''}${digits}`
}
