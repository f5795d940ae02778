/**
 * Server-side breakdown from `GET /stats`: counters are cumulative, so a level's numbers are the
 * difference of two snapshots taken around its measurement (Triton's perf_analyzer reads its
 * statistics extension the same way).
 */
import { request } from 'undici'
import type { ServerBreakdown } from './types.ts'

interface ModelEntry { name: string; executions: number; inferences: number; padded: number; computeMs: number; batchSizes: Record<string, number> }
interface MethodEntry { requests: number; instances: number; errors: number; batches: number; queueMs: number }
export interface ServableEntry {
  name: string
  version: number
  ready?: boolean
  replicas?: Array<{ intraOpThreads?: number; state?: string; pid?: number; isolation?: string; device?: string }>
  models?: ModelEntry[]
  methods?: Record<string, MethodEntry>
  [k: string]: unknown
}

/**
 * GET {origin}/stats; null when the server has no such route (e.g. a bare echo server). Rejects
 * when nothing answers HTTP at `origin` (connection refused, timeout, ...).
 */
export async function readStats(origin: string, timeoutMs = 5000): Promise<ServableEntry[] | null> {
  const res = await request(`${origin}/stats`, { method: 'GET', headersTimeout: timeoutMs, bodyTimeout: timeoutMs })
  const text = await res.body.text()
  if (res.statusCode !== 200) return null
  try {
    const j = JSON.parse(text) as { servables?: ServableEntry[] }
    return Array.isArray(j.servables) ? j.servables : null
  } catch {
    return null
  }
}

/** As readStats, null when nothing answers. */
export function fetchStats(origin: string, timeoutMs = 5000): Promise<ServableEntry[] | null> {
  return readStats(origin, timeoutMs).catch(() => null)
}

/** The entry for `name` at `version` (0 = the newest running one). */
export function findServable(list: ServableEntry[] | null, name: string, version: number): ServableEntry | null {
  const all = (list ?? []).filter((s) => s.name === name && (version === 0 || s.version === version))
  return all.sort((a, b) => b.version - a.version)[0] ?? null
}

/**
 * after - before for one method. The models counted are those that ran during the level (the
 * stats do not say which models a method uses; a bench drives one method at a time).
 */
export function diffStats(before: ServableEntry | null, after: ServableEntry | null, method: string): ServerBreakdown | null {
  if (!before || !after || !after.methods?.[method]) return null
  const m1 = after.methods[method]!
  const m0 = before.methods?.[method] ?? { requests: 0, instances: 0, errors: 0, batches: 0, queueMs: 0 }
  let executions = 0
  let inferences = 0
  let padded = 0
  let computeMs = 0
  const batchSizes: Record<string, number> = {}
  for (const a of after.models ?? []) {
    const b = before.models?.find((x) => x.name === a.name)
    const dExec = a.executions - (b?.executions ?? 0)
    if (dExec <= 0) continue
    executions += dExec
    inferences += a.inferences - (b?.inferences ?? 0)
    padded += a.padded - (b?.padded ?? 0)
    computeMs += a.computeMs - (b?.computeMs ?? 0)
    for (const [size, n] of Object.entries(a.batchSizes ?? {})) {
      const d = n - (b?.batchSizes?.[size] ?? 0)
      if (d > 0) batchSizes[size] = (batchSizes[size] ?? 0) + d
    }
  }
  const instances = m1.instances - m0.instances
  const threads = after.replicas?.map((r) => r.intraOpThreads).find((t) => typeof t === 'number') ?? null
  return {
    requests: m1.requests - m0.requests,
    instances,
    dispatches: m1.batches - m0.batches,
    executions,
    inferences,
    padded,
    avgBatchSize: executions ? inferences / executions : 0,
    avgQueueMs: instances ? (m1.queueMs - m0.queueMs) / instances : 0,
    computeMsPerExecution: executions ? computeMs / executions : 0,
    computeMsPerItem: inferences ? computeMs / inferences : 0,
    batchSizes,
    replicas: after.replicas?.length ?? 0,
    intraOpThreads: threads,
  }
}
