// BatchQueue: the pure rule deciding when a batch closes, driven by a fake clock (no timers).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { BatchQueue, type BatchDecision } from '../../src/batching/dynamic-batcher.ts'

const values = <T>(d: BatchDecision<T>): T[] => {
  assert.equal(d.kind, 'batch', `expected a batch, got ${JSON.stringify(d)}`)
  return (d as { items: { value: T }[] }).items.map((i) => i.value)
}

test('an empty queue is idle', () => {
  const q = new BatchQueue<number>(4, 10, 100)
  assert.deepEqual(q.next(0, true), { kind: 'idle' })
})

test('a full batch closes at once, without waiting for maxWaitMs', () => {
  const q = new BatchQueue<number>(4, 1000, 100)
  for (let i = 0; i < 6; i++) assert.equal(q.push(i, 0), true)
  assert.deepEqual(values(q.next(0, true)), [0, 1, 2, 3])
  assert.equal(q.length, 2)
  // The remaining 2 are a partial batch: they wait the rest of maxWaitMs from their arrival.
  assert.deepEqual(q.next(1, true), { kind: 'wait', ms: 999 })
})

test('a partial batch waits maxWaitMs from its oldest instance, then closes', () => {
  const q = new BatchQueue<string>(8, 20, 100)
  q.push('a', 100)
  assert.deepEqual(q.next(100, true), { kind: 'wait', ms: 20 })
  q.push('b', 105)
  assert.deepEqual(q.next(112, true), { kind: 'wait', ms: 8 })
  assert.deepEqual(values(q.next(120, true)), ['a', 'b'])
  assert.equal(q.length, 0)
  assert.deepEqual(q.next(121, true), { kind: 'idle' })
})

test('instances arriving during the wait join the batch; it closes early when it fills up', () => {
  const q = new BatchQueue<number>(3, 50, 100)
  q.push(1, 0)
  assert.equal(q.next(0, true).kind, 'wait')
  q.push(2, 10)
  q.push(3, 20)
  assert.deepEqual(values(q.next(20, true)), [1, 2, 3])
})

test('maxWaitMs 0 sends whatever is queued at once', () => {
  const q = new BatchQueue<number>(32, 0, 100)
  q.push(7, 5)
  assert.deepEqual(values(q.next(5, true)), [7])
  q.pushAll([1, 2, 3], 6)
  assert.deepEqual(values(q.next(6, true)), [1, 2, 3])
})

test('nothing is sent while no replica can take a batch; the backlog forms the next batch', () => {
  const q = new BatchQueue<number>(4, 0, 100)
  q.push(1, 0)
  assert.deepEqual(q.next(0, false), { kind: 'idle' })
  q.push(2, 1)
  q.push(3, 2)
  assert.deepEqual(values(q.next(3, true)), [1, 2, 3])
})

test('maxBatchSize 1 makes every batch a single instance', () => {
  const q = new BatchQueue<number>(1, 20, 100)
  q.pushAll([1, 2, 3], 0)
  assert.deepEqual(values(q.next(0, true)), [1])
  assert.deepEqual(values(q.next(0, true)), [2])
  assert.deepEqual(values(q.next(0, true)), [3])
})

test('the queue limit refuses further instances; pushAll is all or nothing', () => {
  const q = new BatchQueue<number>(4, 0, 3)
  assert.equal(q.push(1, 0), true)
  assert.equal(q.pushAll([2, 3, 4], 0), false, 'would exceed the limit')
  assert.equal(q.length, 1, 'a refused pushAll adds nothing')
  assert.equal(q.pushAll([2, 3], 0), true)
  assert.equal(q.push(4, 0), false)
  assert.equal(q.length, 3)
  values(q.next(0, true))
  assert.equal(q.push(4, 1), true, 'room again once a batch left')
})

test('FIFO order holds across many batches (head compaction keeps items)', () => {
  const q = new BatchQueue<number>(7, 0, 100_000)
  const n = 5000
  for (let i = 0; i < n; i++) q.push(i, i)
  const seen: number[] = []
  for (;;) {
    const d = q.next(n, true)
    if (d.kind === 'idle') break
    seen.push(...values(d))
  }
  assert.deepEqual(seen, Array.from({ length: n }, (_, i) => i))
})

test('drain empties the queue and returns what was waiting', () => {
  const q = new BatchQueue<number>(4, 10, 100)
  q.pushAll([1, 2], 0)
  assert.deepEqual(q.drain().map((i) => i.value), [1, 2])
  assert.equal(q.length, 0)
  assert.deepEqual(q.next(100, true), { kind: 'idle' })
})

test('remove() drops the selected queued items and frees their places', () => {
  const q = new BatchQueue<number>(4, 0, 3)
  assert.equal(q.pushAll([1, 2, 3], 0), true)
  assert.equal(q.push(4, 0), false, 'full')
  assert.equal(q.remove((v) => v === 2), 1)
  assert.equal(q.length, 2)
  assert.equal(q.push(4, 0), true)
  const d = q.next(0, true)
  assert.equal(d.kind, 'batch')
  assert.deepEqual(d.kind === 'batch' ? d.items.map((i) => i.value) : [], [1, 3, 4])
})
