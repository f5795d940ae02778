/** Parent <-> replica IPC messages: unions keyed by `type` (one place, as piscina keeps them). */
import type { SerializedError } from '../errors.ts'
import type { ValidServable } from '../config/validate.ts'
import type { DevicePlan } from './devices.ts'
import type { WireInstance, WireResult } from './wire.ts'

export interface TensorMeta { name: string; dtype: string; shape: (number | string)[] }

/** What a replica learned from an ONNX file at load. `maxBatchSize` is the effective one. */
export interface ModelInfo {
  index: number
  name: string
  inputs: TensorMeta[]
  outputs: TensorMeta[]
  maxBatchSize: number
  /** The model has a fixed batch dim > 1: partial batches are padded with the first instance. */
  fixedBatch: boolean
}

export interface RunStat { model: number; batch: number; padded: number; ms: number }

export type ParentMessage =
  | { type: 'init'; servable: ValidServable; device: DevicePlan }
  | { type: 'run'; id: number; method: string; instances: WireInstance[] }
  | { type: 'shutdown' }

export type ReplicaMessage =
  | { type: 'ready'; models: ModelInfo[]; pid: number }
  | { type: 'init-error'; error: SerializedError }
  | { type: 'result'; id: number; results: WireResult[]; runs: RunStat[]; ms: number }
