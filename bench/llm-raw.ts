/**
 * Raw decode throughput of the small decoder at batch 1, 4, 16, all in one run:
 *   engine   LlmEngine (rewritten graph: only new KV positions out, slot cache fed back as past)
 *   plain    onnxruntime loop with the optimum I/O (full present fetched and fed back as past)
 *   compute  same session, same past lengths, only `logits` fetched (the floor for KV I/O)
 * Prints a table and writes bench/results/llm-raw-<time>.json.
 *
 *   node --import tsx bench/llm-raw.ts [--prompt 128] [--new 64] [--threads 2] [--block 64] [--reps 3] [--batches 1,4,16] [--out file.json]
 *     [--model small|smol] [--engine-only] [--spin true|false] [--logit-stats true|false|both] [--top-k N --top-p P --temperature T --seed S --repetition-penalty R]
 *
 * `--model smol` is SmolLM2-135M's shape with its 49,152-token vocabulary (synthetic BPE
 * tokenizer.json next to the model); `--engine-only` skips the plain and compute-only loops. The
 * engine rows also time the engine's per-step token choice (sampling, detokenization, stop checks:
 * its `consume` after each decode run) and report it as a share of the whole decode step.
 * `--spin false` turns ORT's intra-op spinning off in the engine, as the server does on CPU
 * (default: the engine's own default, spinning on, as the earlier runs of this script).
 * `--logit-stats both` loads a second engine without the graph's logit statistics and times both
 * in the same run, alternating (their cost in onnxruntime lands in the runner's decode time, so
 * compare the whole step, runner + token choice); false runs only that one.
 *
 * glibc reads the malloc tuning at startup, so without it this script re-executes itself with
 * MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 (see onnxruntime-node-notes).
 */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import ort from 'onnxruntime-node'
import { LlmEngine } from '../src/llm/engine.ts'
import { describeModel } from '../src/llm/model-spec.ts'
import { countDecoderParams, DECODER_CONFIGS, writeDecoder } from '../src/models/decoder.ts'
import { writeSyntheticTokenizer } from '../src/models/synthetic-tokenizer.ts'
import type { GenerateParameters } from '../src/llm/types.ts'
import { decodeFeeds, timePlainDecode } from '../src/bench/llm-baseline.ts'

if (!process.env.MALLOC_MMAP_THRESHOLD_) {
  const env = { ...process.env, MALLOC_MMAP_THRESHOLD_: '33554432', MALLOC_TRIM_THRESHOLD_: '4294967296' }
  const r = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], { env, stdio: 'inherit' })
  process.exit(r.status ?? 1)
}

const { values: args } = parseArgs({
  options: {
    prompt: { type: 'string', default: '128' }, new: { type: 'string', default: '64' },
    threads: { type: 'string', default: '2' }, block: { type: 'string', default: '64' }, reps: { type: 'string', default: '3' }, batches: { type: 'string', default: '1,4,16' },
    out: { type: 'string' }, model: { type: 'string', default: 'small' }, 'engine-only': { type: 'boolean', default: false }, spin: { type: 'string' }, 'logit-stats': { type: 'string', default: 'true' },
    'top-k': { type: 'string' }, 'top-p': { type: 'string' }, temperature: { type: 'string' }, seed: { type: 'string' }, 'repetition-penalty': { type: 'string' },
  },
})
const P = Number(args.prompt), N = Number(args.new), THREADS = Number(args.threads), REPS = Number(args.reps)
const BATCHES = args.batches!.split(',').map(Number)
if (args.model !== 'small' && args.model !== 'smol') throw new Error(`--model must be small or smol (got ${args.model})`)
const MODEL = args.model
const ENGINE_ONLY = args['engine-only'] === true
const cfg = DECODER_CONFIGS[MODEL]
const hd = cfg.hiddenSize / cfg.numHeads
// The real-vocab model gets a folder of its own: its tokenizer.json must sit next to it (and must
// not be found next to the byte-level models in tmpdir).
const modelPath = MODEL === 'small'
  ? join(tmpdir(), `ms-serve-decoder-small-${cfg.seed}.onnx`)
  : join(tmpdir(), `ms-serve-decoder-smol-${cfg.seed}`, 'model.onnx')
if (!existsSync(modelPath)) {
  process.stderr.write(`building decoder ${MODEL} (once)...\n`)
  if (MODEL === 'smol') await writeSyntheticTokenizer(join(modelPath, '..'), cfg.vocabSize)
  await writeDecoder(modelPath, cfg)
}
const sampling: GenerateParameters = {
  ...(args['top-k'] ? { topK: Number(args['top-k']) } : {}), ...(args['top-p'] ? { topP: Number(args['top-p']) } : {}),
  ...(args.temperature ? { temperature: Number(args.temperature) } : {}), ...(args.seed ? { seed: Number(args.seed) } : {}),
  ...(args['repetition-penalty'] ? { repetitionPenalty: Number(args['repetition-penalty']) } : {}),
}

