/**
 * Composition root: servable directory -> compiled + validated configs -> replicas per device ->
 * registry -> one gRPC listener and one REST listener shared by every servable.
 */
import * as grpc from '@grpc/grpc-js'
import { loadServable, scanServables, type FoundServable } from './config/scan.ts'
import type { ValidServable } from './config/validate.ts'
import { ServeError, toServeError } from './errors.ts'
import { instanceLimits, policyFor, type ServingPolicy } from './runtime/policy.ts'
import { BodyParser } from './protocol/body-parse.ts'
import { loadMsServiceDefinition } from './protocol/grpc/ms-service.ts'
import { agentDevicePlan, planDevices, withIsolation, type DevicePlan, type DeviceType, type IsolationSetting } from './runtime/devices.ts'
import type { DeviceRef } from './config/device-flags.ts'
import { LiveServable } from './runtime/live-servable.ts'
import { ServableRegistry } from './runtime/registry.ts'
import { ServerMetrics } from './runtime/metrics.ts'
import { addMsService } from './protocol/grpc/ms-service.ts'
import { msServerOptions } from './protocol/grpc/ms-service.ts'
import { addMsServeService } from './protocol/grpc/generate-service.ts'
import { addOipService } from './protocol/oip/grpc.ts'
import { buildRestServer, type RestServer } from './protocol/rest/server.ts'
import { predictForProtocol } from './protocol/predict.ts'
import { diskLoader, Reloader } from './runtime/reloader.ts'
import { watchServables } from './config/watch.ts'
import { ApiKeys, type TlsMaterial } from './config/security.ts'
import { createLogger, eventLog, exportLogOptions, type Logger, type LogOptions } from './log.ts'
import { addHealthService, addReflection, opsInterceptor } from './protocol/grpc/ops.ts'
import { AgentHub, type AgentInfo } from './runtime/agent-hub.ts'
import type { EventLog } from './log.ts'

export interface HostPort { host: string; port: number }

export interface ServeOptions {
  dir: string
  /** This host's device ids. */
  devices: number[]
  /**
   * Every device `--devices` names, in order, when some are agents' (`0,hostb:0`): those get
   * replicas or pipeline stages on that agent (a staged servable's stage k on the k-th device).
   */
  deviceRefs?: DeviceRef[]
  deviceType: DeviceType
  /** Where replicas run: 'process' (default), 'thread' or 'inline' (see runtime/replica.ts). */
  isolation?: IsolationSetting
  /** Per-servable isolation (server YAML `servables.<name>.isolation`), over `isolation`. */
  isolationOf?: Record<string, IsolationSetting>
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
  /** Server-wide limits (timeouts, instances per request, watchdog): the YAML's, then the flags. */
  policy?: Partial<ServingPolicy>
  /**
   * Per-servable limits (server YAML `servables.<name>.*`), over `policy` and over the servable's
   * own defineServable options; see runtime/policy.ts for the whole order.
   */
  policyOf?: Record<string, Partial<ServingPolicy>>
  /** Exit when any servable fails to load (default: serve the others, report it unavailable). */
  strict?: boolean
  /** REST connection limits (see protocol/rest/server.ts). */
  http?: HttpLimits
  /** Where log lines go; default a JSON logger on stdout at `logOptions` (replicas log alike). */
  logger?: Logger
  logOptions?: LogOptions
  /** TLS for both listeners (gRPC requires client certificates when `ca` is set). */
  tls?: TlsMaterial | null
  /** API keys: when any is given, every inference route on both listeners needs one (Bearer). */
  apiKeys?: readonly string[]
  /** false: no access line per request (default true; other events are still logged). */
  accessLog?: boolean
  /** Where agents (`ms-serve agent`) connect; their devices become replicas of every servable. */
  agentsListen?: HostPort | null
  /** false: no replicas on this host's devices, only on agents' (default true). */
  localReplicas?: boolean
  /** false: no web console at /console (default true). */
  console?: boolean
}

export interface HttpLimits {
  /** Most open REST connections; 0 = no limit. */
  maxConnections?: number
  /** A request whose headers have not all arrived after this long is answered 408 and closed. */
  headersTimeoutMs?: number
  /** A request whose body has not all arrived after this long is answered 408 and closed. */
  bodyTimeoutMs?: number
}

