/**
 * A batch-friendly model (the built-in MLP, 784-1024-10) at concurrency 1..64, all in one run:
 *   batching    maxBatchSize 64 (dynamic batching on), with `--baseline raw`: onnxruntime-node
 *               in-process at batch sizes 1..64, the compute ceiling
 *   no batching maxBatchSize 1
 *   budget      the same generator against a bare fastify echo of these requests (top level only):
 *               the HTTP side's CPU per item (generator + echo), with the raw baseline's CPU per
 *               item at its best batch, gives the CPU budget bound cores / (HTTP + ORT) items/s
 *               that issue 11 goal 6 compares ms-serve with
 * Each configuration is its own server (one replica, so both get the same intra-op threads).
 * --profile 1 runs each server's main process with --cpu-prof (bench/results/prof-mlp/).
 *
 *   node scripts/build.mjs && node --import tsx bench/mlp.ts [--duration 10s] [--concurrency 1..64] [--max-batch 64] [--wait-ms 0]
 *     [--instances-per-request 1] [--no-spin 0|1] [--protocol rest|grpc] [--isolation auto|process|thread|inline] [--profile 0|1]
 *
 * --no-spin 1 turns off ORT's intra-op thread spinning in the replicas (a what-if, not the default).
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { buildMlp } from '../src/models/mlp.ts'
import type { BenchReport } from '../src/bench/types.ts'
import { startServer } from '../src/bench/spawn-server.ts'
import { build, flags, fmt, pct, RESULTS, runBenchClean, startEchoServers, tempDir, writeResult } from './lib.ts'

const f = flags({ duration: '10s', warmup: '2s', concurrency: '1..64', 'max-batch': '64', 'wait-ms': '0', protocol: 'rest', profile: '0', 'baseline-time': '1s', 'quiet-idle': '90', 'instances-per-request': '1', 'no-spin': '0', isolation: 'auto' })
build()

const root = tempDir('ms-serve-bench-mlp-')
// ORT's intra-op threads spin after each run; on 2 shared cores that steals the listener's CPU.
const NO_SPIN = `, session: { extra: { 'session.intra_op.allow_spinning': '0' } }`
const model = buildMlp()
function servable(dir: string, maxBatchSize: number): string {
  mkdirSync(join(dir, 'mlp', '1'), { recursive: true })
  writeFileSync(join(dir, 'mlp', '1', 'mlp.onnx'), model)
  writeFileSync(join(dir, 'mlp', 'servable_config.ts'), `import { defineServable } from 'ms-serve'

export default defineServable((s) => {
  const mlp = s.declareModel({ file: 'mlp.onnx', maxBatchSize: ${maxBatchSize}, maxWaitMs: ${Number(f['wait-ms'])}${f['no-spin'] === '1' ? NO_SPIN : ''} })
  s.registerMethod('predict', { inputs: ['x'], outputs: ['y'] }, ({ x }) => ({ y: s.addStage(mlp, [x]) }))
})
`)
  return dir
}
const batched = servable(join(root.dir, 'batched'), Number(f['max-batch']))
const unbatched = servable(join(root.dir, 'unbatched'), 1)

const profDir = join(RESULTS, 'prof-mlp')
if (f.profile === '1') mkdirSync(profDir, { recursive: true })
const common = ['--servable', 'mlp', '--method', 'predict', '--concurrency', f.concurrency, '--duration', f.duration, '--warmup', f.warmup, '--instances-per-request', f['instances-per-request']]

/** Starts one server on `dir` (main process profiled with --profile 1), benches it, stops it. */
async function benchServer(dir: string, extra: string[]): Promise<BenchReport> {
  const server = await startServer(dir, { isolation: f.isolation, nodeArgs: f.profile === '1' ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [] })
  try {
    // --servables with --url: the bench reads DIR (inputs, raw baseline) but does not start another server.
    const target = f.protocol === 'grpc' ? ['--grpc', server.grpcAddress, '--url', server.restOrigin] : ['--url', server.restOrigin]
    return await runBenchClean([...common, '--servables', dir, ...target, '--server-pid', String(server.pid), ...extra], { quietIdle: Number(f['quiet-idle']), maxOther: 0.3 })
  } catch (e) {
    process.stderr.write(`server output:\n${server.output()}\n`)
    throw e
  } finally {
    await server.stop()
  }
}

/**
 * The HTTP side's CPU per request (issue 11 goal 6): the same load generator against a bare fastify
 * echo of this request shape (bench/echo-servers.ts: parses the body, answers a 10-float y), at the
 * top concurrency level only; client + echo CPU per request.
 */
