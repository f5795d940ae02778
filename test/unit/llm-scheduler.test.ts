/** Pure scheduler tests with fabricated queue/batch state (TGI next_batch + batching loop rules). */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { nextBatch, planStep } from '../../src/llm/scheduler.ts'
import type { QueueEntry, SchedulerConfig, SchedulerState } from '../../src/llm/scheduler.ts'

// maxConsecutivePrefills 0 (no limit) for the TGI rule tests; its own tests set it.
const cfg: SchedulerConfig = { maxBatchPrefillTokens: 100, maxBatchTotalTokens: 1000, maxBatchSize: 8, maxWaitingTokens: 20, waitingServedRatio: 0.5, maxConsecutivePrefills: 0 }
const q = (...specs: Array<[number, number]>): QueueEntry[] => specs.map(([inputLength, maxNewTokens], i) => ({ id: `r${i}`, inputLength, maxNewTokens, enqueuedAt: i }))
const state = (queue: QueueEntry[], size = 0, maxTokens = 0, waitingTokens = 0, prefillsSinceDecode = 0): SchedulerState => ({ queue, running: { size, maxTokens }, waitingTokens, prefillsSinceDecode })

test('prefill budget is padded: rows x longest prompt', () => {
  // 3 x 30 = 90 fits, the 4th makes 4 x 30 = 120 > 100
  assert.deepEqual(nextBatch(q([10, 5], [30, 5], [20, 5], [5, 5]), 1, 8, 100, 1000), { count: 3, prefillTokens: 90, decodeTokens: 15, limited: true })
  assert.equal(nextBatch(q([10, 5], [30, 5]), 1, 8, 100, 1000)?.limited, false, 'the queue ran out, no budget was hit')
})

test('token budget counts prefill + max_new_tokens', () => {
  assert.equal(nextBatch(q([10, 100], [10, 100], [10, 100]), 1, 8, 100, 250)?.count, 2) // 20+200 ok, 30+300 no
  assert.equal(nextBatch(q([10, 500]), 1, 8, 100, 250), null)
})

test('strict FIFO: a big entry at the front blocks smaller ones behind it', () => {
  const queue = q([10, 5], [95, 5], [1, 1])
  assert.equal(nextBatch(queue, 1, 8, 100, 1000)?.count, 1) // 2 x 95 > 100 stops the scan; r2 is not skipped to
  assert.equal(nextBatch(queue.slice(1), 1, 8, 100, 1000)?.count, 1)
})

test('max size and min size', () => {
  assert.equal(nextBatch(q([1, 1], [1, 1], [1, 1]), 1, 2, 100, 1000)?.count, 2)
  assert.equal(nextBatch(q([1, 1], [1, 1]), 3, 8, 100, 1000), null)
  assert.equal(nextBatch(q([1, 1]), 1, 0, 100, 1000), null)
  assert.equal(nextBatch([], 1, 8, 100, 1000), null)
})

test('idle engine prefills whatever fits; empty queue is idle', () => {
  const plan = planStep(state(q([10, 5], [10, 5])), cfg, 7)
  assert.equal(plan.kind, 'prefill')
  if (plan.kind === 'prefill') { assert.equal(plan.batch.count, 2); assert.deepEqual(plan.queueTimesMs, [7, 6]) }
  assert.equal(planStep(state([]), cfg, 0).kind, 'idle')
})

test('waiting-served ratio: a running batch of 4 waits for 2 queued requests', () => {
  assert.equal(planStep(state(q([5, 5]), 4, 40, 3), cfg, 0).kind, 'decode')
  assert.equal(planStep(state(q([5, 5], [5, 5]), 4, 40, 3), cfg, 0).kind, 'prefill')
  // min size 3 but only 2 free rows: 2 queued fill the batch, so they join now
  const plan = planStep(state(q([5, 5], [5, 5], [5, 5]), 6, 60, 3), cfg, 0)
  assert.equal(plan.kind === 'prefill' && plan.batch.count, 2)
  assert.equal(planStep(state(q([5, 5]), 6, 60, 3), cfg, 0).kind, 'decode')
})

test('max waiting tokens lifts the minimum so a small queue is not starved', () => {
  assert.equal(planStep(state(q([5, 5]), 6, 60, 19), cfg, 0).kind, 'decode')
  assert.equal(planStep(state(q([5, 5]), 6, 60, 20), cfg, 0).kind, 'prefill')
})

test('running batch limits: free rows and remaining token budget', () => {
  // 8 rows busy: nothing joins even after max waiting tokens
  assert.equal(planStep(state(q([5, 5]), 8, 80, 50), cfg, 0).kind, 'decode')
  // one free row: only one joins
  const plan = planStep(state(q([5, 5], [5, 5]), 7, 70, 50), cfg, 0)
  assert.equal(plan.kind === 'prefill' && plan.batch.count, 1)
  // token budget nearly used by the running batch
  assert.equal(planStep(state(q([5, 100]), 2, 950, 50), cfg, 0).kind, 'decode')
})

test('the ratio does not hold back a prefill that the budgets already cap below it', () => {
  // Running 4 wants >= 2 joiners, but the prefill budget fits one 60-token prompt at a time:
  // waiting cannot grow the batch, so the first one is prefilled now instead of after max waiting tokens.
  const tight = { ...cfg, maxBatchPrefillTokens: 100 }
  const plan = planStep(state(q([60, 5], [60, 5]), 4, 40, 3), tight, 0)
  assert.equal(plan.kind === 'prefill' && plan.batch.count, 1)
  // With one queued request and room for more, the ratio still waits (the queue, not a budget, ended the scan).
  assert.equal(planStep(state(q([60, 5]), 4, 40, 3), tight, 0).kind, 'decode')
})

test('maxConsecutivePrefills: after that many prefills a running batch decodes before the next one', () => {
  const one = { ...cfg, waitingServedRatio: 0, maxConsecutivePrefills: 1 }
  const queue = q([60, 5], [60, 5]) // the prefill budget takes one 60-token prompt at a time
  assert.equal(planStep(state(queue, 4, 40, 3, 0), one, 0).kind, 'prefill')
  assert.equal(planStep(state(queue, 4, 40, 1, 1), one, 0).kind, 'decode', 'one prefill just ran: decode first')
  const two = { ...one, maxConsecutivePrefills: 2 }
  assert.equal(planStep(state(queue, 4, 40, 1, 1), two, 0).kind, 'prefill')
  assert.equal(planStep(state(queue, 4, 40, 1, 2), two, 0).kind, 'decode')
  // 0 = no limit: prefill while anything fits
  assert.equal(planStep(state(queue, 4, 40, 1, 9), { ...one, maxConsecutivePrefills: 0 }, 0).kind, 'prefill')
  // An idle engine has no rows to starve: the limit does not apply
  assert.equal(planStep(state(queue, 0, 0, 1, 5), one, 0).kind, 'prefill')
})

test('waiting-served ratio 0 (the CPU default) prefills a lone waiting request at once', () => {
  const zero = { ...cfg, waitingServedRatio: 0 }
  const plan = planStep(state(q([5, 5]), 6, 60, 1), zero, 0)
  assert.equal(plan.kind === 'prefill' && plan.batch.count, 1)
  // the same state with a TGI-style ratio waits for more requests (or max waiting tokens)
  assert.equal(planStep(state(q([5, 5]), 6, 60, 1), { ...zero, waitingServedRatio: 0.5 }, 0).kind, 'decode')
})
