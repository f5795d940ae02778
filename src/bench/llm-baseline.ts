/**
 * `--generate --baseline raw`: the servable's decoder run in this process with onnxruntime-node and
 * the plain optimum with-past I/O (each step's full `present.*` fed back as `past`), timing one
 * batched decode step at each stream count as the batch size. Served output tok/s is reported
 * against the best of these rows.
 */
import { availableParallelism } from 'node:os'
import type * as OrtTypes from 'onnxruntime-node'
import { loadServables } from '../server.ts'
import { describeModel } from '../llm/model-spec.ts'
import { loadOrt, type RawDecodeBaselineFn } from './baseline.ts'
import type { RawBaselineRow } from './types.ts'

type Ort = typeof OrtTypes

function ids(ort: Ort, rows: number, cols: number, fill: (r: number, c: number) => number): OrtTypes.Tensor {
  const a = new BigInt64Array(rows * cols)
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) a[r * cols + c] = BigInt(fill(r, c))
  return new ort.Tensor('int64', a, [rows, cols])
}

/** Times the plain optimum decode loop of the servable's LLM at each batch size. */
export const plainDecodeBaseline: RawDecodeBaselineFn = async (a) => {
  if (!a.servablesDir) throw new Error('--baseline raw with --generate needs --servables DIR: the decoder is read from the servable folder')
  const servable = (await loadServables(a.servablesDir)).find((s) => s.name === a.servable && s.llm)
  if (!servable?.llm) throw new Error(`servable ${a.servable} in ${a.servablesDir} is not an LLM servable`)
  const ort = await loadOrt()
  const threads = servable.llm.options.intraOpThreads ?? availableParallelism()
  const session = await ort.InferenceSession.create(servable.llm.path, {
    graphOptimizationLevel: 'all', executionMode: 'sequential', interOpNumThreads: 1, intraOpNumThreads: threads,
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  })
  const spec = describeModel(session)
  if (spec.kvDtype !== 'float32') throw new Error(`raw decode baseline supports float32 KV only (model has ${spec.kvDtype})`)
  const P = a.promptTokens > 0 ? a.promptTokens : 32
  const steps = Math.max(2, a.newTokens)
  const rows: RawBaselineRow[] = []
  for (const B of a.batchSizes) {
    a.onProgress?.(`raw decode baseline: batch ${B} (prompt ${P}, ${steps} steps, plain optimum I/O) ...`)
    const feeds = (S: number, T: number, pos0: number, tok: (r: number, c: number) => number): Record<string, OrtTypes.Tensor> => {
      const f: Record<string, OrtTypes.Tensor> = { input_ids: ids(ort, B, S, tok), attention_mask: ids(ort, B, T, () => 1) }
      if (spec.hasPositionIds) f.position_ids = ids(ort, B, S, (_r, c) => pos0 + c)
      if (spec.hasUseCacheBranch) f.use_cache_branch = new ort.Tensor('bool', new Uint8Array([pos0 > 0 ? 1 : 0]), [1])
      return f
    }
    const first = feeds(P, P, 0, (r, c) => 3 + ((r * 13 + c * 7) % 90))
    for (const name of [...spec.pastKeyNames, ...spec.pastValueNames]) first[name] = new ort.Tensor('float32', new Float32Array(0), [B, spec.numKvHeads, 0, spec.headDim])
    let out = await session.run(first)
    const t0 = performance.now()
    let runs = 0
    for (let i = 0; i < steps - 1; i++) {
      const f = feeds(1, P + i + 1, P + i, () => 40)
      spec.pastKeyNames.forEach((n, l) => { f[n] = out[spec.presentKeyNames[l]!] as OrtTypes.Tensor })
      spec.pastValueNames.forEach((n, l) => { f[n] = out[spec.presentValueNames[l]!] as OrtTypes.Tensor })
      out = await session.run(f)
      runs++
      if (performance.now() - t0 > a.msPerBatch && runs >= 3) break
    }
    const msPerRun = (performance.now() - t0) / runs
    rows.push({ batch: B, runs, msPerRun, itemsPerSec: (B * 1000) / msPerRun })
  }
  await session.release()
  const best = rows.reduce<RawBaselineRow | null>((b, r) => (!b || r.itemsPerSec > b.itemsPerSec ? r : b), null)
  return {
    kind: 'raw-decode', models: [servable.llm.path], intraOpThreads: threads, rows, best,
    note: `plain optimum decode loop in the bench process (full present fed back as past), prompt ${P} tokens; tokens/s per batch size = one decode step for every row`,
  }
}
