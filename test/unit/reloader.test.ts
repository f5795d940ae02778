// The reloader over fake loads and fake transports: swap, drain-then-stop of the old version,
// failed reloads that keep the old version serving, removal, and failure reporting. No I/O.
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { LiveServable } from '../../src/runtime/live-servable.ts'
import { Reloader } from '../../src/runtime/reloader.ts'
import { ServableRegistry } from '../../src/runtime/registry.ts'
import { policyFor } from '../../src/runtime/policy.ts'
import { ServerMetrics } from '../../src/runtime/metrics.ts'
import type { ValidServable } from '../../src/config/validate.ts'
import { validFor } from '../helpers/valid-instances.ts'
import { FakeHost, fakeDevices, fakeServable, tick, x } from '../helpers/fake-transport.ts'

const keepAlive = setInterval(() => {}, 1000)
after(() => clearInterval(keepAlive))

function setup() {
  const host = new FakeHost()
  const registry = new ServableRegistry()
  const lines: string[] = []
  const metrics = new ServerMetrics()
  let onDisk: ValidServable[] | null | Error = [fakeServable({ version: 1 })]
  const create = (v: ValidServable) => new LiveServable(v, fakeDevices(1), { policy: policyFor(v.name, { watchdogMs: 0 }), transport: (d) => host.factory(d), log: (l) => lines.push(l), metrics })
  const reloader = new Reloader(registry, {
    load: async () => { if (onDisk instanceof Error) throw onDisk; return onDisk },
    create,
    log: (l) => lines.push(l),
  })
  return { host, registry, lines, reloader, create, metrics, setDisk: (d: typeof onDisk) => { onDisk = d } }
}

test('a reload starts the new version, swaps it in, and stops the old one only after its in-flight work', async () => {
  const t = setup()
  await t.reloader.reload(['fake'])
  const v1 = t.registry.get('fake', 0)!
  assert.equal(v1.version, 1)
  const inflight = v1.predict(v1.method('run')!, validFor(v1, 'run', [x(5)]))
  const oldReplica = t.host.live(0)
  // Same version number, new files: a fresh LiveServable replaces it.
  t.setDisk([fakeServable({ version: 1 })])
  await t.reloader.reload(['fake'])
  const fresh = t.registry.get('fake', 1)!
  assert.notEqual(fresh, v1, 'the registry serves the new one')
  assert.equal(oldReplica.ended, false, 'the old replica still holds a group: not stopped yet')
  oldReplica.answer(oldReplica.groups[0]!)
  const out = await inflight
  assert.deepEqual(out.map((o) => ('outputs' in o ? o.outputs.y : null)).length, 1)
  await t.reloader.settle()
  assert.equal(oldReplica.ended, true, 'drained, then stopped')
  assert.ok(t.lines.some((l) => /servable fake reloaded: version\(s\) 1 ready/.test(l)), t.lines.join('\n'))
  // The same version serves on: its series stay.
  assert.match(await t.metrics.registry.metrics(), /msserve_queue_duration_seconds_count\{servable="fake",version="1",method="run"\} 1/)
  await fresh.stop()
})

test('a reload whose replicas fail to start keeps the old version serving and says so', async () => {
  const t = setup()
  await t.reloader.reload(['fake'])
  const v1 = t.registry.get('fake', 0)!
  const serving: number[] = []
  t.registry.onServing = (s) => serving.push(s.version)
  t.setDisk([fakeServable({ version: 2 })])
  t.host.failInit.push('Load model failed: protobuf parsing failed')
  await t.reloader.reload(['fake'])
  assert.equal(t.registry.get('fake', 0), v1, 'version 1 still serves')
  assert.deepEqual(serving, [], 'the failed version never served: limits that follow onServing keep version 1\'s')
  assert.equal(t.registry.get('fake', 2), undefined)
  assert.ok(t.lines.some((l) => /reload of servable fake failed; still serving version\(s\) 1: .*protobuf parsing failed/.test(l)), t.lines.join('\n'))
  t.host.auto = true
  assert.equal((await v1.predict(v1.method('run')!, validFor(v1, 'run', [x(1)]))).length, 1)
  await v1.stop()
})

test('a config error on reload keeps the old version; with nothing serving the servable is marked failed', async () => {
  const t = setup()
  t.setDisk(new Error('servable_config.ts:3: maxBatchsize is not an option; did you mean maxBatchSize?'))
  await t.reloader.reload(['fake'])
  assert.equal(t.registry.get('fake', 0), undefined)
  assert.match(t.registry.failed.get('fake') ?? '', /did you mean maxBatchSize/)
  // Fixed on disk: it serves and is no longer reported failed.
  t.setDisk([fakeServable({ version: 1 })])
  await t.reloader.reload(['fake'])
  assert.equal(t.registry.failed.has('fake'), false)
  assert.equal(t.registry.get('fake', 0)?.ready, true)
  await t.registry.get('fake', 0)!.stop()
})

test('a servable whose folder is gone is removed and its replicas stopped', async () => {
  const t = setup()
  await t.reloader.reload(['fake'])
  const replica = t.host.live(0)
  t.setDisk(null)
  await t.reloader.reload(['fake'])
  await t.reloader.settle()
  assert.equal(t.registry.all().length, 0)
  assert.equal(replica.ended, true)
  assert.ok(t.lines.some((l) => /servable fake removed/.test(l)))
})

test('versions no longer on disk are retired and stopped', async () => {
  const t = setup()
  t.setDisk([fakeServable({ version: 1 }), fakeServable({ version: 2 })])
  await t.reloader.reload(['fake'])
  assert.deepEqual(t.registry.all().map((s) => s.version), [1, 2])
  const replicaOfV1 = t.host.opened[0]!
  for (const [v, replica] of [[1, replicaOfV1], [2, t.host.opened[1]!]] as const) {
    const live = t.registry.get('fake', v)!
    const done = live.predict(live.method('run')!, validFor(live, 'run', [x(v)]))
    await tick()
    replica.answer(replica.groups.at(-1)!)
    await done
  }
  const before = await t.metrics.registry.metrics()
  for (const v of [1, 2]) assert.match(before, new RegExp(`msserve_queue_duration_seconds_count\\{servable="fake",version="${v}"`))
  t.setDisk([fakeServable({ version: 2 }), fakeServable({ version: 3 })])
  await t.reloader.reload(['fake'])
  await t.reloader.settle()
  await tick()
  assert.deepEqual(t.registry.all().map((s) => s.version), [2, 3])
  assert.equal(replicaOfV1.ended, true, 'version 1 was stopped')
  // Its series are gone from /metrics; version 2's stay.
  const text = await t.metrics.registry.metrics()
  assert.doesNotMatch(text, /version="1"/)
  assert.match(text, /msserve_queue_duration_seconds_count\{servable="fake",version="2",method="run"\} 1/)
  assert.match(text, /msserve_replica_restarts_total\{servable="fake",version="2"\} 0/)
  for (const s of t.registry.all()) await s.stop()
})
