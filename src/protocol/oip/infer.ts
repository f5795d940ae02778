/**
 * The Open Inference Protocol over ms-serve's servables, shared by the REST (rest.ts) and gRPC
 * (grpc.ts) front ends: model names -> servable methods, metadata, and inference.
 *
 * - An OIP model is a servable method: `name` for a servable with one method (or whose method is
 *   also called `name`), `name/method` for any method. Versions are the servable's.
 * - A method that batches (every model stage has a batch dim) reads each input's first dim as the
 *   instance count: `[4,2,2]` for `add` is 4 instances of `[2,2]`, which join the dynamic batcher
 *   like 4 MindSpore instances; outputs are stacked back to `[4, ...]`. Other methods take each
 *   tensor as one instance.
 * - OIP has no per-instance error: when an instance fails, the request fails with its error
 *   (prefixed with the instance index when there are several).
 */
import { factError, ServeError, type ErrorCode } from '../../errors.ts'
import { DTYPES, Tensor, type Value } from '../../tensor.ts'
import { versionMethods, type MethodDescription, type TensorDescription } from '../../runtime/describe.ts'
import type { LiveServable } from '../../runtime/live-servable.ts'
import type { PredictCall, ServableRegistry } from '../../runtime/registry.ts'
import type { Protocol } from '../../runtime/metrics.ts'
import { VERSION } from '../../version.ts'
import { oipDatatype, type OipTensor } from './tensors.ts'

/** `GET /v2` / ServerMetadata. */
export const OIP_SERVER_NAME = 'ms-serve'
export const OIP_EXTENSIONS = ['binary_tensor_data', 'generate'] as const

export function serverMetadata() {
  return { name: OIP_SERVER_NAME, version: VERSION, extensions: [...OIP_EXTENSIONS] }
}

/** Ready: every servable serves and none failed to load (REST /v2/health/ready, gRPC ServerReady, health ""). */
export function registryReady(registry: ServableRegistry): boolean {
  const all = registry.all()
  return all.length > 0 && all.every((s) => s.ready) && registry.failed.size === 0
}

export interface OipTarget { servable: LiveServable; method: MethodDescription; modelName: string }

const notFound = (msg: string) => new ServeError('SERVABLE_NOT_FOUND', msg)

/** "v" of a request: "" or absent = the newest serving version; else a positive integer. */
export function parseVersion(v: string | undefined): number {
  if (v === undefined || v === '') return 0
  if (!/^[1-9]\d{0,8}$/.test(v)) throw new ServeError('INVALID_REQUEST', `model version must be a positive integer (got "${v}")`)
  return Number(v)
}

/** What an LLM servable shows as OIP metadata: Triton's generate names (text_input -> text_output). */
const LLM_SIGNATURE: MethodDescription = {
  name: 'generate', inputs: [{ name: 'text_input', dtype: 'string', shape: [1] }], outputs: [{ name: 'text_output', dtype: 'string', shape: [1] }], batched: false, maxBatchSize: null,
}

/** The names a servable answers to, for error texts. */
function modelNames(s: LiveServable): string[] {
  const methods = s.servable.methods.map((m) => m.name)
  return [...(methods.length === 1 ? [s.name] : []), ...methods.map((m) => `${s.name}/${m}`)]
}

/** Resolves an OIP model name (and version) to a servable version and one of its methods. */
export function resolveModel(registry: ServableRegistry, modelName: string, version: string | undefined): OipTarget {
  const slash = modelName.indexOf('/')
  const name = slash < 0 ? modelName : modelName.slice(0, slash)
  const v = parseVersion(version)
  const s = registry.get(name, v)
  if (!s) {
    const known = registry.all().map((x) => x.name)
    if (registry.failed.has(name)) throw factError('SERVABLE_NOT_READY', `model ${name} is unavailable, it failed to load: ${registry.failed.get(name)}`, { reason: 'servable_unavailable', servable: name, method: '', version: v })
    if (known.includes(name)) throw notFound(`model ${name} has no version ${v} (loaded: ${registry.all().filter((x) => x.name === name).map((x) => x.version).join(', ')})`)
    throw notFound(`no model ${name}; loaded: ${[...new Set(registry.all().flatMap(modelNames))].join(', ') || 'none'}`)
  }
  if (s.servable.llm) return { servable: s, method: LLM_SIGNATURE, modelName }
  const methodName = slash < 0 ? (s.servable.methods.length === 1 ? s.servable.methods[0]!.name : name) : modelName.slice(slash + 1)
  const method = versionMethods(s).find((m) => m.name === methodName)
  if (!method) {
    const names = modelNames(s)
    throw notFound(slash < 0
      ? `servable ${name} has ${s.servable.methods.length} methods: name one as the model, one of ${names.join(', ')}`
      : `servable ${name} has no method ${methodName}; models: ${names.join(', ')}`)
  }
  return { servable: s, method, modelName }
}

