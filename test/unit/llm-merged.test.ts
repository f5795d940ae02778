/**
 * HF optimum's merged decoder (decoder_model_merged.onnx): inputs of the with-past decoder plus
 * `use_cache_branch` bool [1]; one `If` whose then-branch computes with the past and whose
 * else-branch ignores it. Built by src/models/decoder.ts with `merged: true` (same weights as the
 * unmerged model of the same config), checked in onnxruntime directly and served by the engine.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import ort from 'onnxruntime-node'
import { buildDecoder, DECODER_CONFIGS, type DecoderConfig } from '../../src/models/decoder.ts'
import { LlmEngine } from '../../src/llm/engine.ts'
import { rewriteForNewPositions } from '../../src/llm/graph-rewrite.ts'
import { describeModel } from '../../src/llm/model-spec.ts'
import { onnx, type O } from '../../src/llm/proto-util.ts'
import { ByteLevelTokenizer } from '../../src/llm/tokenizer.ts'
import { generateIds as generate, greedyNoCacheOf as greedyNoCache, joinMidBatch } from '../helpers/llm.ts'

const tok = new ByteLevelTokenizer()
const cfg = DECODER_CONFIGS.tiny
const mergedCfg: DecoderConfig = { ...cfg, merged: true }
const hd = cfg.hiddenSize / cfg.numHeads
const PROMPTS = ['Hello world, this is a longer prompt with more tokens in it.', 'Hi', 'The quick brown fox', 'ab']
let dir: string
let mergedPath: string

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'llm-merged-'))
  mergedPath = join(dir, 'decoder_model_merged.onnx')
  await writeFile(mergedPath, buildDecoder(mergedCfg))
})
after(() => rmSync(dir, { recursive: true, force: true }))

/** Every value name a graph's nodes read, subgraphs included. */
function readsOf(g: O.IGraphProto): Set<string> {
  const out = new Set<string>()
  for (const n of g.node ?? []) {
    for (const i of n.input ?? []) out.add(i)
    for (const a of n.attribute ?? []) if (a.g) for (const i of readsOf(a.g)) out.add(i)
  }
  return out
}

function maxAbsDiff(a: ort.Tensor, b: ort.Tensor): number {
  assert.deepEqual(a.dims, b.dims)
  const x = a.data as Float32Array, y = b.data as Float32Array
  let m = 0
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!))
  return m
}

/** Feeds for S tokens after a past of length P (past filled with `pastFill(i)`). */
function feeds(S: number, P: number, useCache: boolean | null, maskLen = P + S, pastFill = (i: number) => Math.sin(i)): Record<string, ort.Tensor> {
  const f: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from({ length: S }, (_, i) => BigInt(40 + 7 * i)), [1, S]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(maskLen).fill(1n), [1, maskLen]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: S }, (_, i) => BigInt(maskLen - S + i)), [1, S]),
  }
  for (let l = 0; l < cfg.numLayers; l++) for (const k of ['key', 'value']) {
    f[`past_key_values.${l}.${k}`] = new ort.Tensor('float32', Float32Array.from({ length: cfg.numKvHeads * P * hd }, (_, i) => pastFill(i + l)), [1, cfg.numKvHeads, P, hd])
  }
  if (useCache !== null) f.use_cache_branch = new ort.Tensor('bool', Uint8Array.of(useCache ? 1 : 0), [1])
  return f
}

