/**
 * Drives one decoder session over the slot KV cache: builds the prefill/decode feeds (left
 * padding, masks, positions), runs onnxruntime and writes the step's new K/V into the cache.
 * Prefill runs only the joining rows (past = empty) and copies each row's prompt K/V into its
 * slot; decode runs every row with `past` = a zero-copy view of the cache (see kv-cache.ts).
 */
import ort from 'onnxruntime-node'
import { f16BitsToF32 } from '../tensor.ts'
import { SlotKvCache } from './kv-cache.ts'
import type { KvArray } from './kv-cache.ts'
import { LOGIT_STATS } from './model-spec.ts'
import type { ModelSpec } from './model-spec.ts'

/**
 * Last-position logits of each row, row-major [rows, vocab]; with the rewrite's logit statistics
 * (model-spec.ts LOGIT_STATS) also each row's largest logit and its most likely token's
 * log-probability at the row's temperature (as fed in `invTemp`).
 */
export interface StepLogits { data: Float32Array; vocabSize: number; stats?: { max: Float32Array; topLogprob: Float32Array } }

/** Prompt positions served from the prefix cache: per prompt, how many, and how to copy them into a slot row. */
export interface CachedPrefixes {
  lens: readonly number[]
  fill: (prompt: number, row: number) => void
}

/** Owns the session feeds; the engine owns row bookkeeping and `lens`. */
export class DecoderRunner {
  private readonly emptyPast: KvArray
  private readonly fetches: string[]
  /** Merged (If) decoders' `use_cache_branch` feeds: [false] for prefill, [true] for decode. */
  private readonly useCacheBranch: { prefill: ort.Tensor; decode: ort.Tensor } | null

  constructor(readonly session: ort.InferenceSession, readonly spec: ModelSpec, readonly cache: SlotKvCache, private readonly padTokenId: number) {
    this.emptyPast = spec.kvDtype === 'float16' ? new Uint16Array(0) : new Float32Array(0)
    this.fetches = [spec.logitsName, ...spec.presentKeyNames, ...spec.presentValueNames]
    if (spec.hasLogitStats) this.fetches.push(LOGIT_STATS.max, LOGIT_STATS.topLogprob)
    this.useCacheBranch = spec.hasUseCacheBranch
      ? { prefill: new ort.Tensor('bool', Uint8Array.of(0), [1]), decode: new ort.Tensor('bool', Uint8Array.of(1), [1]) }
      : null
  }

  private kvTensor(data: KvArray, rows: number, len: number): ort.Tensor {
    return new ort.Tensor(this.spec.kvDtype, data, [rows, this.spec.numKvHeads, len, this.spec.headDim])
  }

  /** The statistics input: 1/temperature per row, fed as given (all 1 when `invTemp` is not given). */
  private feedInvTemperature(feeds: Record<string, ort.Tensor>, rows: number, invTemp: Float32Array | undefined): void {
    if (!this.spec.hasLogitStats) return
    feeds[LOGIT_STATS.invTemperature] = new ort.Tensor('float32', invTemp ?? new Float32Array(rows).fill(1), [rows, 1, 1])
  }

  private lastLogits(out: ort.InferenceSession.OnnxValueMapType, rows: number): StepLogits {
    const t = out[this.spec.logitsName] as ort.Tensor | undefined
    // A decoder pipeline stage before the last (stage-decoder-main.ts) makes no logits.
    if (!t) return { data: new Float32Array(0), vocabSize: 0 }
    const [, seq, vocab] = t.dims as [number, number, number]
    const src = t.data as Float32Array | Uint16Array
    // Computed over the last position (a rewritten graph's logits are [rows, 1, vocab]).
    const stats = this.spec.hasLogitStats ? { max: out[LOGIT_STATS.max]!.data as Float32Array, topLogprob: out[LOGIT_STATS.topLogprob]!.data as Float32Array } : undefined
    // One position per row (every step of a rewritten graph, decode steps of a plain one):
    // float32 logits already are [rows, vocab], hand them over without a copy.
    if (seq === 1 && src instanceof Float32Array) return { data: src, vocabSize: vocab, stats }
    const data = new Float32Array(rows * vocab)
    for (let r = 0; r < rows; r++) {
      const off = (r * seq + seq - 1) * vocab
      if (src instanceof Float32Array) data.set(src.subarray(off, off + vocab), r * vocab)
      else for (let i = 0; i < vocab; i++) data[r * vocab + i] = f16BitsToF32(src[off + i]!)
    }
    return { data, vocabSize: vocab, stats }
  }

