/**
 * Next-token choice: repetition/frequency penalties, then greedy or temperature + top-k + top-p
 * sampling with a caller-supplied seeded RNG (same seed, same logits -> same tokens).
 * Pure functions over one logits row; the engine owns the per-request state (RNG, counts).
 */

/** Validated sampling parameters (defaults are "off"). */
export interface SamplingParams {
  /** false -> greedy (argmax after penalties). */
  doSample: boolean
  temperature: number
  /** 0 = off. */
  topK: number
  /** 1 = off. */
  topP: number
  /** 1 = off. Divides positive logits of seen tokens, multiplies negative ones (HF/TGI). */
  repetitionPenalty: number
  /** 0 = off. Subtracts penalty x count of each seen token. */
  frequencyPenalty: number
}

/** Parameters for plain greedy decoding. */
export const GREEDY: SamplingParams = { doSample: false, temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1, frequencyPenalty: 0 }

/** A uniform [0,1) generator. */
export type Rng = () => number

/**
 * Seeded RNG (sfc32 seeded by splitmix32 over the 64-bit seed), so a request's `seed` makes
 * its samples reproducible across runs and batch compositions.
 */
export function createRng(seed: number | bigint): Rng {
  const s = BigInt.asUintN(64, BigInt(seed))
  let x = Number(s & 0xffffffffn) ^ Number(s >> 32n)
  const split = (): number => {
    x = (x + 0x9e3779b9) | 0
    let z = x
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    return (z ^ (z >>> 16)) >>> 0
  }
  let a = split(), b = split(), c = split(), d = split()
  const next = (): number => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0
    const t = (a + b) | 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) | 0
    c = (c << 21) | (c >>> 11)
    d = (d + 1) | 0
    const r = (t + d) | 0
    c = (c + r) | 0
    return (r >>> 0) / 4294967296
  }
  for (let i = 0; i < 12; i++) next()
  return next
}

/** Token counts of prompt + generated ids, for the penalties. */
export type TokenCounts = Map<number, number>

/** Adds `id` to the counts. */
export function countToken(counts: TokenCounts, id: number): void {
  counts.set(id, (counts.get(id) ?? 0) + 1)
}

/** The chosen token and its log-probability under the (penalised, temperature-scaled) distribution. */
export interface SampledToken { id: number; logprob: number }

/**
 * Picks the next token from one logits row. `scratch` (same length as the row) is overwritten;
 * `logits` itself is left untouched.
 */
export function sampleToken(logits: Float32Array, params: SamplingParams, counts: TokenCounts, rng: Rng, scratch?: Float32Array): SampledToken {
  const v = logits.length
  const x = scratch && scratch.length >= v ? scratch.subarray(0, v) : new Float32Array(v)
  x.set(logits)
  if (params.repetitionPenalty !== 1 || params.frequencyPenalty !== 0) {
    for (const [id, n] of counts) {
      if (id < 0 || id >= v) continue
      let z = x[id]!
      if (params.repetitionPenalty !== 1) z = z > 0 ? z / params.repetitionPenalty : z * params.repetitionPenalty
      x[id] = z - params.frequencyPenalty * n
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

  // Candidates: tokens within exp(-20) of the max (the rest hold < V*2e-9 of the mass, so
  // top-p over them is exact to float precision), sorted by probability.
  const floor = maxZ - 20
  let cand: number[] = []
  for (let i = 0; i < v; i++) if (x[i]! / t >= floor) cand.push(i)
  cand.sort((i, j) => x[j]! - x[i]! || i - j)
  if (params.topK > 0 && cand.length > params.topK) cand = cand.slice(0, params.topK)
  const probs = cand.map((i) => Math.exp(x[i]! / t - maxZ))
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
  let u = rng() * total
  let pick = cand[cand.length - 1]!
  for (let k = 0; k < cand.length; k++) {
    u -= probs[k]!
    if (u < 0) { pick = cand[k]!; break }
  }
  return { id: pick, logprob: x[pick]! / t - logZ }
}
