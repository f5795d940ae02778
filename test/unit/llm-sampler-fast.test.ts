/**
 * The O(V) sampler (src/llm/sampler.ts) against a straightforward reference: copy the row, apply
 * the penalties, sort every candidate, cut top-k / top-p / typical-p on the sorted list, walk it.
 * Random rows (with ties, flat and peaked), top_k beyond V, top_p edge values, penalties.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createRng, GREEDY, sampleToken, selectByMass, typicalFilter } from '../../src/llm/sampler.ts'
import type { Rng, SamplingParams, SampledToken, TokenCounts } from '../../src/llm/sampler.ts'

/** The sort-everything sampler, as the engine ran it before the O(V) one. */
function referenceSample(logits: Float32Array, params: SamplingParams, counts: TokenCounts, rng: Rng): SampledToken {
  const v = logits.length
  const x = Float32Array.from(logits)
  const pp = params.presencePenalty ?? 0
  if (params.repetitionPenalty !== 1 || params.frequencyPenalty !== 0 || pp !== 0) {
    for (const [id, n] of counts) {
      if (id < 0 || id >= v) continue
      let z = x[id]!
      if (params.repetitionPenalty !== 1) z = z > 0 ? z / params.repetitionPenalty : z * params.repetitionPenalty
      x[id] = pp === 0 ? z - params.frequencyPenalty * n : z - params.frequencyPenalty * n - pp
    }
  }
  const t = params.doSample ? params.temperature : 1
  let best = 0
  for (let i = 1; i < v; i++) if (x[i]! > x[best]!) best = i
  const maxZ = x[best]! / t
  let sum = 0
  for (let i = 0; i < v; i++) sum += Math.exp(x[i]! / t - maxZ)
  const logZ = maxZ + Math.log(sum)
  if (!params.doSample) return { id: best, logprob: x[best]! - logZ }
  let cand: number[] = []
  for (let i = 0; i < v; i++) if (x[i]! / t >= maxZ - 20) cand.push(i)
  cand.sort((i, j) => x[j]! - x[i]! || i - j)
  if (params.topK > 0 && cand.length > params.topK) cand = cand.slice(0, params.topK)
  let probs = cand.map((i) => Math.exp(x[i]! / t - maxZ))
  let total = probs.reduce((a, b) => a + b, 0)
  if (params.topP < 1) {
    let acc = 0
    let keep = cand.length
    for (let k = 0; k < cand.length; k++) {
      acc += probs[k]! / total
      if (acc >= params.topP) { keep = k + 1; break }
    }
    cand = cand.slice(0, keep)
    probs.length = keep
    total = probs.reduce((a, b) => a + b, 0)
  }
  if (params.typicalP < 1 && cand.length > 1) {
    const kept = typicalFilter(probs, total, params.typicalP)
    if (kept.length < cand.length) {
      const c = cand, pr = probs
      cand = kept.map((k) => c[k]!)
      probs = kept.map((k) => pr[k]!)
      total = probs.reduce((a, b) => a + b, 0)
    }
  }
  let u = rng() * total
  let pick = cand[cand.length - 1]!
  for (let k = 0; k < cand.length; k++) {
    u -= probs[k]!
    if (u < 0) { pick = cand[k]!; break }
  }
  return { id: pick, logprob: x[pick]! / t - logZ }
}

/** Gaussian-ish logits with scale `sd`; `levels` > 0 quantizes them so many values tie. */
function randomRow(v: number, seed: number, sd: number, levels = 0): Float32Array {
  const r = createRng(seed)
  const x = new Float32Array(v)
  for (let i = 0; i < v; i++) {
    const g = (r() + r() + r() + r() - 2) * Math.sqrt(3) * sd
    x[i] = levels > 0 ? Math.round(g * levels) / levels : g
  }
  return x
}