// The engine's token choice after each decode run, timed from outside (bench instrumentation:
// `consume` and `decode` are the engine's private step methods).
const engineProto = LlmEngine.prototype as unknown as Record<string, (...a: unknown[]) => unknown>
if (typeof engineProto.consume !== 'function' || typeof engineProto.decode !== 'function') throw new Error('LlmEngine has no consume/decode step methods to time')
const consumeTiming = { inDecode: false, ms: 0, steps: 0 }
const origConsume = engineProto.consume, origDecode = engineProto.decode
engineProto.consume = function (this: unknown, ...a: unknown[]) {
  const t0 = performance.now()
  const r = origConsume.apply(this, a)
  if (consumeTiming.inDecode) { consumeTiming.ms += performance.now() - t0; consumeTiming.steps++ }
  return r
}
engineProto.decode = async function (this: unknown, ...a: unknown[]) {
  consumeTiming.inDecode = true
  try { return await origDecode.apply(this, a) } finally { consumeTiming.inDecode = false }
}
const sessionOptions: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: 'all', executionMode: 'sequential', interOpNumThreads: 1, intraOpNumThreads: THREADS }

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const promptIds = (b: number): number[] => Array.from({ length: P }, (_, i) => 3 + 32 + ((i * 7 + b * 13) % 90))

/** Engine: B requests submitted together; decode ms/step from the engine's own counters. */
async function benchEngine(engine: LlmEngine, B: number): Promise<{ msPerStep: number; wallMs: number; prefillMs: number; consumeMsPerStep: number }> {
  const s0 = engine.stats()
  const c0 = { ...consumeTiming }
  const t0 = performance.now()
  await Promise.all(Array.from({ length: B }, (_, b) => new Promise<void>((resolve, reject) => {
    engine.submit(engine.validate({ inputIds: promptIds(b), parameters: { ...sampling, maxNewTokens: N, ignoreEos: true } }), (ev) => {
      if (ev.type === 'done') resolve(); else if (ev.type === 'error') reject(new Error(ev.message))
    })
  })))
  const wallMs = performance.now() - t0
  const s1 = engine.stats()
  if (s1.numPrefills - s0.numPrefills !== 1) throw new Error('expected one prefill batch; raise maxBatchPrefillTokens')
  const consumeMsPerStep = (consumeTiming.ms - c0.ms) / Math.max(1, consumeTiming.steps - c0.steps)
  return { msPerStep: (s1.decodeMs - s0.decodeMs) / (s1.numDecodes - s0.numDecodes), wallMs, prefillMs: s1.prefillMs - s0.prefillMs, consumeMsPerStep }
}

/** Same past lengths as the plain loop, only logits fetched: the compute floor. */
async function benchCompute(s: ort.InferenceSession, B: number): Promise<number> {
  const big = new Float32Array(B * cfg.numKvHeads * (P + N) * hd).map((_, i) => Math.sin(i) * 0.5)
  const t0 = performance.now()
  for (let i = 0; i < N - 1; i++) {
    const past = P + i
    const f = decodeFeeds(ort, spec, B, 1, past + 1, past, () => 40)
    const view = big.subarray(0, B * cfg.numKvHeads * past * hd)
    for (const name of [...spec.pastKeyNames, ...spec.pastValueNames]) f[name] = new ort.Tensor('float32', view, [B, cfg.numKvHeads, past, hd])
    await s.run(f, ['logits'])
  }
  return (performance.now() - t0) / (N - 1)
}