/** One OIP tensor_meta: the batch dim (-1) first for a batching method; ANY / [-1] when a function stage decides. */
function tensorMeta(t: TensorDescription, batched: boolean) {
  const shape = t.shape === null ? [-1] : batched ? [-1, ...t.shape] : [...t.shape]
  return { name: t.name, datatype: t.dtype === null ? 'ANY' : oipDatatype(t.dtype), shape }
}

/** `GET /v2/models/{m}` / ModelMetadata. */
export function modelMetadata(registry: ServableRegistry, target: OipTarget) {
  const { servable: s, method } = target
  return {
    name: target.modelName,
    versions: registry.all().filter((x) => x.name === s.name).map((x) => String(x.version)),
    platform: s.servable.llm ? 'ms-serve_llm' : s.servable.models.length > 0 ? 'onnx_onnxv1' : 'ms-serve_pipeline',
    inputs: method.inputs.map((t) => tensorMeta(t, method.batched)),
    outputs: method.outputs.map((t) => tensorMeta(t, method.batched)),
  }
}

export interface OipInferRequest {
  id?: string
  inputs: OipTensor[]
  /** Requested outputs by name (absent: all of the method's). */
  outputs?: string[]
}

export interface OipInferResponse {
  model_name: string
  model_version: string
  id?: string
  outputs: OipTensor[]
}

export interface OipCallContext {
  protocol: Protocol
  timeoutMs?: number
  onCancel?: (cancel: () => void) => void
}

const invalid = (msg: string) => new ServeError('INVALID_REQUEST', msg)

/** The request's tensors -> one instance record per instance (views into the request's data, no copies). */
export function splitInstances(method: MethodDescription, inputs: readonly OipTensor[], maxInstances: number): Record<string, Value>[] {
  const byName = new Map<string, OipTensor>()
  for (const t of inputs) {
    if (byName.has(t.name)) throw invalid(`input ${t.name} is given twice`)
    if (!method.inputs.some((x) => x.name === t.name)) throw invalid(`unknown input ${t.name}; model inputs: ${method.inputs.map((x) => x.name).join(', ')}`)
    byName.set(t.name, t)
  }
  const missing = method.inputs.filter((x) => !byName.has(x.name)).map((x) => x.name)
  if (missing.length) throw invalid(`missing input${missing.length > 1 ? 's' : ''} ${missing.join(', ')}; model inputs: ${method.inputs.map((x) => x.name).join(', ')}`)
  const tensors = method.inputs.map((x) => byName.get(x.name)!)
  if (!method.batched) return [Object.fromEntries(tensors.map((t) => [t.name, whole(t)]))]
  const n = tensors[0]!.shape[0]
  for (const t of tensors) {
    if (t.shape.length === 0) throw invalid(`input ${t.name}: the model batches, so its first dim is the batch size; got a scalar`)
    if (t.shape[0] !== n) throw invalid(`inputs disagree on the batch size (first dim): ${tensors.map((x) => `${x.name} ${x.shape[0]}`).join(', ')}`)
  }
  if (n === 0) throw invalid(`batch size (first dim) is 0: send at least one instance`)
  if (n! > maxInstances) throw invalid(`batch size ${n} is over the limit of ${maxInstances} instances per request (--max-instances-per-request)`)
  const out: Record<string, Value>[] = Array.from({ length: n! }, () => ({}))
  for (const t of tensors) {
    const row = t.shape.slice(1)
    if (t.value instanceof Tensor) {
      const per = t.value.data.length / n!
      for (let i = 0; i < n!; i++) out[i]![t.name] = new Tensor(t.value.dtype, row, t.value.data.subarray(i * per, (i + 1) * per))
    } else {
      const per = t.value.length / n!
      if (per !== 1) throw invalid(`input ${t.name}: BYTES holds one string per instance; shape [${t.shape.join(',')}] has ${per} per instance`)
      for (let i = 0; i < n!; i++) out[i]![t.name] = t.value[i]!
    }
  }
  return out
}

