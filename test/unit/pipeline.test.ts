// runMethod: a method's stages over a group of instances, with a fabricated model runner (no ORT).
// Per-instance failures leave the others running; batched stages are called in chunks.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runMethod, type PreparedMethod } from '../../src/runtime/pipeline.ts'
import type { ModelRunner } from '../../src/runtime/model-runner.ts'
import type { ValidMethod, ValidStage } from '../../src/config/validate.ts'
import { ServeError } from '../../src/errors.ts'
import { Tensor, tensor, type Value } from '../../src/tensor.ts'

/** A fake 1-input model: y = 2x for float32 scalars; anything else fails its row check. */
function fakeRunner(calls: number[][]): ModelRunner {
  return {
    checkRow: (i: number, v: Value) => (v instanceof Tensor && v.dtype === 'float32' ? null : `Given model input ${i} data type not match`),
    submit: async (rows: Value[][]) => {
      calls.push(rows.map((r) => ((r[0] as Tensor).data as Float32Array)[0]!))
      return rows.map((r) => [tensor('float32', [], [((r[0] as Tensor).data as Float32Array)[0]! * 2])])
    },
  } as unknown as ModelRunner
}

// Placeholder ids: 0 = input x, 1 = stage 1 output, 2 = stage 2 output.
function method(stages: ValidStage[], output: number): ValidMethod {
  return { name: 'm', inputs: ['x'], inputRefs: [0], outputs: ['y'], outputRefs: [output], stages, models: [0], site: '' }
}
const stage = (kind: 'model' | 'function', args: number[], outputs: number[], extra: Partial<ValidStage> = {}): ValidStage =>
  ({ kind, tag: kind === 'model' ? '' : 'Preprocess', args, outputs, site: '', ...(kind === 'model' ? { model: 0 } : {}), ...extra })
const num = (v: number) => tensor('float32', [], [v])
const y = (r: Record<string, Value> | ServeError) => {
  assert.ok(!(r instanceof ServeError), `unexpected error ${(r as ServeError).message}`)
  return ((r['y'] as Tensor).data as Float32Array)[0]
}

test('a per-instance stage that throws fails only that instance, with MindSpore\'s text', async () => {
  const calls: number[][] = []
  const pm: PreparedMethod = {
    method: method([stage('function', [0], [1]), stage('model', [1], [2])], 2),
    fns: [(x: Value) => {
      const v = ((x as Tensor).data as Float32Array)[0]!
      if (v < 0) throw new Error(`negative ${v}`)
      return num(v + 1)
    }, undefined],
    groupSize: 8,
  }
  const out = await runMethod(pm, [fakeRunner(calls)], [{ x: num(1) }, { x: num(-1) }, { x: num(3) }])
  assert.equal(y(out[0]!), 4)
  assert.ok(out[1] instanceof ServeError)
  assert.equal(out[1].code, 'STAGE_FAILED')
  assert.equal(out[1].message, "Call Preprocess Failed, method: 'm', stage index(begin with 1): 1, error msg: negative -1")
  assert.equal(y(out[2]!), 8)
  assert.deepEqual(calls, [[2, 4]], 'the failed instance never reaches the model; the others share one submit')
})

test('a model row check failure is a per-instance INVALID_REQUEST', async () => {
  const pm: PreparedMethod = { method: method([stage('model', [0], [1])], 1), fns: [undefined], groupSize: 8 }
  const out = await runMethod(pm, [fakeRunner([])], [{ x: tensor('int32', [], [1]) }, { x: num(5) }])
  assert.ok(out[0] instanceof ServeError)
  assert.equal(out[0].code, 'INVALID_REQUEST')
  assert.equal(out[0].message, 'Given model input 0 data type not match')
  assert.equal(y(out[1]!), 10)
})

test('batched stages are called in chunks of batchSize (0 = the group size)', async () => {
  for (const [batchSize, groupSize, expected] of [[2, 8, [2, 2, 1]], [0, 3, [3, 2]]] as const) {
    const chunks: number[] = []
    const pm: PreparedMethod = {
      method: method([stage('function', [0], [1], { batchSize })], 1),
      fns: [(instances: Value[][]) => { chunks.push(instances.length); return instances.map(([x]) => x!) }],
      groupSize,
    }
    const out = await runMethod(pm, [], [1, 2, 3, 4, 5].map((v) => ({ x: num(v) })))
    assert.deepEqual(out.map(y), [1, 2, 3, 4, 5])
    assert.deepEqual(chunks, [...expected])
  }
})

test('a batched stage returning the wrong count fails its whole chunk', async () => {
  const pm: PreparedMethod = {
    method: method([stage('function', [0], [1], { batchSize: 2, tag: 'Postprocess' })], 1),
    fns: [(instances: Value[][]) => instances.slice(1).map(([x]) => x!)],
    groupSize: 8,
  }
  const out = await runMethod(pm, [], [{ x: num(1) }, { x: num(2) }, { x: num(3) }])
  for (const r of out.slice(0, 2)) {
    assert.ok(r instanceof ServeError)
    assert.equal(r.message, "Call Postprocess Failed, method: 'm', stage index(begin with 1): 1, error msg: batched stage Postprocess must return one result per instance (2), got 1")
  }
  assert.ok(out[2] instanceof ServeError, 'chunk [3] returns 0 results for 1 instance')
})

test('a stage returning a non-value is rejected with a fix', async () => {
  const pm: PreparedMethod = { method: method([stage('function', [0], [1])], 1), fns: [() => 7 as unknown as Value], groupSize: 8 }
  const [r] = await runMethod(pm, [], [{ x: num(1) }])
  assert.ok(r instanceof ServeError)
  assert.equal(r.message, "Call Preprocess Failed, method: 'm', stage index(begin with 1): 1, error msg: stage Preprocess returned number for output 0; return a Tensor (e.g. tensor('float32', [], [x])), a string or a Uint8Array")
})

test('strings and bytes pass through function stages', async () => {
  const pm: PreparedMethod = { method: method([stage('function', [0], [1])], 1), fns: [(x: Value) => `${x as string}!`], groupSize: 8 }
  const out = await runMethod(pm, [], [{ x: 'a' }, { x: 'b' }])
  assert.deepEqual(out, [{ y: 'a!' }, { y: 'b!' }])
})
