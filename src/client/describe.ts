/**
 * Servable descriptions on the client: the gRPC ServerInfo reply mapped to the ServablesDescription
 * that GET /servables answers (src/runtime/describe.ts), and lookups in it.
 */
import type {
  MethodDescription, ServableDescription, ServablesDescription, TensorDescription, VersionDescription,
} from '../runtime/describe.ts'
import type { ReplicaState } from '../runtime/replica.ts'
import type { DType } from '../tensor.ts'

/** `method` of `servable` at `version` (0: the newest loaded), and whether that version serves. */
export function findMethod(d: ServablesDescription | null | undefined, servable: string, version: number, method: string): { method: MethodDescription; ready: boolean } | undefined {
  const s = d?.servables.find((x) => x.name === servable)
  if (!s) return undefined
  const v = version ? s.versions.find((x) => x.version === version) : s.versions[s.versions.length - 1]
  const m = v?.methods.find((x) => x.name === method)
  return m && v ? { method: m, ready: v.ready } : undefined
}

// ServerInfo as proto-loader decodes it (defaults on: absent fields are '', 0, false, []).
interface WireTensorInfo { name: string; dtype: string; shape: number[]; shape_known: boolean }
interface WireMethodInfo { name: string; inputs: string[]; outputs: string[]; input_tensors: WireTensorInfo[]; output_tensors: WireTensorInfo[]; batched: boolean; max_batch_size: number }
interface WireReplicaInfo { device: string; isolation: string; state: string; pid: number }
interface WireVersionInfo { version: number; ready: boolean; methods: WireMethodInfo[]; replicas: WireReplicaInfo[] }
interface WireServableInfo { name: string; versions: number[]; methods: WireMethodInfo[]; kind: string; ready: boolean; version_info: WireVersionInfo[] }
export interface WireServerInfo { server_version: string; servables: WireServableInfo[]; unavailable: Array<{ name: string; error: string }> }

const tensorOf = (t: WireTensorInfo): TensorDescription => ({ name: t.name, dtype: (t.dtype || null) as DType | null, shape: t.shape_known ? t.shape.map(Number) : null })

/** A method of a server that sent only names (before tensors were in MethodInfo): every type unknown. */
const unknownTensor = (name: string): TensorDescription => ({ name, dtype: null, shape: null })

function methodOf(m: WireMethodInfo): MethodDescription {
  return {
    name: m.name,
    inputs: m.input_tensors.length || !m.inputs.length ? m.input_tensors.map(tensorOf) : m.inputs.map(unknownTensor),
    outputs: m.output_tensors.length || !m.outputs.length ? m.output_tensors.map(tensorOf) : m.outputs.map(unknownTensor),
    batched: m.batched,
    maxBatchSize: m.max_batch_size || null,
  }
}

function versionOf(v: WireVersionInfo): VersionDescription {
  return {
    version: Number(v.version),
    ready: v.ready,
    methods: v.methods.map(methodOf),
    replicas: v.replicas.map((r) => ({ device: r.device, isolation: r.isolation, state: r.state as ReplicaState, pid: Number(r.pid) })),
  }
}

/** ServerInfo -> ServablesDescription. gRPC carries no LLM engine info (`llm`): that is REST's. */
export function describeServerInfo(r: WireServerInfo): ServablesDescription {
  const servables = r.servables.map((s): ServableDescription => ({
    name: s.name,
    kind: s.kind === 'llm' ? 'llm' : 'model',
    ready: s.ready,
    versions: s.version_info.length
      ? s.version_info.map(versionOf)
      // An older server: versions and the newest's methods only, readiness per servable.
      : s.versions.map((v, i) => ({ version: Number(v), ready: s.ready, methods: i === s.versions.length - 1 ? s.methods.map(methodOf) : [], replicas: [] })),
  }))
  return { servables, unavailable: r.unavailable.map((u) => ({ name: u.name, error: u.error })) }
}
