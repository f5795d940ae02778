/**
 * Converts between MindSpore Serving wire objects (as @grpc/proto-loader decodes them with
 * MS_PROTO_LOADER_OPTIONS: longs as Number, enums as numbers, bytes as Buffer) and ms-serve values.
 *
 * Why longs as Number: the only 64-bit fields are dims, version_number and error_code. A dim or a
 * version beyond 2^53 can never be valid (the data-size check fails, no such version runs), so
 * Number loses nothing that matters and avoids a string allocation + parse per dim on the hot path.
 */
import { msText } from '../texts.ts'
import { ERROR_CODES, MS_STATUS, ServeError } from '../../errors.ts'
import {
  DTYPES, MS_DTYPE_BY_NUMBER, MS_NUMBER_BY_DTYPE, Tensor, tensorFromBytes, type NumericDType, type Value,
} from '../../tensor.ts'
import type { InstanceOutcome, PredictOutcome } from '../../runtime/predict-outcome.ts'

// ---- wire shapes (what proto-loader hands us / accepts) ----

type Long = number | string
export interface WireServableSpec { name?: string; method_name?: string; version_number?: Long }
export interface WireTensorShape { dims?: Long[] }
export interface WireTensor {
  shape?: WireTensorShape | null
  dtype?: number
  data?: Uint8Array
  shm_data?: unknown
  bytes_val?: Uint8Array[]
  tensor_data?: string
}
export interface WireInstance { items?: Record<string, WireTensor>; output_buffers?: Record<string, unknown> }
export interface WirePredictRequest { servable_spec?: WireServableSpec | null; instances?: WireInstance[] }
export interface WireErrorMsg { error_code?: Long; error_msg?: Uint8Array }
export interface WirePredictReply { servable_spec?: WireServableSpec | null; instances?: WireInstance[]; error_msg?: WireErrorMsg[] }

// ---- errors in the PredictOutcome handed to encodeReply / returned by decodeReply ----

/** A ServeError or anything shaped like one; msStatus wins over the status derived from code. */
export interface MsErrorLike { code?: string; message: string; msStatus?: number }
/** An error as a PredictReply carries it: MindSpore status and text (what decodeReply reads). */
export interface MsReplyError { msStatus: number; message: string }

const MS_STRING = MS_NUMBER_BY_DTYPE.string
const MS_BYTES = MS_NUMBER_BY_DTYPE.bytes
const EMPTY = Buffer.alloc(0)

/** Shape text as MindSpore prints a vector: `[2, 3]`. */
const shapeText = (dims: readonly number[]): string => `[${dims.join(', ')}]`

function dimsOf(t: WireTensor): number[] {
  const dims = t.shape?.dims
  if (!dims || dims.length === 0) return []
  const out = new Array<number>(dims.length)
  for (let i = 0; i < dims.length; i++) out[i] = Number(dims[i])
  return out
}

/** Same checks (and texts) as MindSpore's request tensor check; returns the detail text or undefined. */
export function checkRequestTensor(t: WireTensor, dims: readonly number[] = dimsOf(t)): string | undefined {
  const dtype = t.dtype ?? 0
  if (dtype === MS_STRING || dtype === MS_BYTES) {
    if ((t.bytes_val?.length ?? 0) !== 1) return 'Instance tensor check failed: bytes or string type shape batch size can only be 1'
    if (dims.length > 1 || (dims.length === 1 && dims[0] !== 1)) {
      // Two spaces before "shape" as in MindSpore Serving.
      return `Instance tensor check failed: bytes or string type input  shape can only be (1,) or empty, but given shape is ${shapeText(dims)}`
    }
    return undefined
  }
  let zero = false
  for (const d of dims) {
    if (d < 0 || zero) return `Tensor check failed: input  shape ${shapeText(dims)} invalid`
    if (d === 0) zero = true
  }
  const name = MS_DTYPE_BY_NUMBER[dtype]
  if (name === undefined || name === 'string' || name === 'bytes') return 'Tensor check failed: input data type proto::MS_UNKNOWN invalid'
  if (t.shm_data != null || t.tensor_data === 'shm_data') return 'Tensor check failed: input shared memory data is not supported'
  let n = 1
  for (const d of dims) n *= d
  const size = t.data?.byteLength ?? 0
  if (n * DTYPES[name].bytes !== size) return `Tensor check failed: input data size ${size} invalid`
  return undefined
}

