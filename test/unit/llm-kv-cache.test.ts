/** Slot KV cache layout: capacity growth/shrink relayouts and row moves keep every row's prefix. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { SlotKvCache } from '../../src/llm/kv-cache.ts'

const shape = { numLayers: 2, numKvHeads: 2, headDim: 3, dtype: 'float32' as const, maxSlots: 4, maxLen: 40, block: 8 }
const val = (l: number, kind: number, r: number, h: number, p: number, d: number): number => l * 1e5 + kind * 5e4 + r * 1e3 + h * 100 + p * 3 + d + 1

function fill(c: SlotKvCache, lens: number[]): void {
  const { numKvHeads: kv, headDim: hd } = c.shape
  for (let l = 0; l < 2; l++) for (const [kind, buf] of [[0, c.keys[l]!], [1, c.values[l]!]] as const) {
    for (let r = 0; r < lens.length; r++) for (let h = 0; h < kv; h++) for (let p = 0; p < lens[r]!; p++) for (let d = 0; d < hd; d++) {
      buf[((r * kv + h) * c.capacity + p) * hd + d] = val(l, kind, r, h, p, d)
    }
  }
}

function check(c: SlotKvCache, lens: number[], rowOf: (r: number) => number = (r) => r): void {
  const { numKvHeads: kv, headDim: hd } = c.shape
  for (let l = 0; l < 2; l++) for (const [kind, buf] of [[0, c.keys[l]!], [1, c.values[l]!]] as const) {
    for (let r = 0; r < lens.length; r++) for (let h = 0; h < kv; h++) for (let p = 0; p < lens[r]!; p++) for (let d = 0; d < hd; d++) {
      assert.equal(buf[((r * kv + h) * c.capacity + p) * hd + d], val(l, kind, rowOf(r), h, p, d), `l${l} k${kind} r${r} h${h} p${p}`)
    }
  }
}

test('grow and shrink relayouts keep each row prefix', () => {
  const c = new SlotKvCache(shape)
  const lens = [5, 7, 2]
  assert.equal(c.fit(Int32Array.from(lens), 3), false) // 7+1 fits block 8
  fill(c, lens)
  lens[1] = 20
  // pretend row 1 got more tokens: extend its pattern up to 20 under the current layout first
  assert.equal(c.fit(Int32Array.from(lens), 3), true)
  assert.equal(c.capacity, 24)
  check(c, [5, 7, 2])
  assert.equal(c.fit(Int32Array.from([5, 7, 2]), 3), true) // 24 - 8 >= 2 blocks: shrink
  assert.equal(c.capacity, 8)
  check(c, [5, 7, 2])
  assert.equal(c.numRelayouts, 2)
})

test('write places positions and moveRow compacts', () => {
  const c = new SlotKvCache(shape)
  const lens = [3, 4, 6]
  fill(c, lens)
  c.moveRow(2, 0, 6)
  check(c, [6, 4], (r) => (r === 0 ? 2 : r))
  // write a [1,KV,1,hd] present at position 6 of row 0
  const pk = [0, 1].map(() => Float32Array.from({ length: 2 * 3 }, (_, i) => -1 - i))
  c.write(0, 6, pk, pk, 0, 1, 0, 1)
  assert.equal(c.keys[1]![(0 * 2 + 1) * c.capacity * 3 + 6 * 3 + 2], -6)
  assert.throws(() => c.write(0, 8, pk, pk, 0, 1, 0, 1), /exceeds capacity/)
})

test('exact mode keeps capacity == max(len) (models without position_ids)', () => {
  const c = new SlotKvCache({ ...shape, exact: true })
  c.fit(Int32Array.from([5]), 1, 0)
  assert.equal(c.capacity, 5)
  c.fit(Int32Array.from([5]), 1, 1)
  assert.equal(c.capacity, 6)
  c.fit(Int32Array.from([3]), 1, 0)
  assert.equal(c.capacity, 3)
})
