/**
 * Engine correctness on the tiny decoder: KV cache vs full recomputation, joining a running
 * batch mid-way, seeded sampling, finish reasons, validation, overload and cancellation.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { tgiText } from '../../src/protocol/texts.ts'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import ort from 'onnxruntime-node'
import { buildDecoder, DECODER_CONFIGS } from '../../src/models/decoder.ts'
import { writeFile } from 'node:fs/promises'
import { LlmEngine } from '../../src/llm/engine.ts'
import type { DoneEvent, GenerateEvent, GenerateParameters, TokenEvent } from '../../src/llm/types.ts'
import { ByteLevelTokenizer } from '../../src/llm/tokenizer.ts'
import { greedyNoCache as referenceGreedy, joinMidBatch } from '../helpers/llm.ts'

const cfg = DECODER_CONFIGS.tiny
const hd = cfg.hiddenSize / cfg.numHeads
let dir: string
let modelPath: string
let refSession: ort.InferenceSession
const tok = new ByteLevelTokenizer()

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'llm-engine-'))
  modelPath = join(dir, 'model.onnx')
  const bytes = buildDecoder(cfg)
  await writeFile(modelPath, bytes)
  refSession = await ort.InferenceSession.create(bytes)
})
after(async () => { await refSession.release(); rmSync(dir, { recursive: true, force: true }) })

/** Greedy decoding recomputing the whole sequence each step (no KV cache at all). */
function greedyNoCache(prompt: number[], n: number): Promise<number[]> {
  return referenceGreedy(refSession, cfg, prompt, n)
}

interface Result { tokens: number[]; events: GenerateEvent[]; done: DoneEvent | null; error: string | null }

function generate(engine: LlmEngine, inputs: string, parameters: GenerateParameters, onToken?: (ev: TokenEvent) => void, id?: string): Promise<Result> {
  return new Promise((resolve) => {
    const r: Result = { tokens: [], events: [], done: null, error: null }
    engine.submit(engine.validate({ inputs, parameters }), (ev) => {
      r.events.push(ev)
      if (ev.type === 'token') { r.tokens.push(ev.id); onToken?.(ev) } else {
        if (ev.type === 'done') r.done = ev
        else r.error = `${ev.code}: ${ev.message}`
        resolve(r)
      }
    }, id)
  })
}

const PROMPTS = ['Hello world, this is a longer prompt with more tokens in it.', 'Hi', 'The quick brown fox', 'ab']

test('greedy with the KV cache equals greedy by full recomputation', async () => {
  const engine = await LlmEngine.load(modelPath, { maxTotalTokens: 200, kvBlock: 16 })
  for (const p of PROMPTS.slice(0, 2)) {
    const ref = await greedyNoCache(tok.encode(p), 40)
    const got = await generate(engine, p, { maxNewTokens: 40 })
    assert.deepEqual(got.tokens, ref, `prompt ${JSON.stringify(p)}`)
    assert.equal(got.done?.finishReason, 'length')
  }
  assert.ok(engine.stats().kvRelayouts >= 1, 'capacity grew at least once (block 16, 40+ tokens)')
  await engine.close()
})

test('plain optimum I/O mode (kvMode full) gives the same tokens', async () => {
  const engine = await LlmEngine.load(modelPath, { maxTotalTokens: 200, kvBlock: 16, kvMode: 'full' })
  assert.equal(engine.stats().presentMode, 'full')
  const ref = await greedyNoCache(tok.encode(PROMPTS[2]!), 30)
  const got = await generate(engine, PROMPTS[2]!, { maxNewTokens: 30 })
  assert.deepEqual(got.tokens, ref)
  await engine.close()
})

