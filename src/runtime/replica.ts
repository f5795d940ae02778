/**
 * Parent-side handle of one replica (one servable version on one device): starts it over a
 * Transport (transport.ts: process, thread or inline; later remote), sends groups of instances,
 * settles their promises, runs the hung-replica watchdog and reports exits. Restarts are the
 * pool's (replica-pool.ts). The handle never knows which transport it has.
 */
import type { EventLog } from '../log.ts'
import { ServeError, toServeError } from '../errors.ts'
import type { ValidServable } from '../config/validate.ts'
import type { DevicePlan, Isolation, IsolationSetting } from './devices.ts'
import type { LlmInfo, LlmWireRequest, ModelInfo, ParentMessage, ReplicaMessage, RunStat } from './messages.ts'
import type { GenerateEvent } from '../llm/types.ts'
import { instanceAsIs, instanceToWire, type WireResult } from './wire.ts'
import { IdleWaiters } from './idle.ts'
import { MAX_INFLIGHT_GROUPS } from './replica-pool.ts'
import { localTransport, type StageLink, type StageLinkOpener, type Transport, type TransportEvents, type TransportFactory } from './transport.ts'
import type { Value } from '../tensor.ts'

export type ReplicaState = 'starting' | 'ready' | 'failed' | 'stopped'

/** One group's answer: per-instance wire results and the model runs it took. */
export interface GroupResult { results: WireResult[]; runs: RunStat[]; ms: number }

interface Inflight { size: number; resolve: (r: GroupResult) => void; reject: (e: ServeError) => void }

/**
 * The isolation a servable really gets: LLM engines never run on the listeners' thread; `auto` is
 * `process` until its servable's load decides (LiveServable.start, auto-isolation.ts).
 */
export function effectiveIsolation(servable: ValidServable, asked: IsolationSetting): Isolation {
  if (asked === 'auto') return 'process'
  return asked === 'inline' && servable.llm ? 'thread' : asked
}

export class Replica {
  state: ReplicaState = 'starting'
  models: ModelInfo[] = []
  pid = 0
  inflightInstances = 0
  groupsDone = 0
  isolation: Isolation
  private channel: Transport | null = null
  /** Resolves when the current channel has ended (for stop()). */
  private exited: Promise<void> = Promise.resolve()
  private nextId = 1
  private inflight = new Map<number, Inflight>()
  /** Active LLM streams: id -> event sink. */
  private streams = new Map<number, (ev: GenerateEvent) => void>()
  private statsWaiters = new Map<number, (s: Record<string, number | string>) => void>()
  llm: LlmInfo | undefined
  onExit: (r: Replica, why: string) => void = () => {}
  /** Called when the replica's last group or stream finishes (its servable's drain waits on it). */
  onIdle: () => void = () => {}
  /** stop() waits here for the last group or stream. */
  private readonly idle = new IdleWaiters()
  /** When the replica was last heard from (any message, heartbeats included). */
  private lastHeard = 0
  private watchdog: NodeJS.Timeout | null = null

  /** Inline replicas take values as they are; the others get compact copies that clone cheaply. */
  private toWire: typeof instanceToWire = instanceToWire

  /**
   * `watchdogMs`: a replica not heard from for this long is hung (SIGSTOP, a stage in an endless
   * loop): its requests fail and it is killed, then restarted by its servable. Replicas send a
   * heartbeat every HEARTBEAT_MS; inline replicas share our thread and have no watchdog.
   * `open` picks the transport (default: the local one of the device plan's isolation).
   * `stageLinks`: opens the pipeline stages this replica places on agents (agent-hub.ts openStage).
   */
  constructor(readonly servable: ValidServable, readonly device: DevicePlan, private readonly watchdogMs = 0, open?: TransportFactory, private readonly log: EventLog = (l) => process.stderr.write(l + '\n'), private readonly stageLinks: StageLinkOpener | null = null) {
    this.isolation = effectiveIsolation(servable, device.isolation)
    this.fixedOpen = open
    this.open = open ?? localTransport(this.isolation)
  }