async function httpCpuPerRequest(): Promise<{ msPerRequest: number; report: BenchReport }> {
  const addr = await startEchoServers()
  try {
    const top = f.concurrency.split('..').at(-1)!.split(',').at(-1)!
    const args = ['--servable', 'mlp', '--method', 'predict', '--concurrency', top, '--duration', f.duration, '--warmup', f.warmup, '--instances-per-request', f['instances-per-request'], '--servables', batched, '--url', `http://${addr.rest}`, '--server-pid', String(addr.pid)]
    const report = await runBenchClean(args, { quietIdle: Number(f['quiet-idle']), maxOther: 0.3 })
    const cpu = report.levels.at(-1)!.cpu
    if (!cpu?.server) throw new Error('no CPU figures for the echo run')
    return { msPerRequest: cpu.client.msPerRequest + cpu.server.msPerRequest, report }
  } finally {
    addr.proc.kill('SIGTERM')
  }
}

let withBatching: BenchReport
let without: BenchReport
let http: { msPerRequest: number; report: BenchReport }
try {
  process.stderr.write(`mlp, maxBatchSize ${f['max-batch']} (dynamic batching) + raw onnxruntime baseline\n`)
  withBatching = await benchServer(batched, ['--baseline', 'raw', '--baseline-time', f['baseline-time']])
  process.stderr.write('mlp, maxBatchSize 1 (no batching)\n')
  without = await benchServer(unbatched, [])
  process.stderr.write('bare fastify echo of the same requests (the HTTP side\'s CPU per request)\n')
  http = await httpCpuPerRequest()
} finally {
  root.remove()
}

const raw = withBatching.baseline!
const best = raw.best!
const lines = [
  `raw onnxruntime (in-process, intra-op ${raw.intraOpThreads}): ${raw.rows.map((r) => `B=${r.batch} ${fmt(r.itemsPerSec)}`).join(', ')} items/s; best B=${best.batch}`,
  '',
  '| clients | batching items/s | p95 ms | avg batch | no batching items/s | p95 ms | batching / no batching | batching / raw best |',
  '|---|---|---|---|---|---|---|---|',
]
const rows = withBatching.levels.map((b) => {
  const n = without.levels.find((x) => x.label === b.label)!
  const row = { level: b.label, batchedItemsPerSec: b.itemsPerSec, batchedP95: b.latencyMs.p95, avgBatch: b.server?.avgBatchSize ?? 0, unbatchedItemsPerSec: n.itemsPerSec, unbatchedP95: n.latencyMs.p95, speedup: b.itemsPerSec / n.itemsPerSec, ratioToRaw: b.itemsPerSec / best.itemsPerSec }
  lines.push(`| ${b.label.slice(2)} | ${fmt(row.batchedItemsPerSec)} | ${row.batchedP95.toFixed(2)} | ${row.avgBatch.toFixed(1)} | ${fmt(row.unbatchedItemsPerSec)} | ${row.unbatchedP95.toFixed(2)} | ${row.speedup.toFixed(2)}x | **${pct(row.ratioToRaw)}** |`)
  return row
})
const top = rows[rows.length - 1]!
lines.push('', `At ${top.level}: ${pct(top.ratioToRaw)} of raw onnxruntime at B=${best.batch} (goal >= 80%), ${top.speedup.toFixed(2)}x no batching (goal >= 3x), p95 ${top.batchedP95.toFixed(2)} vs ${top.unbatchedP95.toFixed(2)} ms (goal: no worse).`)
// The CPU budget bound: every item needs the HTTP side's CPU (generator + a bare echo, per item) and
// ORT's (the raw baseline's CPU per item at its best batch); the machine's cores cover both.
const ipr = Number(f['instances-per-request'])
const httpMs = http.msPerRequest / ipr
const ortMs = best.cpuMsPerItem ?? NaN
const cores = withBatching.machine.cpus
const budget = (cores * 1000) / (httpMs + ortMs)
const budgetRow = { httpCpuMsPerItem: httpMs, ortCpuMsPerItem: ortMs, cores, boundItemsPerSec: budget, msServeItemsPerSec: top.batchedItemsPerSec, ratioToBound: top.batchedItemsPerSec / budget, echoItemsPerSec: http.report.levels.at(-1)!.itemsPerSec }
lines.push('', '| CPU per item: HTTP (generator + bare echo) | CPU per item: ORT (raw, best batch) | bound: cores / (HTTP + ORT) items/s | ms-serve items/s | ms-serve / bound |', '|---|---|---|---|---|',
  `| ${(httpMs * 1000).toFixed(0)} µs | ${(ortMs * 1000).toFixed(0)} µs | ${fmt(budget)} | ${fmt(top.batchedItemsPerSec)} | **${pct(budgetRow.ratioToBound)}** (goal >= 80%) |`)
const file = writeResult(`mlp-ipr${f['instances-per-request']}-${f.protocol}-${f.isolation}${f['no-spin'] === '1' ? '-nospin' : ''}`, { args: f, rows, raw, budget: budgetRow, reports: { batching: withBatching, noBatching: without, httpEcho: http.report } })
process.stdout.write(lines.join('\n') + `\nwrote ${file}\n`)
