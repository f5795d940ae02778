/**
 * `--generate --baseline raw`: the servable's decoder run in this process with onnxruntime-node and
 * the plain optimum with-past I/O (each step's full `present.*` fed back as `past`), timing one
 * batched decode step at each stream count as the batch size. Served output tok/s is reported
 * against the best of these rows. bench/llm-raw.ts times the same loop.
 */
import { availableParallelism } from 'node:os'
import type * as OrtTypes from 'onnxruntime-node'
import type { ValidServable } from '../config/validate.ts'
import { describeModel, type ModelSpec } from '../llm/model-spec.ts'
import { loadOrt } from './baseline.ts'
import type { RawBaselineResult, RawBaselineRow } from './types.ts'

/** What the feed builders use of onnxruntime-node. */
type Ort = Pick<typeof OrtTypes, 'Tensor'>
type Feeds = Record<string, OrtTypes.Tensor>

/** Prompt tokens before the timed decode steps. */
const PROMPT_TOKENS = 32

export interface RawDecodeArgs {
  /** The LLM servable, read from --servables DIR. */
  servable: ValidServable
  /** Stream counts of the bench levels; a decode step is timed at each as a batch size. */
  batchSizes: number[]
  newTokens: number
  msPerBatch: number
  onProgress?: (msg: string) => void
}

function ids(ort: Ort, rows: number, cols: number, fill: (r: number, c: number) => number): OrtTypes.Tensor {
  const a = new BigInt64Array(rows * cols)
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) a[r * cols + c] = BigInt(fill(r, c))
  return new ort.Tensor('int64', a, [rows, cols])
}

/** Feeds of one decoder run but the past: B rows of S tokens at positions pos0.., attending over T. */
export function decodeFeeds(ort: Ort, spec: ModelSpec, B: number, S: number, T: number, pos0: number, tok: (r: number, c: number) => number): Feeds {
  const f: Feeds = { input_ids: ids(ort, B, S, tok), attention_mask: new ort.Tensor('int64', new BigInt64Array(B * T).fill(1n), [B, T]) }
  if (spec.hasPositionIds) f.position_ids = ids(ort, B, S, (_r, c) => pos0 + c)
  if (spec.hasUseCacheBranch) f.use_cache_branch = new ort.Tensor('bool', new Uint8Array([pos0 > 0 ? 1 : 0]), [1])
  return f
}

/**
 * The plain optimum loop at batch B: an untimed prefill of P tokens, then up to `steps` decode steps,
 * each feeding every `present.*` back as `past`; it stops early once `maxMs` passed and 3 steps ran.
 */
export async function timePlainDecode(ort: Ort, session: OrtTypes.InferenceSession, spec: ModelSpec, B: number, P: number, steps: number, maxMs = Infinity): Promise<{ runs: number; msPerRun: number }> {
  const first = decodeFeeds(ort, spec, B, P, P, 0, (r, c) => 3 + ((r * 13 + c * 7) % 90))
  for (const name of [...spec.pastKeyNames, ...spec.pastValueNames]) first[name] = new ort.Tensor('float32', new Float32Array(0), [B, spec.numKvHeads, 0, spec.headDim])
  let out = await session.run(first)
  const t0 = performance.now()
  let runs = 0
  while (runs < steps) {
    const f = decodeFeeds(ort, spec, B, 1, P + runs + 1, P + runs, () => 40)
    spec.pastKeyNames.forEach((n, l) => { f[n] = out[spec.presentKeyNames[l]!] as OrtTypes.Tensor })
    spec.pastValueNames.forEach((n, l) => { f[n] = out[spec.presentValueNames[l]!] as OrtTypes.Tensor })
    out = await session.run(f)
    runs++
    if (runs >= 3 && performance.now() - t0 > maxMs) break
  }
  return { runs, msPerRun: (performance.now() - t0) / runs }
}

/** Times the plain optimum decode loop of the servable's LLM at each batch size. */
export async function plainDecodeBaseline(a: RawDecodeArgs): Promise<RawBaselineResult> {
  const llm = a.servable.llm
  if (!llm) throw new Error(`servable ${a.servable.name} in ${a.servable.dir} is not an LLM servable`)
  const ort = await loadOrt()
  const threads = llm.options.intraOpThreads ?? availableParallelism()
  const session = await ort.InferenceSession.create(llm.path, {
    graphOptimizationLevel: 'all', executionMode: 'sequential', interOpNumThreads: 1, intraOpNumThreads: threads,
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  })
  const spec = describeModel(session)
  if (spec.kvDtype !== 'float32') throw new Error(`raw decode baseline supports float32 KV only (model has ${spec.kvDtype})`)
  const P = PROMPT_TOKENS
  const steps = Math.max(2, a.newTokens)
  const rows: RawBaselineRow[] = []
  for (const B of a.batchSizes) {
    a.onProgress?.(`raw decode baseline: batch ${B} (prompt ${P}, ${steps} steps, plain optimum I/O) ...`)
    const { runs, msPerRun } = await timePlainDecode(ort, session, spec, B, P, steps - 1, a.msPerBatch)
    rows.push({ batch: B, runs, msPerRun, itemsPerSec: (B * 1000) / msPerRun })
  }
  await session.release()
  const best = rows.reduce<RawBaselineRow | null>((b, r) => (!b || r.itemsPerSec > b.itemsPerSec ? r : b), null)
  return {
    kind: 'raw-decode', models: [llm.path], intraOpThreads: threads, rows, best,
    note: `plain optimum decode loop in the bench process (full present fed back as past), prompt ${P} tokens; tokens/s per batch size = one decode step for every row`,
  }
}
