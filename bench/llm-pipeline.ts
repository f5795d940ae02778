/**
 * Decoder pipeline stages (issue 13, declareLlm `stages`): the same decoder run whole and in 2
 * stages, in one run, at the engine (no server or load generator on the cores):
 *   whole 2t      one session, 2 intra-op threads (what one replica on both cores gets)
 *   whole 1t      one session, 1 intra-op thread
 *   in turn       2 stages on the engine's thread, 1 thread each (stageThreads 'inline')
 *   workers x1    2 stage workers, 1 thread each, one lane: the stages run one at a time
 *   workers x2    2 stage workers, 2 lanes (micro-batches): one lane in stage 1 while the other is in stage 2
 * Closed loop: `--streams` streams, each sending a `--prompt`-token prompt for `--new` tokens, again
 * and again for `--duration`. Reports generated tokens/s and, for the worker pipelines, each stage's
 * utilisation (busy ms in its worker / wall ms) and the overlap (wall ms with both stages running / wall).
 *
 *   node scripts/build.mjs && node --import tsx bench/llm-pipeline.ts [--model small] [--streams 1,4,16] [--duration 6]
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { buildDecoder, DECODER_CONFIGS } from '../src/models/decoder.ts'
import { LlmEngine, type LlmEngineOptions } from '../src/llm/engine.ts'
import { overlapMs } from '../src/llm/pipeline.ts'
import { build, flags, tempDir, writeResult } from './lib.ts'

const f = flags({ model: 'small', streams: '1,4,16', duration: '6', warmup: '1', prompt: '32', new: '64', configs: 'whole 2t,whole 1t,in turn,workers x1,workers x2' })
build()
const root = tempDir('ms-serve-bench-llm-pipeline-')
const path = join(root.dir, 'model.onnx')
writeFileSync(path, buildDecoder(DECODER_CONFIGS[f.model as keyof typeof DECODER_CONFIGS]))

const one = { intraOpNumThreads: 1 }
const base: LlmEngineOptions = { maxTotalTokens: Number(f.prompt) + Number(f.new) + 8, maxBatchSize: 16, allowSpinning: true }
const CONFIGS: Record<string, LlmEngineOptions> = {
  'whole 2t': { intraOpNumThreads: 2 },
  'whole 1t': { intraOpNumThreads: 1 },
  'in turn': { stages: 2, stageThreads: 'inline', stageDevices: [one, one] },
  'workers x1': { stages: 2, microBatches: 1, stageDevices: [one, one] },
  'workers x2': { stages: 2, microBatches: 2, stageDevices: [one, one] },
}

interface Row { config: string; streams: number; tokPerSec: number; stageUtil?: number[]; overlap?: number }
const rows: Row[] = []
const prompt = 'p'.repeat(Number(f.prompt) - 1) // the byte-level tokenizer adds BOS

async function stream(engine: LlmEngine, until: number, counted: () => boolean, count: (n: number) => void): Promise<void> {
  while (performance.now() < until) {
    await new Promise<void>((resolve, reject) => {
      engine.submit(engine.validate({ inputs: prompt, parameters: { ignoreEos: true, maxNewTokens: Number(f.new) } }), (ev) => {
        if (ev.type === 'token') { if (counted()) count(1) } else if (ev.type === 'done') resolve()
        else reject(new Error(ev.message))
      })
    })
  }
}

for (const name of f.configs.split(',')) {
  const engine = await LlmEngine.load(path, { ...base, ...CONFIGS[name] })
  try {
    for (const streams of f.streams.split(',').map(Number)) {
      const t0 = performance.now()
      const measureFrom = t0 + Number(f.warmup) * 1000
      const end = measureFrom + Number(f.duration) * 1000
      let tokens = 0
      let busy0: number[] = []
      let marked = false
      const counted = () => {
        const now = performance.now()
        if (!marked && now >= measureFrom) { marked = true; busy0 = engine.pipeline ? [...engine.pipeline.busyMs] : [] }
        return now >= measureFrom && now < end
      }
      await Promise.all(Array.from({ length: streams }, () => stream(engine, end, counted, (n) => { tokens += n })))
      const wall = end - measureFrom
      const row: Row = { config: name, streams, tokPerSec: tokens / (wall / 1000) }
      const p = engine.pipeline
      if (p) {
        row.stageUtil = p.busyMs.map((b, k) => (b - (busy0[k] ?? 0)) / wall)
        // Overlap over the intervals the workers kept from the measured window.
        const from = performance.timeOrigin + measureFrom
        const to = performance.timeOrigin + end
        row.overlap = overlapMs(p.intervals.map((iv) => iv.filter(([a, b]) => a >= from && b <= to))) / wall
      }
      rows.push(row)
      const util = row.stageUtil ? `  stages busy ${row.stageUtil.map((u) => `${(u * 100).toFixed(0)}%`).join(' / ')}, both at once ${(row.overlap! * 100).toFixed(0)}%` : ''
      console.log(`${name.padEnd(11)} ${String(streams).padStart(2)} streams  ${row.tokPerSec.toFixed(0).padStart(5)} tok/s${util}`)
      await new Promise((r) => setTimeout(r, 200))
    }
  } finally {
    await engine.close()
  }
}

const at = (config: string, streams: number) => rows.find((r) => r.config === config && r.streams === streams)?.tokPerSec
console.log('\nratios in this run:')
for (const s of f.streams.split(',').map(Number)) {
  const x2 = at('workers x2', s)
  const parts = [['workers x1', at('workers x1', s)], ['in turn', at('in turn', s)], ['whole 1t', at('whole 1t', s)], ['whole 2t', at('whole 2t', s)]] as const
  if (x2) console.log(`  ${s} streams: workers x2 = ${parts.filter(([, v]) => v).map(([n, v]) => `${(x2 / v!).toFixed(2)}x ${n}`).join(', ')}`)
}
console.log(`\nresult: ${writeResult('llm-pipeline', { flags: f, rows })}`)
root.remove()
