/**
 * Next-token choice: repetition/frequency penalties, then greedy or temperature + top-k + top-p
 * + typical-p sampling (TGI's warper order) with a caller-supplied seeded RNG (same seed, same
 * logits -> same tokens). Optionally the top-n alternatives (TGI `top_n_tokens`).
 * Pure functions over one logits row; the engine owns the per-request state (RNG, counts).
 * O(V) per token: no copy of the row, penalties only on the seen ids, and partial selection
 * instead of a sort of the vocabulary (test/unit/llm-sampler-fast.test.ts checks it against a
 * straightforward sort-everything reference).
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
  /** 0 (or absent) = off. Subtracts the penalty once from each seen token (OpenAI's presence_penalty). */
  presencePenalty?: number
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
 * A logits row's statistics as the rewritten graph computes them (graph-rewrite.ts
 * `addLogitStats`): the row's largest logit and the most likely token's log-probability at the
 * request's temperature, log_softmax(x / T) at the max. With them the sampler knows log Z without
 * its own exp pass over the vocabulary.
 */
export interface LogitStats { max: number; topLogprob: number }

/**
 * The `k` largest values of `x` in one pass, kept in order (largest first, ties to the lower id) by
 * insertion into `ids` / `vals` (length >= k): O(V) compares, no sort. Returns how many were filled.
 */
function insertTopK(x: Float32Array, k: number, ids: Int32Array, vals: Float64Array): number {
  if (k <= 0) return 0
  const v = x.length
  let filled = 0
  let i = 0
  for (; i < v && filled < k; i++) {
    const z = x[i]!
    let j = filled++
    while (j > 0 && z > vals[j - 1]!) { vals[j] = vals[j - 1]!; ids[j] = ids[j - 1]!; j-- }
    vals[j] = z
    ids[j] = i
  }
  // The list is full: the scan compares against a local threshold (the k-th value) and touches
  // the list only to insert (1.7x faster at V = 49k than re-reading the list's end per entry).
  let thr = vals[k - 1]!
  for (; i < v; i++) {
    const z = x[i]!
    if (!(z > thr)) continue
    let j = k - 1
    while (j > 0 && z > vals[j - 1]!) { vals[j] = vals[j - 1]!; ids[j] = ids[j - 1]!; j-- }
    vals[j] = z
    ids[j] = i
    thr = vals[k - 1]!
  }
  return filled
}

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
  const filled = insertTopK(x, k, ids, vals)
  const out: TokenLogprob[] = new Array(filled)
  for (let j = 0; j < filled; j++) out[j] = { id: ids[j]!, logprob: vals[j]! / t - logZ }
  return out
}

// Reusable buffers, grown to the largest vocabulary seen. The sampler is synchronous, so one set
// per module instance (per thread) is never in use twice at once.
let candIds = new Int32Array(0)
/** Unnormalised probability exp(x/T - max) by token id, written for candidates only. */
let candProbs = new Float64Array(0)
/** Selection keys by token id (ascending = earlier): -x for the probability order, typicality scores. */
let orderKeys = new Float64Array(0)
let scoreKeys = new Float64Array(0)
let saved = new Float32Array(0)
let topVals = new Float64Array(0)

function ensureBuffers(v: number): void {
  if (candIds.length >= v) return
  topVals = new Float64Array(SORT_MAX)
  candIds = new Int32Array(v)
  candProbs = new Float64Array(v)
  orderKeys = new Float64Array(v)
  scoreKeys = new Float64Array(v)
}

/**
 * Candidate sets up to this size are sorted and walked as a full sort of the vocabulary would be
 * (same order, same summation order); larger ones are cut by selection (quickselect by count or
 * by probability mass), which agrees with the sort up to the rounding of float sums (a cut can
 * move by one token only where the cumulative mass equals top-p/typical-p to ~1e-15).
 */
const SORT_MAX = 256
/** How many of the most likely tokens top-p tries before it builds the full candidate list. */
const NUCLEUS_TRY = 64

