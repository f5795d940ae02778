// Operating the server: TLS and mutual TLS on both listeners (certificates made with openssl, helpers/certs.ts),
// API keys on every route family and on gRPC (keys from the flag, a file and the environment), the
// gRPC health service and reflection, and structured logs carrying the request id end to end.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile, execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { protoPath as healthProto } from 'grpc-health-check'
import OpenAI from 'openai'
import { Agent } from 'undici'
import { addServable, writeServable } from '../helpers/fixtures.ts'
import { makeCertificates } from '../helpers/certs.ts'
import { logEvents, postJson, ROOT, startServer, type StartedServer } from '../helpers/server.ts'
import { generateClient } from '../helpers/grpc-generate.ts'
import { generateStubs } from '../helpers/python.ts'
import { Client, type ClientError } from '../../src/client/index.ts'
import { tensor } from '../../src/tensor.ts'
import { BUILTIN_MODELS } from '../../src/models/index.ts'

const run = promisify(execFile)
const X = () => tensor('float32', [2, 2], [1, 2, 3, 4])
// Floats written with a decimal point: MindSpore's JSON reads 1 as an integer, 1.0 as a float.
const ADD_BODY = '{"instances":[{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[[1.0,2.0],[3.0,4.0]]}]}'

function servables(dir: string): void {
  addServable(dir)
  const llmConfig = join(ROOT, 'templates', 'llm', 'servable_config.ts')
  const sdir = writeServable(dir, 'llm', llmConfig, { 1: { 'model.onnx': BUILTIN_MODELS.decoder_tiny!() } })
  writeFileSync(join(sdir, 'tokenizer_config.json'), readFileSync(join(ROOT, 'templates', 'llm', 'tokenizer_config.json')))
}

function healthClient(address: string, creds: grpc.ChannelCredentials) {
  const pkg = protoLoader.loadSync(healthProto, { keepCase: true, enums: String, defaults: true })
  const Health = (grpc.loadPackageDefinition(pkg) as any).grpc.health.v1.Health
  const c = new Health(address, creds)
  return {
    check: (service: string) => new Promise<any>((resolve, reject) => c.check({ service }, (e: unknown, r: unknown) => (e ? reject(e) : resolve(r)))),
    close: () => c.close(),
  }
}

/** The services server reflection lists (grpcurl's `list`). */
function reflectedServices(address: string, creds: grpc.ChannelCredentials): Promise<string[]> {
  const dir = join(ROOT, 'node_modules', '@grpc', 'reflection', 'build', 'proto', 'grpc', 'reflection', 'v1')
  const pkg = protoLoader.loadSync(join(dir, 'reflection.proto'), { keepCase: true, defaults: true, oneofs: true })
  const Reflection = (grpc.loadPackageDefinition(pkg) as any).grpc.reflection.v1.ServerReflection
  const c = new Reflection(address, creds)
  return new Promise((resolve, reject) => {
    const call = c.ServerReflectionInfo()
    call.on('data', (r: any) => { resolve(r.list_services_response.service.map((s: any) => s.name)); call.end(); c.close() })
    call.on('error', reject)
    call.write({ list_services: '' })
  })
}