  /** Slot rows first..first+n-1 as every layer's `past` (views at the current capacity, no copy). */
  private feedPast(feeds: Record<string, ort.Tensor>, first: number, n: number): void {
    const views = this.cache.rowViews(first, n)
    const C = this.cache.capacity
    for (let l = 0; l < this.spec.numLayers; l++) {
      feeds[this.spec.pastKeyNames[l]!] = this.kvTensor(views.keys[l]!, n, C)
      feeds[this.spec.pastValueNames[l]!] = this.kvTensor(views.values[l]!, n, C)
    }
  }

  private async run(feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession.OnnxValueMapType> {
    return this.session.run(feeds, this.fetches)
  }

  /**
   * Prefills `prompts` into rows firstRow.. (left-padded to the longest). Sets lens for those
   * rows, grows the cache if needed (existing rows 0..firstRow-1 keep their data) and copies
   * each prompt's K/V into its slot at positions 0..len-1.
   */
  async prefill(prompts: readonly (readonly number[])[], firstRow: number, lens: Int32Array, cached?: CachedPrefixes, invTemp?: Float32Array): Promise<StepLogits> {
    if (cached && cached.lens.some((p) => p > 0)) return this.prefillAfter(prompts, firstRow, lens, cached, invTemp)
    const n = prompts.length
    const L = prompts.reduce((m, p) => Math.max(m, p.length), 0)
    const ids = new BigInt64Array(n * L)
    const mask = new BigInt64Array(n * L)
    const pos = new BigInt64Array(n * L).fill(1n) // pads get position 1, as TGI/transformers.js
    for (let j = 0; j < n; j++) {
      const p = prompts[j]!
      const pad = L - p.length
      for (let i = 0; i < L; i++) {
        const k = j * L + i
        if (i < pad) { ids[k] = BigInt(this.padTokenId); continue }
        ids[k] = BigInt(p[i - pad]!)
        mask[k] = 1n
        pos[k] = BigInt(i - pad)
      }
    }
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [n, L]),
      attention_mask: new ort.Tensor('int64', mask, [n, L]),
    }
    if (this.spec.hasPositionIds) feeds.position_ids = new ort.Tensor('int64', pos, [n, L])
    // Merged (If) decoders: prefill takes the no-past branch, which never reads the (empty) pasts
    // and expects attention_mask to span just the prompt, as fed here. The with-past branch with
    // an empty past computes the same thing; [false] is what optimum feeds, so use that.
    if (this.useCacheBranch) feeds.use_cache_branch = this.useCacheBranch.prefill
    this.feedInvTemperature(feeds, n, invTemp)
    for (let l = 0; l < this.spec.numLayers; l++) {
      feeds[this.spec.pastKeyNames[l]!] = this.kvTensor(this.emptyPast, n, 0)
      feeds[this.spec.pastValueNames[l]!] = this.kvTensor(this.emptyPast, n, 0)
    }
    const out = await this.run(feeds)
    for (let j = 0; j < n; j++) lens[firstRow + j] = prompts[j]!.length
    this.cache.fit(lens, firstRow + n, this.cache.shape.exact ? 0 : 1)
    const pk = this.spec.presentKeyNames.map((k) => out[k]!.data as KvArray)
    const pv = this.spec.presentValueNames.map((k) => out[k]!.data as KvArray)
    const srcLen = (out[this.spec.presentKeyNames[0]!]!.dims[2]) as number // L in both modes (past was 0)
    for (let j = 0; j < n; j++) {
      const len = prompts[j]!.length
      this.cache.write(firstRow + j, 0, pk, pv, j, srcLen, srcLen - len, len)
    }
    return this.lastLogits(out, n)
  }

  /**
   * Prefill of prompts whose first `cached.lens[j]` positions come from the prefix cache: the
   * rows' capacity is fitted to the whole prompts, `cached.fill` copies each row's cached
   * positions into its slot, and only the rest of each prompt runs, with the slot rows
   * firstRow.. as `past` (a view, as in decode: cached positions unmasked, the rest of the
   * capacity masked) and the suffixes left-padded to the longest. Needs position_ids.
   */
  private async prefillAfter(prompts: readonly (readonly number[])[], firstRow: number, lens: Int32Array, cached: CachedPrefixes, invTemp: Float32Array | undefined): Promise<StepLogits> {
    const n = prompts.length
    for (let j = 0; j < n; j++) lens[firstRow + j] = prompts[j]!.length
    this.cache.fit(lens, firstRow + n, 1)
    for (let j = 0; j < n; j++) if (cached.lens[j]! > 0) cached.fill(j, firstRow + j)
    const C = this.cache.capacity
    let S = 0
    for (let j = 0; j < n; j++) S = Math.max(S, prompts[j]!.length - cached.lens[j]!)
    const T = C + S
    const ids = new BigInt64Array(n * S)
    const pos = new BigInt64Array(n * S).fill(1n)
    const mask = new BigInt64Array(n * T)
    for (let j = 0; j < n; j++) {
      const p = prompts[j]!
      const P = cached.lens[j]!
      const pad = S - (p.length - P)
      mask.fill(1n, j * T, j * T + P)
      for (let i = 0; i < S; i++) {
        const k = j * S + i
        if (i < pad) { ids[k] = BigInt(this.padTokenId); continue }
        ids[k] = BigInt(p[P + i - pad]!)
        pos[k] = BigInt(P + i - pad)
        mask[j * T + C + i] = 1n
      }
    }
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [n, S]),
      attention_mask: new ort.Tensor('int64', mask, [n, T]),
      position_ids: new ort.Tensor('int64', pos, [n, S]),
    }
    if (this.useCacheBranch) feeds.use_cache_branch = this.useCacheBranch.decode
    this.feedInvTemperature(feeds, n, invTemp)
    this.feedPast(feeds, firstRow, n)
    const out = await this.run(feeds)
    const pk = this.spec.presentKeyNames.map((k) => out[k]!.data as KvArray)
    const pv = this.spec.presentValueNames.map((k) => out[k]!.data as KvArray)
    const srcLen = out[this.spec.presentKeyNames[0]!]!.dims[2] as number // S ('new') or C+S ('full')
    for (let j = 0; j < n; j++) {
      const P = cached.lens[j]!
      const count = prompts[j]!.length - P
      this.cache.write(firstRow + j, P, pk, pv, j, srcLen, srcLen - count, count)
    }
    return this.lastLogits(out, n)
  }

  /**
   * One decode step for rows 0..numRows-1 with input `tokens[r]` at position `lens[r]`.
   * Writes the new K/V at position lens[r] and increments lens[r].
   */
  async decode(tokens: ArrayLike<number>, numRows: number, lens: Int32Array, invTemp?: Float32Array): Promise<StepLogits> {
    const exact = this.cache.shape.exact === true
    this.cache.fit(lens, numRows, exact ? 0 : 1)
    const C = this.cache.capacity
    const T = C + 1
    const ids = new BigInt64Array(numRows)
    const pos = new BigInt64Array(numRows)
    const mask = new BigInt64Array(numRows * T)
    for (let r = 0; r < numRows; r++) {
      ids[r] = BigInt(tokens[r]!)
      const len = lens[r]!
      pos[r] = BigInt(len)
      mask.fill(1n, r * T, r * T + len)
      mask[r * T + C] = 1n
    }
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [numRows, 1]),
      attention_mask: new ort.Tensor('int64', mask, [numRows, T]),
    }
    if (this.spec.hasPositionIds) feeds.position_ids = new ort.Tensor('int64', pos, [numRows, 1])
    // Merged decoders: decode must take the with-past branch (the no-past one would drop the cache).
    if (this.useCacheBranch) feeds.use_cache_branch = this.useCacheBranch.decode
    this.feedInvTemperature(feeds, numRows, invTemp)
    this.feedPast(feeds, 0, numRows)
    const out = await this.run(feeds)
    // Exact mode (no position_ids): past had to equal max(len); make room for the new column now.
    if (exact) this.cache.fit(lens, numRows, 1)
    const pk = this.spec.presentKeyNames.map((k) => out[k]!.data as KvArray)
    const pv = this.spec.presentValueNames.map((k) => out[k]!.data as KvArray)
    const srcLen = out[this.spec.presentKeyNames[0]!]!.dims[2] as number // 1 ('new') or C+1 ('full')
    for (let r = 0; r < numRows; r++) {
      this.cache.write(r, lens[r]!, pk, pv, r, srcLen, srcLen - 1, 1)
      lens[r] = lens[r]! + 1
    }
    return this.lastLogits(out, numRows)
  }
}
