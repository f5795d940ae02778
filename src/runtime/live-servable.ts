/**
 * One servable version being served: the batching loop. A dynamic-batching queue per method (the
 * pure rule is batching/dynamic-batcher.ts), batches sent to the replica its ReplicaPool picks
 * (replica-pool.ts: least busy, restarts), deadlines and cancellation, drain, and statistics.
 */
import type { EventLog } from '../log.ts'
import { BatchQueue, type QueuedItem } from '../batching/dynamic-batcher.ts'
import { factError, ServeError, toServeError } from '../errors.ts'
import type { ValidMethod, ValidServable } from '../config/validate.ts'
import type { Value } from '../tensor.ts'
import { onAgent, pipelinePlans, type DevicePlan } from './devices.ts'
import { Replica } from './replica.ts'
import { ReplicaPool } from './replica-pool.ts'
import { chooseIsolation } from './auto-isolation.ts'
import type { StageLinkOpener, TransportFactory } from './transport.ts'
import type { ModelInfo } from './messages.ts'
import { fromWire, type WireResult } from './wire.ts'
import { policyFor, type ServingPolicy } from './policy.ts'
import { IdleWaiters } from './idle.ts'
import { prepareLlm } from './llm-dispatch.ts'
import { ServerMetrics, type Protocol } from './metrics.ts'

interface Observer { observe(v: number): void }
interface MethodSeries { queue: Observer; byProtocol: Map<string, { duration: Observer; outcomes: Map<string, { inc(): void }> }> }

import type { InstanceOutcome } from './predict-outcome.ts'
import { predictSignature, type PredictSignature, type ValidInstances } from './valid-predict.ts'

/**
 * One request's instances: outcomes fill in as batches finish; it resolves when the last one lands.
 * `done` is set once it is answered (or timed out / cancelled): its still-queued jobs are dropped.
 */
interface PendingRequest {
  outcomes: InstanceOutcome[]
  remaining: number
  done: boolean
  resolve: (r: InstanceOutcome[]) => void
  timer?: NodeJS.Timeout
}
interface Job { inst: Record<string, Value>; req: PendingRequest; index: number }

function settle(job: Job, outcome: InstanceOutcome): void {
  const req = job.req
  if (req.done) return
  req.outcomes[job.index] = outcome
  if (--req.remaining === 0) finish(req)
}

/** Marks a request answered (its queued jobs are then dropped) and stops its deadline timer. */
function close(req: PendingRequest): void {
  req.done = true
  if (req.timer) clearTimeout(req.timer)
}

function finish(req: PendingRequest): void {
  close(req)
  req.resolve(req.outcomes)
}

/** How one predict may end early: a deadline, or the client going away. */
export interface PredictOptions {
  /** 0 or absent: no deadline. */
  timeoutMs?: number
  /** Registers the callback to run if the client goes away (cheaper per request than an AbortSignal). */
  onCancel?: (cancel: () => void) => void
}

/** How a LiveServable is built: its limits, and (tests, remote replicas) the transport of each device. */
export interface LiveServableOptions {
  policy?: ServingPolicy
  /** The transport of a device's replica; default the local one of its isolation. */
  transport?: (device: DevicePlan) => TransportFactory | undefined
  /** Opens the pipeline stages replicas place on agents (agent-hub.ts openStage). */
  stageLinks?: StageLinkOpener | null
  /** Restart back-off (default replica-pool.ts restartDelayMs). */
  restartDelayMs?: (failures: number) => number
  log?: EventLog
  /** The server's instruments (metrics.ts); default a private set (unit tests). */
  metrics?: ServerMetrics
}

export interface ModelStats {
  name: string; executions: number; inferences: number; padded: number; computeMs: number; batchSizes: Record<number, number>
  /** A staged model: milliseconds each stage was busy (summed over batches and replicas). */
  stageMs?: number[]
}
export interface MethodStats { requests: number; instances: number; errors: number; batches: number; queueMs: number; batchSizes: Record<number, number> }

export class LiveServable {
  readonly pool: ReplicaPool
  private queues = new Map<string, BatchQueue<Job>>()
  private timers = new Map<string, NodeJS.Timeout>()
  readonly modelStats: ModelStats[]
  readonly methodStats = new Map<string, MethodStats>()
  readonly policy: ServingPolicy
  readonly metrics: ServerMetrics
  /** Prometheus label children, made once (per model at construction, per method on first use). */
  private readonly modelSeries: Array<{ compute: Observer; batch: Observer }>
  private readonly methodSeries = new Map<string, MethodSeries>()
  /** Resolves waiters of drain() when the last queued or in-flight work finishes. */
  private readonly idle = new IdleWaiters()
  private readonly log: EventLog
  /** What the listener checks each request against (valid-predict.ts), built once the replicas report their models. */
  signature: PredictSignature