export interface RunningServer {
  registry: ServableRegistry
  /** Applies a reload of the named servables now (the watcher calls this on file changes). */
  reload(names: Iterable<string>): Promise<void>
  grpcAddress: string | null
  restAddress: string | null
  close(): Promise<void>
  /** Ends every replica at once, without draining (a second shutdown signal). */
  kill(): void
}

/** A servable that could not be loaded: reported unavailable, the others serve. */
export interface LoadFailure { name: string; error: ServeError }

/**
 * Compiles and validates every servable version under `dir` (no replica is started). A servable
 * that fails goes to `failures` (or, with `strict`, stops everything).
 */
export async function loadServables(dir: string, versions: ServeOptions['versions'] = {}, strict = true): Promise<{ servables: ValidServable[]; failures: LoadFailure[] }> {
  const servables: ValidServable[] = []
  const failures: LoadFailure[] = []
  for (const found of scanServables(dir)) {
    try {
      servables.push(...await loadServable(found, versions[found.name]))
    } catch (e) {
      if (strict) throw e
      failures.push({ name: found.name, error: toServeError(e, 'CONFIG_INVALID') })
    }
  }
  return { servables, failures }
}

function failureLine(f: LoadFailure): string {
  return `ms-serve: servable ${f.name} is unavailable, it failed to load: ${f.error.message}`
}

