/**
 * The rewrite's per-row logit statistics (graph-rewrite.ts addLogitStats, LOGIT_STATS): the graph
 * outputs each row's max logit and log_softmax(logits / T) at the max, checked against a float64
 * reference (float32 and float16 logits, opset 17 and 18); the sampler given them picks the same
 * tokens as without (greedy, top-k, top-p, seeded) and ignores them where they do not describe the
 * row (penalties); the engine with them generates what it generates without them.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import ort from 'onnxruntime-node'
import { buildDecoder, DECODER_CONFIGS, type DecoderConfig } from '../../src/models/decoder.ts'
import { rewriteForNewPositions } from '../../src/llm/graph-rewrite.ts'
import { describeModel, LOGIT_STATS } from '../../src/llm/model-spec.ts'
import { onnx } from '../../src/llm/proto-util.ts'
import { LlmEngine } from '../../src/llm/engine.ts'
import { f16BitsToF32 } from '../../src/tensor.ts'
import { createRng, GREEDY, sampleToken } from '../../src/llm/sampler.ts'
import type { LogitStats, SamplingParams } from '../../src/llm/sampler.ts'
import { generateIds } from '../helpers/llm.ts'

const cfg: DecoderConfig = { ...DECODER_CONFIGS.tiny, seed: 31 }
let dir: string
before(() => { dir = mkdtempSync(join(tmpdir(), 'llm-logit-stats-')) })
after(() => rmSync(dir, { recursive: true, force: true }))

/** The decoder with its logits cast to float16 (as fp16 exports write them) and/or another opset. */
function variant(opts: { fp16Logits?: boolean; opset?: number }): Uint8Array {
  const m = onnx.ModelProto.decode(buildDecoder(cfg))
  const g = m.graph!
  if (opts.fp16Logits) {
    const producer = g.node!.find((n) => n.output!.includes('logits'))!
    producer.output = producer.output!.map((o) => (o === 'logits' ? 'logits_f32' : o))
    g.node!.push(onnx.NodeProto.create({ opType: 'Cast', input: ['logits_f32'], output: ['logits'], attribute: [onnx.AttributeProto.create({ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: onnx.TensorProto.DataType.FLOAT16 })] }))
    g.output!.find((o) => o.name === 'logits')!.type!.tensorType!.elemType = onnx.TensorProto.DataType.FLOAT16
  }
  if (opts.opset) {
    m.opsetImport!.find((o) => !o.domain)!.version = opts.opset
    // From opset 18 every Reduce* takes its axes as an input.
    if (opts.opset >= 18) {
      for (const n of g.node!) {
        const axes = n.opType!.startsWith('Reduce') ? n.attribute!.find((a) => a.name === 'axes') : undefined
        if (!axes) continue
        const name = `${n.name}_axes`
        g.initializer!.push(onnx.TensorProto.create({ name, dataType: onnx.TensorProto.DataType.INT64, dims: [axes.ints!.length], int64Data: axes.ints }))
        n.input!.push(name)
        n.attribute = n.attribute!.filter((a) => a !== axes)
      }
    }
  }
  return onnx.ModelProto.encode(m).finish()
}