  constructor(readonly servable: ValidServable, devices: DevicePlan[], opts: LiveServableOptions = {}) {
    this.policy = opts.policy ?? policyFor(servable.name)
    this.metrics = opts.metrics ?? new ServerMetrics()
    this.modelSeries = servable.models.map((m) => ({
      compute: this.metrics.computeDuration.labels(servable.name, String(servable.version), m.name),
      batch: this.metrics.batchSize.labels(servable.name, String(servable.version), m.name),
    }))
    const sv = { servable: servable.name, version: String(servable.version) }
    // The series exists from the start (0), so rate() and alerts see the first restart.
    this.metrics.replicaRestarts.inc(sv, 0)
    this.signature = predictSignature(servable, [])
    const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'))
    this.log = log
    // A servable with staged models runs one pipeline replica per `stages` devices (devices.ts).
    const stages = Math.max(1, servable.llm?.options.stages ?? 1, ...servable.models.map((m) => m.stages?.length ?? 1))
    const plans = pipelinePlans(devices, stages)
    // Replicas that need an agent (one there, or a stage there) start after the servable, like an
    // agent's own: the servable is loaded, and ready once they are.
    this.stageLinks = opts.stageLinks ?? null
    const replicas = plans.filter((d) => !onAgent(d)).map((d) => new Replica(servable, d, this.policy.watchdogMs, opts.transport?.(d), log, this.stageLinks))
    this.onAgents = plans.filter(onAgent).map((d) => ({ device: d, open: opts.transport?.(d) }))
    this.pool = new ReplicaPool(replicas, {
      available: () => this.pumpAll(),
      idle: () => this.checkIdle(),
      allDown: (why) => this.failQueued(new ServeError('REPLICA_CRASHED', `every replica of ${this.name} is down (last: ${why}); restarting`)),
      restarting: () => this.metrics.replicaRestarts.inc(sv),
      log,
    }, opts.restartDelayMs)
    this.modelStats = servable.models.map((m) => ({ name: m.name, executions: 0, inferences: 0, padded: 0, computeMs: 0, batchSizes: {} }))
    for (const m of servable.methods) this.methodStats.set(m.name, { requests: 0, instances: 0, errors: 0, batches: 0, queueMs: 0, batchSizes: {} })
  }

  get name(): string { return this.servable.name }
  get version(): number { return this.servable.version }
  get replicas(): readonly Replica[] { return this.pool.replicas }
  get ready(): boolean { return this.pool.ready }
  get restarts(): number { return this.pool.restarts }

  /** Why the replicas run where they do, when `auto` chose it (the servable_ready line says it). */
  isolationReason: string | undefined

  /** Replicas placed on agents by the server's --devices: started by start(), not awaited. */
  private readonly onAgents: Array<{ device: DevicePlan; open: TransportFactory | undefined }>
  private readonly stageLinks: StageLinkOpener | null

  /** Starts every replica; rejects with the first load error (CONFIG_INVALID names file and fix). */
  async start(): Promise<void> {
    const auto = this.pool.replicas.filter((r) => r.device.isolation === 'auto')
    if (auto.length > 0) {
      const choice = await chooseIsolation(this.servable, auto[0]!.device)
      for (const r of auto) r.useIsolation(choice.isolation)
      this.isolationReason = `auto: ${choice.reason}`
    }
    // An LLM servable's tokenizer loads in the listener beside its replicas (llm-dispatch.ts validates with it).
    await Promise.all([this.pool.start(), prepareLlm(this.servable)])
    // A servable served only by remote agents has no replica yet: it is configured by the first one.
    if (this.pool.replicas.length > 0) this.configure(this.pool.replicas[0]!.models)
    for (const { device, open } of this.onAgents) {
      this.addReplica(device, open).then(
        () => this.log(`servable ${this.name} version ${this.version}: replica ${describePlacement(device)} ready`, { event: 'replica_ready', servable: this.name, version: this.version, agent: device.agent ?? (device.stageDevices ?? []).map((d) => d.agent ?? 'here').join(',') }),
        () => { /* logged by the pool; restarts follow */ },
      )
    }
  }

  private configured = false

