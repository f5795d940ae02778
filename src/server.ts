/**
 * Composition root: servable directory -> compiled + validated configs -> replicas per device ->
 * registry -> one gRPC listener and one REST listener shared by every servable.
 */
import * as grpc from '@grpc/grpc-js'
import type { FastifyInstance } from 'fastify'
import { loadServable, scanServables } from './config/scan.ts'
import type { ValidServable } from './config/validate.ts'
import { ServeError } from './errors.ts'
import { planDevices, withIsolation, type DeviceType, type Isolation } from './runtime/devices.ts'
import { LiveServable } from './runtime/live-servable.ts'
import { ServableRegistry } from './runtime/registry.ts'
import { addMsService } from './protocol/grpc/ms-service.ts'
import { msServerOptions } from './protocol/grpc/ms-service.ts'
import { addMsServeService } from './protocol/grpc/generate-service.ts'
import { buildRestServer } from './protocol/rest/server.ts'
import { predictForProtocol } from './protocol/predict.ts'
import { Reloader } from './runtime/reloader.ts'
import { watchServables } from './config/watch.ts'

export interface HostPort { host: string; port: number }

export interface ServeOptions {
  dir: string
  devices: number[]
  deviceType: DeviceType
  /** Where replicas run: 'process' (default), 'thread' or 'inline' (see runtime/replica.ts). */
  isolation?: Isolation
  /** Per-servable isolation (server YAML `servables.<name>.isolation`), over `isolation`. */
  isolationOf?: Record<string, Isolation>
  grpc: HostPort | null
  rest: HostPort | null
  /** Largest request body / message, MiB (MindSpore default 100). */
  maxMsgMb: number
  /** Answer every REST request with HTTP 200 as MindSpore does (errors still carry error_msg). */
  restAlways200?: boolean
  /** LLM servable used by routes that name no model (default: the first LLM servable by name). */
  defaultLlm?: string
  /** Versions to serve per servable name; default the newest. */
  versions?: Record<string, number[] | 'all'>
  /** Watch the servable directory and hot-reload changed servables (default true). */
  watch?: boolean
  log?: (line: string) => void
}

export interface RunningServer {
  registry: ServableRegistry
  /** Applies a reload of the named servables now (the watcher calls this on file changes). */
  reload(names: Iterable<string>): Promise<void>
  grpcAddress: string | null
  restAddress: string | null
  close(): Promise<void>
}

/** Compiles and validates every servable version under `dir` (no replica is started). */
export async function loadServables(dir: string, versions: ServeOptions['versions'] = {}): Promise<ValidServable[]> {
  const out: ValidServable[] = []
  for (const found of scanServables(dir)) out.push(...await loadServable(found, versions[found.name]))
  return out
}

/** Starts everything; resolves once both listeners are bound and every replica is ready. */
export async function serve(opts: ServeOptions): Promise<RunningServer> {
  const log = opts.log ?? ((l: string) => process.stdout.write(l + '\n'))
  const servables = await loadServables(opts.dir, opts.versions)
  const registry = new ServableRegistry()
  if (opts.defaultLlm) {
    const s = servables.find((x) => x.name === opts.defaultLlm)
    if (!s?.llm) throw new ServeError('CONFIG_INVALID', `--default-llm ${opts.defaultLlm}: no LLM servable of that name in ${opts.dir} (LLM servables: ${servables.filter((x) => x.llm).map((x) => x.name).join(', ') || 'none'})`)
    registry.defaultLlm = opts.defaultLlm
  }
  // Threads are divided by the replicas started now; servables added later by hot reload share them.
  const plans = planDevices(opts.deviceType, opts.devices, servables.length * opts.devices.length, undefined, opts.isolation)
  const live = servables.map((s) => new LiveServable(s, withIsolation(plans, opts.isolationOf?.[s.name])))
  const stopAll = () => Promise.all(live.map((l) => l.stop(true)))
  try {
    await Promise.all(live.map(async (l) => {
      const t0 = performance.now()
      await l.start()
      registry.add(l)
      log(`servable ${l.name} version ${l.version}: ${l.replicas.length} replica(s) on ${opts.deviceType}:${opts.devices.join(',')} ready in ${Math.round(performance.now() - t0)} ms (isolation: ${l.replicas[0]?.isolation ?? 'process'})`)
    }))
  } catch (e) {
    await stopAll()
    throw e
  }

  const reloader = new Reloader(registry, { dir: opts.dir, plans, isolationOf: opts.isolationOf ?? {}, versions: opts.versions ?? {}, log })
  const watcher = opts.watch === false ? null : watchServables(opts.dir, (names) => { void reloader.reload(names) })
  // Watching before the success lines print: a change made right after start is not missed.
  await watcher?.ready

  let grpcServer: grpc.Server | null = null
  let rest: FastifyInstance | null = null
  let grpcAddress: string | null = null
  let restAddress: string | null = null
  const handler = predictForProtocol(registry)
  try {
    if (opts.grpc) {
      grpcServer = new grpc.Server(msServerOptions(opts.maxMsgMb))
      addMsService(grpcServer, handler)
      addMsServeService(grpcServer, registry)
      const port = await new Promise<number>((resolve, reject) => {
        grpcServer!.bindAsync(`${opts.grpc!.host}:${opts.grpc!.port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)))
      })
      grpcAddress = `${opts.grpc.host}:${port}`
      log(`Serving gRPC server start success, listening on ${grpcAddress}`)
    }
    if (opts.rest) {
      rest = buildRestServer({ registry, maxMsgMb: opts.maxMsgMb, always200: opts.restAlways200 ?? false })
      await rest.listen({ host: opts.rest.host, port: opts.rest.port })
      const addr = rest.server.address()
      const port = typeof addr === 'object' && addr ? addr.port : opts.rest.port
      restAddress = `${opts.rest.host}:${port}`
      log(`Serving RESTful server start success, listening on ${restAddress}`)
    }
  } catch (e) {
    grpcServer?.forceShutdown()
    await rest?.close()
    await watcher?.close()
    await stopAll()
    const err = e as NodeJS.ErrnoException
    if (err.code === 'EADDRINUSE' || /address already in use|No address added/i.test(err.message)) {
      throw new ServeError('CONFIG_INVALID', `cannot listen: ${err.message}. Another process holds the port; pick another with --grpc HOST:PORT / --rest HOST:PORT (port 0 = any free port)`)
    }
    throw e
  }


  return {
    registry,
    grpcAddress,
    restAddress,
    reload: (names) => reloader.reload(names),
    async close() {
      await watcher?.close()
      await reloader.settle()
      // Stop accepting, let in-flight requests finish, then stop replicas.
      await Promise.all([
        rest?.close(),
        grpcServer ? new Promise<void>((r) => grpcServer!.tryShutdown(() => r())) : undefined,
      ])
      await Promise.all(registry.all().map((l) => l.stop()))
    },
  }
}
