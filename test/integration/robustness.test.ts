// The server never stalls, never hangs, never drops an answer (issue 8, part B), against the real
// CLI: big bodies, timeouts, a hung replica, shutdown under keep-alive load, slow clients,
// overload answered before parsing, client-fault errors, and one bad servable among good ones.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { once } from 'node:events'
import * as grpc from '@grpc/grpc-js'
import { Agent, request } from 'undici'
import { addServable, FIXTURE_SERVABLES, FIXTURES, floatJson, kInstance, kSum, writeServable, X1, X2 } from '../helpers/fixtures.ts'
import { postJson, runCli, servableStats, startServer, tempServables } from '../helpers/server.ts'
import { Client, type ClientError } from '../../src/client/index.ts'
import { MS_PREDICT_PATH } from '../../src/protocol/grpc/ms-service.ts'
import { tensor } from '../../src/tensor.ts'
import { buildAddModel } from '../../src/models/index.ts'

const bodyOf = (n: number, k = 1) => floatJson({ instances: Array.from({ length: n }, () => kInstance(k)) })
const waitBody = (ms: number) => floatJson({ instances: [{ x1: [[ms, 0], [0, 0]], x2: X2 }] })
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true } catch { return false }
}

/** Polls `cond` every 50 ms for at most `ms`; returns whether it became true. */
async function within(ms: number, cond: () => boolean | Promise<boolean>): Promise<boolean> {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await cond()) return true
    await sleep(50)
  }
  return cond()
}

async function replicaPid(rest: string, name: string): Promise<number> {
  const s = await servableStats<{ replicas: Array<{ pid: number }> }>(rest, name)
  return s.replicas[0]!.pid
}

test('big bodies: an over-limit body is refused naming the limit; a large one parses off-thread and answers', async (t) => {
  const dir = tempServables(t)
  addServable(dir)
  const srv = await startServer(dir, ['--no-watch'])
  t.after(() => srv.stop())
  const url = `${srv.rest}/model/add:add_common`
  // 200k instances (11 MB) against the default limit of 10000, while small requests keep coming.
  const big = postJson(url, bodyOf(200_000))
  const small = await Promise.all(Array.from({ length: 20 }, (_, k) => postJson(url, bodyOf(1, k))))
  for (const [k, r] of small.entries()) assert.deepEqual(r.json.instances[0].y, kSum(k))
  const refused = await big
  assert.equal(refused.status, 400)
  assert.match(refused.json.error_msg, /more than 10000 instances, the limit of servable add/)
  // 5000 instances (280 KB): over the inline threshold, parsed in the worker, every result right.
  const large = await postJson(url, bodyOf(5000, 3))
  assert.equal(large.status, 200)
  assert.equal(large.json.instances.length, 5000)
  assert.deepEqual(large.json.instances[4999].y, kSum(3))
  assert.match(srv.output(), /Serving RESTful server start success/)
})

test('gRPC: instance limit from the server config, malformed protobuf is INVALID_ARGUMENT', async (t) => {
  const dir = tempServables(t)
  addServable(dir)
  const srv = await startServer(dir, ['--no-watch', '--max-instances-per-request', '3'])
  t.after(() => srv.stop())
  const client = new Client({ grpc: srv.grpc })
  t.after(() => client.close())
  const inst = { x1: tensor('float32', [2, 2], X1.flat()), x2: tensor('float32', [2, 2], X2.flat()) }
  const ok = await client.predict('add', 'add_common', [inst, inst, inst])
  assert.ok(ok.length === 3 && ok.every((r) => r.outputs))
  // MindSpore shape: status OK with error_msg, thrown by the client as a whole-request error.
  await assert.rejects(client.predict('add', 'add_common', [inst, inst, inst, inst]), (e: ClientError) => e.grpcCode === grpc.status.OK && /more than 3 instances/.test(e.message))
  // Bytes that are no PredictRequest (a truncated length-delimited field).
  const raw = new grpc.Client(srv.grpc, grpc.credentials.createInsecure())
  t.after(() => raw.close())
  const err = await new Promise<grpc.ServiceError>((resolve, reject) => {
    raw.makeUnaryRequest(MS_PREDICT_PATH, (b: Buffer) => b, (b: Buffer) => b, Buffer.from([0x12, 0x7f, 0x01]), (e) => (e ? resolve(e) : reject(new Error('expected an error'))))
  })
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT)
  assert.match(err.details, /malformed PredictRequest/)
})

