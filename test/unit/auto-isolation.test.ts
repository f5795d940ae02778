// `--isolation auto`: the rule by run time (pure), and the probe on real sessions: a model it can
// fill with zeros is timed and placed by that rule; LLMs, other devices, models too big to probe and
// inputs it cannot fill go to a process without a probe. No timing is asserted: where a probe ran,
// the test checks that the choice is the rule's answer for the time the probe reports.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AUTO_PROBE_MAX_BYTES, byRunTime, chooseIsolation, INLINE_MAX_MS, THREAD_MAX_MS } from '../../src/runtime/auto-isolation.ts'
import { planDevices } from '../../src/runtime/devices.ts'
import type { ValidServable } from '../../src/config/validate.ts'
import { binaryModel } from '../helpers/fixtures.ts'

let dir: string
before(() => { dir = mkdtempSync(join(tmpdir(), 'auto-iso-')) })
after(() => rmSync(dir, { recursive: true, force: true }))

const cpu = planDevices('cpu', [0], 1, 2)[0]!
const session = { graphOptimizationLevel: 'all', executionMode: 'sequential', extra: {} }
function servable(files: Array<{ file: string; withBatchDim?: boolean }>, llm = false): ValidServable {
  return {
    name: 's', version: 1, llm: llm ? { path: join(dir, 'x.onnx') } : undefined,
    models: files.map((f, index) => ({ index, name: f.file, file: f.file, path: join(dir, f.file), withBatchDim: f.withBatchDim ?? true, withoutBatchDimInputs: [], maxBatchSize: 32, maxWaitMs: 0, maxQueueSize: 100, session, site: 'test' })),
  } as unknown as ValidServable
}

test('the rule by run time at the largest batch: inline up to 1 ms, thread up to 10 ms, else process', () => {
  assert.equal(INLINE_MAX_MS, 1)
  assert.equal(THREAD_MAX_MS, 10)
  assert.equal(byRunTime(0.02).isolation, 'inline')
  assert.equal(byRunTime(1).isolation, 'inline')
  assert.equal(byRunTime(1.01).isolation, 'thread')
  assert.equal(byRunTime(10).isolation, 'thread')
  assert.equal(byRunTime(10.5).isolation, 'process')
  assert.match(byRunTime(3.25).reason, /^3\.25 ms a run at the largest batch \(<= 10 ms\)$/)
})

test('a model the probe can fill is timed, and placed by the rule for the time it reports', async () => {
  writeFileSync(join(dir, 'add.onnx'), binaryModel('Add', ['batch', 2, 2]))
  writeFileSync(join(dir, 'mul.onnx'), binaryModel('Mul', [4, 3]))
  const c = await chooseIsolation(servable([{ file: 'add.onnx' }, { file: 'mul.onnx', withBatchDim: false }]), cpu)
  assert.equal(typeof c.probeMs, 'number')
  assert.ok(c.probeMs! >= 0)
  assert.deepEqual(c, byRunTime(c.probeMs!))
})

test('no probe: LLMs, non-CPU devices, models over the size limit; a free non-batch dim cannot be filled', async () => {
  writeFileSync(join(dir, 'add.onnx'), binaryModel('Add', ['batch', 2, 2]))
  assert.deepEqual(await chooseIsolation(servable([], true), cpu), { isolation: 'process', reason: 'an LLM: the engine loop runs off the listeners' })
  assert.deepEqual(await chooseIsolation(servable([{ file: 'add.onnx' }]), { ...cpu, deviceType: 'cuda' }), { isolation: 'process', reason: 'device cuda' })
  writeFileSync(join(dir, 'big.onnx'), '')
  truncateSync(join(dir, 'big.onnx'), AUTO_PROBE_MAX_BYTES + 1) // sparse: its size is all that is read
  const big = await chooseIsolation(servable([{ file: 'big.onnx' }]), cpu)
  assert.equal(big.isolation, 'process')
  assert.match(big.reason, /^models of 64 MiB, not probed$/)
  writeFileSync(join(dir, 'free.onnx'), binaryModel('Add', ['batch', 'n']))
  const free = await chooseIsolation(servable([{ file: 'free.onnx' }]), cpu)
  assert.deepEqual(free, { isolation: 'process', reason: 'model free.onnx could not be timed with zero inputs' })
})