/**
 * Picks the next token from one logits row, in O(V) per token: greedy is an argmax and one
 * log-sum-exp over the row as given (no copy); penalties touch only the seen ids (written into the
 * row and restored before returning, so the caller's `logits` is unchanged afterwards); top-k,
 * top-p and typical-p select their candidates instead of sorting the vocabulary. With the graph's
 * `stats` of this row (greedy, top-k up to SORT_MAX, top-p without top-k; not typical-p) the
 * log-sum-exp pass is skipped: greedy becomes one native indexOf of the max; penalties update the
 * statistics for the seen ids (penalisedStats). `scratch` is no longer needed and is ignored
 * (kept for callers).
 */
export function sampleToken(logits: Float32Array, params: SamplingParams, counts: TokenCounts, rng: Rng, scratch?: Float32Array, topN = 0, stats?: LogitStats): SampledToken {
  void scratch
  const rp = params.repetitionPenalty, fp = params.frequencyPenalty, pp = params.presencePenalty ?? 0
  if ((rp === 1 && fp === 0 && pp === 0) || counts.size === 0) return choose(logits, params, rng, topN, stats)
  const v = logits.length
  if (saved.length < counts.size) saved = new Float32Array(counts.size)
  let k = 0
  for (const [id, n] of counts) {
    if (!(id >= 0 && id < v)) continue
    let z = logits[id]!
    saved[k++] = z
    if (rp !== 1) z = z > 0 ? z / rp : z * rp
    // Stored as float32, as the row: the statistics below see exactly what the sampler sees.
    logits[id] = pp === 0 ? z - fp * n : z - fp * n - pp
  }
  try {
    return choose(logits, params, rng, topN, stats && penalisedStats(logits, counts, params, stats))
  } finally {
    k = 0
    for (const id of counts.keys()) if (id >= 0 && id < v) logits[id] = saved[k++]!
  }
}

/**
 * The statistics of the row after the penalties, from the model's own (`stats`) in O(seen ids):
 * the penalties changed only the seen ids, so the row's mass moves by their new minus their old
 * exp(z / T - max / T), and the new max is the old one (if some id still holds it) or a penalised
 * value. undefined (the caller scans the row) when the old max left the row, or when the seen ids
 * held over half the mass (the difference would lose the float32 statistics' precision).
 */
function penalisedStats(x: Float32Array, counts: TokenCounts, params: SamplingParams, stats: LogitStats): LogitStats | undefined {
  // Non-finite statistics end in undefined below (NaN comparisons are false); choose checks the result.
  const t = params.doSample ? params.temperature : 1
  const m = stats.max / t
  const total = Math.exp(-stats.topLogprob)
  let removed = 0, added = 0
  let newMax = -Infinity
  let k = 0
  for (const id of counts.keys()) {
    if (!(id >= 0 && id < x.length)) continue
    const z = x[id]!
    removed += Math.exp(saved[k++]! / t - m)
    added += Math.exp(z / t - m)
    if (z > newMax) newMax = z
  }
  if (!(removed <= 0.5 * total)) return undefined
  if (x.indexOf(stats.max) >= 0) newMax = Math.max(newMax, stats.max)
  else if (!(newMax > stats.max)) return undefined
  const sum = total - removed + added
  if (!(sum > 0)) return undefined
  return { max: newMax, topLogprob: newMax / t - (m + Math.log(sum)) }
}