  private open: TransportFactory
  private readonly fixedOpen: TransportFactory | undefined

  /** Sets where the replica will run (before start; `auto`'s choice). A transport given to the constructor stays. */
  useIsolation(isolation: Isolation): void {
    if (this.state !== 'starting' || this.channel) throw new Error(`replica ${this.label}: isolation is set before it starts`)
    this.isolation = effectiveIsolation(this.servable, isolation)
    if (!this.fixedOpen) this.open = localTransport(this.isolation)
  }

  get label(): string { return `${this.servable.name}@${this.servable.version} ${this.device.deviceType}:${this.device.deviceId}${this.device.agent ? ` on agent ${this.device.agent}` : ''}` }

  /** Starts the replica; resolves when its sessions are loaded, rejects with CONFIG_INVALID or REPLICA_CRASHED. */
  async start(): Promise<void> {
    this.state = 'starting'
    let settled = false
    let resolveStart!: () => void
    let rejectStart!: (e: ServeError) => void
    const started = new Promise<void>((res, rej) => { resolveStart = res; rejectStart = rej })
    let markExited!: () => void
    this.exited = new Promise<void>((r) => { markExited = r })
    let channel: Transport
    const events: TransportEvents = {
      message: (msg) => this.onMessage(msg, channel, {
        ready: () => { settled = true; resolveStart() },
        initError: (e) => { settled = true; rejectStart(e) },
      }),
      exit: (why) => {
        markExited()
        this.closeStageLinks()
        if (this.channel === channel) this.channel = null
        const wasStopping = this.state === 'stopped'
        if (!wasStopping) this.state = 'failed'
        this.failInflight(why)
        if (!settled) {
          settled = true
          rejectStart(new ServeError('REPLICA_CRASHED', `replica ${this.label} exited (${why}) while loading`))
        }
        if (!wasStopping) this.onExit(this, why)
      },
      startError: (e) => {
        if (!settled) { settled = true; rejectStart(new ServeError('REPLICA_CRASHED', `cannot start replica ${this.label}: ${e.message}`)) }
      },
    }
    channel = await this.open(this.label, events)
    this.channel = channel
    this.pid = channel.pid
    this.toWire = channel.sharesThread ? instanceAsIs : instanceToWire
    channel.send({ type: 'init', servable: this.servable, device: this.device })
    await started
    this.armWatchdog(channel)
  }

  private armWatchdog(channel: Transport): void {
    if (this.watchdogMs <= 0 || channel.sharesThread) return
    this.lastHeard = performance.now()
    if (this.watchdog) clearInterval(this.watchdog)
    const every = Math.max(50, Math.min(500, this.watchdogMs / 4))
    this.watchdog = setInterval(() => {
      if (this.channel !== channel || this.state !== 'ready') return
      const silentMs = performance.now() - this.lastHeard
      if (silentMs < this.watchdogMs) return
      const why = `no heartbeat for ${Math.round(silentMs)} ms (watchdog ${this.watchdogMs} ms): the replica is stopped or a stage never returns`
      this.log(`ms-serve: replica ${this.label} hung: ${why}; killing it`, { event: 'replica_hung', severity: 'error', replica: this.label, servable: this.servable.name, version: this.servable.version, reason: why })
      this.state = 'failed'
      this.failInflight(`hung, ${why}`)
      channel.kill()
    }, every)
    this.watchdog.unref()
  }

