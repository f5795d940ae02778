/**
 * One read-only picture of what the server runs, for every consumer of statistics: /stats renders
 * it as JSON, /metrics sets its gauges from it (metrics.ts update), the console and the bench
 * read it. Only runtime/ looks at replica objects; protocol/ sees these plain records. LLM engine
 * counters come from each replica with a bounded wait (a hung replica answers `{}`), so taking a
 * snapshot never hangs.
 */
import type { LiveServable } from './live-servable.ts'
import type { Replica, ReplicaState } from './replica.ts'
import type { Isolation } from './devices.ts'
import type { LlmInfo } from './messages.ts'
import type { ServableRegistry } from './registry.ts'

export interface ReplicaSnapshot {
  /** `cpu:0`, `cuda:1`. */
  device: string
  isolation: Isolation
  pid: number
  state: ReplicaState
  intraOpThreads: number
  inflightInstances: number
  batchesDone: number
}

export interface ModelSnapshot {
  name: string
  executions: number
  inferences: number
  padded: number
  computeMs: number
  /** A staged model: milliseconds each stage was busy. */
  stageMs?: number[]
  batchSizes: Record<number, number>
  maxBatchSize: number | null
  avgBatchSize: number
}

export interface MethodSnapshot {
  requests: number
  instances: number
  errors: number
  batches: number
  queueMs: number
  batchSizes: Record<number, number>
  queued: number
  avgQueueMs: number
}

export interface ServableSnapshot {
  name: string
  version: number
  ready: boolean
  restarts: number
  /** Why the replicas run where they do, when `--isolation auto` chose it. */
  isolationReason?: string
  replicas: ReplicaSnapshot[]
  models: ModelSnapshot[]
  methods: Record<string, MethodSnapshot>
}

/** An LLM engine's counters (engine.ts EngineStats); `{}` when its replica did not answer in time. */
export type EngineCounters = Record<string, number | string>

export interface LlmReplicaSnapshot { device: string; pid: number; state: ReplicaState; active: number; engine: EngineCounters }

export interface LlmSnapshot {
  name: string
  version: number
  ready: boolean
  model: LlmInfo | null
  replicas: LlmReplicaSnapshot[]
}

export interface UnavailableSnapshot { name: string; ready: false; error: string }

export interface ServerSnapshot {
  servables: ServableSnapshot[]
  /** Servables that failed to load and serve no version. */
  unavailable: UnavailableSnapshot[]
  /** The newest version of each LLM servable, with its engines' counters. */
  llms: LlmSnapshot[]
}

const deviceOf = (r: Replica) => `${r.device.deviceType}:${r.device.deviceId}${r.device.agent ? `@${r.device.agent}` : ''}`

/** The servable's counters now (synchronous: no replica is asked anything). */
export function servableSnapshot(s: LiveServable): ServableSnapshot {
  const replicas = s.replicas
  return {
    name: s.name,
    version: s.version,
    ready: s.ready,
    restarts: s.restarts,
    ...(s.isolationReason ? { isolationReason: s.isolationReason } : {}),
    replicas: replicas.map((r) => ({ device: deviceOf(r), isolation: r.isolation, pid: r.pid, state: r.state, intraOpThreads: r.device.intraOpThreads, inflightInstances: r.inflightInstances, batchesDone: r.groupsDone })),
    models: s.modelStats.map((m, i) => ({ ...m, batchSizes: { ...m.batchSizes }, maxBatchSize: replicas[0]?.models[i]?.maxBatchSize ?? null, avgBatchSize: m.executions ? m.inferences / m.executions : 0 })),
    methods: Object.fromEntries([...s.methodStats].map(([k, v]) => [k, { ...v, batchSizes: { ...v.batchSizes }, queued: s.queued(k), avgQueueMs: v.instances ? v.queueMs / v.instances : 0 }])),
  }
}

/** One LLM servable's engines, each asked for its counters at once (at most `timeoutMs` each). */
export async function llmSnapshot(s: LiveServable, timeoutMs = 1000): Promise<LlmSnapshot> {
  const replicas = await Promise.all(s.replicas.map(async (r) => ({ device: deviceOf(r), pid: r.pid, state: r.state, active: r.activeStreams, engine: await r.llmStats(timeoutMs) })))
  return { name: s.name, version: s.version, ready: s.ready, model: s.replicas.find((r) => r.llm)?.llm ?? null, replicas }
}

/** Everything, for /stats and /metrics. */
export async function serverSnapshot(registry: ServableRegistry): Promise<ServerSnapshot> {
  const all = registry.all()
  const llmNames = [...new Set(all.filter((s) => s.servable.llm).map((s) => s.name))]
  const newest = llmNames.map((n) => registry.get(n, 0)).filter((s): s is LiveServable => s !== undefined)
  return {
    servables: all.map(servableSnapshot),
    unavailable: [...registry.failed].map(([name, error]) => ({ name, ready: false, error })),
    llms: await Promise.all(newest.map((s) => llmSnapshot(s))),
  }
}