/** One prefill of B rows (prompt lengths differ, left-padded) with the given 1/T per row. */
async function runStats(bytes: Uint8Array, invT: number[]): Promise<{ logits: Float32Array; max: Float32Array; top: Float32Array; vocab: number }> {
  const rw = rewriteForNewPositions(bytes)
  assert.equal(rw.rewritten, true, rw.reason)
  const s = await ort.InferenceSession.create(rw.bytes)
  try {
    assert.equal(describeModel(s).hasLogitStats, true)
    const B = invT.length, L = 5
    const hd = cfg.hiddenSize / cfg.numHeads
    const ids = new BigInt64Array(B * L), mask = new BigInt64Array(B * L), pos = new BigInt64Array(B * L)
    for (let b = 0; b < B; b++) {
      const len = L - b % 3
      for (let j = 0; j < L; j++) {
        const k = j - (L - len)
        ids[b * L + j] = k >= 0 ? BigInt(30 + ((b * 7 + j * 13) % 200)) : 0n
        mask[b * L + j] = k >= 0 ? 1n : 0n
        pos[b * L + j] = BigInt(Math.max(k, 0))
      }
    }
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [B, L]), attention_mask: new ort.Tensor('int64', mask, [B, L]), position_ids: new ort.Tensor('int64', pos, [B, L]),
      [LOGIT_STATS.invTemperature]: new ort.Tensor('float32', Float32Array.from(invT), [B, 1, 1]),
    }
    for (let l = 0; l < cfg.numLayers; l++) for (const k of ['key', 'value']) feeds[`past_key_values.${l}.${k}`] = new ort.Tensor('float32', new Float32Array(0), [B, cfg.numKvHeads, 0, hd])
    const out = await s.run(feeds)
    const lt = out['logits']!
    assert.deepEqual(lt.dims, [B, 1, cfg.vocabSize])
    assert.deepEqual(out[LOGIT_STATS.max]!.dims, [B, 1, 1])
    const raw = lt.data as Float32Array | Uint16Array
    const logits = raw instanceof Float32Array ? raw : Float32Array.from(raw, f16BitsToF32)
    return { logits, max: out[LOGIT_STATS.max]!.data as Float32Array, top: out[LOGIT_STATS.topLogprob]!.data as Float32Array, vocab: cfg.vocabSize }
  } finally {
    await s.release()
  }
}

function checkAgainstReference(r: Awaited<ReturnType<typeof runStats>>, invT: number[]): void {
  for (let b = 0; b < invT.length; b++) {
    const row = r.logits.subarray(b * r.vocab, (b + 1) * r.vocab)
    let max = -Infinity
    for (const z of row) max = Math.max(max, z)
    assert.equal(r.max[b], max, `row ${b}: the max logit, exactly`)
    const s = Math.fround(invT[b]!)
    let sum = 0
    for (const z of row) sum += Math.exp(z * s - max * s)
    const ref = -Math.log(sum)
    assert.ok(ref < 0, 'a real distribution (the row is not one-hot)')
    assert.ok(Math.abs(r.top[b]! - ref) < 1e-5, `row ${b} at 1/T=${invT[b]}: top logprob ${r.top[b]} vs ${ref}`)
  }
}

const INV_T = [1, 1 / 0.7, 1 / 1.5, 1, 2]

test('rewrite: float32 logits, opset 17: max and top logprob per row at each row\'s temperature', async () => {
  checkAgainstReference(await runStats(buildDecoder(cfg), INV_T), INV_T)
})

test('rewrite: float16 logits are cast first; opset 18 takes ReduceMax axes as an input', async () => {
  checkAgainstReference(await runStats(variant({ fp16Logits: true }), INV_T), INV_T)
  const m18 = onnx.ModelProto.decode(rewriteForNewPositions(variant({ opset: 18 })).bytes)
  const rm = m18.graph!.node!.filter((n) => n.opType === 'ReduceMax')
  assert.equal(rm.length, 2)
  assert.ok(rm.every((n) => n.input!.length === 2 && !n.attribute!.some((a) => a.name === 'axes')), 'opset 18: axes as the second input')
  checkAgainstReference(await runStats(variant({ opset: 18 }), INV_T), INV_T)
})

test('rewrite with logitStats: false adds neither the input nor the outputs', async () => {
  const s = await ort.InferenceSession.create(rewriteForNewPositions(buildDecoder(cfg), { logitStats: false }).bytes)
  try {
    assert.equal(s.inputNames.includes(LOGIT_STATS.invTemperature), false)
    assert.equal(describeModel(s).hasLogitStats, false)
  } finally {
    await s.release()
  }
})

