// The client library (src/client) against the real CLI over both transports: predict outputs and
// dtypes that round-trip exactly, MindSpore's error semantics (per-instance errors beside outputs,
// whole-request errors thrown), generate streams equal to the non-stream text, cancellation by
// `break` and by AbortSignal freeing the engine, servables() and health() alike over REST and gRPC.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { postJson, runCli, startServer, type StartedServer } from '../helpers/server.ts'
import { addServable, FIXTURE_SERVABLES } from '../helpers/fixtures.ts'
import { grpcPredictTarget } from '../../src/bench/grpc-target.ts'
import { Client, ClientError, tensor, type GenerateEvent, type InstanceResult, type ServablesDescription, type Value } from '../../src/client/index.ts'

const X1 = tensor('float32', [2, 2], [1.5, 2, 3, 4])
const X2 = tensor('float32', [2, 2], [5.25, 6.6, 7, 8])

/** The outputs of every instance; fails on any error. */
function outputsOf(r: InstanceResult[]): Record<string, Value>[] {
  return r.map((x, i) => {
    assert.equal(x.error, undefined, `instance ${i} failed: ${x.error}`)
    return x.outputs!
  })
}

/** Rejects with a ClientError whose fields include `expected`. */
async function rejectsWith(p: Promise<unknown>, expected: Partial<ClientError>): Promise<ClientError> {
  let caught: unknown
  await assert.rejects(p, (e) => { caught = e; return true })
  assert.ok(caught instanceof ClientError, `expected a ClientError, got ${caught}`)
  for (const [k, v] of Object.entries(expected)) assert.deepEqual((caught as unknown as Record<string, unknown>)[k], v, `${k} of ${(caught as Error).message}`)
  return caught as ClientError
}

async function collect(events: AsyncIterable<GenerateEvent>): Promise<{ tokens: Array<{ id: number; text: string; index: number }>; done: GenerateEvent & { type: 'done' } }> {
  const tokens: Array<{ id: number; text: string; index: number }> = []
  for await (const ev of events) {
    if (ev.type === 'token') tokens.push({ id: ev.id, text: ev.text, index: ev.index })
    else return { tokens, done: ev }
  }
  throw new Error('no done event')
}

