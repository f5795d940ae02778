// The batching loop and the replica pool over fake transports (test/helpers/fake-transport.ts):
// dispatch, deadlines, cancellation, crashes, restarts with back-off and drains, with no I/O.
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { LiveServable } from '../../src/runtime/live-servable.ts'
import { servableSnapshot } from '../../src/runtime/snapshot.ts'
import { restartDelayMs, MAX_INFLIGHT_GROUPS } from '../../src/runtime/replica-pool.ts'
import { policyFor } from '../../src/runtime/policy.ts'
import { Tensor } from '../../src/tensor.ts'
import { validFor } from '../helpers/valid-instances.ts'
import { FakeHost, fakeDevices, fakeServable, tick, x } from '../helpers/fake-transport.ts'

// Restart and watchdog timers are unref'd (they never keep a server alive); the listeners that keep
// a real server's loop open are absent here, so hold it open for the file.
const keepAlive = setInterval(() => {}, 1000)
after(() => clearInterval(keepAlive))

function build(host: FakeHost, opts: { replicas?: number; maxBatchSize?: number; maxQueueSize?: number; watchdogMs?: number; delays?: number[] } = {}) {
  const servable = fakeServable({ maxBatchSize: opts.maxBatchSize ?? 4, maxQueueSize: opts.maxQueueSize ?? 100 })
  const lines: string[] = []
  const delays = opts.delays
  const live = new LiveServable(servable, fakeDevices(opts.replicas ?? 2), {
    policy: policyFor('fake', { watchdogMs: opts.watchdogMs ?? 0 }),
    transport: (d) => host.factory(d),
    restartDelayMs: (failures) => { delays?.push(failures); return 1 },
    log: (l) => lines.push(l),
  })
  return { live, method: servable.methods[0]!, lines }
}

const value = (o: unknown) => ((o as { outputs: { y: Tensor } }).outputs.y.data[0])

test('a request goes to the least-busy ready replica; idle replicas take turns', async () => {
  const host = new FakeHost()
  const { live, method } = build(host)
  await live.start()
  assert.equal(host.opened.length, 2)
  const a = live.predict(method, validFor(live, 'run', [x(1), x(2)]))
  const b = live.predict(method, validFor(live, 'run', [x(3)]))
  assert.deepEqual(host.sent.map((g) => [g.replica.device, g.instances.length]), [[0, 2], [1, 1]])
  // Replica 1 holds fewer instances: the next group goes there although it is busy too.
  const c = live.predict(method, validFor(live, 'run', [x(4)]))
  assert.equal(host.sent[2]!.replica.device, 1)
  for (const g of host.sent) g.replica.answer(g)
  assert.deepEqual((await a).map(value), [1, 2])
  assert.deepEqual((await b).map(value), [3])
  assert.deepEqual((await c).map(value), [4])
  // Sequential requests on idle replicas alternate (the last group went to 1, so 0 is next).
  host.auto = true
  for (let i = 0; i < 4; i++) await live.predict(method, validFor(live, 'run', [x(i)]))
  assert.deepEqual(host.sent.slice(3).map((g) => g.replica.device), [0, 1, 0, 1])
  await live.stop()
})

test('instances queue while every replica is full, then go out in batches of maxBatchSize', async () => {
  const host = new FakeHost()
  const { live, method } = build(host, { replicas: 1, maxBatchSize: 4 })
  await live.start()
  const first = Array.from({ length: MAX_INFLIGHT_GROUPS }, (_, i) => live.predict(method, validFor(live, 'run', [x(i)])))
  assert.equal(host.sent.length, MAX_INFLIGHT_GROUPS, 'a replica holds at most MAX_INFLIGHT_GROUPS groups')
  const backlog = Array.from({ length: 10 }, (_, i) => live.predict(method, validFor(live, 'run', [x(100 + i)])))
  assert.equal(host.sent.length, MAX_INFLIGHT_GROUPS, 'the backlog waits in the queue')
  host.auto = true
  for (const g of host.sent.slice()) g.replica.answer(g)
  const out = await Promise.all(backlog)
  await Promise.all(first)
  assert.deepEqual(out.map((o) => value(o[0])), Array.from({ length: 10 }, (_, i) => 100 + i))
  assert.deepEqual(host.sent.slice(MAX_INFLIGHT_GROUPS).map((g) => g.instances.length), [4, 4, 2])
  await live.stop()
})

test('a deadline answers TIMEOUT and its queued instances are never sent; cancelling does the same', async () => {
  const host = new FakeHost()
  const { live, method } = build(host, { replicas: 1 })
  await live.start()
  const busy = Array.from({ length: MAX_INFLIGHT_GROUPS }, () => live.predict(method, validFor(live, 'run', [x(0)])))
  const late = live.predict(method, validFor(live, 'run', [x(1), x(2)]), { timeoutMs: 20 })
  let cancel!: () => void
  const gone = live.predict(method, validFor(live, 'run', [x(3)]), { onCancel: (c) => { cancel = c } })
  await assert.rejects(late, (e: Error & { code: string }) => e.code === 'TIMEOUT' && /within its timeout of 20 ms/.test(e.message))
  cancel()
  await assert.rejects(gone, (e: Error & { code: string }) => e.code === 'CANCELLED')
  assert.equal(servableSnapshot(live).methods.run!.queued, 0, 'their places in the queue are freed at once')
  for (const g of host.sent.slice()) g.replica.answer(g)
  await Promise.all(busy)
  await tick()
  assert.equal(host.sent.length, MAX_INFLIGHT_GROUPS, 'nothing of the dead requests reached a replica')
  await live.stop()
})

