/** TGI /info and the /generate headers: a dispatcher over fake CUDA replicas (there is no GPU here to run one). */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { DoneEvent, GenerateEvent, TokenEvent } from '../../src/llm/types.ts'
import { ByteLevelTokenizer } from '../../src/llm/tokenizer.ts'
import { ChatTemplate } from '../../src/llm/chat-template.ts'
import { LlmDispatcher } from '../../src/runtime/llm-dispatch.ts'
import type { LiveServable } from '../../src/runtime/live-servable.ts'
import type { LlmInfo } from '../../src/runtime/messages.ts'
import type { ServableRegistry } from '../../src/runtime/registry.ts'
import { buildRestServer } from '../../src/protocol/rest/server.ts'
import { VERSION } from '../../src/version.ts'
import { ROOT } from '../helpers/server.ts'

const INFO: LlmInfo = {
  modelId: 'fake', maxInputTokens: 511, maxTotalTokens: 512, maxStopSequences: 4, maxTopNTokens: 5, maxBestOf: 2, maxConcurrentRequests: 8,
  maxBatchSize: 4, numLayers: 1, numKvHeads: 1, headDim: 8, kvDtype: 'float32', vocabSize: 259, presentMode: 'full',
}

const token: TokenEvent = { type: 'token', requestId: 'r', index: 1, id: 104, text: 'h', special: false, logprob: -0.5, last: true }
const done: DoneEvent = {
  type: 'done', requestId: 'r', finishReason: 'length', generatedText: 'h', generatedTokens: 1, inputTokens: 2, seed: null,
  timings: { queueMs: 1, firstTokenMs: 2, totalMs: 3 },
}

const tokenizer = new ByteLevelTokenizer()

/** A registry holding one LLM servable whose two replicas were planned on `deviceType`; each answers "h". */
function fakeRegistry(deviceType: string): ServableRegistry {
  const replicas = [0, 1].map((deviceId) => ({
    device: { deviceType, deviceId }, state: 'ready', llm: INFO, activeStreams: 0,
    generate(_req: unknown, onEvent: (ev: GenerateEvent) => void) { setImmediate(() => { onEvent(token); onEvent(done) }); return 1 },
    cancel() {},
  }))
  const live = { name: 'fake', version: 1, ready: true, replicas } as unknown as LiveServable
  const llm = new LlmDispatcher(live, { tokenizer, chatTemplate: new ChatTemplate(tokenizer.config) })
  return { llm: () => llm, llms: () => [llm], all: () => [], failed: new Map() } as unknown as ServableRegistry
}

test('/info: device type from the replicas\' device plan, client batch size 1, version from package.json', async (t) => {
  const app = buildRestServer({ registry: fakeRegistry('cuda'), maxMsgMb: 1, always200: false })
  t.after(() => app.close())
  const info = (await app.inject({ method: 'GET', url: '/info' })).json()
  assert.equal(info.model_device_type, 'cuda')
  // `inputs` must be one string: TGI's list-of-inputs batch does not exist here.
  assert.equal(info.max_client_batch_size, 1)
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
  assert.equal(VERSION, pkg.version)
  assert.equal(info.version, pkg.version)
  assert.equal(info.max_concurrent_requests, 16, 'per replica limit x 2 replicas')
})

test('/generate: x-compute-type is the replicas\' device type', async (t) => {
  for (const deviceType of ['cuda', 'cpu']) {
    const app = buildRestServer({ registry: fakeRegistry(deviceType), maxMsgMb: 1, always200: false })
    t.after(() => app.close())
    const r = await app.inject({ method: 'POST', url: '/generate', payload: JSON.stringify({ inputs: 'hi' }), headers: { 'content-type': 'application/json' } })
    assert.equal(r.statusCode, 200, r.body)
    assert.deepEqual(r.json(), { generated_text: 'h' })
    assert.equal(r.headers['x-compute-type'], deviceType)
    assert.equal(r.headers['x-generated-tokens'], '1')
  }
})
