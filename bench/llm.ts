/**
 * The LLM benchmark of BENCHMARKS.md, in one run on the 25.4M-parameter decoder:
 *   served   ms-serve (continuous batching) at 1, 4, 16 concurrent streams over TGI /generate_stream:
 *            aggregate output tok/s, TTFT, TPOT (vLLM definitions, llm-serving.md §3.5)
 *   seq      the same server config with maxBatchSize 1: one request at a time (16 streams queue)
 *   raw      bench/llm-raw.ts in a child: the engine alone, a plain onnxruntime loop with the
 *            optimum I/O, and the compute-only step (only logits fetched), at batch 1, 4, 16
 * Each server runs alone with one replica (2 intra-op threads), the same as the raw runs.
 *
 *   npm run bench:llm  [-- --new 64 --prompt 128 --rounds 2]
 *   scheduler options: --ratio X (waitingServedRatio), --prefill-tokens N (maxBatchPrefillTokens),
 *   --consecutive-prefills N (maxConsecutivePrefills); --served-only, --streams 1,4,16;
 *   --isolation process|thread (where the replica runs; ms-serve start --isolation); --intra N (the LLM's intra-op threads)
 *   --model smol: SmolLM2-135M's shape with a 49,152-token vocabulary and its synthetic BPE
 *   tokenizer.json (default small); the prompt is then P-1 characters, which BPE makes fewer tokens.
 */
import { spawnSync } from 'node:child_process'
import { startServer } from '../src/bench/spawn-server.ts'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { DECODER_CONFIGS, countDecoderParams } from '../src/models/decoder.ts'
import { BENCH_MODELS, benchDecoder, llmServables, quantile } from './lib.ts'

const { values: args } = parseArgs({ options: {
  prompt: { type: 'string', default: '128' }, new: { type: 'string', default: '64' }, rounds: { type: 'string', default: '4' },
  stagger: { type: 'string', default: '40' },
  spin: { type: 'string', default: 'default' },
  ratio: { type: 'string' }, 'prefill-tokens': { type: 'string' }, 'consecutive-prefills': { type: 'string' }, 'served-only': { type: 'boolean', default: false },
  streams: { type: 'string', default: '1,4,16' }, out: { type: 'string' }, isolation: { type: 'string', default: 'process' }, intra: { type: 'string' },
  model: { type: 'string', default: 'small' },
} })
if (args.model !== 'small' && args.model !== 'smol') throw new Error(`--model must be small or smol (got ${args.model})`)
const MODEL = args.model
const P = Number(args.prompt), N = Number(args.new), ROUNDS = Number(args.rounds), STAGGER_MS = Number(args.stagger)
// ORT's spinning intra-op threads compete with the HTTP side and the load generator on 2 cores.
const SPIN = args.spin as 'true' | 'false' | 'default'
const STREAMS = args.streams!.split(',').map(Number)
const root = join(import.meta.dirname, '..')
const work = BENCH_MODELS
const decoder = await benchDecoder(MODEL)

function servableDir(name: string, maxBatchSize: number): string {
  const o: Record<string, number | boolean> = { maxBatchSize, maxTotalTokens: P + N + 8, maxConcurrentRequests: 256 }
  if (SPIN !== 'default') o.allowSpinning = SPIN === 'true'
  if (args.ratio) o.waitingServedRatio = Number(args.ratio)
  if (args['prefill-tokens']) o.maxBatchPrefillTokens = Number(args['prefill-tokens'])
  if (args.intra) o.intraOpThreads = Number(args.intra)
  if (args['consecutive-prefills']) o.maxConsecutivePrefills = Number(args['consecutive-prefills'])
  return llmServables(name, decoder, o)
}

/**
 * Byte-level prompt of exactly P-1 bytes (+ BOS = P tokens), pseudo-random letters seeded by k: no
 * two requests share a 16-token block, so the prefix cache (on by default) never hits here.
 */
const prompt = (k: number): string => {
  let x = (Math.imul(k + 1, 2654435761) ^ 0x9e3779b9) >>> 0
  return Array.from({ length: P - 1 }, () => { x = (Math.imul(x, 1103515245) + 12345) >>> 0; return String.fromCharCode(97 + ((x >>> 16) % 26)) }).join('')
}

