// Device ids -> replica plans: --devices parsing, CPU thread split, the CUDA availability check.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { checkDeviceTypeAvailable, planDevices } from '../../src/runtime/devices.ts'
import { parseDeviceIds, parseIsolation } from '../../src/config/device-flags.ts'

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
