// Replicas and dynamic batching against the real CLI with `--devices 0,1`: two replica processes per
// servable sharing the load, batches that really form (seen in /stats), fixed-batch padding,
// withBatchDim:false, and a replica killed with SIGKILL being restarted.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { once } from 'node:events'
import { logEvents, postJson, servableStats, startServer, type StartedServer } from '../helpers/server.ts'
import { addServable, assertClose, FIXTURE_SERVABLES, floatJson, kInstance, kRequest as one, kSum, X1, X2 } from '../helpers/fixtures.ts'

interface ReplicaStats { device: string; pid: number; state: string; batchesDone: number }
interface ModelStats { executions: number; inferences: number; padded: number; batchSizes: Record<string, number>; maxBatchSize: number; avgBatchSize: number }
interface ServableStats {
  name: string; version: number; ready: boolean; restarts: number
  replicas: ReplicaStats[]; models: ModelStats[]
  methods: Record<string, { requests: number; instances: number; batches: number; batchSizes: Record<string, number>; queued: number }>
}

let dir = ''
let server: StartedServer

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ms-serve-replicas-'))
  addServable(dir)
  for (const name of ['batching', 'single', 'fixed4', 'add_nobatch', 'slow']) FIXTURE_SERVABLES[name]!(dir)
  server = await startServer(dir, ['--devices', '0,1', '--isolation', 'process'])
})