describe('TLS, mutual TLS and an API key', () => {
  let dir: string
  let certs: ReturnType<typeof makeCertificates>
  let srv: StartedServer
  const KEY = 'tls-key-123'
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ms-serve-tls-'))
    certs = makeCertificates(dir)
    const sdir = join(dir, 'servables')
    servables(sdir)
    srv = await startServer(sdir, ['--devices', '0', '--no-watch', '--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, '--tls-ca', certs.ca, '--api-key', KEY, '--no-access-log'])
  })
  after(async () => {
    await srv?.stop()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })
  const https = () => srv.rest.replace('http://', 'https://')
  const curl = (...args: string[]) => run('curl', ['-sS', '--max-time', '20', '--cacert', certs.ca, ...args], { timeout: 30_000 })

  test('HTTPS with a client certificate answers; without one the handshake is refused', async () => {
    const { stdout } = await curl('--cert', certs.clientCert, '--key', certs.clientKey, '-H', `Authorization: Bearer ${KEY}`, '-X', 'POST', '-d', ADD_BODY, `${https()}/model/add:add_common`)
    assert.deepEqual(JSON.parse(stdout).instances[0].y, [[2, 4], [6, 8]])
    await assert.rejects(curl('-H', `Authorization: Bearer ${KEY}`, '-X', 'POST', '-d', ADD_BODY, `${https()}/model/add:add_common`))
    // Plain HTTP on the TLS port gets no answer.
    await assert.rejects(run('curl', ['-sS', '--max-time', '5', `${srv.rest}/v2/health/live`], { timeout: 10_000 }))
  })

  test('the official openai client over mutual TLS with apiKey', async () => {
    const dispatcher = new Agent({ connect: { ca: readFileSync(certs.ca), cert: readFileSync(certs.clientCert), key: readFileSync(certs.clientKey) } })
    const client = new OpenAI({ baseURL: `${https()}/v1`, apiKey: KEY, fetchOptions: { dispatcher } as any })
    const r = await client.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 })
    assert.equal(r.choices[0]!.message.role, 'assistant')
    const wrong = new OpenAI({ baseURL: `${https()}/v1`, apiKey: 'not-the-key', fetchOptions: { dispatcher } as any, maxRetries: 0 })
    await assert.rejects(wrong.models.list(), (e: any) => e.status === 401 && e.code === 'invalid_api_key')
    await dispatcher.close()
  })

  test('Node gRPC client: mutual TLS + key answers; no key is UNAUTHENTICATED; no client certificate is refused; health needs no key', async () => {
    const read = (p: string) => readFileSync(p)
    const mtls = grpc.credentials.createSsl(read(certs.ca), read(certs.clientKey), read(certs.clientCert))
    const tls = { ca: read(certs.ca), cert: read(certs.clientCert), key: read(certs.clientKey) }
    const ok = new Client({ grpc: srv.grpc, tls, apiKey: KEY })
    const [r] = await ok.predict('add', 'add_common', { x1: X(), x2: X() })
    assert.ok(r?.outputs, r?.error)
    await ok.close()
    const noKey = new Client({ grpc: srv.grpc, tls })
    await assert.rejects(noKey.predict('add', 'add_common', { x1: X(), x2: X() }), (e: ClientError) => e.grpcCode === grpc.status.UNAUTHENTICATED && e.code === 'UNAUTHENTICATED' && /API key/.test(e.message))
    await noKey.close()
    const noCert = new Client({ grpc: srv.grpc, tls: { ca: tls.ca }, apiKey: KEY })
    await assert.rejects(noCert.predict('add', 'add_common', { x1: X(), x2: X() }, { timeoutMs: 5000 }), (e: ClientError) => e.grpcCode === grpc.status.UNAVAILABLE || e.grpcCode === grpc.status.DEADLINE_EXCEEDED)
    await noCert.close()
    // The client over HTTPS with a client certificate: predict and readiness.
    const https = new Client({ url: srv.rest.replace('http://', 'https://'), tls, apiKey: KEY })
    assert.deepEqual(await https.health(), { live: true, ready: true })
    assert.deepEqual((await https.predict('add', 'add_common', { x1: X(), x2: X() }))[0]!.outputs!['y'], tensor('float32', [2, 2], [2, 4, 6, 8]))
    await https.close()
    const h = healthClient(srv.grpc, mtls)
    assert.equal((await h.check('')).status, 'SERVING')
    h.close()
    // --no-access-log: requests leave no line; events still do.
    await new Promise((r) => setTimeout(r, 400))
    const events = logEvents(srv.output())
    assert.ok(events.some((e) => e.event === 'listening' && e.protocol === 'https' && e.client_certificates === true))
    assert.ok(!events.some((e) => e.event === 'access'), 'no access lines')
  })

  test('Python grpcio client over mutual TLS', async () => {
    const stubs = join(dir, 'stubs')
    execFileSync('mkdir', ['-p', stubs])
    generateStubs(stubs)
    const { stdout } = await run('/usr/bin/python3', [join(ROOT, 'test', 'fixtures', 'python', 'tls_client.py'), srv.grpc, certs.ca, certs.clientCert, certs.clientKey, KEY], { env: { ...process.env, PYTHONPATH: stubs }, timeout: 60_000 })
    const out = JSON.parse(stdout)
    assert.deepEqual(out.ok, { y: [2, 4, 6, 8], error: [] })
    assert.equal(out.no_key.code, 'UNAUTHENTICATED')
    assert.equal(out.no_client_cert.code, 'UNAVAILABLE')
  })
})

