/**
 * Pipeline stages (issue 13): a deep MLP (8 x 1024) served whole and split into 2 stages by
 * `ms-serve split`, in one run:
 *   whole x1     one replica on device 0 (all intra-op threads)
 *   whole x2     one replica per device 0,1 (half the threads each)
 *   staged       one pipeline over devices 0,1: stage 1 on 0, stage 2 on 1 (half the threads each),
 *                each stage in its own worker thread
 *   in turn      the same pipeline with its stages on the replica's one thread
 *                (MS_SERVE_STAGES_INLINE=1): stages take turns, what a pipeline without overlap gives
 * First the sessions alone (no server, no load generator: `--raw-batches` batches of 32 rows, 3 in
 * flight): one 2-thread session, the stages in worker threads, the stages on one thread.
 * Then through the server: at each concurrency, items/s and p50, and for the staged servable each stage's utilisation
 * (busy ms / wall ms, from /stats `stageMs`) and their sum, the overlap: a pipeline whose stages
 * ran one batch at a time would sum to at most 1.
 *
 *   node scripts/build.mjs && node --import tsx bench/pipeline.ts [--duration 5s] [--concurrency 1,8,32]
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { buildDeepMlp } from '../src/models/mlp.ts'
import { splitModel } from '../src/models/split.ts'
import { ortTyper } from '../src/models/split-check.ts'
import { startServer } from '../src/bench/spawn-server.ts'
import ort from 'onnxruntime-node'
import { StagedSession, inThread } from '../src/runtime/staged-session.ts'
import { StageWorker } from '../src/runtime/stage-worker.ts'
import type { BenchReport } from '../src/bench/types.ts'
import { build, flags, fmt, runBenchClean, tempDir, writeResult } from './lib.ts'

const f = flags({ 'raw-batches': '400', duration: '5s', warmup: '1s', concurrency: '1,8,32', 'quiet-idle': '80', layers: '8', width: '1024' })
build()
const root = tempDir('ms-serve-bench-pipeline-')
const whole = buildDeepMlp({ layers: Number(f.layers), width: Number(f.width), inputDim: 1024, outputDim: 16 })
const split = await splitModel(whole, { stages: 2 }, ortTyper)

function servable(dir: string, decl: string, files: Record<string, Uint8Array>): string {
  mkdirSync(join(dir, 'mlp', '1'), { recursive: true })
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, 'mlp', '1', name), bytes)
  writeFileSync(join(dir, 'mlp', 'servable_config.ts'), `import { defineServable } from 'ms-serve'
export default defineServable((s) => {
  const m = s.declareModel({ ${decl}, maxBatchSize: 32 })
  s.registerMethod('predict', { inputs: ['x'], outputs: ['y'] }, ({ x }) => ({ y: s.addStage(m, [x]) }))
})
`)
  return dir
}
const wholeDir = servable(join(root.dir, 'whole'), `file: 'mlp.onnx'`, { 'mlp.onnx': whole })
const stagedDir = servable(join(root.dir, 'staged'), `stages: ['stage1.onnx', 'stage2.onnx']`, { 'stage1.onnx': split.stages[0]!.bytes, 'stage2.onnx': split.stages[1]!.bytes })

interface Row { config: string; clients: number; itemsPerSec: number; p50: number; stageUtil?: number[]; overlap?: number }

async function stageMs(origin: string): Promise<number[]> {
  const st = await (await fetch(`${origin}/stats`)).json() as { servables: { models: { stageMs?: number[] }[] }[] }
  return st.servables[0]!.models[0]!.stageMs ?? []
}

async function run(config: string, dir: string, devices: string, env: NodeJS.ProcessEnv = process.env): Promise<Row[]> {
  const server = await startServer(dir, { devices, isolation: 'process', env })
  const rows: Row[] = []
  try {
    for (const c of f.concurrency.split(',')) {
      const before = await stageMs(server.restOrigin)
      const t0 = performance.now()
      const r: BenchReport = await runBenchClean(['--servable', 'mlp', '--method', 'predict', '--concurrency', c, '--duration', f.duration, '--warmup', f.warmup, '--servables', dir, '--url', server.restOrigin, '--server-pid', String(server.pid)], { quietIdle: Number(f['quiet-idle']), maxOther: 0.3 })
      const wall = performance.now() - t0
      const after = await stageMs(server.restOrigin)
      const lv = r.levels[0]!
      const row: Row = { config, clients: Number(c), itemsPerSec: lv.itemsPerSec, p50: lv.latencyMs.p50 }
      if (after.length) {
        // Busy time over the whole call (warm-up and measurement both keep the stages busy).
        row.stageUtil = after.map((x, k) => (x - (before[k] ?? 0)) / wall)
        row.overlap = row.stageUtil.reduce((a, b) => a + b, 0)
      }
      rows.push(row)
      process.stderr.write(`${config} C=${c}: ${fmt(row.itemsPerSec)} items/s${row.stageUtil ? `, stage utilisation ${row.stageUtil.map((u) => `${(u * 100).toFixed(0)}%`).join(' / ')}` : ''}\n`)
    }
  } finally {
    await server.stop()
  }
  return rows
}

interface RawRow { config: string; batchesPerSec: number; stageUtil?: number[] }
/** Batches/s of `run` with 3 batches in flight, and each stage's busy share of the wall time. */
async function rawRun(config: string, run: (x: ort.Tensor) => Promise<{ stageMs?: number[] }>): Promise<RawRow> {
  const n = Number(f['raw-batches'])
  const x = new ort.Tensor('float32', Float32Array.from({ length: 32 * 1024 }, (_, i) => Math.sin(i)), [32, 1024])
  for (let i = 0; i < 5; i++) await run(x)
  const busy: number[] = []
  let next = 0
  const t0 = performance.now()
  await Promise.all([0, 1, 2].map(async () => {
    while (next++ < n) {
      const r = await run(x)
      r.stageMs?.forEach((ms, k) => { busy[k] = (busy[k] ?? 0) + ms })
    }
  }))
  const wall = performance.now() - t0
  const row: RawRow = { config, batchesPerSec: n / (wall / 1000), ...(busy.length ? { stageUtil: busy.map((b) => b / wall) } : {}) }
  process.stderr.write(`raw ${config}: ${row.batchesPerSec.toFixed(1)} batches/s${row.stageUtil ? `, stages busy ${row.stageUtil.map((u) => `${(u * 100).toFixed(0)}%`).join(' / ')}` : ''}\n`)
  return row
}

