/**
 * Prefix caching: the block store itself (chains, the last prompt token always computed, LRU of
 * leaves within the budget), and the engine with it on: greedy output identical to full
 * recomputation and to the engine with the cache off, for prompts sharing a prefix run one after
 * another and together (a prefill mixing cached and uncached rows), on fp32, fp16-KV, merged,
 * plain-I/O (kvMode full), external-data and 8-bit quantized decoders; eviction under a small
 * budget; a model without position_ids leaves it off.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildDecoder, DECODER_CONFIGS, type DecoderConfig } from '../../src/models/decoder.ts'
import { writeExternalDataModel } from '../../src/models/external-data.ts'
import { quantizeModel } from '../../src/models/quantize.ts'
import { LlmEngine, type LlmEngineOptions } from '../../src/llm/engine.ts'
import { SlotKvCache } from '../../src/llm/kv-cache.ts'
import { PrefixCache } from '../../src/llm/prefix-cache.ts'
import { ByteLevelTokenizer } from '../../src/llm/tokenizer.ts'
import { generateIds, greedyNoCacheOf } from '../helpers/llm.ts'

const tok = new ByteLevelTokenizer()
const tiny = DECODER_CONFIGS.tiny
let dir: string
before(() => { dir = mkdtempSync(join(tmpdir(), 'llm-prefix-')) })
after(() => rmSync(dir, { recursive: true, force: true }))

// ---- the block store

function storeWithRow(blockTokens: number, maxTokens: number, len: number): { pc: PrefixCache; cache: SlotKvCache } {
  const shape = { numLayers: 2, numKvHeads: 2, headDim: 4, dtype: 'float32' as const }
  const cache = new SlotKvCache({ ...shape, maxSlots: 2, maxLen: 64, block: 64 })
  // Row 0, position p, head h, layer l, K: value l*1000 + h*100 + p (V: negative).
  for (let l = 0; l < 2; l++) for (let h = 0; h < 2; h++) for (let p = 0; p < len; p++) for (let i = 0; i < 4; i++) {
    const at = ((0 * 2 + h) * cache.capacity + p) * 4 + i
    cache.keys[l]![at] = l * 1000 + h * 100 + p
    cache.values[l]![at] = -(l * 1000 + h * 100 + p)
  }
  return { pc: new PrefixCache({ ...shape, blockTokens, maxTokens }), cache }
}

test('prefix cache: whole blocks of a chain, never the last prompt token, copied back exactly', () => {
  const { pc, cache } = storeWithRow(4, 64, 10)
  const ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
  assert.equal(pc.lookup(ids).length, 0)
  pc.insert(ids, 10, cache, 0)
  assert.equal(pc.stats().prefixCacheTokens, 8, 'two whole blocks of 4; the partial third is not kept')
  // Same prompt: 9 usable tokens -> 2 blocks. A prompt of exactly 8 tokens may use only 1 block.
  assert.equal(pc.lookup(ids).length, 2)
  assert.equal(pc.lookup(ids.slice(0, 8)).length, 1)
  // Same second block after a different first block is a different chain.
  assert.equal(pc.lookup([9, 9, 9, 9, 5, 6, 7, 8, 1]).length, 0)
  assert.equal(pc.lookup([1, 2, 3, 4, 0, 6, 7, 8, 1]).length, 1)
  // Copy into row 1 and compare with row 0, every layer, head, K and V.
  pc.copyInto(pc.lookup(ids), cache, 1)
  for (let l = 0; l < 2; l++) for (let h = 0; h < 2; h++) for (let p = 0; p < 8; p++) {
    assert.equal(cache.keys[l]![((1 * 2 + h) * cache.capacity + p) * 4 + 3], l * 1000 + h * 100 + p)
    assert.equal(cache.values[l]![((1 * 2 + h) * cache.capacity + p) * 4], -(l * 1000 + h * 100 + p))
  }
  const st = pc.stats()
  assert.equal(st.prefixCacheBytes, 2 * 2 * 2 * 2 * 4 * 4 * 4, 'blocks x layers x K/V x heads x block x hd x 4 bytes')
  assert.ok(st.prefixHitTokens >= 2 * 4 + 4 + 2 * 4, `hit tokens counted (${st.prefixHitTokens})`)
})

test('prefix cache: the budget holds, least recently used leaves go first, roots outlive their leaves', () => {
  const { pc, cache } = storeWithRow(4, 12, 12) // 3 blocks
  const a = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 0]
  pc.insert(a, 12, cache, 0) // a0 a1 a2
  assert.equal(pc.stats().prefixCacheTokens, 12)
  const b = [1, 1, 1, 1, 7, 7, 7, 7, 0] // shares a0
  pc.insert(b, 8, cache, 0) // needs room: a2 (the oldest leaf) goes; a0 and a1 stay
  assert.equal(pc.stats().prefixCacheTokens, 12)
  assert.equal(pc.stats().prefixEvictions, 1)
  assert.equal(pc.lookup(a).length, 2, 'a0 a1 kept, a2 evicted')
  assert.equal(pc.lookup(b).length, 2, 'b1 cached under a0')
  // a was touched before b: a1 is now the oldest leaf.
  pc.insert([5, 5, 5, 5, 0], 4, cache, 0)
  assert.equal(pc.lookup(a).length, 1)
  assert.equal(pc.lookup(b).length, 2)
  assert.equal(pc.stats().prefixCacheTokens, 12)
})

// ---- the engine

const SYSTEM = 'You are a helpful assistant. Answer in one short sentence, and be kind. '.repeat(2) // ~140 bytes
const TURNS = ['What is the capital of France?', 'Name a prime number.', 'Why is the sky blue?']

async function modelFile(name: string, c: DecoderConfig, transform?: (b: Uint8Array) => Uint8Array): Promise<string> {
  const path = join(dir, `${name}.onnx`)
  const bytes = transform ? transform(buildDecoder(c)) : buildDecoder(c)
  await writeFile(path, bytes)
  return path
}

/** Each turn after the shared system prompt, one after another, then all together; token ids of each. */
async function runTurns(engine: LlmEngine, n = 12): Promise<number[][]> {
  const seq: number[][] = []
  for (const t of TURNS) seq.push(await generateIds(engine, SYSTEM + t, { maxNewTokens: n }))
  const together = await Promise.all(TURNS.map((t) => generateIds(engine, SYSTEM + t + ' ', { maxNewTokens: n })))
  return [...seq, ...together]
}

