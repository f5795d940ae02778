/**
 * Prefix cache of one engine: the K/V of prompt prefixes it has computed, kept in blocks of
 * `blockTokens` positions so that a later request starting with the same tokens copies them into
 * its slot instead of recomputing them (vLLM's automatic prefix caching, on a slot cache).
 *
 * A block is identified by its tokens AND its whole prefix: its key is `<parent id>:<ids>`, so
 * the chain of blocks of a prompt is found by walking from the root, one Map lookup per block,
 * and equal keys always mean equal K/V (positions and everything before them agree).
 *
 *   prompt   | b0 (16 ids) | b1 (16 ids) | b2 (16 ids) | 7 ids |
 *   keys     "0:ids(b0)"  -> block #1;  "1:ids(b1)" -> block #2;  "2:ids(b2)" -> (miss)
 *   hit      2 blocks = 32 positions copied into the row; 23 prompt tokens prefilled
 *
 * At most prompt length - 1 positions come from the cache: the last prompt token is always
 * run, because its logits give the first generated token.
 *
 * Memory is bounded by `maxTokens` (blocks x blockTokens): the least recently used block without
 * cached children goes first (a hit touches its chain from the deepest block up, so a parent is
 * always at least as recent as its children and leaves age out before their roots).
 */
import type { KvArray, SlotKvCache } from './kv-cache.ts'

/** One cached block: K and V of every layer for blockTokens positions, [layer][k|v][KV][B][hd]. */
interface Block {
  readonly id: number
  readonly key: string
  readonly parent: Block | null
  readonly data: KvArray
  children: number
}

/** Counters for /stats and /metrics (cumulative ones since the engine started). */
export interface PrefixCacheStats {
  /** Positions held (blocks x block size) and their bytes. */
  prefixCacheTokens: number
  prefixCacheBytes: number
  /** Prompt tokens looked up, and how many of them came from the cache. */
  prefixLookupTokens: number
  prefixHitTokens: number
  /** Blocks dropped to stay within the budget. */
  prefixEvictions: number
}

/** The stats of an engine without a prefix cache. */
export const NO_PREFIX_CACHE: Readonly<PrefixCacheStats> = Object.freeze({ prefixCacheTokens: 0, prefixCacheBytes: 0, prefixLookupTokens: 0, prefixHitTokens: 0, prefixEvictions: 0 })

export interface PrefixCacheOptions {
  numLayers: number
  numKvHeads: number
  headDim: number
  dtype: 'float32' | 'float16'
  /** Positions per block (default 16). */
  blockTokens: number
  /** Budget in positions; rounded down to whole blocks. */
  maxTokens: number
}

export class PrefixCache {
  readonly blockTokens: number
  private readonly maxBlocks: number
  /** Insertion order is recency order: the first entry is the least recently used. */
  private readonly blocks = new Map<string, Block>()
  private nextId = 1
  private readonly blockElems: number
  private readonly counters = { prefixLookupTokens: 0, prefixHitTokens: 0, prefixEvictions: 0 }

  constructor(private readonly opts: PrefixCacheOptions) {
    this.blockTokens = opts.blockTokens
    this.maxBlocks = Math.floor(opts.maxTokens / opts.blockTokens)
    this.blockElems = opts.numLayers * 2 * opts.numKvHeads * opts.blockTokens * opts.headDim
  }

  private static key(parent: Block | null, ids: readonly number[], from: number, to: number): string {
    let k = `${parent ? parent.id : 0}:`
    for (let i = from; i < to; i++) k += `${ids[i]},`
    return k
  }

