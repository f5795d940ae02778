// The listener's predict checks (valid-predict.ts) over fabricated servables and model metadata:
// whole-request faults, per-instance dtype/shape refusals with the replica's own texts, which
// inputs count as direct feeds, the collapse rule, and the registry answering refused requests
// without calling LiveServable.predict. No ORT, no replicas.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { ValidMethod, ValidModel, ValidServable, ValidStage } from '../../src/config/validate.ts'
import { ServeError } from '../../src/errors.ts'
import { msText } from '../../src/protocol/texts.ts'
import type { ModelInfo, TensorMeta } from '../../src/runtime/messages.ts'
import { ModelRunner } from '../../src/runtime/model-runner.ts'
import { collapseOutcomes, type InstanceOutcome } from '../../src/runtime/predict-outcome.ts'
import { ServableRegistry } from '../../src/runtime/registry.ts'
import type { LiveServable } from '../../src/runtime/live-servable.ts'
import { policyFor } from '../../src/runtime/policy.ts'
import { predictSignature, validatePredict, withRefused, type ValidInstances } from '../../src/runtime/valid-predict.ts'
import { tensor, type Value } from '../../src/tensor.ts'

function model(index: number, opts: Partial<ValidModel> = {}): ValidModel {
  return {
    index, name: `m${index}`, file: `m${index}.onnx`, path: `/nowhere/m${index}.onnx`, withBatchDim: true, withoutBatchDimInputs: [],
    maxBatchSize: 8, maxWaitMs: 0, maxQueueSize: 100, session: { graphOptimizationLevel: 'all', executionMode: 'sequential', extra: {} }, site: '', ...opts,
  }
}
const meta = (name: string, dtype: string, shape: (number | string)[]): TensorMeta => ({ name, dtype, shape })
const info = (index: number, inputs: TensorMeta[]): ModelInfo => ({ index, name: `m${index}`, inputs, outputs: [meta('y', 'float32', ['batch'])], maxBatchSize: 8, fixedBatch: false })

const modelStage = (m: number, args: number[], outputs: number[]): ValidStage => ({ kind: 'model', model: m, tag: '', args, outputs, site: '' })
const fnStage = (args: number[], outputs: number[]): ValidStage => ({ kind: 'function', tag: 'Preprocess', args, outputs, site: '' })
/** A method whose inputs get placeholder ids 0..n-1. */
function method(name: string, inputs: string[], stages: ValidStage[], output: number): ValidMethod {
  return { name, inputs, inputRefs: inputs.map((_, i) => i), outputs: ['y'], outputRefs: [output], stages, models: [], site: '' }
}
function servable(name: string, models: ValidModel[], methods: ValidMethod[]): ValidServable {
  return { name, version: 1, dir: '', versionDir: '', configFile: '', compiledFile: '', models, methods, llm: null }
}

// `add` as the example servable declares it: float32 [batch, 2, 2] + [batch, 2, 2].
const ADD_INPUTS = [meta('x1', 'float32', ['batch', 2, 2]), meta('x2', 'float32', ['batch', 2, 2])]
const ADD = servable('add', [model(0)], [
  method('add_common', ['x1', 'x2'], [modelStage(0, [0, 1], [2])], 2),
  method('add_cast', ['x1', 'x2'], [fnStage([0, 1], [2, 3]), modelStage(0, [2, 3], [4])], 4),
])
const ADD_SIG = predictSignature(ADD, [info(0, ADD_INPUTS)])

const f32 = (shape: number[], n = shape.reduce((a, b) => a * b, 1)) => tensor('float32', shape, new Float32Array(n))
const GOOD = { x1: f32([2, 2]), x2: f32([2, 2]) }

/** The messages of the refused instances (undefined for the ones that run). */
const refusals = (r: ReturnType<typeof validatePredict>) => r.refused?.map((e) => e?.message)
/** Runtime raises the code and facts; the MindSpore routes word them (protocol/texts.ts) byte for byte. */
const throwsServe = (fn: () => unknown, code: string, message: string) => assert.throws(fn, (e: unknown) => {
  assert.ok(e instanceof ServeError)
  assert.equal(e.code, code)
  assert.equal(msText(e), message)
  return true
})

test('good instances pass untouched: the request array itself, nothing refused', () => {
  const instances = [GOOD, { ...GOOD }]
  const v = validatePredict(ADD_SIG, 'add_common', instances)
  assert.equal(v.refused, null)
  assert.equal(v.instances, instances, 'no copy on the hot path')
  assert.equal(v.method.name, 'add_common')
})

