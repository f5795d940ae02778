/**
 * ms-serve's own gRPC service (proto/ms_serve.proto, package msserve.v1): server-streaming
 * Generate for LLM servables and ServerInfo. Errors are gRPC statuses from the error-code table.
 */
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { ERROR_CODES, ServeError, toServeError } from '../../errors.ts'
import type { GenerateParameters } from '../../llm/types.ts'
import type { ServableRegistry } from '../../runtime/registry.ts'
import { MS_PROTO_LOADER_OPTIONS, protoDir } from './ms-service.ts'

export const MS_SERVE_SERVICE = 'msserve.v1.MsServe'

interface WireGenerateRequest {
  servable?: string
  prompt?: string
  max_new_tokens?: number
  temperature?: number
  top_k?: number
  top_p?: number
  typical_p?: number
  top_n_tokens?: number
  repetition_penalty?: number
  seed?: number
  stop?: string[]
  do_sample?: boolean
  version_number?: number
}

let cached: grpc.ServiceDefinition | undefined

export function loadMsServeDefinition(): grpc.ServiceDefinition {
  if (cached) return cached
  const pkg = protoLoader.loadSync('ms_serve.proto', { ...MS_PROTO_LOADER_OPTIONS, defaults: false, includeDirs: [protoDir()] })
  cached = pkg[MS_SERVE_SERVICE] as unknown as grpc.ServiceDefinition
  return cached
}

function parameters(r: WireGenerateRequest): GenerateParameters {
  const p: GenerateParameters = {}
  if (r.max_new_tokens !== undefined && r.max_new_tokens !== null) p.maxNewTokens = r.max_new_tokens
  if (r.temperature !== undefined && r.temperature !== null) p.temperature = r.temperature
  if (r.top_k !== undefined && r.top_k !== null) p.topK = r.top_k
  if (r.top_p !== undefined && r.top_p !== null) p.topP = r.top_p
  if (r.typical_p !== undefined && r.typical_p !== null) p.typicalP = r.typical_p
  if (r.top_n_tokens !== undefined && r.top_n_tokens !== null) p.topNTokens = r.top_n_tokens
  if (r.repetition_penalty !== undefined && r.repetition_penalty !== null) p.repetitionPenalty = r.repetition_penalty
  if (r.seed !== undefined && r.seed !== null) p.seed = r.seed
  if (r.do_sample !== undefined && r.do_sample !== null) p.doSample = r.do_sample
  if (r.stop?.length) p.stop = r.stop
  return p
}

function grpcError(e: ServeError): Partial<grpc.StatusObject> {
  return { code: ERROR_CODES[e.code].grpc, details: e.message }
}

/** Registers msserve.v1.MsServe on `server`. */
export function addMsServeService(server: grpc.Server, registry: ServableRegistry): void {
  server.addService(loadMsServeDefinition(), {
    Generate: (call: grpc.ServerWritableStream<WireGenerateRequest, unknown>) => {
      const r = call.request
      const llm = r.servable ? registry.llm(r.servable) : registry.llm()
      if (!llm) {
        call.emit('error', Object.assign(new Error(), grpcError(new ServeError('SERVABLE_NOT_FOUND', r.servable ? `servable ${r.servable} is not an LLM servable that is running` : 'no LLM servable is loaded'))))
        return
      }
      const ac = new AbortController()
      call.on('cancelled', () => ac.abort())
      void (async () => {
        try {
          // Every token is written as soon as it arrives, except the final one (`last`), which goes
          // out with the done event's text and finish reason.
          let last: object | null = null
          for await (const ev of llm.stream({ inputs: r.prompt ?? '', parameters: parameters(r) }, ac.signal)) {
            if (ev.type === 'token') {
              const e = {
                index: ev.index - 1, token_id: ev.id, token_text: ev.text, logprob: ev.logprob,
                ...(ev.topTokens ? { top_tokens: ev.topTokens.map((t) => ({ id: t.id, text: t.text, logprob: t.logprob, special: t.special })) } : {}),
              }
              if (last) call.write({ ...last, generated_tokens: ev.index - 1 })
              if (ev.last) last = e
              else { last = null; call.write({ ...e, generated_tokens: ev.index }) }
            } else if (ev.type === 'done') {
              call.write({ ...(last ?? { index: 0, token_id: -1, token_text: '' }), generated_text: ev.generatedText, finish_reason: ev.finishReason, generated_tokens: ev.generatedTokens })
              call.end()
              return
            } else {
              call.emit('error', Object.assign(new Error(ev.message), grpcError(new ServeError(ev.code, ev.message))))
              return
            }
          }
          call.end()
        } catch (e) {
          call.emit('error', Object.assign(new Error(), grpcError(toServeError(e))))
        }
      })()
    },
    ServerInfo: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const byName = new Map<string, { name: string; versions: number[]; methods: unknown[]; kind: string; ready: boolean }>()
      for (const s of registry.all()) {
        let e = byName.get(s.name)
        if (!e) byName.set(s.name, (e = { name: s.name, versions: [], methods: [], kind: s.servable.llm ? 'llm' : 'model', ready: false }))
        e.versions.push(s.version)
        e.ready ||= s.ready
        e.methods = [
          ...s.servable.methods.map((m) => ({ name: m.name, inputs: m.inputs, outputs: m.outputs })),
          ...(s.servable.llm ? [{ name: 'generate', inputs: ['prompt'], outputs: ['text'] }, { name: 'generated_stream', inputs: ['prompt'], outputs: ['text'] }] : []),
        ]
      }
      cb(null, { server_version: '0.1.0', servables: [...byName.values()] })
    },
  })
}
