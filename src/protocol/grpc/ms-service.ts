/**
 * The MindSpore Serving compatible `MSService.Predict` RPC on a grpc-js server. Like MindSpore,
 * application errors always travel in `PredictReply.error_msg` with gRPC status OK; only the
 * transport (size limits, unknown methods) produces non-OK statuses.
 */
import type { PredictCall } from '../../runtime/registry.ts'
import { join } from 'node:path'
import { findPackageRoot } from '../../paths.ts'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { MS_STATUS, toServeError } from '../../errors.ts'
import { noteGrpcAccess } from '../request-id.ts'
import type { BodyParser, InstanceLimits } from '../body-parse.ts'
import type { PredictOutcome } from '../../runtime/predict-outcome.ts'
import {
  decodeInstances, encodeReply, errorReply, type MsErrorLike, type WirePredictReply, type WirePredictRequest,
} from './ms-codec.ts'

/** Decoding options shared by server, client and tests (see ms-codec.ts for why longs are Numbers). */
export const MS_PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: Number,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
}

export { findPackageRoot }

export const MS_SERVICE_NAME = 'mindspore.serving.proto.MSService'
export const MS_PREDICT_PATH = `/${MS_SERVICE_NAME}/Predict`

/** What a Predict handler receives: the registry's call (protocol `grpc`). */
export type MsPredictCall = PredictCall

/** The call for one decoded Predict; `timeoutMs` is what is left of the client's deadline. */
function predictCall(spec: WirePredictRequest['servable_spec'], instances: PredictCall['instances'], timeoutMs?: number): PredictCall {
  return {
    name: spec?.name ?? '',
    method: spec?.method_name ?? '',
    version: Number(spec?.version_number ?? 0),
    instances,
    protocol: 'grpc',
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
  }
}
/**
 * Answers one Predict (the registry's predict on the server). Identical per-instance failures must
 * come back collapsed (runtime/predict-outcome.ts collapseOutcomes): encodeReply does not merge them.
 */
export type MsPredictHandler = (req: MsPredictCall) => Promise<PredictOutcome<MsErrorLike>>

/** Absolute path of the directory holding ms-serve's .proto files. */
export function protoDir(): string {
  return join(findPackageRoot(), 'proto')
}

let cached: grpc.ServiceDefinition | undefined

const services = new Map<string, grpc.ServiceDefinition>()

/** Loads (once per service) `service` from proto/`file` with `options` (default MS_PROTO_LOADER_OPTIONS). */
export function loadServiceDefinition(file: string, service: string, options: protoLoader.Options = MS_PROTO_LOADER_OPTIONS): grpc.ServiceDefinition {
  let def = services.get(service)
  if (!def) {
    def = protoLoader.loadSync(file, { ...options, includeDirs: [protoDir()] })[service] as unknown as grpc.ServiceDefinition
    if (!def) throw new Error(`ms-serve: ${service} missing from ${file}`)
    services.set(service, def)
  }
  return def
}

/** Loads (once) the MSService definition from proto/ms_service.proto. */
export function loadMsServiceDefinition(): grpc.ServiceDefinition {
  if (cached) return cached
  const pkg = protoLoader.loadSync('ms_service.proto', { ...MS_PROTO_LOADER_OPTIONS, includeDirs: [protoDir()] })
  const def = pkg[MS_SERVICE_NAME]
  if (!def || !('Predict' in def)) throw new Error(`ms-serve: ${MS_SERVICE_NAME}.Predict missing from ms_service.proto`)
  cached = def as unknown as grpc.ServiceDefinition
  return cached
}

/** Server options matching MindSpore's default 100 MiB message limit (settable 1..512). */
export function msServerOptions(maxMsgMb = 100): grpc.ServerOptions {
  const bytes = Math.min(Math.max(Math.trunc(maxMsgMb), 1), 512) * 1024 * 1024
  return { 'grpc.max_receive_message_length': bytes, 'grpc.max_send_message_length': bytes }
}