test('whole-request faults: unknown method, zero instances, a missing input (MindSpore texts)', () => {
  throwsServe(() => validatePredict(ADD_SIG, 'add_nope', [GOOD]), 'SERVABLE_NOT_FOUND', 'Request servable(add) method(add_nope) , method is not available')
  throwsServe(() => validatePredict(ADD_SIG, 'add_common', []), 'INVALID_REQUEST', 'Instances count of request cannot be 0, servable: add, method: add_common')
  throwsServe(() => validatePredict(ADD_SIG, 'add_common', [GOOD, { x1: GOOD.x1 }]), 'INVALID_REQUEST', 'Cannot find input x2 in instance input , servable add, method add_common')
  // A missing input wins over a dtype refusal in an earlier instance: presence is checked first.
  const int = tensor('int32', [2, 2], [1, 2, 3, 4])
  throwsServe(() => validatePredict(ADD_SIG, 'add_common', [{ x1: int, x2: int }, { x2: int }]), 'INVALID_REQUEST', 'Cannot find input x1 in instance input , servable add, method add_common')
})

test('wrong dtype or size refuses just that instance, with the replica texts', () => {
  const int = tensor('int32', [2, 2], [1, 2, 3, 4])
  const v = validatePredict(ADD_SIG, 'add_common', [GOOD, { x1: GOOD.x1, x2: f32([3]) }, { x1: int, x2: f32([1]) }, GOOD])
  assert.deepEqual(refusals(v), [
    undefined,
    'Given model input 1 size 12 not match the size 16 defined in model',
    // The first failing model input is reported, as the replica does.
    'Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model',
    undefined,
  ])
  assert.ok(v.refused!.every((e) => e === undefined || e.code === 'INVALID_REQUEST'))
  assert.equal(v.instances.length, 2)
  // Only the byte size is compared for a fixed per-instance shape (spec §3.3): [4] fits [2, 2].
  assert.equal(validatePredict(ADD_SIG, 'add_common', [{ x1: f32([4]), x2: f32([1, 2, 2]) }]).refused, null)
  const f64 = tensor('float64', [2, 2], [1, 2, 3, 4])
  assert.deepEqual(refusals(validatePredict(ADD_SIG, 'add_common', [{ x1: GOOD.x1, x2: f64 }])),
    ['Given model input 1 data type kMSI_Float64 not match the data type kMSI_Float32 defined in model'])
})

test('string and bytes into a tensor input are refused; into a function stage they pass', () => {
  const v = validatePredict(ADD_SIG, 'add_common', [{ x1: 'a string', x2: GOOD.x2 }, { x1: GOOD.x1, x2: new Uint8Array([1, 2]) }])
  assert.deepEqual(refusals(v), [
    'Given model input 0 data type kMSI_String not match the data type kMSI_Float32 defined in model',
    'Given model input 1 data type kMSI_Bytes not match the data type kMSI_Float32 defined in model',
  ])
  assert.equal(v.instances.length, 0)
  // add_cast's inputs go through a TS stage first: what it accepts is the stage's business.
  assert.equal(validatePredict(ADD_SIG, 'add_cast', [{ x1: 'a string', x2: new Uint8Array([1]) }]).refused, null)
  const echo = servable('echo', [], [method('echo', ['text'], [fnStage([0], [1])], 1)])
  assert.equal(validatePredict(predictSignature(echo, []), 'echo', [{ text: 'hi' }]).refused, null)
})