  /** The request checks and batch queues, from the models the first replica reported. */
  private configure(models: readonly ModelInfo[]): void {
    if (this.configured) return
    this.configured = true
    this.signature = predictSignature(this.servable, models)
    for (const m of this.servable.methods) {
      // A model in pipeline stages gets micro-batches: a batch of maxBatchSize / stages, so a full
      // queue makes one batch per stage and the stages work on different batches at once.
      const sizes = m.models.map((i) => {
        const stages = this.servable.models[i]!.stages?.length ?? 1
        return models[i]!.fixedBatch ? models[i]!.maxBatchSize : Math.max(1, Math.ceil(models[i]!.maxBatchSize / stages))
      })
      const waits = m.models.map((i) => this.servable.models[i]!.maxWaitMs)
      const limits = m.models.map((i) => this.servable.models[i]!.maxQueueSize)
      this.queues.set(m.name, new BatchQueue<Job>(sizes.length ? Math.min(...sizes) : 32, waits.length ? Math.min(...waits) : 0, limits.length ? Math.min(...limits) : 10000))
    }
  }

  /**
   * Adds a replica on a remote agent's device (runtime/agent-hub.ts): it starts now and takes work
   * once loaded. Rejects with its start error (a restart with back-off follows, as for an exit).
   */
  async addReplica(device: DevicePlan, open?: TransportFactory, log?: EventLog): Promise<void> {
    const r = new Replica(this.servable, device, this.policy.watchdogMs, open, log ?? this.log, this.stageLinks)
    await this.pool.add(r)
    this.configure(r.models)
    this.pumpAll()
  }

  /** True when `method`'s queue cannot take one more instance (checked before a body is read). */
  queueFull(method: string): boolean {
    const q = this.queues.get(method)
    return q !== undefined && q.length >= q.maxQueueSize
  }

  /** QUEUE_FULL for `method`, with its limit as facts (protocol words it). */
  queueFullError(method: string): ServeError {
    const limit = this.queues.get(method)?.maxQueueSize ?? 0
    return factError('QUEUE_FULL', `the queue of servable ${this.name} method ${method} is full (limit ${limit} instances)`, { reason: 'queue_full', servable: this.name, method, limit })
  }

  method(name: string): ValidMethod | undefined {
    return this.servable.methods.find((m) => m.name === name)
  }

  /**
   * Queues the instances of one request and resolves with one outcome per instance, in order.
   * A deadline or an aborted signal rejects it (TIMEOUT / CANCELLED); its jobs still queued are
   * then dropped, not run. Jobs already sent to a replica finish there and are ignored.
   */
  predict(method: ValidMethod, instances: ValidInstances, opts: PredictOptions = {}): Promise<InstanceOutcome[]> {
    const q = this.queues.get(method.name)!
    const st = this.methodStats.get(method.name)!
    st.requests++
    st.instances += instances.length
    return new Promise<InstanceOutcome[]>((resolve, reject) => {
      const req: PendingRequest = { outcomes: new Array<InstanceOutcome>(instances.length), remaining: instances.length, done: false, resolve }
      const jobs = instances.map((inst, index): Job => ({ inst, req, index }))
      if (!q.pushAll(jobs, performance.now())) {
        st.errors++
        reject(this.queueFullError(method.name))
        return
      }
      const abandon = (err: ServeError) => {
        if (req.done) return
        close(req)
        st.errors++
        // Free its queue places at once: the queue limit counts live work only.
        q.remove((job) => job.req === req)
        reject(err)
        this.checkIdle()
      }
      const timeoutMs = opts.timeoutMs ?? 0
      if (timeoutMs > 0) {
        req.timer = setTimeout(() => abandon(new ServeError('TIMEOUT', `request to servable ${this.name} method ${method.name} did not finish within its timeout of ${timeoutMs} ms`)), timeoutMs)
      }
      opts.onCancel?.(() => abandon(new ServeError('CANCELLED', 'the client cancelled the request')))
      this.pump(method.name)
    })
  }

  /** Sends as many batches of `method` as replicas can take now; arms a timer for a partial batch. */
  private pump(method: string): void {
    const q = this.queues.get(method)!
    for (;;) {
      const replica = this.pool.pick()
      const d = q.next(performance.now(), replica !== null)
      if (d.kind === 'idle') return
      if (d.kind === 'wait') {
        if (!this.timers.has(method)) {
          this.timers.set(method, setTimeout(() => { this.timers.delete(method); this.pump(method) }, Math.max(0, d.ms)))
        }
        return
      }
      this.dispatch(replica!, method, d.items)
    }
  }

