// Device ids -> replica plans: --devices parsing, CPU thread split, the CUDA availability check.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { checkDeviceTypeAvailable, onAgent, pipelinePlans, planDevices, type DevicePlan } from '../../src/runtime/devices.ts'
import { parseDeviceIds, parseDeviceRefs, parseIsolation } from '../../src/config/device-flags.ts'
import { StageRelay } from '../../src/runtime/remote-stage.ts'
import type { ReplicaMessage } from '../../src/runtime/messages.ts'

test('parseDeviceIds reads a comma list', () => {
  assert.deepEqual(parseDeviceIds('0'), [0])
  assert.deepEqual(parseDeviceIds('0,1'), [0, 1])
  assert.deepEqual(parseDeviceIds(' 3 , 1 ,'), [3, 1])
})

test('parseDeviceIds rejects bad lists with a message naming the flag', () => {
  assert.throws(() => parseDeviceIds(''), { code: 'INVALID_REQUEST', message: '--devices needs a comma list of device ids, e.g. --devices 0,1 (got "")' })
  assert.throws(() => parseDeviceIds('0,a'), { code: 'INVALID_REQUEST', message: '--devices: "a" is not a device id; use non-negative integers, e.g. --devices 0,1' })
  assert.throws(() => parseDeviceIds('-1'), { code: 'INVALID_REQUEST', message: /"-1" is not a device id/ })
  assert.throws(() => parseDeviceIds('1,1'), { code: 'INVALID_REQUEST', message: '--devices lists device 1 twice' })
})

test('planDevices splits CPU cores between all replicas', () => {
  const plans = planDevices('cpu', [0, 1], 4, 16)
  assert.deepEqual(plans, [
    { deviceType: 'cpu', deviceId: 0, intraOpThreads: 4, executionProviders: ['cpu'], isolation: 'auto' },
    { deviceType: 'cpu', deviceId: 1, intraOpThreads: 4, executionProviders: ['cpu'], isolation: 'auto' },
  ])
  assert.equal(planDevices('cpu', [0], 1, 8)[0]!.intraOpThreads, 8)
  assert.equal(planDevices('cpu', [0, 1, 2], 3, 8)[0]!.intraOpThreads, 2, 'floor(8 / 3)')
  assert.equal(planDevices('cpu', [0, 1], 6, 2)[0]!.intraOpThreads, 1, 'never below one thread')
})

test('planDevices carries the isolation; parseIsolation names the choices', () => {
  assert.deepEqual(planDevices('cpu', [0, 1], 2, 2, 'inline').map((p) => p.isolation), ['inline', 'inline'])
  assert.equal(parseIsolation('thread'), 'thread')
  assert.equal(parseIsolation('auto'), 'auto')
  assert.throws(() => parseIsolation('fiber'), { code: 'INVALID_REQUEST', message: '--isolation must be one of auto, process, thread, inline (got "fiber")' })
})

test('planDevices maps cuda device ids to the CUDA EP', () => {
  assert.deepEqual(planDevices('cuda', [2], 1, 8)[0]!.executionProviders, [{ name: 'cuda', deviceId: 2 }])
  assert.throws(() => planDevices('tpu' as never, [0], 1, 8), { code: 'INVALID_REQUEST', message: 'device type must be cpu or cuda (got "tpu")' })
})

test('checkDeviceTypeAvailable: cpu always passes; cuda needs the provider', () => {
  const cpuOnly = [{ name: 'cpu', bundled: true }]
  checkDeviceTypeAvailable('cpu', cpuOnly, false)
  checkDeviceTypeAvailable('cuda', [...cpuOnly, { name: 'cuda', bundled: true }], false)
  checkDeviceTypeAvailable('cuda', [...cpuOnly, { name: 'cuda', bundled: false }], true)
  const text = 'device type cuda was asked for, but this onnxruntime-node install has no CUDA execution provider (it ships CPU only on this platform). Install the CUDA build of onnxruntime-node (ONNXRUNTIME_NODE_INSTALL_CUDA=v12 npm rebuild onnxruntime-node on a machine with CUDA 12), or start with --device-type cpu.'
  assert.throws(() => checkDeviceTypeAvailable('cuda', cpuOnly, false), { code: 'CONFIG_INVALID', message: text })
  assert.throws(() => checkDeviceTypeAvailable('cuda', [...cpuOnly, { name: 'cuda', bundled: false }], false), { code: 'CONFIG_INVALID', message: text })
})

