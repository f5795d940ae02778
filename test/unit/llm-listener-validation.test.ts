/**
 * LLM requests are validated and tokenized in the listener, as TGI's router does: the dispatcher
 * refuses invalid ones (TGI's texts, the limits the replica reported) before any replica sees
 * them; the routes answer with the error table's status; MindSpore-style :generate renders each
 * error with its own code's row. Fake replicas record what reaches them; no sockets, no model.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { tgiText } from '../../src/protocol/texts.ts'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ErrorCode } from '../../src/errors.ts'
import type { ValidServable } from '../../src/config/validate.ts'
import { ChatTemplate } from '../../src/llm/chat-template.ts'
import { ByteLevelTokenizer } from '../../src/llm/tokenizer.ts'
import type { GenerateEvent, GenerateRequest, ValidGenerate } from '../../src/llm/types.ts'
import { buildRestServer } from '../../src/protocol/rest/server.ts'
import { LlmDispatcher, prepareLlm } from '../../src/runtime/llm-dispatch.ts'
import type { LiveServable } from '../../src/runtime/live-servable.ts'
import type { LlmInfo } from '../../src/runtime/messages.ts'
import type { ServableRegistry } from '../../src/runtime/registry.ts'

const tokenizer = new ByteLevelTokenizer()
const ENCODER = { tokenizer, chatTemplate: new ChatTemplate(tokenizer.config) }
const INFO: LlmInfo = {
  modelId: 'fake', maxInputTokens: 15, maxTotalTokens: 20, maxStopSequences: 2, maxTopNTokens: 3, maxBestOf: 2, maxConcurrentRequests: 2,
  maxBatchSize: 2, numLayers: 1, numKvHeads: 1, headDim: 8, kvDtype: 'float32', vocabSize: 259, presentMode: 'new',
}

/** How a fake replica answers a request it was sent. */
type Answer = (onEvent: (ev: GenerateEvent) => void) => void

const answerH: Answer = (onEvent) => {
  onEvent({ type: 'token', requestId: 'r', index: 1, id: 107, text: 'h', special: false, logprob: -0.1, last: true })
  onEvent({ type: 'done', requestId: 'r', finishReason: 'length', generatedText: 'h', generatedTokens: 1, inputTokens: 3, seed: null, timings: { queueMs: 0, firstTokenMs: 1, totalMs: 2 } })
}

const answerError = (code: ErrorCode, message: string): Answer => (onEvent) => onEvent({ type: 'error', requestId: 'r', code, message })

/** A dispatcher over one fake replica that records every request sent to it. */
function fakeLlm(opts: { ready?: boolean; capacity?: number; answer?: Answer; info?: Partial<LlmInfo> } = {}) {
  const sent: ValidGenerate[] = []
  const replica = {
    device: { deviceType: 'cpu', deviceId: 0 },
    state: opts.ready === false ? 'starting' : 'ready',
    llm: { ...INFO, ...opts.info, maxConcurrentRequests: opts.capacity ?? INFO.maxConcurrentRequests },
    activeStreams: 0,
    generate(req: ValidGenerate, onEvent: (ev: GenerateEvent) => void) {
      sent.push(req)
      setImmediate(() => (opts.answer ?? answerH)(onEvent))
      return sent.length
    },
    cancel() {},
  }
  const live = { name: 'fake', version: 1, get ready() { return replica.state === 'ready' }, replicas: [replica] } as unknown as LiveServable
  return { llm: new LlmDispatcher(live, ENCODER), sent }
}

function message(f: () => unknown): string {
  try {
    f()
  } catch (e) {
    // As the TGI routes word it (runtime raises codes with facts; protocol/texts.ts words them).
    return `${(e as { code?: string }).code}: ${tgiText(e as Error)}`
  }
  return '(no error)'
}

