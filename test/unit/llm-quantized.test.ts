/**
 * Weight-only quantized decoders as onnxruntime's quantizers write them (src/models/quantize.ts):
 * com.microsoft MatMulNBits 4/8-bit (blockwise, block 32, with or without zero points), QDQ int8
 * weights (DequantizeLinear -> MatMul) and quantize_dynamic's MatMulInteger form. Checks the
 * packing against onnxruntime's own kernel, then that each quantized decoder passes the KV rewrite,
 * that the engine's cached decoding is exact on it, and how close it stays to fp32.
 *
 * Tolerances vs fp32 (tiny decoder, seeded random weights, test prompt below):
 * - 8-bit (MatMulNBits, QDQ): the same 16 greedy tokens; max |Δlogit| measured 0.08 / 0.18 with a
 *   logit RMS of 3.5, far below the greedy margins of this model.
 * - dynamic int8 also quantizes activations, per tensor at run time: the same first 8 tokens (14
 *   measured); for the same reason its cached decoding is only close to recomputation, not equal.
 * - 4-bit: random uniform weights are the worst case for 16 levels (per-weight error ~7% of the
 *   weights' RMS), so greedy text drifts after a few tokens; asserted: same first token and max
 *   |Δlogit| <= 2 over the prompt's positions. onnxruntime 1.30's own MatMulNBitsQuantizer, run
 *   once on the same model, wrote bit-identical weights and gave the same logits (max |Δ| 1.26).
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import ort from 'onnxruntime-node'
import { buildDecoder, DECODER_CONFIGS } from '../../src/models/decoder.ts'
import { writeExternalDataModel } from '../../src/models/external-data.ts'
import { OnnxGraphBuilder, mulberry32 } from '../../src/models/onnx-builder.ts'
import { dequantizeBlockwise, quantizeBlockwise, quantizeModel, type QuantizeOptions } from '../../src/models/quantize.ts'
import { LlmEngine } from '../../src/llm/engine.ts'
import { rewriteForNewPositions } from '../../src/llm/graph-rewrite.ts'
import { onnx, type O } from '../../src/llm/proto-util.ts'
import { ByteLevelTokenizer } from '../../src/llm/tokenizer.ts'
import { generateIds as generate, greedyNoCacheOf } from '../helpers/llm.ts'

const tok = new ByteLevelTokenizer()
const cfg = DECODER_CONFIGS.tiny
const hd = cfg.hiddenSize / cfg.numHeads
const PROMPT = 'Hello world, this is a test prompt.'
const FORMATS: Record<string, QuantizeOptions> = {
  int4: { format: 'nbits', bits: 4 },
  int4_sym: { format: 'nbits', bits: 4, symmetric: true },
  int4_acc4: { format: 'nbits', bits: 4, accuracyLevel: 4 },
  int8: { format: 'nbits', bits: 8 },
  int8_acc4: { format: 'nbits', bits: 8, accuracyLevel: 4 },
  qdq_int8: { format: 'qdq' },
  dynamic_int8: { format: 'dynamic' },
}
let dir: string
const fp32 = buildDecoder(cfg)
const paths: Record<string, string> = {}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'llm-quant-'))
  paths.fp32 = join(dir, 'fp32.onnx')
  await writeFile(paths.fp32, fp32)
  for (const [name, o] of Object.entries(FORMATS)) {
    paths[name] = join(dir, `${name}.onnx`)
    await writeFile(paths[name]!, quantizeModel(fp32, o).bytes)
  }
})
after(() => rmSync(dir, { recursive: true, force: true }))

/** A one-MatMul model y = a @ w, a [M, K]. */
function matmulModel(w: Float32Array, M: number, K: number, N: number): Uint8Array {
  const g = new OnnxGraphBuilder('mm')
  g.input('a', 'float32', [M, K])
  g.initializer('w', w, [K, N])
  g.op('MatMul', ['a', 'w'], {}, 'y')
  g.output('y', 'float32', [M, N])
  return g.encode()
}

async function runY(bytes: Uint8Array, a: Float32Array, M: number, K: number): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(bytes)
  try {
    return (await s.run({ a: new ort.Tensor('float32', a, [M, K]) })).y!.data as Float32Array
  } finally {
    await s.release()
  }
}

function matmul(a: Float32Array, w: Float32Array, M: number, K: number, N: number): Float64Array {
  const y = new Float64Array(M * N)
  for (let i = 0; i < M; i++) for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) y[i * N + n] += a[i * K + k]! * w[k * N + n]!
  return y
}