/** Wire tensor -> Value; numeric data is wrapped in place when aligned. Assumes the tensor passed its check. */
function wireToValue(t: WireTensor, dims: readonly number[]): Value {
  const dtype = t.dtype ?? 0
  if (dtype === MS_STRING) return bufferOf(t.bytes_val![0]!).toString('utf8')
  if (dtype === MS_BYTES) return t.bytes_val![0]!
  return tensorFromBytes(MS_DTYPE_BY_NUMBER[dtype] as NumericDType, dims, t.data ?? EMPTY)
}

/** Decodes and validates every instance of a request; throws ServeError INVALID_REQUEST (MS status 2). */
export function decodeInstances(req: WirePredictRequest): Record<string, Value>[] {
  const instances = req.instances ?? []
  const out = new Array<Record<string, Value>>(instances.length)
  for (let i = 0; i < instances.length; i++) {
    const items = instances[i]!.items ?? {}
    const inst: Record<string, Value> = {}
    for (const name of Object.keys(items)) {
      const t = items[name]!
      const dims = dimsOf(t)
      const detail = checkRequestTensor(t, dims)
      if (detail !== undefined) throw new ServeError('INVALID_REQUEST', `Instances input ${name} check failed, detail: ${detail}`)
      inst[name] = wireToValue(t, dims)
    }
    out[i] = inst
  }
  return out
}

/** Servable spec with proto3 defaults dropped (protobufjs would otherwise emit explicit zeros). */
export function wireSpec(spec: WireServableSpec | null | undefined): WireServableSpec {
  const out: WireServableSpec = {}
  if (spec?.name) out.name = spec.name
  if (spec?.method_name) out.method_name = spec.method_name
  if (spec?.version_number !== undefined && Number(spec.version_number) !== 0) out.version_number = spec.version_number
  return out
}

const bufferOf = (u: Uint8Array): Buffer => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength))

/**
 * Value -> wire tensor, sharing the value's memory. `textDims` is the shape given to string/bytes:
 * replies use [] (as MindSpore does for Python str/bytes), requests [1] (as its Python client does).
 */
export function valueToWire(v: Value, textDims: number[] = []): WireTensor {
  if (v instanceof Tensor) {
    const w: WireTensor = { shape: { dims: [...v.shape] }, dtype: MS_NUMBER_BY_DTYPE[v.dtype] }
    if (v.data.byteLength > 0) w.data = Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength)
    return w
  }
  if (typeof v === 'string') return { shape: { dims: textDims }, dtype: MS_STRING, bytes_val: [Buffer.from(v, 'utf8')] }
  if (ArrayBuffer.isView(v)) return { shape: { dims: textDims }, dtype: MS_BYTES, bytes_val: [bufferOf(v)] }
  throw new Error(`cannot encode value of type ${typeof v} as a MindSpore tensor`)
}

function encodeItems(values: Record<string, Value>, textDims: number[] = []): Record<string, WireTensor> {
  const items: Record<string, WireTensor> = {}
  for (const k of Object.keys(values)) items[k] = valueToWire(values[k]!, textDims)
  return items
}

/** MindSpore status for an error: explicit msStatus, else the code's row, else FAILED; never 0. */
export function msStatusOf(e: MsErrorLike): number {
  const s = e.msStatus ?? (e.code !== undefined && e.code in ERROR_CODES ? ERROR_CODES[e.code as keyof typeof ERROR_CODES].ms : MS_STATUS.FAILED)
  return s === 0 ? MS_STATUS.FAILED : s
}

function wireError(code: number, message: string): WireErrorMsg {
  const e: WireErrorMsg = {}
  if (code !== 0) e.error_code = code
  if (message) e.error_msg = Buffer.from(message, 'utf8')
  return e
}