/** Greedy or sampled choice over the (already penalised) row `x`. */
function choose(x: Float32Array, params: SamplingParams, rng: Rng, topN: number, stats?: LogitStats): SampledToken {
  if (stats && Number.isFinite(stats.max) && Number.isFinite(stats.topLogprob) && params.typicalP >= 1) {
    const r = chooseWithStats(x, params, rng, topN, stats)
    if (r) return r
  }
  const v = x.length
  const t = params.doSample ? params.temperature : 1
  let best = 0
  let bestZ = x[0]!
  for (let i = 1; i < v; i++) if (x[i]! > bestZ) { bestZ = x[i]!; best = i }
  const maxZ = bestZ / t
  let sum = 0
  let numCand = 0
  /** > 0: the top-p nucleus was found among the most likely few (candIds[0..nucleus), in order). */
  let nucleus = 0
  const table = expTable()
  // A small top-k needs no candidate list: one pass keeps the k best in order (below).
  const smallTopK = params.doSample && params.topK > 0 && params.topK <= SORT_MAX
  if (!params.doSample) {
    // expMinus written out: this loop is most of a greedy step at V = 49k (T is 1 here). The other
    // loops call it; bench/sampler.ts showed no difference beyond its run-to-run spread for them.
    for (let i = 0; i < v; i++) {
      const d = (maxZ - x[i]!) * EXP_STEPS
      if (!(d < EXP_LIMIT)) continue
      const q = d | 0
      const r = (d - q) * (1 / EXP_STEPS)
      sum += table[q]! * (1 - r * (1 - r * (1 / 2 - r * (1 / 6 - r * (1 / 24)))))
    }
  } else if (smallTopK) {
    for (let i = 0; i < v; i++) sum += expMinus(table, maxZ - x[i]! / t)
    numCand = topKCandidates(x, params.topK, t, maxZ, table)
  } else {
    // Temperature folded into the softmax pass; candidates as collectCandidates takes them.
    const floor = maxZ - 20
    if (params.topP < 1) {
      // Top-p progressively: the candidates' mass in the softmax pass, then the NUCLEUS_TRY most
      // likely in one more pass; a peaked distribution's nucleus is among them (no candidate list).
      let mass = 0
      let count = 0
      for (let i = 0; i < v; i++) {
        const z = x[i]! / t
        const e = expMinus(table, maxZ - z)
        sum += e
        if (z >= floor) { mass += e; count++ }
      }
      if (!(params.topK > 0 && params.topK < count)) nucleus = nucleusAmongFirst(x, params.topP, t, maxZ, table, mass)
    }
    if (nucleus === 0) {
      // The top-p pass above already summed the row.
      numCand = collectCandidates(x, t, maxZ, table, params.topP >= 1)
      if (params.topP >= 1) sum = rowSum
    } else {
      numCand = nucleus
    }
  }
  const logZ = maxZ + Math.log(sum)
  // Top-n alternatives come from the same distribution as the chosen token's `logprob`: after the
  // logits processors (penalties) and temperature, before the truncating warpers (top-k, top-p,
  // typical-p). Temperature is monotone, so the set and order are those of the unwarped
  // (processors-only) distribution TGI's CausalLM reports, while each value matches the chosen
  // token's own `logprob` (the chosen token, when among them, shows the same number). TGI's flash
  // models instead report the fully warped distribution, where truncated alternatives are -inf
  // and dropped, so fewer than n come back; that would hide exactly the alternatives a caller
  // asks about.
  return sampled(x, params.doSample ? pickCandidate(x, numCand, params, rng, nucleus > 0) : best, t, logZ, topN)
}

/** The chosen token with its logprob x[id] / t - logZ, and the top `topN` under the same log Z. */
function sampled(x: Float32Array, id: number, t: number, logZ: number, topN: number): SampledToken {
  const logprob = x[id]! / t - logZ
  const top = topN > 0 ? topTokens(x, topN, t, logZ) : undefined
  return top ? { id, logprob, top } : { id, logprob }
}

/** Sum of exp(x / t - maxZ) over the whole row, left by the last collectCandidates(..., true). */
let rowSum = 0

/**
 * Candidates: the tokens within exp(-20) of the max (the rest hold < V*2e-9 of the mass, so top-p
 * over them is exact to float precision) into candIds[0..n) with their candProbs; with `sumRow`
 * also the whole row's sum into rowSum. Returns n.
 */
function collectCandidates(x: Float32Array, t: number, maxZ: number, table: Float64Array, sumRow: boolean): number {
  ensureBuffers(x.length)
  const ids = candIds, w = candProbs
  const floor = maxZ - 20
  let n = 0
  let sum = 0
  for (let i = 0; i < x.length; i++) {
    const z = x[i]! / t
    if (sumRow) {
      // Within the floor (20 below the max) the value is never the out-of-range 0.
      const e = expMinus(table, maxZ - z)
      sum += e
      if (z >= floor) { ids[n++] = i; w[i] = e }
    } else if (z >= floor) { ids[n++] = i; w[i] = expMinus(table, maxZ - z) }
  }
  rowSum = sum
  return n
}

