/** The human report printed at the end of a run: one table per concern, aligned columns. */
import type { BenchReport, LevelResult } from './types.ts'

/** Right-aligns every column but the first. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

/** 3 significant digits, thousands as k. */
export function num(x: number): string {
  if (!Number.isFinite(x)) return '-'
  if (Math.abs(x) >= 100_000) return `${(x / 1000).toFixed(0)}k`
  if (Math.abs(x) >= 10_000) return `${(x / 1000).toFixed(1)}k`
  if (Math.abs(x) >= 100) return x.toFixed(0)
  if (Math.abs(x) >= 10) return x.toFixed(1)
  return x.toFixed(2)
}

const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2))
const pct = (x: number | null) => (x === null ? '-' : `${(x * 100).toFixed(x < 0.1 ? 2 : 0)}%`)

function predictRows(levels: LevelResult[]): string {
  const header = ['level', 'req/s', 'items/s', 'p50 ms', 'p90', 'p95', 'p99', 'max', 'errors', 'batch', 'queue ms', 'compute ms', 'stable']
  const hasRaw = levels.some((l) => l.ratioToRaw !== null)
  if (hasRaw) header.push('vs raw')
  const rows = levels.map((l) => {
    const s = l.server
    const r = [l.label, num(l.reqPerSec), num(l.itemsPerSec), ms(l.latencyMs.p50), ms(l.latencyMs.p90), ms(l.latencyMs.p95), ms(l.latencyMs.p99), ms(l.latencyMs.max),
      String(l.numErrors), s ? s.avgBatchSize.toFixed(1) : '-', s ? ms(s.avgQueueMs) : '-', s ? ms(s.computeMsPerExecution) : '-', l.stable ? 'yes' : 'no']
    if (hasRaw) r.push(pct(l.ratioToRaw))
    return r
  })
  return formatTable(header, rows)
}

function generateRows(levels: LevelResult[]): string {
  const header = ['level', 'req/s', 'out tok/s', 'TTFT p50', 'p99', 'TPOT p50', 'p99', 'ITL p50', 'p99', 'E2EL p50', 'p99', 'goodput/s', 'errors']
  const rows = levels.map((l) => {
    const g = l.generate!
    return [l.label, num(l.reqPerSec), num(g.outputTokensPerSec), ms(g.ttftMs.p50), ms(g.ttftMs.p99), ms(g.tpotMs.p50), ms(g.tpotMs.p99),
      ms(g.itlMs.p50), ms(g.itlMs.p99), ms(g.e2elMs.p50), ms(g.e2elMs.p99), g.goodputReqPerSec === null ? '-' : num(g.goodputReqPerSec), String(l.numErrors)]
  })
  return formatTable(header, rows)
}

export function renderTextReport(r: BenchReport): string {
  const out: string[] = []
  const t = r.target
  out.push(`ms-serve bench: ${t.servable}${t.method ? `:${t.method}` : ''} over ${t.protocol === 'generate' ? `${t.route} stream` : t.protocol.toUpperCase()} at ${t.address}${t.startedServer ? ' (server started by bench)' : ''}${t.replicas?.length ? `; ${t.replicas.length} replica(s): ${t.replicas.map((x) => `${x.device} ${x.isolation}`).join(', ')}` : ''}`)
  out.push(`machine: ${r.machine.cpus} x ${r.machine.cpuModel}, node ${r.machine.node}; load ${r.load.mode} loop, warm-up ${r.load.warmupMs / 1000}s, windows ${r.load.windowMs / 1000}s up to ${r.load.durationMs / 1000}s (stable = 3 windows within ${r.load.stabilityPct}%), ${r.load.instancesPerRequest} instance(s)/request, inputs: ${r.load.inputs}`)
  out.push('')
  const gen = r.levels.some((l) => l.generate)
  out.push(gen ? generateRows(r.levels) : predictRows(r.levels))
  if (!gen && r.levels.some((l) => l.server)) {
    out.push('')
    out.push('server side (from /stats): batch = avg executed batch size, queue = avg wait per instance, compute = model run per batch')
    for (const l of r.levels) {
      if (!l.server) continue
      const sizes = Object.entries(l.server.batchSizes).sort((a, b) => Number(a[0]) - Number(b[0])).map(([k, v]) => `${k}:${v}`).join(' ')
      const overhead = l.latencyMs.mean - l.server.avgQueueMs - l.server.computeMsPerExecution
      out.push(`  ${l.label.padEnd(9)} executions ${l.server.executions}, batch sizes {${sizes}}, mean latency ${ms(l.latencyMs.mean)} ms = queue ${ms(l.server.avgQueueMs)} + compute ${ms(l.server.computeMsPerExecution)} + rest ${ms(Math.max(0, overhead))} (protocol, IPC, function stages, client)`)
    }
  }
  if (r.levels.some((l) => l.cpu)) {
    out.push('')
    out.push(`CPU during measurement (cores busy of ${r.machine.cpus}; µs of CPU per request)`)
    const share = (s: { cores: number; msPerRequest: number } | null) => (s ? `${s.cores.toFixed(2)} (${Math.round(s.msPerRequest * 1000)} µs)` : '-')
    out.push(formatTable(['level', 'load generator', 'server main', 'replicas', 'other processes'], r.levels.filter((l) => l.cpu).map((l) => [l.label, share(l.cpu!.client), share(l.cpu!.server), share(l.cpu!.replicas), l.cpu!.other ? l.cpu!.other.cores.toFixed(2) : '-'])))
  }
  if (r.baseline) {
    const b = r.baseline
    out.push('')
    out.push(`baseline ${b.kind} (${b.models.join(', ') || 'n/a'}): ${b.note}`)
    if (b.rows.length) out.push(formatTable(['batch', b.kind === 'raw-decode' ? 'tok/s' : 'items/s', 'ms/run', 'runs'], b.rows.map((x) => [String(x.batch), num(x.itemsPerSec), ms(x.msPerRun), String(x.runs)])))
    if (b.best) {
      // Generate levels are compared by output tokens/s, predict levels by items/s (as ratioToRaw is).
      const rate = (l: LevelResult) => (gen ? l.generate?.outputTokensPerSec ?? 0 : l.itemsPerSec)
      const bestLevel = r.levels.reduce<LevelResult | null>((a, l) => (!a || rate(l) > rate(a) ? l : a), null)
      if (bestLevel?.ratioToRaw != null) out.push(`ms-serve best ${num(rate(bestLevel))} ${gen ? 'tok' : 'items'}/s (${bestLevel.label}) = ${pct(bestLevel.ratioToRaw)} of raw at its best batch ${b.best.batch} (${num(b.best.itemsPerSec)}/s)`)
    }
  }
  const errs = r.levels.filter((l) => l.numErrors > 0)
  if (errs.length) {
    out.push('')
    out.push('errors by kind:')
    for (const l of errs) for (const [k, v] of Object.entries(l.errors)) out.push(`  ${l.label}: ${k} x${v.count} (e.g. ${v.sample.slice(0, 160)})`)
  }
  if (r.notes.length) {
    out.push('')
    for (const n of r.notes) out.push(`note: ${n}`)
  }
  return out.join('\n') + '\n'
}
