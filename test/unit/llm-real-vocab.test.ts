/**
 * A decoder with a real-size vocabulary (src/models/decoder.ts `smol`, here at a tiny shape):
 * tied embeddings, the synthetic byte-level BPE tokenizer.json (src/models/synthetic-tokenizer.ts)
 * whose size matches the logits, served by the engine with the HF tokenizer loaded next to it.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildDecoder, countDecoderParams, DECODER_CONFIGS, writeDecoder } from '../../src/models/decoder.ts'
import type { DecoderConfig } from '../../src/models/decoder.ts'
import { buildSyntheticTokenizer, writeSyntheticTokenizer } from '../../src/models/synthetic-tokenizer.ts'
import { LlmEngine } from '../../src/llm/engine.ts'
import { DetokenizeStream, loadTokenizer } from '../../src/llm/tokenizer.ts'
import { onnx } from '../../src/llm/proto-util.ts'
import { generateIds, greedyNoCacheOf } from '../helpers/llm.ts'

// The smol config's vocabulary and tied embeddings on the tiny shape (the 135M model takes
// seconds to build and hundreds of MB; bench/llm-raw.ts --model smol runs that one).
const cfg: DecoderConfig = { ...DECODER_CONFIGS.tiny, vocabSize: 4096, tieEmbeddings: true, tokenizer: 'synthetic-bpe', seed: 77 }
let dir: string
let modelPath: string

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'llm-real-vocab-'))
  modelPath = join(dir, 'model.onnx')
  await writeDecoder(modelPath, cfg)
  await writeSyntheticTokenizer(dir, cfg.vocabSize)
})
after(() => rmSync(dir, { recursive: true, force: true }))

test('the smol config is SmolLM2-135M\'s shape: 134.5M parameters with tied embeddings', () => {
  const c = DECODER_CONFIGS.smol
  assert.deepEqual([c.numLayers, c.hiddenSize, c.numHeads, c.numKvHeads, c.intermediateSize, c.vocabSize, c.tieEmbeddings], [30, 576, 9, 3, 1536, 49152, true])
  assert.equal(countDecoderParams(c), 134_564_160)
  assert.equal(countDecoderParams({ ...c, tieEmbeddings: false }), 134_564_160 + 49152 * 576)
})

test('tied embeddings: no lm_head weight; the tokenizer is recorded in the metadata', () => {
  const model = onnx.ModelProto.decode(buildDecoder(cfg))
  const names = model.graph!.initializer!.map((t) => t.name ?? '')
  assert.ok(names.some((n) => n.includes('_embed_tokens_')))
  assert.ok(!names.some((n) => n.includes('_lm_head_')))
  assert.equal(model.metadataProps!.find((p) => p.key === 'ms_serve.tokenizer')?.value, 'synthetic-bpe')
})

test('synthetic tokenizer: exactly vocabSize ids, byte-level layout, deterministic, round-trips text', async () => {
  const a = buildSyntheticTokenizer(4096), b = buildSyntheticTokenizer(4096)
  assert.deepEqual(a, b)
  const t = await loadTokenizer(modelPath)
  assert.equal(t.kind, 'hf')
  assert.equal(t.vocabSize, 4096)
  assert.deepEqual([t.padTokenId, t.bosTokenId, t.eosTokenIds], [0, 1, [2]])
  assert.ok(t.isSpecial(2) && !t.isSpecial(3 + 65))
  const text = 'Hello, wide world ✓ of tokens'
  const ids = t.encode(text)
  assert.equal(ids[0], 1, 'BOS first')
  assert.ok(ids.every((id) => id >= 0 && id < 4096))
  assert.equal(t.decode(ids), text)
  assert.equal(t.decode([3 + 65]), 'A', 'byte b is id 3 + b')
  assert.throws(() => buildSyntheticTokenizer(100), /vocabSize must be an integer >= 259/)
})

test('the engine serves it: vocab sizes agree, greedy equals full recomputation, sampling runs', async () => {
  const engine = await LlmEngine.load(modelPath, { maxTotalTokens: 128, kvBlock: 16 })
  try {
    assert.equal(engine.spec.vocabSize, 4096)
    assert.equal(engine.tokenizer.kind, 'hf')
    const prompt = 'The quick brown fox'
    const got = await generateIds(engine, prompt, { maxNewTokens: 12, ignoreEos: true })
    const want = await greedyNoCacheOf(modelPath, cfg, engine.tokenizer.encode(prompt), 12)
    assert.deepEqual(got, want)
    const sampled = await generateIds(engine, prompt, { maxNewTokens: 12, ignoreEos: true, temperature: 0.8, topK: 40, topP: 0.9, repetitionPenalty: 1.2, seed: 3 })
    assert.deepEqual(sampled, await generateIds(engine, prompt, { maxNewTokens: 12, ignoreEos: true, temperature: 0.8, topK: 40, topP: 0.9, repetitionPenalty: 1.2, seed: 3 }))
    assert.ok(sampled.every((id) => id >= 0 && id < 4096))
  } finally { await engine.close() }
})

test('streaming detokenization with the HF byte-level BPE: multi-byte characters split over tokens never show U+FFFD, the pieces join to the text', async () => {
  const t = await loadTokenizer(modelPath)
  const text = 'naïve café — 世界 🎉 ok ✓ Ω'
  const ids = t.encode(text).filter((id) => !t.isSpecial(id))
  // The merges are synthetic: most of these characters are several byte tokens.
  const split = [...text].filter((ch) => new TextEncoder().encode(ch).length > 1 && t.encode(ch).filter((id) => !t.isSpecial(id)).length > 1)
  assert.ok(split.length >= 3, `characters split over several tokens: ${split.join(' ')}`)
  const s = new DetokenizeStream(t)
  const pieces = ids.map((id, i) => s.push(id, i === ids.length - 1))
  for (const p of pieces) assert.ok(!p.includes('\uFFFD'), `piece ${JSON.stringify(p)}`)
  assert.ok(pieces.some((p) => p === ''), 'some tokens end inside a character and emit nothing yet')
  assert.equal(pieces.join(''), text)
})
