/**
 * What a servable version offers, for clients: its methods with their inputs and outputs (names,
 * dtypes, per-instance shapes), whether a method batches, its replicas. `GET /servables`, the
 * gRPC ServerInfo, `ms-serve list` and the Open Inference Protocol's model metadata all read this
 * one description. Types come from the ONNX sessions the first ready replica reported: a method
 * input passed unchanged to a model stage has that model input's dtype and shape, a method output
 * taken unchanged from a model stage has that model output's; what a function stage makes or
 * takes is not known before it runs (`dtype: null`, `shape: null`).
 */
import type { ValidMethod, ValidServable } from '../config/validate.ts'
import type { DType } from '../tensor.ts'
import { inputSpecs, ORT_TO_DTYPE } from './input-check.ts'
import type { LiveServable } from './live-servable.ts'
import type { LlmInfo, ModelInfo } from './messages.ts'
import type { ReplicaState } from './replica.ts'
import type { ServableRegistry } from './registry.ts'

/** One method input or output. `shape` is per instance (no batch dim), -1 for a free dim. */
export interface TensorDescription {
  name: string
  /** null: decided by a function stage at run time. */
  dtype: DType | null
  shape: number[] | null
}

export interface MethodDescription {
  name: string
  inputs: TensorDescription[]
  outputs: TensorDescription[]
  /**
   * Instances of this method run together in one model batch (every model stage it uses has a batch
   * dim). The Open Inference Protocol then reads a tensor's first dim as the instance count.
   */
  batched: boolean
  /** Most instances per model run (the smallest over its model stages); null without a model stage. */
  maxBatchSize: number | null
}

export interface ReplicaDescription { device: string; isolation: string; state: ReplicaState; pid: number }

export interface VersionDescription {
  version: number
  ready: boolean
  methods: MethodDescription[]
  replicas: ReplicaDescription[]
  /** LLM servables: what the engine reported at load. */
  llm?: LlmInfo
}

export interface ServableDescription {
  name: string
  kind: 'model' | 'llm'
  /** Some version serves. */
  ready: boolean
  /** Loaded versions, ascending. */
  versions: VersionDescription[]
}

/** `GET /servables`: every servable, and those that failed to load. */
export interface ServablesDescription {
  servables: ServableDescription[]
  unavailable: { name: string; error: string }[]
}

/** The LLM methods declareLlm() provides (MindSpore `:generate` / `:generated_stream`). */
const LLM_METHOD_NAMES = ['generate', 'generated_stream'] as const

function llmMethods(): MethodDescription[] {
  return LLM_METHOD_NAMES.map((name) => ({
    name,
    inputs: [{ name: 'prompt', dtype: 'string', shape: [] }],
    outputs: [{ name: 'text', dtype: 'string', shape: [] }],
    batched: false,
    maxBatchSize: null,
  }))
}

const dtypeOf = (ort: string): DType | null => (ort === 'string' ? 'string' : ORT_TO_DTYPE[ort] ?? null)

/** One method's description from its servable and the models a replica reported (ModelInfo by index). */
export function describeMethod(servable: ValidServable, m: ValidMethod, models: readonly ModelInfo[]): MethodDescription {
  const known = new Map<number, { dtype: DType | null; shape: number[] }>()
  const inputOf = new Map<number, { dtype: DType | null; shape: number[] }>()
  for (const st of m.stages) {
    if (st.kind !== 'model') continue
    const info = models[st.model!]
    if (info === undefined) continue
    const vm = servable.models[st.model!]!
    const specs = inputSpecs(vm, info.inputs)
    st.args.forEach((ref, j) => {
      const spec = specs[j]
      if (spec !== undefined && !inputOf.has(ref)) inputOf.set(ref, { dtype: dtypeOf(info.inputs[j]!.dtype), shape: spec.rowShape })
    })
    st.outputs.forEach((ref, j) => {
      const meta = info.outputs[j]
      if (meta === undefined) return
      const dims = meta.shape.map((d) => (typeof d === 'number' ? d : -1))
      known.set(ref, { dtype: dtypeOf(meta.dtype), shape: vm.withBatchDim ? dims.slice(1) : dims })
    })
  }
  const batchedModels = m.models.map((i) => servable.models[i]!)
  const sizes = m.models.map((i) => models[i]?.maxBatchSize).filter((x): x is number => x !== undefined)
  return {
    name: m.name,
    inputs: m.inputs.map((name, i) => ({ name, ...(inputOf.get(m.inputRefs[i]!) ?? { dtype: null, shape: null }) })),
    outputs: m.outputs.map((name, i) => ({ name, ...(known.get(m.outputRefs[i]!) ?? { dtype: null, shape: null }) })),
    batched: batchedModels.length > 0 && batchedModels.every((x) => x.withBatchDim),
    maxBatchSize: sizes.length ? Math.min(...sizes) : null,
  }
}

/** Method descriptions by servable version, kept while its replicas report the same models. */
const methodCache = new WeakMap<LiveServable, { models: readonly ModelInfo[]; methods: MethodDescription[] }>()

/**
 * A version's methods, described once per set of models its replicas reported (the OIP routes ask
 * on every request; the description only changes when a replica loads).
 */
export function versionMethods(s: LiveServable): MethodDescription[] {
  const replica = s.replicas.find((r) => r.models.length > 0 || r.llm) ?? s.replicas[0]
  const models = replica?.models ?? []
  const hit = methodCache.get(s)
  if (hit && hit.models === models) return hit.methods
  const methods = [...s.servable.methods.map((m) => describeMethod(s.servable, m, models)), ...(s.servable.llm ? llmMethods() : [])]
  methodCache.set(s, { models, methods })
  return methods
}

/** One loaded version. */
export function describeVersion(s: LiveServable): VersionDescription {
  const llm = s.replicas.find((r) => r.llm)?.llm
  return {
    version: s.version,
    ready: s.ready,
    methods: versionMethods(s),
    replicas: s.replicas.map((r) => ({ device: `${r.device.deviceType}:${r.device.deviceId}${r.device.agent ? `@${r.device.agent}` : ''}`, isolation: r.isolation, state: r.state, pid: r.pid })),
    ...(llm ? { llm } : {}),
  }
}

/** Every servable by name (versions ascending), and those that failed to load. */
export function describeServables(registry: ServableRegistry): ServablesDescription {
  const byName = new Map<string, ServableDescription>()
  for (const s of registry.all()) {
    let d = byName.get(s.name)
    if (!d) byName.set(s.name, (d = { name: s.name, kind: s.servable.llm ? 'llm' : 'model', ready: false, versions: [] }))
    const v = describeVersion(s)
    d.ready ||= v.ready
    d.versions.push(v)
  }
  return {
    servables: [...byName.values()],
    unavailable: [...registry.failed].filter(([name]) => !byName.has(name)).map(([name, error]) => ({ name, error })),
  }
}