/** Whole-request error reply: no instances, exactly one ErrorMsg. */
export function errorReply(spec: WireServableSpec | null | undefined, e: MsErrorLike): WirePredictReply {
  return { servable_spec: wireSpec(spec), instances: [], error_msg: [wireError(msStatusOf(e), msText(e) || 'Predict failed')] }
}

/**
 * Builds a PredictReply by MindSpore's rules: a whole-request error -> one ErrorMsg, no instances;
 * all ok -> N instances, no errors; otherwise N instances (failed ones empty) and N ErrorMsgs with
 * code 0 / empty text for the ok ones. Identical failures arrive already collapsed into a
 * whole-request error (runtime/predict-outcome.ts collapseOutcomes); they are not merged here.
 */
export function encodeReply(spec: WireServableSpec | null | undefined, result: PredictOutcome<MsErrorLike>): WirePredictReply {
  if ('error' in result) return errorReply(spec, result.error)
  const list = result.instances
  if (list.length === 0) return errorReply(spec, { msStatus: MS_STATUS.INVALID_INPUTS, message: 'Result instances count invalid, cannot be 0' })
  const servable_spec = wireSpec(spec)
  if (!list.some((r) => 'error' in r)) {
    return { servable_spec, instances: list.map((r) => ({ items: encodeItems((r as { outputs: Record<string, Value> }).outputs) })) }
  }
  return {
    servable_spec,
    instances: list.map((r) => ('error' in r ? {} : { items: encodeItems(r.outputs) })),
    error_msg: list.map((r) => ('error' in r ? wireError(msStatusOf(r.error), msText(r.error) || 'Predict failed') : {})),
  }
}

// ---- client side ----

/** Builds a PredictRequest the way MindSpore's Python client does (str/bytes as shape [1]). */
export function encodeRequest(name: string, method: string, version: number, instances: Record<string, Value>[]): WirePredictRequest {
  return {
    servable_spec: wireSpec({ name, method_name: method, version_number: version }),
    instances: instances.map((inst) => ({ items: encodeItems(inst, [1]) })),
  }
}

/** Wire tensor of a reply -> Value (lenient: no request-side shape rules). */
export function replyTensorToValue(t: WireTensor): Value {
  const dtype = t.dtype ?? 0
  if (dtype === MS_STRING || dtype === MS_BYTES) {
    const items = t.bytes_val ?? []
    if (items.length !== 1) throw new Error(`reply ${dtype === MS_STRING ? 'string' : 'bytes'} tensor has ${items.length} items, expected 1`)
    return dtype === MS_STRING ? bufferOf(items[0]!).toString('utf8') : items[0]!
  }
  const name = MS_DTYPE_BY_NUMBER[dtype]
  if (name === undefined) throw new Error(`reply tensor has unknown data type ${dtype}`)
  const dims = dimsOf(t)
  const detail = checkRequestTensor(t, dims)
  if (detail !== undefined) throw new Error(`reply tensor invalid: ${detail}`)
  return wireToValue(t, dims)
}

const errorText = (e: WireErrorMsg | undefined): string => (e?.error_msg ? bufferOf(e.error_msg).toString('utf8') : '')

/** Reads a PredictReply with the Python client's rules (error count must be 0, 1 or N). */
export function decodeReply(reply: WirePredictReply): PredictOutcome<MsReplyError> {
  const errs = reply.error_msg ?? []
  const insts = reply.instances ?? []
  const n = insts.length
  if (errs.length === 1 && !(n === 1 && Number(errs[0]!.error_code ?? 0) === 0)) {
    return { error: { msStatus: Number(errs[0]!.error_code ?? 0), message: errorText(errs[0]) } }
  }
  if (errs.length !== 0 && errs.length !== n) throw new Error(`error msg result size ${errs.length} not be 0, 1 or length of instances ${n}`)
  return {
    instances: insts.map((inst, i): InstanceOutcome<MsReplyError> => {
      const e = errs[i]
      if (e && Number(e.error_code ?? 0) !== 0) return { error: { msStatus: Number(e.error_code), message: errorText(e) } }
      const outputs: Record<string, Value> = {}
      const items = inst.items ?? {}
      for (const k of Object.keys(items)) outputs[k] = replyTensorToValue(items[k]!)
      return { outputs }
    }),
  }
}
