/**
 * Next-token choice: repetition/frequency penalties, then greedy or temperature + top-k + top-p
 * + typical-p sampling (TGI's warper order) with a caller-supplied seeded RNG (same seed, same
 * logits -> same tokens). Optionally the top-n alternatives (TGI `top_n_tokens`).
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
  /** 1 = off. Locally typical sampling (TGI/transformers TypicalLogitsWarper, mass = typicalP). */
  typicalP: number
  /** 1 = off. Divides positive logits of seen tokens, multiplies negative ones (HF/TGI). */
  repetitionPenalty: number
  /** 0 = off. Subtracts penalty x count of each seen token. */
  frequencyPenalty: number
}

/** Parameters for plain greedy decoding. */
export const GREEDY: SamplingParams = { doSample: false, temperature: 1, topK: 0, topP: 1, typicalP: 1, repetitionPenalty: 1, frequencyPenalty: 0 }

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

/** A token id and its log-probability. */
export interface TokenLogprob { id: number; logprob: number }

/**
 * The chosen token and its log-probability under the (penalised, temperature-scaled) distribution;
 * with `topN` > 0 also the `top` alternatives, most likely first, from that same distribution.
 */
export interface SampledToken { id: number; logprob: number; top?: TokenLogprob[] }

/**
 * The n highest entries of `x` (ids, most likely first; ties: lower id first, as greedy's argmax),
 * with logprob x[i] / t - logZ. One pass with an insertion into an n-long list: O(V) compares, no
 * sort of the vocabulary. Only called for requests that ask for top tokens.
 */
export function topTokens(x: Float32Array, n: number, t: number, logZ: number): TokenLogprob[] {
  const k = Math.min(n, x.length)
  if (k <= 0) return []
  const ids = new Int32Array(k)
  const vals = new Float64Array(k)
  let filled = 0
  for (let i = 0; i < x.length; i++) {
    const z = x[i]!
    if (filled === k && !(z > vals[k - 1]!)) continue
    let j = filled < k ? filled++ : k - 1
    while (j > 0 && z > vals[j - 1]!) { vals[j] = vals[j - 1]!; ids[j] = ids[j - 1]!; j-- }
    vals[j] = z
    ids[j] = i
  }
  const out: TokenLogprob[] = new Array(filled)
  for (let j = 0; j < filled; j++) out[j] = { id: ids[j]!, logprob: vals[j]! / t - logZ }
  return out
}

/**
 * Picks the next token from one logits row. `scratch` (same length as the row) is overwritten;
 * `logits` itself is left untouched.
 */
export function sampleToken(logits: Float32Array, params: SamplingParams, counts: TokenCounts, rng: Rng, scratch?: Float32Array, topN = 0): SampledToken {
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
  // Top-n alternatives come from the same distribution as the chosen token's `logprob`: after the
  // logits processors (penalties) and temperature, before the truncating warpers (top-k, top-p,
  // typical-p). Temperature is monotone, so the set and order are those of the unwarped
  // (processors-only) distribution TGI's CausalLM reports, while each value matches the chosen
  // token's own `logprob` (the chosen token, when among them, shows the same number). TGI's flash
  // models instead report the fully warped distribution, where truncated alternatives are -inf
  // and dropped, so fewer than n come back; that would hide exactly the alternatives a caller
  // asks about.
  const top = topN > 0 ? topTokens(x, topN, t, logZ) : undefined
  if (!params.doSample) return top ? { id: best, logprob: x[best]! - logZ, top } : { id: best, logprob: x[best]! - logZ }

  // Candidates: tokens within exp(-20) of the max (the rest hold < V*2e-9 of the mass, so
  // top-p over them is exact to float precision), sorted by probability.
  const floor = maxZ - 20
  let cand: number[] = []
  for (let i = 0; i < v; i++) if (x[i]! / t >= floor) cand.push(i)
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
  const logprob = x[pick]! / t - logZ
  return top ? { id: pick, logprob, top } : { id: pick, logprob }
}

/**
 * Locally typical sampling, as transformers' TypicalLogitsWarper (which TGI applies last, after
 * temperature, top-k and top-p) with min_tokens_to_keep = 1, over the current candidates'
 * unnormalised probabilities `probs` (sum `total`): H = entropy of the renormalised distribution;
 * sort by |-log p - H| ascending; i* = number of leading tokens whose cumulative probability is
 * < mass (clamped to the last index); keep every token whose score is <= the score at i* (ties
 * with it included). Returns the kept positions in their original (most likely first) order.
 * Tokens outside the candidate floor (below exp(-20) of the max, < V x 2e-9 of the mass) are left
 * out of the entropy and ordering, as they are for top-p.
 */
export function typicalFilter(probs: readonly number[], total: number, mass: number): number[] {
  const n = probs.length
  const logTotal = Math.log(total)
  let ent = 0
  const lp = new Float64Array(n)
  for (let k = 0; k < n; k++) {
    const p = probs[k]! / total
    lp[k] = Math.log(probs[k]!) - logTotal
    if (p > 0) ent -= p * lp[k]!
  }
  const score = new Float64Array(n)
  for (let k = 0; k < n; k++) score[k] = Math.abs(-lp[k]! - ent)
  const order = Array.from({ length: n }, (_, k) => k).sort((a, b) => score[a]! - score[b]! || a - b)
  let acc = 0
  let last = 0
  while (last < n - 1) {
    acc += probs[order[last]!]! / total
    if (acc >= mass) break
    last++
  }
  const cut = score[order[last]!]!
  const kept: number[] = []
  for (let k = 0; k < n; k++) if (score[k]! <= cut) kept.push(k)
  return kept
}
