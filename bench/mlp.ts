/**
 * A batch-friendly model (the built-in MLP, 784-1024-10) at concurrency 1..64, all in one run:
 *   batching    maxBatchSize 64 (dynamic batching on), with `--baseline raw`: onnxruntime-node
 *               in-process at batch sizes 1..64, the compute ceiling
 *   no batching maxBatchSize 1
 * Each configuration is its own server (one replica, so both get the same intra-op threads).
 * --profile 1 runs each server's main process with --cpu-prof (bench/results/prof-mlp/).
 *
 *   node scripts/build.mjs && node --import tsx bench/mlp.ts [--duration 10s] [--concurrency 1..64] [--max-batch 64] [--wait-ms 0]
 *     [--instances-per-request 1] [--no-spin 0|1] [--protocol rest|grpc] [--isolation process|thread|inline] [--profile 0|1]
 *
 * --no-spin 1 turns off ORT's intra-op thread spinning in the replicas (a what-if, not the default).
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { buildMlp } from '../src/models/mlp.ts'
import type { BenchReport } from '../src/bench/types.ts'
import { startServer } from '../src/bench/spawn-server.ts'
import { build, flags, fmt, pct, RESULTS, runBenchClean, tempDir, writeResult } from './lib.ts'

const f = flags({ duration: '10s', warmup: '2s', concurrency: '1..64', 'max-batch': '64', 'wait-ms': '0', protocol: 'rest', profile: '0', 'baseline-time': '1s', 'quiet-idle': '90', 'instances-per-request': '1', 'no-spin': '0', isolation: 'process' })
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

let withBatching: BenchReport
let without: BenchReport
try {
  process.stderr.write(`mlp, maxBatchSize ${f['max-batch']} (dynamic batching) + raw onnxruntime baseline\n`)
  withBatching = await benchServer(batched, ['--baseline', 'raw', '--baseline-time', f['baseline-time']])
  process.stderr.write('mlp, maxBatchSize 1 (no batching)\n')
  without = await benchServer(unbatched, [])
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
const file = writeResult(`mlp-ipr${f['instances-per-request']}-${f.protocol}-${f.isolation}${f['no-spin'] === '1' ? '-nospin' : ''}`, { args: f, rows, raw, reports: { batching: withBatching, noBatching: without } })
process.stdout.write(lines.join('\n') + `\nwrote ${file}\n`)