  private onMessage(msg: ReplicaMessage, channel: Transport, start: { ready: () => void; initError: (e: ServeError) => void }): void {
    this.lastHeard = performance.now()
    switch (msg.type) {
      case 'beat':
        return
      case 'stage-open':
        this.openStageLink(msg, channel)
        return
      case 'stage-send': {
        const l = this.links.get(msg.link)
        // A stage being released ends without ending the replica.
        if (msg.last) this.links.delete(msg.link)
        void l?.then((x) => x.send(msg.message), () => undefined)
        return
      }
      case 'stage-close': {
        const l = this.links.get(msg.link)
        this.links.delete(msg.link)
        void l?.then((x) => x.kill(), () => undefined)
        return
      }
      case 'event':
        this.deliver(msg.id, msg.event)
        return
      case 'events':
        for (let i = 0; i < msg.ids.length; i++) this.deliver(msg.ids[i]!, msg.events[i]!)
        return
      case 'llm-stats':
        this.statsWaiters.get(msg.id)?.(msg.stats)
        this.statsWaiters.delete(msg.id)
        return
      case 'ready':
        this.models = msg.models
        this.llm = msg.llm
        this.state = 'ready'
        start.ready()
        return
      case 'init-error':
        this.state = 'failed'
        channel.kill()
        start.initError(toServeError(msg.error, 'CONFIG_INVALID'))
        return
      case 'result': {
        const f = this.inflight.get(msg.id)
        if (!f) return
        this.inflight.delete(msg.id)
        this.inflightInstances -= f.size
        this.groupsDone++
        f.resolve(msg)
        if (this.inflight.size === 0 && this.streams.size === 0) this.becameIdle()
      }
    }
  }

  /** The replica's stages on agents, by its link id (a link is usable once its agent took it). */
  private readonly links = new Map<number, Promise<StageLink>>()

  /**
   * Opens a stage the replica placed on an agent. A stage that ends on its own (its agent lost, a
   * crash there) ends the whole replica: its work fails with the reason and the pool restarts it,
   * and the restart's stage waits for the agent to come back.
   */
  private openStageLink(msg: Extract<ReplicaMessage, { type: 'stage-open' }>, channel: Transport): void {
    const reply = (m: ParentMessage) => { if (this.channel === channel) channel.send(m) }
    if (!this.stageLinks) {
      reply({ type: 'stage-exit', link: msg.link, why: `stage ${msg.label} is placed on agent ${msg.agent}, but this server has no agents link; start it with --agents-listen HOST:PORT` })
      return
    }
    const opened = this.stageLinks(msg.agent, msg.label, { entry: msg.entry, data: msg.data }, {
      message: (m) => reply({ type: 'stage-reply', link: msg.link, message: m as Extract<ParentMessage, { type: 'stage-reply' }>['message'] }),
      exit: (why) => {
        if (!this.links.delete(msg.link) || this.channel !== channel) return
        const reason = `its stage ${msg.label} on agent ${msg.agent} ended (${why})`
        this.log(`ms-serve: replica ${this.label}: ${reason}; restarting the replica`, { event: 'stage_lost', severity: 'warn', replica: this.label, servable: this.servable.name, version: this.servable.version, agent: msg.agent, reason: why })
        if (this.state === 'ready') this.state = 'failed'
        this.failInflight(reason)
        channel.kill()
      },
    })
    this.links.set(msg.link, opened)
    opened.catch((e: Error) => {
      if (this.links.delete(msg.link)) reply({ type: 'stage-exit', link: msg.link, why: e.message })
    })
  }

  private closeStageLinks(): void {
    const links = [...this.links.values()]
    this.links.clear()
    for (const l of links) void l.then((x) => x.kill(), () => undefined)
  }

  private deliver(id: number, event: GenerateEvent): void {
    const sink = this.streams.get(id)
    if (event.type !== 'token') this.streams.delete(id)
    sink?.(event)
    if (event.type !== 'token' && this.streams.size === 0 && this.inflight.size === 0) this.becameIdle()
  }

  private becameIdle(): void {
    this.idle.wake()
    this.onIdle()
  }