const one = { interOpNumThreads: 1, extra: { 'session.intra_op.allow_spinning': '0' } as never }
const raw: RawRow[] = []
{
  const w = await ort.InferenceSession.create(whole, { ...one, intraOpNumThreads: 2 })
  raw.push(await rawRun('whole, 2 threads', async (x) => { await w.run({ x }); return {} }))
  await w.release()
  const workers = new StagedSession(await Promise.all(split.stages.map((s) => StageWorker.start({ bytes: s.bytes }, { ...one, intraOpNumThreads: 1 }))), ['stage1', 'stage2'])
  raw.push(await rawRun('stages in worker threads (1 thread each)', (x) => workers.runTimed({ x })))
  await workers.release()
  const local = new StagedSession(await Promise.all(split.stages.map(async (s) => inThread(await ort.InferenceSession.create(s.bytes, { ...one, intraOpNumThreads: 1 })))), ['stage1', 'stage2'])
  raw.push(await rawRun('stages in turn on one thread (1 thread each)', (x) => local.runTimed({ x })))
  await local.release()
}

let rows: Row[] = []
try {
  rows = [...await run('whole x1', wholeDir, '0'), ...await run('whole x2', wholeDir, '0,1'), ...await run('staged', stagedDir, '0,1'), ...await run('in turn', stagedDir, '0,1', { ...process.env, MS_SERVE_STAGES_INLINE: '1' })]
} finally {
  root.remove()
}
const lines = [
  '| sessions alone, 3 batches of 32 in flight | batches/s | stage 1 busy | stage 2 busy | sum |', '|---|---|---|---|---|',
  ...raw.map((r) => `| ${r.config} | ${r.batchesPerSec.toFixed(1)} | ${r.stageUtil ? r.stageUtil.map((u) => `${(u * 100).toFixed(0)}%`).join(' | ') : '- | -'} | ${r.stageUtil ? r.stageUtil.reduce((a, b) => a + b, 0).toFixed(2) : '-'} |`),
  '',
  `deep MLP 1024-${f.layers}x${f.width}-16, split at ${split.crossings[0]!.join(', ')} (${split.stages.map((s) => s.nodes).join(' + ')} nodes); maxBatchSize 32`,
  '', '| clients | whole x1 items/s | whole x2 items/s | staged items/s | in turn items/s | staged / in turn | staged / whole x1 | stage 1 util | stage 2 util | sum | in turn: sum |', '|---|---|---|---|---|---|---|---|---|---|---|',
]
for (const c of f.concurrency.split(',').map(Number)) {
  const a = rows.find((r) => r.config === 'whole x1' && r.clients === c)!
  const b = rows.find((r) => r.config === 'whole x2' && r.clients === c)!
  const s = rows.find((r) => r.config === 'staged' && r.clients === c)!
  const t = rows.find((r) => r.config === 'in turn' && r.clients === c)!
  lines.push(`| ${c} | ${fmt(a.itemsPerSec)} | ${fmt(b.itemsPerSec)} | ${fmt(s.itemsPerSec)} | ${fmt(t.itemsPerSec)} | ${(s.itemsPerSec / t.itemsPerSec).toFixed(2)}x | ${(s.itemsPerSec / a.itemsPerSec).toFixed(2)}x | ${((s.stageUtil?.[0] ?? 0) * 100).toFixed(0)}% | ${((s.stageUtil?.[1] ?? 0) * 100).toFixed(0)}% | ${(s.overlap ?? 0).toFixed(2)} | ${(t.overlap ?? 0).toFixed(2)} |`)
}
const file = writeResult('pipeline', { args: f, raw, rows, crossings: split.crossings })
process.stdout.write(lines.join('\n') + `\nwrote ${file}\n`)