/** Float32 statistics of a row as onnxruntime computes them (float64 then rounded to float32). */
function statsOf(x: Float32Array, t: number): LogitStats {
  let max = -Infinity
  for (const z of x) max = Math.max(max, z)
  let sum = 0
  for (const z of x) sum += Math.exp(z / t - max / t)
  return { max: Math.fround(max), topLogprob: Math.fround(-Math.log(sum)) }
}

function randomRow(v: number, seed: number, peaked: boolean): Float32Array {
  const rng = createRng(seed)
  const x = new Float32Array(v)
  for (let i = 0; i < v; i++) x[i] = (rng() - 0.5) * 8
  if (peaked) for (let k = 0; k < 5; k++) x[Math.floor(rng() * v)] = 12 + k
  x[Math.floor(rng() * v)] = x[Math.floor(rng() * v)]! // a tie somewhere
  return x
}

const CASES: Array<[string, SamplingParams]> = [
  ['greedy', GREEDY],
  ['top-k 50 T0.7', { ...GREEDY, doSample: true, temperature: 0.7, topK: 50 }],
  ['top-p 0.9 T0.8', { ...GREEDY, doSample: true, temperature: 0.8, topP: 0.9 }],
  ['top-p 0.5 T1.3 (flat: the nucleus is past the first 64)', { ...GREEDY, doSample: true, temperature: 1.3, topP: 0.5 }],
  ['top-k 40 + top-p 0.9', { ...GREEDY, doSample: true, temperature: 0.9, topK: 40, topP: 0.9 }],
  ['plain sampling T1', { ...GREEDY, doSample: true, temperature: 1 }],
]

test('sampler with the statistics: same tokens as without, logprobs and top-n within 1e-5', () => {
  const v = 6000
  for (const [name, p] of CASES) {
    for (let seed = 1; seed <= 12; seed++) {
      const x = randomRow(v, seed, seed % 2 === 0)
      const t = p.doSample ? p.temperature : 1
      const a = sampleToken(x, p, new Map(), createRng(seed * 101), undefined, 3)
      const b = sampleToken(x, p, new Map(), createRng(seed * 101), undefined, 3, statsOf(x, t))
      assert.equal(b.id, a.id, `${name} seed ${seed}`)
      assert.ok(Math.abs(a.logprob - b.logprob) < 1e-5, `${name} seed ${seed}: logprob ${b.logprob} vs ${a.logprob}`)
      assert.deepEqual(b.top!.map((e) => e.id), a.top!.map((e) => e.id))
      for (let k = 0; k < 3; k++) assert.ok(Math.abs(a.top![k]!.logprob - b.top![k]!.logprob) < 1e-5)
    }
  }
})

test('sampler: the statistics are used (greedy reports their top logprob); typical-p and a max not in the row fall back to the scan', () => {
  const x = randomRow(3000, 5, true)
  const s = statsOf(x, 1)
  // Used: a wrong top logprob shows up in the reported logprob (greedy reports it as is).
  const used = sampleToken(x, GREEDY, new Map(), createRng(1), undefined, 0, { max: s.max, topLogprob: -0.25 })
  assert.equal(used.logprob, -0.25)
  // Typical-p needs the candidates' entropy: it keeps the full path.
  const typ = { ...GREEDY, doSample: true, typicalP: 0.9 }
  assert.deepEqual(sampleToken(x, typ, new Map(), createRng(3), undefined, 0, { max: s.max, topLogprob: -0.25 }), sampleToken(x, typ, new Map(), createRng(3)))
  // A max that is not in the row (NaN logits, a stale row) falls back to the scan.
  const g = sampleToken(x, GREEDY, new Map(), createRng(1), undefined, 0, { max: 1e9, topLogprob: -0.25 })
  assert.deepEqual(g, sampleToken(x, GREEDY, new Map(), createRng(1)))
})

