// LLM serving through the real CLI: MindSpore-style, TGI and OpenAI routes, gRPC streaming,
// validation errors, overload, cancellation. Uses the tiny seeded decoder from `init llm`.
import { generateClient } from '../helpers/grpc-generate.ts'
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import OpenAI from 'openai'
import { ROOT, postJson as post, runCli, startServer, type StartedServer } from '../helpers/server.ts'
import { FIXTURES, writeServable } from '../helpers/fixtures.ts'
import { BUILTIN_MODELS } from '../../src/models/index.ts'

interface SseEvent { data: string }

async function sse(url: string, body: unknown, opts: { signal?: AbortSignal; maxEvents?: number } = {}): Promise<{ status: number; events: any[]; raw: string[] }> {
  const res = await fetch(url, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' }, signal: opts.signal })
  if (!res.headers.get('content-type')?.includes('text/event-stream')) return { status: res.status, events: [await res.json()], raw: [] }
  const events: any[] = []
  const raw: string[] = []
  const reader = res.body!.getReader()
  const dec = new TextDecoder()
  let buf = ''
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    buf += dec.decode(value, { stream: true })
    let i: number
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const chunk = buf.slice(0, i)
      buf = buf.slice(i + 2)
      const data = chunk.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n')
      raw.push(data)
      if (data !== '[DONE]') events.push(JSON.parse(data) as SseEvent)
      if (opts.maxEvents && events.length >= opts.maxEvents) { await reader.cancel(); return { status: res.status, events, raw } }
    }
  }
  return { status: res.status, events, raw }
}

