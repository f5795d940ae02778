/** Parent <-> replica IPC messages: unions keyed by `type` (one place, as piscina keeps them). */
import type { SerializedError } from '../errors.ts'
import type { ValidServable } from '../config/validate.ts'
import type { DevicePlan } from './devices.ts'
import type { WireInstance, WireResult } from './wire.ts'
import type { GenerateEvent, ValidGenerate } from '../llm/types.ts'
import type { StageEntry, StageReply, StageWorkerData } from './stage-worker.ts'

/** What a replica's LLM engine reports at ready: /info and /v1/models show it, the listener validates against its limits. */
export interface LlmInfo {
  modelId: string
  maxInputTokens: number
  maxTotalTokens: number
  maxStopSequences: number
  /** TGI's max_top_n_tokens: bound for `top_n_tokens`. */
  maxTopNTokens: number
  /** TGI's max_best_of: bound for `best_of` on /generate (default 2). */
  maxBestOf: number
  maxConcurrentRequests: number
  maxBatchSize: number
  numLayers: number
  numKvHeads: number
  headDim: number
  kvDtype: string
  vocabSize: number | null
  presentMode: string
}

/**
 * A generate request as it crosses to the replica: validated and tokenized in the listener, so
 * the replica never sees text or chat messages. Only the IPC boundary (replica.ts, llm-host.ts)
 * names this type; the layers above use ValidGenerate.
 */
export type LlmWireRequest = ValidGenerate

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

/** One model run in a replica; `stageMs`: a staged model's time in each stage (runtime/staged-session.ts). */
export interface RunStat { model: number; batch: number; padded: number; ms: number; stageMs?: number[] }

export type ParentMessage =
  /** `checksums`: sha256 by path of the files the replica reads, when it runs on an agent (agent-hub.ts). */
  | { type: 'init'; servable: ValidServable; device: DevicePlan; checksums?: Record<string, string> }
  | { type: 'run'; id: number; method: string; instances: WireInstance[] }
  | { type: 'generate'; id: number; request: LlmWireRequest; requestId?: string }
  | { type: 'cancel'; id: number }
  | { type: 'llm-stats'; id: number }
  /** A remote stage's message (runtime/remote-stage.ts), relayed from its agent. */
  | { type: 'stage-reply'; link: number; message: StageReply }
  | { type: 'stage-exit'; link: number; why: string }
  | { type: 'shutdown' }

/** How often a replica says it is alive (the parent's watchdog counts silence from any message). */
export const HEARTBEAT_MS = 250

export type ReplicaMessage =
  | { type: 'beat' }
  | { type: 'ready'; models: ModelInfo[]; llm?: LlmInfo }
  | { type: 'event'; id: number; event: GenerateEvent }
  /** The events of one engine step (one token per running request), in order: one message, not one each. */
  | { type: 'events'; ids: number[]; events: GenerateEvent[] }
  | { type: 'llm-stats'; id: number; stats: Record<string, number | string> }
  | { type: 'init-error'; error: SerializedError }
  | { type: 'result'; id: number; results: WireResult[]; runs: RunStat[]; ms: number }
  /**
   * A pipeline stage placed on an agent (`--devices 0,NAME:ID`): the parent opens it there
   * (agent-hub.ts openStage) and relays its messages both ways; a stage link that ends (the agent
   * lost) ends this replica, so its restart waits for the agent.
   */
  | { type: 'stage-open'; link: number; agent: string; label: string; entry: StageEntry; data: StageWorkerData }
  /** `last`: the stage is being released: it ends after this message without ending the replica. */
  | { type: 'stage-send'; link: number; message: unknown; last?: boolean }
  | { type: 'stage-close'; link: number }