test('timeouts: x-request-timeout-ms answers 504 and its queued work is dropped; overload is answered before parsing', async (t) => {
  const dir = tempServables(t)
  FIXTURE_SERVABLES['stall']!(dir)
  const srv = await startServer(dir, ['--no-watch'])
  t.after(() => srv.stop())
  const url = `${srv.rest}/model/stall:wait`
  // Two 1.5 s requests fill the replica (one instance per batch, two batches in flight).
  const busy = [postJson(url, waitBody(1500)), postJson(url, waitBody(1500))]
  await within(3000, async () => (await servableStats<any>(srv.rest, 'stall')).replicas[0].inflightInstances === 2)
  const res = await fetch(url, { method: 'POST', body: waitBody(0), headers: { 'x-request-timeout-ms': '150' } })
  assert.equal(res.status, 504)
  assert.match((await res.json() as { error_msg: string }).error_msg, /did not finish within its timeout of 150 ms/)
  // Fill the queue (limit 2), then a body that is not even JSON: 429, so it was never parsed.
  const queued = [postJson(url, waitBody(10)), postJson(url, waitBody(10))]
  await within(3000, async () => (await servableStats<any>(srv.rest, 'stall')).methods.wait.queued >= 2)
  const flood = await postJson(url, 'not json at all')
  assert.equal(flood.status, 429)
  assert.match(flood.json.error_msg, /enqueued requests count exceeds the limit 2/)
  for (const r of await Promise.all([...busy, ...queued])) assert.equal(r.status, 200)
  const st = await servableStats<any>(srv.rest, 'stall')
  // 2 busy + 2 queued ran; the timed-out request's instance never reached a replica.
  assert.equal(st.methods.wait.batches, 4)
  const bad = await fetch(url, { method: 'POST', body: waitBody(0), headers: { 'x-request-timeout-ms': 'soon' } })
  assert.equal(bad.status, 400)
})

test('server-wide --request-timeout-ms and a gRPC deadline end requests with 504 / DEADLINE_EXCEEDED', async (t) => {
  const dir = tempServables(t)
  FIXTURE_SERVABLES['stall']!(dir)
  const srv = await startServer(dir, ['--no-watch', '--request-timeout-ms', '200'])
  t.after(() => srv.stop())
  const r = await postJson(`${srv.rest}/model/stall:wait`, waitBody(2000))
  assert.equal(r.status, 504)
  const client = new Client({ grpc: srv.grpc })
  t.after(() => client.close())
  const inst = { x1: tensor('float32', [2, 2], [1500, 0, 0, 0]), x2: tensor('float32', [2, 2], X2.flat()) }
  await assert.rejects(client.predict('stall', 'wait', inst, { timeoutMs: 100 }), (e: ClientError) => e.grpcCode === grpc.status.DEADLINE_EXCEEDED && e.code === 'TIMEOUT')
})

test('a hung replica (SIGSTOP, a stage that never returns) is detected, its request fails, it restarts and serves', async (t) => {
  const dir = tempServables(t)
  FIXTURE_SERVABLES['stall']!(dir)
  const srv = await startServer(dir, ['--no-watch', '--watchdog-ms', '1000', '--isolation', 'process'])
  t.after(() => srv.stop())
  const url = `${srv.rest}/model/stall:wait`
  const pid = await replicaPid(srv.rest, 'stall')
  const inflight = postJson(url, waitBody(300))
  process.kill(pid, 'SIGSTOP')
  t.after(() => { if (alive(pid)) process.kill(pid, 'SIGKILL') })
  // /stats and /metrics answer while it is stopped.
  const stats = await fetch(`${srv.rest}/stats`, { signal: AbortSignal.timeout(3000) })
  assert.equal(stats.status, 200)
  const metrics = await fetch(`${srv.rest}/metrics`, { signal: AbortSignal.timeout(3000) })
  assert.equal(metrics.status, 200)
  const failed = await inflight
  assert.equal(failed.status, 503)
  assert.match(failed.json.error_msg, /no heartbeat for \d+ ms/)
  assert.ok(await within(5000, () => !alive(pid)), 'the stopped replica is killed')
  assert.ok(await within(10_000, async () => (await postJson(url, waitBody(0))).status === 200), 'a new replica serves')
  // A stage in an endless loop: same outcome.
  const spinPid = await replicaPid(srv.rest, 'stall')
  const spun = await postJson(`${srv.rest}/model/stall:spin`, floatJson({ instances: [{ x1: [[-1, 0], [0, 0]], x2: X2 }] }))
  assert.equal(spun.status, 503)
  assert.ok(await within(5000, () => !alive(spinPid)))
  assert.ok(await within(10_000, async () => (await postJson(url, waitBody(0))).status === 200))
  assert.match(srv.output(), /hung: no heartbeat/)
})