const VARIANTS: Array<{ name: string; path: () => Promise<string>; cfg: DecoderConfig; opts?: LlmEngineOptions; exact: boolean }> = [
  { name: 'fp32', path: () => modelFile('fp32', tiny), cfg: tiny, exact: true },
  { name: 'fp32, kvMode full', path: () => modelFile('fp32', tiny), cfg: tiny, opts: { kvMode: 'full' }, exact: true },
  { name: 'fp16 KV', path: () => modelFile('fp16', { ...tiny, kvDtype: 'float16' }), cfg: { ...tiny, kvDtype: 'float16' }, exact: true },
  { name: 'merged', path: () => modelFile('merged', { ...tiny, merged: true }), cfg: { ...tiny, merged: true }, exact: true },
  {
    name: 'external data',
    path: async () => (mkdirSync(join(dir, 'ext'), { recursive: true }), await writeExternalDataModel(join(dir, 'ext', 'model.onnx'), buildDecoder(tiny), { sizeThreshold: 1024 })).modelPath,
    cfg: tiny, exact: true,
  },
  { name: 'int8 MatMulNBits', path: () => modelFile('int8', tiny, (b) => quantizeModel(b, { format: 'nbits', bits: 8 }).bytes), cfg: tiny, exact: false },
]

for (const v of VARIANTS) {
  test(`engine with the prefix cache: ${v.name}: same greedy tokens as without it and as full recomputation`, async () => {
    const path = await v.path()
    const on = await LlmEngine.load(path, { maxTotalTokens: 256, kvBlock: 16, ...v.opts })
    const off = await LlmEngine.load(path, { maxTotalTokens: 256, kvBlock: 16, ...v.opts, prefixCacheTokens: 0 })
    try {
      assert.ok(on.prefixCache, 'on by default')
      assert.equal(off.prefixCache, null)
      const withCache = await runTurns(on)
      const without = await runTurns(off)
      assert.deepEqual(withCache, without)
      const st = on.stats()
      const sysTokens = tok.encode(SYSTEM).length
      // Turns 2..6 each reuse the system prompt's whole blocks (at least).
      assert.ok(st.prefixHitTokens >= 5 * Math.floor(sysTokens / 16) * 16, `hit tokens ${st.prefixHitTokens} (system prompt ${sysTokens} tokens)`)
      assert.equal(off.stats().prefixHitTokens, 0)
      if (v.exact) {
        // Quantized weights: the cached path equals the uncached one (above); the reference is fp32 here.
        for (const [i, t] of [...TURNS, ...TURNS.map((x) => x + ' ')].entries()) {
          const ref = await greedyNoCacheOf(path, v.cfg, tok.encode(SYSTEM + t), 12)
          assert.deepEqual(withCache[i], ref, `turn ${i}`)
        }
      }
    } finally {
      await on.close()
      await off.close()
    }
  })
}