/** A tensor taken as one instance's value: numeric as it is, BYTES with exactly one element. */
function whole(t: OipTensor): Value {
  if (t.value instanceof Tensor) return t.value
  if (t.value.length !== 1) throw invalid(`input ${t.name}: BYTES holds one string per instance; shape [${t.shape.join(',')}] has ${t.value.length}`)
  return t.value[0]!
}

/** The instances' values of one output -> one OIP tensor ([n, ...] for a batching method). */
function stack(name: string, values: Value[], batched: boolean): OipTensor {
  const first = values[0]!
  if (!(first instanceof Tensor)) {
    if (values.some((v) => v instanceof Tensor)) throw new ServeError('INTERNAL', `output ${name}: instances returned tensors and strings`)
    return { name, datatype: 'BYTES', shape: batched ? [values.length] : [], value: values }
  }
  if (!batched) return { name, datatype: oipDatatype(first.dtype), shape: [...first.shape], value: first }
  const per = first.data.length
  for (const v of values) {
    if (!(v instanceof Tensor) || v.dtype !== first.dtype || v.shape.length !== first.shape.length || v.shape.some((d, i) => d !== first.shape[i])) {
      throw new ServeError('INTERNAL', `output ${name}: instances returned tensors of different shapes or types (${values.map((x) => (x instanceof Tensor ? `${x.dtype}[${x.shape.join(',')}]` : typeof x)).join(', ')}); send one instance per request`)
    }
  }
  const data = new DTYPES[first.dtype].ctor(per * values.length)
  values.forEach((v, i) => (data as Uint8Array).set((v as Tensor).data as Uint8Array, i * per))
  const shape = [values.length, ...first.shape]
  return { name, datatype: oipDatatype(first.dtype), shape, value: new Tensor(first.dtype, shape, data) }
}

/** Runs one OIP inference through the registry (batching, deadlines and errors as MindSpore requests). */
export async function oipInfer(registry: ServableRegistry, target: OipTarget, req: OipInferRequest, ctx: OipCallContext): Promise<OipInferResponse> {
  const { servable: s, method } = target
  if (s.servable.llm) throw notFound(`model ${s.name} is an LLM servable: use POST /v2/models/${s.name}/generate or /generate_stream (or the OpenAI and TGI routes); infer serves tensor models`)
  const wanted = req.outputs ?? method.outputs.map((o) => o.name)
  for (const o of wanted) if (!method.outputs.some((x) => x.name === o)) throw invalid(`unknown output ${o}; model outputs: ${method.outputs.map((x) => x.name).join(', ')}`)
  const instances = splitInstances(method, req.inputs, s.policy.maxInstancesPerRequest)
  const call: PredictCall = { name: s.name, method: method.name, version: s.version, instances, protocol: ctx.protocol, ...(ctx.timeoutMs === undefined ? {} : { timeoutMs: ctx.timeoutMs }), ...(ctx.onCancel ? { onCancel: ctx.onCancel } : {}) }
  const outcome = await registry.predict(call)
  if ('error' in outcome) throw outcome.error
  const results = outcome.instances
  const failed = results.findIndex((r) => 'error' in r)
  if (failed >= 0) {
    const e = (results[failed] as { error: ServeError }).error
    throw new ServeError(e.code as ErrorCode, results.length > 1 ? `instance ${failed} (of ${results.length}): ${e.message}` : e.message)
  }
  const outs = results as { outputs: Record<string, Value> }[]
  return {
    model_name: target.modelName,
    model_version: String(s.version),
    ...(req.id !== undefined ? { id: req.id } : {}),
    outputs: wanted.map((name) => stack(name, outs.map((o) => o.outputs[name]!), method.batched)),
  }
}
