/**
 * What an operator needs on the gRPC listener: the standard health service
 * (`grpc.health.v1.Health`, grpc-health-check) with one status per servable, server reflection
 * (`@grpc/reflection`, so grpcurl can list and call the services), and one interceptor for every
 * call that takes or makes its request id (`x-request-id` metadata, echoed back), checks the API key
 * (`authorization: Bearer KEY` metadata; health and reflection stay open) and writes the access line.
 */
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { HealthImplementation, protoPath as healthProtoPath, type ServingStatus } from 'grpc-health-check'
import { ReflectionService } from '@grpc/reflection'
import type { ServableRegistry } from '../../runtime/registry.ts'
import { isOpenGrpcPath, unauthenticated, type ApiKeys } from '../../config/security.ts'
import { accessWriter, type Logger } from '../../log.ts'
import { MS_PROTO_LOADER_OPTIONS, MS_SERVICE_NAME, protoDir } from './ms-service.ts'
import { MS_SERVE_SERVICE } from './generate-service.ts'
import { OIP_SERVICE } from '../oip/grpc.ts'
import { acceptedRequestId, grpcAccessOf, newRequestId } from '../request-id.ts'

export interface GrpcOpsOptions {
  keys: ApiKeys | null
  logger: Logger
  /** false: no access lines. */
  accessLog?: boolean
}

/** The interceptor every call passes (see the file comment). */
export function opsInterceptor(o: GrpcOpsOptions): grpc.ServerInterceptor {
  const access = o.accessLog === false ? null : accessWriter(o.logger, 'grpc call')
  return (method, call) => {
    const t0 = performance.now()
    let id = ''
    let md0: grpc.Metadata | undefined
    const checked = o.keys !== null && !isOpenGrpcPath(method.path)
    const ic: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(call, {
      start: (next) => next({
        onReceiveMetadata: (md, mdNext) => {
          id = acceptedRequestId(md.get('x-request-id')[0]) ?? newRequestId()
          md.set('x-request-id', id)
          md0 = md
          if (checked) {
            const auth = md.get('authorization')[0]
            if (!o.keys!.check(typeof auth === 'string' ? auth : undefined)) {
              ic.sendStatus({ code: grpc.status.UNAUTHENTICATED, details: unauthenticated(auth !== undefined).message })
              return
            }
          }
          mdNext(md)
        },
      }),
      sendMetadata: (md, next) => {
        md.set('x-request-id', id)
        next(md)
      },
      sendStatus: (status, next) => {
        access?.({
          event: 'access', protocol: 'grpc', request_id: id, rpc: method.path, grpc_status: status.code,
          duration_ms: Math.round((performance.now() - t0) * 1000) / 1000, peer: call.getPeer(), ...grpcAccessOf(md0),
        })
        next(status)
      },
    })
    return ic
  }
}

/**
 * Adds the health service and keeps its statuses current: "" (the whole server) is SERVING while
 * every servable serves and none failed to load; each servable name (and "name/version") is
 * SERVING while a replica of it is ready; ms-serve's two services follow "". Statuses are
 * refreshed once a second and only changes reach Watch streams.
 */
export function addHealthService(server: grpc.Server, registry: ServableRegistry): { stop(): void } {
  const health = new HealthImplementation()
  const last = new Map<string, ServingStatus>()
  const set = (name: string, st: ServingStatus) => {
    if (last.get(name) === st) return
    last.set(name, st)
    health.setStatus(name, st)
  }
  const refresh = () => {
    const all = registry.all()
    const want = new Map<string, ServingStatus>()
    for (const s of all) {
      if (want.get(s.name) !== 'SERVING') want.set(s.name, s.ready ? 'SERVING' : 'NOT_SERVING')
      want.set(`${s.name}/${s.version}`, s.ready ? 'SERVING' : 'NOT_SERVING')
    }
    for (const name of registry.failed.keys()) if (!want.has(name)) want.set(name, 'NOT_SERVING')
    const overall: ServingStatus = all.length > 0 && all.every((s) => s.ready) && registry.failed.size === 0 ? 'SERVING' : 'NOT_SERVING'
    for (const name of ['', MS_SERVICE_NAME, MS_SERVE_SERVICE, OIP_SERVICE]) want.set(name, overall)
    // A servable (version) gone since the last refresh is no longer served.
    for (const name of last.keys()) if (!want.has(name)) want.set(name, 'NOT_SERVING')
    for (const [name, st] of want) set(name, st)
  }
  refresh()
  health.addToServer(server)
  const timer = setInterval(refresh, 1000)
  timer.unref()
  return { stop: () => clearInterval(timer) }
}

/** Adds server reflection over ms-serve's services and the health service. */
export function addReflection(server: grpc.Server): void {
  const pkg = protoLoader.loadSync([`${protoDir()}/ms_service.proto`, `${protoDir()}/ms_serve.proto`, `${protoDir()}/oip_inference.proto`, healthProtoPath], { ...MS_PROTO_LOADER_OPTIONS, includeDirs: [protoDir()] })
  new ReflectionService(pkg).addToServer(server)
}