console.log(`decoder ${MODEL}: V${cfg.vocabSize} ${(countDecoderParams(cfg) / 1e6).toFixed(1)}M params, L${cfg.numLayers} d${cfg.hiddenSize} H${cfg.numHeads} KV${cfg.numKvHeads}; prompt ${P}, ${N} new tokens, intraOp ${THREADS}, kvBlock ${args.block}, reps ${REPS} (median)`)
const plainSession = ENGINE_ONLY ? null : await ort.InferenceSession.create(new Uint8Array(await readFile(modelPath)), sessionOptions)
const spec = plainSession ? describeModel(plainSession) : null!
/** Plain optimum loop (as --baseline raw): prefill, then N-1 steps feeding every present back as past; ms per step. */
const benchPlain = async (B: number): Promise<number> => (await timePlainDecode(ort, plainSession!, spec, B, P, N - 1)).msPerRun
const maxB = Math.max(...BATCHES)
const STATS_MODES = ({ true: [true], false: [false], both: [true, false] } as Record<string, boolean[]>)[args['logit-stats']!]
if (!STATS_MODES) throw new Error(`--logit-stats must be true, false or both (got ${args['logit-stats']})`)
const engines: Array<{ logitStats: boolean; engine: LlmEngine }> = []
for (const logitStats of STATS_MODES) {
  engines.push({
    logitStats,
    engine: await LlmEngine.load(modelPath, {
      maxBatchSize: maxB, maxTotalTokens: P + N + 1, maxBatchPrefillTokens: maxB * P, intraOpNumThreads: THREADS, kvBlock: Number(args.block), logitStats,
      ...(args.spin === undefined ? {} : { allowSpinning: args.spin === 'true' }),
    }),
  })
}
const engine = engines[0]!.engine
const rows: Array<Record<string, number>> = []
for (const B of BATCHES) {
  for (const { engine } of engines) await benchEngine(engine, B) // warm-up
  if (!ENGINE_ONLY) { await benchPlain(B); await benchCompute(plainSession!, B) }
  const runs = engines.map(() => ({ e: [] as number[], wall: [] as number[], pre: [] as number[], cons: [] as number[] }))
  const p: number[] = [], c: number[] = []
  for (let r = 0; r < REPS; r++) {
    for (const [k, { engine }] of engines.entries()) {
      const er = await benchEngine(engine, B)
      const m = runs[k]!
      m.e.push(er.msPerStep); m.wall.push(er.wallMs); m.pre.push(er.prefillMs); m.cons.push(er.consumeMsPerStep)
    }
    p.push(ENGINE_ONLY ? NaN : await benchPlain(B))
    c.push(ENGINE_ONLY ? NaN : await benchCompute(plainSession!, B))
  }
  for (const [k, { logitStats }] of engines.entries()) {
    const { e, wall, pre, cons } = runs[k]!
    rows.push({
      batch: B, logitStats: logitStats ? 1 : 0, engineMsPerStep: median(e), plainMsPerStep: median(p), computeMsPerStep: median(c),
      engineTokPerS: (B * 1000) / median(e), plainTokPerS: (B * 1000) / median(p), computeTokPerS: (B * 1000) / median(c),
      engineVsPlain: median(p) / median(e), engineVsCompute: median(c) / median(e),
      engineWallTokPerS: (B * N * 1000) / median(wall), enginePrefillMs: median(pre),
      // decodeMs counts the runner (feeds, session.run incl. the graph's logit statistics, KV
      // writes); the token choice comes after it.
      consumeMsPerStep: median(cons), consumeShareOfStep: median(cons) / (median(e) + median(cons)),
      engineMsMin: Math.min(...e), engineMsMax: Math.max(...e), plainMsMin: Math.min(...p), plainMsMax: Math.max(...p), computeMsMin: Math.min(...c), computeMsMax: Math.max(...c),
    })
  }
  console.log(`B=${B} done`)
}
const f = (x: number, d = 1): string => x.toFixed(d)
console.log('\n| B | engine ms/step (tok/s) | plain optimum ms/step (tok/s) | compute-only ms/step (tok/s) | engine/plain | engine/compute | engine e2e tok/s (incl. prefill) |')
console.log('|---|---|---|---|---|---|---|')
for (const r of rows) {
  console.log(`| ${r.batch} | ${f(r.engineMsPerStep!, 2)} (${f(r.engineTokPerS!, 0)}) [${f(r.engineMsMin!, 2)}-${f(r.engineMsMax!, 2)}] | ${f(r.plainMsPerStep!, 2)} (${f(r.plainTokPerS!, 0)}) [${f(r.plainMsMin!, 2)}-${f(r.plainMsMax!, 2)}] | ${f(r.computeMsPerStep!, 2)} (${f(r.computeTokPerS!, 0)}) [${f(r.computeMsMin!, 2)}-${f(r.computeMsMax!, 2)}] | ${f(r.engineVsPlain!, 2)}x | ${f(r.engineVsCompute! * 100, 0)}% | ${f(r.engineWallTokPerS!, 0)} |`)
}
console.log(`\n| B | logit stats in the graph | engine decode step ms (runner + token choice) | runner ms/step | token choice ms/step | token choice share of the step | sampling ${JSON.stringify(sampling)} |`)
console.log('|---|---|---|---|---|---|---|')
for (const r of rows) {
  console.log(`| ${r.batch} | ${r.logitStats ? 'yes' : 'no'} | ${f(r.engineMsPerStep! + r.consumeMsPerStep!, 2)} | ${f(r.engineMsPerStep!, 2)} | ${f(r.consumeMsPerStep!, 3)} | ${f(r.consumeShareOfStep! * 100, 1)}% | |`)
}
const outDir = join(import.meta.dirname, 'results')
mkdirSync(outDir, { recursive: true })
const file = args.out ?? join(outDir, `llm-raw-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
writeFileSync(file, JSON.stringify({
  model: { ...cfg, params: countDecoderParams(cfg) }, promptTokens: P, newTokens: N, intraOpThreads: THREADS, kvBlock: Number(args.block), reps: REPS, sampling, engineOnly: ENGINE_ONLY, spin: args.spin ?? 'engine default',
  malloc: { MALLOC_MMAP_THRESHOLD_: process.env.MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_: process.env.MALLOC_TRIM_THRESHOLD_ },
  engineStats: engine.stats(), rows,
}, null, 2))
console.log(`\nwrote ${file}`)
await engine.close()
await plainSession?.release()