test('merged builder emits the optimum layout; the default builder is unchanged', () => {
  const m = onnx.ModelProto.decode(buildDecoder(mergedCfg))
  const g = m.graph as O.GraphProto // decoded messages carry (possibly empty) repeated fields
  const presents = Array.from({ length: cfg.numLayers }, (_, l) => [`present.${l}.key`, `present.${l}.value`]).flat()
  const pasts = presents.map((n) => n.replace('present', 'past_key_values'))
  assert.deepEqual(g.input.map((i) => i.name), ['input_ids', 'attention_mask', 'position_ids', ...pasts, 'use_cache_branch'])
  const ucb = g.input.at(-1)!.type!.tensorType!
  assert.equal(ucb.elemType, onnx.TensorProto.DataType.BOOL)
  assert.deepEqual(ucb.shape!.dim!.map((d) => Number(d.dimValue)), [1])
  assert.deepEqual(g.output.map((o) => o.name), ['logits', ...presents])
  assert.equal(g.node.length, 1, 'the main graph is the If alone (weights are main-graph initializers)')
  const ifNode = g.node[0]!
  assert.equal(ifNode.opType, 'If')
  assert.deepEqual(ifNode.input, ['use_cache_branch'])
  assert.deepEqual(ifNode.output, ['logits', ...presents])
  const branch = (name: string): O.IGraphProto => (ifNode.attribute ?? []).find((a) => a.name === name)!.g!
  const withPast = branch('then_branch'), noPast = branch('else_branch')
  for (const b of [withPast, noPast]) {
    assert.deepEqual(b.output!.map((o) => o.name), ['logits', ...presents], 'branch outputs named like the If outputs, as optimum')
    assert.equal(b.initializer?.length ?? 0, 0)
  }
  const thenReads = readsOf(withPast), elseReads = readsOf(noPast)
  for (const p of pasts) {
    assert.ok(thenReads.has(p), `then-branch reads ${p}`)
    assert.ok(!elseReads.has(p), `else-branch must not read ${p}`)
  }
  for (const i of ['input_ids', 'attention_mask', 'position_ids']) assert.ok(thenReads.has(i) && elseReads.has(i), `both branches read ${i} from the outer scope`)
  // The default layout has no If and no use_cache_branch (its bytes are pinned by models.test.ts
  // determinism and were checked unchanged by hash when `merged` was added).
  const d = onnx.ModelProto.decode(buildDecoder(cfg)).graph as O.GraphProto
  assert.ok(!d.node.some((n) => n.opType === 'If'))
  assert.ok(!d.input.some((i) => i.name === 'use_cache_branch'))
  assert.equal(d.input.length, g.input.length - 1)
})

test('onnxruntime runs both branches: no-past ignores the past, with-past matches the unmerged model', async () => {
  const [merged, plain] = await Promise.all([ort.InferenceSession.create(mergedPath), ort.InferenceSession.create(buildDecoder(cfg))])
  try {
    const meta = merged.inputMetadata.find((m) => m.name === 'use_cache_branch')!
    assert.ok(meta.isTensor && meta.type === 'bool')
    const S = 5, P = 3
    const TOL = 1e-4
    // Prefill: empty past; both branches and the unmerged model agree.
    const ref = await plain.run(feeds(S, 0, null))
    for (const uc of [false, true]) {
      const out = await merged.run(feeds(S, 0, uc))
      for (const n of ['logits', 'present.0.key', 'present.1.value']) assert.ok(maxAbsDiff(out[n]!, ref[n]!) <= TOL, `use_cache_branch=${uc}: ${n}`)
    }
    // No-past branch with a non-empty past (mask over the S new tokens only): the past is ignored.
    const ignored = await merged.run(feeds(S, P, false, S, () => 1e3))
    assert.ok(maxAbsDiff(ignored['logits']!, ref['logits']!) <= TOL)
    assert.deepEqual(ignored['present.0.key']!.dims, [1, cfg.numKvHeads, S, hd])
    // With-past branch after a past of P: same as the unmerged with-past decoder.
    const [a, b] = [await merged.run(feeds(S, P, true)), await plain.run(feeds(S, P, null))]
    assert.deepEqual(a['present.1.key']!.dims, [1, cfg.numKvHeads, P + S, hd])
    for (const n of ['logits', 'present.0.value', 'present.1.key']) assert.ok(maxAbsDiff(a[n]!, b[n]!) <= TOL, `with past: ${n}`)
    assert.ok(maxAbsDiff(a['logits']!, ref['logits']!) > 1e-2, 'the past does change the with-past logits')
  } finally {
    await Promise.all([merged.release(), plain.release()])
  }
})

