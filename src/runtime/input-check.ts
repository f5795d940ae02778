/**
 * A model input's per-instance signature and the check of one instance's value against it, with
 * MindSpore's texts. Pure, and shared by both sides of the replica boundary: the listener checks
 * request inputs with it before queueing (valid-predict.ts), the replica checks every model row
 * with it (model-runner.ts), so the two can never word an error differently.
 */
import { DTYPES, Tensor, shapeSize, type NumericDType, type Value } from '../tensor.ts'
import type { ValidModel } from '../config/validate.ts'
import type { TensorMeta } from './messages.ts'

export interface InputSpec {
  name: string
  /** null: the model input has a type ms-serve cannot feed (every value is refused). */
  dtype: NumericDType | null
  /** Per-instance shape: the model shape without the batch dim (withBatchDim), -1 for a free dim. */
  rowShape: number[]
  /** Bytes per instance when every dim is fixed, else -1 (then the shape is compared). */
  rowBytes: number
  /** No batch dim: the first instance's value feeds the whole batch. */
  shared: boolean
}

/** ORT tensor type name -> dtype. */
export const ORT_TO_DTYPE: Readonly<Record<string, NumericDType>> = Object.fromEntries(
  Object.entries(DTYPES).map(([k, v]) => [v.ort, k as NumericDType]),
)

/** The per-instance specs of a model's inputs, from the metadata its session reported (ModelInfo.inputs). */
export function inputSpecs(model: ValidModel, inputs: readonly TensorMeta[]): InputSpec[] {
  return inputs.map((m, i) => {
    const shared = !model.withBatchDim || model.withoutBatchDimInputs.includes(i)
    // TensorMeta keeps fixed dims as numbers and free (symbolic or negative) dims as strings.
    const dims = (model.withBatchDim && !shared ? m.shape.slice(1) : m.shape).map((d) => (typeof d === 'number' ? d : -1))
    const dtype = ORT_TO_DTYPE[m.dtype] ?? null
    const rowBytes = dtype && dims.every((d) => d >= 0) ? shapeSize(dims) * DTYPES[dtype].bytes : -1
    return { name: m.name, dtype, rowShape: dims, rowBytes, shared }
  })
}

const given = (i: number) => `Given model input ${i}`

/** Checks one instance's value for model input `i`; returns MindSpore's error text, or null. */
export function checkModelInput(i: number, spec: InputSpec, v: Value): string | null {
  if (!(v instanceof Tensor)) {
    const defined = spec.dtype ? DTYPES[spec.dtype].msName : spec.name
    return `${given(i)} data type ${typeof v === 'string' ? 'kMSI_String' : 'kMSI_Bytes'} not match the data type ${defined} defined in model`
  }
  if (spec.dtype === null) return `Model input ${i} (${spec.name}) has a type ms-serve cannot feed`
  if (v.dtype !== spec.dtype) {
    return `${given(i)} data type ${DTYPES[v.dtype].msName} not match the data type ${DTYPES[spec.dtype].msName} defined in model`
  }
  if (spec.rowBytes >= 0) {
    const size = v.data.byteLength
    return size === spec.rowBytes ? null : `${given(i)} size ${size} not match the size ${spec.rowBytes} defined in model`
  }
  const shape = v.shape
  const want = spec.rowShape
  let ok = shape.length === want.length
  for (let k = 0; ok && k < want.length; k++) ok = want[k]! < 0 || want[k] === shape[k]
  return ok ? null : `${given(i)} shape [${shape.join(',')}] not match the shape [${want.join(',')}] defined in model`
}