test('MatMulNBits packing: onnxruntime computes a @ dequantize(q) (4/8 bits, zero points or not, partial last block)', async () => {
  const M = 3, K = 80, N = 24 // 80 = 2.5 blocks of 32: a padded last block and an odd zero-point count per column
  const r = mulberry32(7)
  const w = Float32Array.from({ length: K * N }, () => r() * 2 - 1.3)
  const a = Float32Array.from({ length: M * K }, () => r() * 2 - 1)
  for (const bits of [4, 8] as const) {
    for (const symmetric of [false, true]) {
      const q = quantizeBlockwise(w, K, N, bits, 32, symmetric)
      const dq = dequantizeBlockwise(q)
      // Round-trip bound: asymmetric codes round to the nearest step (|err| <= scale/2);
      // symmetric ones may also clip the far side's extreme by one step.
      const blocks = Math.ceil(K / 32)
      for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) {
        const s = Math.abs(q.scales[n * blocks + Math.floor(k / 32)]!)
        assert.ok(Math.abs(dq[k * N + n]! - w[k * N + n]!) <= (symmetric ? 1 : 0.5) * s * (1 + 1e-5), `bits ${bits} sym ${symmetric} w[${k},${n}]`)
      }
      const y = await runY(quantizeModel(matmulModel(w, M, K, N), { format: 'nbits', bits, symmetric }).bytes, a, M, K)
      const ref = matmul(a, dq, M, K, N)
      for (let i = 0; i < M * N; i++) assert.ok(Math.abs(y[i]! - ref[i]!) < 1e-4, `bits ${bits} sym ${symmetric} y[${i}] = ${y[i]} vs ${ref[i]}`)
    }
  }
})

test('QDQ and dynamic int8 MatMuls stay within their quantization error of fp32', async () => {
  const M = 4, K = 96, N = 40
  const r = mulberry32(11)
  const w = Float32Array.from({ length: K * N }, () => r() * 2 - 1.2)
  const a = Float32Array.from({ length: M * K }, () => r() * 2 - 1)
  const ref = matmul(a, w, M, K, N)
  const fp = matmulModel(w, M, K, N)
  // QDQ: per-column scale s_n = max|w[:,n]|/127, |Δy| <= Σ_k |a_k| s_n / 2.
  const qdq = await runY(quantizeModel(fp, { format: 'qdq' }).bytes, a, M, K)
  for (let i = 0; i < M; i++) for (let n = 0; n < N; n++) {
    let amax = 0, asum = 0
    for (let k = 0; k < K; k++) { amax = Math.max(amax, Math.abs(w[k * N + n]!)); asum += Math.abs(a[i * K + k]!) }
    assert.ok(Math.abs(qdq[i * N + n]! - ref[i * N + n]!) <= (asum * amax) / 127 / 2 + 1e-4, `qdq y[${i},${n}]`)
  }
  // Dynamic: 7-bit weights and uint8 activations; relative RMS error a few percent.
  const dyn = await runY(quantizeModel(fp, { format: 'dynamic' }).bytes, a, M, K)
  let e2 = 0, y2 = 0
  for (let i = 0; i < M * N; i++) { e2 += (dyn[i]! - ref[i]!) ** 2; y2 += ref[i]! ** 2 }
  assert.ok(Math.sqrt(e2 / y2) < 0.03, `dynamic relative RMS error ${Math.sqrt(e2 / y2)}`)
})

test('quantizeModel replaces every constant-weight MatMul (embeddings stay float) and drops the float weights', () => {
  const g0 = onnx.ModelProto.decode(fp32).graph as O.GraphProto
  const weights = new Set(g0.initializer.map((t) => t.name))
  const matmuls = (g0.node as O.NodeProto[]).filter((n) => n.opType === 'MatMul' && weights.has(n.input[1]!)).length
  assert.equal(matmuls, cfg.numLayers * 7 + 1)
  const q = quantizeModel(fp32, FORMATS.int4!)
  assert.equal(q.quantized.length, matmuls)
  const m = onnx.ModelProto.decode(q.bytes)
  const g = m.graph as O.GraphProto
  assert.equal(g.node.filter((n) => n.opType === 'MatMulNBits' && n.domain === 'com.microsoft').length, matmuls)
  assert.ok(m.opsetImport.some((o) => o.domain === 'com.microsoft' && Number(o.version) === 1))
  const inits = g.initializer as O.TensorProto[]
  assert.ok(inits.some((t) => /embed_tokens/.test(t.name) && t.dataType === onnx.TensorProto.DataType.FLOAT), 'Gather weights stay float')
  assert.ok(!inits.some((t) => /_wq_\d+$/.test(t.name)), 'float weights dropped')
  assert.ok(q.quantBytes < q.floatBytes / 6, `int4 weights ${q.quantBytes} bytes vs ${q.floatBytes} float`)
  // The merged (If) layout: MatMuls inside both branches share one quantized copy of each weight.
  const merged = quantizeModel(buildDecoder({ ...cfg, merged: true }), FORMATS.int8!)
  assert.equal(merged.quantized.length, matmuls)
})

