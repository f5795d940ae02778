/** Model introspection (what can be served) and the load-time KV output rewrite. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import ort from 'onnxruntime-node'
import { describeModel } from '../../src/llm/model-spec.ts'
import type { SessionLike, SessionValueMeta } from '../../src/llm/model-spec.ts'
import { rewriteForNewPositions } from '../../src/llm/graph-rewrite.ts'
import { onnx } from '../../src/llm/proto-util.ts'
import { buildDecoder, DECODER_CONFIGS } from '../../src/models/decoder.ts'

const t = (name: string, type: string, shape: Array<number | string>): SessionValueMeta => ({ name, isTensor: true, type, shape })

function fake(opts: { layers?: number; kvType?: string; drop?: string[]; extraInputs?: SessionValueMeta[]; kvShape?: Array<number | string> } = {}): SessionLike {
  const layers = opts.layers ?? 2
  const inputs: SessionValueMeta[] = [t('input_ids', 'int64', ['b', 's']), t('attention_mask', 'int64', ['b', 't']), t('position_ids', 'int64', ['b', 's'])]
  const outputs: SessionValueMeta[] = [t('logits', 'float32', ['b', 's', 32000])]
  for (let i = 0; i < layers; i++) for (const k of ['key', 'value']) {
    inputs.push(t(`past_key_values.${i}.${k}`, opts.kvType ?? 'float16', opts.kvShape ?? ['b', 8, 'p', 128]))
    outputs.push(t(`present.${i}.${k}`, opts.kvType ?? 'float16', ['b', 8, 't', 128]))
  }
  inputs.push(...(opts.extraInputs ?? []))
  const keep = (m: SessionValueMeta): boolean => !(opts.drop ?? []).includes(m.name)
  const ins = inputs.filter(keep), outs = outputs.filter(keep)
  return { inputNames: ins.map((m) => m.name), outputNames: outs.map((m) => m.name), inputMetadata: ins, outputMetadata: outs }
}

const rejects = (s: SessionLike, re: RegExp): void => {
  assert.throws(() => describeModel(s), (e: Error & { code?: string }) => e.code === 'CONFIG_INVALID' && re.test(e.message), `expected ${re}`)
}

test('discovers layers, kv heads, head dim, dtype and optional inputs', () => {
  const s = describeModel(fake({ layers: 3, extraInputs: [{ name: 'use_cache_branch', isTensor: true, type: 'bool', shape: [1] }] }))
  assert.equal(s.numLayers, 3)
  assert.equal(s.numKvHeads, 8)
  assert.equal(s.headDim, 128)
  assert.equal(s.kvDtype, 'float16')
  assert.equal(s.vocabSize, 32000)
  assert.equal(s.hasPositionIds, true)
  assert.equal(s.hasUseCacheBranch, true)
  assert.equal(s.presentMode, 'full')
  assert.equal(describeModel(fake({ drop: ['position_ids'] })).hasPositionIds, false)
})

test('rejects what cannot be served, saying why', () => {
  rejects(fake({ drop: ['logits'] }), /no `logits` output/)
  rejects(fake({ drop: ['attention_mask'] }), /no `attention_mask` input/)
  rejects(fake({ layers: 0 }), /no `past_key_values/)
  rejects(fake({ drop: ['present.1.value'] }), /missing output present\.1\.value/)
  rejects(fake({ kvType: 'int8' }), /only float32 and float16/)
  rejects(fake({ kvShape: ['bh', 128, 'p'] }), /rank 3/)
  rejects(fake({ kvShape: ['b', 'kv', 'p', 128] }), /symbolic num_kv_heads/)
  rejects(fake({ extraInputs: [t('cache_position', 'int64', ['s'])] }), /unsupported inputs: cache_position/)
  rejects(fake({ extraInputs: [t('past_key_values.0.key_value', 'float32', ['b', 's', 256])] }), /fused key\/value/)
  rejects(fake({ extraInputs: [t('use_cache_branch', 'int64', [1])] }), /use_cache_branch has dtype int64; expected bool/)
  rejects(fake({ extraInputs: [t('use_cache_branch', 'bool', [2])] }), /use_cache_branch has shape \[2\]; expected \[1\]/)
})

const maxDiff = (x: Float32Array, y: Float32Array): number => { assert.equal(x.length, y.length); let d = 0; for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i]! - y[i]!)); return d }
const concatsOfPast = (bytes: Uint8Array): number => onnx.ModelProto.decode(bytes).graph!.node!.filter((n) => n.opType === 'Concat' && n.input?.some((i) => i.startsWith('past_key_values.'))).length

test('rewrite outputs only the new KV positions and last logits, same values (exact without the split attention, within float rounding with it)', async () => {
  const cfg = DECODER_CONFIGS.tiny
  const orig = buildDecoder(cfg)
  // logitStats off: these runs feed the KV inputs only (llm-logit-stats.test.ts covers the statistics).
  const plain = rewriteForNewPositions(orig, { splitAttention: false, logitStats: false })
  const rw = rewriteForNewPositions(orig, { logitStats: false })
  assert.equal(rw.rewritten, true)
  assert.equal(concatsOfPast(orig), 2 * cfg.numLayers)
  assert.equal(concatsOfPast(plain.bytes), 2 * cfg.numLayers)
  assert.equal(concatsOfPast(rw.bytes), 0, 'attention reads the past in place: no Concat copies it')
  const lmHeadSliced = (bytes: Uint8Array) => onnx.ModelProto.decode(bytes).graph!.node!.some((n) => n.opType === 'Slice' && n.output?.[0]?.includes('lm_head_last_position'))
  assert.ok(lmHeadSliced(rw.bytes), 'the lm_head runs on the last position only')
  // A scripted decoder adds a per-position table after the lm_head: not row-wise constant, so the logits are sliced after.
  const scripted = rewriteForNewPositions(buildDecoder({ ...cfg, script: [{ after: 3, ids: [70, 71] }] }))
  assert.equal(lmHeadSliced(scripted.bytes), false)
  const [a, b, c] = await Promise.all([ort.InferenceSession.create(orig), ort.InferenceSession.create(rw.bytes), ort.InferenceSession.create(plain.bytes)])
  const spec = describeModel(b)
  assert.equal(spec.presentMode, 'new')
  assert.equal(describeModel(c).presentMode, 'new')
  assert.equal(describeModel(a).presentMode, 'full')
  const hd = cfg.hiddenSize / cfg.numHeads
  const P = 3, S = 4
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from([5n, 6n, 7n, 8n]), [1, S]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(P + S).fill(1n), [1, P + S]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from([3n, 4n, 5n, 6n]), [1, S]),
  }
  for (let l = 0; l < cfg.numLayers; l++) for (const k of ['key', 'value']) {
    feeds[`past_key_values.${l}.${k}`] = new ort.Tensor('float32', Float32Array.from({ length: cfg.numKvHeads * P * hd }, (_, i) => Math.sin(i)), [1, cfg.numKvHeads, P, hd])
  }
  const [oa, ob, oc] = [await a.run(feeds), await b.run(feeds), await c.run(feeds)]
  const lastLogits = (oa['logits']!.data as Float32Array).slice((S - 1) * cfg.vocabSize)
  assert.deepEqual(ob['logits']!.dims, [1, 1, cfg.vocabSize])
  assert.deepEqual((oc['logits']!.data as Float32Array).slice(), lastLogits)
  assert.ok(maxDiff(ob['logits']!.data as Float32Array, lastLogits) < 1e-4, 'split attention: logits within float rounding')
  const full = oa['present.1.value']!
  for (const [outs, exact] of [[oc, true], [ob, false]] as const) {
    const part = outs['present_new.1.value']!
    assert.deepEqual(part.dims, [1, cfg.numKvHeads, S, hd])
    for (let h = 0; h < cfg.numKvHeads; h++) {
      const f = (full.data as Float32Array).subarray((h * (P + S) + P) * hd, (h + 1) * (P + S) * hd)
      const got = (part.data as Float32Array).subarray(h * S * hd, (h + 1) * S * hd)
      if (exact) assert.deepEqual(got, f)
      else assert.ok(maxDiff(got, f) < 1e-4)
    }
  }
  await c.release()
  assert.deepEqual(rewriteForNewPositions(Uint8Array.of(1, 2, 3)).rewritten, false)
  await Promise.all([a.release(), b.release()])
})
