/** relaySse (the SSE writer shared by the TGI and MindSpore-style streams) with a fake engine and reply. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { relaySse } from '../../src/protocol/rest/llm-common.ts'
import type { LlmDispatcher } from '../../src/runtime/llm-dispatch.ts'
import type { DoneEvent, GenerateEvent, TokenEvent } from '../../src/llm/types.ts'

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

function fakeReply(): { reply: FastifyReply; writes: string[] } {
  const writes: string[] = []
  const raw = Object.assign(new EventEmitter(), {
    destroyed: false, writableFinished: false, headersSent: false,
    writeHead() { raw.headersSent = true },
    write(s: string) { writes.push(s); return true },
    end() { raw.writableFinished = true },
  })
  return { reply: { hijack() {}, raw } as unknown as FastifyReply, writes }
}

const tick = () => new Promise((r) => setImmediate(r))

test('holdLast relays write each token as it arrives and hold only the one marked last', async () => {
  const { llm, push } = fakeLlm()
  const { reply, writes } = fakeReply()
  const relay = relaySse(llm, { inputs: 'x' }, {} as FastifyRequest, reply, {
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
