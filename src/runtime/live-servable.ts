/**
 * One servable version being served: its replicas (one per device id), a dynamic-batching queue
 * per method, dispatch to the least-busy ready replica, crash restarts, and statistics.
 */
import { BatchQueue, type QueuedItem } from '../batching/dynamic-batcher.ts'
import { ServeError, toServeError } from '../errors.ts'
import type { ValidMethod, ValidServable } from '../config/validate.ts'
import type { Value } from '../tensor.ts'
import type { DevicePlan } from './devices.ts'
import { Replica } from './replica.ts'
import { fromWire, type WireResult } from './wire.ts'
import { policyFor, type ServingPolicy } from './policy.ts'
import { IdleWaiters } from './idle.ts'

export type InstanceOutcome = { outputs: Record<string, Value> } | { error: ServeError }

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

/** Groups a replica may hold at once: 2 lets the next batch cross the IPC pipe while one runs. */
const MAX_INFLIGHT_GROUPS = 2

export interface ModelStats { name: string; executions: number; inferences: number; padded: number; computeMs: number; batchSizes: Record<number, number> }
export interface MethodStats { requests: number; instances: number; errors: number; batches: number; queueMs: number; batchSizes: Record<number, number> }

export class LiveServable {
  readonly replicas: Replica[]
  private queues = new Map<string, BatchQueue<Job>>()
  private timers = new Map<string, NodeJS.Timeout>()
  readonly modelStats: ModelStats[]
  readonly methodStats = new Map<string, MethodStats>()
  private stopped = false
  private rr = 0
  private crashStreak = new Map<Replica, number>()
  restarts = 0
  /** Resolves waiters of drain() when the last queued or in-flight work finishes. */
  private readonly idle = new IdleWaiters()

  constructor(readonly servable: ValidServable, devices: DevicePlan[], readonly policy: ServingPolicy = policyFor(servable.name)) {
    this.replicas = devices.map((d) => new Replica(servable, d, policy.watchdogMs))
    this.modelStats = servable.models.map((m) => ({ name: m.name, executions: 0, inferences: 0, padded: 0, computeMs: 0, batchSizes: {} }))
    for (const m of servable.methods) this.methodStats.set(m.name, { requests: 0, instances: 0, errors: 0, batches: 0, queueMs: 0, batchSizes: {} })
  }

  get name(): string { return this.servable.name }
  get version(): number { return this.servable.version }
  get ready(): boolean { return this.replicas.some((r) => r.state === 'ready') }

  /** Starts every replica; rejects with the first load error (CONFIG_INVALID names file and fix). */
  async start(): Promise<void> {
    await Promise.all(this.replicas.map((r) => r.start()))
    const models = this.replicas[0]!.models
    for (const m of this.servable.methods) {
      const sizes = m.models.map((i) => models[i]!.maxBatchSize)
      const waits = m.models.map((i) => this.servable.models[i]!.maxWaitMs)
      const limits = m.models.map((i) => this.servable.models[i]!.maxQueueSize)
      this.queues.set(m.name, new BatchQueue<Job>(sizes.length ? Math.min(...sizes) : 32, waits.length ? Math.min(...waits) : 0, limits.length ? Math.min(...limits) : 10000))
    }
    for (const r of this.replicas) {
      r.onExit = (rep, why) => this.onReplicaExit(rep, why)
      r.onIdle = () => this.checkIdle()
    }
  }

  /** True when `method`'s queue cannot take one more instance (checked before a body is read). */
  queueFull(method: string): boolean {
    const q = this.queues.get(method)
    return q !== undefined && q.length >= q.maxQueueSize
  }

  queueLimit(method: string): number {
    return this.queues.get(method)?.maxQueueSize ?? 0
  }

  method(name: string): ValidMethod | undefined {
    return this.servable.methods.find((m) => m.name === name)
  }