/**
 * `choose` with the graph's statistics: log Z = max/T - topLogprob, so no pass sums the row.
 * Greedy is indexOf(max) (the first maximum, as the scan's strict >); a small top-k keeps its one
 * insertion pass; top-p without top-k tries the NUCLEUS_TRY most likely normalised by the whole
 * row's mass exp(-topLogprob) (the JS path normalises by the mass within exp(-20) of the max,
 * which differs by < V*2e-9), then the candidate pass without its sum. Returns null for the
 * cases it does not cover (the caller takes the full path).
 */
function chooseWithStats(x: Float32Array, params: SamplingParams, rng: Rng, topN: number, stats: LogitStats): SampledToken | null {
  const t = params.doSample ? params.temperature : 1
  const maxZ = stats.max / t
  const logZ = maxZ - stats.topLogprob
  let id: number
  if (!params.doSample) {
    id = x.indexOf(stats.max)
    if (id < 0) return null
  } else {
    const table = expTable()
    let numCand = 0
    let nucleus = 0
    if (params.topK > 0 && params.topK <= SORT_MAX) {
      numCand = topKCandidates(x, params.topK, t, maxZ, table)
    } else if (params.topK === 0) {
      if (params.topP < 1) nucleus = nucleusAmongFirst(x, params.topP, t, maxZ, table, Math.exp(-stats.topLogprob))
      numCand = nucleus > 0 ? nucleus : collectCandidates(x, t, maxZ, table, false)
    } else {
      return null
    }
    if (numCand === 0) return null
    id = pickCandidate(x, numCand, params, rng, nucleus > 0)
  }
  return sampled(x, id, t, logZ, topN)
}

/**
 * exp(-a) for a >= 0 as exp(-q/256) from a table times a degree-4 polynomial for the remaining
 * r < 1/256: relative error < 1e-14, far below the float32 logits' own rounding, and 3-4x faster
 * than Math.exp here, which dominated a greedy step at V = 49k. 0 past exp(-745) (where doubles
 * underflow), for -Infinity logits and for NaN. The passes over the whole row write the same
 * expression out (a call there costs about 2x).
 */
function expMinus(table: Float64Array, a: number): number {
  const d = a * EXP_STEPS
  if (!(d < EXP_LIMIT)) return 0
  const q = d | 0
  const r = (d - q) * (1 / EXP_STEPS)
  return table[q]! * (1 - r * (1 - r * (1 / 2 - r * (1 / 6 - r * (1 / 24)))))
}

const EXP_STEPS = 256
const EXP_LIMIT = 745 * EXP_STEPS
let expTableCache: Float64Array | null = null

function expTable(): Float64Array {
  if (expTableCache) return expTableCache
  const t = new Float64Array(EXP_LIMIT + 1)
  for (let q = 0; q <= EXP_LIMIT; q++) t[q] = Math.exp(-q / EXP_STEPS)
  expTableCache = t
  return t
}

/**
 * The k most likely tokens (most likely first, ties to the lower id, as the sort) in one pass with
 * an insertion into a k-long list, cut to those within the candidate floor (a prefix, since they
 * are in order); writes candIds[0..n) and their candProbs. Returns n.
 */
function topKCandidates(x: Float32Array, k: number, t: number, maxZ: number, table: Float64Array): number {
  ensureBuffers(x.length)
  const ids = candIds, vals = topVals
  const filled = insertTopK(x, Math.min(k, x.length), ids, vals)
  const floor = maxZ - 20
  let n = 0
  while (n < filled && x[ids[n]!]! / t >= floor) {
    candProbs[ids[n]!] = expMinus(table, maxZ - x[ids[n]!]! / t)
    n++
  }
  return n
}

/**
 * Top-p tried on the NUCLEUS_TRY most likely tokens (candIds[0..n) after the call, in order) with
 * `mass` as the row's total: the nucleus size if they reach top-p, else 0.
 */
