/**
 * Decode throughput of the bench decoder (DECODER_CONFIGS.small) in the engine, fp32 against its
 * weight-only quantized versions (src/models/quantize.ts): MatMulNBits int8 and int4 (block 32,
 * with zero points, as onnxruntime's quantizer writes them), int4 with accuracy_level 4 (int8
 * compute, as onnxruntime-genai writes CPU models), QDQ int8 and dynamic int8. All variants are
 * loaded side by side and measured interleaved (variant order rotates each rep), so a change in
 * the machine's load hits them alike. Prints a table and writes bench/results/llm-quant-<time>.json.
 *
 *   node --import tsx bench/llm-quant.ts [--prompt 128] [--new 64] [--threads 2] [--reps 3] [--batches 1,4,16] [--variants fp32,int8,int4,...]
 *
 * Re-executes itself with the malloc tuning of onnxruntime-node-notes (as bench/llm-raw.ts).
 */
import { spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { LlmEngine } from '../src/llm/engine.ts'
import { buildDecoder, countDecoderParams, DECODER_CONFIGS } from '../src/models/decoder.ts'
import { quantizeModel, type QuantizeOptions } from '../src/models/quantize.ts'

if (!process.env.MALLOC_MMAP_THRESHOLD_) {
  const env = { ...process.env, MALLOC_MMAP_THRESHOLD_: '33554432', MALLOC_TRIM_THRESHOLD_: '4294967296' }
  const r = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], { env, stdio: 'inherit' })
  process.exit(r.status ?? 1)
}

const VARIANTS: Record<string, QuantizeOptions | null> = {
  fp32: null,
  int8: { format: 'nbits', bits: 8 },
  // Not in the default set (added after the one run): onnxruntime's fast 8-bit CPU path.
  int8_acc4: { format: 'nbits', bits: 8, accuracyLevel: 4 },
  int4: { format: 'nbits', bits: 4 },
  int4_acc4: { format: 'nbits', bits: 4, accuracyLevel: 4 },
  qdq_int8: { format: 'qdq' },
  dynamic_int8: { format: 'dynamic' },
}
const { values: args } = parseArgs({
  options: {
    prompt: { type: 'string', default: '128' }, new: { type: 'string', default: '64' }, threads: { type: 'string', default: '2' },
    reps: { type: 'string', default: '3' }, batches: { type: 'string', default: '1,4,16' }, variants: { type: 'string', default: 'fp32,int8,int4,int4_acc4,qdq_int8,dynamic_int8' },
    out: { type: 'string' },
  },
})
const P = Number(args.prompt), N = Number(args.new), THREADS = Number(args.threads), REPS = Number(args.reps)
const BATCHES = args.batches!.split(',').map(Number)
const names = args.variants!.split(',')
for (const n of names) if (!(n in VARIANTS)) throw new Error(`unknown variant ${n}; known: ${Object.keys(VARIANTS).join(', ')}`)
const cfg = DECODER_CONFIGS.small
const maxB = Math.max(...BATCHES)
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const promptIds = (b: number): number[] => Array.from({ length: P }, (_, i) => 3 + 32 + ((i * 7 + b * 13) % 90))

/** B requests submitted together; decode ms/step from the engine's own counters. */
async function bench(engine: LlmEngine, B: number): Promise<{ msPerStep: number; prefillMs: number }> {
  const s0 = engine.stats()
  await Promise.all(Array.from({ length: B }, (_, b) => new Promise<void>((resolve, reject) => {
    engine.submit(engine.validate({ inputIds: promptIds(b), parameters: { maxNewTokens: N, ignoreEos: true } }), (ev) => {
      if (ev.type === 'done') resolve(); else if (ev.type === 'error') reject(new Error(ev.message))
    })
  })))
  const s1 = engine.stats()
  return { msPerStep: (s1.decodeMs - s0.decodeMs) / (s1.numDecodes - s0.numDecodes), prefillMs: (s1.prefillMs - s0.prefillMs) / (s1.numPrefills - s0.numPrefills) }
}