  private dispatch(replica: Replica, method: string, all: QueuedItem<Job>[]): void {
    // Jobs of requests already answered (timed out, cancelled) are dropped here, never run.
    const items = all.some((i) => i.value.req.done) ? all.filter((i) => !i.value.req.done) : all
    if (items.length === 0) { this.checkIdle(); return }
    // Rotate only when a batch really goes out: pump() also picks a replica before finding the queue empty.
    this.pool.dispatched(replica)
    const st = this.methodStats.get(method)!
    const now = performance.now()
    st.batches++
    st.batchSizes[items.length] = (st.batchSizes[items.length] ?? 0) + 1
    const queueHist = this.series(method).queue
    for (const it of items) {
      st.queueMs += now - it.enqueuedAt
      queueHist.observe((now - it.enqueuedAt) / 1000)
    }
    replica.run(method, items.map((i) => i.value.inst)).then(
      ({ results, runs }) => {
        for (const r of runs) {
          const ms = this.modelStats[r.model]!
          ms.executions++
          ms.inferences += r.batch
          ms.padded += r.padded
          ms.computeMs += r.ms
          ms.batchSizes[r.batch] = (ms.batchSizes[r.batch] ?? 0) + 1
          if (r.stageMs) {
            const acc = (ms.stageMs ??= r.stageMs.map(() => 0))
            r.stageMs.forEach((x, k) => { acc[k] = (acc[k] ?? 0) + x })
          }
          const m = this.modelSeries[r.model]!
          m.compute.observe(r.ms / 1000)
          m.batch.observe(r.batch)
        }
        results.forEach((r, i) => settle(items[i]!.value, toOutcome(r)))
        if (results.some((r) => 'e' in r)) st.errors++
        this.pumpAll()
      },
      (e) => {
        st.errors++
        const err = toServeError(e)
        for (const it of items) settle(it.value, { error: err })
        this.pumpAll()
      },
    )
  }

  private pumpAll(): void {
    for (const m of this.queues.keys()) this.pump(m)
    this.checkIdle()
  }

  private failQueued(err: ServeError): void {
    for (const q of this.queues.values()) for (const it of q.drain()) settle(it.value, { error: err })
  }

  private busy(): boolean {
    for (const q of this.queues.values()) if (q.length > 0) return true
    return this.pool.busy()
  }

  /** Wakes drain() waiters once nothing is queued or in flight (called on every completion). */
  private checkIdle(): void {
    if (this.idle.pending && !this.busy()) this.idle.wake()
  }

  /** Resolves once every queued and in-flight instance and LLM stream has finished (or `timeoutMs` passed). */
  drain(timeoutMs = 30_000): Promise<void> {
    return this.busy() ? this.idle.wait(timeoutMs) : Promise.resolve()
  }

  /** Ends every replica now (a second shutdown signal): no draining, no restarts. */
  kill(): void {
    this.pool.kill()
  }

  /** Stops replicas after in-flight work; queued work fails with SERVABLE_NOT_READY. */
  async stop(force = false): Promise<void> {
    for (const t of this.timers.values()) clearTimeout(t)
    this.failQueued(new ServeError('SERVABLE_NOT_READY', `servable ${this.name} version ${this.version} is shutting down`))
    await this.pool.stop(force)
  }

  /** The label children of `method` (made on first use, then a map lookup: no label hashing per request). */
  private series(method: string): MethodSeries {
    let s = this.methodSeries.get(method)
    if (!s) {
      const v = String(this.version)
      s = { queue: this.metrics.queueDuration.labels(this.name, v, method), byProtocol: new Map() }
      this.methodSeries.set(method, s)
    }
    return s
  }

  /** Counts and times one answered predict of `method` (registry.ts calls it). */
  recordRequest(method: string, protocol: Protocol, outcome: string, seconds: number): void {
    const s = this.series(method)
    let p = s.byProtocol.get(protocol)
    if (!p) {
      const v = String(this.version)
      p = { duration: this.metrics.requestDuration.labels(this.name, v, method, protocol), outcomes: new Map() }
      s.byProtocol.set(protocol, p)
    }
    let c = p.outcomes.get(outcome)
    if (!c) p.outcomes.set(outcome, (c = this.metrics.requests.labels(this.name, String(this.version), method, protocol, outcome)))
    c.inc()
    p.duration.observe(seconds)
  }

  /** Instances of `method` waiting in its queue. */
  queued(method: string): number {
    return this.queues.get(method)?.length ?? 0
  }
}

function toOutcome(r: WireResult): InstanceOutcome {
  if ('e' in r) return { error: toServeError(r.e) }
  const outputs: Record<string, Value> = {}
  for (const k in r.o) outputs[k] = fromWire(r.o[k]!)
  return { outputs }
}

/** Where a replica runs, for its ready line: `on agent b device 0`, or `with stages on here:0, b:0`. */
function describePlacement(d: DevicePlan): string {
  if (!d.stageDevices || d.agent) return `on agent ${d.agent} device ${d.deviceId}`
  return `with stages on ${d.stageDevices.map((s) => `${s.agent ?? 'here'}:${s.deviceId}`).join(', ')}`
}
