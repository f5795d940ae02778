/**
 * Parent-side handle of one replica process (one servable version on one device): spawns it,
 * sends groups of instances, settles their promises, and reports crashes. Restart policy lives
 * in live-servable.ts.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import { existsSync } from 'node:fs'
import { ServeError, toServeError } from '../errors.ts'
import type { ValidServable } from '../config/validate.ts'
import type { DevicePlan } from './devices.ts'
import type { LlmInfo, LlmWireRequest, ModelInfo, ParentMessage, ReplicaMessage, RunStat } from './messages.ts'
import type { GenerateEvent } from '../llm/types.ts'
import type { WireInstance, WireResult } from './wire.ts'

/** glibc malloc settings that keep big ORT outputs off fresh mmaps (see onnxruntime-node notes). */
export const MALLOC_ENV = { MALLOC_MMAP_THRESHOLD_: '33554432', MALLOC_TRIM_THRESHOLD_: '4294967296' }

export type ReplicaState = 'starting' | 'ready' | 'failed' | 'stopped'

interface Inflight { size: number; resolve: (r: { results: WireResult[]; runs: RunStat[]; ms: number }) => void; reject: (e: ServeError) => void }

function replicaEntry(): string {
  const here = dirname(fileURLToPath(import.meta.url))
  // Bundled: dist/cli/main.js -> dist/runtime/replica-main.js; under tsx: src/runtime/replica.ts.
  for (const p of [join(here, '..', 'runtime', 'replica-main.js'), join(here, 'replica-main.js'), join(here, '..', '..', 'dist', 'runtime', 'replica-main.js')]) {
    if (existsSync(p)) return p
  }
  throw new ServeError('INTERNAL', 'dist/runtime/replica-main.js is missing; run `npm run build`')
}

export class Replica {
  state: ReplicaState = 'starting'
  models: ModelInfo[] = []
  pid = 0
  inflightInstances = 0
  inflightGroups = 0
  groupsDone = 0
  private proc: ChildProcess | null = null
  private nextId = 1
  private inflight = new Map<number, Inflight>()
  /** Active LLM streams: id -> event sink. */
  private streams = new Map<number, (ev: GenerateEvent) => void>()
  private statsWaiters = new Map<number, (s: Record<string, number | string>) => void>()
  llm: LlmInfo | undefined
  onExit: (r: Replica, why: string) => void = () => {}

  constructor(readonly servable: ValidServable, readonly device: DevicePlan) {}

  get label(): string { return `${this.servable.name}@${this.servable.version} ${this.device.deviceType}:${this.device.deviceId}` }