describe('LLM routes', () => {
  let dir: string
  let srv: StartedServer
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ms-serve-llm-'))
    const r = await runCli(['init', 'llm', '--dir', dir])
    assert.equal(r.code, 0, r.stderr)
    writeServable(dir, 'limited', join(FIXTURES, 'llm_small_limits', 'servable_config.ts'), { 1: { 'model.onnx': BUILTIN_MODELS.decoder_tiny!() } })
    srv = await startServer(dir, ['--devices', '0,1', '--default-llm', 'llm'])
  })
  after(async () => {
    await srv?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test('MindSpore-style :generate and :generated_stream agree under greedy decoding', async () => {
    const inst = { prompt: 'Hello', max_new_tokens: 12, ignore_eos: true }
    const whole = await post(`${srv.rest}/model/llm:generate`, { instances: inst })
    assert.equal(whole.status, 200)
    const r = whole.json.instances[0]
    assert.equal(r.finish_reason, 'length')
    assert.equal(r.generated_tokens, 12)
    const s = await sse(`${srv.rest}/model/llm:generated_stream`, { instances: inst })
    assert.equal(s.status, 200)
    assert.equal(s.events.length, 12)
    s.events.forEach((e, i) => assert.equal(e.index, i + 1))
    const last = s.events.at(-1)
    assert.equal(last.text, r.text)
    assert.equal(last.finish_reason, 'length')
    assert.equal(s.events.map((e) => e.token).join(''), r.text)
    // Two instances in one request: each answered, in order.
    const two = await post(`${srv.rest}/model/llm:generate`, { instances: [inst, { ...inst, max_new_tokens: 3 }] })
    assert.equal(two.json.instances[0].text, r.text)
    assert.equal(two.json.instances[1].generated_tokens, 3)
  })

  test('TGI /generate and /generate_stream: shapes, details, greedy determinism', async () => {
    const body = { inputs: 'The cache', parameters: { max_new_tokens: 10, details: true, ignore_eos: true, do_sample: false } }
    const a = await post(`${srv.rest}/generate`, body)
    assert.equal(a.status, 200)
    assert.equal(a.json.details.finish_reason, 'length')
    assert.equal(a.json.details.generated_tokens, 10)
    assert.equal(a.json.details.tokens.length, 10)
    const b = await post(`${srv.rest}/generate`, body)
    assert.equal(b.json.generated_text, a.json.generated_text, 'greedy output is deterministic across replicas')
    const s = await sse(`${srv.rest}/generate_stream`, body)
    assert.equal(s.events.length, 10)
    for (const e of s.events.slice(0, -1)) { assert.equal(e.generated_text, null); assert.equal(e.details, null) }
    const last = s.events.at(-1)
    assert.equal(last.generated_text, a.json.generated_text)
    assert.equal(last.details.finish_reason, 'length')
    assert.deepEqual(s.events.map((e) => e.token.id), a.json.details.tokens.map((t: any) => t.id))
    const compat = await post(`${srv.rest}/`, body)
    assert.ok(Array.isArray(compat.json) && compat.json[0].generated_text === a.json.generated_text)
  })

  test('TGI top_n_tokens: details.top_tokens per token, top_tokens on stream events; typical_p samples', async () => {
    const body = { inputs: 'Top tokens', parameters: { max_new_tokens: 6, details: true, ignore_eos: true, top_n_tokens: 3 } }
    const a = await post(`${srv.rest}/generate`, body)
    assert.equal(a.status, 200)
    const d = a.json.details
    assert.equal(d.top_tokens.length, 6, 'one list per generated token')
    d.top_tokens.forEach((top: any[], i: number) => {
      assert.equal(top.length, 3)
      for (const t of top) assert.deepEqual(Object.keys(t).sort(), ['id', 'logprob', 'special', 'text'])
      assert.ok(top[0].logprob >= top[1].logprob && top[1].logprob >= top[2].logprob)
      assert.equal(top[0].id, d.tokens[i].id, 'greedy: the chosen token is the first alternative')
      assert.equal(top[0].logprob, d.tokens[i].logprob)
    })
    const plain = await post(`${srv.rest}/generate`, { ...body, parameters: { ...body.parameters, top_n_tokens: undefined } })
    assert.equal(plain.json.generated_text, a.json.generated_text)
    assert.equal('top_tokens' in plain.json.details, false, 'omitted when not asked for')
    const s = await sse(`${srv.rest}/generate_stream`, body)
    assert.equal(s.events.length, 6)
    assert.deepEqual(s.events.map((e) => e.top_tokens), d.top_tokens, 'every event, the last included, carries its top tokens')
    const ps = await sse(`${srv.rest}/generate_stream`, { ...body, parameters: { ...body.parameters, top_n_tokens: 0 } })
    assert.ok(ps.events.every((e) => !('top_tokens' in e)))
    // typical_p implies sampling (seed reported) and is reproducible with a seed.
    const t = { inputs: 'Typical', parameters: { max_new_tokens: 10, typical_p: 0.5, seed: 3, details: true, ignore_eos: true } }
    const [t1, t2] = await Promise.all([post(`${srv.rest}/generate`, t), post(`${srv.rest}/generate`, t)])
    assert.equal(t1.status, 200)
    assert.equal(t1.json.generated_text, t2.json.generated_text)
    assert.equal(t1.json.details.seed, 3)
    // decoder_input_details stays unsupported; the MindSpore-style route has no place for top tokens.
    const di = await post(`${srv.rest}/generate`, { inputs: 'x', parameters: { decoder_input_details: true } })
    assert.deepEqual(di.json, { error: 'Input validation error: `decoder_input_details` == true is not supported by ms-serve', error_type: 'validation' })
    const dis = await post(`${srv.rest}/generate_stream`, { inputs: 'x', parameters: { decoder_input_details: true } })
    assert.equal(dis.json.error, 'Input validation error: `decoder_input_details` == true is not supported when streaming tokens')
    const ms = await post(`${srv.rest}/model/llm:generate`, { instances: { prompt: 'x', top_n_tokens: 2 } })
    assert.equal(ms.status, 422)
    assert.equal(ms.json.error_msg, '`top_n_tokens` != 0 is not allowed for this endpoint')
  })

  test('greedy output is the same alone and when joining a running batch beside other prompt lengths', async () => {
    const prompts = ['a', 'a somewhat longer prompt', 'mid length', 'x'.repeat(70)]
    const body = (p: string, n: number) => ({ inputs: p, parameters: { max_new_tokens: n, ignore_eos: true } })
    const alone: string[] = []
    for (const p of prompts) alone.push((await post(`${srv.rest}/generate`, body(p, 24))).json.generated_text)
    // A long request runs first; the others join it mid-way, at different steps.
    const long = post(`${srv.rest}/generate`, body('the long one', 120))
    const joined: Promise<{ json: any }>[] = []
    for (const p of prompts) {
      await new Promise((r) => setTimeout(r, 15))
      joined.push(post(`${srv.rest}/generate`, body(p, 24)))
    }
    const results = await Promise.all(joined)
    results.forEach((r, i) => assert.equal(r.json.generated_text, alone[i], `prompt ${i} changed when batched`))
    assert.equal((await long).json.generated_text.length > 0, true)
  })

  test('seeded sampling is reproducible; stop sequences end with stop_sequence', async () => {
    const p = { inputs: 'Seed test', parameters: { max_new_tokens: 16, do_sample: true, temperature: 0.9, seed: 42, ignore_eos: true } }
    const a = await post(`${srv.rest}/generate`, p)
    const b = await post(`${srv.rest}/generate`, p)
    assert.equal(a.json.generated_text, b.json.generated_text)
    const greedy = await post(`${srv.rest}/generate`, { inputs: 'Stop here', parameters: { max_new_tokens: 20, ignore_eos: true, details: true } })
    const text: string = greedy.json.generated_text
    const clean = [...text].filter((c) => c !== '\ufffd').join('')
    const stop = clean.slice(4, 6)
    assert.ok(stop.length === 2, `need printable output to pick a stop sequence from: ${JSON.stringify(text)}`)
    const stopped = await post(`${srv.rest}/generate`, { inputs: 'Stop here', parameters: { max_new_tokens: 20, ignore_eos: true, stop: [stop], details: true } })
    assert.equal(stopped.json.details.finish_reason, 'stop_sequence')
    assert.ok(stopped.json.generated_text.endsWith(stop))
    assert.ok(stopped.json.details.generated_tokens < 20)
  })

  test('validation errors are 422 with TGI texts; the server keeps serving', async () => {
    const cases: Array<[unknown, string]> = [
      [{ inputs: '' }, 'Input validation error: `inputs` cannot be empty'],
      [{ inputs: 'x', parameters: { max_new_tokens: 0 } }, 'Input validation error: `max_new_tokens` must be strictly positive'],
      [{ inputs: 'x', parameters: { temperature: -1 } }, 'Input validation error: `temperature` must be strictly positive'],
      [{ inputs: 'x', parameters: { top_p: 1.5 } }, 'Input validation error: `top_p` must be > 0.0 and < 1.0'],
      [{ inputs: 'x', parameters: { typical_p: 1.0 } }, 'Input validation error: `typical_p` must be > 0.0 and < 1.0'],
      [{ inputs: 'x', parameters: { typical_p: 0 } }, 'Input validation error: `typical_p` must be > 0.0 and < 1.0'],
      [{ inputs: 'x', parameters: { top_n_tokens: 6 } }, 'Input validation error: `top_n_tokens` must be >= 0 and <= 5. Given: 6'],
      [{ inputs: 'x', parameters: { watermark: true } }, 'Input validation error: `watermark` is not supported by ms-serve'],
      [{ inputs: 'x', parameters: { stop: ['a', 'b', 'c', 'd', 'e'] } }, 'Input validation error: `stop` supports up to 4 stop sequences. Given: 5'],
      [{ inputs: 'x'.repeat(600) }, 'Input validation error: `inputs` must have less than 511 tokens. Given: 601'],
      [{ inputs: 'hello', parameters: { max_new_tokens: 510 } }, 'Input validation error: `inputs` tokens + `max_new_tokens` must be <= 512. Given: 6 `inputs` tokens and 510 `max_new_tokens`'],
    ]
    for (const [body, msg] of cases) {
      for (const route of ['/generate', '/generate_stream']) {
        const r = await post(`${srv.rest}${route}`, body)
        assert.equal(r.status, 422, `${route} ${JSON.stringify(body)}`)
        assert.deepEqual(r.json, { error: msg, error_type: 'validation' })
      }
    }
    // best_of: TGI's texts; on streams the stream rule comes first.
    const sampled = { inputs: 'x', parameters: { do_sample: true } }
    const bestOfCases: Array<[unknown, string, string]> = [
      [{ inputs: 'x', parameters: { best_of: 2 } }, 'you must use sampling when `best_of` is > 1', '`best_of` != 1 is not supported when streaming tokens'],
      [{ ...sampled, parameters: { do_sample: true, best_of: 3 } }, '`best_of` must be > 0 and <= 2. Given: 3', '`best_of` != 1 is not supported when streaming tokens'],
      [{ ...sampled, parameters: { do_sample: true, best_of: 0 } }, '`best_of` must be > 0 and <= 2. Given: 0', '`best_of` must be > 0 and <= 2. Given: 0'],
      [{ ...sampled, parameters: { temperature: 0.8, best_of: 2, seed: 5 } }, '`seed` must not be set when `best_of` > 1', '`best_of` != 1 is not supported when streaming tokens'],
    ]
    for (const [body, msg, streamMsg] of bestOfCases) {
      for (const [route, m] of [['/generate', msg], ['/', msg], ['/generate_stream', streamMsg]] as const) {
        const r = await post(`${srv.rest}${route}`, route === '/' ? { ...(body as object), stream: false } : body)
        assert.equal(r.status, 422, `${route} ${JSON.stringify(body)}`)
        assert.deepEqual(r.json, { error: `Input validation error: ${m}`, error_type: 'validation' })
      }
    }
    const onStreamFlag = await post(`${srv.rest}/`, { inputs: 'x', stream: true, parameters: { do_sample: true, best_of: 2 } })
    assert.equal(onStreamFlag.json.error, 'Input validation error: `best_of` != 1 is not supported when streaming tokens')
    const msBestOf = await post(`${srv.rest}/model/llm:generate`, { instances: { prompt: 'x', do_sample: true, best_of: 2 } })
    assert.equal(msBestOf.json.error_msg, '`best_of` != 1 is not allowed for this endpoint')
    const badJson = await fetch(`${srv.rest}/generate`, { method: 'POST', body: '{"inputs":' })
    assert.equal(badJson.status, 422)
    const missing = await post(`${srv.rest}/generate`, { parameters: {} })
    assert.match(missing.json.error, /missing field `inputs`/)
    const ms = await post(`${srv.rest}/model/llm:generate`, { instances: { prompt: '' } })
    assert.equal(ms.status, 422)
    assert.equal(ms.json.error_msg, '`inputs` cannot be empty')
    // Chat messages are rendered and tokenized in the listener too: the template's tokens count.
    const chat = await post(`${srv.rest}/v1/chat/completions`, { model: 'llm', messages: [{ role: 'user', content: 'x'.repeat(500) }], stream: true })
    assert.equal(chat.status, 422)
    assert.equal(chat.json.error.message, 'Input validation error: `inputs` must have less than 511 tokens. Given: 524')
    // vLLM's top_k on the OpenAI routes: checked, and it samples (seeded: the same as TGI's top_k).
    for (const topK of [1.5, -2, 'x']) {
      const r = await post(`${srv.rest}/v1/chat/completions`, { model: 'llm', messages: [{ role: 'user', content: 'hi' }], top_k: topK })
      assert.ok(r.status === 400 || r.status === 422, `top_k ${topK}: ${r.status}`)
      assert.match(r.json.error.message, /`top_k` must be/)
    }
    const viaOpenAi = await post(`${srv.rest}/v1/completions`, { model: 'llm', prompt: 'Once upon', max_tokens: 12, temperature: 0.9, top_k: 3, seed: 11 })
    const viaTgi = await post(`${srv.rest}/generate`, { inputs: 'Once upon', parameters: { max_new_tokens: 12, temperature: 0.9, top_k: 3, seed: 11, do_sample: true } })
    assert.equal(viaOpenAi.json.choices[0].text, viaTgi.json.generated_text)
    const greedy = await post(`${srv.rest}/v1/completions`, { model: 'llm', prompt: 'Once upon', max_tokens: 12, temperature: 0 })
    for (const off of [-1, 0]) {
      const r = await post(`${srv.rest}/v1/completions`, { model: 'llm', prompt: 'Once upon', max_tokens: 12, temperature: 0, top_k: off })
      assert.equal(r.json.choices[0].text, greedy.json.choices[0].text, `top_k ${off} is off`)
    }
    const ok = await post(`${srv.rest}/generate`, { inputs: 'still up', parameters: { max_new_tokens: 2 } })
    assert.equal(ok.status, 200)
  })

  test('overload answers 429 at once instead of queueing without bound', async () => {
    // "limited": 2 replicas x maxConcurrentRequests 2 = 4 in flight at most.
    const reqs = Array.from({ length: 10 }, () => post(`${srv.rest}/v1/completions`, { model: 'limited', prompt: 'busy', max_tokens: 200, ignore_eos: true }))
    const res = await Promise.all(reqs)
    const codes = res.map((r) => r.status)
    assert.ok(codes.filter((c) => c === 429).length >= 1, `some requests refused: ${codes}`)
    assert.ok(codes.filter((c) => c === 200).length >= 4, `the ones admitted complete: ${codes}`)
    const refused = res.find((r) => r.status === 429)!
    assert.equal(refused.json.error.message, 'Model is overloaded')
    const tgi = await Promise.all(Array.from({ length: 8 }, () => post(`${srv.rest}/generate`, { inputs: 'x', parameters: { max_new_tokens: 100 } })))
    void tgi
    // The MindSpore-style route renders the overload with its own row (429), not as a validation 422.
    const ms = await Promise.all(Array.from({ length: 10 }, () => post(`${srv.rest}/model/limited:generate`, { instances: { prompt: 'busy', max_new_tokens: 200, ignore_eos: true } })))
    const msCodes = ms.map((r) => r.status)
    assert.ok(msCodes.includes(429) && msCodes.filter((c) => c === 200).length >= 4, `:generate under overload: ${msCodes}`)
    assert.equal(ms.find((r) => r.status === 429)!.text, '{"error_msg":"Model is overloaded"}')
    assert.ok(msCodes.every((c) => c === 200 || c === 429), `${msCodes}`)
  })

  test('a client that disconnects frees its slot', async () => {
    const ac = new AbortController()
    const s = await sse(`${srv.rest}/generate_stream`, { inputs: 'long', parameters: { max_new_tokens: 400, ignore_eos: true } }, { signal: ac.signal, maxEvents: 2 })
    assert.equal(s.events.length, 2)
    ac.abort()
    const deadline = Date.now() + 5000
    let running = -1
    while (Date.now() < deadline) {
      const stats = await (await fetch(`${srv.rest}/stats`)).json() as any
      const llm = stats.llms.find((l: any) => l.name === 'llm')
      running = llm.replicas.reduce((a: number, r: any) => a + r.active + r.engine.running + r.engine.queued, 0)
      if (running === 0) break
      await new Promise((r) => setTimeout(r, 50))
    }
    assert.equal(running, 0, 'the cancelled request left the engine')
  })

  test('the official openai client: chat and completions, streaming and not', async () => {
    const client = new OpenAI({ baseURL: `${srv.rest}/v1`, apiKey: 'unused' })
    const models = await client.models.list()
    assert.deepEqual(models.data.map((m) => m.id).sort(), ['llm', 'tiny-limited'])
    const chat = await client.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 6, temperature: 0 })
    assert.equal(chat.object, 'chat.completion')
    assert.equal(chat.choices[0]!.message.role, 'assistant')
    assert.ok(['stop', 'length'].includes(chat.choices[0]!.finish_reason))
    assert.equal(chat.usage!.total_tokens, chat.usage!.prompt_tokens + chat.usage!.completion_tokens)
    const stream = await client.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true } })
    let text = ''
    let finish: string | null = null
    let usage: any = null
    for await (const c of stream) {
      if (c.usage) usage = c.usage
      for (const ch of c.choices) { text += ch.delta.content ?? ''; finish = ch.finish_reason ?? finish }
    }
    assert.equal(text, chat.choices[0]!.message.content, 'streamed text equals the whole answer (greedy)')
    assert.equal(finish, chat.choices[0]!.finish_reason)
    assert.equal(usage.completion_tokens, chat.usage!.completion_tokens)
    const comp = await client.completions.create({ model: 'llm', prompt: 'Once', max_tokens: 5, temperature: 0 })
    assert.equal(comp.object, 'text_completion')
    const cs = await client.completions.create({ model: 'llm', prompt: 'Once', max_tokens: 5, temperature: 0, stream: true })
    let ctext = ''
    for await (const c of cs) ctext += c.choices[0]?.text ?? ''
    assert.equal(ctext, comp.choices[0]!.text)
    // Logprobs (OpenAI shapes): chat logprobs + top_logprobs, completions logprobs N.
    const lc = await client.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 2 })
    assert.equal(lc.choices[0]!.message.content, chat.choices[0]!.message.content)
    const content = lc.choices[0]!.logprobs!.content!
    assert.equal(content.map((c) => c.token).join(''), lc.choices[0]!.message.content)
    for (const c of content) {
      assert.equal(c.top_logprobs.length, 2)
      assert.equal(c.top_logprobs[0]!.logprob, c.logprob, 'greedy: the chosen token is the most likely')
      assert.deepEqual(c.bytes, [...Buffer.from(c.token, 'utf8')])
    }
    const lcs = await client.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 2, stream: true })
    const streamed: any[] = []
    for await (const c of lcs) for (const ch of c.choices) if (ch.logprobs?.content) streamed.push(...ch.logprobs.content)
    assert.deepEqual(streamed, content)
    await assert.rejects(client.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'Hi' }], logprobs: true, top_logprobs: 6 }),
      (e: any) => e.status === 422 && e.error.message === 'Input validation error: `top_n_tokens` must be >= 0 and <= 5. Given: 6')
    const lcomp = await client.completions.create({ model: 'llm', prompt: 'Once', max_tokens: 5, temperature: 0, logprobs: 3 })
    const l = lcomp.choices[0]!.logprobs!
    assert.equal(l.tokens!.join(''), lcomp.choices[0]!.text)
    assert.equal(l.token_logprobs!.length, l.tokens!.length)
    assert.deepEqual(l.text_offset, l.tokens!.map((_, i) => l.tokens!.slice(0, i).join('').length))
    l.top_logprobs!.forEach((o, i) => {
      assert.ok(Object.keys(o).length >= 1 && Object.keys(o).length <= 4)
      assert.equal(Math.max(...Object.values(o)), l.token_logprobs![i])
    })
    const lcompS = await client.completions.create({ model: 'llm', prompt: 'Once', max_tokens: 5, temperature: 0, logprobs: 3, stream: true })
    const st: any = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] }
    for await (const c of lcompS) { const x = c.choices[0]?.logprobs; if (x) for (const k of Object.keys(st)) st[k].push(...(x as any)[k]) }
    assert.deepEqual(st, l)
    await assert.rejects(client.completions.create({ model: 'llm', prompt: 'x', logprobs: 6 }), (e: any) => e.status === 422)
    // --default-llm makes any other name unambiguous: it is answered by the default (TGI answers any name).
    const placeholder = await client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }], max_tokens: 2 })
    assert.equal(placeholder.model, 'llm')
    await assert.rejects(client.completions.create({ model: 'llm', prompt: '', max_tokens: 5 }), (e: any) => e.status === 422)
  })

  test('gRPC msserve.v1.MsServe/Generate streams tokens', async () => {
    const { generate, close } = generateClient(srv.grpc)
    after(close)
    const events = await generate({ servable: 'llm', prompt: 'Hello', max_new_tokens: 5, typical_p: 0.9, seed: 1 })
    assert.equal(events.length, 5)
    assert.equal(events.at(-1).generated_tokens, 5)
    assert.ok(['length', 'eos_token'].includes(events.at(-1).finish_reason))
    assert.deepEqual(events.map((e) => e.generated_tokens), [1, 2, 3, 4, 5])
    assert.ok(events.every((e) => e.top_tokens.length === 0), 'no top tokens unless asked for')
    // Greedy with top_n_tokens: each event carries the alternatives, the chosen token first.
    const greedy = await generate({ servable: 'llm', prompt: 'Hello', max_new_tokens: 4, top_n_tokens: 3, do_sample: false })
    assert.equal(greedy.length, 4)
    for (const e of greedy) {
      assert.equal(e.top_tokens.length, 3)
      assert.equal(e.top_tokens[0].id, e.token_id)
      assert.ok(Math.abs(e.top_tokens[0].logprob - e.logprob) < 1e-5 && e.logprob <= 0, JSON.stringify(e))
      assert.ok(e.top_tokens[0].logprob >= e.top_tokens[1].logprob && e.top_tokens[1].logprob >= e.top_tokens[2].logprob)
    }
    const rest = await post(`${srv.rest}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 4, top_n_tokens: 3, details: true } })
    assert.deepEqual(greedy.map((e) => e.token_id), rest.json.details.tokens.map((t: any) => t.id), 'gRPC and REST agree under greedy decoding')
    const err: any = await generate({ servable: 'llm', prompt: '' }).then(() => null, (e: unknown) => e)
    assert.equal(err?.code, grpc.status.INVALID_ARGUMENT)
    assert.match(err.details, /`inputs` cannot be empty/)
  })

  test('/metrics reports the engines', async () => {
    const text = await (await fetch(`${srv.rest}/metrics`)).text()
    const generated = [...text.matchAll(/^msserve_llm_generated_tokens_total\{servable="llm"[^}]*\} (\d+)/gm)].map((m) => Number(m[1]))
    assert.equal(generated.length, 2, 'one sample per replica')
    assert.ok(generated.reduce((a, b) => a + b, 0) > 0)
    assert.match(text, /^msserve_llm_batch_current_size\{servable="limited"/m)
  })

  test('/info reports the limits', async () => {
    const info = await (await fetch(`${srv.rest}/info`)).json() as any
    assert.equal(info.max_total_tokens, 512)
    assert.equal(info.max_input_tokens, 511)
    assert.equal(info.model_pipeline_tag, 'text-generation')
    assert.equal(info.max_best_of, 2)
  })

  test('TGI best_of: the sequence with the highest summed logprob answers; the others are in best_of_sequences', async () => {
    const sum = (tokens: Array<{ logprob: number }>) => tokens.reduce((a, t) => a + t.logprob, 0)
    const body = { inputs: 'Best of', parameters: { max_new_tokens: 10, do_sample: true, temperature: 1.5, best_of: 2, details: true, top_n_tokens: 2 } }
    const r = await post(`${srv.rest}/generate`, body)
    assert.equal(r.status, 200, JSON.stringify(r.json))
    const d = r.json.details
    assert.equal(typeof r.json.generated_text, 'string')
    assert.equal(typeof d.seed, 'number')
    assert.equal(d.best_of_sequences.length, 1)
    const other = d.best_of_sequences[0]
    assert.deepEqual(Object.keys(other), ['generated_text', 'finish_reason', 'generated_tokens', 'seed', 'prefill', 'tokens', 'top_tokens'])
    assert.equal(typeof other.seed, 'number')
    assert.notEqual(other.seed, d.seed, 'each sequence draws its own seed')
    assert.equal(other.tokens.length, other.generated_tokens)
    assert.equal(other.top_tokens.length, other.generated_tokens)
    assert.ok(sum(d.tokens) >= sum(other.tokens), `chosen ${sum(d.tokens)} < other ${sum(other.tokens)}`)
    // Without details there is no best_of_sequences; POST / answers an array; return_full_text applies to every sequence.
    const plain = await post(`${srv.rest}/generate`, { inputs: 'Best of', parameters: { max_new_tokens: 4, do_sample: true, best_of: 2 } })
    assert.deepEqual(Object.keys(plain.json), ['generated_text'])
    const arr = await post(`${srv.rest}/`, { inputs: 'Best of', parameters: { max_new_tokens: 4, top_k: 10, best_of: 2, details: true, return_full_text: true } })
    assert.equal(arr.status, 200)
    assert.ok(arr.json[0].generated_text.startsWith('Best of'))
    assert.ok(arr.json[0].details.best_of_sequences[0].generated_text.startsWith('Best of'))
    assert.equal(arr.json[0].details.top_tokens, undefined)
  })
})