  /**
   * Queues the instances of one request and resolves with one outcome per instance, in order.
   * A deadline or an aborted signal rejects it (TIMEOUT / CANCELLED); its jobs still queued are
   * then dropped, not run. Jobs already sent to a replica finish there and are ignored.
   */
  predict(method: ValidMethod, instances: Record<string, Value>[], opts: PredictOptions = {}): Promise<InstanceOutcome[]> {
    const q = this.queues.get(method.name)!
    const st = this.methodStats.get(method.name)!
    st.requests++
    st.instances += instances.length
    return new Promise<InstanceOutcome[]>((resolve, reject) => {
      const req: PendingRequest = { outcomes: new Array<InstanceOutcome>(instances.length), remaining: instances.length, done: false, resolve }
      const jobs = instances.map((inst, index): Job => ({ inst, req, index }))
      if (!q.pushAll(jobs, performance.now())) {
        st.errors++
        reject(new ServeError('QUEUE_FULL', `Serving Error: enqueued requests count exceeds the limit ${q.maxQueueSize}`))
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

  /** Least-busy ready replica with room; ties rotate so idle replicas share sequential load. */
  private pickReplica(): Replica | null {
    let best: Replica | null = null
    const n = this.replicas.length
    for (let k = 0; k < n; k++) {
      const r = this.replicas[(this.rr + k) % n]!
      if (r.state !== 'ready' || r.inflightGroups >= MAX_INFLIGHT_GROUPS) continue
      if (!best || r.inflightInstances < best.inflightInstances) best = r
    }
    return best
  }

  /** Sends as many batches of `method` as replicas can take now; arms a timer for a partial batch. */
  private pump(method: string): void {
    const q = this.queues.get(method)!
    for (;;) {
      const replica = this.pickReplica()
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
    this.rr = (this.replicas.indexOf(replica) + 1) % this.replicas.length
    const st = this.methodStats.get(method)!
    const now = performance.now()
    st.batches++
    st.batchSizes[items.length] = (st.batchSizes[items.length] ?? 0) + 1
    for (const it of items) st.queueMs += now - it.enqueuedAt
    replica.run(method, items.map((i) => i.value.inst)).then(
      ({ results, runs }) => {
        for (const r of runs) {
          const ms = this.modelStats[r.model]!
          ms.executions++
          ms.inferences += r.batch
          ms.padded += r.padded
          ms.computeMs += r.ms
          ms.batchSizes[r.batch] = (ms.batchSizes[r.batch] ?? 0) + 1
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

  private onReplicaExit(r: Replica, why: string): void {
    if (this.stopped) return
    this.restarts++
    // Back off per replica while restarts keep failing; a successful restart resets it, so a replica
    // that crashes once a day is not left waiting 30 s because of crashes long ago.
    const failures = (this.crashStreak.get(r) ?? 0) + 1
    this.crashStreak.set(r, failures)
    const delay = Math.min(30_000, 500 * 2 ** Math.min(6, failures - 1))
    process.stderr.write(`ms-serve: replica ${r.label} exited (${why}); restarting in ${delay} ms\n`)
    if (!this.ready) this.failQueued(new ServeError('REPLICA_CRASHED', `every replica of ${this.name} is down (last: ${why}); restarting`))
    setTimeout(() => {
      if (this.stopped) return
      r.start().then(() => { this.crashStreak.delete(r); this.pumpAll() }, (e) => process.stderr.write(`ms-serve: restart of ${r.label} failed: ${(e as Error).message}\n`))
    }, delay).unref()
  }

  private failQueued(err: ServeError): void {
    for (const q of this.queues.values()) for (const it of q.drain()) settle(it.value, { error: err })
  }

  private busy(): boolean {
    for (const q of this.queues.values()) if (q.length > 0) return true
    return this.replicas.some((r) => r.inflightGroups > 0 || r.activeStreams > 0)
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
    this.stopped = true
    for (const r of this.replicas) r.kill()
  }

  /** Stops replicas after in-flight work; queued work fails with SERVABLE_NOT_READY. */
  async stop(force = false): Promise<void> {
    this.stopped = true
    for (const t of this.timers.values()) clearTimeout(t)
    this.failQueued(new ServeError('SERVABLE_NOT_READY', `servable ${this.name} version ${this.version} is shutting down`))
    await Promise.all(this.replicas.map((r) => r.stop(force)))
  }

  stats(): object {
    return {
      name: this.name,
      version: this.version,
      ready: this.ready,
      restarts: this.restarts,
      replicas: this.replicas.map((r) => ({ device: `${r.device.deviceType}:${r.device.deviceId}`, isolation: r.isolation, pid: r.pid, state: r.state, intraOpThreads: r.device.intraOpThreads, inflightInstances: r.inflightInstances, batchesDone: r.groupsDone })),
      models: this.modelStats.map((m, i) => ({ ...m, maxBatchSize: this.replicas[0]?.models[i]?.maxBatchSize ?? null, avgBatchSize: m.executions ? m.inferences / m.executions : 0 })),
      methods: Object.fromEntries([...this.methodStats].map(([k, v]) => [k, { ...v, queued: this.queues.get(k)?.length ?? 0, avgQueueMs: v.instances ? v.queueMs / v.instances : 0 }])),
    }
  }
}

function toOutcome(r: WireResult): InstanceOutcome {
  if ('e' in r) return { error: toServeError(r.e) }
  const outputs: Record<string, Value> = {}
  for (const k in r.o) outputs[k] = fromWire(r.o[k]!)
  return { outputs }
}
