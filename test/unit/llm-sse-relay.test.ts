/** relaySse (the SSE writer shared by the TGI, OpenAI and MindSpore-style streams) with a fake engine and reply. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import type { FastifyReply } from 'fastify'
import { ServeError } from '../../src/errors.ts'
import { relaySse } from '../../src/protocol/rest/llm-common.ts'
import type { LlmDispatcher } from '../../src/runtime/llm-dispatch.ts'
import type { DoneEvent, GenerateEvent, TokenEvent, ValidGenerate } from '../../src/llm/types.ts'

/** relaySse never looks inside the request: the fake dispatcher takes it as it is. */
const VALID = {} as ValidGenerate

const tok = (index: number, last = false): TokenEvent => ({ type: 'token', requestId: 'r', index, id: 96 + index, text: String.fromCharCode(96 + index), special: false, logprob: 0, last })
const done: DoneEvent = { type: 'done', requestId: 'r', finishReason: 'length', generatedText: 'abc', generatedTokens: 3, inputTokens: 1, seed: null, timings: { queueMs: 0, firstTokenMs: 0, totalMs: 0 } }

/** A dispatcher whose stream yields events only when the test pushes them. */
function fakeLlm(): { llm: LlmDispatcher; push: (ev: GenerateEvent) => void } {
  const pending: GenerateEvent[] = []
  let wake: (() => void) | null = null
  const it: AsyncIterableIterator<GenerateEvent> = {
    [Symbol.asyncIterator]() { return it },
    async next() {
      while (pending.length === 0) await new Promise<void>((r) => { wake = r })
      return { done: false, value: pending.shift()! }
    },
    async return() { return { done: true, value: undefined } },
  }
  return { llm: { stream: () => it } as unknown as LlmDispatcher, push: (ev) => { pending.push(ev); wake?.(); wake = null } }
}

/** A hijackable reply; `log` records writeHead / flushHeaders / each write in order. */
function fakeReply(): { reply: FastifyReply; writes: string[]; log: string[]; status: () => number } {
  const writes: string[] = []
  const log: string[] = []
  let status = 0
  const raw = Object.assign(new EventEmitter(), {
    destroyed: false, writableFinished: false, writableEnded: false, headersSent: false,
    writeHead(code: number) { status = code; log.push('writeHead') },
    flushHeaders() { raw.headersSent = true; log.push('flushHeaders') },
    write(s: string) { raw.headersSent = true; writes.push(s); log.push('write'); return true },
    end() { raw.writableFinished = true; raw.writableEnded = true; log.push('end') },
  })
  return { reply: { hijack() {}, raw } as unknown as FastifyReply, writes, log, status: () => status }
}

const tick = () => new Promise((r) => setImmediate(r))

test('holdLast relays write each token as it arrives and hold only the one marked last', async () => {
  const { llm, push } = fakeLlm()
  const { reply, writes } = fakeReply()
  const relay = relaySse(llm, VALID, reply, {
    holdLast: true,
    token: (sse, t) => sse.send({ i: t.index }),
    done: (sse, ev, last) => sse.send({ i: last?.index, text: ev.generatedText }),
    error: () => {},
  })
  push(tok(1))
  await tick()
  // The first token is on the wire before the engine's next event exists (TTFT = prefill, not prefill + a step).
  assert.deepEqual(writes, ['data: {"i":1}\n\n'])
  push(tok(2))
  await tick()
  assert.equal(writes.length, 2)
  push(tok(3, true))
  await tick()
  assert.equal(writes.length, 2, 'the last token waits for done, which carries the final text')
  push(done)
  await relay
  assert.deepEqual(writes.slice(2), ['data: {"i":3,"text":"abc"}\n\n'])
})

test('a valid stream sends its headers at once, before the engine\'s first event', async () => {
  const { llm, push } = fakeLlm()
  const { reply, writes, log, status } = fakeReply()
  const relay = relaySse(llm, VALID, reply, { token: (sse, t) => sse.send({ i: t.index }), done: () => {}, error: () => {} })
  await tick()
  // Nothing came from the engine yet (a prefill may be queued behind others): the 200 and its headers are out.
  assert.equal(status(), 200)
  assert.deepEqual(log, ['writeHead', 'flushHeaders'])
  assert.equal(reply.raw.headersSent, true)
  assert.deepEqual(writes, [])
  push(tok(1, true))
  push(done)
  await relay
  assert.deepEqual(log, ['writeHead', 'flushHeaders', 'write', 'end'])
})

test('an error after the headers is an event in the stream; a refusal before them is thrown with its code', async () => {
  const { llm, push } = fakeLlm()
  const { reply, writes } = fakeReply()
  const relay = relaySse(llm, VALID, reply, { token: () => {}, done: () => {}, error: (sse, ev) => sse.send({ code: ev.code, error: ev.message }) })
  push({ type: 'error', requestId: 'r', code: 'INFERENCE_FAILED', message: 'Request failed during generation: boom' })
  await relay
  assert.deepEqual(writes, ['data: {"code":"INFERENCE_FAILED","error":"Request failed during generation: boom"}\n\n'])
  // The dispatcher refuses (429, 503) synchronously: no stream is opened, the route answers with the status.
  const full = { stream: () => { throw new ServeError('QUEUE_FULL', 'Model is overloaded') } } as unknown as LlmDispatcher
  const r2 = fakeReply()
  await assert.rejects(relaySse(full, VALID, r2.reply, { token: () => {}, done: () => {}, error: () => {} }), (e: Error & { code?: string }) => e.code === 'QUEUE_FULL')
  assert.deepEqual(r2.log, [])
})