  /** Starts the process; resolves when its sessions are loaded, rejects with CONFIG_INVALID or REPLICA_CRASHED. */
  start(): Promise<void> {
    this.state = 'starting'
    return new Promise((resolve, reject) => {
      const proc = fork(replicaEntry(), [], {
        serialization: 'advanced',
        env: { ...process.env, ...MALLOC_ENV, MS_SERVE_REPLICA: this.label },
        execArgv: [],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      })
      this.proc = proc
      this.pid = proc.pid ?? 0
      let settled = false
      proc.on('message', (msg: ReplicaMessage) => {
        if (msg.type === 'event') {
          const sink = this.streams.get(msg.id)
          if (msg.event.type !== 'token') this.streams.delete(msg.id)
          sink?.(msg.event)
          return
        }
        if (msg.type === 'llm-stats') {
          this.statsWaiters.get(msg.id)?.(msg.stats)
          this.statsWaiters.delete(msg.id)
          return
        }
        if (msg.type === 'ready') {
          this.models = msg.models
          this.llm = msg.llm
          this.state = 'ready'
          settled = true
          resolve()
        } else if (msg.type === 'init-error') {
          settled = true
          this.state = 'failed'
          proc.kill('SIGKILL')
          reject(toServeError(msg.error, 'CONFIG_INVALID'))
        } else if (msg.type === 'result') {
          const f = this.inflight.get(msg.id)
          if (!f) return
          this.inflight.delete(msg.id)
          this.inflightGroups--
          this.inflightInstances -= f.size
          this.groupsDone++
          f.resolve(msg)
        }
      })
      proc.on('exit', (code, signal) => {
        const why = signal ? `signal ${signal}` : `exit code ${code}`
        const wasStopping = this.state === 'stopped'
        if (!wasStopping) this.state = 'failed'
        this.proc = null
        const err = new ServeError('REPLICA_CRASHED', `replica ${this.label} exited (${why}) while running this request`)
        for (const f of this.inflight.values()) f.reject(err)
        this.inflight.clear()
        for (const sink of this.streams.values()) sink({ type: 'error', requestId: '', code: 'REPLICA_CRASHED', message: `Request failed during generation: replica ${this.label} exited (${why})` })
        this.streams.clear()
        for (const w of this.statsWaiters.values()) w({})
        this.statsWaiters.clear()
        this.inflightGroups = 0
        this.inflightInstances = 0
        if (!settled) {
          settled = true
          reject(new ServeError('REPLICA_CRASHED', `replica ${this.label} exited (${why}) while loading`))
        }
        if (!wasStopping) this.onExit(this, why)
      })
      proc.on('error', (e) => {
        if (!settled) { settled = true; reject(new ServeError('REPLICA_CRASHED', `cannot start replica ${this.label}: ${e.message}`)) }
      })
      this.send({ type: 'init', servable: this.servable, device: this.device })
    })
  }

  private send(msg: ParentMessage): void {
    this.proc?.send(msg)
  }

  /** Sends one group of instances of `method`; resolves with per-instance wire results. */
  run(method: string, instances: WireInstance[]): Promise<{ results: WireResult[]; runs: RunStat[]; ms: number }> {
    if (this.state !== 'ready' || !this.proc) return Promise.reject(new ServeError('SERVABLE_NOT_READY', `replica ${this.label} is not ready`))
    const id = this.nextId++
    this.inflightGroups++
    this.inflightInstances += instances.length
    return new Promise((resolve, reject) => {
      this.inflight.set(id, { size: instances.length, resolve, reject })
      this.send({ type: 'run', id, method, instances })
    })
  }

  /** Number of LLM requests this replica is generating or queueing. */
  get activeStreams(): number { return this.streams.size }

  /** Starts an LLM request on this replica; events arrive on `onEvent` (tokens, then done or error). */
  generate(request: LlmWireRequest, onEvent: (ev: GenerateEvent) => void): number {
    const id = this.nextId++
    if (this.state !== 'ready' || !this.proc) {
      onEvent({ type: 'error', requestId: '', code: 'SERVABLE_NOT_READY', message: `replica ${this.label} is not ready` })
      return id
    }
    this.streams.set(id, onEvent)
    this.send({ type: 'generate', id, request })
    return id
  }

  /** Cancels a request; the replica frees its slot at the next step and sends a CANCELLED error. */
  cancel(id: number): void {
    if (this.streams.has(id)) this.send({ type: 'cancel', id })
  }

  /** The engine's counters (queue, running, KV, prefill/decode times). */
  llmStats(): Promise<Record<string, number | string>> {
    if (!this.proc) return Promise.resolve({})
    const id = this.nextId++
    return new Promise((resolve) => {
      this.statsWaiters.set(id, resolve)
      this.send({ type: 'llm-stats', id })
    })
  }

  /** Stops the process; in-flight groups finish first unless `force`. */
  async stop(force = false): Promise<void> {
    const proc = this.proc
    if (!proc) { this.state = 'stopped'; return }
    if (!force) {
      const deadline = Date.now() + 30_000
      while ((this.inflight.size > 0 || this.streams.size > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    }
    this.state = 'stopped'
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => { proc.kill('SIGKILL') }, 2000)
      proc.once('exit', () => { clearTimeout(t); resolve() })
      try { proc.send({ type: 'shutdown' } satisfies ParentMessage) } catch { proc.kill('SIGKILL') }
    })
  }
}