/**
 * Runs one Predict: decode, call the handler, encode. Never rejects: every failure becomes a
 * reply whose error_msg carries the MindSpore status (a ServeError's `ms`, SYSTEM_ERROR otherwise).
 */
export async function handlePredict(req: WirePredictRequest, handler: MsPredictHandler): Promise<WirePredictReply> {
  const spec = req.servable_spec
  try {
    const result = await handler(predictCall(spec, decodeInstances(req)))
    return encodeReply(spec, result)
  } catch (e) {
    return safeErrorReply(spec, e)
  }
}

/** The client's deadline as milliseconds left (undefined when it set none). */
export function msLeft(call: grpc.ServerUnaryCall<unknown, unknown>): number | undefined {
  const d = call.getDeadline()
  const at = d instanceof Date ? d.getTime() : d
  return Number.isFinite(at) ? Math.max(1, at - Date.now()) : undefined
}

/** How Predict bodies are read when the server has a parse worker (large ones off this thread). */
export interface RawPredictOptions { bodies: BodyParser; limits: InstanceLimits }

/**
 * Registers MSService.Predict on `server`, answering through `handler`. With `raw`, grpc-js hands
 * over the message bytes undecoded: the instance count is checked before anything is decoded,
 * large messages are decoded in the parse worker, and a malformed message is INVALID_ARGUMENT
 * (grpc-js's own decode failure would be INTERNAL). Every other error keeps MindSpore's shape:
 * status OK with `error_msg`, which its clients read.
 */
export function addMsService(server: grpc.Server, handler: MsPredictHandler, raw?: RawPredictOptions): void {
  const def = loadMsServiceDefinition()
  if (!raw) {
    server.addService(def, {
      Predict: (call: grpc.ServerUnaryCall<WirePredictRequest, WirePredictReply>, callback: grpc.sendUnaryData<WirePredictReply>) => {
        // handlePredict never rejects; the catch only guards against grpc-js itself throwing in callback.
        handlePredict(call.request, handler).then((reply) => callback(null, reply)).catch(() => undefined)
      },
    })
    return
  }
  const rawDef = { ...def, Predict: { ...def.Predict!, requestDeserialize: (b: Buffer) => b } }
  server.addService(rawDef, {
    // No AbortSignal: grpc-js reports 'cancelled' at the end of every call (an AbortError costs a
    // stack capture); the client's deadline bounds the request instead.
    Predict: (call: grpc.ServerUnaryCall<Buffer, WirePredictReply>, callback: grpc.sendUnaryData<WirePredictReply>) => {
      const timeoutMs = msLeft(call)
      raw.bodies.parse({ kind: 'ms-grpc', body: call.request, limits: raw.limits }).then(
        async ({ instances, spec }) => {
          noteGrpcAccess(call.metadata, { servable: spec?.name ?? '', version: Number(spec?.version_number ?? 0), method: spec?.method_name ?? '', instances: instances.length })
          try {
            const result = await handler(predictCall(spec, instances, timeoutMs))
            callback(null, encodeReply(spec, result))
          } catch (e) {
            callback(null, safeErrorReply(spec, e))
          }
        },
        (e) => {
          const err = toServeError(e)
          if ((err.details as { malformed?: boolean } | undefined)?.malformed) callback({ code: grpc.status.INVALID_ARGUMENT, details: err.message })
          else callback(null, safeErrorReply(null, err))
        },
      ).catch(() => undefined)
    },
  })
}

/** The MindSpore error reply for `e`; a spec that cannot be echoed falls back to a bare SYSTEM_ERROR. */
function safeErrorReply(spec: WirePredictRequest['servable_spec'], e: unknown): WirePredictReply {
  try {
    return errorReply(spec, toServeError(e))
  } catch {
    return errorReply(null, { msStatus: MS_STATUS.SYSTEM_ERROR, message: 'Predict failed' })
  }
}
