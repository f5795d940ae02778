// TGI's best_of: the validation rules (src/llm/validate.ts) and running the sequences through the
// dispatcher (collectMany in src/protocol/rest/llm-common.ts) against fake replicas.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { tgiText } from '../../src/protocol/texts.ts'
import { impliesSampling, validateBestOf, validateGenerate } from '../../src/llm/validate.ts'
import { ByteLevelTokenizer } from '../../src/llm/tokenizer.ts'
import { ChatTemplate } from '../../src/llm/chat-template.ts'
import { collectMany } from '../../src/protocol/rest/llm-common.ts'
import { LlmDispatcher } from '../../src/runtime/llm-dispatch.ts'
import type { LiveServable } from '../../src/runtime/live-servable.ts'
import type { GenerateEvent } from '../../src/llm/types.ts'

function message(f: () => unknown): string {
  try {
    f()
  } catch (e) {
    return (e as Error).message
  }
  return '(no error)'
}

test('validateBestOf: TGI texts for range, sampling, seed and streams', () => {
  const s = { doSample: true }
  assert.equal(validateBestOf(undefined, {}, 2, false), 1)
  assert.equal(validateBestOf(null, {}, 2, true), 1)
  assert.equal(validateBestOf(1, {}, 2, true), 1, 'best_of 1 is allowed everywhere, greedy too')
  assert.equal(validateBestOf(2, s, 2, false), 2)
  assert.equal(message(() => validateBestOf(0, s, 2, false)), '`best_of` must be > 0 and <= 2. Given: 0')
  assert.equal(message(() => validateBestOf(3, s, 2, false)), '`best_of` must be > 0 and <= 2. Given: 3')
  assert.equal(validateBestOf(4, s, 4, false), 4, 'the bound is the configured maxBestOf')
  assert.equal(message(() => validateBestOf(2, s, 1, false)), '`best_of` must be > 0 and <= 1. Given: 2')
  assert.equal(message(() => validateBestOf(2, {}, 2, false)), 'you must use sampling when `best_of` is > 1')
  assert.equal(message(() => validateBestOf(2, { doSample: false, temperature: 1 }, 2, false)), 'you must use sampling when `best_of` is > 1')
  for (const p of [{ temperature: 0.7 }, { topK: 5 }, { topP: 0.9 }, { typicalP: 0.5 }]) assert.equal(validateBestOf(2, p, 2, false), 2, JSON.stringify(p))
  assert.equal(message(() => validateBestOf(2, { ...s, seed: 1 }, 2, false)), '`seed` must not be set when `best_of` > 1')
  assert.equal(message(() => validateBestOf(2, s, 2, true)), '`best_of` != 1 is not supported when streaming tokens')
  assert.equal(message(() => validateBestOf(5, {}, 2, true)), '`best_of` != 1 is not supported when streaming tokens', 'on streams that rule comes first, as TGI')
  assert.equal(message(() => validateBestOf(1.5, s, 2, false)), '`best_of` must be an integer')
  assert.equal(impliesSampling({}), false)
  assert.equal(impliesSampling({ temperature: 1 }), false)
  assert.equal(impliesSampling({ doSample: true }), true)
})

/** A dispatcher over fake replicas whose requests finish when the test says so. */
function fakeDispatcher(capacity: number) {
  const streams = new Map<number, (ev: GenerateEvent) => void>()
  const cancelled: number[] = []
  let next = 0
  const replica = {
    state: 'ready',
    llm: { maxConcurrentRequests: capacity },
    get activeStreams() { return streams.size },
    generate(_req: unknown, onEvent: (ev: GenerateEvent) => void) {
      const id = next++
      streams.set(id, onEvent)
      return id
    },
    cancel(id: number) {
      const f = streams.get(id)
      if (!f) return
      cancelled.push(id)
      streams.delete(id)
      f({ type: 'error', requestId: `r${id}`, code: 'CANCELLED', message: 'cancelled' })
    },
  }
  const live = { name: 'llm', version: 1, ready: true, replicas: [replica] } as unknown as LiveServable
  const finish = (id: number, logprobs: number[]) => {
    const f = streams.get(id)!
    streams.delete(id)
    logprobs.forEach((lp, i) => f({ type: 'token', requestId: `r${id}`, index: i + 1, id: 65 + i, text: 'a', special: false, logprob: lp }))
    f({ type: 'done', requestId: `r${id}`, finishReason: 'length', generatedText: 'a'.repeat(logprobs.length), generatedTokens: logprobs.length, inputTokens: 1, seed: id, timings: { queueMs: 0, firstTokenMs: 0, totalMs: 1 } })
  }
  const fail = (id: number) => {
    const f = streams.get(id)!
    streams.delete(id)
    f({ type: 'error', requestId: `r${id}`, code: 'INFERENCE_FAILED', message: 'Request failed during generation: boom' })
  }
  return { llm: new LlmDispatcher(live), streams, cancelled, finish, fail }
}

const tick = () => new Promise((r) => setImmediate(r))

const tokenizer = new ByteLevelTokenizer()
/** One validated request; collectMany runs it `n` times. */
const VALID = validateGenerate({ inputs: 'x', parameters: { doSample: true } }, { tokenizer, chatTemplate: new ChatTemplate(tokenizer.config) }, { maxInputTokens: 31, maxTotalTokens: 32, maxStopSequences: 4, maxTopNTokens: 5 })

test('best_of: the one validated request leaves its seed to each sequence (each draws its own)', () => {
  assert.equal(VALID.seed, null)
  assert.equal(VALID.seeded, true)
})

test('collectMany: every sequence is a request of its own; results in start order', async () => {
  const d = fakeDispatcher(4)
  const p = collectMany(d.llm, VALID, 3)
  assert.equal(d.streams.size, 3, 'all three started at once')
  d.finish(1, [-1, -2])
  d.finish(0, [-0.5])
  d.finish(2, [-3])
  const seqs = await p
  assert.deepEqual(seqs.map((s) => s.done.seed), [0, 1, 2])
  assert.deepEqual(seqs[1]!.tokens.map((t) => t.logprob), [-1, -2])
})

test('collectMany: if not all can start it is an overload and the started ones are cancelled', async () => {
  const d = fakeDispatcher(2)
  await assert.rejects(collectMany(d.llm, VALID, 3), (e: Error & { code?: string }) => e.code === 'QUEUE_FULL' && tgiText(e as Error & { message: string }) === 'Model is overloaded')
  assert.deepEqual(d.cancelled, [0, 1])
  assert.equal(d.streams.size, 0)
})

test('collectMany: one failed sequence fails the request and cancels the others; abort cancels all', async () => {
  const d = fakeDispatcher(4)
  const p = collectMany(d.llm, VALID, 2)
  d.fail(0)
  await assert.rejects(p, (e: Error & { code?: string }) => e.code === 'INFERENCE_FAILED' && /boom/.test(e.message))
  assert.deepEqual(d.cancelled, [1])
  const ac = new AbortController()
  const q = collectMany(d.llm, VALID, 2, ac.signal)
  await tick()
  ac.abort()
  await assert.rejects(q, (e: Error & { code?: string }) => e.code === 'CANCELLED')
  assert.deepEqual(d.cancelled, [1, 2, 3])
  assert.equal(d.streams.size, 0)
})