function randomCounts(v: number, seed: number, n: number): TokenCounts {
  const r = createRng(seed)
  const c: TokenCounts = new Map()
  for (let i = 0; i < n; i++) { const id = Math.floor(r() * v); c.set(id, (c.get(id) ?? 0) + 1) }
  c.set(-1, 1) // out-of-range ids are ignored by both
  c.set(v + 5, 2)
  return c
}

const S: SamplingParams = { ...GREEDY, doSample: true }

function compare(label: string, row: Float32Array, params: SamplingParams, counts: TokenCounts, seed: number, draws: number): void {
  const before = Float32Array.from(row)
  const a = createRng(seed), b = createRng(seed)
  for (let d = 0; d < draws; d++) {
    const got = sampleToken(row, params, counts, a)
    const want = referenceSample(row, params, counts, b)
    assert.equal(got.id, want.id, `${label} draw ${d}: id`)
    assert.ok(Math.abs(got.logprob - want.logprob) <= 1e-9 * Math.max(1, Math.abs(want.logprob)), `${label} draw ${d}: logprob ${got.logprob} vs ${want.logprob}`)
  }
  assert.deepEqual(row, before, `${label}: the caller's row is unchanged`)
}

const ROWS: Array<[string, number, number, number]> = [
  // name, V, sd, tie levels
  ['small', 40, 2, 0],
  ['small ties', 40, 2, 1],
  ['mid flat', 3000, 1, 0],
  ['mid peaked', 3000, 6, 0],
  ['very peaked', 5000, 15, 0],
  ['big ties', 5000, 3, 4],
  ['all equal', 200, 0, 0],
]

const PARAMS: Array<[string, SamplingParams]> = [
  ['greedy', GREEDY],
  ['temperature', { ...S, temperature: 0.7 }],
  ['hot', { ...S, temperature: 1.8 }],
  ['top_k 1', { ...S, topK: 1 }],
  ['top_k 50', { ...S, topK: 50, temperature: 0.9 }],
  ['top_k 1000', { ...S, topK: 1000 }],
  ['top_k > V', { ...S, topK: 100000 }],
  ['top_p tiny', { ...S, topP: 1e-9 }],
  ['top_p 0.5', { ...S, topP: 0.5 }],
  ['top_p 0.95', { ...S, topP: 0.95, temperature: 0.8 }],
  ['top_p near 1', { ...S, topP: 0.999999 }],
  ['top_k + top_p', { ...S, topK: 400, topP: 0.9 }],
  ['typical 0.5', { ...S, typicalP: 0.5 }],
  ['typical 0.95 + top_p', { ...S, typicalP: 0.95, topP: 0.97 }],
  ['typical tiny', { ...S, typicalP: 1e-6 }],
  ['all warpers', { ...S, temperature: 0.6, topK: 300, topP: 0.9, typicalP: 0.9 }],
]

test('fast sampler equals the sort-everything reference on random rows (ids and logprobs)', () => {
  let seed = 1
  for (const [rn, v, sd, levels] of ROWS) {
    const row = randomRow(v, 100 + seed, sd, levels)
    for (const [pn, params] of PARAMS) compare(`${rn} / ${pn}`, row, params, new Map(), seed++, 25)
  }
})

test('penalties (repetition, frequency, presence) on the seen ids only, row restored', () => {
  let seed = 500
  for (const [rn, v, sd, levels] of ROWS) {
    const row = randomRow(v, 200 + seed, sd, levels)
    const counts = randomCounts(v, seed, Math.min(v, 300))
    for (const pen of [{ repetitionPenalty: 1.3 }, { frequencyPenalty: 0.7 }, { presencePenalty: 1.5 }, { repetitionPenalty: 0.8, frequencyPenalty: -0.5, presencePenalty: 0.3 }]) {
      for (const [pn, params] of PARAMS) compare(`${rn} / ${pn} / ${JSON.stringify(pen)}`, row, { ...params, ...pen }, counts, seed++, 8)
    }
  }
})