  /**
   * The longest cached chain of whole blocks that prefixes `ids`, leaving at least one token to
   * compute; touches it (most recently used). Counts the lookup in the stats.
   */
  lookup(ids: readonly number[]): Block[] {
    const B = this.blockTokens
    const chain: Block[] = []
    const usable = Math.floor((ids.length - 1) / B)
    let parent: Block | null = null
    for (let b = 0; b < usable; b++) {
      const blk = this.blocks.get(PrefixCache.key(parent, ids, b * B, (b + 1) * B))
      if (!blk) break
      chain.push(blk)
      parent = blk
    }
    for (let i = chain.length - 1; i >= 0; i--) this.touch(chain[i]!)
    this.counters.prefixLookupTokens += ids.length
    this.counters.prefixHitTokens += chain.length * B
    return chain
  }

  private touch(b: Block): void {
    this.blocks.delete(b.key)
    this.blocks.set(b.key, b)
  }

  /** Copies the chain's positions into slot row `row` at positions 0.. (all layers, K and V). */
  copyInto(chain: readonly Block[], cache: SlotKvCache, row: number): void {
    for (const [b, blk] of chain.entries()) this.copyBlock(blk.data, cache, row, b, 'into-cache')
  }

  /**
   * Block `b` of slot row `row` <-> `data` ([layer][k|v][KV][B][hd]): each head's B positions are
   * contiguous in both layouts, so a block is 2 x layers x heads copies.
   */
  private copyBlock(data: KvArray, cache: SlotKvCache, row: number, b: number, way: 'into-cache' | 'out-of-cache'): void {
    const { numLayers: L, numKvHeads: kv, headDim: hd, blockTokens: B } = this.opts
    const cap = cache.capacity
    const n = B * hd
    let d = 0
    for (let l = 0; l < L; l++) {
      for (const buf of [cache.keys[l]!, cache.values[l]!]) {
        for (let h = 0; h < kv; h++, d += n) {
          const at = ((row * kv + h) * cap + b * B) * hd
          if (way === 'into-cache') buf.set(data.subarray(d, d + n), at)
          else data.set(buf.subarray(at, at + n), d)
        }
      }
    }
  }

  /**
   * Caches the whole blocks of `ids` (the first `validLen` positions of slot row `row` hold
   * their K/V) that are not cached yet, evicting least recently used blocks beyond the budget.
   */
  insert(ids: readonly number[], validLen: number, cache: SlotKvCache, row: number): void {
    if (this.maxBlocks === 0) return
    const B = this.blockTokens
    const whole = Math.floor(Math.min(validLen, ids.length) / B)
    let parent: Block | null = null
    for (let b = 0; b < whole; b++) {
      const key = PrefixCache.key(parent, ids, b * B, (b + 1) * B)
      let blk = this.blocks.get(key)
      if (blk) this.touch(blk)
      else {
        // Make room first, never evicting this chain's own parent (it is the most recent entry).
        while (this.blocks.size >= this.maxBlocks) if (!this.evictOne(parent)) return
        blk = { id: this.nextId++, key, parent, data: this.copyOut(cache, row, b), children: 0 }
        if (parent) parent.children++
        this.blocks.set(key, blk)
      }
      parent = blk
    }
  }

  private copyOut(cache: SlotKvCache, row: number, b: number): KvArray {
    const data = this.opts.dtype === 'float16' ? new Uint16Array(this.blockElems) : new Float32Array(this.blockElems)
    this.copyBlock(data, cache, row, b, 'out-of-cache')
    return data
  }

  /** Drops the least recently used block without children (other than `keep`); false if none. */
  private evictOne(keep: Block | null): boolean {
    for (const blk of this.blocks.values()) {
      if (blk.children > 0 || blk === keep) continue
      this.blocks.delete(blk.key)
      if (blk.parent) blk.parent.children--
      this.counters.prefixEvictions++
      return true
    }
    return false
  }

  stats(): PrefixCacheStats {
    const tokens = this.blocks.size * this.blockTokens
    return { prefixCacheTokens: tokens, prefixCacheBytes: this.blocks.size * this.blockElems * (this.opts.dtype === 'float16' ? 2 : 4), ...this.counters }
  }
}
