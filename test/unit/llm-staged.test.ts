/**
 * A decoder in pipeline stages (declareLlm `stages`): the engine splits the rewritten graph at
 * layer boundaries at load and runs each stage in a worker holding its layers' KV, with lanes
 * (micro-batches) whose steps overlap across the stages; greedy tokens equal the one-session
 * engine and full recomputation, alone, batched, with rows leaving and cancelled.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildDecoder, DECODER_CONFIGS } from '../../src/models/decoder.ts'
import { writeExternalDataModel } from '../../src/models/external-data.ts'
import { LlmEngine } from '../../src/llm/engine.ts'
import { splitModel } from '../../src/models/split.ts'
import { ortTyper } from '../../src/models/split-check.ts'
import { ByteLevelTokenizer } from '../../src/llm/tokenizer.ts'
import { StagedSession } from '../../src/runtime/staged-session.ts'
import { overlapMs } from '../../src/llm/pipeline.ts'
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

/** Every prompt at once through `engine` (greedy); `n`: new tokens, one count or one per prompt. */
const allIds = (engine: LlmEngine, prompts: string[], n: number | number[]) =>
  Promise.all(prompts.map((q, i) => generateIds(engine, q, { maxNewTokens: typeof n === 'number' ? n : n[i]! })))

test('2 and 4 stages on stage workers: greedy tokens equal one session and full recomputation; each stage holds its layers', async () => {
  const tok = new ByteLevelTokenizer()
  const one = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16 })
  try {
    const prompts = ['Hello there', 'A longer prompt, with punctuation!', 'x', 'Pipelines overlap their stages']
    const lengths = [12, 20, 7, 15]
    const want = await allIds(one, prompts, lengths)
    // Full recomputation (no KV cache at all) agrees with the one-session engine.
    assert.deepEqual(await greedyNoCacheOf(buildDecoder(c4), c4, tok.encode(prompts[0]!, true), 12), want[0])
    for (const stages of [2, 4]) {
      const staged = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16, stages })
      try {
        const p = staged.pipeline!
        assert.ok(p, 'a staged engine runs its stages on workers by default')
        assert.equal(p.stages.length, stages)
        // Layer l's past goes to exactly one stage, the one that outputs its new positions.
        for (let l = 0; l < 4; l++) {
          const owners = p.stages.filter((s) => s.inputs.includes(`past_key_values.${l}.key`))
          assert.equal(owners.length, 1)
          assert.ok(owners[0]!.outputs.includes(`present_new.${l}.key`), JSON.stringify(owners[0]))
        }
        // Alone, then together: rows of different lengths join and leave each lane (moveRow in every stage).
        assert.deepEqual(await generateIds(staged, prompts[0]!, { maxNewTokens: 12 }), want[0])
        assert.deepEqual(await allIds(staged, prompts, lengths), want)
        const st = staged.stats()
        assert.equal(st.lanes, stages)
        for (let k = 1; k <= stages; k++) assert.ok(st[`stage${k}BusyMs`] > 0, `stage ${k} ran`)
        // The same KV memory as one session: each stage holds its layers for every lane's rows.
        assert.equal(st.kvBytes, one.stats().kvBytes)
      } finally {
        await staged.close()
      }
    }
  } finally {
    await one.close()
  }
})

test('lanes overlap across the stages; one lane runs them one at a time', async () => {
  // Wider than the tiny decoder, so a stage's run is long against a thread hop.
  const wide = join(dir, 'wide.onnx')
  await writeFile(wide, buildDecoder({ ...c4, hiddenSize: 256, intermediateSize: 768 }))
  const one = await LlmEngine.load(wide, { maxTotalTokens: 128, kvBlock: 16 })
  const prompts = ['one', 'two two', 'three three three', 'four four four four']
  try {
    const want = await allIds(one, prompts, 40)
    for (const microBatches of [1, 2]) {
      const staged = await LlmEngine.load(wide, { maxTotalTokens: 128, kvBlock: 16, stages: 2, microBatches, stageDevices: [{ intraOpNumThreads: 1 }, { intraOpNumThreads: 1 }] })
      try {
        assert.deepEqual(await allIds(staged, prompts, 40), want)
        const p = staged.pipeline!
        const busy = p.busyMs.reduce((a, b) => a + b, 0)
        const overlap = overlapMs(p.intervals)
        // From the workers' own clocks: with two lanes, one lane's step runs in stage 1 while the
        // other's is in stage 2; with one lane a step enters stage 2 only after leaving stage 1.
        if (microBatches === 2) assert.ok(overlap > 0, `two lanes overlapped (${overlap.toFixed(2)} ms of ${busy.toFixed(1)} ms busy)`)
        else assert.ok(overlap < 0.01 * busy, `one lane: ${overlap.toFixed(3)} ms overlap of ${busy.toFixed(1)} ms busy`)
        assert.equal(staged.stats().lanes, microBatches)
      } finally {
        await staged.close()
      }
    }
  } finally {
    await one.close()
  }
})