test('LLM: /metrics and /stats answer while the engine replica is stopped', async (t) => {
  const dir = tempServables(t)
  const init = await runCli(['init', 'llm', '--dir', dir])
  assert.equal(init.code, 0, init.stderr)
  const srv = await startServer(dir, ['--no-watch', '--watchdog-ms', '0'])
  t.after(() => srv.stop())
  const pid = await replicaPid(srv.rest, 'llm')
  process.kill(pid, 'SIGSTOP')
  t.after(() => { if (alive(pid)) process.kill(pid, 'SIGKILL') })
  const metrics = await fetch(`${srv.rest}/metrics`, { signal: AbortSignal.timeout(5000) })
  assert.equal(metrics.status, 200)
  const stats = await fetch(`${srv.rest}/stats`, { signal: AbortSignal.timeout(5000) })
  assert.equal(stats.status, 200)
  process.kill(pid, 'SIGCONT')
})

test('SIGTERM under keep-alive load answers every request and resets no connection', async (t) => {
  const dir = tempServables(t)
  addServable(dir)
  const srv = await startServer(dir, ['--no-watch'])
  t.after(() => srv.stop())
  const agent = new Agent({ connections: 8, pipelining: 1 })
  t.after(() => agent.close())
  const url = `${srv.rest}/model/add:add_common`
  const errors: string[] = []
  let answered = 0
  let stop = false
  const client = async (k: number) => {
    while (!stop) {
      try {
        const res = await request(url, { method: 'POST', body: bodyOf(1, k), dispatcher: agent })
        const body = await res.body.json() as { instances: Array<{ y: unknown }> }
        assert.deepEqual(body.instances[0]!.y, kSum(k))
        answered++
      } catch (e) {
        const code = (e as { code?: string }).code ?? (e as Error).message
        // Refused = the listener is closed: the request was never accepted, nothing was dropped.
        if (code === 'ECONNREFUSED') return
        errors.push(code)
        return
      }
    }
  }
  const clients = Array.from({ length: 8 }, (_, k) => client(k))
  await sleep(500)
  const before = answered
  srv.proc.kill('SIGTERM')
  const [code] = await once(srv.proc, 'exit')
  stop = true
  await Promise.all(clients)
  assert.ok(before > 0)
  assert.deepEqual(errors, [], `requests failed during shutdown: ${errors.join(', ')}`)
  assert.equal(code, 0)
})

test('a second signal exits at once and ends the replicas; so does killing the server', async (t) => {
  const dir = tempServables(t)
  FIXTURE_SERVABLES['stall']!(dir)
  const srv = await startServer(dir, ['--no-watch', '--isolation', 'process'])
  t.after(() => srv.stop())
  const pid = await replicaPid(srv.rest, 'stall')
  void postJson(`${srv.rest}/model/stall:wait`, waitBody(20_000)).catch(() => undefined)
  await sleep(200)
  srv.proc.kill('SIGTERM')
  await sleep(200)
  srv.proc.kill('SIGTERM')
  const [code] = await once(srv.proc, 'exit')
  assert.equal(code, 130)
  assert.ok(await within(2000, () => !alive(pid)), 'the replica ends with the server')

  const again = await startServer(dir, ['--no-watch', '--isolation', 'process'])
  t.after(() => again.stop())
  const pid2 = await replicaPid(again.rest, 'stall')
  again.proc.kill('SIGKILL')
  assert.ok(await within(3000, () => !alive(pid2)), 'a replica notices its parent is gone')
})

/** Opens a raw connection and resolves with what the server sent once it closes it (or null after `ms`). */
function rawConnection(addr: string, ms: number): { sock: Socket; closed: Promise<string | null> } {
  const u = new URL(addr)
  const sock = connect(Number(u.port), u.hostname)
  let got = ''
  sock.on('data', (d) => { got += d })
  sock.on('error', () => undefined)
  const closed = new Promise<string | null>((resolve) => {
    const t = setTimeout(() => resolve(null), ms)
    sock.on('close', () => { clearTimeout(t); resolve(got) })
  })
  return { sock, closed }
}