const dir = await mkdtemp(join(tmpdir(), 'ms-serve-llm-quant-'))
const fp32 = buildDecoder(cfg)
const engines = new Map<string, LlmEngine>()
const files: Record<string, { bytes: number; loadMs: number; quantizeMs: number }> = {}
try {
  for (const name of names) {
    const t0 = performance.now()
    const bytes = VARIANTS[name] ? quantizeModel(fp32, VARIANTS[name]!).bytes : fp32
    const quantizeMs = performance.now() - t0
    const path = join(dir, `${name}.onnx`)
    await writeFile(path, bytes)
    const t1 = performance.now()
    engines.set(name, await LlmEngine.load(path, { maxBatchSize: maxB, maxTotalTokens: P + N + 1, maxBatchPrefillTokens: maxB * P, intraOpNumThreads: THREADS }))
    files[name] = { bytes: bytes.byteLength, loadMs: performance.now() - t1, quantizeMs }
  }
  console.log(`decoder small: ${(countDecoderParams(cfg) / 1e6).toFixed(1)}M params, L${cfg.numLayers} d${cfg.hiddenSize} V${cfg.vocabSize}; prompt ${P}, ${N} new tokens, intraOp ${THREADS}, reps ${REPS} (median), load average at start ${(await import('node:os')).loadavg()[0]!.toFixed(2)}`)
  const rows: Array<Record<string, number | string>> = []
  for (const B of BATCHES) {
    const steps = new Map<string, number[]>(names.map((n) => [n, []]))
    const prefills = new Map<string, number[]>(names.map((n) => [n, []]))
    for (const n of names) await bench(engines.get(n)!, B) // warm-up
    for (let r = 0; r < REPS; r++) {
      for (let i = 0; i < names.length; i++) {
        const n = names[(i + r) % names.length]!
        const x = await bench(engines.get(n)!, B)
        steps.get(n)!.push(x.msPerStep)
        prefills.get(n)!.push(x.prefillMs)
      }
    }
    const base = median(steps.get(names[0]!)!)
    for (const n of names) {
      const ms = median(steps.get(n)!)
      rows.push({ variant: n, batch: B, msPerStep: ms, tokPerS: (B * 1000) / ms, vsFirst: base / ms, msMin: Math.min(...steps.get(n)!), msMax: Math.max(...steps.get(n)!), prefillMs: median(prefills.get(n)!) })
    }
    console.log(`B=${B} done`)
  }
  const f = (x: number, d = 1): string => x.toFixed(d)
  console.log(`\n| variant | model MB | B | decode ms/step [min-max] | tok/s | vs ${names[0]} | prefill ms (B x ${P}) |`)
  console.log('|---|---|---|---|---|---|---|')
  for (const r of rows) {
    const v = r.variant as string
    console.log(`| ${v} | ${f(files[v]!.bytes / 1e6)} | ${r.batch} | ${f(r.msPerStep as number, 2)} [${f(r.msMin as number, 2)}-${f(r.msMax as number, 2)}] | ${f(r.tokPerS as number, 0)} | ${f(r.vsFirst as number, 2)}x | ${f(r.prefillMs as number)} |`)
  }
  const outDir = join(import.meta.dirname, 'results')
  mkdirSync(outDir, { recursive: true })
  const file = args.out ?? join(outDir, `llm-quant-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
  writeFileSync(file, JSON.stringify({ model: { ...cfg, params: countDecoderParams(cfg) }, promptTokens: P, newTokens: N, intraOpThreads: THREADS, reps: REPS, variants: Object.fromEntries(names.map((n) => [n, { options: VARIANTS[n], ...files[n] }])), rows }, null, 2))
  console.log(`\nwrote ${file}`)
} finally {
  await Promise.all([...engines.values()].map((e) => e.close()))
  await rm(dir, { recursive: true, force: true })
}
