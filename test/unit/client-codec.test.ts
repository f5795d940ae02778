// The client's MindSpore REST codec (src/client/rest-codec.ts): typed-b64 requests the server's
// own parser reads back exactly, and replies read with the described dtypes or, without one, the
// server's JSON rule widened where a value would not fit. Also ServerInfo -> ServablesDescription.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { decodeInstances, encodeInstances } from '../../src/client/rest-codec.ts'
import { describeServerInfo, findMethod } from '../../src/client/describe.ts'
import { parseInstances, parseJsonBody, renderReply } from '../../src/protocol/rest/ms-json.ts'
import { f32ToF16Bits, tensor, type DType, type Value } from '../../src/tensor.ts'

const noHint = () => undefined

test('requests: every dtype, strings and bytes reach the server parser unchanged', () => {
  const inst: Record<string, Value> = {
    f: tensor('float32', [2], [1.5, 6.6]),
    h: tensor('float16', [3], new Uint16Array([0x3c00, 0x2e66, 0x7bff])),
    i: tensor('int64', [2], [2n ** 62n + 1n, -1n]),
    u: tensor('uint64', [1], [2n ** 64n - 1n]),
    b: tensor('bool', [], [1]),
    s: 'héllo',
    raw: new Uint8Array([0, 255]),
    empty: tensor('int32', [2, 0], []),
  }
  const [back] = parseInstances(parseJsonBody(encodeInstances([inst])))
  assert.deepEqual(back, inst)
})

test('replies: each dtype read back exactly when the description names it', () => {
  const outputs: Record<string, Value> = {
    f: tensor('float32', [2, 2], [6.6, 1e-7, -0, 3]),
    h: tensor('float16', [2], new Uint16Array([f32ToF16Bits(0.1), 0xfbff])),
    i: tensor('int64', [3], [2n ** 62n + 1n, -(2n ** 63n), 5n]),
    d: tensor('float64', [1], [0.1]),
    u8: tensor('uint8', [2], [0, 255]),
    b: tensor('bool', [2], [1, 0]),
    s: 'text',
    raw: new Uint8Array([1, 2, 3]),
  }
  const text = renderReply({ instances: [{ outputs }, { error: { message: 'bad instance' } as never }] })
  const dtypes: Record<string, DType> = { f: 'float32', h: 'float16', i: 'int64', d: 'float64', u8: 'uint8', b: 'bool', s: 'string', raw: 'bytes' }
  const [ok, bad] = decodeInstances(text, 2, (k) => dtypes[k])
  assert.deepEqual({ ...ok!.outputs, raw: new Uint8Array(ok!.outputs!['raw'] as Uint8Array) }, outputs)
  assert.deepEqual(bad, { error: 'bad instance' })
})

test('replies without a dtype: int32 / float32 / bool as the server reads JSON, widened when a value does not fit', () => {
  const text = '{"instances":[{"a":[1,2],"b":[1.5,2.0],"c":[4611686018427387905,1],"d":[0.1,1.0],"e":[true,false],"f":3,"g":2.0,"h":[null,1.5],"k":[[1,2],[3,4]]}]}'
  const [r] = decodeInstances(text, 1, noHint)
  const o = r!.outputs!
  assert.deepEqual(o['a'], tensor('int32', [2], [1, 2]))
  assert.deepEqual(o['b'], tensor('float32', [2], [1.5, 2]))
  assert.deepEqual(o['c'], tensor('int64', [2], [4611686018427387905n, 1n]))
  assert.deepEqual(o['d'], tensor('float64', [2], [0.1, 1]), '0.1 is no float32 value: float64 keeps it')
  assert.deepEqual(o['e'], tensor('bool', [2], [1, 0]))
  assert.deepEqual(o['f'], tensor('int32', [], [3]))
  assert.deepEqual(o['g'], tensor('float32', [], [2]))
  assert.ok(Number.isNaN((o['h'] as { data: Float32Array }).data[0]), 'null (NaN, Infinity) reads as NaN')
  assert.deepEqual(o['k'], tensor('int32', [2, 2], [1, 2, 3, 4]))
})

test('replies: a whole-request error_msg in a 200 is thrown; malformed replies are BAD_REPLY', () => {
  assert.throws(() => decodeInstances('{"error_msg":"boom"}', 1, noHint), (e: any) => e.name === 'ClientError' && e.message === 'boom' && e.httpStatus === 200)
  assert.throws(() => decodeInstances('{"instances":[{"y":1}]}', 2, noHint), (e: any) => e.code === 'BAD_REPLY' && /1 instance\(s\) for a request of 2/.test(e.message))
  assert.throws(() => decodeInstances('{"instances":[{"y":[[1,2],[3]]}]}', 1, noHint), (e: any) => e.code === 'BAD_REPLY')
  assert.throws(() => decodeInstances('not json', 1, noHint), (e: any) => e.code === 'BAD_REPLY')
})

test('ServerInfo maps to the REST description; findMethod picks the newest version for 0', () => {
  const method = { name: 'm', inputs: ['x'], outputs: ['y'], input_tensors: [{ name: 'x', dtype: 'float32', shape: [-1, 3], shape_known: true }], output_tensors: [{ name: 'y', dtype: '', shape: [], shape_known: false }], batched: true, max_batch_size: 8 }
  const d = describeServerInfo({
    server_version: '0.1.0',
    servables: [{
      name: 's', versions: [1, 2], methods: [method], kind: 'model', ready: true,
      version_info: [1, 2].map((v) => ({ version: v, ready: v === 2, methods: [{ ...method, max_batch_size: v }], replicas: [{ device: 'cpu:0', isolation: 'inline', state: 'ready', pid: 7 }] })),
    }],
    unavailable: [{ name: 'broken', error: 'no model' }],
  })
  assert.deepEqual(d.servables[0]!.versions[1], {
    version: 2, ready: true,
    methods: [{ name: 'm', inputs: [{ name: 'x', dtype: 'float32', shape: [-1, 3] }], outputs: [{ name: 'y', dtype: null, shape: null }], batched: true, maxBatchSize: 2 }],
    replicas: [{ device: 'cpu:0', isolation: 'inline', state: 'ready', pid: 7 }],
  })
  assert.deepEqual(d.unavailable, [{ name: 'broken', error: 'no model' }])
  assert.equal(findMethod(d, 's', 0, 'm')?.method.maxBatchSize, 2)
  assert.equal(findMethod(d, 's', 1, 'm')?.ready, false)
  assert.equal(findMethod(d, 's', 3, 'm'), undefined)
  assert.equal(findMethod(d, 'nope', 0, 'm'), undefined)
})