test('slow clients: slow headers and slow bodies are cut with 408; --max-connections caps connections', async (t) => {
  const dir = tempServables(t)
  addServable(dir)
  const srv = await startServer(dir, ['--no-watch', '--headers-timeout-ms', '1000', '--body-timeout-ms', '1500', '--max-connections', '3'])
  t.after(() => srv.stop())
  const headers = rawConnection(srv.rest, 6000)
  headers.sock.write('POST /model/add:add_common HTTP/1.1\r\nHost: x\r\n')
  const body = rawConnection(srv.rest, 6000)
  body.sock.write('POST /model/add:add_common HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{')
  const drip = setInterval(() => body.sock.write(' '), 300)
  t.after(() => clearInterval(drip))
  const [h, b] = await Promise.all([headers.closed, body.closed])
  clearInterval(drip)
  assert.notEqual(h, null, 'slow headers were cut')
  assert.notEqual(b, null, 'a body dripping one byte at a time was cut')
  assert.match(b!, /408/)
  // Three idle connections fill the cap; a fourth is dropped without an answer.
  const held = [rawConnection(srv.rest, 3000), rawConnection(srv.rest, 3000), rawConnection(srv.rest, 3000)]
  await Promise.all(held.map((c) => once(c.sock, 'connect')))
  await sleep(100)
  const extra = rawConnection(srv.rest, 3000)
  extra.sock.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n')
  assert.equal(await extra.closed, '', 'over the cap: closed, nothing answered')
  for (const c of held) c.sock.destroy()
  // The server frees their places once it sees them close: give it that moment before the next connect.
  await Promise.all(held.map((c) => c.closed))
  await sleep(200)
  assert.equal((await postJson(`${srv.rest}/model/add:add_common`, bodyOf(1, 2))).status, 200)
})

test('client faults are 400: a stage raising InvalidInputError, a float beyond float32', async (t) => {
  const dir = tempServables(t)
  addServable(dir)
  const srv = await startServer(dir, ['--no-watch'])
  t.after(() => srv.stop())
  const cast = await postJson(`${srv.rest}/model/add:add_cast`, floatJson({ instances: [{ x1: 'abc', x2: X2 }] }))
  assert.equal(cast.status, 400)
  assert.equal(cast.json.error_msg, "Call Preprocess Failed, method: 'add_cast', stage index(begin with 1): 1, error msg: input x1 must be a numeric tensor")
  const big = await postJson(`${srv.rest}/model/add:add_common`, '{"instances":[{"x1":[[1e39,2.0],[3.0,4.0]],"x2":[[5.0,6.0],[7.0,8.0]]}]}')
  assert.equal(big.status, 400)
  assert.match(big.json.error_msg, /1e\+39 is out of float32 range/)
  const edge = await postJson(`${srv.rest}/model/add:add_common`, '{"instances":[{"x1":[[3.4028234e38,2.0],[3.0,4.0]],"x2":[[0.0,0.0],[0.0,0.0]]}]}')
  assert.equal(edge.status, 200, 'FLT_MAX itself is fine')
})

test('one servable that fails to load is reported unavailable; the others serve; --strict exits 2', async (t) => {
  const dir = tempServables(t)
  addServable(dir)
  addServable(dir, 'broken')
  writeFileSync(join(dir, 'broken', '1', 'add.onnx'), 'this is not an onnx model')
  const srv = await startServer(dir, ['--no-watch'])
  t.after(() => srv.stop())
  assert.match(srv.output(), /servable broken is unavailable, it failed to load: .*broken.*add\.onnx/)
  assert.equal((await postJson(`${srv.rest}/model/add:add_common`, bodyOf(1, 1))).status, 200)
  const down = await postJson(`${srv.rest}/model/broken:add_common`, bodyOf(1, 1))
  assert.equal(down.status, 503)
  assert.equal(down.json.error_msg, 'Request servable(broken) method(add_common) , servable is not available')
  const stats = await (await fetch(`${srv.rest}/stats`)).json() as { unavailable: Array<{ name: string; error: string }> }
  assert.deepEqual(stats.unavailable.map((u) => u.name), ['broken'])
  assert.equal((await fetch(`${srv.rest}/v2/health/ready`)).status, 503)
  assert.equal((await fetch(`${srv.rest}/v2/models/add/ready`)).status, 200)
  assert.equal((await fetch(`${srv.rest}/v2/models/broken/ready`)).status, 503)
  assert.equal((await fetch(`${srv.rest}/v2/models/nosuch/ready`)).status, 404)

  const strict = await runCli(['start', dir, '--strict', '--no-watch', '--grpc', '127.0.0.1:0', '--rest', '127.0.0.1:0'])
  assert.equal(strict.code, 2)
  assert.match(strict.stderr, /broken\/servable_config\.ts:\d+: cannot load model .*broken\/1\/add\.onnx/)
})

