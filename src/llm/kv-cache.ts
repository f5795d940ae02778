/**
 * Preallocated per-slot KV cache that is fed to onnxruntime as `past` without any copy.
 *
 * One flat buffer per layer and per K/V, sized maxSlots x KV x maxLen x hd. The running batch
 * is rows 0..numRows-1; row r uses a region of `capacity` positions (the batch's shared stride),
 * so the first numRows x KV x capacity x hd elements ARE a dense [numRows, KV, capacity, hd]
 * tensor, handed to onnxruntime as a view (inputs are not copied). Layout of one layer, KV=2:
 *
 *   buffer:  | row0 h0 | row0 h1 | row1 h0 | row1 h1 | row2 h0 | ...   (each `capacity` x hd)
 *   row0 h0: [ k0 k1 k2 k3 k4  .  .  . ]        len0 = 5, positions 0..4 valid (left-aligned)
 *   row1 h0: [ k0 k1  .  .  .  .  .  . ]        len1 = 2
 *
 *   decode step, capacity C = 8: past = view [3, KV, 8, hd]; the model appends the step's own
 *   column at index C, so attention_mask is [numRows, C+1]:
 *   row0 mask: 1 1 1 1 1 0 0 0 | 1     position_ids = len0 = 5
 *   row1 mask: 1 1 0 0 0 0 0 0 | 1     position_ids = len1 = 2
 *   the step's new K/V (present_new, [numRows, KV, 1, hd]) is then written at position len_r.
 *
 * Why this works: rotary/learned positions are baked into K when it is computed from
 * `position_ids`, so where a key sits in the buffer does not matter; the mask hides the unused
 * tail (values there are stale but finite, and get weight exactly 0 after softmax of -1e9).
 * Joining writes only the new row; leaving moves at most the last row into the hole.
 * `capacity` grows in `block` steps when some row would overflow, and shrinks with hysteresis;
 * that relayout copies the valid prefix of every row, which is at most what onnxruntime's own
 * Concat(past, new) copies on every step, and happens at most once per `block` tokens.
 */
import type { KvDtype } from './model-spec.ts'

/** Float32 data, or float16 data as raw Uint16 bits. */
export type KvArray = Float32Array | Uint16Array

/** Geometry of a slot cache. */
export interface KvCacheShape {
  numLayers: number
  numKvHeads: number
  headDim: number
  dtype: KvDtype
  maxSlots: number
  maxLen: number
  /** Capacity granularity in positions. */
  block: number
  /**
   * Keep capacity == max(len) exactly (block is ignored). For models without `position_ids`,
   * which derive positions from the past length: exact for the longest row, the others drift.
   */
  exact?: boolean
}

/** See the file comment for the layout. Row lengths are owned by the caller (the engine). */
export class SlotKvCache {
  readonly keys: KvArray[] = []
  readonly values: KvArray[] = []
  /** Positions per row in the current layout (the `past` length fed to the model). */
  capacity: number
  /** Number of relayouts performed (for stats/tests). */
  numRelayouts = 0
  private readonly rowHeadElems: number

  constructor(readonly shape: KvCacheShape) {
    const { numLayers, numKvHeads, headDim, maxSlots, maxLen } = shape
    const size = maxSlots * numKvHeads * maxLen * headDim
    for (let l = 0; l < numLayers; l++) {
      this.keys.push(shape.dtype === 'float16' ? new Uint16Array(size) : new Float32Array(size))
      this.values.push(shape.dtype === 'float16' ? new Uint16Array(size) : new Float32Array(size))
    }
    this.capacity = shape.exact ? 0 : Math.min(shape.block, maxLen)
    this.rowHeadElems = numKvHeads * headDim
  }

  /** Capacity so every row can take `headroom` more tokens: roundUp(max(len)+headroom, block). */
  targetCapacity(lens: ArrayLike<number>, numRows: number, headroom = 1): number {
    let maxLen = 0
    for (let r = 0; r < numRows; r++) maxLen = Math.max(maxLen, lens[r]!)
    if (this.shape.exact) return maxLen + headroom
    const b = this.shape.block
    // Clamp to maxLen: a partial last block is fine as long as it still fits max(len)+headroom.
    return Math.max(maxLen + headroom, Math.min(this.shape.maxLen, Math.max(b, Math.ceil((maxLen + headroom) / b) * b)))
  }