test('a full queue refuses the whole request at once (QUEUE_FULL) without sending anything', async () => {
  const host = new FakeHost()
  const { live, method } = build(host, { replicas: 1, maxQueueSize: 3 })
  await live.start()
  const busy = Array.from({ length: MAX_INFLIGHT_GROUPS }, () => live.predict(method, validFor(live, 'run', [x(0)])))
  const queued = live.predict(method, validFor(live, 'run', [x(1), x(2)]))
  assert.equal(live.queueFull('run'), false)
  await assert.rejects(live.predict(method, validFor(live, 'run', [x(3), x(4)])), (e: Error & { code: string }) => e.code === 'QUEUE_FULL')
  host.auto = true
  for (const g of host.sent.slice()) g.replica.answer(g)
  await Promise.all([...busy, queued])
  await live.stop()
})

test('a crash fails the groups it held, the pool restarts the replica with back-off, and it serves again', async () => {
  const host = new FakeHost()
  const delays: number[] = []
  const { live, method, lines } = build(host, { replicas: 1, delays })
  await live.start()
  const held = live.predict(method, validFor(live, 'run', [x(1)]))
  host.failInit.push('model file is gone') // the first restart fails, the second works
  host.live(0).exit('signal SIGSEGV')
  const out = await held
  assert.equal((out[0] as { error: { code: string } }).error.code, 'REPLICA_CRASHED')
  assert.match((out[0] as { error: { message: string } }).error.message, /exited \(signal SIGSEGV\)/)
  // Queued while down: served once a restart succeeds. Wait for the first restart to have failed
  // (its back-off is 1 ms; one setImmediate tick did not always reach it on a loaded machine).
  while (!lines.some((l) => /restart of .* failed: model file is gone/.test(l))) await new Promise((r) => setTimeout(r, 1))
  host.auto = true
  const after = live.predict(method, validFor(live, 'run', [x(7)]))
  assert.deepEqual((await after).map(value), [7])
  assert.deepEqual(delays, [1, 2], 'back-off grows while restarts fail')
  assert.equal(live.restarts, 2)
  assert.equal(host.opened.length, 3)
  assert.ok(lines.some((l) => /restart of .* failed: model file is gone/.test(l)), lines.join('\n'))
  // A successful restart resets the streak: the next crash starts over at failure 1.
  host.live(0).exit()
  await new Promise((r) => setTimeout(r, 20))
  assert.deepEqual(delays, [1, 2, 1])
  await live.stop()
})

test('when the last replica goes down, queued work fails at once instead of waiting for the restart', async () => {
  const host = new FakeHost()
  const { live, method } = build(host, { replicas: 1 })
  await live.start()
  const busy = Array.from({ length: MAX_INFLIGHT_GROUPS }, () => live.predict(method, validFor(live, 'run', [x(0)])))
  const queued = live.predict(method, validFor(live, 'run', [x(1)]))
  host.live(0).exit()
  const out = await queued
  assert.equal((out[0] as { error: { code: string } }).error.code, 'REPLICA_CRASHED')
  assert.match((out[0] as { error: { message: string } }).error.message, /every replica of fake is down/)
  await Promise.all(busy)
  await live.stop()
})

test('drain() resolves when the last answer lands, not on a polling tick', async () => {
  const host = new FakeHost()
  const { live, method } = build(host, { replicas: 2 })
  await live.start()
  const reqs = [live.predict(method, validFor(live, 'run', [x(1)])), live.predict(method, validFor(live, 'run', [x(2)]))]
  let drained = false
  const d = live.drain(10_000).then(() => { drained = true })
  host.sent[0]!.replica.answer(host.sent[0]!)
  await tick()
  assert.equal(drained, false, 'one group is still in flight')
  host.sent[1]!.replica.answer(host.sent[1]!)
  await d
  assert.equal(drained, true)
  await Promise.all(reqs)
  await live.stop()
})

test('a replica that stops sending heartbeats is killed by the watchdog and its requests fail', async () => {
  const host = new FakeHost()
  const { live, method, lines } = build(host, { replicas: 1, watchdogMs: 60 })
  await live.start()
  const held = live.predict(method, validFor(live, 'run', [x(1)]))
  const out = await held // the fake never beats: silent for 60 ms = hung
  assert.equal((out[0] as { error: { code: string } }).error.code, 'REPLICA_CRASHED')
  assert.match((out[0] as { error: { message: string } }).error.message, /no heartbeat for \d+ ms \(watchdog 60 ms\)/)
  assert.equal(host.opened[0]!.ended, true, 'the hung replica was killed')
  assert.ok(lines.some((l) => /replica fake@1 cpu:0 hung: no heartbeat/.test(l)), lines.join('\n'))
  await live.stop(true)
})

test('stop() fails queued work with SERVABLE_NOT_READY and no replica restarts afterwards', async () => {
  const host = new FakeHost()
  const { live, method } = build(host, { replicas: 1 })
  await live.start()
  const busy = Array.from({ length: MAX_INFLIGHT_GROUPS }, () => live.predict(method, validFor(live, 'run', [x(0)])))
  const queued = live.predict(method, validFor(live, 'run', [x(1)]))
  const stopping = live.stop(true)
  const out = await queued
  assert.equal((out[0] as { error: { code: string } }).error.code, 'SERVABLE_NOT_READY')
  await stopping
  await Promise.allSettled(busy)
  await new Promise((r) => setTimeout(r, 10))
  assert.equal(host.opened.length, 1, 'no restart after stop')
})

test('restart back-off: 0.5 s doubling per failed attempt, capped at 30 s', () => {
  assert.deepEqual([1, 2, 3, 4, 7, 8, 20].map(restartDelayMs), [500, 1000, 2000, 4000, 30_000, 30_000, 30_000])
})