interface Req { ttft: number; e2e: number; tokens: number }

async function streamOnce(url: string, k: number): Promise<Req> {
  const t0 = performance.now()
  const res = await fetch(`${url}/generate_stream`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: prompt(k), parameters: { max_new_tokens: N, ignore_eos: true, do_sample: false } }) })
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`)
  let ttft = 0, tokens = 0
  const dec = new TextDecoder()
  for await (const chunk of res.body!) {
    const text = dec.decode(chunk as Uint8Array, { stream: true })
    const n = text.split('data: ').length - 1
    if (n > 0 && ttft === 0) ttft = performance.now() - t0
    tokens += n
  }
  return { ttft, e2e: performance.now() - t0, tokens }
}

const pct = quantile

/**
 * Closed loop: `streams` clients, each sending ROUNDS requests back to back. Client k starts
 * k x STAGGER_MS late so arrivals are spread as in steady serving, not one synchronized burst;
 * the first request of each client is a warm-up and is not counted.
 */
/** The first LLM engine's counters from /stats (engine.ts EngineStats). */
async function engineCounters(url: string): Promise<Record<string, number>> {
  const s = await (await fetch(`${url}/stats`)).json() as { llms: Array<{ replicas: Array<{ engine: Record<string, number> }> }> }
  return s.llms[0]!.replicas[0]!.engine
}

async function measure(url: string, streams: number): Promise<Record<string, number>> {
  const e0 = await engineCounters(url)
  const w0 = performance.now()
  const reqs: Req[] = []
  let first = Infinity, last = 0, tokensInWindow = 0
  await Promise.all(Array.from({ length: streams }, async (_, k) => {
    await new Promise((r) => setTimeout(r, k * STAGGER_MS))
    await streamOnce(url, k)
    for (let r = 0; r < ROUNDS; r++) {
      const t0 = performance.now()
      const q = await streamOnce(url, k + r * 31)
      reqs.push(q)
      first = Math.min(first, t0)
      last = Math.max(last, performance.now())
      tokensInWindow += q.tokens
    }
  }))
  const wall = last - first
  const tpot = reqs.map((r) => (r.e2e - r.ttft) / Math.max(1, r.tokens - 1))
  // Where the server's time went (warm-ups included): its engine's steps as the engine timed them.
  const e1 = await engineCounters(url)
  const d = (k: string) => e1[k]! - e0[k]!
  const engine = {
    servedDecodeStepMs: d('decodeMs') / d('numDecodes'), servedPrefillMs: d('prefillMs') / d('numPrefills'),
    // Each prefill step samples its requests' first tokens (one request per prefill step at these budgets).
    meanDecodeBatch: (d('generatedTokens') - d('numPrefills')) / d('numDecodes'),
    engineBusyShare: (d('decodeMs') + d('prefillMs')) / (performance.now() - w0),
  }
  return {
    ...engine,
    streams, requests: reqs.length, outputTokPerS: (tokensInWindow * 1000) / wall,
    decodeTokPerS: streams * 1000 / pct(tpot, 50),
    ttftP50: pct(reqs.map((r) => r.ttft), 50), ttftP99: pct(reqs.map((r) => r.ttft), 99),
    tpotP50: pct(tpot, 50), tpotP99: pct(tpot, 99), e2eP50: pct(reqs.map((r) => r.e2e), 50),
  }
}

const cfg = DECODER_CONFIGS[MODEL]
process.stderr.write(`decoder ${(countDecoderParams(cfg) / 1e6).toFixed(1)}M params; prompt ${P} tokens, ${N} new tokens, ${ROUNDS} rounds per stream, starts staggered by ${STAGGER_MS} ms\n`)
const results: Record<string, unknown> = { model: { ...cfg, params: countDecoderParams(cfg) }, promptTokens: P, newTokens: N, rounds: ROUNDS, staggerMs: STAGGER_MS }

for (const [label, maxBatch] of (args['served-only'] ? [['served', 16]] : [['served', 16], ['seq', 1]]) as Array<['served' | 'seq', number]>) {
  const srv = await startServer(servableDir(label, maxBatch), { devices: '0', isolation: args.isolation!, timeoutMs: 120_000 })
  const rows = []
  for (const s of STREAMS) {
    process.stderr.write(`${label}: ${s} stream(s)...\n`)
    rows.push(await measure(srv.restOrigin, s))
  }
  results[label] = rows
  await srv.stop()
}

if (args['served-only']) {
  console.log(JSON.stringify(results.served, null, 1))
  process.exit(0)
}
process.stderr.write('raw: engine / plain optimum loop / compute-only (child process)...\n')
const rawFile = join(work, 'raw.json')
const r = spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'llm-raw.ts'), '--prompt', String(P), '--new', String(N), '--batches', STREAMS.join(','), '--out', rawFile, '--model', MODEL], { stdio: ['ignore', 'inherit', 'inherit'], cwd: root })
if (r.status !== 0) throw new Error('llm-raw.ts failed')
results.raw = JSON.parse(readFileSync(rawFile, 'utf8'))

const served = results.served as Array<Record<string, number>>
const seq = results.seq as Array<Record<string, number>>
const raw = (results.raw as { rows: Array<Record<string, number>> }).rows
const loneTtft = served.find((x) => x.streams === 1)?.ttftP50 ?? NaN
/**
 * The separate-step bound of issue 11 goal 3: N requests of N new tokens each cost N lone prefills
 * (the engine's batch-1 prefill) plus N decode steps at batch N (runner + token choice), run one
 * after another; served output tok/s is compared with N x new / that time.
 */
const lonePrefill = raw.find((x) => x.batch === 1)?.enginePrefillMs
const bound = (streams: number): number => {
  const rr = raw.find((x) => x.batch === streams)
  if (!rr || lonePrefill === undefined) return NaN
  return (streams * N * 1000) / (streams * lonePrefill + N * (rr.engineMsPerStep! + rr.consumeMsPerStep!))
}
const f = (x: number | undefined, d = 0): string => (x === undefined || Number.isNaN(x) ? '-' : x.toFixed(d))
console.log(`\n| streams | ms-serve output tok/s (end to end) | ms-serve decode tok/s (streams / TPOT p50) | TTFT p50 / p99 ms | TPOT p50 / p99 ms | one-at-a-time tok/s (a) | engine decode-step tok/s | plain ORT loop tok/s (b) | compute-only tok/s (c) | served decode vs (b) | served decode % of (c) | engine step % of (c) | TTFT p50 / lone | separate-step bound tok/s | served output / bound |`)
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
for (const row of served) {
  const q = seq.find((x) => x.streams === row.streams)
  const rr = raw.find((x) => x.batch === row.streams)
  console.log(`| ${row.streams} | ${f(row.outputTokPerS)} | ${f(row.decodeTokPerS)} | ${f(row.ttftP50, 1)} / ${f(row.ttftP99, 1)} | ${f(row.tpotP50, 2)} / ${f(row.tpotP99, 2)} | ${f(q?.outputTokPerS)} | ${f(rr?.engineTokPerS)} | ${f(rr?.plainTokPerS)} | ${f(rr?.computeTokPerS)} | ${f(rr ? row.decodeTokPerS! / rr.plainTokPerS! : NaN, 2)}x | ${f(rr ? (100 * row.decodeTokPerS!) / rr.computeTokPerS! : NaN)}% | ${f(rr ? (100 * rr.engineTokPerS!) / rr.computeTokPerS! : NaN)}% | ${f(row.ttftP50! / loneTtft, 2)}x | ${f(bound(row.streams!))} | ${f((100 * row.outputTokPerS!) / bound(row.streams!))}% |`)
}
console.log('\n| streams | served decode step ms (engine-timed) | engine step alone ms | served prefill ms | mean decode batch | engine busy share of the wall |')
console.log('|---|---|---|---|---|---|')
for (const row of served) {
  const rr = raw.find((x) => x.batch === row.streams)
  console.log(`| ${row.streams} | ${f(row.servedDecodeStepMs, 2)} | ${f(rr?.engineMsPerStep, 2)} | ${f(row.servedPrefillMs, 1)} | ${f(row.meanDecodeBatch, 1)} | ${f(100 * row.engineBusyShare!)}% |`)
}
const outDir = join(import.meta.dirname, 'results')
mkdirSync(outDir, { recursive: true })
const file = args.out ?? join(outDir, `llm-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
writeFileSync(file, JSON.stringify(results, null, 2))
console.log(`\nwrote ${file}`)