  /** Fails the groups, streams and stats calls the ended replica still owed. */
  private failInflight(why: string): void {
    const err = new ServeError('REPLICA_CRASHED', `replica ${this.label} exited (${why}) while running this request`)
    for (const f of this.inflight.values()) f.reject(err)
    this.inflight.clear()
    for (const sink of this.streams.values()) sink({ type: 'error', requestId: '', code: 'REPLICA_CRASHED', message: `Request failed during generation: replica ${this.label} exited (${why})` })
    this.streams.clear()
    for (const w of this.statsWaiters.values()) w({})
    this.statsWaiters.clear()
    this.inflightInstances = 0
  }

  /** Groups sent and not yet answered. */
  get inflightGroups(): number { return this.inflight.size }

  /**
   * Groups this replica takes at once: 2 lets the next batch cross the IPC pipe while one runs; a
   * pipeline of staged models takes one more per stage, so every stage has a batch to work on.
   */
  get maxInflightGroups(): number {
    return MAX_INFLIGHT_GROUPS + Math.max(0, ...this.servable.models.map((m) => (m.stages?.length ?? 1) - 1))
  }

  private send(msg: ParentMessage): void {
    this.channel?.send(msg)
  }

  /** Sends one group of instances of `method`; resolves with per-instance wire results. */
  run(method: string, instances: Array<Record<string, Value>>): Promise<GroupResult> {
    if (this.state !== 'ready' || !this.channel) return Promise.reject(new ServeError('SERVABLE_NOT_READY', `replica ${this.label} is not ready`))
    const id = this.nextId++
    this.inflightInstances += instances.length
    return new Promise((resolve, reject) => {
      this.inflight.set(id, { size: instances.length, resolve, reject })
      this.send({ type: 'run', id, method, instances: instances.map(this.toWire) })
    })
  }

  /** Number of LLM requests this replica is generating or queueing. */
  get activeStreams(): number { return this.streams.size }

  /**
   * Starts an LLM request on this replica; events arrive on `onEvent` (tokens, then done or error).
   * `requestId` (the client's or the listener's) names it in the replica's engine log lines.
   */
  generate(request: LlmWireRequest, onEvent: (ev: GenerateEvent) => void, requestId?: string): number {
    const id = this.nextId++
    if (this.state !== 'ready' || !this.channel) {
      onEvent({ type: 'error', requestId: '', code: 'SERVABLE_NOT_READY', message: `replica ${this.label} is not ready` })
      return id
    }
    this.streams.set(id, onEvent)
    this.send(requestId === undefined ? { type: 'generate', id, request } : { type: 'generate', id, request, requestId })
    return id
  }

  /** Cancels a request; the replica frees its slot at the next step and sends a CANCELLED error. */
  cancel(id: number): void {
    if (this.streams.has(id)) this.send({ type: 'cancel', id })
  }

  /**
   * The engine's counters (queue, running, KV, prefill/decode times); `{}` when the replica does
   * not answer within `timeoutMs`, so /metrics and /stats never wait on a hung replica.
   */
  llmStats(timeoutMs = 1000): Promise<Record<string, number | string>> {
    if (!this.channel || this.state !== 'ready') return Promise.resolve({})
    const id = this.nextId++
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.statsWaiters.delete(id); resolve({}) }, timeoutMs)
      this.statsWaiters.set(id, (s) => { clearTimeout(t); resolve(s) })
      this.send({ type: 'llm-stats', id })
    })
  }

  /** Ends the replica at once (no drain): the second shutdown signal. */
  kill(): void {
    this.state = 'stopped'
    if (this.watchdog) clearInterval(this.watchdog)
    this.channel?.kill()
  }

  /** Stops the replica; in-flight groups finish first unless `force`. */
  async stop(force = false): Promise<void> {
    if (this.watchdog) { clearInterval(this.watchdog); this.watchdog = null }
    const channel = this.channel
    if (!channel) { this.state = 'stopped'; return }
    if (!force && (this.inflight.size > 0 || this.streams.size > 0)) await this.idle.wait(30_000)
    this.state = 'stopped'
    const t = setTimeout(() => channel.kill(), 2000)
    channel.shutdown()
    await this.exited
    clearTimeout(t)
  }
}