describe('API keys on every route family, health, reflection and logs', () => {
  let dir: string
  let srv: StartedServer
  const [FLAG_KEY, FILE_KEY, ENV_KEY] = ['flag-key', 'file-key', 'env-key']
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ms-serve-keys-'))
    writeFileSync(join(dir, 'keys.txt'), `# one key per line\n${FILE_KEY}\n\n`)
    const sdir = join(dir, 'servables')
    servables(sdir)
    process.env.MS_SERVE_API_KEY = ENV_KEY
    try {
      srv = await startServer(sdir, ['--devices', '0', '--no-watch', '--api-key', FLAG_KEY, '--api-key-file', join(dir, 'keys.txt'), '--log-level', 'debug'])
    } finally {
      delete process.env.MS_SERVE_API_KEY
    }
  })
  after(async () => {
    await srv?.stop()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })
  const get = (path: string, headers: Record<string, string> = {}) => fetch(`${srv.rest}${path}`, { headers })
  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${srv.rest}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) })

  test('401 in each family\'s error shape without a key or with a wrong one; every configured key works', async () => {
    const ms = await post('/model/add:add_common', ADD_BODY)
    assert.equal(ms.status, 401)
    assert.equal(ms.headers.get('www-authenticate'), 'Bearer')
    assert.match((await ms.json()).error_msg, /requires an API key/)
    const tgi = await post('/generate', { inputs: 'hi', parameters: { max_new_tokens: 2 } }, { authorization: 'Bearer wrong' })
    assert.equal(tgi.status, 401)
    assert.deepEqual(await tgi.json(), { error: 'the API key is not valid: send Authorization: Bearer <key> with a key the server was started with', error_type: 'authentication' })
    const oa = await post('/v1/completions', { prompt: 'hi' }, { authorization: 'Basic abc' })
    assert.equal(oa.status, 401)
    assert.equal((await oa.json()).error.code, 'invalid_api_key')
    for (const path of ['/info', '/v1/models', '/stats']) assert.equal((await get(path)).status, 401, path)
    for (const key of [FLAG_KEY, FILE_KEY, ENV_KEY]) {
      const r = await post('/model/add:add_common', ADD_BODY, { authorization: `Bearer ${key}` })
      assert.equal(r.status, 200, key)
    }
    const client = new OpenAI({ baseURL: `${srv.rest}/v1`, apiKey: FILE_KEY })
    assert.ok((await client.models.list()).data.some((m) => m.id === 'llm'))
    const tgiOk = await post('/generate', { inputs: 'hi', parameters: { max_new_tokens: 2 } }, { authorization: `bearer ${ENV_KEY}` })
    assert.equal(tgiOk.status, 200)
  })

  test('health, readiness and /metrics stay open', async () => {
    for (const path of ['/health', '/v2/health/live', '/v2/health/ready', '/v2/models/add/ready', '/v2/models/add/versions/1/ready', '/metrics']) {
      assert.equal((await get(path)).status, 200, path)
    }
    assert.equal((await get('/v2/models/nope/ready')).status, 404)
  })

  test('gRPC: Predict and Generate need the key; health reports per servable; reflection lists the services', async () => {
    const insecure = grpc.credentials.createInsecure()
    const bad = new Client({ grpc: srv.grpc, apiKey: 'wrong' })
    await assert.rejects(bad.predict('add', 'add_common', { x1: X(), x2: X() }), (e: ClientError) => e.grpcCode === grpc.status.UNAUTHENTICATED && /not valid/.test(e.message))
    await bad.close()
    const good = new Client({ grpc: srv.grpc, apiKey: FLAG_KEY })
    assert.ok((await good.predict('add', 'add_common', { x1: X(), x2: X() }))[0]!.outputs)
    await good.close()
    const gen = generateClient(srv.grpc, insecure)
    await assert.rejects(gen.generate({ servable: 'llm', prompt: 'hi', max_new_tokens: 2 }), (e: any) => e.code === grpc.status.UNAUTHENTICATED)
    gen.close()
    const genOk = generateClient(srv.grpc, insecure, { authorization: `Bearer ${ENV_KEY}`, 'x-request-id': 'req-gen-9' })
    const evs = await genOk.generate({ servable: 'llm', prompt: 'hi', max_new_tokens: 2 })
    assert.equal(evs.at(-1).generated_tokens, 2)
    let line: Record<string, any> | undefined
    for (let i = 0; i < 30 && !line; i++) {
      line = logEvents(srv.output()).find((e) => e.event === 'access' && e.request_id === 'req-gen-9')
      if (!line) await new Promise((r) => setTimeout(r, 100))
    }
    assert.deepEqual([line?.rpc, line?.servable, line?.generated_tokens], ['/msserve.v1.MsServe/Generate', 'llm', 2])
    genOk.close()
    const h = healthClient(srv.grpc, insecure)
    for (const s of ['', 'add', 'llm', 'add/1', 'mindspore.serving.proto.MSService', 'msserve.v1.MsServe']) assert.equal((await h.check(s)).status, 'SERVING', s)
    await assert.rejects(h.check('nope'), (e: any) => e.code === grpc.status.NOT_FOUND)
    h.close()
    const services = await reflectedServices(srv.grpc, insecure)
    for (const s of ['mindspore.serving.proto.MSService', 'msserve.v1.MsServe', 'grpc.health.v1.Health']) assert.ok(services.includes(s), services.join(', '))
  })

  test('JSON log lines: access lines carry the request id (kept from x-request-id, echoed back) end to end; the key never appears', async () => {
    const mine = await post('/model/add:add_common', ADD_BODY, { authorization: `Bearer ${FLAG_KEY}`, 'x-request-id': 'req-ms-1' })
    assert.equal(mine.headers.get('x-request-id'), 'req-ms-1')
    const made = await post('/model/add:add_common', ADD_BODY, { authorization: `Bearer ${FLAG_KEY}`, 'x-request-id': 'bad id with spaces' })
    const madeId = made.headers.get('x-request-id')!
    assert.match(madeId, /^[0-9a-f-]{36}$/, 'an unusable id is replaced')
    const chat = await post('/v1/chat/completions', { model: 'llm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 }, { authorization: `Bearer ${FLAG_KEY}`, 'x-request-id': 'req-llm-7' })
    assert.equal(chat.status, 200)
    const usage = (await chat.json()).usage
    const md = new Client({ grpc: srv.grpc, apiKey: FLAG_KEY, headers: { 'x-request-id': 'req-grpc-3' } })
    await md.predict('add', 'add_common', { x1: X(), x2: X() })
    await md.close()
    // Lines are written as they happen; give the last ones a moment to arrive.
    let events: Array<Record<string, any>> = []
    for (let i = 0; i < 50; i++) {
      events = logEvents(srv.output())
      if (events.some((e) => e.event === 'llm_request' && e.request_id === 'req-llm-7') && events.some((e) => e.request_id === 'req-grpc-3')) break
      await new Promise((r) => setTimeout(r, 100))
    }
    const access = (id: string) => events.find((e) => e.event === 'access' && e.request_id === id)
    assert.deepEqual(
      (({ protocol, family, http_method, url, status, servable, method, instances }) => ({ protocol, family, http_method, url, status, servable, method, instances }))(access('req-ms-1')!),
      { protocol: 'rest', family: 'mindspore', http_method: 'POST', url: '/model/add:add_common', status: 200, servable: 'add', method: 'add_common', instances: 1 },
    )
    assert.equal(typeof access('req-ms-1')!.duration_ms, 'number')
    assert.ok(access(madeId))
    const llm = access('req-llm-7')!
    assert.equal(llm.family, 'openai')
    assert.equal(llm.servable, 'llm')
    assert.equal(llm.input_tokens, usage.prompt_tokens)
    assert.equal(llm.generated_tokens, usage.completion_tokens)
    // The replica's engine line (debug) names the same request.
    const engine = events.find((e) => e.event === 'llm_request' && e.request_id === 'req-llm-7')
    assert.ok(engine, 'engine line with the request id')
    assert.equal(engine.generated_tokens, usage.completion_tokens)
    assert.match(String(engine.replica), /^llm@1 cpu:0$/)
    const g = access('req-grpc-3')!
    assert.equal(g.protocol, 'grpc')
    assert.equal(g.rpc, '/mindspore.serving.proto.MSService/Predict')
    assert.equal(g.grpc_status, 0)
    assert.deepEqual([g.servable, g.method, g.instances], ['add', 'add_common', 1])
    // Startup events are structured too.
    assert.ok(events.some((e) => e.event === 'servable_ready' && e.servable === 'add' && e.version === 1))
    assert.ok(events.some((e) => e.event === 'listening' && e.protocol === 'grpc' && e.api_key === true))
    for (const key of [FLAG_KEY, FILE_KEY, ENV_KEY]) assert.ok(!srv.output().includes(key), `key ${key} in the log`)
  })
})