test('a large all-equal row: the nucleus is top_p of the vocabulary (to one token at the rounding boundary)', () => {
  // Where the cumulative mass meets top_p exactly (equal probabilities), the selection's float sums
  // and the reference's per-token cumulative sum may round to different sides: one token apart.
  const v = 1000
  const row = new Float32Array(v)
  const rng = createRng(3)
  let maxId = 0
  const seen = new Set<number>()
  for (let d = 0; d < 4000; d++) {
    const r = sampleToken(row, { ...S, topP: 0.5 }, new Map(), rng)
    maxId = Math.max(maxId, r.id)
    seen.add(r.id)
  }
  assert.ok(maxId >= 498 && maxId <= 500, `nucleus ends at id ${maxId}`)
  assert.ok(seen.size > 450)
  // No truncation: every token reachable, the same draws as the reference.
  compare('1000 equal / temperature', row, { ...S, temperature: 0.5 }, new Map(), 8, 50)
})

test('penalties change the choice: the argmax pushed down by a repetition penalty', () => {
  const row = Float32Array.from([0, 5, 4.9, 1])
  assert.equal(sampleToken(row, { ...GREEDY, repetitionPenalty: 1.2 }, new Map([[1, 1]]), createRng(1)).id, 2)
  assert.equal(sampleToken(row, { ...GREEDY, presencePenalty: 0.2 }, new Map([[1, 3]]), createRng(1)).id, 2)
  assert.equal(sampleToken(row, { ...GREEDY, frequencyPenalty: 0.04 }, new Map([[1, 3]]), createRng(1)).id, 2)
  assert.equal(sampleToken(row, { ...GREEDY, frequencyPenalty: 0.04 }, new Map([[1, 2]]), createRng(1)).id, 1)
  assert.deepEqual(row, Float32Array.from([0, 5, 4.9, 1]))
})

test('a real-size row (V = 49,152): same draws as the reference for each warper', () => {
  const v = 49152
  const row = randomRow(v, 7, 3)
  for (const [pn, params] of PARAMS) compare(`49k / ${pn}`, row, params, randomCounts(v, 3, 200), 900, 3)
})

test('selectByMass: the first element reaching the target, by count and by weight', () => {
  const r = createRng(4)
  for (let trial = 0; trial < 200; trial++) {
    const n = 1 + Math.floor(r() * 300)
    const key = new Float64Array(n)
    const w = new Float64Array(n)
    for (let i = 0; i < n; i++) { key[i] = Math.floor(r() * 20); w[i] = r() < 0.1 ? 0 : r() }
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => key[a]! - key[b]! || a - b)
    const strict = trial % 2 === 0
    const target = r() * order.reduce((s, i) => s + w[i]!, 0) * 1.05
    let acc = 0, want = -1
    for (let k = 0; k < n; k++) { acc += w[order[k]!]!; if (strict ? acc > target : acc >= target) { want = order[k]!; break } }
    const ids = Int32Array.from({ length: n }, (_, i) => n - 1 - i)
    const at = selectByMass(ids, 0, n, key, w, target, strict)
    if (want < 0) { assert.equal(at, -1, `trial ${trial}`); continue }
    assert.equal(ids[at], want, `trial ${trial}: crossing element`)
    assert.deepEqual([...ids.subarray(0, at)].sort((a, b) => a - b), order.slice(0, order.indexOf(want)).sort((a, b) => a - b), `trial ${trial}: its prefix`)
    const k = 1 + Math.floor(r() * n)
    const ids2 = Int32Array.from({ length: n }, (_, i) => i)
    assert.equal(selectByMass(ids2, 0, n, key, null, k, false), k - 1)
    assert.deepEqual([...ids2.subarray(0, k)].sort((a, b) => a - b), order.slice(0, k).sort((a, b) => a - b), `trial ${trial}: top ${k}`)
  }
})