function nucleusAmongFirst(x: Float32Array, topP: number, t: number, maxZ: number, table: Float64Array, mass: number): number {
  const n = topKCandidates(x, NUCLEUS_TRY, t, maxZ, table)
  let acc = 0
  for (let k = 0; k < n; k++) {
    acc += candProbs[candIds[k]!]! / mass
    if (acc >= topP) return k + 1
  }
  return 0
}

/** Most likely first; ties to the lower id (the order a full sort of the vocabulary gives). */
function sortByProb(ids: Int32Array, n: number, x: Float32Array): void {
  ids.subarray(0, n).sort((i, j) => x[j]! - x[i]! || i - j)
}

function sumProbs(ids: Int32Array, n: number, w: Float64Array): number {
  let s = 0
  for (let k = 0; k < n; k++) s += w[ids[k]!]!
  return s
}

/**
 * TGI's warpers over the candidates candIds[0..n) (weights candProbs): top-k, top-p, typical-p,
 * then one draw of `rng`. While the set is small it is kept sorted (most likely first); a large
 * one stays unordered and each cut is a selection.
 */
function pickCandidate(x: Float32Array, numCand: number, params: SamplingParams, rng: Rng, nucleusDone: boolean): number {
  const ids = candIds, w = candProbs
  let n = numCand
  let sorted = n <= SORT_MAX
  if (sorted) sortByProb(ids, n, x)
  else for (let k = 0; k < n; k++) orderKeys[ids[k]!] = -x[ids[k]!]!
  const settle = (): void => {
    if (!sorted && n <= SORT_MAX) { sortByProb(ids, n, x); sorted = true }
  }
  if (!nucleusDone && params.topK > 0 && n > params.topK) {
    if (!sorted) selectByMass(ids, 0, n, orderKeys, null, params.topK, false)
    n = params.topK
    settle()
  }
  let total = sumProbs(ids, n, w)
  if (params.topP < 1 && !nucleusDone) {
    if (!sorted) {
      // A hair above the target so the exact walk below (once the nucleus is small enough to
      // sort) decides the boundary the way the reference's per-token cumulative sum does.
      const at = selectByMass(ids, 0, n, orderKeys, w, params.topP * total * (1 + 1e-12), false)
      if (at >= 0) n = at + 1
      settle()
    }
    if (sorted) {
      let acc = 0
      for (let k = 0; k < n; k++) {
        acc += w[ids[k]!]! / total
        if (acc >= params.topP) { n = k + 1; break }
      }
    }
    total = sumProbs(ids, n, w)
  }
  if (params.typicalP < 1 && n > 1) {
    let kept: number
    if (sorted) {
      const probs = new Array<number>(n)
      for (let k = 0; k < n; k++) probs[k] = w[ids[k]!]!
      const keep = typicalFilter(probs, total, params.typicalP)
      for (let j = 0; j < keep.length; j++) ids[j] = ids[keep[j]!]! // keep is ascending: in-place is safe
      kept = keep.length
    } else {
      kept = typicalSelect(ids, n, w, total, params.typicalP)
    }
    if (kept < n) {
      n = kept
      settle()
      total = sumProbs(ids, n, w)
    }
  }
  const u = rng() * total
  if (sorted) {
    let left = u
    for (let k = 0; k < n; k++) {
      left -= w[ids[k]!]!
      if (left < 0) return ids[k]!
    }
    return ids[n - 1]!
  }
  const at = selectByMass(ids, 0, n, orderKeys, w, u, true)
  if (at >= 0) return ids[at]!
  // u at or past the total (rounding): the least likely candidate, as the reference's walk ends.
  let last = ids[0]!
  for (let k = 1; k < n; k++) {
    const id = ids[k]!
    if (orderKeys[id]! > orderKeys[last]! || (orderKeys[id] === orderKeys[last] && id > last)) last = id
  }
  return last
}

/**
 * Locally typical filter (the semantics of `typicalFilter`) over an unordered candidate set:
 * entropy in one pass, then a mass selection in typicality order finds the cut score, and every
 * candidate scoring <= the cut stays (compacted to the front of `ids`). Returns the count kept.
 */