test('a request joining a running batch mid-way matches its lone output', async () => {
  const engine = await LlmEngine.load(modelPath, { maxTotalTokens: 200, kvBlock: 16, waitingServedRatio: 0 })
  const { together, alone } = await joinMidBatch((p, n, on) => generate(engine, p, { maxNewTokens: n }, on && ((ev) => on(ev.index))).then((r) => r.tokens), PROMPTS)
  assert.deepEqual(together, alone)
  assert.ok(engine.stats().numPrefills >= 4 + 3)
  await engine.close()
})

test('seeded sampling is reproducible, alone and in a batch', async () => {
  const engine = await LlmEngine.load(modelPath, { maxTotalTokens: 200 })
  const params: GenerateParameters = { maxNewTokens: 30, temperature: 0.9, topK: 50, topP: 0.95, repetitionPenalty: 1.1, seed: 42 }
  const r1 = await generate(engine, 'Sample me', params)
  const r2 = await generate(engine, 'Sample me', params)
  assert.deepEqual(r1.tokens, r2.tokens)
  assert.equal(r1.done?.seed, 42)
  const [r3] = await Promise.all([generate(engine, 'Sample me', params), generate(engine, 'other prompt here', { ...params, seed: 7 })])
  assert.deepEqual(r3.tokens, r1.tokens)
  const r4 = await generate(engine, 'Sample me', { ...params, seed: 43 })
  assert.notDeepEqual(r4.tokens, r1.tokens)
  await engine.close()
})

test('max_new_tokens gives length, a stop sequence gives stop_sequence', async () => {
  const engine = await LlmEngine.load(modelPath, { maxTotalTokens: 200 })
  const full = await generate(engine, 'The quick brown fox', { maxNewTokens: 40 })
  assert.equal(full.done?.finishReason, 'length')
  assert.equal(full.done?.generatedTokens, 40)
  assert.equal(full.tokens.length, 40)
  assert.equal(full.done?.generatedText, full.events.filter((e): e is TokenEvent => e.type === 'token').map((e) => e.text).join(''))
  // Pick a stop string from a clean stretch of the greedy output, past its first occurrence.
  const text = full.done!.generatedText
  const start = [...Array(text.length - 3).keys()].find((i) => i >= 8 && !/[\uFFFD]/.test(text.slice(i, i + 3)))
  assert.ok(start !== undefined, `no clean stretch in ${JSON.stringify(text)}`)
  const stop = text.slice(start, start + 3)
  const cut = await generate(engine, 'The quick brown fox', { maxNewTokens: 40, stop: ['never-matches', stop] })
  assert.equal(cut.done?.finishReason, 'stop_sequence')
  assert.equal(cut.done?.stopSequence, stop)
  assert.ok(cut.done!.generatedText.endsWith(stop) || cut.done!.generatedText.includes(stop))
  assert.ok(cut.done!.generatedTokens < 40)
  assert.equal(cut.done!.generatedText, text.slice(0, cut.done!.generatedText.length))
  await engine.close()
})