describe('Client', () => {
  let dir = ''
  let srv: StartedServer
  let rest: Client
  let grpc: Client
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ms-serve-client-'))
    addServable(dir)
    FIXTURE_SERVABLES['errors']!(dir)
    FIXTURE_SERVABLES['dtypes']!(dir)
    const r = await runCli(['init', 'llm', '--dir', dir])
    assert.equal(r.code, 0, r.stderr)
    srv = await startServer(dir, ['--devices', '0', '--no-watch'])
    rest = new Client({ url: srv.rest })
    grpc = new Client({ grpc: srv.grpc })
  })
  after(async () => {
    await rest?.close()
    await grpc?.close()
    await srv?.stop()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  /** The LLM engines' requests still queued or running, and the tokens they generated so far (GET /stats). */
  async function llmStats(): Promise<{ busy: number; generated: number }> {
    type Engine = { running: number; queued: number; generatedTokens: number }
    const stats = await (await fetch(`${srv.rest}/stats`)).json() as { llms: Array<{ name: string; replicas: Array<{ active: number; engine: Engine }> }> }
    const llm = stats.llms.find((l) => l.name === 'llm')!
    return {
      busy: llm.replicas.reduce((a, r) => a + r.active + r.engine.running + r.engine.queued, 0),
      generated: llm.replicas.reduce((a, r) => a + r.engine.generatedTokens, 0),
    }
  }

  /** Waits until the engine is idle; returns the tokens generated since `before`. */
  async function tokensUntilIdle(before: number): Promise<number> {
    for (let i = 0; i < 200; i++) {
      const s = await llmStats()
      if (s.busy === 0) return s.generated - before
      await new Promise((r) => setTimeout(r, 50))
    }
    return assert.fail('the cancelled request never left the engine')
  }

  test('predict: the add servable gives the same float32 outputs over REST and gRPC', async () => {
    const instances = [{ x1: X1, x2: X2 }, { x1: X2, x2: X2 }, { x1: X1, x2: X1 }]
    const [a, b] = await Promise.all([rest.predict('add', 'add_common', instances), grpc.predict('add', 'add_common', instances)])
    assert.deepEqual(outputsOf(a), outputsOf(b))
    const y = outputsOf(a).map((o) => o['y'])
    instances.forEach(({ x1, x2 }, i) => {
      assert.deepEqual(y[i], tensor('float32', [2, 2], Array.from(x1.data as Float32Array, (v, k) => v + (x2.data as Float32Array)[k]!)))
    })
    // One instance object (not a list) is one instance.
    assert.deepEqual(outputsOf(await rest.predict('add', 'add_common', { x1: X1, x2: X2 })), [outputsOf(a)[0]])
  })

  test('predict: float16, int64, float64 and bool round-trip exactly over both transports', async () => {
    const inst = {
      // 1, 0.0999755859375 (the float16 nearest 0.1), the largest finite float16 (-65504).
      h: tensor('float16', [3], new Uint16Array([0x3c00, 0x2e66, 0xfbff])),
      i: tensor('int64', [3], [2n ** 62n + 1n, -(2n ** 63n), 7n]),
      d: tensor('float64', [2], [0.1, 1e300]),
      b: tensor('bool', [2], [1, 0]),
    }
    for (const c of [rest, grpc]) {
      const [out] = outputsOf(await c.predict('dtypes', 'echo', [inst]))
      assert.deepEqual(out, inst, c.transport)
    }
  })

  test('predict: strings and bytes through a TS stage, and the int32 it returns, alike over both', async () => {
    const inst = { text: 'héllo', raw: new Uint8Array([1, 2, 255]) }
    const [a, b] = [outputsOf(await rest.predict('errors', 'echo', inst)), outputsOf(await grpc.predict('errors', 'echo', inst))]
    assert.deepEqual(a, b)
    assert.equal(a[0]!['text'], 'héllo!')
    assert.deepEqual([...(a[0]!['raw'] as Uint8Array)], [255, 2, 1])
    assert.deepEqual(a[0]!['size'], tensor('int32', [], [3]))
  })

  test('predict: a failed instance is { error } beside the good ones (MindSpore status over gRPC)', async () => {
    const bad = tensor('float32', [3], [1, 2, 3])
    const message = 'Given model input 1 size 12 not match the size 16 defined in model'
    const instances = [{ x1: X1, x2: X2 }, { x1: X1, x2: bad }, { x1: X2, x2: X2 }]
    const r = await rest.predict('add', 'add_common', instances)
    const g = await grpc.predict('add', 'add_common', instances)
    assert.deepEqual(r[1], { error: message })
    assert.deepEqual(g[1], { error: message, msStatus: 2 })
    for (const res of [r, g]) {
      assert.deepEqual(res[0]!.outputs, outputsOf(await rest.predict('add', 'add_common', instances[0]!))[0])
      assert.deepEqual(res[2]!.outputs!['y'], tensor('float32', [2, 2], [10.5, 13.2, 14, 16]))
    }
  })

  test('predict: a whole-request error throws a ClientError with the server\'s message and status', async () => {
    const message = 'Request servable(add) method(add_nope) , method is not available'
    await rejectsWith(rest.predict('add', 'add_nope', { x1: X1, x2: X2 }), { message, code: 'SERVABLE_NOT_FOUND', httpStatus: 404, transport: 'rest' })
    await rejectsWith(grpc.predict('add', 'add_nope', { x1: X1, x2: X2 }), { message, code: 'INVALID_REQUEST', msStatus: 2, grpcCode: 0, transport: 'grpc' })
    // Every instance failing alike is one error for the whole request (MindSpore's collapse).
    const i32 = tensor('int32', [2, 2], [1, 2, 3, 4])
    const dtypeMsg = 'Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model'
    await rejectsWith(rest.predict('add', 'add_common', [{ x1: i32, x2: X2 }, { x1: i32, x2: X2 }]), { message: dtypeMsg, httpStatus: 400, code: 'INVALID_REQUEST' })
    await rejectsWith(grpc.predict('add', 'add_common', [{ x1: i32, x2: X2 }, { x1: i32, x2: X2 }]), { message: dtypeMsg, msStatus: 2 })
    await rejectsWith(rest.predict('nope', 'm', { x: 'a' }), { message: 'Request servable(nope) method(m) , servable is not available', httpStatus: 404 })
  })

  test('predict: a value that is no Tensor, string or bytes is refused before sending', async () => {
    const notAValue = { x1: [1, 2] as unknown as Value }
    await rejectsWith(rest.predict('add', 'add_common', notAValue), { code: 'INVALID_REQUEST', httpStatus: undefined })
    await rejectsWith(grpc.predict('add', 'add_common', notAValue), { code: 'INVALID_REQUEST', grpcCode: undefined })
  })

  test('generate: REST (TGI and the MindSpore-style route) and gRPC streams equal the non-stream text (greedy)', async () => {
    const whole = await postJson(`${srv.rest}/generate`, { inputs: 'Hello there', parameters: { max_new_tokens: 12, do_sample: false, details: true } })
    assert.equal(whole.status, 200, whole.text)
    const expected = { text: whole.json.generated_text as string, ids: (whole.json.details.tokens as Array<{ id: number }>).map((t) => t.id) }
    const runs = {
      tgi: await collect(rest.generate('Hello there', { maxNewTokens: 12 })),
      msStyle: await collect(rest.generate('Hello there', { maxNewTokens: 12 }, { servable: 'llm' })),
      grpc: await collect(grpc.generate('Hello there', { maxNewTokens: 12 }, { servable: 'llm' })),
      grpcDefault: await collect(grpc.generate('Hello there', { maxNewTokens: 12 })),
    }
    for (const [name, r] of Object.entries(runs)) {
      assert.equal(r.done.generatedText, expected.text, name)
      assert.equal(r.tokens.map((t) => t.text).join(''), expected.text, `${name}: the token texts make the text`)
      assert.deepEqual(r.tokens.map((t) => t.id), expected.ids, name)
      assert.deepEqual(r.tokens.map((t) => t.index), expected.ids.map((_, i) => i), `${name}: 0-based positions`)
      assert.equal(r.done.generatedTokens, expected.ids.length, name)
      assert.equal(r.done.finishReason, whole.json.details.finish_reason, name)
    }
  })

  test('generate: topNTokens and logprobs; token-id prompts over gRPC; what a transport lacks is refused', async () => {
    const events: GenerateEvent[] = []
    for await (const ev of grpc.generate('Top', { maxNewTokens: 3, topNTokens: 2 })) events.push(ev)
    const tokens = events.filter((e) => e.type === 'token')
    assert.equal(tokens.length, 3)
    for (const t of tokens) {
      assert.equal(t.topTokens?.length, 2)
      assert.equal(t.topTokens![0]!.id, t.id, 'greedy: the chosen token is the most likely')
      assert.ok(Number.isFinite(t.logprob) && t.logprob <= 0)
    }
    const byText = await collect(rest.generate('Top', { maxNewTokens: 3, topNTokens: 2 }))
    assert.deepEqual(byText.tokens.map((t) => t.id), tokens.map((t) => t.id))
    const ids = await collect(grpc.generate({ inputIds: [72, 105] }, { maxNewTokens: 3 }))
    assert.equal(ids.tokens.length, 3)
    await rejectsWith(collect(rest.generate({ inputIds: [72, 105] })), { code: 'UNSUPPORTED' })
    await rejectsWith(collect(grpc.generate('x', { frequencyPenalty: 0.5 })), { code: 'UNSUPPORTED' })
    // A server-side validation error: its status and message, before any token.
    const tooLong = await rejectsWith(collect(rest.generate('x', { maxNewTokens: 100_000 })), { code: 'VALIDATION', httpStatus: 422 })
    assert.match(tooLong.message, /max_new_tokens/)
    await rejectsWith(collect(grpc.generate('x', { maxNewTokens: 100_000 })), { code: 'INVALID_REQUEST', grpcCode: 3 })
    await rejectsWith(collect(grpc.generate('x', {}, { servable: 'nope' })), { code: 'SERVABLE_NOT_FOUND', grpcCode: 5 })
  })

  test('generate: breaking out of the loop or aborting the signal cancels the request on the server', async () => {
    // A request that ran to the end would generate all 400 tokens (greedy, no EOS in this text).
    const long = { maxNewTokens: 400 }
    for (const c of [rest, grpc]) {
      let before = (await llmStats()).generated
      let seen = 0
      for await (const ev of c.generate('long story', { ...long, ...(c === rest ? { ignoreEos: true } : {}) })) {
        if (ev.type === 'done') assert.fail('the stream should not have finished')
        if (++seen === 2) break
      }
      assert.ok(await tokensUntilIdle(before) < 400, `${c.transport}: break cancelled the request`)

      before = (await llmStats()).generated
      const ac = new AbortController()
      const got: GenerateEvent[] = []
      const err = await rejectsWith((async () => {
        for await (const ev of c.generate('long story', long, { servable: 'llm', signal: ac.signal })) {
          got.push(ev)
          if (got.length === 2) ac.abort()
        }
      })(), { code: 'CANCELLED', transport: c.transport })
      assert.match(err.message, /cancelled/)
      assert.equal(got.length, 2, 'no event after the abort')
      assert.ok(await tokensUntilIdle(before) < 400, `${c.transport}: the abort cancelled the request`)
    }
    // The same request not cancelled runs to its end; the server answers as before.
    const whole = await collect(grpc.generate('long story', long, { servable: 'llm' }))
    assert.equal(whole.done.generatedTokens, 400)
    assert.equal((await collect(rest.generate('after', { maxNewTokens: 2 }))).tokens.length, 2)
  })

  test('chat (REST): the stream\'s deltas make the whole answer; a gRPC-only client is told to pass url', async () => {
    const messages = [{ role: 'user', content: 'Hi' }] as const
    const whole = await rest.chat([...messages], { maxTokens: 6, temperature: 0 })
    assert.equal(whole.role, 'assistant')
    assert.ok(['stop', 'length'].includes(whole.finishReason))
    assert.equal(whole.usage!.totalTokens, whole.usage!.promptTokens + whole.usage!.completionTokens)
    let text = ''
    let finish = ''
    let completionTokens = -1
    for await (const d of rest.chat([...messages], { maxTokens: 6, temperature: 0 }, { stream: true, servable: 'llm' })) {
      text += d.content ?? ''
      if (d.finishReason) finish = d.finishReason
      if (d.usage) completionTokens = d.usage.completionTokens
    }
    assert.equal(text, whole.content)
    assert.equal(finish, whole.finishReason)
    assert.equal(completionTokens, whole.usage!.completionTokens)
    const e = await rejectsWith(grpc.chat([...messages]), { code: 'UNSUPPORTED' })
    assert.match(e.message, /chat needs the REST address.*url/)
    const it = grpc.chat([...messages], {}, { stream: true })[Symbol.asyncIterator]()
    await rejectsWith(it.next(), { code: 'UNSUPPORTED' })
    await rejectsWith(rest.chat([...messages], { maxTokens: 100_000 }), { httpStatus: 422 })
  })

  test('servables(): the same description over REST and gRPC (REST adds the LLM engine info)', async () => {
    const [r, g] = await Promise.all([rest.servables(), grpc.servables()])
    const withoutLlm = (d: ServablesDescription) => ({ ...d, servables: d.servables.map((s) => ({ ...s, versions: s.versions.map(({ llm: _l, ...v }) => v) })) })
    assert.deepEqual(withoutLlm(r), g)
    assert.deepEqual(r.servables.map((s) => s.name), ['add', 'dtypes', 'errors', 'llm'])
    const add = g.servables.find((s) => s.name === 'add')!.versions[0]!
    assert.deepEqual(add.methods.find((m) => m.name === 'add_common')!.outputs, [{ name: 'y', dtype: 'float32', shape: [2, 2] }])
    assert.deepEqual(add.replicas.map((x) => [x.device, x.state]), [['cpu:0', 'ready']])
    assert.ok(r.servables.find((s) => s.name === 'llm')!.versions[0]!.llm, 'REST carries the engine info')
    assert.deepEqual(g.unavailable, [])
  })

  test('health(): live and ready over both; an unreachable server is { live: false }; errors name the address', async () => {
    assert.deepEqual(await rest.health(), { live: true, ready: true })
    assert.deepEqual(await grpc.health(), { live: true, ready: true })
    await rejectsWith(collect(rest.generate('x', {}, { version: 1 })), { code: 'INVALID_REQUEST' })
    const downRest = new Client({ url: 'http://127.0.0.1:1' })
    const downGrpc = new Client({ grpc: '127.0.0.1:1' })
    try {
      const h = await downRest.health()
      assert.equal(h.live, false)
      assert.match(h.error!, /cannot reach http:\/\/127\.0\.0\.1:1: connection refused/)
      assert.equal((await downGrpc.health()).live, false)
      await rejectsWith(downRest.predict('add', 'add_common', { x1: X1, x2: X2 }), { code: 'UNREACHABLE', message: 'cannot reach http://127.0.0.1:1: connection refused' })
      await rejectsWith(downGrpc.predict('add', 'add_common', { x1: X1, x2: X2 }), { code: 'UNREACHABLE', message: 'cannot reach 127.0.0.1:1 (gRPC): connection refused' })
      await rejectsWith(collect(downGrpc.generate('x')), { code: 'UNREACHABLE' })
    } finally {
      await downRest.close()
      await downGrpc.close()
    }
  })

  test('the bench\'s gRPC target sends prebuilt requests through the client\'s transport', async () => {
    const target = (instances: Record<string, Value>[], method = 'add_common') => grpcPredictTarget({ address: srv.grpc, servable: 'add', method, version: 0, requests: [instances], timeoutMs: 5000 })
    const ok = target([{ x1: X1, x2: X2 }])
    const bad = target([{ x1: X1, x2: X2 }, { x1: X1, x2: tensor('float32', [3], [1, 2, 3]) }])
    const none = target([{ x1: X1, x2: X2 }], 'add_nope')
    try {
      assert.deepEqual(await ok.send(), { error: null })
      assert.deepEqual(await bad.send(), { error: { kind: 'ms_error', message: 'Given model input 1 size 12 not match the size 16 defined in model' } })
      assert.deepEqual(await none.send(), { error: { kind: 'ms_error', message: 'Request servable(add) method(add_nope) , method is not available' } })
    } finally {
      await Promise.all([ok.close(), bad.close(), none.close()])
    }
    const down = grpcPredictTarget({ address: '127.0.0.1:1', servable: 'add', method: 'add_common', version: 0, requests: [[{ x1: X1, x2: X2 }]], timeoutMs: 5000 })
    assert.equal((await down.send()).error?.kind, 'grpc_UNAVAILABLE')
    await down.close()
  })

  test('a MindSpore-like REST server without GET /servables: predict reads JSON dtypes; servables() is UNSUPPORTED', async () => {
    // As MindSpore Serving: every answer is 200; a GET gets its POST-only error.
    const fake = createServer((req, res) => {
      let body = ''
      req.on('data', (d) => { body += d })
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' })
        if (req.method !== 'POST') return res.end('{"error_msg":"http message only support POST right now"}')
        if (!req.url!.endsWith(':add_common')) return res.end('{"error_msg":"Request servable(add) method(x) , method is not available"}')
        const n = (JSON.parse(body) as { instances: unknown[] }).instances.length
        res.end(JSON.stringify({ instances: Array.from({ length: n }, (_, i) => (i === 1 ? { error_msg: 'bad' } : { y: 'Y' })) }).replaceAll('"Y"', '[[2.0,4.5],[6.0,8.0]]'))
      })
    })
    fake.listen(0, '127.0.0.1')
    await once(fake, 'listening')
    const c = new Client({ url: `http://127.0.0.1:${(fake.address() as { port: number }).port}` })
    try {
      const r = await c.predict('add', 'add_common', [{ x1: X1, x2: X2 }, { x1: X1, x2: X2 }])
      assert.deepEqual(r, [{ outputs: { y: tensor('float32', [2, 2], [2, 4.5, 6, 8]) } }, { error: 'bad' }])
      await rejectsWith(c.predict('add', 'x', { x1: X1 }), { message: 'Request servable(add) method(x) , method is not available', httpStatus: 200, code: 'UNKNOWN' })
      await rejectsWith(c.servables(), { code: 'UNSUPPORTED' })
    } finally {
      await c.close()
      fake.close()
    }
  })

  test('both addresses: transport picks; an aborted signal cancels before sending', async () => {
    const both = new Client({ url: srv.rest, grpc: srv.grpc, transport: 'grpc' })
    try {
      assert.equal(both.transport, 'grpc')
      await rejectsWith(both.predict('add', 'add_nope', { x1: X1, x2: X2 }), { transport: 'grpc', msStatus: 2 })
      // chat goes to REST even when the predict transport is gRPC.
      assert.equal((await both.chat([{ role: 'user', content: 'Hi' }], { maxTokens: 2 })).role, 'assistant')
      const aborted = AbortSignal.abort()
      await rejectsWith(both.predict('add', 'add_common', { x1: X1, x2: X2 }, { signal: aborted }), { code: 'CANCELLED' })
      await rejectsWith(rest.predict('add', 'add_common', { x1: X1, x2: X2 }, { signal: aborted }), { code: 'CANCELLED' })
    } finally {
      await both.close()
    }
    assert.throws(() => new Client({}), /needs an address/)
    assert.throws(() => new Client({ url: 'ftp://x' }), /http:\/\//)
  })
})
