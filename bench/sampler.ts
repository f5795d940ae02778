/**
 * The sampler alone on random logits rows of a real-size vocabulary: µs per row and ms per
 * 16-row decode step for each parameter mix (BENCHMARKS.md §3, real vocabularies).
 *
 *   node --import tsx bench/sampler.ts [--vocab 49152] [--rows 16] [--steps 40] [--sd 3] [--module path/to/sampler.ts] [--stats]
 *
 * `--module` times another copy of the sampler (e.g. `git show REV:src/llm/sampler.ts > /tmp/old.ts`)
 * for a before/after in the same run conditions. Rows are reused across steps (the sampler leaves
 * them unchanged); penalties use a 256-token history per row. `--stats` hands the sampler each row's
 * logit statistics (max, top logprob at the mix's temperature) as the rewritten graph computes them
 * (their cost is in onnxruntime's run, not here: bench/llm-raw.ts --logit-stats both times it).
 */
import { performance } from 'node:perf_hooks'
import { pathToFileURL } from 'node:url'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import type * as SamplerModule from '../src/llm/sampler.ts'

const { values: args } = parseArgs({ options: {
  vocab: { type: 'string', default: '49152' }, rows: { type: 'string', default: '16' }, steps: { type: 'string', default: '40' },
  sd: { type: 'string', default: '3' }, module: { type: 'string' }, stats: { type: 'boolean', default: false },
} })
const V = Number(args.vocab), ROWS = Number(args.rows), STEPS = Number(args.steps), SD = Number(args.sd)
const mod = (args.module
  ? await import(pathToFileURL(resolve(args.module)).href)
  : await import('../src/llm/sampler.ts')) as typeof SamplerModule
const { createRng, GREEDY } = mod
type Params = SamplerModule.SamplingParams

const rand = createRng(1)
const rows = Array.from({ length: ROWS }, () => {
  const x = new Float32Array(V)
  for (let i = 0; i < V; i++) x[i] = (rand() + rand() + rand() + rand() - 2) * Math.sqrt(3) * SD
  return x
})
const history = rows.map(() => {
  const c = new Map<number, number>()
  for (let i = 0; i < 256; i++) { const id = Math.floor(rand() * V); c.set(id, (c.get(id) ?? 0) + 1) }
  return c
})
const S: Params = { ...GREEDY, doSample: true }
const MIXES: Array<[string, Params, number, boolean]> = [
  ['greedy', GREEDY, 0, false],
  ['greedy + top_n 5', GREEDY, 5, false],
  ['greedy + repetition 1.1', { ...GREEDY, repetitionPenalty: 1.1 }, 0, true],
  ['temperature 0.8', { ...S, temperature: 0.8 }, 0, false],
  ['top_k 50', { ...S, topK: 50 }, 0, false],
  ['top_p 0.95', { ...S, topP: 0.95 }, 0, false],
  ['typical_p 0.9', { ...S, typicalP: 0.9 }, 0, false],
  ['T 0.7 top_k 50 top_p 0.9', { ...S, temperature: 0.7, topK: 50, topP: 0.9 }, 0, false],
  ['T 0.7 top_k 50 top_p 0.9 rep 1.1', { ...S, temperature: 0.7, topK: 50, topP: 0.9, repetitionPenalty: 1.1 }, 0, true],
]
const scratch = new Float32Array(V)
console.log(`sampler ${args.module ?? 'src/llm/sampler.ts'}: V ${V}, ${ROWS} rows per step, ${STEPS} steps, logits sd ${SD}${args.stats ? ', with the graph\'s logit statistics' : ''}`)
/** Each row's statistics at temperature t, float32 as onnxruntime outputs them. */
const statsAt = (t: number): SamplerModule.LogitStats[] => rows.map((x) => {
  let max = -Infinity
  for (const z of x) max = Math.max(max, z)
  let sum = 0
  for (const z of x) sum += Math.exp(z / t - max / t)
  return { max: Math.fround(max), topLogprob: Math.fround(-Math.log(sum)) }
})
console.log('| parameters | µs per row | ms per step of rows |')
console.log('|---|---|---|')
for (const [name, params, topN, pen] of MIXES) {
  const rng = createRng(7)
  const stats = args.stats ? statsAt(params.doSample ? params.temperature : 1) : null
  const run = (steps: number): number => {
    const t0 = performance.now()
    for (let s = 0; s < steps; s++) for (let r = 0; r < ROWS; r++) mod.sampleToken(rows[r]!, params, pen ? history[r]! : new Map(), rng, scratch, topN, stats?.[r])
    return performance.now() - t0
  }
  run(Math.max(2, STEPS >> 3)) // warm-up (JIT)
  const ms = run(STEPS)
  console.log(`| ${name} | ${((ms * 1000) / (STEPS * ROWS)).toFixed(1)} | ${(ms / STEPS).toFixed(2)} |`)
}
