/**
 * The web console on the REST listener: `GET /console` (the page), its bundle and stylesheet
 * (dist/console, built by scripts/build.mjs from src/console), and `GET /console/stream`, one
 * server-sent event a second with the runtime's stats snapshot and the servables' description
 * (the same records as /stats and /servables). The page and its files are static and open; the
 * stream and every route the page calls need the API key when the server has one.
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { findPackageRoot } from '../../paths.ts'
import type { ServableRegistry } from '../../runtime/registry.ts'
import { serverSnapshot } from '../../runtime/snapshot.ts'
import { describeServables } from '../../runtime/describe.ts'
import { openSse } from './sse.ts'

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>ms-serve console</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/console/app.css"></head>
<body><div id="app"></div><script type="module" src="/console/app.js"></script></body></html>
`

const FILES: Record<string, string> = { 'app.js': 'text/javascript; charset=utf-8', 'app.css': 'text/css; charset=utf-8', 'app.js.map': 'application/json', 'app.css.map': 'application/json' }

/** The console's static paths (open without an API key: they carry no data). */
export function isConsoleAsset(path: string): boolean {
  return path === '/console' || path === '/console/' || (path.startsWith('/console/') && Object.hasOwn(FILES, path.slice('/console/'.length)))
}

export function registerConsoleRoutes(app: FastifyInstance, registry: ServableRegistry, intervalMs = 1000): void {
  const dir = join(findPackageRoot(), 'dist', 'console')
  // Read once at start: the bundle does not change while the server runs.
  const files = new Map<string, Buffer>()
  for (const f of Object.keys(FILES)) if (existsSync(join(dir, f))) files.set(f, readFileSync(join(dir, f)))
  const page = async (_req: FastifyRequest, reply: FastifyReply) => {
    if (!files.has('app.js')) return reply.code(503).type('application/json').send({ error: 'the console bundle is missing (dist/console/app.js); run npm run build', error_type: 'not_built' })
    return reply.type('text/html; charset=utf-8').send(PAGE)
  }
  app.get('/console', page)
  app.get('/console/', page)
  for (const [f, type] of Object.entries(FILES)) {
    app.get(`/console/${f}`, async (_req, reply) => {
      const body = files.get(f)
      if (!body) return reply.code(404).send({ error: `no ${f}: run npm run build`, error_type: 'not_found' })
      return reply.type(type).header('cache-control', 'no-cache').send(body)
    })
  }
  app.get('/console/stream', async (req, reply) => {
    const sse = openSse(reply)
    let stopped = false
    const tick = async () => {
      if (stopped) return
      sse.send({ t: Date.now(), snapshot: await serverSnapshot(registry), servables: describeServables(registry), ...(await latencyAndOutcomes(registry)) })
      if (!stopped) timer = setTimeout(() => void tick(), intervalMs)
    }
    let timer: NodeJS.Timeout | undefined
    req.raw.on('close', () => { stopped = true; if (timer) clearTimeout(timer) })
    await tick()
  })
}

/** The histograms the console turns into percentiles: predict latency, LLM TTFT and time per token. */
const LATENCY = { msserve_request_duration_seconds: 'latency', msserve_llm_time_to_first_token_seconds: 'ttft', msserve_llm_time_per_output_token_seconds: 'tpot' } as const

/**
 * Cumulative bucket counts per servable (versions, methods and protocols summed) from the server's
 * Prometheus histograms: `{ add: { latency: { le: [...], counts: [...] } } }`. The page takes the
 * difference of two samples for a window's percentiles.
 */
export async function latencyAndOutcomes(registry: ServableRegistry): Promise<{ latency: Record<string, Record<string, { le: number[]; counts: number[] }>>; outcomes: Record<string, Record<string, number>> }> {
  const out: Record<string, Record<string, { le: number[]; counts: number[] }>> = {}
  // Requests answered by outcome (success, partial, or the error code), per servable: the errors by kind.
  const outcomes: Record<string, Record<string, number>> = {}
  for (const m of await registry.metrics.registry.getMetricsAsJSON()) {
    if (m.name === 'msserve_requests_total' || m.name === 'msserve_llm_requests_total') {
      for (const v of m.values as Array<{ labels: Record<string, string | number>; value: number }>) {
        const o = ((outcomes[String(v.labels['servable'])] ??= {}))
        const k = String(v.labels['outcome'])
        o[k] = (o[k] ?? 0) + v.value
      }
      continue
    }
    const key = (LATENCY as Record<string, string>)[m.name]
    if (!key) continue
    for (const v of m.values as Array<{ labels: Record<string, string | number>; value: number; metricName?: string }>) {
      if (!v.metricName?.endsWith('_bucket')) continue
      const name = String(v.labels['servable'])
      const le = v.labels['le'] === '+Inf' ? Infinity : Number(v.labels['le'])
      const h = ((out[name] ??= {})[key] ??= { le: [], counts: [] })
      let i = h.le.indexOf(le)
      if (i < 0) { h.le.push(le); h.counts.push(0); i = h.le.length - 1 }
      h.counts[i]! += v.value
    }
  }
  // JSON has no Infinity: the last bucket is sent as le null.
  for (const s of Object.values(out)) for (const h of Object.values(s)) h.le = h.le.map((x) => (Number.isFinite(x) ? x : null)) as number[]
  return { latency: out, outcomes }
}
