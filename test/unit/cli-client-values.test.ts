// `ms-serve predict` values (src/cli/client-values.ts): --input text -> Value with the dtype rules
// --help states, and the table / JSON renderings of results (large tensors abbreviated).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { inputValue, instancesValue, renderResultsJson, renderResultsTable } from '../../src/cli/client-values.ts'
import { f32ToF16Bits, tensor } from '../../src/tensor.ts'

test('--input values: dtype from --dtype, else the declared one, else float32 for floats / int64 for integers', () => {
  assert.deepEqual(inputValue('x', '[[1.0,2],[3,4]]', undefined, undefined), tensor('float32', [2, 2], [1, 2, 3, 4]), 'one float makes float32')
  assert.deepEqual(inputValue('x', '[[1,2],[3,4]]', undefined, undefined), tensor('int64', [2, 2], [1n, 2n, 3n, 4n]))
  assert.deepEqual(inputValue('x', '[[1,2],[3,4]]', undefined, 'float32'), tensor('float32', [2, 2], [1, 2, 3, 4]), 'declared dtype')
  assert.deepEqual(inputValue('x', '[1,2]', 'uint8', 'float32'), tensor('uint8', [2], [1, 2]), '--dtype wins')
  assert.deepEqual(inputValue('x', '[0.1]', 'float16', undefined), tensor('float16', [1], new Uint16Array([f32ToF16Bits(0.1)])))
  assert.deepEqual(inputValue('x', '9223372036854775807', undefined, undefined), tensor('int64', [], [2n ** 63n - 1n]), 'exact beyond 2^53')
  assert.deepEqual(inputValue('x', '[true,false]', undefined, undefined), tensor('bool', [2], [1, 0]))
  assert.equal(inputValue('x', '"héllo"', undefined, undefined), 'héllo')
  assert.equal(inputValue('x', 'raw text', 'string', undefined), 'raw text')
  assert.deepEqual([...(inputValue('x', 'ab', 'bytes', undefined) as Uint8Array)], [97, 98])
  const b64 = Buffer.from(new Uint16Array([0, 0x3c00]).buffer).toString('base64')
  assert.deepEqual(inputValue('x', `{"b64":"${b64}","type":"fp16","shape":[2]}`, undefined, undefined), tensor('float16', [2], new Uint16Array([0, 0x3c00])))
  assert.throws(() => inputValue('x', '[300]', 'uint8', undefined), /300 is out of uint8's range \[0, 255\]/)
  assert.throws(() => inputValue('x', '[1, true]', 'float32', undefined), /true among float32 numbers/)
  assert.throws(() => inputValue('x', 'null', undefined, undefined), /null is not a value/)
})

test('--instances: MindSpore\'s body, one instance object or a list; each input with its dtype rule', () => {
  const list = instancesValue('{"instances":[{"a":[1.5],"s":"t"},{"a":[2.5],"s":"u"}]}', new Map(), () => undefined)
  assert.deepEqual(list, [{ a: tensor('float32', [1], [1.5]), s: 't' }, { a: tensor('float32', [1], [2.5]), s: 'u' }])
  assert.deepEqual(instancesValue('{"instances":{"a":[1]}}', new Map([['a', 'int32']]), () => 'float32'), [{ a: tensor('int32', [1], [1]) }])
  assert.throws(() => instancesValue('[{"a":1}]', new Map(), () => undefined), /expected \{"instances": \[\{\.\.\.\}, \.\.\.\]\}/)
  assert.throws(() => instancesValue('{"instances":[]}', new Map(), () => undefined), /"instances" is empty/)
})

test('tables abbreviate large tensors; JSON keeps every value exact', () => {
  const big = tensor('float32', [10, 10], Array.from({ length: 100 }, (_, i) => i / 4))
  const results = [
    { outputs: { y: big, s: 'text', i: tensor('int64', [2], [2n ** 62n + 1n, -1n]) } },
    { error: 'it failed', msStatus: 2 },
  ]
  const table = renderResultsTable(results)
  assert.match(table, /^instance 0$/m)
  assert.match(table, /^ {2}y\s+float32\s+\[10,10\]\s+\[0, 0\.25, 0\.5, 0\.75, 1, 1\.25, 1\.5, 1\.75, …, 24, 24\.25, 24\.5, 24\.75\] \(100 values, shown flat\)$/m)
  assert.match(table, /^ {2}i\s+int64\s+\[2\]\s+\[4611686018427387905, -1\]$/m)
  assert.match(table, /^instance 1: error: it failed \(MindSpore status 2\)$/m)
  const small = renderResultsTable([{ outputs: { y: tensor('float32', [2, 2], [6.6, 8, 10, 12]) } }])
  assert.equal(small, 'output  dtype    shape  values\ny       float32  [2,2]  [[6.6, 8], [10, 12]]\n', 'float32 in its shortest exact decimal')
  const json = JSON.parse(renderResultsJson(results))
  assert.equal(json.instances[0].outputs.y.data.length, 10)
  assert.deepEqual(json.instances[0].outputs.y.data[9].slice(-1), [24.75])
  assert.deepEqual(json.instances[1], { error: 'it failed', ms_status: 2 })
  assert.match(renderResultsJson(results), /"data":\[4611686018427387905,-1\]/)
  assert.equal(renderResultsJson([{ outputs: { n: tensor('float32', [1], [NaN]) } }]), '{"instances":[{"outputs":{"n":{"dtype":"float32","shape":[1],"data":[null]}}}]}\n')
})
