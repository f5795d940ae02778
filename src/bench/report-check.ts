/**
 * Reading a `ms-serve bench --json` file back (the console's bench report viewer): checks that the
 * text is a bench result this version renders, field by field for everything the HTML and text
 * reports read, and names the first field that is wrong. Pure (no node modules): the browser
 * bundle imports it.
 */
import type { BenchReport } from './types.ts'

export class BenchReportError extends Error {}

type Obj = Record<string, unknown>
const kindOf = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'a list' : typeof v === 'object' ? 'an object' : JSON.stringify(v))
const fail = (path: string, want: string, v: unknown): never => {
  throw new BenchReportError(`\`${path}\` must be ${want} (got ${v === undefined ? 'nothing' : kindOf(v)})`)
}

function obj(o: Obj, k: string, path: string): Obj {
  const v = o[k]
  if (!v || typeof v !== 'object' || Array.isArray(v)) fail(`${path}${k}`, 'an object', v)
  return v as Obj
}
function list(o: Obj, k: string, path: string): unknown[] {
  const v = o[k]
  if (!Array.isArray(v)) fail(`${path}${k}`, 'a list', v)
  return v as unknown[]
}
function num(o: Obj, k: string, path: string): void {
  if (typeof o[k] !== 'number' || !Number.isFinite(o[k])) fail(`${path}${k}`, 'a number', o[k])
}
function str(o: Obj, k: string, path: string): void {
  if (typeof o[k] !== 'string') fail(`${path}${k}`, 'a string', o[k])
}
/** null or an object, checked by `check`. */
function optional(o: Obj, k: string, path: string, check: (x: Obj, p: string) => void): void {
  if (o[k] === null) return
  check(obj(o, k, path), `${path}${k}.`)
}
function latency(o: Obj, k: string, path: string): void {
  const s = obj(o, k, path)
  for (const q of ['count', 'mean', 'min', 'p50', 'p90', 'p95', 'p99', 'max']) num(s, q, `${path}${k}.`)
}

/** Parses and checks a bench JSON result; throws BenchReportError saying what is wrong. */
export function parseBenchReport(text: string): BenchReport {
  let j: unknown
  try { j = JSON.parse(text) } catch (e) { throw new BenchReportError(`not JSON: ${(e as Error).message}`) }
  if (!j || typeof j !== 'object' || Array.isArray(j)) throw new BenchReportError(`not a bench result: the file holds ${kindOf(j)}, not an object`)
  const r = j as Obj
  if (r.tool !== 'ms-serve bench') throw new BenchReportError(`not a bench result: \`tool\` is ${r.tool === undefined ? 'missing' : JSON.stringify(r.tool)}, expected "ms-serve bench" (the file \`ms-serve bench --json FILE\` writes)`)
  if (r.schemaVersion !== 1) throw new BenchReportError(`\`schemaVersion\` ${JSON.stringify(r.schemaVersion)} is not one this version reads (1)`)
  str(r, 'startedAt', '')
  const m = obj(r, 'machine', '')
  num(m, 'cpus', 'machine.'); str(m, 'cpuModel', 'machine.'); str(m, 'node', 'machine.')
  const t = obj(r, 'target', '')
  str(t, 'protocol', 'target.'); str(t, 'address', 'target.'); str(t, 'servable', 'target.')
  if (t.replicas !== null && t.replicas !== undefined) list(t, 'replicas', 'target.')
  const load = obj(r, 'load', '')
  str(load, 'mode', 'load.'); str(load, 'inputs', 'load.')
  for (const k of ['durationMs', 'warmupMs', 'windowMs', 'stabilityPct', 'instancesPerRequest']) num(load, k, 'load.')
  list(r, 'levels', '').forEach((l, i) => {
    const p = `levels[${i}].`
    if (!l || typeof l !== 'object' || Array.isArray(l)) fail(`levels[${i}]`, 'an object', l)
    const lv = l as Obj
    str(lv, 'label', p)
    for (const k of ['reqPerSec', 'itemsPerSec', 'numErrors']) num(lv, k, p)
    latency(lv, 'latencyMs', p)
    obj(lv, 'errors', p)
    optional(lv, 'server', p, (s, sp) => {
      for (const k of ['executions', 'avgBatchSize', 'avgQueueMs', 'computeMsPerExecution']) num(s, k, sp)
      const sizes = obj(s, 'batchSizes', sp)
      for (const [b, n] of Object.entries(sizes)) if (typeof n !== 'number') fail(`${sp}batchSizes.${b}`, 'a number', n)
    })
    optional(lv, 'generate', p, (g, gp) => {
      for (const k of ['ttftMs', 'tpotMs', 'itlMs', 'e2elMs']) latency(g, k, gp)
      num(g, 'outputTokensPerSec', gp)
    })
    optional(lv, 'cpu', p, (c, cp) => { obj(c, 'client', cp) })
  })
  optional(r, 'baseline', '', (b, bp) => {
    str(b, 'kind', bp); str(b, 'note', bp); list(b, 'models', bp)
    list(b, 'rows', bp).forEach((x, i) => {
      if (!x || typeof x !== 'object') fail(`${bp}rows[${i}]`, 'an object', x)
      for (const k of ['batch', 'runs', 'msPerRun', 'itemsPerSec']) num(x as Obj, k, `${bp}rows[${i}].`)
    })
  })
  list(r, 'notes', '')
  return r as unknown as BenchReport
}