test('validation against the engine\'s limits gives TGI messages; overload is QUEUE_FULL', async () => {
  const engine = await LlmEngine.load(modelPath, { maxTotalTokens: 64, maxInputTokens: 32, maxConcurrentRequests: 2 })
  const noop = (): void => {}
  const bad = (parameters: GenerateParameters, msg: RegExp, inputs = 'hello'): void => {
    assert.throws(() => engine.validate({ inputs, parameters }), (e: Error & { code?: string }) => e.code === 'VALIDATION' && msg.test(e.message))
  }
  bad({}, /^`inputs` cannot be empty$/, '')
  bad({}, /^`inputs` must have less than 32 tokens\. Given: 41$/, 'x'.repeat(40))
  bad({ maxNewTokens: 0 }, /^`max_new_tokens` must be strictly positive$/)
  bad({ maxNewTokens: 60 }, /^`inputs` tokens \+ `max_new_tokens` must be <= 64\. Given: 6 `inputs` tokens and 60 `max_new_tokens`$/)
  bad({ temperature: 0 }, /^`temperature` must be strictly positive$/)
  bad({ topP: 1 }, /^`top_p` must be > 0\.0 and < 1\.0$/)
  bad({ topK: 0 }, /^`top_k` must be strictly positive$/)
  bad({ repetitionPenalty: 0 }, /^`repetition_penalty` must be strictly positive$/)
  bad({ stop: ['a', 'b', 'c', 'd', 'e'] }, /^`stop` supports up to 4 stop sequences\. Given: 5$/)
  bad({ typicalP: 1 }, /^`typical_p` must be > 0\.0 and < 1\.0$/)
  bad({ typicalP: 0 }, /^`typical_p` must be > 0\.0 and < 1\.0$/)
  bad({ topNTokens: 6 }, /^`top_n_tokens` must be >= 0 and <= 5\. Given: 6$/)
  bad({ topNTokens: -1 }, /^`top_n_tokens` must be >= 0 and <= 5\. Given: -1$/)
  bad({ topNTokens: 1.5 }, /^`top_n_tokens` must be an integer$/)
  const p1 = generate(engine, 'one', { maxNewTokens: 20 })
  const p2 = generate(engine, 'two', { maxNewTokens: 20 })
  assert.throws(() => engine.submit(engine.validate({ inputs: 'three' }), noop), (e: Error & { code?: string }) => e.code === 'QUEUE_FULL' && tgiText(e as Error & { message: string }) === 'Model is overloaded')
  await Promise.all([p1, p2])
  await generate(engine, 'four', { maxNewTokens: 2 }) // capacity freed again
  await engine.close()
})

test('top_n_tokens: every token event carries n alternatives; greedy picks the first; typical_p samples reproducibly', async () => {
  const engine = await LlmEngine.load(modelPath, { maxTotalTokens: 200, kvBlock: 16 })
  const plain = await generate(engine, 'Hello', { maxNewTokens: 8, ignoreEos: true })
  const r = await generate(engine, 'Hello', { maxNewTokens: 8, ignoreEos: true, topNTokens: 3 })
  assert.deepEqual(r.tokens, plain.tokens, 'asking for top tokens does not change the output')
  const evs = r.events.filter((e): e is TokenEvent => e.type === 'token')
  assert.equal(evs.length, 8)
  for (const e of evs) {
    assert.equal(e.topTokens?.length, 3)
    assert.equal(e.topTokens![0]!.id, e.id)
    assert.equal(e.topTokens![0]!.logprob, e.logprob)
    assert.ok(e.topTokens![0]!.logprob >= e.topTokens![1]!.logprob && e.topTokens![1]!.logprob >= e.topTokens![2]!.logprob)
    for (const t of e.topTokens!) { assert.equal(t.text, tok.decode([t.id], false)); assert.equal(t.special, tok.isSpecial(t.id)) }
  }
  assert.ok(plain.events.every((e) => e.type !== 'token' || e.topTokens === undefined))
  const p: GenerateParameters = { maxNewTokens: 12, typicalP: 0.6, seed: 5, ignoreEos: true }
  const [a, b] = await Promise.all([generate(engine, 'Typical', p), generate(engine, 'Typical', p)])
  assert.deepEqual(a.tokens, b.tokens)
  assert.equal(a.done?.seed, 5, 'typical_p implies sampling (the seed is reported)')
  await engine.close()
  // maxTopNTokens raises (or, at 0, disables) the bound.
  const wide = await LlmEngine.load(modelPath, { maxTotalTokens: 64, maxTopNTokens: 20 })
  const w = await generate(wide, 'Hi', { maxNewTokens: 2, topNTokens: 20 })
  assert.equal((w.events[0] as TokenEvent).topTokens?.length, 20)
  assert.throws(() => wide.validate({ inputs: 'Hi', parameters: { topNTokens: 21 } }), (e: Error) => e.message === '`top_n_tokens` must be >= 0 and <= 20. Given: 21')
  await wide.close()
})

