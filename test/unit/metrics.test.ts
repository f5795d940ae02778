// runtime/metrics.ts: a fake predict through the registry and LiveServable over fake transports
// (test/helpers/fake-transport.ts) moves the right series; each server has its own registry.
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { LiveServable } from '../../src/runtime/live-servable.ts'
import { ServerMetrics } from '../../src/runtime/metrics.ts'
import { policyFor } from '../../src/runtime/policy.ts'
import { ServableRegistry } from '../../src/runtime/registry.ts'
import { serverSnapshot } from '../../src/runtime/snapshot.ts'
import { FakeHost, fakeDevices, fakeServable, tick, x } from '../helpers/fake-transport.ts'

const keepAlive = setInterval(() => {}, 1000)
after(() => clearInterval(keepAlive))

type Labels = Record<string, string | number>
/** The value of the series of `metric` whose labels include `labels` (0 when absent). */
async function value(metric: { get(): Promise<{ values: Array<{ value: number; labels: Labels; metricName?: string }> }> }, labels: Labels, metricName?: string): Promise<number> {
  const { values } = await metric.get()
  const found = values.filter((v) => (metricName === undefined || v.metricName === metricName) && Object.entries(labels).every(([k, want]) => String(v.labels[k]) === String(want)))
  return found.reduce((a, v) => a + v.value, 0)
}

async function build() {
  const host = new FakeHost()
  host.auto = true
  const metrics = new ServerMetrics()
  const registry = new ServableRegistry(metrics)
  const live = new LiveServable(fakeServable({ maxBatchSize: 4 }), fakeDevices(1), {
    policy: policyFor('fake', { watchdogMs: 0 }), transport: (d) => host.factory(d), restartDelayMs: () => 1, metrics, log: () => {},
  })
  await live.start()
  registry.add(live)
  return { host, metrics, registry, live }
}

test('a predict counts its request, duration, queue time, compute time and batch size', async () => {
  const { metrics, registry, live } = await build()
  const sv = { servable: 'fake', version: 1 }
  const out = await registry.predict({ name: 'fake', method: 'run', version: 0, instances: [x(1), x(2)], protocol: 'grpc' })
  assert.ok('instances' in out)
  await registry.predict({ name: 'fake', method: 'run', version: 0, instances: [x(3)], protocol: 'rest' })
  await registry.predict({ name: 'fake', method: 'nope', version: 0, instances: [x(3)], protocol: 'rest' })
  await registry.predict({ name: 'missing', method: 'run', version: 0, instances: [x(3)], protocol: 'rest' })

  assert.equal(await value(metrics.requests, { ...sv, method: 'run', protocol: 'grpc', outcome: 'success' }), 1)
  assert.equal(await value(metrics.requests, { ...sv, method: 'run', protocol: 'rest', outcome: 'success' }), 1)
  // An unknown method or servable is counted without making a series of the client's words.
  assert.equal(await value(metrics.requests, { ...sv, method: '', protocol: 'rest' }), 1)
  assert.equal(await value(metrics.requests, { servable: '', version: '', method: '', protocol: 'rest', outcome: 'servable_not_found' }), 1)
  assert.equal(await value(metrics.requestDuration, { ...sv, method: 'run', protocol: 'grpc' }, 'msserve_request_duration_seconds_count'), 1)
  assert.equal(await value(metrics.queueDuration, { ...sv, method: 'run' }, 'msserve_queue_duration_seconds_count'), 3, 'one per instance')
  assert.equal(await value(metrics.batchSize, { ...sv, model: 'm.onnx' }, 'msserve_batch_size_count'), 2, 'one per executed batch')
  assert.equal(await value(metrics.batchSize, { ...sv, model: 'm.onnx' }, 'msserve_batch_size_sum'), 3)
  assert.equal(await value(metrics.computeDuration, { ...sv, model: 'm.onnx' }, 'msserve_compute_duration_seconds_sum'), 0.002, 'the fake reports 1 ms per batch')

  const text = await metrics.render(await serverSnapshot(registry))
  assert.match(text, /^msserve_replicas_ready\{servable="fake",version="1"\} 1$/m)
  assert.match(text, /^msserve_queue_depth\{servable="fake",version="1",method="run"\} 0$/m)
  assert.match(text, /^# TYPE msserve_requests_total counter$/m)
  await live.stop()
})

test('a replica crash counts one restart; servers do not share series', async () => {
  const a = await build()
  const b = await build()
  const sv = { servable: 'fake', version: 1 }
  assert.equal(await value(a.metrics.replicaRestarts, sv), 0)
  a.host.live(0).exit('signal SIGSEGV')
  await tick()
  assert.equal(await value(a.metrics.replicaRestarts, sv), 1)
  assert.equal(await value(b.metrics.replicaRestarts, sv), 0, 'the other server has its own registry')
  await a.live.stop(true)
  await b.live.stop(true)
})
