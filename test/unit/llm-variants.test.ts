/**
 * Exports that differ from our default decoder, as users' optimum exports do: a float16 KV cache
 * (past/present as float16, logits float32) and no `position_ids` input (older GPT-2 style).
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import ort from 'onnxruntime-node'
import { buildDecoder, DECODER_CONFIGS, type DecoderConfig } from '../../src/models/decoder.ts'
import { LlmEngine } from '../../src/llm/engine.ts'
import { describeModel } from '../../src/llm/model-spec.ts'
import { ByteLevelTokenizer } from '../../src/llm/tokenizer.ts'
import { generateIds, greedyNoCacheOf as greedyNoCache } from '../helpers/llm.ts'

const tok = new ByteLevelTokenizer()
let dir: string
before(() => { dir = mkdtempSync(join(tmpdir(), 'llm-variants-')) })
after(() => rmSync(dir, { recursive: true, force: true }))

async function write(name: string, c: DecoderConfig): Promise<string> {
  const path = join(dir, `${name}.onnx`)
  await writeFile(path, buildDecoder(c))
  return path
}

const greedy = (engine: LlmEngine, inputs: string, n: number) => generateIds(engine, inputs, { maxNewTokens: n })

test('float16 KV export: discovered as float16; the cache path matches the plain optimum loop and full recompute', async () => {
  const c: DecoderConfig = { ...DECODER_CONFIGS.tiny, kvDtype: 'float16' }
  const path = await write('fp16', c)
  const s = await ort.InferenceSession.create(path)
  assert.equal(describeModel(s).kvDtype, 'float16')
  await s.release()
  const engineNew = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16 })
  const engineFull = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16, kvMode: 'full' })
  const prompts = ['Hello world, this is fp16', 'Hi', 'The quick brown fox']
  // Batched: all three run together in each engine.
  const [a, b] = await Promise.all([Promise.all(prompts.map((p) => greedy(engineNew, p, 24))), Promise.all(prompts.map((p) => greedy(engineFull, p, 24)))])
  assert.deepEqual(a, b, 'rewritten graph + slot cache == plain optimum I/O on the fp16 export')
  const ref = await greedyNoCache(path, c, tok.encode(prompts[0]!), 24)
  // fp16 rounding of the cache can in principle flip a near-tie; the tiny model's margins are wide.
  assert.deepEqual(a[0], ref, 'fp16 cache path == full recomputation')
  await engineNew.close()
  await engineFull.close()
})

test('export without position_ids: exact at batch 1 against full recomputation', async () => {
  const c: DecoderConfig = { ...DECODER_CONFIGS.tiny, positionIds: false, seed: 77 }
  const path = await write('nopos', c)
  const s = await ort.InferenceSession.create(path)
  assert.equal(describeModel(s).hasPositionIds, false)
  await s.release()
  const engine = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16 })
  for (const p of ['Hello world without positions', 'ab']) {
    assert.deepEqual(await greedy(engine, p, 20), await greedyNoCache(path, c, tok.encode(p), 20), `prompt ${JSON.stringify(p)}`)
  }
  await engine.close()
})