test('engine with a prefix cache of 2 blocks: evicts, stays within it, and outputs do not change', async () => {
  const path = await modelFile('fp32', tiny)
  const small = await LlmEngine.load(path, { maxTotalTokens: 256, kvBlock: 16, prefixCacheTokens: 32, prefixBlockTokens: 16 })
  const off = await LlmEngine.load(path, { maxTotalTokens: 256, kvBlock: 16, prefixCacheTokens: 0 })
  // Two system prompts taking turns: each one's blocks push the other's out.
  const prompts = [SYSTEM, 'Another system prompt, quite different from the first one. '.repeat(2)].flatMap((s) => TURNS.map((t) => s + t))
  const order = [0, 3, 1, 4, 2, 5]
  try {
    const got: number[][] = []
    const want: number[][] = []
    for (const i of order) {
      got.push(await generateIds(small, prompts[i]!, { maxNewTokens: 6 }))
      want.push(await generateIds(off, prompts[i]!, { maxNewTokens: 6 }))
      assert.ok(small.stats().prefixCacheTokens <= 32, `held ${small.stats().prefixCacheTokens}`)
    }
    assert.deepEqual(got, want)
    const st = small.stats()
    assert.ok(st.prefixEvictions > 0, 'blocks were evicted')
    assert.equal(st.prefixHitTokens, 0, 'each prompt found the other system prompt in the cache')
    // The same system prompt again right after: its 2 kept blocks are hit.
    assert.deepEqual(await generateIds(small, prompts[4]!, { maxNewTokens: 6 }), await generateIds(off, prompts[4]!, { maxNewTokens: 6 }))
    assert.equal(small.stats().prefixHitTokens, 32)
  } finally {
    await small.close()
    await off.close()
  }
})

test('a finished request extends the cached chain with its generated tokens (the next chat turn hits them)', async () => {
  const path = await modelFile('fp32', tiny)
  const engine = await LlmEngine.load(path, { maxTotalTokens: 256, kvBlock: 16 })
  try {
    const first = await generateIds(engine, SYSTEM, { maxNewTokens: 40 })
    const before = engine.stats().prefixHitTokens
    const prompt = [...tok.encode(SYSTEM), ...first, ...tok.encode(' ok')]
    const ids: number[] = []
    await new Promise<void>((resolve, reject) => engine.submit({ ...engine.validate({ inputs: 'x', parameters: { maxNewTokens: 4, ignoreEos: true } }), inputIds: prompt }, (ev) => {
      if (ev.type === 'token') ids.push(ev.id); else if (ev.type === 'done') resolve(); else reject(new Error(ev.message))
    }))
    const hit = engine.stats().prefixHitTokens - before
    assert.ok(hit > Math.floor(tok.encode(SYSTEM).length / 16) * 16, `hit ${hit} tokens: more than the first prompt's blocks`)
    assert.deepEqual(ids, await greedyNoCacheOf(path, tiny, prompt, 4))
  } finally {
    await engine.close()
  }
})

test('a model without position_ids keeps the prefix cache off (its positions follow the past length)', async () => {
  const path = await modelFile('nopos', { ...tiny, positionIds: false })
  const engine = await LlmEngine.load(path, { maxTotalTokens: 256 })
  try {
    assert.equal(engine.prefixCache, null)
    assert.equal((await generateIds(engine, SYSTEM, { maxNewTokens: 4 })).length, 4)
  } finally {
    await engine.close()
  }
})