test('cancel frees the slot at the next step; others continue unchanged', async () => {
  const engine = await LlmEngine.load(modelPath, { maxTotalTokens: 200, kvBlock: 16 })
  const ref = (await generate(engine, 'Keep going', { maxNewTokens: 30 })).tokens
  const victim = generate(engine, 'Cancel me please', { maxNewTokens: 100 }, (ev) => { if (ev.index === 3) engine.cancel('victim') }, 'victim')
  const keep = generate(engine, 'Keep going', { maxNewTokens: 30 })
  const [rv, rk] = await Promise.all([victim, keep])
  assert.match(rv.error ?? '', /^CANCELLED/)
  assert.ok(rv.tokens.length <= 4)
  assert.deepEqual(rk.tokens, ref)
  assert.equal(engine.stats().running, 0)
  assert.equal(engine.cancel('victim'), false)
  await engine.close()
})

test('only the final token event is marked last (relays hold just that one)', async () => {
  const engine = await LlmEngine.load(modelPath, { maxTotalTokens: 200, kvBlock: 16 })
  const r = await generate(engine, 'Hello', { maxNewTokens: 5 })
  const flags = r.events.filter((e): e is TokenEvent => e.type === 'token').map((e) => e.last)
  assert.deepEqual(flags, [false, false, false, false, true])
  await engine.close()
})

test('maxConsecutivePrefills 1 (default): a running batch decodes between two queued prefills; 0 prefills them back to back', async () => {
  for (const [limit, decodeBetween] of [[undefined, true], [1, true], [0, false]] as const) {
    // The prefill budget takes one 26-token prompt at a time, so b and c need two prefills.
    const engine = await LlmEngine.load(modelPath, { maxTotalTokens: 200, maxInputTokens: 40, maxBatchPrefillTokens: 40, kvBlock: 16, ...(limit === undefined ? {} : { maxConsecutivePrefills: limit }) })
    const log: string[] = []
    const prompt = 'x'.repeat(25)
    const later: Array<Promise<Result>> = []
    const a = generate(engine, prompt, { maxNewTokens: 8 }, (ev) => {
      log.push(`a${ev.index}`)
      if (ev.index === 1) for (const name of ['b', 'c']) later.push(generate(engine, prompt, { maxNewTokens: 3 }, (e) => log.push(`${name}${e.index}`)))
    })
    await a
    await Promise.all(later)
    const between = log.slice(log.indexOf('b1') + 1, log.indexOf('c1'))
    assert.equal(between.some((x) => x.startsWith('a')), decodeBetween, `limit ${limit}: ${log.join(' ')}`)
    await engine.close()
  }
})

test('on CPU the default waiting-served ratio is 0: a lone request joins a running batch of 7 at once', async () => {
  for (const [ratio, joinsAt] of [[undefined, 'soon'], [0.3, 'late']] as const) {
    const engine = await LlmEngine.load(modelPath, { maxTotalTokens: 200, kvBlock: 16, ...(ratio === undefined ? {} : { waitingServedRatio: ratio }) })
    let aIndex = 0
    let started = 0
    let late: Promise<Result> | null = null
    let joinedAt = -1
    const first = Array.from({ length: 7 }, (_, i) => generate(engine, `prompt ${i}`, { maxNewTokens: 40 }, (ev) => {
      if (i === 0) aIndex = ev.index
      if (ev.index === 1 && ++started === 7) late = generate(engine, 'late', { maxNewTokens: 2 }, (e) => { if (e.index === 1) joinedAt = aIndex })
    }))
    await Promise.all(first)
    await late
    // TGI's 0.3 x 7 running wants 2 joiners, so a lone one waits maxWaitingTokens (20) steps.
    assert.ok(joinsAt === 'soon' ? joinedAt <= 3 : joinedAt >= 15, `ratio ${ratio}: joined when the batch was at token ${joinedAt}`)
    await engine.close()
  }
})
