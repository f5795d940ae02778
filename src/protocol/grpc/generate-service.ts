/**
 * ms-serve's own gRPC service (proto/ms_serve.proto, package msserve.v1): server-streaming
 * Generate for LLM servables and ServerInfo. Errors are gRPC statuses from the error-code table.
 */
import * as grpc from '@grpc/grpc-js'
import { callRequestId, noteGrpcAccess } from '../request-id.ts'
import { ServeError, toServeError } from '../../errors.ts'
import type { GenerateParameters, GenerateRequest, TokenEvent } from '../../llm/types.ts'
import type { ServableRegistry } from '../../runtime/registry.ts'
import { loadServiceDefinition, MS_PROTO_LOADER_OPTIONS } from './ms-service.ts'
import { PARAMETER_FIELDS, relayEvents, type EventRelay } from '../rest/llm-common.ts'
import { describeServables, type MethodDescription, type ServableDescription, type TensorDescription } from '../../runtime/describe.ts'
import { grpcError, type ErrorLike } from '../error-render.ts'
import { VERSION } from '../../version.ts'

export const MS_SERVE_SERVICE = 'msserve.v1.MsServe'

/** GenerateRequest as decoded (defaults: false, so unset optional fields are absent). */
interface WireGenerateRequest extends Record<string, unknown> {
  servable?: string
  prompt?: string
  /** A pre-tokenized prompt (absent or empty when the request has text). */
  prompt_token_ids?: number[]
  /** uint64 as a Number (MS_PROTO_LOADER_OPTIONS longs); absent when 0, the newest. */
  version_number?: number
}

export function loadMsServeDefinition(): grpc.ServiceDefinition {
  return loadServiceDefinition('ms_serve.proto', MS_SERVE_SERVICE, { ...MS_PROTO_LOADER_OPTIONS, defaults: false })
}

/** The request's sampling fields: they carry TGI's names, and proto already typed them (no checks). */
function parameters(r: WireGenerateRequest): GenerateParameters {
  const p: Record<string, unknown> = {}
  for (const [wire, key] of PARAMETER_FIELDS) if (r[wire] !== undefined && r[wire] !== null) p[key] = r[wire]
  return p as GenerateParameters
}

/** Ends the call with the gRPC status of `e.code` (grpc-js sends `details` as the status message). */
function fail(call: grpc.ServerWritableStream<WireGenerateRequest, unknown>, e: ErrorLike): void {
  call.emit('error', grpcError(e))
}

/** NOT_FOUND text for a request no running LLM servable matches; names the versions that do run. */
function notFound(registry: ServableRegistry, name: string | undefined, version: number): string {
  // Without a name the request went to the default LLM servable: name that one.
  const target = name || registry.llm()?.name
  if (!target) return 'no LLM servable is loaded'
  const running = registry.all().filter((s) => s.name === target && s.servable.llm).map((s) => s.version)
  if (!version || running.length === 0) return `servable ${target} is not an LLM servable that is running`
  return `servable ${target} has no version ${version} (running versions: ${running.join(', ')})`
}

function eventJson(t: TokenEvent) {
  return {
    index: t.index - 1, token_id: t.id, token_text: t.text, logprob: t.logprob,
    ...(t.topTokens ? { top_tokens: t.topTokens.map((c) => ({ id: c.id, text: c.text, logprob: c.logprob, special: c.special })) } : {}),
  }
}

/**
 * Every token is written as soon as it arrives, except the final one, which goes out with the
 * done event's text and finish reason.
 */
const GENERATE_RELAY: EventRelay<grpc.ServerWritableStream<WireGenerateRequest, unknown>> = {
  holdLast: true,
  token: (call, t) => { call.write({ ...eventJson(t), generated_tokens: t.index }) },
  done: (call, ev, last) => {
    call.write({ ...(last ? eventJson(last) : { index: 0, token_id: -1, token_text: '' }), generated_text: ev.generatedText, finish_reason: ev.finishReason, generated_tokens: ev.generatedTokens })
    call.end()
  },
  error: fail,
}

/** Registers msserve.v1.MsServe on `server`. */
export function addMsServeService(server: grpc.Server, registry: ServableRegistry): void {
  server.addService(loadMsServeDefinition(), {
    Generate: (call: grpc.ServerWritableStream<WireGenerateRequest, unknown>) => {
      const r = call.request
      const version = Number(r.version_number ?? 0)
      const llm = registry.llm(r.servable || undefined, version)
      if (!llm) return fail(call, { code: 'SERVABLE_NOT_FOUND', message: notFound(registry, r.servable, version) })
      const ac = new AbortController()
      call.on('cancelled', () => ac.abort())
      void (async () => {
        try {
          // Validated and tokenized here: an invalid request ends with INVALID_ARGUMENT before any replica sees it.
          const ids = r.prompt_token_ids ?? []
          if (ids.length > 0 && r.prompt) throw new ServeError('VALIDATION', 'set either `prompt` or `prompt_token_ids`, not both')
          const prompt: GenerateRequest = ids.length > 0 ? { inputIds: ids } : { inputs: r.prompt ?? '' }
          const valid = llm.validate({ ...prompt, parameters: parameters(r) })
          // The request id the ops interceptor left in the metadata goes to the replica's engine log.
          // The access line reads the note when the call ends, tokens counted by then.
          llm.track(valid, noteGrpcAccess(call.metadata, llm.accessNote(callRequestId(call.metadata) ?? '')))
          const events = llm.stream(valid, ac.signal)
          if (!(await relayEvents(call, events, GENERATE_RELAY))) call.end()
        } catch (e) {
          fail(call, toServeError(e))
        }
      })()
    },
    ServerInfo: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const { servables, unavailable } = describeServables(registry)
      cb(null, { server_version: VERSION, servables: servables.map(servableInfo), unavailable })
    },
  })
}

const tensorInfo = (t: TensorDescription) => ({ name: t.name, dtype: t.dtype ?? '', shape: t.shape ?? [], shape_known: t.shape !== null })

const methodInfo = (m: MethodDescription) => ({
  name: m.name, inputs: m.inputs.map((t) => t.name), outputs: m.outputs.map((t) => t.name),
  input_tensors: m.inputs.map(tensorInfo), output_tensors: m.outputs.map(tensorInfo), batched: m.batched, max_batch_size: m.maxBatchSize ?? 0,
})

/** ServableInfo: the newest version's methods at the top (as before), every version in version_info. */
function servableInfo(d: ServableDescription) {
  const newest = d.versions[d.versions.length - 1]
  return {
    name: d.name, kind: d.kind, ready: d.ready, versions: d.versions.map((v) => v.version), methods: newest ? newest.methods.map(methodInfo) : [],
    version_info: d.versions.map((v) => ({ version: v.version, ready: v.ready, methods: v.methods.map(methodInfo), replicas: v.replicas })),
  }
}
