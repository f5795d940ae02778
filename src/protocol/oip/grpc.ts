/**
 * Open Inference Protocol over gRPC: `inference.GRPCInferenceService` (proto/oip_inference.proto,
 * the protocol's package, names and field numbers) on the same listener as MindSpore's MSService.
 * Inputs come as typed `contents` or as `raw_input_contents` (one entry per input); every output
 * goes back in `raw_output_contents`, as Triton answers. Errors are gRPC statuses from the error table.
 */
import * as grpc from '@grpc/grpc-js'
import type * as protoLoader from '@grpc/proto-loader'
import { ServeError, toServeError } from '../../errors.ts'
import { shapeSize } from '../../tensor.ts'
import type { ServableRegistry } from '../../runtime/registry.ts'
import { noteGrpcAccess } from '../request-id.ts'
import { grpcError } from '../error-render.ts'
import { loadServiceDefinition, msLeft } from '../grpc/ms-service.ts'
import { modelMetadata, oipInfer, registryReady, resolveModel, serverMetadata } from './infer.ts'
import { bytesAs, rawOf, tensorFromJson, tensorFromRaw, type OipTensor } from './tensors.ts'

export const OIP_SERVICE = 'inference.GRPCInferenceService'

/** 64-bit integers as strings (exact), bytes as Buffers, oneofs named. */
export const OIP_PROTO_LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, bytes: Buffer, defaults: true, oneofs: true }

export function loadOipDefinition(): grpc.ServiceDefinition {
  return loadServiceDefinition('oip_inference.proto', OIP_SERVICE, OIP_PROTO_LOADER_OPTIONS)
}

interface WireContents {
  bool_contents?: boolean[]; int_contents?: number[]; int64_contents?: string[]; uint_contents?: number[]; uint64_contents?: string[]
  fp32_contents?: number[]; fp64_contents?: number[]; bytes_contents?: Buffer[]
}
interface WireParameter { string_param?: string; int64_param?: string; bool_param?: boolean; parameter_choice?: string }
interface WireInput { name: string; datatype: string; shape: string[]; contents?: WireContents | null; parameters?: Record<string, WireParameter> }
interface WireInferRequest { model_name: string; model_version: string; id: string; inputs: WireInput[]; outputs: { name: string }[]; raw_input_contents: Buffer[] }

/** The `contents` field each datatype travels in (FP16 has none: raw only). */
const CONTENTS_FIELD: Record<string, keyof WireContents> = {
  BOOL: 'bool_contents', INT8: 'int_contents', INT16: 'int_contents', INT32: 'int_contents', INT64: 'int64_contents',
  UINT8: 'uint_contents', UINT16: 'uint_contents', UINT32: 'uint_contents', UINT64: 'uint64_contents',
  FP32: 'fp32_contents', FP64: 'fp64_contents', BYTES: 'bytes_contents',
}

const invalid = (msg: string) => new ServeError('INVALID_REQUEST', msg)

/** One request input -> a tensor, from its raw entry or its typed contents. */
function decodeInput(x: WireInput, raw: Buffer | undefined): OipTensor {
  const shape = x.shape.map(Number)
  const contentType = x.parameters?.['content_type']?.string_param
  if (raw !== undefined) return tensorFromRaw(x.name, x.datatype, shape, raw, contentType)
  const field = CONTENTS_FIELD[x.datatype]
  if (x.datatype === 'FP16') throw invalid(`input ${x.name}: FP16 travels only in raw_input_contents`)
  if (field === undefined) return tensorFromJson(x.name, x.datatype, shape, undefined)
  const values = (x.contents?.[field] ?? []) as unknown[]
  if (field === 'bytes_contents') {
    const n = shapeSize(shape)
    if (values.length !== n) throw invalid(`input ${x.name}: shape [${shape.join(',')}] needs ${n} elements, bytes_contents has ${values.length}`)
    return { name: x.name, datatype: 'BYTES', shape, value: bytesAs(x.name, values.map((b) => new Uint8Array((b as Buffer).buffer, (b as Buffer).byteOffset, (b as Buffer).byteLength)), contentType) }
  }
  // 64-bit contents arrive as decimal strings (exact); the JSON decoder reads them as Numbers, so
  // they go through BigInt-safe parsing here.
  if (field === 'int64_contents' || field === 'uint64_contents') {
    const t = tensorFromJson(x.name, x.datatype, shape, values.map(() => 0))
    const data = (t.value as { data: BigInt64Array | BigUint64Array }).data
    values.forEach((v, i) => { data[i] = BigInt(v as string) })
    return t
  }
  return tensorFromJson(x.name, x.datatype, shape, values)
}

