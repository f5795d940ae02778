/** The Open Inference Protocol codec (protocol/oip): model paths, tensors, binary bodies, instance splitting. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseInferBody, parseModelPath, renderInferResponse } from '../../src/protocol/oip/rest.ts'
import { readBytesElements, tensorFromJson, tensorFromRaw, writeBytesElements, jsonDataOf } from '../../src/protocol/oip/tensors.ts'
import { splitInstances, type OipTarget } from '../../src/protocol/oip/infer.ts'
import type { MethodDescription } from '../../src/runtime/describe.ts'
import { Tensor, f32ToF16Bits } from '../../src/tensor.ts'

test('model paths: servable, servable/method, %2F, versions and actions', () => {
  assert.deepEqual(parseModelPath('/v2/models/add'), { model: 'add', version: undefined, action: null })
  assert.deepEqual(parseModelPath('/v2/models/add/add_common/infer'), { model: 'add/add_common', version: undefined, action: 'infer' })
  assert.deepEqual(parseModelPath('/v2/models/add%2Fadd_common/versions/3/ready?x=1'), { model: 'add/add_common', version: '3', action: 'ready' })
  assert.deepEqual(parseModelPath('/v2/models/add/versions/2'), { model: 'add', version: '2', action: null })
  assert.equal(parseModelPath('/v2/models/a/b/c'), null)
  assert.equal(parseModelPath('/v2/models/'), null)
  assert.equal(parseModelPath('/v2/models/%E0%A4%A'), null)
})

test('JSON tensors: flat and nested data, every datatype, counts checked', () => {
  const a = tensorFromJson('x', 'INT64', [2], [1, 9007199254740991])
  assert.deepEqual(Array.from((a.value as Tensor).data as BigInt64Array), [1n, 9007199254740991n])
  const b = tensorFromJson('x', 'BOOL', [3], [[true], [false], [true]])
  assert.deepEqual(Array.from((b.value as Tensor).data as Uint8Array), [1, 0, 1])
  const h = tensorFromJson('x', 'FP16', [1], [1.5])
  assert.equal(((h.value as Tensor).data as Uint16Array)[0], f32ToF16Bits(1.5))
  assert.deepEqual(jsonDataOf(h), [1.5])
  assert.deepEqual(jsonDataOf(b), [true, false, true])
  assert.deepEqual(tensorFromJson('s', 'BYTES', [2], ['a', 'b']).value, ['a', 'b'])
  assert.throws(() => tensorFromJson('x', 'INT32', [2], [1, 2.5]), /INT32 element 1 must be an integer/)
  assert.throws(() => tensorFromJson('x', 'FP32', [2, 2], [1, 2, 3, 4, 5]), /needs 4 elements, "data" has more/)
  assert.throws(() => tensorFromJson('x', 'FP32', [-1], []), /non-negative integers/)
  assert.throws(() => tensorFromJson('x', 'FLOAT', [1], [1]), /unknown datatype "FLOAT"; one of BOOL/)
  assert.throws(() => tensorFromJson('s', 'BYTES', [1], [1]), /BYTES elements must be strings/)
})

test('raw tensors: sizes checked, BYTES length-prefixed both ways, content_type "str"', () => {
  const raw = new Uint8Array(new Float32Array([1, 2, 3]).buffer)
  assert.deepEqual(Array.from((tensorFromRaw('x', 'FP32', [3], raw).value as Tensor).data as Float32Array), [1, 2, 3])
  // An unaligned slice is copied, not misread.
  const shifted = new Uint8Array(13)
  shifted.set(raw, 1)
  assert.deepEqual(Array.from((tensorFromRaw('x', 'FP32', [3], shifted.subarray(1)).value as Tensor).data as Float32Array), [1, 2, 3])
  assert.throws(() => tensorFromRaw('x', 'FP32', [4], raw), /needs 16 bytes, got 12/)
  const enc = writeBytesElements(['hé', new Uint8Array([0, 255])])
  assert.deepEqual(readBytesElements('s', enc, 2).map((b) => [...b]), [[0x68, 0xc3, 0xa9], [0, 255]])
  assert.deepEqual(tensorFromRaw('s', 'BYTES', [1], writeBytesElements(['hé']), 'str').value, ['hé'])
  assert.throws(() => tensorFromRaw('s', 'BYTES', [1], writeBytesElements([new Uint8Array([0xff])]), 'str'), /not valid UTF-8/)
  assert.throws(() => readBytesElements('s', enc, 3), /ends inside element 2 of 3/)
  assert.throws(() => readBytesElements('s', enc.subarray(0, enc.length - 1), 2), /element 1 says 2 bytes, only 1 remain/)
})

const method = (over: Partial<MethodDescription> = {}): MethodDescription => ({
  name: 'm', inputs: [{ name: 'x', dtype: 'float32', shape: [2] }], outputs: [{ name: 'y', dtype: 'float32', shape: [2] }], batched: true, maxBatchSize: 8, ...over,
})

test('splitting: the first dim is the instance count for batching methods, views not copies', () => {
  const t = tensorFromJson('x', 'FP32', [3, 2], [1, 2, 3, 4, 5, 6])
  const inst = splitInstances(method(), [t], 100)
  assert.equal(inst.length, 3)
  const second = inst[1]!['x'] as Tensor
  assert.deepEqual([...second.shape], [2])
  assert.deepEqual(Array.from(second.data as Float32Array), [3, 4])
  assert.equal(second.data.buffer, (t.value as Tensor).data.buffer)
  assert.equal(splitInstances(method({ batched: false }), [t], 100).length, 1)
  assert.throws(() => splitInstances(method(), [t], 2), /batch size 3 is over the limit of 2 instances per request/)
  assert.throws(() => splitInstances(method(), [tensorFromJson('z', 'FP32', [1], [1])], 9), /unknown input z; model inputs: x/)
  assert.throws(() => splitInstances(method(), [t, t], 9), /input x is given twice/)
})

test('a raw body (header length 0) is one tensor of the metadata type, batch 1; binary outputs render with a header length', () => {
  const target = { modelName: 'one', method: method(), servable: {} } as unknown as OipTarget
  const body = Buffer.from(new Float32Array([7, 8]).buffer)
  const { req, out } = parseInferBody(body, '0', target)
  assert.deepEqual(req.inputs[0]!.shape, [1, 2])
  assert.deepEqual(Array.from((req.inputs[0]!.value as Tensor).data as Float32Array), [7, 8])
  assert.equal(out.binary('y'), true)
  const free = { ...target, method: method({ inputs: [{ name: 'x', dtype: 'float32', shape: [-1] }] }) } as OipTarget
  assert.throws(() => parseInferBody(body, '0', free), /has a free dim or a type set at run time/)
  const y = new Tensor('float32', [1, 2], new Float32Array([1, 2]))
  const r = renderInferResponse({ model_name: 'one', model_version: '1', outputs: [{ name: 'y', datatype: 'FP32', shape: [1, 2], value: y }] }, out)
  assert.ok(Buffer.isBuffer(r.body))
  const head = JSON.parse((r.body as Buffer).subarray(0, r.headerLength).toString())
  assert.deepEqual(head.outputs[0].parameters, { binary_data_size: 8 })
  assert.deepEqual([...(r.body as Buffer).subarray(r.headerLength!)], [...Buffer.from(new Float32Array([1, 2]).buffer)])
  assert.throws(() => parseInferBody(Buffer.from('{}'), '5', target), /Inference-Header-Content-Length must be an integer in \[0, 2\]/)
  assert.throws(() => parseInferBody(Buffer.from('{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}'), undefined, target), /binary_data_size 8 runs past the end of the body/)
})