function typicalSelect(ids: Int32Array, n: number, w: Float64Array, total: number, mass: number): number {
  const s = scoreKeys
  const logTotal = Math.log(total)
  let ent = 0
  for (let k = 0; k < n; k++) {
    const id = ids[k]!
    const lp = Math.log(w[id]!) - logTotal
    s[id] = lp
    const p = w[id]! / total
    if (p > 0) ent -= p * lp
  }
  let maxScore = -Infinity
  for (let k = 0; k < n; k++) {
    const id = ids[k]!
    const sc = Math.abs(-s[id]! - ent)
    s[id] = sc
    if (sc > maxScore) maxScore = sc
  }
  const at = selectByMass(ids, 0, n, s, w, mass * total, false)
  const cut = at >= 0 ? s[ids[at]!]! : maxScore
  let m = 0
  for (let k = 0; k < n; k++) if (s[ids[k]!]! <= cut) ids[m++] = ids[k]!
  return m
}

/**
 * Weighted quickselect. Order: ascending `key[id]`, ties to the lower id. Finds the first element
 * (in that order) at which the cumulative weight of ids[lo..hi) reaches `target` (`strict`:
 * exceeds it), with weight 1 per element when `w` is null; rearranges ids so that this element
 * sits at the returned index and everything before it in the order sits in ids[lo..index).
 * Returns -1 when the whole range stays below the target. Expected O(hi - lo).
 */
export function selectByMass(ids: Int32Array, lo: number, hi: number, key: Float64Array, w: Float64Array | null, target: number, strict: boolean): number {
  let l = lo, h = hi, need = target
  while (h - l > 16) {
    // Median of three as the pivot, moved to l.
    const m = (l + h) >>> 1
    let a = ids[l]!, b = ids[m]!, c = ids[h - 1]!
    if (before(key, b, a)) { const s = a; a = b; b = s }
    if (before(key, c, b)) { const s = b; b = c; c = s; if (before(key, b, a)) { const s2 = a; a = b; b = s2 } }
    const pi = ids[l] === b ? l : ids[m] === b ? m : h - 1
    ids[pi] = ids[l]!
    ids[l] = b
    const p = b, kp = key[p]!
    let i = l + 1
    let mass = 0
    for (let j = l + 1; j < h; j++) {
      const q = ids[j]!
      const kq = key[q]!
      if (kq < kp || (kq === kp && q < p)) {
        ids[j] = ids[i]!
        ids[i] = q
        i++
        mass += w ? w[q]! : 1
      }
    }
    const pos = i - 1
    ids[l] = ids[pos]!
    ids[pos] = p
    const wp = w ? w[p]! : 1
    if (strict ? mass > need : mass >= need) h = pos
    else if (strict ? mass + wp > need : mass + wp >= need) return pos
    else { need -= mass + wp; l = pos + 1 }
  }
  for (let j = l + 1; j < h; j++) {
    const q = ids[j]!
    let k = j - 1
    while (k >= l && before(key, q, ids[k]!)) { ids[k + 1] = ids[k]!; k-- }
    ids[k + 1] = q
  }
  let acc = 0
  for (let j = l; j < h; j++) {
    acc += w ? w[ids[j]!]! : 1
    if (strict ? acc > need : acc >= need) return j
  }
  return -1
}

function before(key: Float64Array, a: number, b: number): boolean {
  const ka = key[a]!, kb = key[b]!
  return ka < kb || (ka === kb && a < b)
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

/**
 * Constrained decoding (grammar.ts): sets row[i] = -Infinity wherever bit i of an xgrammar token
 * bitmask (32 ids per int32, least significant bit first) is 0, and past the mask's end.
 */
export function applyBitmask(row: Float32Array, mask: Int32Array): void {
  const v = row.length
  const words = Math.min(mask.length, Math.ceil(v / 32))
  for (let w = 0; w < words; w++) {
    const bits = mask[w]!
    if (bits === -1) continue
    const base = w * 32
    const end = Math.min(32, v - base)
    for (let b = 0; b < end; b++) if (((bits >>> b) & 1) === 0) row[base + b] = -Infinity
  }
  for (let i = words * 32; i < v; i++) row[i] = -Infinity
}