function commonPrefix(a: number[], b: number[]): number {
  let i = 0
  while (i < a.length && a[i] === b[i]) i++
  return i
}

/** Prefill logits [L, V] of `path` on the prompt (no past). */
async function prefillLogits(path: string, ids: number[]): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(path)
  try {
    const L = ids.length
    const f: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, L]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(L).fill(1n), [1, L]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map((_, j) => BigInt(j))), [1, L]),
    }
    for (let l = 0; l < cfg.numLayers; l++) for (const k of ['key', 'value']) f[`past_key_values.${l}.${k}`] = new ort.Tensor('float32', new Float32Array(0), [1, cfg.numKvHeads, 0, hd])
    return (await s.run(f, ['logits'])).logits!.data as Float32Array
  } finally {
    await s.release()
  }
}

test('each quantized decoder passes the KV rewrite; the engine decodes it as full recomputation does, close to fp32', async () => {
  const ids = tok.encode(PROMPT)
  const fpTokens = await greedyNoCacheOf(paths.fp32!, cfg, ids, 16)
  const fpLogits = await prefillLogits(paths.fp32!, ids)
  for (const name of Object.keys(FORMATS)) {
    const rw = rewriteForNewPositions(quantizeModel(fp32, FORMATS[name]!).bytes)
    assert.equal(rw.rewritten, true, `${name}: ${rw.reason}`)
    const engine = await LlmEngine.load(paths[name]!, { maxTotalTokens: 128, kvBlock: 16 })
    try {
      assert.equal(engine.stats().presentMode, 'new', name)
      const got = await generate(engine, PROMPT, { maxNewTokens: 16 })
      const recomputed = await greedyNoCacheOf(paths[name]!, cfg, ids, 16)
      const prefix = commonPrefix(got, fpTokens)
      if (name === 'dynamic_int8') {
        // Activations are quantized with one scale per tensor, i.e. over every position a run
        // sees: a cached step (1 position) and a recomputation (all of them) round differently.
        assert.ok(commonPrefix(got, recomputed) >= 8, `${name}: KV-cache greedy ~ recomputation`)
      } else {
        assert.deepEqual(got, recomputed, `${name}: KV-cache greedy == recomputation on the same model`)
      }
      const lq = await prefillLogits(paths[name]!, ids)
      let d = 0
      for (let i = 0; i < lq.length; i++) d = Math.max(d, Math.abs(lq[i]! - fpLogits[i]!))
      if (name === 'int8' || name === 'int8_acc4' || name === 'qdq_int8') {
        assert.equal(prefix, 16, `${name}: same 16 greedy tokens as fp32`)
        assert.ok(d < 0.5, `${name}: max |Δlogit| ${d}`)
      } else if (name === 'dynamic_int8') {
        assert.ok(prefix >= 8, `${name}: first ${prefix} tokens as fp32`)
        assert.ok(d < 1, `${name}: max |Δlogit| ${d}`)
      } else {
        assert.ok(prefix >= 1, `${name}: first token as fp32`)
        assert.ok(d <= 2, `${name}: max |Δlogit| ${d}`)
      }
    } finally {
      await engine.close()
    }
  }
})

test('int4 engine: a batch of prompts decodes as each prompt alone', async () => {
  const engine = await LlmEngine.load(paths.int4!, { maxTotalTokens: 128, kvBlock: 16 })
  try {
    const prompts = [PROMPT, 'Hi', 'The quick brown fox']
    const alone: number[][] = []
    for (const p of prompts) alone.push(await generate(engine, p, { maxNewTokens: 20 }))
    assert.deepEqual(await Promise.all(prompts.map((p) => generate(engine, p, { maxNewTokens: 20 }))), alone)
  } finally {
    await engine.close()
  }
})

test('int4 with external data (as onnxruntime-genai writes it) loads from its folder', async () => {
  mkdirSync(join(dir, 'genai'))
  const path = join(dir, 'genai', 'model.onnx')
  await writeExternalDataModel(path, quantizeModel(fp32, FORMATS.int4!).bytes, { location: 'model.onnx.data' })
  const [a, b] = await Promise.all([LlmEngine.load(path, { maxTotalTokens: 96, kvBlock: 16 }), LlmEngine.load(paths.int4!, { maxTotalTokens: 96, kvBlock: 16 })])
  try {
    assert.deepEqual(await generate(a, PROMPT, { maxNewTokens: 12 }), await generate(b, PROMPT, { maxNewTokens: 12 }))
  } finally {
    await Promise.all([a.close(), b.close()])
  }
})
