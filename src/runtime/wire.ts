/**
 * Values crossing the parent <-> replica boundary. IPC uses structured clone, which keeps typed
 * arrays and strings but drops classes, so Tensors travel as plain records and are rebuilt.
 * A typed-array view is cloned with its whole ArrayBuffer: senders pass compact arrays only.
 */
import { Tensor, type NumericDType, type TypedArray, type Value } from '../tensor.ts'
import { toServeError, type SerializedError } from '../errors.ts'

/** A Tensor itself only on the inline path (no boundary to cross, nothing is copied). */
export type WireValue = string | Uint8Array | Tensor | { t: NumericDType; s: number[]; d: TypedArray }
export type WireInstance = Record<string, WireValue>
export type WireResult = { o: WireInstance } | { e: SerializedError }

export function toWire(v: Value): WireValue {
  if (v instanceof Tensor) {
    const d = v.data
    const compact = d.byteOffset === 0 && d.byteLength === d.buffer.byteLength ? d : d.slice()
    return { t: v.dtype, s: v.shape as number[], d: compact }
  }
  if (typeof v === 'string') return v
  // Buffers from a pool share a large ArrayBuffer; copy so only our bytes travel.
  return v.byteOffset === 0 && v.byteLength === v.buffer.byteLength ? v : new Uint8Array(v)
}

export function fromWire(w: WireValue): Value {
  if (typeof w === 'string' || w instanceof Uint8Array || w instanceof Tensor) return w
  return new Tensor(w.t, w.s, w.d)
}

export function instanceToWire(inst: Record<string, Value>): WireInstance {
  const out: WireInstance = {}
  for (const k in inst) out[k] = toWire(inst[k]!)
  return out
}

/** The inline path: values stay as they are (same thread, no clone). */
export function instanceAsIs(inst: Record<string, Value>): WireInstance {
  return inst
}

export function instanceFromWire(inst: WireInstance): Record<string, Value> {
  const out: Record<string, Value> = {}
  for (const k in inst) out[k] = fromWire(inst[k]!)
  return out
}

export function errorToWire(e: unknown): { e: SerializedError } {
  const se = toServeError(e)
  return { e: { code: se.code, message: se.message } }
}