/** Starts everything; resolves once both listeners are bound and every replica is ready. */
export async function serve(opts: ServeOptions): Promise<RunningServer> {
  exportLogOptions(opts.logOptions ?? {})
  const logger = opts.logger ?? createLogger(opts.logOptions)
  const log = eventLog(logger)
  const keys = ApiKeys.of(opts.apiKeys)
  const strict = opts.strict ?? false
  const { servables, failures } = await loadServables(opts.dir, opts.versions, strict)
  // One set of Prometheus instruments per server (never prom-client's global registry).
  const metrics = new ServerMetrics()
  const registry = new ServableRegistry(metrics)
  // The instance limits the body parser checks for both listeners, by servable name.
  const limits = instanceLimits(opts.policy, opts.policyOf)
  /** The policy of a version about to start (at start-up and on reload). */
  const policyOf = (s: ValidServable): ServingPolicy => policyFor(s.name, opts.policy, opts.policyOf, s.policy)
  // The body parser reads the instance limit by name: it follows the version that started serving
  // last (a reload that fails before it serves leaves the limit of the version still serving).
  // MS_SERVE_AGENT_INLINE_STAGE_BYTES: the largest stage sent inside its open message (default 64 MiB; bigger ones are fetched as files).
  const inlineStage = Number(process.env.MS_SERVE_AGENT_INLINE_STAGE_BYTES)
  const hub = opts.agentsListen ? new AgentHub(log, Number.isInteger(inlineStage) && inlineStage >= 0 ? inlineStage : undefined) : null
  registry.onServing = (s) => {
    limits.byName[s.name] = s.policy.maxInstancesPerRequest
    if (hub) attachAgents(s, hub, hub.list(), log)
  }
  if (hub) hub.onJoin = (a) => { for (const s of registry.all()) attachAgents(s, hub, [a], log) }
  if (opts.defaultLlm) {
    const s = servables.find((x) => x.name === opts.defaultLlm)
    if (!s?.llm) throw new ServeError('CONFIG_INVALID', `--default-llm ${opts.defaultLlm}: no LLM servable of that name in ${opts.dir} (LLM servables: ${servables.filter((x) => x.llm).map((x) => x.name).join(', ') || 'none'})`)
    registry.defaultLlm = opts.defaultLlm
  }
  // Threads are divided by the replicas started now; servables added later by hot reload share them.
  const local = opts.localReplicas === false ? [] : planDevices(opts.deviceType, opts.devices, servables.length * opts.devices.length, undefined, opts.isolation)
  const plans = opts.deviceRefs ? opts.deviceRefs.flatMap((r) => (r.agent ? [agentDevicePlan(opts.deviceType, r.agent, r.id)] : local.filter((p) => p.deviceId === r.id))) : local
  for (const r of opts.deviceRefs ?? []) if (r.agent) hub?.expect(r.agent)
  const create = (s: ValidServable) => new LiveServable(s, withIsolation(plans, opts.isolationOf?.[s.name]), {
    policy: policyOf(s), metrics, log,
    ...(hub ? { transport: (d: DevicePlan) => (d.agent ? hub.transport(d.agent) : undefined), stageLinks: hub.openStage } : {}),
  })
  const live = servables.map(create)
  const stopAll = () => Promise.all(live.map((l) => l.stop(true)))
  const started = await Promise.allSettled(live.map(async (l) => {
    const t0 = performance.now()
    try {
      await l.start()
    } catch (e) {
      await l.stop(true)
      throw e
    }
    registry.add(l)
    const ms = Math.round(performance.now() - t0)
    const isolation = l.replicas[0]?.isolation ?? 'process'
    // Replicas placed on agents (--devices NAME:ID) start in the background; they are counted apart.
    const readyNow = l.replicas.filter((r) => r.state === 'ready').length
    const waiting = l.replicas.length - readyNow
    log(`servable ${l.name} version ${l.version}: ${readyNow} replica(s) on ${opts.deviceType}:${opts.devices.join(',')} ready in ${ms} ms (isolation: ${isolation}${l.isolationReason ? `; ${l.isolationReason}` : ''})${waiting ? `; ${waiting} more wait for agents (${(opts.deviceRefs ?? []).filter((r) => r.agent).map((r) => `${r.agent}:${r.id}`).join(', ')})` : ''}`,
      { event: 'servable_ready', servable: l.name, version: l.version, replicas: readyNow, ...(waiting ? { waiting_for_agents: waiting } : {}), device_type: opts.deviceType, devices: opts.devices, isolation, ...(l.isolationReason ? { isolation_reason: l.isolationReason } : {}), ms })
  }))
  started.forEach((r, i) => {
    if (r.status === 'rejected') failures.push({ name: live[i]!.name, error: toServeError(r.reason, 'CONFIG_INVALID') })
  })
  if (failures.length > 0 && (strict || registry.all().length === 0)) {
    await stopAll()
    // One failure: its own message (it names file and fix). Several: one line each, named.
    if (failures.length === 1) throw failures[0]!.error
    const why = failures.map((f) => (f.error.message.includes(f.name) ? f.error.message : `servable ${f.name}: ${f.error.message}`)).join('\n')
    throw new ServeError('CONFIG_INVALID', strict ? why : `no servable could be loaded:\n${why}`)
  }
  for (const f of failures) {
    registry.markFailed(f.name, f.error.message)
    log(failureLine(f), { event: 'servable_failed', severity: 'error', servable: f.name, error: f.error.message })
  }

  const reloader = new Reloader(registry, { load: diskLoader(opts.dir, opts.versions ?? {}), create, log })
  const watcher = opts.watch === false ? null : watchServables(opts.dir, (names) => { void reloader.reload(names) })
  // Watching before the success lines print: a change made right after start is not missed.
  await watcher?.ready

  let grpcServer: grpc.Server | null = null
  let agentServer: grpc.Server | null = null
  let health: { stop(): void } | null = null
  let rest: RestServer | null = null
  let grpcAddress: string | null = null
  let restAddress: string | null = null
  const handler = predictForProtocol(registry)
  // Both gRPC listeners (clients, agents) use the same certificate (and client CA for mutual TLS).
  const tls = opts.tls
  const grpcCreds = () => (tls
    ? grpc.ServerCredentials.createSsl(tls.ca ?? null, [{ cert_chain: tls.cert, private_key: tls.key }], tls.ca !== undefined)
    : grpc.ServerCredentials.createInsecure())
  // One parse worker for large MindSpore bodies of both listeners (started on the first one).
  const bodies = new BodyParser(loadMsServiceDefinition().Predict!.requestDeserialize as never)
  try {
    if (opts.grpc) {
      grpcServer = new grpc.Server({ ...msServerOptions(opts.maxMsgMb), interceptors: [opsInterceptor({ keys, logger, accessLog: opts.accessLog ?? true })] })
      addMsService(grpcServer, handler, { bodies, limits })
      addMsServeService(grpcServer, registry)
      addOipService(grpcServer, registry)
      health = addHealthService(grpcServer, registry)
      addReflection(grpcServer)
      const port = await new Promise<number>((resolve, reject) => {
        grpcServer!.bindAsync(`${opts.grpc!.host}:${opts.grpc!.port}`, grpcCreds(), (err, p) => (err ? reject(err) : resolve(p)))
      })
      grpcAddress = `${opts.grpc.host}:${port}`
      log(`Serving gRPC server start success, listening on ${grpcAddress}`, { event: 'listening', protocol: 'grpc', address: grpcAddress, tls: Boolean(tls), client_certificates: Boolean(tls?.ca), api_key: keys !== null })
    }
    if (hub && opts.agentsListen) {
      // The agent link: its own listener (agents need not reach the client ports), the same TLS
      // and API keys as the others, keepalive pings to notice a cut link within seconds.
      agentServer = new grpc.Server({ ...msServerOptions(512), 'grpc.keepalive_time_ms': 2000, 'grpc.keepalive_timeout_ms': 2000, 'grpc.keepalive_permit_without_calls': 1, 'grpc.http2.min_ping_interval_without_data_ms': 1000, interceptors: [opsInterceptor({ keys, logger, accessLog: false })] })
      hub.addTo(agentServer)
      const a = opts.agentsListen
      const port = await new Promise<number>((resolve, reject) => {
        agentServer!.bindAsync(`${a.host}:${a.port}`, grpcCreds(), (err, p) => (err ? reject(err) : resolve(p)))
      })
      const address = `${a.host}:${port}`
      log(`Serving agents link start success, listening on ${address}`, { event: 'listening', protocol: 'agents', address, tls: Boolean(tls), api_key: keys !== null })
    }
    if (opts.rest) {
      rest = buildRestServer({ registry, maxMsgMb: opts.maxMsgMb, always200: opts.restAlways200 ?? false, bodies, limits, http: opts.http ?? {}, tls: opts.tls ?? null, keys, logger, accessLog: opts.accessLog ?? true, console: opts.console ?? true })
      await rest.listen({ host: opts.rest.host, port: opts.rest.port })
      const addr = rest.server.address()
      const port = typeof addr === 'object' && addr ? addr.port : opts.rest.port
      restAddress = `${opts.rest.host}:${port}`
      const tls = opts.tls
      log(`Serving RESTful server start success, listening on ${restAddress}`, { event: 'listening', protocol: tls ? 'https' : 'http', address: restAddress, tls: Boolean(tls), client_certificates: Boolean(tls?.ca && tls.clientAuth === 'both'), api_key: keys !== null })
    }
  } catch (e) {
    health?.stop()
    grpcServer?.forceShutdown()
    agentServer?.forceShutdown()
    await rest?.close()
    await watcher?.close()
    await bodies.close()
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
      health?.stop()
      await watcher?.close()
      await reloader.settle()
      // Stop accepting, let in-flight requests finish, then stop replicas.
      await Promise.all([
        rest?.closeGracefully(),
        grpcServer ? new Promise<void>((r) => grpcServer!.tryShutdown(() => r())) : undefined,
      ])
      await bodies.close()
      await Promise.all(registry.all().map((l) => l.stop()))
      hub?.close()
      agentServer?.forceShutdown()
    },
    kill() {
      for (const l of registry.all()) l.kill()
    },
  }
}

/** Which agents' replicas each servable version has (so a rejoin or a second onServing adds none twice). */
const attached = new WeakMap<LiveServable, Set<string>>()

/**
 * Adds a replica per device of each agent to `s` (a servable version now serving, or every one
 * when an agent first joins). Their transports wait while an agent is away.
 */
function attachAgents(s: LiveServable, hub: AgentHub, agents: readonly AgentInfo[], log: EventLog): void {
  let have = attached.get(s)
  if (!have) attached.set(s, (have = new Set()))
  for (const a of agents) {
    // Agents --devices names serve what is placed on them, not a whole replica per device.
    if (have.has(a.name) || a.placed) continue
    have.add(a.name)
    for (const id of a.devices) {
      const device = agentDevicePlan(a.deviceType === 'cuda' ? 'cuda' : 'cpu', a.name, id, Math.max(1, Math.floor(a.cores / Math.max(1, a.devices.length))))
      s.addReplica(device, hub.transport(a.name), log).then(
        () => log(`servable ${s.name} version ${s.version}: replica ready on agent ${a.name} device ${id}`, { event: 'replica_ready', servable: s.name, version: s.version, agent: a.name, device: id }),
        () => { /* logged by the pool; restarts follow */ },
      )
    }
  }
}