test('invalid requests are refused in the listener with TGI texts and never reach a replica', () => {
  const { llm, sent } = fakeLlm()
  const cases: Array<[GenerateRequest, string]> = [
    // Token counts against the limits the replica reported (byte-level: BOS + one id per byte).
    [{ inputs: 'x'.repeat(15) }, '`inputs` must have less than 15 tokens. Given: 16'],
    [{ inputs: 'hello', parameters: { maxNewTokens: 15 } }, '`inputs` tokens + `max_new_tokens` must be <= 20. Given: 6 `inputs` tokens and 15 `max_new_tokens`'],
    [{ messages: [{ role: 'user', content: 'a long message' }] }, '`inputs` must have less than 15 tokens. Given: 38'],
    [{ inputs: '' }, '`inputs` cannot be empty'],
    [{ inputIds: [1, 300] }, '`inputs` token ids must be integers >= 0 and < 259'],
    [{ inputs: 'x', parameters: { maxNewTokens: 0 } }, '`max_new_tokens` must be strictly positive'],
    [{ inputs: 'x', parameters: { temperature: 0 } }, '`temperature` must be strictly positive'],
    [{ inputs: 'x', parameters: { stop: ['a', 'b', 'c'] } }, '`stop` supports up to 2 stop sequences. Given: 3'],
    [{ inputs: 'x', parameters: { topNTokens: 4 } }, '`top_n_tokens` must be >= 0 and <= 3. Given: 4'],
    [{ inputs: 'x', parameters: { truncate: 16 } }, '`truncate` must be strictly positive and less than 15. Given: 16'],
  ]
  for (const [req, msg] of cases) assert.equal(message(() => llm.validate(req)), `VALIDATION: ${msg}`, JSON.stringify(req))
  assert.equal(sent.length, 0, 'no replica saw any of them')
})

test('a valid request crosses as token ids with resolved parameters: text, chat messages and ids', async () => {
  const { llm, sent } = fakeLlm()
  const v = llm.validate({ inputs: 'hi', parameters: { stop: ['x'], topK: 5, seed: 7 } })
  assert.deepEqual(v.inputIds, [1, 107, 108])
  assert.equal(v.maxNewTokens, 17, 'default: max_total_tokens - input length')
  assert.deepEqual({ ...v.sampling }, { doSample: true, temperature: 1, topK: 5, topP: 1, typicalP: 1, repetitionPenalty: 1, frequencyPenalty: 0 })
  assert.deepEqual([v.seed, v.seeded, v.stop, v.ignoreEos, v.topNTokens], [7, true, ['x'], false, 0])
  // Chat: the template renders in the listener (it writes BOS itself, so none is added).
  const msgs = [{ role: 'user', content: 'a' }]
  const roomy = fakeLlm({ info: { maxInputTokens: 40, maxTotalTokens: 48 } }).llm
  assert.deepEqual(roomy.validate({ messages: msgs, parameters: { maxNewTokens: 1 } }).inputIds, tokenizer.encode(ENCODER.chatTemplate.render(msgs), false))
  assert.deepEqual(llm.validate({ inputIds: [1, 2, 3], parameters: { truncate: 2 } }).inputIds, [2, 3])
  assert.equal(llm.validate({ inputs: 'hi' }).seed, null, 'no seed: the engine draws one per request')
  const events = []
  for await (const ev of llm.stream(v)) events.push(ev.type)
  assert.deepEqual(events, ['token', 'done'])
  assert.equal(sent.length, 1)
  assert.equal(sent[0], v, 'the replica gets the validated request itself')
  assert.equal('inputs' in sent[0]! || 'messages' in sent[0]! || 'parameters' in sent[0]!, false, 'no text crosses')
})

test('a request that cannot be served now is refused before it is validated (TGI order: 503, 429)', () => {
  const bad: GenerateRequest = { inputs: '' }
  assert.equal(message(() => fakeLlm({ ready: false }).llm.validate(bad)), 'SERVABLE_NOT_READY: servable fake has no ready replica')
  assert.equal(message(() => fakeLlm({ capacity: 0 }).llm.validate(bad)), 'QUEUE_FULL: Model is overloaded')
})

test('prepareLlm loads the servable\'s tokenizer and template once for the listener; a bad template fails the load', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'llm-prepare-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const servable = (sub: string) => ({ configFile: join(dir, 'servable_config.ts'), llm: { file: 'model.onnx', path: join(dir, sub, 'model.onnx'), site: '', modelId: 'x', options: {} } }) as unknown as ValidServable
  const ok = servable('ok')
  await prepareLlm(ok)
  const live = { name: 'x', version: 1, ready: true, servable: ok, replicas: [{ state: 'ready', llm: INFO, activeStreams: 0 }] } as unknown as LiveServable
  assert.deepEqual(new LlmDispatcher(live).validate({ inputs: 'hi' }).inputIds, [1, 107, 108], 'the dispatcher finds the prepared encoder')
  mkdirSync(join(dir, 'bad'))
  writeFileSync(join(dir, 'bad', 'tokenizer_config.json'), JSON.stringify({ chat_template: '{% for m in messages %}' }))
  await assert.rejects(prepareLlm(servable('bad')), (e: Error & { code?: string }) => e.code === 'CONFIG_INVALID' && /declareLlm\(\{ file: 'model\.onnx' \}\): chat_template does not parse/.test(e.message))
})