test('a pipelined engine: a cancelled request leaves its lane, the others finish unchanged; close fails what is in flight', async () => {
  const one = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16 })
  const staged = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16, stages: 2 })
  try {
    const prompts = ['keep me', 'cancel me', 'keep me too', 'and me']
    const want = await allIds(one, prompts, 20)
    let cancelId = ''
    const ends: Promise<number[] | string>[] = prompts.map((q, i) => new Promise((resolve) => {
      const ids: number[] = []
      const id = staged.submit(staged.validate({ inputs: q, parameters: { ignoreEos: true, maxNewTokens: 20 } }), (ev) => {
        if (ev.type === 'token') { ids.push(ev.id); if (i === 1 && ids.length === 3) staged.cancel(cancelId) } else if (ev.type === 'done') resolve(ids)
        else resolve(ev.code)
      })
      if (i === 1) cancelId = id
    }))
    const got = await Promise.all(ends)
    assert.equal(got[1], 'CANCELLED')
    for (const i of [0, 2, 3]) assert.deepEqual(got[i], want[i])
    assert.equal(staged.cancel('no-such-request'), false)
    // In flight at close: failed, not left hanging.
    const pending = new Promise<string>((resolve) => {
      staged.submit(staged.validate({ inputs: 'long', parameters: { ignoreEos: true, maxNewTokens: 100 } }), (ev) => { if (ev.type !== 'token') resolve(ev.type === 'error' ? ev.code : 'done') })
    })
    await new Promise((r) => setTimeout(r, 20))
    await staged.close()
    assert.equal(await pending, 'CANCELLED')
  } finally {
    await staged.close()
    await one.close()
  }
})

test('stages inline (on the engine thread, in turn) still equal one session', async () => {
  const one = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16 })
  const inline = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16, stages: 2, stageThreads: 'inline' })
  try {
    assert.equal(inline.pipeline, null)
    const session = (inline as unknown as { runner: { session: unknown } }).runner.session
    assert.ok(session instanceof StagedSession)
    const prompts = ['Hello there', 'A longer prompt']
    assert.deepEqual(await allIds(inline, prompts, 10), await allIds(one, prompts, 10))
  } finally {
    await inline.close()
    await one.close()
  }
})

test('an external-data decoder in stages: the stage workers read the weights from the model folder', async () => {
  const extDir = join(dir, 'ext')
  mkdirSync(extDir)
  const extPath = join(extDir, 'model.onnx')
  await writeExternalDataModel(extPath, buildDecoder(c4))
  const one = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16 })
  const staged = await LlmEngine.load(extPath, { maxTotalTokens: 128, kvBlock: 16, stages: 2 })
  try {
    assert.ok(staged.pipeline)
    const prompts = ['external weights', 'in two stages']
    assert.deepEqual(await allIds(staged, prompts, 10), await allIds(one, prompts, 10))
  } finally {
    await staged.close()
    await one.close()
  }
})

test('more stages than layers is a config error naming the counts', async () => {
  await assert.rejects(LlmEngine.load(path, { stages: 5 }), /declareLlm stages 5: the decoder cannot be split: the decoder has 4 layers, fewer than the 5 stages/)
})

test('a decoder given as stage files (split at 1 | 3 layers) is joined and split again: greedy tokens equal one session; 1 stage serves it whole', async () => {
  const presplit = join(dir, 'presplit')
  mkdirSync(presplit, { recursive: true })
  // Uneven stages (1 layer + 3 layers), as a user's own split might be.
  const r = await splitModel(buildDecoder(c4), { stages: 4 }, ortTyper)
  const { mergeStages } = await import('../../src/models/merge.ts')
  const last3 = mergeStages(r.stages.slice(1).map((st, k) => ({ name: `s${k + 2}`, bytes: st.bytes })))
  const files = [join(presplit, 'stage1.onnx'), join(presplit, 'stage2.onnx')]
  await writeFile(files[0]!, r.stages[0]!.bytes)
  await writeFile(files[1]!, last3)
  const one = await LlmEngine.load(path, { maxTotalTokens: 128, kvBlock: 16 })
  const prompts = ['Hello there', 'Stage files, joined']
  try {
    const want = await allIds(one, prompts, 10)
    for (const stages of [undefined, 1]) {
      const e = await LlmEngine.load(files[0]!, { maxTotalTokens: 128, kvBlock: 16, stageFiles: files, ...(stages ? { stages } : {}) })
      try {
        assert.equal(e.pipeline?.stages.length ?? 1, stages ?? 2)
        assert.deepEqual(await allIds(e, prompts, 10), want)
      } finally { await e.close() }
    }
    await assert.rejects(LlmEngine.load(files[1]!, { stageFiles: [files[1]!, files[0]!] }), { code: 'CONFIG_INVALID', message: /stage files do not chain: stage2\.onnx feeds no later stage/ })
  } finally { await one.close() }
})