test('sampler with penalties: the statistics are updated for the seen ids (same tokens and logprobs as the scan), also when the max is penalised', () => {
  const v = 4000
  const mixes: SamplingParams[] = [
    { ...GREEDY, repetitionPenalty: 1.3 }, { ...GREEDY, frequencyPenalty: 0.5 }, { ...GREEDY, presencePenalty: 0.7 },
    { ...GREEDY, frequencyPenalty: -0.8 }, // raises the seen ids: one can become the new max
    { ...GREEDY, doSample: true, temperature: 0.7, topK: 50, topP: 0.9, repetitionPenalty: 1.1 },
    { ...GREEDY, doSample: true, temperature: 1.2, topP: 0.8, frequencyPenalty: 0.3 },
  ]
  let maxPenalised = 0
  for (const p of mixes) {
    for (let seed = 1; seed <= 10; seed++) {
      const x = randomRow(v, 100 + seed, seed % 2 === 0)
      const t = p.doSample ? p.temperature : 1
      const counts = new Map<number, number>()
      const rng = createRng(seed)
      for (let j = 0; j < 40; j++) counts.set(Math.floor(rng() * v), 1 + (j % 3))
      // Half the rows have their most likely token among the seen ones (the usual case of a repetition).
      if (seed % 2 === 1) { counts.set(x.indexOf(statsOf(x, 1).max), 2); maxPenalised++ }
      const before = Float32Array.from(x)
      const a = sampleToken(x, p, counts, createRng(seed * 7), undefined, 2)
      const b = sampleToken(x, p, counts, createRng(seed * 7), undefined, 2, statsOf(x, t))
      assert.deepEqual(x, before, 'the row is restored')
      assert.equal(b.id, a.id, `${JSON.stringify(p)} seed ${seed}`)
      assert.ok(Math.abs(a.logprob - b.logprob) < 1e-5, `${JSON.stringify(p)} seed ${seed}: ${b.logprob} vs ${a.logprob}`)
      assert.deepEqual(b.top!.map((e) => e.id), a.top!.map((e) => e.id))
    }
  }
  assert.ok(maxPenalised > 0)
})

test('engine with and without the statistics: same greedy and seeded tokens, logprobs within 1e-4', async () => {
  const path = join(dir, 'tiny.onnx')
  await writeFile(path, buildDecoder(cfg))
  const on = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16 })
  const off = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16, logitStats: false })
  try {
    assert.equal(on.spec.hasLogitStats, true)
    assert.equal(off.spec.hasLogitStats, false)
    const params = [
      { maxNewTokens: 16 },
      { maxNewTokens: 16, doSample: true, temperature: 0.7, topK: 50, seed: 7 },
      { maxNewTokens: 16, doSample: true, temperature: 0.9, topP: 0.9, seed: 9 },
      { maxNewTokens: 16, repetitionPenalty: 1.2 },
    ]
    for (const p of params) {
      const lp: number[][] = [[], []]
      // Three prompts at once in each engine: rows of one batch carry different temperatures.
      const prompts = ['Hello there', 'abc', 'The statistics']
      const run = (e: LlmEngine, k: number) => Promise.all(prompts.map((s, i) => generateIds(e, s, { ...p, ...(i === 1 ? { doSample: true, temperature: 1.4, seed: 3 } : {}) }, (ev) => { if (i === 0) lp[k]!.push(ev.logprob) })))
      const [a, b] = await Promise.all([run(on, 0), run(off, 1)])
      assert.deepEqual(a, b, JSON.stringify(p))
      for (let j = 0; j < lp[0]!.length; j++) assert.ok(Math.abs(lp[0]![j]! - lp[1]![j]!) < 1e-4, `${JSON.stringify(p)} token ${j}: ${lp[0]![j]} vs ${lp[1]![j]}`)
    }
  } finally {
    await Promise.all([on.close(), off.close()])
  }
})