test('limits per servable: YAML servables.<name> over servable_config.ts over the server-wide YAML; each applies to its servable only', async (t) => {
  const dir = tempServables(t)
  addServable(dir)
  FIXTURE_SERVABLES['stall']!(dir)
  // `patient`: the stall fixture with a wider queue and its own limits in defineServable's options.
  const stallConfig = readFileSync(join(FIXTURES, 'stall', 'servable_config.ts'), 'utf8')
  const patientConfig = join(dir, 'patient.servable_config.ts')
  writeFileSync(patientConfig, stallConfig.replace('maxQueueSize: 2', 'maxQueueSize: 100').replace(/\}\)\s*$/, '}, { requestTimeoutMs: 200, maxInstancesPerRequest: 3 })\n'))
  writeServable(dir, 'patient', patientConfig, { 1: { 'add.onnx': buildAddModel({ batchDim: true }) } })
  const config = join(dir, 'server.yaml')
  writeFileSync(config, [
    'max_instances_per_request: 2',
    'servables:',
    '  stall: { request_timeout_ms: 300 }',
    '  patient: { request_timeout_ms: 5000 }   # over its servable_config.ts (200)',
    '  stal: { watchdog_ms: 2000 }             # no such servable: a warning',
    '',
  ].join('\n'))
  const srv = await startServer(dir, ['--no-watch', '--config', config])
  t.after(() => srv.stop())
  const waits = (ms: number, n = 1) => floatJson({ instances: Array.from({ length: n }, () => ({ x1: [[ms, 0], [0, 0]], x2: X2 })) })
  assert.match(srv.output(), /warning: \S*server\.yaml: servables\.stal names no servable in the servable directory .*; did you mean "stall"\?/)
  // Timeouts: stall's own 300 ms; patient's YAML 5000 ms beats its config's 200 ms.
  const [slowStall, slowPatient] = await Promise.all([postJson(`${srv.rest}/model/stall:wait`, waits(1000)), postJson(`${srv.rest}/model/patient:wait`, waits(600))])
  assert.equal(slowStall.status, 504)
  assert.match(slowStall.json.error_msg, /did not finish within its timeout of 300 ms/)
  assert.equal(slowPatient.status, 200, slowPatient.text)
  // Instance limits: server-wide 2 for add; patient's config says 3 (the YAML entry leaves it alone).
  const addOver = await postJson(`${srv.rest}/model/add:add_common`, bodyOf(3))
  assert.equal(addOver.status, 400)
  assert.match(addOver.json.error_msg, /more than 2 instances, the limit of servable add/)
  assert.equal((await postJson(`${srv.rest}/model/add:add_common`, bodyOf(2))).status, 200)
  assert.equal((await postJson(`${srv.rest}/model/patient:wait`, waits(0, 3))).status, 200)
  const patientOver = await postJson(`${srv.rest}/model/patient:wait`, waits(0, 4))
  assert.equal(patientOver.status, 400)
  assert.match(patientOver.json.error_msg, /more than 3 instances, the limit of servable patient/)
})

test('a server YAML limit that is misspelt or out of range exits 2 naming the file, the key and the fix', async (t) => {
  const dir = tempServables(t)
  addServable(dir)
  const config = join(dir, 'server.yaml')
  const run = () => runCli(['start', dir, '--no-watch', '--grpc', '127.0.0.1:0', '--rest', '127.0.0.1:0', '--config', config])
  writeFileSync(config, 'servables:\n  add: { requestTimeoutMs: 100 }\n')
  const typo = await run()
  assert.equal(typo.code, 2, typo.stdout + typo.stderr)
  assert.match(typo.stderr, /^ms-serve: \S+server\.yaml: unknown key "servables\.add\.requestTimeoutMs"; did you mean "request_timeout_ms"\? Known keys: /)
  writeFileSync(config, 'watchdog_ms: 100\n')
  const range = await run()
  assert.equal(range.code, 2)
  assert.match(range.stderr, /^ms-serve: \S+server\.yaml: watchdog_ms must be 0 \(off\) or an integer in 1000\.\.2147483647 \(got 100\)\n$/)
  // A flag wins over the file; the two REST timeouts must still agree, wherever each was set.
  writeFileSync(config, 'body_timeout_ms: 5000\n')
  const order = await run()
  assert.equal(order.code, 2)
  assert.match(order.stderr, /^ms-serve: --headers-timeout-ms \(10000, the default\) > \S+server\.yaml: body_timeout_ms \(5000\): .*; raise /)
})