test('dynamic dims: free dims match any size, fixed dims and the rank must match', () => {
  const seq = servable('seq', [model(0)], [method('run', ['ids'], [modelStage(0, [0], [1])], 1)])
  const sig = predictSignature(seq, [info(0, [meta('ids', 'int64', ['batch', 'seq', 4])])])
  const ids = (shape: number[]) => tensor('int64', shape, new BigInt64Array(shape.reduce((a, b) => a * b, 1)))
  const v = validatePredict(sig, 'run', [ids([7, 4]), ids([1, 4]), ids([7, 3]), ids([28]), ids([1, 7, 4])].map((x) => ({ ids: x })))
  assert.deepEqual(refusals(v), [
    undefined,
    undefined,
    'Given model input 0 shape [7,3] not match the shape [-1,4] defined in model',
    'Given model input 0 shape [28] not match the shape [-1,4] defined in model',
    'Given model input 0 shape [1,7,4] not match the shape [-1,4] defined in model',
  ])
  // Negative dims as ORT reports some free dims, and a model without a batch dim (the whole shape counts).
  const nobatch = servable('nb', [model(0, { withBatchDim: false })], [method('run', ['x'], [modelStage(0, [0], [1])], 1)])
  const nbSig = predictSignature(nobatch, [info(0, [meta('x', 'float32', [2, -1])])])
  assert.deepEqual(refusals(validatePredict(nbSig, 'run', [{ x: f32([2, 5]) }, { x: f32([5]) }])),
    [undefined, 'Given model input 0 shape [5] not match the shape [2,-1] defined in model'])
  // withoutBatchDimInputs: that input is a whole model input, shared by the batch.
  const shared = servable('sh', [model(0, { withoutBatchDimInputs: [1] })], [method('run', ['x', 'w'], [modelStage(0, [0, 1], [2])], 2)])
  const shSig = predictSignature(shared, [info(0, [meta('x', 'float32', ['batch', 2]), meta('w', 'float32', [2, 2])])])
  assert.deepEqual(refusals(validatePredict(shSig, 'run', [{ x: f32([2]), w: f32([2, 2]) }, { x: f32([2]), w: f32([2]) }])),
    [undefined, 'Given model input 1 size 8 not match the size 16 defined in model'])
})

test('the texts are the replica\'s: the same function the ModelRunner checks rows with', () => {
  const m = model(0)
  const session = {
    inputMetadata: [{ name: 'x1', isTensor: true, type: 'float32', shape: ['batch', 2, 2] }, { name: 'ids', isTensor: true, type: 'int64', shape: [-1, 'seq'] }],
    outputMetadata: [{ name: 'y', isTensor: true, type: 'float32', shape: ['batch', 2, 2] }],
  }
  const runner = new ModelRunner({} as never, session as never, m)
  const s = servable('r', [m], [method('run', ['x1', 'ids'], [modelStage(0, [0, 1], [2])], 2)])
  const sig = predictSignature(s, [runner.info])
  const values: Array<[Value, Value]> = [
    [f32([2, 2]), tensor('int64', [3], new BigInt64Array(3))],
    [tensor('int32', [2, 2], [1, 2, 3, 4]), tensor('int64', [3], new BigInt64Array(3))],
    [f32([3]), tensor('int64', [3], new BigInt64Array(3))],
    ['text', tensor('int64', [3], new BigInt64Array(3))],
    [f32([2, 2]), tensor('int64', [1, 3], new BigInt64Array(3))],
    [f32([2, 2]), new Uint8Array(3)],
  ]
  const v = validatePredict(sig, 'run', values.map(([x1, ids]) => ({ x1, ids })))
  const replica = values.map(([x1, ids]) => runner.checkRow(0, x1) ?? runner.checkRow(1, ids) ?? undefined)
  assert.deepEqual(refusals(v), replica)
  assert.equal(replica.filter((x) => x !== undefined).length, 5)
})

test('direct feeds: the leading model stages, up to a function stage or a stage output', () => {
  const two = [info(0, ADD_INPUTS), info(1, ADD_INPUTS)]
  const int = tensor('int32', [2, 2], [1, 2, 3, 4])
  // model(x1, x2) -> a; model(a, x2): x2 of stage 2 comes after a stage output, so it is the replica's to check.
  const chained = servable('c', [model(0), model(1)], [method('run', ['x1', 'x2'], [modelStage(0, [0, 1], [2]), modelStage(1, [2, 1], [3])], 3)])
  assert.equal(validatePredict(predictSignature(chained, two), 'run', [GOOD]).refused, null)
  // model(x1, x2) -> a; model(x2, x1): both direct, both checked, stage order.
  const direct = servable('d', [model(0), model(1)], [method('run', ['x1', 'x2'], [modelStage(0, [0, 1], [2]), modelStage(1, [1, 0], [3])], 3)])
  const wide = servable('w', [model(0), model(1, {})], direct.methods)
  const sig = predictSignature(wide, [info(0, ADD_INPUTS), info(1, [meta('a', 'float32', ['batch', 2, 2]), meta('b', 'int32', ['batch', 2, 2])])])
  assert.deepEqual(refusals(validatePredict(sig, 'run', [GOOD])), ['Given model input 1 data type kMSI_Float32 not match the data type kMSI_Int32 defined in model'])
  // function stage first, then a model on a stage output and a method input: nothing checked here.
  const afterFn = servable('f', [model(0)], [method('run', ['x1', 'x2'], [fnStage([0], [2]), modelStage(0, [2, 1], [3])], 3)])
  assert.equal(validatePredict(predictSignature(afterFn, two), 'run', [{ x1: int, x2: int }]).refused, null)
})