/** A registry whose one LLM servable is `llm` (what the routes ask of it). */
function registryOf(llm: LlmDispatcher): ServableRegistry {
  return { llm: () => llm, llms: () => [llm], get: () => undefined, all: () => [], failed: new Map() } as unknown as ServableRegistry
}

const json = { 'content-type': 'application/json' }

test('TGI and OpenAI routes: an invalid request is a 422 with TGI\'s text, also on the stream route; no replica is reached', async (t) => {
  const { llm, sent } = fakeLlm()
  const app = buildRestServer({ registry: registryOf(llm), maxMsgMb: 1, always200: false })
  t.after(() => app.close())
  const tooLong = 'Input validation error: `inputs` must have less than 15 tokens. Given: 16'
  for (const url of ['/generate', '/generate_stream']) {
    const r = await app.inject({ method: 'POST', url, headers: json, payload: JSON.stringify({ inputs: 'x'.repeat(15) }) })
    assert.equal(r.statusCode, 422, url)
    assert.deepEqual(r.json(), { error: tooLong, error_type: 'validation' })
  }
  const chat = await app.inject({ method: 'POST', url: '/v1/chat/completions', headers: json, payload: JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(20) }], stream: true }) })
  assert.equal(chat.statusCode, 422)
  assert.match(chat.json().error.message, /^Input validation error: `inputs` must have less than 15 tokens\. Given: \d+$/)
  assert.equal(sent.length, 0)
  const ok = await app.inject({ method: 'POST', url: '/generate_stream', headers: json, payload: JSON.stringify({ inputs: 'hi' }) })
  assert.equal(ok.statusCode, 200)
  assert.equal(ok.headers['content-type'], 'text/event-stream')
  assert.equal(sent.length, 1)
})

test(':generate and :generated_stream answer each error with its code\'s row (not all 422)', async (t) => {
  const call = async (llm: LlmDispatcher, method: string, instances: unknown) => {
    const app = buildRestServer({ registry: registryOf(llm), maxMsgMb: 1, always200: false })
    t.after(() => app.close())
    const r = await app.inject({ method: 'POST', url: `/model/fake:${method}`, headers: json, payload: JSON.stringify({ instances }) })
    return { status: r.statusCode, body: r.body }
  }
  const hi = { prompt: 'hi' }
  const cases: Array<[string, ReturnType<typeof fakeLlm>, unknown, number, string]> = [
    ['validation', fakeLlm(), { prompt: '' }, 422, '{"error_msg":"`inputs` cannot be empty"}'],
    ['not ready', fakeLlm({ ready: false }), hi, 503, '{"error_msg":"servable fake has no ready replica"}'],
    ['overloaded', fakeLlm({ capacity: 0 }), [hi, hi], 429, '{"error_msg":"Model is overloaded"}'],
    ['replica crashed', fakeLlm({ answer: answerError('REPLICA_CRASHED', 'replica gone') }), hi, 503, '{"error_msg":"replica gone"}'],
    ['not found', fakeLlm({ answer: answerError('SERVABLE_NOT_FOUND', 'this servable has no LLM') }), hi, 404, '{"error_msg":"this servable has no LLM"}'],
    ['generation failed', fakeLlm({ answer: answerError('INFERENCE_FAILED', 'boom') }), hi, 500, '{"error_msg":"boom"}'],
  ]
  for (const [what, { llm }, instances, status, body] of cases) {
    assert.deepEqual(await call(llm, 'generate', instances), { status, body }, what)
  }
  // Instances fail on their own: one valid and one invalid is a 200 with a per-instance error.
  const mixed = fakeLlm()
  const r = await call(mixed.llm, 'generate', [hi, { prompt: '' }])
  assert.equal(r.status, 200)
  assert.deepEqual(JSON.parse(r.body).instances, [{ text: 'h', finish_reason: 'length', generated_tokens: 1, prompt_tokens: 3 }, { error_msg: '`inputs` cannot be empty' }])
  assert.equal(mixed.sent.length, 1, 'only the valid instance reached the replica')
  assert.deepEqual(await call(fakeLlm({ capacity: 0 }).llm, 'generated_stream', hi), { status: 429, body: '{"error_msg":"Model is overloaded"}' })
  assert.deepEqual(await call(fakeLlm({ ready: false }).llm, 'generated_stream', hi), { status: 503, body: '{"error_msg":"servable fake has no ready replica"}' })
  const invalid = fakeLlm()
  assert.deepEqual(await call(invalid.llm, 'generated_stream', { prompt: 'x', temperature: -1 }), { status: 422, body: '{"error_msg":"`temperature` must be strictly positive"}' })
  assert.equal(invalid.sent.length, 0)
})