/** Decodes a ModelInferRequest's tensors (the protocol's rule: raw for every input, or for none). */
export function decodeInferInputs(r: WireInferRequest): OipTensor[] {
  const raw = r.raw_input_contents ?? []
  if (!r.inputs || r.inputs.length === 0) throw invalid('ModelInferRequest has no inputs')
  if (raw.length > 0 && raw.length !== r.inputs.length) throw invalid(`raw_input_contents has ${raw.length} entries for ${r.inputs.length} inputs: send one per input, in input order, or none`)
  return r.inputs.map((x, i) => {
    if (raw.length > 0 && x.contents && Object.values(x.contents).some((v) => Array.isArray(v) && v.length > 0)) throw invalid(`input ${x.name} sets contents while the request uses raw_input_contents`)
    return decodeInput(x, raw.length > 0 ? raw[i] : undefined)
  })
}

type Unary<Req> = (call: grpc.ServerUnaryCall<Req, unknown>, cb: grpc.sendUnaryData<unknown>) => void

/** A unary handler whose thrown or rejected errors become gRPC statuses. */
function unary<Req>(fn: (call: grpc.ServerUnaryCall<Req, unknown>) => unknown): Unary<Req> {
  return (call, cb) => {
    Promise.resolve().then(() => fn(call)).then((r) => cb(null, r), (e) => cb(grpcError(toServeError(e, 'INVALID_REQUEST'))))
  }
}

/** Registers inference.GRPCInferenceService on `server`. */
export function addOipService(server: grpc.Server, registry: ServableRegistry): void {
  server.addService(loadOipDefinition(), {
    ServerLive: unary(() => ({ live: true })),
    ServerReady: unary(() => ({ ready: registryReady(registry) })),
    ModelReady: unary<{ name: string; version: string }>((call) => {
      const { servable } = resolveModel(registry, call.request.name, call.request.version || undefined)
      return { ready: servable.ready }
    }),
    ServerMetadata: unary(() => serverMetadata()),
    ModelMetadata: unary<{ name: string; version: string }>((call) => modelMetadata(registry, resolveModel(registry, call.request.name, call.request.version || undefined))),
    ModelInfer: unary<WireInferRequest>(async (call) => {
      const r = call.request
      const target = resolveModel(registry, r.model_name, r.model_version || undefined)
      const inputs = decodeInferInputs(r)
      noteGrpcAccess(call.metadata, { servable: target.servable.name, version: target.servable.version, method: target.method.name, instances: target.method.batched ? inputs[0]!.shape[0] ?? 1 : 1 })
      const timeoutMs = msLeft(call)
      const res = await oipInfer(registry, target, { ...(r.id ? { id: r.id } : {}), inputs, ...(r.outputs?.length ? { outputs: r.outputs.map((o) => o.name) } : {}) }, { protocol: 'grpc', ...(timeoutMs === undefined ? {} : { timeoutMs }) })
      return {
        model_name: res.model_name, model_version: res.model_version, id: res.id ?? '',
        outputs: res.outputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape })),
        raw_output_contents: res.outputs.map((t) => { const b = rawOf(t); return Buffer.from(b.buffer, b.byteOffset, b.byteLength) }),
      }
    }),
  })
}