test('withRefused puts the outcomes of the instances that ran back in request order', () => {
  const v = validatePredict(ADD_SIG, 'add_common', [{ x1: 'a', x2: GOOD.x2 }, GOOD, { x1: GOOD.x1, x2: f32([1]) }, GOOD])
  const y = (k: number): InstanceOutcome => ({ outputs: { y: tensor('float32', [], [k]) } })
  const out = withRefused(v, [y(1), y(3)])
  assert.deepEqual(out.map((o) => ('error' in o ? o.error.message.slice(0, 22) : (o.outputs['y'] as { data: Float32Array }).data[0])),
    ['Given model input 0 da', 1, 'Given model input 1 si', 3])
  const all = validatePredict(ADD_SIG, 'add_common', [GOOD])
  const ran = [y(7)]
  assert.equal(withRefused(all, ran), ran)
})

test('collapseOutcomes: identical failures (code and text) become one whole-request error', () => {
  const e = (code: 'INVALID_REQUEST' | 'TIMEOUT', m: string): InstanceOutcome => ({ error: new ServeError(code, m) })
  const ok: InstanceOutcome = { outputs: {} }
  const same = collapseOutcomes([e('INVALID_REQUEST', 'bad'), e('INVALID_REQUEST', 'bad')])
  assert.ok('error' in same && same.error.message === 'bad' && same.error.code === 'INVALID_REQUEST')
  assert.ok('error' in collapseOutcomes([e('TIMEOUT', 'one')]), 'a single failed instance')
  assert.ok('instances' in collapseOutcomes([e('INVALID_REQUEST', 'x'), e('TIMEOUT', 'x')]), 'different codes stay per instance')
  assert.ok('instances' in collapseOutcomes([e('INVALID_REQUEST', 'x'), e('INVALID_REQUEST', 'y')]))
  assert.ok('instances' in collapseOutcomes([e('INVALID_REQUEST', 'x'), ok]))
  assert.deepEqual(collapseOutcomes([]), { instances: [] })
})

/** A LiveServable stand-in: ready, with `add`'s signature; counts the requests that reach its queue. */
function fakeLive(): { live: LiveServable; calls: number[] } {
  const calls: number[] = []
  const live = {
    name: 'add', version: 1, ready: true, servable: ADD, policy: policyFor('add'), signature: ADD_SIG,
    method: (n: string) => ADD.methods.find((m) => m.name === n),
    recordRequest: () => {},
    replicas: [{ state: 'ready', models: [info(0, ADD_INPUTS)] }],
    predict: async (_m: ValidMethod, instances: ValidInstances) => {
      calls.push(instances.length)
      return instances.map((): InstanceOutcome => ({ outputs: { y: f32([2, 2]) } }))
    },
  }
  return { live: live as unknown as LiveServable, calls }
}

test('registry: refused instances never reach LiveServable.predict; identical refusals collapse', async () => {
  const registry = new ServableRegistry()
  const { live, calls } = fakeLive()
  registry.add(live)
  const call = (instances: Record<string, Value>[], method = 'add_common') => registry.predict({ name: 'add', method, version: 0, instances })
  const int = tensor('int32', [2, 2], [1, 2, 3, 4])
  const dtypeMsg = 'Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model'
  const whole = await call([{ x1: int, x2: int }, { x1: int, x2: int }])
  assert.ok('error' in whole)
  assert.equal(whole.error.code, 'INVALID_REQUEST')
  assert.equal(whole.error.message, dtypeMsg)
  const different = await call([{ x1: int, x2: int }, { x1: GOOD.x1, x2: f32([1]) }])
  assert.ok('instances' in different && different.instances.every((o) => 'error' in o))
  assert.ok('error' in await call([{ x1: GOOD.x1 }]))
  assert.ok('error' in await call([GOOD], 'nope'))
  assert.ok('error' in await registry.predict({ name: 'nope', method: 'm', version: 0, instances: [GOOD] }))
  assert.deepEqual(calls, [], 'no request reached the batching loop')
  const mixed = await call([GOOD, { x1: int, x2: int }, GOOD])
  assert.deepEqual(calls, [2], 'only the good instances are queued')
  assert.ok('instances' in mixed)
  assert.deepEqual(mixed.instances.map((o) => ('error' in o ? o.error.message : 'ok')), ['ok', dtypeMsg, 'ok'])
})