  /**
   * Ensures capacity fits max(len)+headroom for rows 0..numRows-1. Grows when needed; shrinks
   * only when two or more blocks are free (hysteresis). Returns true if a relayout copied data.
   */
  fit(lens: ArrayLike<number>, numRows: number, headroom = 1): boolean {
    const target = this.targetCapacity(lens, numRows, headroom)
    if (target > this.shape.maxLen) throw new Error(`kv cache: row needs ${target} positions > maxLen ${this.shape.maxLen}`)
    const shrink = this.shape.exact ? target < this.capacity : this.capacity - target >= 2 * this.shape.block
    if (target > this.capacity || shrink) {
      this.relayout(target, lens, numRows)
      return true
    }
    return false
  }

  /** Moves every row's valid prefix from stride `capacity` to stride `next`, in place. */
  private relayout(next: number, lens: ArrayLike<number>, numRows: number): void {
    const { numKvHeads: kv, headDim: hd } = this.shape
    const prev = this.capacity
    const bufs = [...this.keys, ...this.values]
    if (next > prev) {
      // Growing moves data to higher offsets: walk backwards so no source is overwritten early.
      for (const buf of bufs) {
        for (let r = numRows - 1; r >= 0; r--) {
          const n = lens[r]! * hd
          for (let h = kv - 1; h >= 0; h--) {
            const src = (r * kv + h) * prev * hd
            const dst = (r * kv + h) * next * hd
            if (n > 0 && src !== dst) buf.copyWithin(dst, src, src + n)
          }
        }
      }
    } else {
      for (const buf of bufs) {
        for (let r = 0; r < numRows; r++) {
          const n = lens[r]! * hd
          for (let h = 0; h < kv; h++) {
            const src = (r * kv + h) * prev * hd
            const dst = (r * kv + h) * next * hd
            if (n > 0 && src !== dst) buf.copyWithin(dst, src, src + n)
          }
        }
      }
    }
    this.capacity = next
    this.numRelayouts++
  }

  /** Dense [n, KV, capacity, hd] views of rows first..first+n-1 of each layer's K and V (no copy; decode's past is rows 0..). */
  rowViews(first: number, n: number): { keys: KvArray[]; values: KvArray[] } {
    const per = this.rowHeadElems * this.capacity
    return { keys: this.keys.map((b) => b.subarray(first * per, (first + n) * per)), values: this.values.map((b) => b.subarray(first * per, (first + n) * per)) }
  }

  /**
   * Copies `count` positions of row `srcRow` of a present-like tensor [B, KV, srcLen, hd],
   * starting at `srcStart`, into cache row `row` at positions dstStart.. (all layers, K and V).
   */
  write(row: number, dstStart: number, presentKeys: KvArray[], presentValues: KvArray[], srcRow: number, srcLen: number, srcStart: number, count: number): void {
    const { numKvHeads: kv, headDim: hd } = this.shape
    const cap = this.capacity
    if (dstStart + count > cap) throw new Error(`kv cache: write of ${count} at ${dstStart} exceeds capacity ${cap}`)
    const n = count * hd
    for (let l = 0; l < this.keys.length; l++) {
      const pairs: Array<[KvArray, KvArray]> = [[this.keys[l]!, presentKeys[l]!], [this.values[l]!, presentValues[l]!]]
      for (const [dst, src] of pairs) {
        for (let h = 0; h < kv; h++) {
          const s = ((srcRow * kv + h) * srcLen + srcStart) * hd
          const d = ((row * kv + h) * cap + dstStart) * hd
          if (n === hd) { for (let i = 0; i < hd; i++) dst[d + i] = src[s + i]! } // decode: 1 position, skip subarray allocation
          else dst.set(src.subarray(s, s + n), d)
        }
      }
    }
  }

  /** Copies row `from`'s first `len` positions to row `to` (compaction after a leave). */
  moveRow(from: number, to: number, len: number): void {
    if (from === to || len === 0) return
    const { numKvHeads: kv, headDim: hd } = this.shape
    const cap = this.capacity
    for (const buf of [...this.keys, ...this.values]) {
      for (let h = 0; h < kv; h++) {
        const src = (from * kv + h) * cap * hd
        buf.copyWithin((to * kv + h) * cap * hd, src, src + len * hd)
      }
    }
  }

  /** Bytes held by the buffers. */
  get byteSize(): number {
    return [...this.keys, ...this.values].reduce((a, b) => a + b.byteLength, 0)
  }
}