after(async () => {
  await server?.stop()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

const stats = (name: string) => servableStats<ServableStats>(server.rest, name)

/** The reply to one(k), the single-instance add request x1 = [[k,k],[k,k]] + X2. */
const sumOf = (k: number) => ({ instances: [{ y: kSum(k) }] })

async function fire(path: string, n: number): Promise<void> {
  const replies = await Promise.all(Array.from({ length: n }, (_, k) => postJson(`${server.rest}${path}`, one(k))))
  replies.forEach((r, k) => {
    assert.equal(r.status, 200, r.text)
    assertClose(r.json, sumOf(k))
  })
}

test('--devices 0,1 starts two replica processes per servable', async () => {
  const s = await stats('add')
  assert.deepEqual(s.replicas.map((r) => [r.device, r.state]), [['cpu:0', 'ready'], ['cpu:1', 'ready']])
  const pids = s.replicas.map((r) => r.pid)
  assert.ok(pids.every((p) => p > 0 && p !== server.proc.pid), `pids ${pids}`)
  assert.notEqual(pids[0], pids[1])
  for (const pid of pids) process.kill(pid, 0) // throws if no such process
  assert.match(server.output(), /servable add version 1: 2 replica\(s\) on cpu:0,1 ready in \d+ ms/)
})

test('concurrent load reaches both replicas', async () => {
  await fire('/model/add:add_common', 40)
  const s = await stats('add')
  assert.ok(s.replicas.every((r) => r.batchesDone > 0), JSON.stringify(s.replicas))
})

test('sequential requests alternate between idle replicas', async () => {
  const before = (await stats('add')).replicas.map((r) => r.batchesDone)
  for (let k = 0; k < 6; k++) assertClose((await postJson(`${server.rest}/model/add:add_common`, one(k))).json, sumOf(k))
  const after = (await stats('add')).replicas.map((r) => r.batchesDone)
  assert.deepEqual(after.map((a, i) => a - before[i]!), [3, 3])
})

test('dynamic batching: concurrent single-instance requests run together (maxBatchSize 8, maxWaitMs 20)', async () => {
  await fire('/model/batching:add_common', 16)
  const s = await stats('batching')
  const m = s.models[0]!
  assert.equal(m.maxBatchSize, 8)
  assert.equal(m.inferences, 16)
  const sizes = Object.keys(m.batchSizes).map(Number)
  assert.ok(sizes.some((b) => b > 1), `executed batch sizes ${JSON.stringify(m.batchSizes)}`)
  assert.ok(sizes.every((b) => b <= 8), `batch sizes never exceed maxBatchSize: ${JSON.stringify(m.batchSizes)}`)
  assert.ok(m.avgBatchSize > 1, `avgBatchSize ${m.avgBatchSize}`)
  assert.ok(m.executions < 16)
  const method = s.methods['add_common']!
  assert.equal(method.requests, 16)
  assert.equal(method.instances, 16)
  assert.ok(method.batches < 16, `method batches ${method.batches}`)
  assert.equal(method.queued, 0)
})

test('a request with more instances than maxBatchSize is split into batches and recombined in order', async () => {
  const before = (await stats('batching')).models[0]!
  const instances = Array.from({ length: 20 }, (_, k) => kInstance(k))
  const r = await postJson(`${server.rest}/model/batching:add_common`, floatJson({ instances }))
  assertClose(r.json, { instances: instances.map((_, k) => sumOf(k).instances[0]) })
  const m = (await stats('batching')).models[0]!
  assert.equal(m.inferences - before.inferences, 20)
  assert.equal(m.executions - before.executions, 3, '8 + 8 + 4')
})

test('maxBatchSize 1: every batch holds one instance', async () => {
  await fire('/model/single:add_common', 10)
  const m = (await stats('single')).models[0]!
  assert.deepEqual(m.batchSizes, { 1: 10 })
  assert.equal(m.avgBatchSize, 1)
})

test('a model with a fixed batch dim of 4 pads partial batches; results stay right', async () => {
  const r = await postJson(`${server.rest}/model/fixed4:add_common`, floatJson({ instances: [0, 1, 2].map(kInstance) }))
  assert.equal(r.status, 200, r.text)
  assertClose(r.json, { instances: [0, 1, 2].map((k) => sumOf(k).instances[0]) })
  let m = (await stats('fixed4')).models[0]!
  assert.equal(m.maxBatchSize, 4)
  assert.deepEqual(m.batchSizes, { 3: 1 })
  assert.equal(m.padded, 1)
  const six = await postJson(`${server.rest}/model/fixed4:add_common`, floatJson({ instances: [0, 1, 2, 3, 4, 5].map(kInstance) }))
  assertClose(six.json, { instances: [0, 1, 2, 3, 4, 5].map((k) => sumOf(k).instances[0]) })
  m = (await stats('fixed4')).models[0]!
  assert.equal(m.padded, 1 + 2, 'the batch of 4 is full, the batch of 2 gets 2 padding rows')
  assert.equal(m.inferences, 9)
  await fire('/model/fixed4:add_common', 5)
  m = (await stats('fixed4')).models[0]!
  assert.equal(m.inferences, 14)
  assert.equal(m.inferences + m.padded, m.executions * 4, 'every execution runs exactly 4 rows')
})

test('withBatchDim false (add_nobatch): each instance is the whole model input', async () => {
  const r = await postJson(`${server.rest}/model/add_nobatch:add_common`, floatJson({ instances: [{ x1: X1, x2: X2 }, { x1: X2, x2: X2 }] }))
  assert.equal(r.text, '{"instances":[{"y":[[6.0,8.0],[10.0,12.0]]},{"y":[[10.0,12.0],[14.0,16.0]]}]}')
  await fire('/model/add_nobatch:add_common', 6)
  const m = (await stats('add_nobatch')).models[0]!
  assert.deepEqual(Object.keys(m.batchSizes), ['1'])
  assert.equal(m.inferences, 8)
  const bad = await postJson(`${server.rest}/model/add_nobatch:add_common`, floatJson({ instances: [{ x1: [[1, 2, 3, 4]], x2: X2 }] }))
  assert.equal(bad.json.error_msg, undefined, 'same byte size: MindSpore checks size and dtype only')
})

test('a replica killed with SIGKILL fails its in-flight requests with REPLICA_CRASHED, is restarted, and serves again', async () => {
  const first = await stats('slow')
  const victim = first.replicas[0]!
  // Two slow requests: the least-busy rule puts one on each replica.
  const inflight = [0, 1].map((k) => postJson(`${server.rest}/model/slow:add_slow`, one(k)))
  const deadline = Date.now() + 5000
  while ((await stats('slow')).replicas.some((r) => r.state === 'ready' && (r as unknown as { inflightInstances: number }).inflightInstances === 0)) {
    assert.ok(Date.now() < deadline, 'requests never reached both replicas')
    await new Promise((r) => setTimeout(r, 20))
  }
  process.kill(victim.pid, 'SIGKILL')
  const replies = await Promise.all(inflight)
  const crashed = replies.filter((r) => r.status !== 200)
  assert.equal(crashed.length, 1, replies.map((r) => r.text).join('\n'))
  assert.equal(crashed[0]!.status, 503)
  assert.equal(crashed[0]!.json.error_msg, 'replica slow@1 cpu:0 exited (signal SIGKILL) while running this request')
  assertClose(replies.find((r) => r.status === 200)!.json, sumOf(replies.indexOf(replies.find((r) => r.status === 200)!)))

  // The other replica keeps serving while the victim restarts.
  assertClose((await postJson(`${server.rest}/model/slow:add_slow`, one(7))).json, sumOf(7))
  for (;;) {
    const s = await stats('slow')
    const r = s.replicas[0]!
    if (r.state === 'ready' && r.pid !== victim.pid) {
      assert.equal(s.restarts, 1)
      break
    }
    assert.ok(Date.now() < deadline + 20_000, `replica not restarted: ${JSON.stringify(s.replicas)}`)
    await new Promise((res) => setTimeout(res, 100))
  }
  const exit = logEvents(server.output()).find((e) => e.event === 'replica_exit')
  assert.ok(exit, server.output())
  assert.equal(exit.level, 40, 'a replica exit is a warning')
  assert.equal(exit.replica, 'slow@1 cpu:0')
  assert.equal(exit.reason, 'signal SIGKILL')
  assert.match(exit.msg, /^replica slow@1 cpu:0 exited \(signal SIGKILL\); restarting in \d+ ms$/)
  // The restarted replica takes work again.
  const done = (await stats('slow')).replicas.map((r) => r.batchesDone)
  await Promise.all([2, 3, 4, 5].map(async (k) => assertClose((await postJson(`${server.rest}/model/slow:add_slow`, one(k))).json, sumOf(k))))
  const after = (await stats('slow')).replicas.map((r) => r.batchesDone)
  assert.ok(after[0]! > done[0]! && after[1]! > done[1]!, `work after restart: ${done} -> ${after}`)
})

test('a full queue answers 429 with MindSpore\'s text at once; the rest are served', async () => {
  // add_slow_limited: one instance per batch, 2 groups in flight per replica, room for 2 waiting.
  const replies = await Promise.all(Array.from({ length: 12 }, (_, k) => postJson(`${server.rest}/model/slow:add_slow_limited`, one(k))))
  const refused = replies.filter((r) => r.status === 429)
  assert.ok(refused.length >= 1, replies.map((r) => r.status).join(','))
  for (const r of refused) assert.deepEqual(r.json, { error_msg: 'Serving Error: enqueued requests count exceeds the limit 2' })
  replies.forEach((r, k) => { if (r.status !== 429) assertClose(r.json, sumOf(k)) })
  assert.ok(replies.length - refused.length >= 6, 'in flight on both replicas plus the queue')
})

test('with every replica down, requests fail fast with 503; the servable comes back', async () => {
  const before = await stats('slow')
  for (const r of before.replicas) process.kill(r.pid, 'SIGKILL')
  const deadline = Date.now() + 20_000
  while ((await stats('slow')).ready) {
    assert.ok(Date.now() < deadline)
    await new Promise((res) => setTimeout(res, 10))
  }
  const down = await postJson(`${server.rest}/model/slow:add_slow`, one(1))
  assert.equal(down.status, 503)
  assert.deepEqual(down.json, { error_msg: 'Request servable(slow) method(add_slow) , servable is not available' })
  // Other servables are unaffected.
  assertClose((await postJson(`${server.rest}/model/add:add_common`, one(2))).json, sumOf(2))
  for (;;) {
    const s = await stats('slow')
    if (s.replicas.every((r) => r.state === 'ready')) break
    assert.ok(Date.now() < deadline, `not restarted: ${JSON.stringify(s.replicas)}`)
    await new Promise((res) => setTimeout(res, 100))
  }
  assertClose((await postJson(`${server.rest}/model/slow:add_slow`, one(3))).json, sumOf(3))
  // A restart that succeeded resets the back-off: these came back after the first delay again.
  assert.doesNotMatch(server.output(), /replica slow@1 cpu:\d exited \(signal SIGKILL\); restarting in (?!500 ms)/)
})

test('SIGTERM drains in-flight requests, then the server and its replicas exit', async () => {
  const pids = (await (await fetch(`${server.rest}/stats`)).json() as { servables: ServableStats[] }).servables.flatMap((s) => s.replicas.map((r) => r.pid))
  const inflight = postJson(`${server.rest}/model/slow:add_slow`, one(4))
  await new Promise((res) => setTimeout(res, 100))
  const t0 = Date.now()
  server.proc.kill('SIGTERM')
  const r = await inflight
  assert.equal(r.status, 200, r.text)
  assertClose(r.json, sumOf(4))
  const [code] = await once(server.proc, 'exit')
  assert.equal(code, 0)
  assert.ok(Date.now() - t0 < 10_000, `shutdown took ${Date.now() - t0} ms (keep-alive connections must not hold it up)`)
  assert.ok(logEvents(server.output()).some((e) => e.event === 'shutdown' && e.signal === 'SIGTERM' && /draining in-flight requests/.test(e.msg)), server.output())
  for (const pid of pids) assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `replica ${pid} outlived the server`)
})