describe('log settings from the environment', () => {
  test('MS_SERVE_LOG_FORMAT=pretty applies when no flag is given; --log-format and --log-level win over the environment', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'ms-serve-logenv-'))
    t.after(() => rmSync(dir, { recursive: true, force: true }))
    addServable(dir)
    const saved = { format: process.env.MS_SERVE_LOG_FORMAT, level: process.env.MS_SERVE_LOG_LEVEL }
    process.env.MS_SERVE_LOG_FORMAT = 'pretty'
    let pretty: StartedServer | undefined
    let flagged: StartedServer | undefined
    try {
      pretty = await startServer(dir, ['--no-watch'])
      flagged = await startServer(dir, ['--no-watch', '--log-format', 'json'])
    } finally {
      if (saved.format === undefined) delete process.env.MS_SERVE_LOG_FORMAT; else process.env.MS_SERVE_LOG_FORMAT = saved.format
    }
    try {
      assert.match(pretty.output(), /INFO: Serving RESTful server start success, listening on 127\.0\.0\.1:\d+\n/)
      assert.equal(logEvents(pretty.output()).length, 0, 'no JSON lines')
      assert.ok(logEvents(flagged.output()).some((e) => e.event === 'listening'), '--log-format json wins over the environment')
    } finally {
      await pretty.stop()
      await flagged.stop()
    }
    process.env.MS_SERVE_LOG_LEVEL = 'warn'
    let quiet: StartedServer | undefined
    try {
      quiet = await startServer(dir, ['--no-watch', '--log-level', 'info'])
    } finally {
      if (saved.level === undefined) delete process.env.MS_SERVE_LOG_LEVEL; else process.env.MS_SERVE_LOG_LEVEL = saved.level
    }
    await quiet.stop()
    assert.ok(logEvents(quiet.output()).some((e) => e.event === 'listening'), 'the flag --log-level info wins over MS_SERVE_LOG_LEVEL=warn')
  })
})
