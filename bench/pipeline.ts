/**
 * Pipeline stages (issue 13): a deep MLP (8 x 1024) served whole and split into 2 stages by
 * `ms-serve split`, in one run:
 *   whole x1     one replica on device 0 (all intra-op threads)
 *   whole x2     one replica per device 0,1 (half the threads each)
 *   staged       one pipeline over devices 0,1: stage 1 on 0, stage 2 on 1 (half the threads each)
 * At each concurrency, items/s and p50, and for the staged servable each stage's utilisation
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
import type { BenchReport } from '../src/bench/types.ts'
import { build, flags, fmt, runBenchClean, tempDir, writeResult } from './lib.ts'

const f = flags({ duration: '5s', warmup: '1s', concurrency: '1,8,32', 'quiet-idle': '80', layers: '8', width: '1024' })
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

async function run(config: string, dir: string, devices: string): Promise<Row[]> {
  const server = await startServer(dir, { devices, isolation: 'process' })
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

let rows: Row[] = []
try {
  rows = [...await run('whole x1', wholeDir, '0'), ...await run('whole x2', wholeDir, '0,1'), ...await run('staged', stagedDir, '0,1')]
} finally {
  root.remove()
}
const lines = [
  `deep MLP 1024-${f.layers}x${f.width}-16, split at ${split.crossings[0]!.join(', ')} (${split.stages.map((s) => s.nodes).join(' + ')} nodes); maxBatchSize 32`,
  '', '| clients | whole x1 items/s | whole x2 items/s | staged items/s | staged / whole x1 | stage 1 util | stage 2 util | overlap (sum) |', '|---|---|---|---|---|---|---|---|',
]
for (const c of f.concurrency.split(',').map(Number)) {
  const a = rows.find((r) => r.config === 'whole x1' && r.clients === c)!
  const b = rows.find((r) => r.config === 'whole x2' && r.clients === c)!
  const s = rows.find((r) => r.config === 'staged' && r.clients === c)!
  lines.push(`| ${c} | ${fmt(a.itemsPerSec)} | ${fmt(b.itemsPerSec)} | ${fmt(s.itemsPerSec)} | ${(s.itemsPerSec / a.itemsPerSec).toFixed(2)}x | ${((s.stageUtil?.[0] ?? 0) * 100).toFixed(0)}% | ${((s.stageUtil?.[1] ?? 0) * 100).toFixed(0)}% | ${(s.overlap ?? 0).toFixed(2)} |`)
}
const file = writeResult('pipeline', { args: f, rows, crossings: split.crossings })
process.stdout.write(lines.join('\n') + `\nwrote ${file}\n`)