test('the load-time rewrite slices after the If: new KV positions and last logits only', async () => {
  // logitStats off: this test feeds the KV inputs only (llm-logit-stats.test.ts covers the statistics).
  const rw = rewriteForNewPositions(buildDecoder(mergedCfg), { logitStats: false })
  assert.equal(rw.rewritten, true, rw.reason)
  const [a, b] = await Promise.all([ort.InferenceSession.create(mergedPath), ort.InferenceSession.create(rw.bytes)])
  try {
    const spec = describeModel(b)
    assert.equal(spec.hasUseCacheBranch, true)
    assert.equal(spec.presentMode, 'new')
    assert.equal(describeModel(a).presentMode, 'full')
    const S = 4, P = 3
    for (const [uc, past] of [[false, 0], [true, P]] as const) {
      const [oa, ob] = [await a.run(feeds(S, past, uc)), await b.run(feeds(S, past, uc))]
      assert.deepEqual(ob['logits']!.dims, [1, 1, cfg.vocabSize])
      assert.deepEqual((ob['logits']!.data as Float32Array).slice(), (oa['logits']!.data as Float32Array).slice((S - 1) * cfg.vocabSize))
      const full = oa['present.1.value']!.data as Float32Array, part = ob['present_new.1.value']!
      assert.deepEqual(part.dims, [1, cfg.numKvHeads, S, hd])
      for (let h = 0; h < cfg.numKvHeads; h++) {
        assert.deepEqual((part.data as Float32Array).subarray(h * S * hd, (h + 1) * S * hd), full.subarray((h * (past + S) + past) * hd, (h + 1) * (past + S) * hd))
      }
    }
  } finally {
    await Promise.all([a.release(), b.release()])
  }
})

test('engine on the merged export: KV-cache greedy == full recomputation == the unmerged model, in both KV modes', async () => {
  const engineNew = await LlmEngine.load(mergedPath, { maxTotalTokens: 160, kvBlock: 16 })
  const engineFull = await LlmEngine.load(mergedPath, { maxTotalTokens: 160, kvBlock: 16, kvMode: 'full' })
  try {
    assert.equal(engineNew.spec.hasUseCacheBranch, true)
    assert.equal(engineNew.stats().presentMode, 'new')
    assert.equal(engineFull.stats().presentMode, 'full')
    const prompts = PROMPTS.slice(0, 3)
    // Batched: the three run together in each engine (prefill then shared decode steps).
    const [a, b] = await Promise.all([Promise.all(prompts.map((p) => generate(engineNew, p, { maxNewTokens: 40 }))), Promise.all(prompts.map((p) => generate(engineFull, p, { maxNewTokens: 40 })))])
    assert.deepEqual(a, b, 'rewritten graph + slot cache == plain optimum I/O on the merged export')
    assert.ok(engineNew.stats().kvRelayouts >= 1, 'capacity grew (block 16, 40+ tokens)')
    const plainBytes = buildDecoder(cfg)
    for (const [i, p] of prompts.slice(0, 2).entries()) {
      const ref = await greedyNoCache(mergedPath, mergedCfg, tok.encode(p), 40)
      assert.deepEqual(a[i], ref, `prompt ${JSON.stringify(p)}: cache == recomputation (no-past branch)`)
      assert.deepEqual(ref, await greedyNoCache(plainBytes, cfg, tok.encode(p), 40), 'merged == unmerged model')
    }
  } finally {
    await Promise.all([engineNew.close(), engineFull.close()])
  }
})

test('engine on the merged export: a request joining a running batch mid-way matches its lone output', async () => {
  const engine = await LlmEngine.load(mergedPath, { maxTotalTokens: 200, kvBlock: 16, waitingServedRatio: 0 })
  try {
    const { together, alone } = await joinMidBatch((p, n, on) => generate(engine, p, { maxNewTokens: n }, on && ((ev) => on(ev.index))), PROMPTS)
    assert.deepEqual(together, alone)
    assert.ok(engine.stats().numPrefills >= 4 + 3, 'C and D were prefilled separately while A ran')
  } finally {
    await engine.close()
  }
})

test('merged + float16 KV + no position_ids: exact at batch 1 against full recomputation', async () => {
  const c: DecoderConfig = { ...cfg, merged: true, kvDtype: 'float16', positionIds: false, seed: 99 }
  const path = join(dir, 'merged_fp16_nopos.onnx')
  await writeFile(path, buildDecoder(c))
  const engine = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16 })
  try {
    assert.equal(engine.spec.kvDtype, 'float16')
    assert.equal(engine.spec.hasPositionIds, false)
    for (const p of ['Hello merged fp16', 'ab']) {
      assert.deepEqual(await generate(engine, p, { maxNewTokens: 20 }), await greedyNoCache(path, c, tok.encode(p), 20), `prompt ${JSON.stringify(p)}`)
    }
  } finally {
    await engine.close()
  }
})