test('parseDeviceRefs reads local ids and agents\' devices in order; bad entries name the form', () => {
  assert.deepEqual(parseDeviceRefs('0,hostb:0,b-2.x:3'), [{ id: 0 }, { id: 0, agent: 'hostb' }, { id: 3, agent: 'b-2.x' }])
  assert.throws(() => parseDeviceRefs('0,hostb:'), { code: 'INVALID_REQUEST', message: /"hostb:" is not a device; .*NAME:ID/ })
  assert.throws(() => parseDeviceRefs('a b:0'), { code: 'INVALID_REQUEST', message: /"a b:0" is not a device/ })
  assert.throws(() => parseDeviceRefs('b:0,b:0'), { code: 'INVALID_REQUEST', message: '--devices lists device b:0 twice' })
  assert.deepEqual(parseDeviceRefs('0,b:0,1'), [{ id: 0 }, { id: 0, agent: 'b' }, { id: 1 }], 'the same id here and on an agent are two devices')
})

test('pipelinePlans: a pipeline across hosts runs its replica here in a process; one on a single agent is a whole replica there', () => {
  const [l0, l1] = planDevices('cpu', [0, 1], 2, 4, 'auto')
  const remote = (agent: string, id: number): DevicePlan => ({ deviceType: 'cpu', deviceId: id, intraOpThreads: 0, executionProviders: ['cpu'], isolation: 'process', agent })
  const [mixed] = pipelinePlans([l0!, remote('b', 0)], 2)
  assert.equal(mixed!.agent, undefined)
  assert.equal(mixed!.isolation, 'process', 'auto does not time a pipeline with a remote stage')
  assert.equal(pipelinePlans([{ ...l0!, isolation: 'thread' }, remote('b', 0)], 2)[0]!.isolation, 'thread', 'an isolation asked for is kept')
  assert.deepEqual(mixed!.stageDevices!.map((d) => d.agent ?? 'here'), ['here', 'b'])
  assert.equal(onAgent(mixed!), true)
  // Stage 1 remote, stage 2 here: the replica still runs here, on the local stage's device.
  const [flipped] = pipelinePlans([remote('b', 0), l1!], 2)
  assert.equal(flipped!.agent, undefined)
  assert.equal(flipped!.deviceId, 1)
  const [there] = pipelinePlans([remote('b', 0), remote('b', 1)], 2)
  assert.equal(there!.agent, 'b', 'both stages on agent b: the replica runs there')
  assert.equal(onAgent(there!), true)
  const [local] = pipelinePlans([l0!, l1!], 2)
  assert.equal(onAgent(local!), false)
  assert.equal(onAgent(remote('b', 0)), true)
})

test('StageRelay: a remote stage opens through the parent, gets its replies, and fails with the reason when its link ends', () => {
  const sent: ReplicaMessage[] = []
  const relay = new StageRelay((m) => sent.push(m))
  const port = relay.opener('b', 'm@1 stage 2')({ dir: 'runtime', name: 'stage-main' }, { source: { path: '/x/stage2.onnx' }, options: {} })
  assert.deepEqual(sent[0], { type: 'stage-open', link: 1, agent: 'b', label: 'm@1 stage 2', entry: { dir: 'runtime', name: 'stage-main' }, data: { source: { path: '/x/stage2.onnx' }, options: {} } })
  const got: unknown[] = []
  let error = ''
  let exit = -1
  port.on('message', (m) => got.push(m))
  port.on('error', (e: Error) => { error = e.message })
  port.on('exit', (c: number) => { exit = c })
  port.postMessage({ type: 'run', id: 1 })
  assert.deepEqual(sent[1], { type: 'stage-send', link: 1, message: { type: 'run', id: 1 } })
  assert.equal(relay.handle({ type: 'stage-reply', link: 1, message: { type: 'done', id: 1, value: 7 } }), true)
  assert.deepEqual(got, [{ type: 'done', id: 1, value: 7 }])
  assert.equal(relay.handle({ type: 'cancel', id: 3 }), false, 'other messages are the core\'s')
  relay.handle({ type: 'stage-exit', link: 1, why: 'agent b lost' })
  assert.equal(error, 'agent b lost')
  assert.equal(exit, 1)
  port.postMessage({ type: 'run', id: 2 })
  assert.equal(sent.length, 2, 'nothing is sent on an ended link')
  // Terminated here: the parent closes the link.
  const p2 = relay.opener('b', 'm@1 stage 2')({ dir: 'runtime', name: 'stage-main' }, { source: { path: '/x' }, options: {} })
  p2.terminate()
  assert.deepEqual(sent.at(-1), { type: 'stage-close', link: 2 })
})
