/**
 * A decoder in pipeline stages (declareLlm `stages`): the engine splits the rewritten graph at
 * layer boundaries at load; greedy tokens equal the one-session engine and full recomputation,
 * alone and with requests joining a running batch; each stage is fed only its layers' KV.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildDecoder, DECODER_CONFIGS } from '../../src/models/decoder.ts'
import { LlmEngine } from '../../src/llm/engine.ts'
import { ByteLevelTokenizer } from '../../src/llm/tokenizer.ts'
import { StagedSession } from '../../src/runtime/staged-session.ts'
import { generateIds, greedyNoCacheOf } from '../helpers/llm.ts'

const c4 = { ...DECODER_CONFIGS.tiny, numLayers: 4 }
let dir: string
let path: string
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'llm-staged-'))
  path = join(dir, 'model.onnx')
  await writeFile(path, buildDecoder(c4))
})
after(() => rmSync(dir, { recursive: true, force: true }))

test('2 and 4 stages: greedy tokens equal one session and full recomputation; each stage holds its layers', async () => {
  const tok = new ByteLevelTokenizer()
  const one = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16 })
  try {
    const prompts = ['Hello there', 'A longer prompt, with punctuation!']
    const want = await Promise.all(prompts.map((p) => generateIds(one, p, { maxNewTokens: 12 })))
    // Full recomputation (no KV cache at all) agrees with the one-session engine.
    assert.deepEqual(await greedyNoCacheOf(buildDecoder(c4), c4, tok.encode(prompts[0]!, true), 12), want[0])
    for (const stages of [2, 4]) {
      const staged = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16, stages })
      try {
        const session = (staged as unknown as { runner: { session: unknown } }).runner.session
        assert.ok(session instanceof StagedSession)
        assert.equal(session.stages.length, stages)
        // Layer l's past goes to exactly one stage, the one that outputs its new positions.
        for (let l = 0; l < 4; l++) {
          const owners: { inputs: string[]; outputs: string[] }[] = session.stages.filter((s) => s.inputs.includes(`past_key_values.${l}.key`))
          assert.equal(owners.length, 1)
          assert.ok(owners[0]!.outputs.includes(`present_new.${l}.key`), JSON.stringify(owners[0]))
        }
        // Alone, then together (continuous batching over the stages).
        assert.deepEqual(await generateIds(staged, prompts[0]!, { maxNewTokens: 12 }), want[0])
        assert.deepEqual(await Promise.all(prompts.map((p) => generateIds(staged, p, { maxNewTokens: 12 }))), want)
      } finally {
        await staged.close()
      }
    }
  } finally {
    await one.close()
  }
})

test('more stages than layers is a config error naming the counts', async () => {
  await assert.rejects(LlmEngine.load(path, { stages: 5 }), /declareLlm stages 5: the decoder cannot be split: the decoder has 4 layers, fewer than the 5 stages/)
})
