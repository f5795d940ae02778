// Tensor helpers: construction checks, casts between dtypes, float16 bits <-> numbers.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { castTensor, describeValue, f16BitsToF32, f16ToF32, f32ToF16Bits, tensor, tensorFromBytes } from '../../src/tensor.ts'

test('tensor() checks the element count against the shape', () => {
  const t = tensor('float32', [2, 2], [1, 2, 3, 4])
  assert.ok(t.data instanceof Float32Array)
  assert.equal(t.size, 4)
  assert.equal(t.byteLength, 16)
  assert.throws(() => tensor('float32', [2, 2], [1, 2, 3]), /3 values given for shape \[2,2\] \(4 elements\)/)
  assert.deepEqual(tensor('int64', [2], [1, -2]).toArray(), [1n, -2n])
  assert.deepEqual(tensor('float32', [], [1.5]).shape, [])
})

test('castTensor int32 -> float32 and back truncates toward zero', () => {
  const i = tensor('int32', [2, 2], [1, 2, 3, 4])
  const f = castTensor(i, 'float32')
  assert.equal(f.dtype, 'float32')
  assert.deepEqual(f.shape, [2, 2])
  assert.ok(f.data instanceof Float32Array)
  assert.deepEqual(f.toArray(), [1, 2, 3, 4])
  assert.deepEqual(castTensor(tensor('float32', [3], [1.9, -1.9, 0]), 'int32').toArray(), [1, -1, 0])
  assert.equal(castTensor(f, 'float32'), f, 'same dtype is not copied')
})

test('castTensor to int64, bool, uint8', () => {
  assert.deepEqual(castTensor(tensor('float64', [2], [2.7, -3.2]), 'int64').toArray(), [2n, -3n])
  assert.deepEqual(castTensor(tensor('int64', [2], [5, -1]), 'float32').toArray(), [5, -1])
  assert.deepEqual(castTensor(tensor('float32', [3], [0, 0.5, -2]), 'bool').toArray(), [0, 1, 1])
  assert.deepEqual(castTensor(tensor('int32', [2], [1, 255]), 'uint8').toArray(), [1, 255])
})

test('float16: exact values round-trip through the bits', () => {
  for (const x of [0, 1, -1, 0.5, 2, 1024, 65504, -65504, 0.000060975551605224609 /* smallest normal */, 2 ** -24 /* smallest subnormal */]) {
    assert.equal(f16BitsToF32(f32ToF16Bits(x)), x, `value ${x}`)
  }
  assert.equal(f32ToF16Bits(1), 0x3c00)
  assert.equal(f32ToF16Bits(-2), 0xc000)
  assert.equal(f32ToF16Bits(65504), 0x7bff)
  assert.equal(f32ToF16Bits(1e6), 0x7c00, 'overflow -> +inf')
  assert.equal(f16BitsToF32(0x7c00), Infinity)
  assert.ok(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN))))
  assert.equal(f32ToF16Bits(1e-10), 0, 'underflow -> 0')
})

test('float16: inexact values round to the nearest half', () => {
  const x = 0.1
  const back = f16BitsToF32(f32ToF16Bits(x))
  assert.ok(Math.abs(back - x) <= 2 ** -14, `0.1 -> ${back}`)
  assert.equal(back, 0.0999755859375)
})

test('castTensor float32 <-> float16 round-trip', () => {
  const f = tensor('float32', [4], [1, 2.5, -0.25, 100])
  const h = castTensor(f, 'float16')
  assert.equal(h.dtype, 'float16')
  assert.ok(h.data instanceof Uint16Array)
  assert.deepEqual([...h.data as Uint16Array], [0x3c00, 0x4100, 0xb400, 0x5640])
  assert.deepEqual(castTensor(h, 'float32').toArray(), [1, 2.5, -0.25, 100])
  assert.deepEqual([...f16ToF32(new Uint16Array([0x3c00, 0xc000]))], [1, -2])
})

test('tensorFromBytes wraps aligned bytes and copies unaligned ones', () => {
  const src = new Float32Array([1, 2, 3, 4])
  const buf = new Uint8Array(src.buffer)
  const t = tensorFromBytes('float32', [2, 2], buf)
  assert.equal(t.data.buffer, src.buffer, 'aligned: no copy')
  const odd = new Uint8Array(17)
  odd.set(buf, 1)
  const u = tensorFromBytes('float32', [4], odd.subarray(1))
  assert.deepEqual(u.toArray(), [1, 2, 3, 4])
})

test('describeValue', () => {
  assert.equal(describeValue(tensor('float32', [2, 2], [1, 2, 3, 4])), 'float32[2,2]')
  assert.equal(describeValue('hi'), 'string')
  assert.equal(describeValue(new Uint8Array(12)), 'bytes(12)')
})
